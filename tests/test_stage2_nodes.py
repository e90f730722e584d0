"""Stage-II bridge and degrade nodes over the real core, with the fake ComfyUI host. LATENTs between nodes are
unscaled (ComfyUI's convention); the core works in the scaled model space. The refiner builds on native
ComfyUI models and is tested in the real hosts (tests/test_comfyui_native.py)."""

import pytest
import torch

from support import fake_comfy
from support.fake_comfy import host

pack = fake_comfy.install()
from flashvideo_pack_under_test.flashvideo_core.constants import LATENT_SCALE_STAGE1, LATENT_SCALE_STAGE2  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.errors import InputError  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.stage2.bridge import encode_for_stage2, stage1_to_stage2  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.stage2.degrade import degrade_latent  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.tiny import write_tiny_vae  # noqa: E402
from flashvideo_pack_under_test.nodes import loader_nodes, pipeline_nodes, vae_nodes  # noqa: E402

CUSTOM = "custom"


@pytest.fixture(autouse=True)
def clean_host():
    host.reset()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    vae_path = write_tiny_vae(str(d / "3d-vae.pt"))
    host.reset()
    host.files["vae"]["3d-vae.pt"] = vae_path
    return (loader_nodes.FlashVideoVAELoader.execute("3d-vae.pt", "fp32").result[0],)


def _stage1_latent(seed=0):
    """An unscaled stage-I LATENT (what the stage-I sampler returns)."""
    return {"samples": torch.randn(1, 16, 3, 2, 4, generator=torch.Generator().manual_seed(seed)),
            "flashvideo_stage": 1}


def test_bridge_from_latent_or_frames_matches_the_core(models):
    vae = models[0]
    z1 = _stage1_latent()
    out = pipeline_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 4, samples=z1).result[0]
    expected, preview = stage1_to_stage2(vae.model, z1["samples"] * LATENT_SCALE_STAGE1, (32, 64), seed=4)
    expected = expected / LATENT_SCALE_STAGE2  # the core returns model space; the LATENT is unscaled
    torch.testing.assert_close(out["samples"], expected)
    assert out["flashvideo_stage"] == 2 and out["samples"].shape == (1, 16, 3, 4, 8)
    frames = ((preview[0].permute(1, 2, 3, 0) + 1) / 2)  # what FlashVideo VAE Decode hands on
    from_frames = pipeline_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 4, images=frames).result[0]
    torch.testing.assert_close(from_frames["samples"], expected, atol=1e-5, rtol=1e-5)
    assert host.loads  # VAE loaded through model management


def test_bridge_presets_and_input_errors(models):
    vae = models[0]
    assert pipeline_nodes._target_size("1080p (1072x1920)", 64, 32) == (1072, 1920)
    assert pipeline_nodes._target_size("2K (1440x2560)", 64, 32) == (1440, 2560)
    assert pipeline_nodes._target_size("custom", 64, 32) == (32, 64)
    with pytest.raises(InputError, match="input 'resolution'.*pick one of"):
        pipeline_nodes._target_size("4K", 64, 32)
    with pytest.raises(InputError, match="input 'width'"):  # checked whatever the resolution: never ignored garbage
        pipeline_nodes._target_size("1080p (1072x1920)", 1, 32)
    with pytest.raises(InputError, match="neither images nor samples"):
        pipeline_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 0)
    with pytest.raises(InputError, match="both images and samples"):
        pipeline_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 0, images=torch.rand(5, 32, 64, 3),
                                                       samples=_stage1_latent())
    with pytest.raises(InputError, match="multiples of 16"):
        pipeline_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 60, 32, 0, samples=_stage1_latent())
    with pytest.raises(InputError, match="already a stage-II latent"):
        pipeline_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 0, samples={**_stage1_latent(), "flashvideo_stage": 2})
    video = torch.rand(8, 24, 40, 3)  # 8 frames of an external video: not 4k+1
    with pytest.raises(InputError, match=r"4k\+1"):
        pipeline_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 0, images=video)
    z = pipeline_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 0, "trim", images=video).result[0]
    torch.testing.assert_close(z["samples"] * LATENT_SCALE_STAGE2,
                               encode_for_stage2(vae.model, video[:5].permute(3, 0, 1, 2)[None] * 2 - 1, (32, 64), 0))


def test_degrade_node_carries_the_noise_step():
    z = {"samples": torch.randn(1, 16, 3, 4, 8), "flashvideo_stage": 2}
    out = pipeline_nodes.FlashVideoLatentDegrade.execute(z, 700, 9).result[0]
    # x = a z + sqrt(1 - a^2) eps in the model's (scaled) space, handed on unscaled
    torch.testing.assert_close(out["samples"] * LATENT_SCALE_STAGE2, degrade_latent(z["samples"] * LATENT_SCALE_STAGE2, 700, 9))
    assert out["flashvideo_noise_step"] == 700 and out["flashvideo_seed"] == 9
    with pytest.raises(InputError, match="stage-I latent"):
        pipeline_nodes.FlashVideoLatentDegrade.execute(_stage1_latent(), 675, 0)
    with pytest.raises(InputError, match="already degraded"):
        pipeline_nodes.FlashVideoLatentDegrade.execute(out, 675, 0)


def test_decode_refuses_the_wrong_latent_scale(models):
    vae = models[0]
    z = {"samples": torch.randn(1, 16, 3, 2, 2), "flashvideo_stage": 2}
    with pytest.raises(InputError, match="stage 2 but latent_scale is stage1"):
        vae_nodes.FlashVideoVAEDecode.execute(vae, z, "stage1")
    assert vae_nodes.FlashVideoVAEDecode.execute(vae, z, "stage2").result[0].shape == (9, 16, 16, 3)
