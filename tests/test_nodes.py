"""The ComfyUI nodes over the real core, with a small fake of the host (no ComfyUI needed)."""

import pytest
import torch

from support import fake_comfy
from support.fake_comfy import InterruptProcessingException, host

pack = fake_comfy.install()
from flashvideo_pack_under_test.flashvideo_core.errors import InputError  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.tiny import write_tiny_vae  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.vae.model import DiagonalGaussian  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.vae.slicing import SlicingOptions, decode_sliced, encode_sliced  # noqa: E402
from flashvideo_pack_under_test.nodes import NODES, loader_nodes, vae_nodes  # noqa: E402

#: Saved workflows store widget values by position: these lists may only grow at the end.
FROZEN_INPUTS = {
    "FlashVideoVAELoader": ["vae_name", "dtype"],
    "FlashVideoVAEDecode": ["vae", "samples", "latent_scale", "slicing", "memory_budget_mb", "chunk_latents",
                            "tile_size", "tile_overlap"],
    "FlashVideoVAEEncode": ["vae", "images", "latent_scale", "posterior", "seed", "frame_rule", "slicing",
                            "memory_budget_mb", "chunk_latents", "tile_size", "tile_overlap"],
    "FlashVideoTextEncode": ["clip", "prompt"],
    "FlashVideoSavePromptEmbedding": ["conditioning", "name", "prompt"],
    "FlashVideoLoadPromptEmbedding": ["embedding"],
    "FlashVideoModelLoader": ["model_name", "weight_dtype", "attention", "memory"],
    "FlashVideoStage1Sampler": ["model", "positive", "width", "height", "frames", "steps", "cfg", "seed"],
    "FlashVideoStage2Upscale": ["vae", "resolution", "width", "height", "seed", "frame_rule", "slicing",
                                "memory_budget_mb", "chunk_latents", "tile_size", "tile_overlap", "images", "samples"],
    "FlashVideoLatentDegrade": ["samples", "noise_step", "seed"],
    "FlashVideoStage2Refiner": ["model", "positive", "samples", "steps", "cfg", "shift", "attention"],
    "FlashVideoStage1Sigmas": ["model", "steps"],
    "FlashVideoStage1Noise": ["seed"],
    "FlashVideoDynamicCFGGuider": ["model", "positive", "cfg", "negative"],
    "FlashVideoStage1SamplerSelect": [],
    "FlashVideoStage2Sigmas": ["model", "steps"],
    "FlashVideoStage2Noise": ["samples"],
    "FlashVideoStage2Guider": ["model", "positive", "samples", "cfg", "negative"],
    "FlashVideoStage2SamplerSelect": [],
    "FlashVideoT5Loader": ["clip_name", "device"],
    "FlashVideoEnhanceVideo": ["model", "vae", "positive", "video", "resolution", "width", "height", "noise_step", "steps",
                               "cfg", "shift", "seed", "overlap", "colour_fix", "attention", "slicing",
                               "memory_budget_mb", "chunk_latents", "tile_size", "tile_overlap"],
}


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    path = write_tiny_vae(str(tmp_path_factory.mktemp("models") / "flashvideo-tiny-vae.pt"))
    host.files["vae"]["flashvideo-tiny-vae.pt"] = path
    return path


@pytest.fixture(autouse=True)
def clean_host():
    host.reset()
    yield


@pytest.fixture
def vae(vae_file):
    host.files["vae"]["flashvideo-tiny-vae.pt"] = vae_file
    return loader_nodes.FlashVideoVAELoader.execute("flashvideo-tiny-vae.pt", "auto").result[0]


def _frames(n=17, h=64, w=96):
    t = torch.linspace(0, 1, n)[:, None, None, None]
    y = torch.linspace(0, 1, h)[None, :, None, None]
    x = torch.linspace(0, 1, w)[None, None, :, None]
    return (0.5 + 0.4 * torch.sin(6 * x + 3 * y + 2 * t + torch.tensor([0.0, 1.0, 2.0]))).float()


def test_schemas_are_frozen_and_documented():
    schemas = {node.define_schema().node_id: node.define_schema() for node in NODES}
    assert {k: [i.id for i in s.inputs] for k, s in schemas.items()} == FROZEN_INPUTS
    for node_id, schema in schemas.items():
        assert node_id.startswith("FlashVideo") and schema.description
        for inp in schema.inputs:
            assert inp.options.get("tooltip"), f"{node_id}.{inp.id} has no tooltip"


def test_loader_resolves_the_file_and_dtype(vae):
    assert vae.dtype == torch.float32  # auto on CPU
    assert next(vae.model.parameters()).dtype == torch.float32
    bf16 = loader_nodes.FlashVideoVAELoader.execute("flashvideo-tiny-vae.pt", "bf16").result[0]
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError):
        loader_nodes.FlashVideoVAELoader.execute("missing.pt", "auto")


