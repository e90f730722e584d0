"""Stage-II nodes (bridge, degrade, refiner) over the real core, with the fake ComfyUI host."""

import pytest
import torch

from support import fake_comfy
from support.fake_comfy import InterruptProcessingException, host

pack = fake_comfy.install()
from flashvideo_pack_under_test.flashvideo_core.constants import LATENT_SCALE_STAGE1  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.errors import InputError  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.stage2.bridge import encode_for_stage2, stage1_to_stage2  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.stage2.degrade import degrade_latent  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.stage2.refiner import refine_stage2  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.tiny import write_tiny_dit, write_tiny_vae  # noqa: E402
from flashvideo_pack_under_test.nodes import stage1_nodes, stage2_nodes, vae_nodes  # noqa: E402

CUSTOM = "custom"


@pytest.fixture(autouse=True)
def clean_host():
    host.reset()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    files = {"stage1.pt": write_tiny_dit(str(d / "stage1.pt"), "stage1"),
             "stage2.pt": write_tiny_dit(str(d / "stage2.pt"), "stage2")}
    vae_path = write_tiny_vae(str(d / "3d-vae.pt"))
    host.reset()
    host.files["diffusion_models"].update(files)
    host.files["vae"]["3d-vae.pt"] = vae_path
    vae = vae_nodes.FlashVideoVAELoader.execute("3d-vae.pt", "fp32").result[0]
    stage1 = stage1_nodes.FlashVideoModelLoader.execute("stage1.pt", "fp32").result[0]
    stage2 = stage1_nodes.FlashVideoModelLoader.execute("stage2.pt", "fp32").result[0]
    return vae, stage1, stage2


def _stage1_latent(seed=0):
    return {"samples": torch.randn(1, 16, 3, 2, 4, generator=torch.Generator().manual_seed(seed)) * LATENT_SCALE_STAGE1,
            "flashvideo_stage": 1}


def test_bridge_from_latent_or_frames_matches_the_core(models):
    vae = models[0]
    z1 = _stage1_latent()
    out = stage2_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 4, samples=z1).result[0]
    expected, preview = stage1_to_stage2(vae.model, z1["samples"], (32, 64), seed=4)
    torch.testing.assert_close(out["samples"], expected)
    assert out["flashvideo_stage"] == 2 and out["samples"].shape == (1, 16, 3, 4, 8)
    frames = ((preview[0].permute(1, 2, 3, 0) + 1) / 2)  # what FlashVideo VAE Decode hands on
    from_frames = stage2_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 4, images=frames).result[0]
    torch.testing.assert_close(from_frames["samples"], expected, atol=1e-5, rtol=1e-5)
    assert host.loads  # VAE loaded through model management


def test_bridge_presets_and_input_errors(models):
    vae = models[0]
    assert stage2_nodes._target_size("1080p (1072x1920)", 1, 1) == (1072, 1920)
    assert stage2_nodes._target_size("2K (1440x2560)", 1, 1) == (1440, 2560)
    with pytest.raises(InputError, match="resolution must be one of"):
        stage2_nodes._target_size("4K", 1, 1)
    with pytest.raises(InputError, match="exactly one"):
        stage2_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 0)
    with pytest.raises(InputError, match="multiples of 16"):
        stage2_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 60, 32, 0, samples=_stage1_latent())
    with pytest.raises(InputError, match="already a stage-II latent"):
        stage2_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 0, samples={**_stage1_latent(), "flashvideo_stage": 2})
    video = torch.rand(8, 24, 40, 3)  # 8 frames of an external video: not 4k+1
    with pytest.raises(InputError, match=r"4k\+1"):
        stage2_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 0, images=video)
    z = stage2_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 0, "trim", images=video).result[0]
    torch.testing.assert_close(z["samples"], encode_for_stage2(vae.model, video[:5].permute(3, 0, 1, 2)[None] * 2 - 1, (32, 64), 0))


def test_degrade_node_carries_the_noise_step():
    z = {"samples": torch.randn(1, 16, 3, 4, 8), "flashvideo_stage": 2}
    out = stage2_nodes.FlashVideoLatentDegrade.execute(z, 700, 9).result[0]
    torch.testing.assert_close(out["samples"], degrade_latent(z["samples"], 700, 9))
    assert out["flashvideo_noise_step"] == 700
    with pytest.raises(InputError, match="stage-I latent"):
        stage2_nodes.FlashVideoLatentDegrade.execute(_stage1_latent(), 675, 0)
    with pytest.raises(InputError, match="already degraded"):
        stage2_nodes.FlashVideoLatentDegrade.execute(out, 675, 0)


def test_refiner_node_matches_the_core_with_progress_and_window(models):
    _, stage1, stage2 = models
    ctx = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(1))
    x0 = {"samples": torch.randn(1, 16, 3, 4, 8, generator=torch.Generator().manual_seed(2)),
          "flashvideo_stage": 2, "flashvideo_noise_step": 650}
    out = stage2_nodes.FlashVideoStage2Refiner.execute(stage2, [[ctx, {}]], x0, 3, 12.0, 2.0).result[0]
    torch.testing.assert_close(out["samples"], refine_stage2(stage2.model, ctx, x0["samples"], 650, 3, 12.0, 2.0))
    assert [p[0] for p in host.progress] == [1, 2, 3] and all(p[2] for p in host.progress)
    assert host.loads[-1] > 0  # the activation estimate is passed to load_models_gpu
    windowed = stage2_nodes.FlashVideoStage2Refiner.execute(
        stage2, [[ctx, {}]], x0, 3, 12.0, 2.0, stage2_nodes.ATTENTION_CHOICES[1]).result[0]
    torch.testing.assert_close(windowed["samples"], out["samples"], atol=1e-4, rtol=1e-4)  # 3x2x4 patches: window covers all
    assert stage2.model.transformer_blocks[0].attn1.window is None  # reset after the run
    with pytest.raises(InputError, match="stage-I model"):
        stage2_nodes.FlashVideoStage2Refiner.execute(stage1, [[ctx, {}]], x0)
    with pytest.raises(InputError, match="not been degraded"):
        stage2_nodes.FlashVideoStage2Refiner.execute(stage2, [[ctx, {}]], {"samples": x0["samples"]})


def test_refiner_interrupt_stops_within_one_step(models):
    stage2 = models[2]
    x0 = {"samples": torch.randn(1, 16, 3, 4, 8), "flashvideo_noise_step": 675}
    host.interrupt_after_checks = 2
    with pytest.raises(InterruptProcessingException):
        stage2_nodes.FlashVideoStage2Refiner.execute(stage2, [[torch.randn(1, 226, 32), {}]], x0, 5)
    assert len(host.progress) == 2


def test_decode_refuses_the_wrong_latent_scale(models):
    vae = models[0]
    z = {"samples": torch.randn(1, 16, 3, 2, 2), "flashvideo_stage": 2}
    with pytest.raises(InputError, match="stage 2 but latent_scale is stage1"):
        vae_nodes.FlashVideoVAEDecode.execute(vae, z, "stage1")
    assert vae_nodes.FlashVideoVAEDecode.execute(vae, z, "stage2").result[0].shape == (9, 16, 16, 3)


def test_stage1_sampler_marks_its_latent_and_the_chain_runs(models):
    vae, stage1, stage2 = models
    ctx = [[torch.randn(1, 226, 32), {}]]
    z1 = stage1_nodes.FlashVideoStage1Sampler.execute(stage1, ctx, 32, 16, 5, 2, 8.0, 0).result[0]
    assert z1["flashvideo_stage"] == 1
    z2 = stage2_nodes.FlashVideoStage2Upscale.execute(vae, CUSTOM, 64, 32, 0, samples=z1).result[0]
    x0 = stage2_nodes.FlashVideoLatentDegrade.execute(z2, 675, 0).result[0]
    z = stage2_nodes.FlashVideoStage2Refiner.execute(stage2, ctx, x0, 2).result[0]
    assert z2["samples"].shape[2] == 2  # 5 frames -> 2 latents -> 8 decoded frames, trimmed back to 5 by the bridge
    frames = vae_nodes.FlashVideoVAEDecode.execute(vae, z, "stage2").result[0]
    assert frames.shape == (8, 32, 64, 3)