def test_encode_then_decode_match_the_core(vae):
    images = _frames()
    latent = vae_nodes.FlashVideoVAEEncode.execute(vae, images, "stage2", "sample", 5).result[0]
    assert latent["samples"].shape == (1, 16, 5, 8, 12)
    assert host.loads and host.loads[0] > 0  # asked ComfyUI for room before encoding
    video = images.movedim(-1, 0).unsqueeze(0) * 2 - 1
    moments = encode_sliced(vae.model, video, SlicingOptions())
    expected = DiagonalGaussian(moments).sample(torch.Generator().manual_seed(5))  # LATENTs are unscaled
    torch.testing.assert_close(latent["samples"], expected)
    assert latent["flashvideo_stage"] == 2

    frames = vae_nodes.FlashVideoVAEDecode.execute(vae, latent, "stage2").result[0]
    assert frames.shape == (17, 64, 96, 3) and frames.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    # latent_scale stage2 tells the slicer it is a stage-II latent: the official 1x2 width tiles in reference mode
    decoded = decode_sliced(vae.model, latent["samples"], SlicingOptions(stage=2))
    torch.testing.assert_close(frames, ((decoded.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 3, 0))
    assert host.progress[-1][:2] == (4, 4) and host.progress[-1][2]  # per chunk and tile, with a preview frame


def test_decode_takes_unscaled_latents_whatever_the_stage(vae):
    """LATENTs are unscaled (the models scale them while sampling): both stages decode the VAE latent as it is;
    only the slicing differs (stage2: the official 1x2 tiles in reference mode)."""
    latent = {"samples": torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(0))}
    one = vae_nodes.FlashVideoVAEDecode.execute(vae, latent, "stage1").result[0]
    two = vae_nodes.FlashVideoVAEDecode.execute(vae, latent, "stage2").result[0]
    whole = decode_sliced(vae.model, latent["samples"], SlicingOptions())
    torch.testing.assert_close(one, ((whole.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 3, 0))
    tiled = decode_sliced(vae.model, latent["samples"], SlicingOptions(stage=2))
    torch.testing.assert_close(two, ((tiled.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 3, 0))


def test_mode_posterior_is_deterministic(vae):
    a = vae_nodes.FlashVideoVAEEncode.execute(vae, _frames(5, 16, 16), "stage1", "mode", 1).result[0]
    b = vae_nodes.FlashVideoVAEEncode.execute(vae, _frames(5, 16, 16), "stage1", "mode", 2).result[0]
    assert torch.equal(a["samples"], b["samples"])


def test_frame_rules(vae):
    with pytest.raises(InputError, match=r"4k\+1.*13 or 17.*frame_rule"):
        vae_nodes.FlashVideoVAEEncode.execute(vae, _frames(16, 16, 16), "stage2")
    trimmed = vae_nodes.FlashVideoVAEEncode.execute(vae, _frames(16, 16, 16), "stage2", frame_rule="trim").result[0]
    padded = vae_nodes.FlashVideoVAEEncode.execute(vae, _frames(16, 16, 16), "stage2", frame_rule="pad").result[0]
    assert trimmed["samples"].shape[2] == 4 and padded["samples"].shape[2] == 5


def test_bad_inputs_get_clear_errors(vae, monkeypatch):
    with pytest.raises(InputError, match="multiple of 8"):
        vae_nodes.FlashVideoVAEEncode.execute(vae, _frames(5, 20, 30), "stage2")
    nan = torch.zeros(1, 16, 2, 2, 2)
    nan[..., 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        vae_nodes.FlashVideoVAEDecode.execute(vae, {"samples": nan}, "stage1")
    with pytest.raises(InputError, match="latent_scale"):
        vae_nodes.FlashVideoVAEDecode.execute(vae, {"samples": torch.zeros(1, 16, 2, 2, 2)}, "stage3")
    with pytest.raises(InputError, match="slicing"):
        vae_nodes.FlashVideoVAEDecode.execute(vae, {"samples": torch.zeros(1, 16, 2, 2, 2)}, "stage1", "fastest")
    monkeypatch.setattr(vae_nodes, "decode_sliced", lambda *a, **k: torch.full((1, 3, 1, 8, 8), float("nan")))
    with pytest.raises(InputError, match="fp16.*bf16 or fp32"):
        vae_nodes.FlashVideoVAEDecode.execute(vae, {"samples": torch.zeros(1, 16, 1, 1, 1)}, "stage1")


def test_interrupt_stops_the_decode_inside_its_first_chunk(vae):
    host.interrupt_after_checks = 3  # the chunk's own check, then two resnet blocks
    latent = {"samples": torch.randn(1, 16, 5, 2, 3)}
    with pytest.raises(InterruptProcessingException):
        vae_nodes.FlashVideoVAEDecode.execute(vae, latent, "stage1")
    assert host.checks == 4 and not any(p[0] >= 1 for p in host.progress)  # stopped before a chunk finished


def test_manual_tiles_from_pixel_widgets(vae):
    latent = {"samples": torch.randn(1, 16, 1, 4, 8)}
    frames = vae_nodes.FlashVideoVAEDecode.execute(vae, latent, "stage1", "manual", 0, 2, 32, 16).result[0]
    assert frames.shape == (1, 32, 64, 3)
    assert host.progress[-1][:2] == (2, 2)  # 1 chunk x (1 x 2) tiles of 32 px
