"""Hostile inputs (issue 11): node inputs as an HTTP API client can send them, and bad CLI arguments.

Every refusal is a pack error naming the input and the fix; values that can be handled (uint8 frames, small
overshoot) give the same result as their float/clamped equivalent. The nodes run over the fake host; model
checks that need the host's model classes are bypassed (require_stage), everything before them is real.
"""

import os
import sys
import types

import pytest
import torch

from support import fake_comfy
from support.fake_comfy import host

pack = fake_comfy.install()
from flashvideo_pack_under_test.flashvideo_core.errors import FlashVideoError, InputError  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.tiny import write_tiny_vae  # noqa: E402
from flashvideo_pack_under_test.nodes import (  # noqa: E402
    input_checks, loader_nodes, pipeline_nodes, sampling_nodes, vae_nodes,
)
from flashvideo_pack_under_test.nodes.native import glue  # noqa: E402

from flashvideo_core import cli  # noqa: E402
from flashvideo_core.errors import InputError as CoreInputError  # noqa: E402
from flashvideo_core.io.video import write_video  # noqa: E402
from flashvideo_core.pipeline import Stage1Settings, Stage2Settings, check_settings  # noqa: E402
from flashvideo_core.stage2.bridge import encode_for_stage2  # noqa: E402
from flashvideo_core.text_embeddings import save_prompt_embedding  # noqa: E402

Encode, Decode, Upscale = vae_nodes.FlashVideoVAEEncode, vae_nodes.FlashVideoVAEDecode, pipeline_nodes.FlashVideoStage2Upscale
Degrade, Refiner, Stage1 = pipeline_nodes.FlashVideoLatentDegrade, pipeline_nodes.FlashVideoStage2Refiner, pipeline_nodes.FlashVideoStage1Sampler


@pytest.fixture(autouse=True)
def clean_host():
    host.reset()


@pytest.fixture(scope="module")
def vae_path(tmp_path_factory):
    return write_tiny_vae(str(tmp_path_factory.mktemp("models") / "3d-vae.pt"))


@pytest.fixture
def vae(vae_path):
    host.files["vae"]["3d-vae.pt"] = vae_path
    return loader_nodes.FlashVideoVAELoader.execute("3d-vae.pt", "fp32").result[0]


def _frames(n=5, h=16, w=16, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def _refused(match_input, *fix_words):
    """pytest.raises for a pack error whose message names the input and carries the fix."""
    class Check:
        def __enter__(self):
            self.ctx = pytest.raises(FlashVideoError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self.ctx.__exit__(*exc)
            if not suppressed:  # another exception type: let it show
                return False
            text = str(self.info.value)
            assert f"'{match_input}'" in text and "Fix:" in text, text
            for word in fix_words:
                assert word in text, (word, text)
            return suppressed
    return Check()


# ---- IMAGE inputs -------------------------------------------------------------------------------------------

def test_uint8_frames_are_rescaled_not_wrapped(vae):
    """uint8 0..255 would wrap in `x * 2 - 1`: the encode must equal the float 0..1 encode exactly."""
    as_float = torch.round(_frames() * 255) / 255
    as_uint8 = torch.round(_frames() * 255).to(torch.uint8)
    a = Encode.execute(vae, as_uint8, "stage2", "mode").result[0]["samples"]
    b = Encode.execute(vae, as_float, "stage2", "mode").result[0]["samples"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    a = Upscale.execute(vae, "custom", 32, 16, 3, images=as_uint8).result[0]["samples"]
    b = Upscale.execute(vae, "custom", 32, 16, 3, images=as_float).result[0]["samples"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with _refused("images", "0..1"):
        Encode.execute(vae, torch.full((5, 16, 16, 3), 300, dtype=torch.int16), "stage2")


def test_float_frames_out_of_range_are_refused_or_clamped(vae):
    frames = _frames()
    with _refused("images", "divide by 255"):
        Encode.execute(vae, frames * 255, "stage2")
    with _refused("images", "(x + 1) / 2"):
        Upscale.execute(vae, "custom", 32, 16, 0, images=frames * 2 - 1)
    nan = frames.clone()
    nan[0, 0, 0, 0] = float("nan")
    with _refused("images", "bf16 or fp32"):
        Encode.execute(vae, nan, "stage2")
    with _refused("images"):
        Upscale.execute(vae, "custom", 32, 16, 0, images=frames.masked_fill(frames > 0.9, float("inf")))
    # resampler overshoot of a few hundredths is clamped (logged), giving exactly the clamped encode
    over = frames * 1.01 - 0.005
    a = Encode.execute(vae, over, "stage2", "mode").result[0]["samples"]
    b = Encode.execute(vae, over.clamp(0, 1), "stage2", "mode").result[0]["samples"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("images, cause", [
    (torch.rand(16, 16, 3), "3-D"),
    (torch.rand(0, 16, 16, 3), "empty"),
    (torch.rand(5, 16, 16, 4), "RGBA"),
    (torch.rand(5, 0, 16, 3), "empty"),
    (torch.zeros(5, 16, 16, 3, dtype=torch.bool), "bool"),
    ([[0.5]], "list"),
])
def test_image_of_the_wrong_shape_or_type_is_refused(vae, images, cause):
    for call in (lambda: Encode.execute(vae, images, "stage2"),
                 lambda: Upscale.execute(vae, "custom", 32, 16, 0, images=images)):
        with _refused("images", "[frames, height, width, 3]" if cause != "empty" else "at least one frame") as e:
            call()
        assert cause in str(e.value)


# ---- LATENT inputs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("samples, cause", [
    ({"samples": torch.zeros(1, 4, 8, 8)}, "image latent"),
    ({"samples": torch.zeros(16, 2, 2, 2)}, "(16, 2, 2, 2)"),
    ({"samples": torch.zeros(1, 4, 2, 8, 8)}, "4 channels"),
    ({"samples": torch.zeros(1, 16, 0, 8, 8)}, "empty"),
    ({"samples": torch.zeros(1, 16, 2, 8, 8, dtype=torch.int64)}, "int64"),
    ({"samples": torch.full((1, 16, 2, 8, 8), float("inf"))}, "NaN/Inf"),
    (torch.zeros(1, 16, 2, 8, 8), "not a LATENT"),
])
def test_latent_of_the_wrong_shape_is_refused_by_every_latent_input(vae, samples, cause):
    calls = [lambda: Decode.execute(vae, samples, "stage1"),
             lambda: Upscale.execute(vae, "custom", 32, 16, 0, samples=samples),
             lambda: Degrade.execute(samples, 675, 0),
             lambda: sampling_nodes.FlashVideoStage2Noise.execute(samples)]
    for call in calls:
        with _refused("samples") as e:
            call()
        assert cause in str(e.value), str(e.value)
        if "NaN" not in cause:
            assert "[batch, 16, frames, height/8, width/8]" in str(e.value)


def test_untagged_latents_are_classified_by_size(vae):
    """Core Save/Load Latent drop the stage tag: a size that can only be one stage must match the node."""
    stage2_sized = {"samples": torch.zeros(1, 16, 1, 134, 240)}  # 1072x1920
    stage1_sized = {"samples": torch.zeros(1, 16, 2, 32, 60)}  # 256x480
    with _refused("latent_scale", "set latent_scale to stage2") as e:
        Decode.execute(vae, stage2_sized, "stage1")
    assert "no stage tag" in str(e.value) and "1920x1072" in str(e.value)
    with _refused("latent_scale", "set latent_scale to stage1"):
        Decode.execute(vae, stage1_sized, "stage2")
    with _refused("samples", "Latent Degrade", "latent_scale stage1"):
        Upscale.execute(vae, "custom", 32, 16, 0, samples=stage2_sized)
    with _refused("samples", "Stage II Upscale first"):
        Degrade.execute(stage1_sized, 675, 0)
    # a tag wins over the size; sizes both stages can have are left to the node's input
    assert Degrade.execute({**stage1_sized, "flashvideo_stage": 2}, 675, 0).result[0]["flashvideo_noise_step"] == 675
    assert Degrade.execute({"samples": torch.zeros(1, 16, 2, 8, 12)}, 675, 0).result[0]["flashvideo_stage"] == 2
    with _refused("samples", "degrade it again"):
        sampling_nodes.FlashVideoStage2Noise.execute({"samples": torch.zeros(1, 16, 2, 8, 12)})
    with _refused("samples", "not 1 or 2"):
        Decode.execute(vae, {**stage1_sized, "flashvideo_stage": 3}, "stage1")


# ---- widgets sent over the API ------------------------------------------------------------------------------

MODEL = types.SimpleNamespace(model=types.SimpleNamespace(
    model_config=types.SimpleNamespace(unet_config={"text_hidden_size": 4096})))
T5 = [[torch.zeros(1, 226, 4096), {}]]
CLIP_L = [[torch.zeros(1, 226, 768), {}]]
DEGRADED = {"samples": torch.zeros(1, 16, 2, 8, 12), "flashvideo_stage": 2, "flashvideo_noise_step": 675,
            "flashvideo_seed": 0}


@pytest.fixture
def any_model(monkeypatch):
    """Pass the model-class check (it needs the host's model classes) so the checks after it run."""
    for module in (pipeline_nodes, sampling_nodes):
        monkeypatch.setattr(module, "require_stage", lambda *a: None)
    return MODEL


@pytest.mark.parametrize("widgets, name, valid", [
    ({"frames": 0}, "frames", "1..201"), ({"frames": -3}, "frames", "1..201"), ({"frames": 48}, "frames", "45 or 49"),
    ({"width": 0}, "width", "16..2048"), ({"height": -16}, "height", "16..2048"), ({"width": 100}, "width", "96 or 112"),
    ({"seed": -1}, "seed", "0..18446744073709551615"), ({"seed": 2**64}, "seed", "0..18446744073709551615"),
    ({"steps": 0}, "steps", "2..200"), ({"cfg": float("nan")}, "cfg", "1.0..15.0"),
    ({"cfg": float("inf")}, "cfg", "1.0..15.0"), ({"steps": 3.5}, "steps", "2..200"), ({"seed": True}, "seed", "0.."),
])
def test_stage1_sampler_widgets(any_model, widgets, name, valid):
    with _refused(name, valid):
        Stage1.execute(any_model, T5, **widgets)


def test_other_widgets_and_combos(vae, any_model):
    cases = [
        (lambda: loader_nodes.FlashVideoVAELoader.execute("3d-vae.pt", "fp64"), "dtype", "['auto'"),
        (lambda: loader_nodes.FlashVideoModelLoader.execute("stage1.pt", "int4"), "weight_dtype", "fp8_e4m3fn"),
        (lambda: loader_nodes.FlashVideoModelLoader.execute("stage1.pt", "auto", "magic"), "attention", "sdpa"),
        (lambda: Decode.execute(vae, {"samples": torch.zeros(1, 16, 1, 2, 2)}, "stage1", "fastest"), "slicing", "reference"),
        (lambda: Decode.execute(vae, {"samples": torch.zeros(1, 16, 1, 2, 2)}, "stage1", "manual", -1), "memory_budget_mb", "0.."),
        (lambda: Decode.execute(vae, {"samples": torch.zeros(1, 16, 1, 2, 2)}, "stage1", "manual", 0, 3), "chunk_latents", "2 or 4"),
        (lambda: Encode.execute(vae, _frames(), "stage2", "median"), "posterior", "'mode'"),
        (lambda: Encode.execute(vae, _frames(), "stage2", "sample", -5), "seed", "0.."),
        (lambda: Encode.execute(vae, _frames(), "stage2", "sample", 0, "repeat"), "frame_rule", "'pad'"),
        (lambda: Upscale.execute(vae, "custom", 0, 16, 0, images=_frames()), "width", "16..4096"),
        (lambda: Upscale.execute(vae, "custom", 32, 16, 2**64, images=_frames()), "seed", "0.."),
        (lambda: Upscale.execute(vae, "8K", 32, 16, 0, images=_frames()), "resolution", "1080p"),
        (lambda: Degrade.execute({"samples": DEGRADED["samples"], "flashvideo_stage": 2}, 1000, 0), "noise_step", "0..999"),
        (lambda: Refiner.execute(any_model, T5, DEGRADED, 0), "steps", "1.."),
        (lambda: Refiner.execute(any_model, T5, DEGRADED, 5, float("nan")), "cfg", "1.0..20.0"),
        (lambda: Refiner.execute(any_model, T5, DEGRADED, 5, 13.0, 0.0), "shift", "1.0..5.0"),
        (lambda: Refiner.execute(any_model, T5, DEGRADED, 5, 13.0, 2.5, "sparse"), "attention", "full"),
        (lambda: sampling_nodes.FlashVideoStage1Sigmas.execute(any_model, 0), "steps", "2..200"),
        (lambda: sampling_nodes.FlashVideoStage2Sigmas.execute(any_model, 0), "steps", "1.."),
        (lambda: sampling_nodes.FlashVideoStage1Noise.execute(-1), "seed", "0.."),
        (lambda: sampling_nodes.FlashVideoDynamicCFGGuider.execute(any_model, T5, float("nan")), "cfg", "1.0..15.0"),
        (lambda: sampling_nodes.FlashVideoStage2Guider.execute(any_model, T5, DEGRADED, 0.0), "cfg", "1.0..20.0"),
    ]
    for call, name, valid in cases:
        with _refused(name, valid):
            call()


def test_memory_modes_keep_their_old_name(monkeypatch):
    """The loader's memory widget takes the core's mode names; saved workflows that say whole still load (the
    host leaves that check to the node) and mean sequential."""
    loaded = []
    fake_loader = types.SimpleNamespace(load_flashvideo_model=lambda *args, memory: loaded.append(memory))
    monkeypatch.setitem(sys.modules, f"{loader_nodes.__package__}.native.loader", fake_loader)
    monkeypatch.setattr(loader_nodes, "model_file", lambda *args: "stage1.pt")
    Loader = loader_nodes.FlashVideoModelLoader
    assert loader_nodes.MEMORY_CHOICES == ["auto", "sequential", "lean"]
    assert Loader.validate_inputs(memory="whole") is True
    for memory in ("whole", "sequential", "lean"):
        Loader.execute("stage1.pt", "auto", "comfy", memory)
    assert loaded == ["sequential", "sequential", "lean"]
    with _refused("memory", "sequential"):
        Loader.execute("stage1.pt", "auto", "comfy", "fast")


def test_a_missing_model_file_names_the_folder(vae_path):
    with _refused("vae_name", "models/vae") as e:
        loader_nodes.FlashVideoVAELoader.execute("missing.pt", "auto")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, InputError)
    with _refused("model_name", "models/diffusion_models"):
        loader_nodes.FlashVideoModelLoader.execute("missing.pt", "auto", "comfy")


def test_prompt_embedding_of_the_wrong_width_is_refused_before_sampling(any_model):
    calls = [  # (input, node, whether the node also needs the reference's 226 tokens)
        ("positive", lambda cond: Stage1.execute(any_model, cond), True),
        ("positive", lambda cond: sampling_nodes.FlashVideoDynamicCFGGuider.execute(any_model, cond), False),
        ("negative", lambda cond: sampling_nodes.FlashVideoDynamicCFGGuider.execute(any_model, T5, 6.0, cond), False),
        ("positive", lambda cond: sampling_nodes.FlashVideoStage2Guider.execute(any_model, cond, DEGRADED), False),
        ("positive", lambda cond: Refiner.execute(any_model, cond, DEGRADED), True),
    ]
    for name, call, fixed_length in calls:
        with _refused(name, "T5-XXL", "FlashVideo Text Encode") as e:
            call(CLIP_L)
        assert "768 wide" in str(e.value) and "expects 4096" in str(e.value)
        with _refused(name, "T5-XXL"):
            call([[torch.zeros(1, 77, 768), {}]])  # a CLIP-L encode: wrong width at any length
        if fixed_length:
            with _refused(name, "FlashVideo Text Encode", "226 tokens"):
                call([[torch.zeros(1, 77, 4096), {}]])
        with _refused(name, "FlashVideo Text Encode"):
            call("a cat")  # not a CONDITIONING at all
        with _refused(name, "bf16 or fp32"):
            call([[torch.full((1, 226, 4096), float("nan")), {}]])
    assert glue.text_width(types.SimpleNamespace(model=None)) is None  # unknown width: not guessed


def test_widget_helpers_accept_valid_values():
    from flashvideo_core.settings import SEED, Stage1Settings, setting

    assert input_checks.widget(setting(Stage1Settings, "frames"), 49.0, "n", "frames") == 49
    assert input_checks.widget(SEED, 2**64 - 1, "n", "seed") == 2**64 - 1
    assert input_checks.widget(setting(Stage1Settings, "cfg"), 8, "n", "cfg") == 8.0
    assert input_checks.combo_widget("sample", "n", "posterior", ["sample", "mode"]) == "sample"


# ---- core entry points ----------------------------------------------------------------------------------------

def test_core_refuses_nan_and_bad_settings(tmp_path):
    from flashvideo_core.vae.loader import load_vae

    video = torch.zeros(1, 3, 5, 16, 16)
    video[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(CoreInputError, match="NaN"):
        encode_for_stage2(load_vae(write_tiny_vae(str(tmp_path / "v.pt"))), video, (16, 16))
    with pytest.raises(CoreInputError, match="stage1.frames is 0"):
        check_settings(Stage1Settings(frames=0))
    with pytest.raises(CoreInputError, match="stage2.cfg is nan"):
        check_settings(Stage1Settings(), Stage2Settings(cfg=float("nan")))
    with pytest.raises(CoreInputError, match="--steps2 is 0"):
        check_settings(Stage1Settings(), Stage2Settings(steps=0), {"stage2.steps": "--steps2"})
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"old")
    with pytest.raises(CoreInputError, match="NaN"):
        write_video(str(target), torch.full((3, 1, 16, 16), float("nan")))
    with pytest.raises(CoreInputError, match="even width"):
        write_video(str(target), torch.zeros(3, 1, 15, 16))
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["keep.mp4", "v.pt"]


# ---- CLI -------------------------------------------------------------------------------------------------------

@pytest.fixture
def embedding(tmp_path):
    return save_prompt_embedding(str(tmp_path / "prompt.safetensors"), torch.zeros(1, 226, 32), "a cat")


@pytest.fixture
def missing(tmp_path, embedding):
    """Model paths that do not exist: any check that runs before loading answers first."""
    return ["generate", "--stage1", str(tmp_path / "no-stage1.pt"), "--stage2", str(tmp_path / "no-stage2.pt"),
            "--vae", str(tmp_path / "no-vae.pt"), "--embedding", embedding]


def _cli(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return code, err


@pytest.mark.parametrize("flags, flag, fix", [
    (["--seed", "-1"], "--seed", "0..18446744073709551615"),
    (["--seed", str(2**64)], "--seed", "0..18446744073709551615"),
    (["--seed-bridge", "-2"], "--seed-bridge", "0.."),
    (["--seed-degrade", str(2**70), "--skip-stage2"], "--seed-degrade", "0.."),
    (["--frames", "0"], "--frames", "4k+1"),
    (["--frames", "-3"], "--frames", "1..201"),
    (["--width", "0"], "--width", "16..2048"),
    (["--height", "-16"], "--height", "16..2048"),
    (["--resolution", "0x0"], "--resolution", "16..4096"),
    (["--resolution=-16x64"], "--resolution", "16..4096"),
    (["--steps1", "0"], "--steps1", "2..200"),
    (["--steps2", "0"], "--steps2", "1.."),
    (["--cfg1", "nan"], "--cfg1", "finite"),
    (["--cfg2", "inf"], "--cfg2", "finite"),
    (["--shift", "-1"], "--shift", "1.0..5.0"),
    (["--noise-step", "1000"], "--noise-step", "0..999"),
    (["--fps", "0"], "--fps", "1..240"),
    (["--tile-size", "-64"], "--tile-size", "0..8192"),
    (["--chunk-latents", "3"], "--chunk-latents", "even"),
    (["--vae-memory-mb", "0"], "--vae-memory-mb", "1.."),
    (["--device", "cuda:7"], "--device", "--device cpu"),
    (["--device", "meta"], "--device", "cuda:N"),
    (["--chunk-latents", "4"], "--chunk-latents", "add --slicing manual"),
    (["--tile-size", "512", "--slicing", "auto"], "--tile-size", "add --slicing manual"),
    (["--skip-stage2", "--cfg2", "nan"], "--cfg2", "finite"),
    (["--skip-stage2", "--window-attention"], "--window-attention", "drop one"),
])
def test_cli_refuses_bad_numbers_before_loading(missing, tmp_path, capsys, flags, flag, fix):
    code, err = _cli([*missing, "--output-dir", str(tmp_path / "out"), *flags], capsys)
    assert code == 2 and flag in err and fix in err, err
    assert not (tmp_path / "out").exists()  # refused before the output folder was even made


def test_cli_refuses_bad_outputs_before_loading(missing, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "prompt_seed0_stage2.mp4"
    existing.write_bytes(b"an earlier run")
    code, err = _cli([*missing, "--output-dir", str(out)], capsys)
    assert code == 2 and str(existing) in err and "--overwrite" in err, err
    assert existing.read_bytes() == b"an earlier run"
    # with --overwrite the outputs pass, and the next check (the missing model file) answers
    code, err = _cli([*missing, "--output-dir", str(out), "--overwrite"], capsys)
    assert code == 2 and "--stage1" in err and "no such file" in err, err
    existing.unlink()
    (out / "prompt_seed0_joint.mp4").mkdir()
    code, err = _cli([*missing, "--output-dir", str(out), "--overwrite"], capsys)
    assert code == 2 and "is a folder" in err, err
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code, err = _cli([*missing, "--output-dir", str(a_file)], capsys)
    assert code == 2 and "--output-dir" in err and "is a file" in err, err
    code, err = _cli([*missing, "--output-dir", str(a_file / "sub")], capsys)
    assert code == 2 and "cannot write to --output-dir" in err, err


def test_cli_refuses_an_unwritable_output_dir(missing, tmp_path, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "TemporaryFile", read_only)
    code, err = _cli([*missing, "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "cannot write to --output-dir" in err and "Permission denied" in err, err


def test_cli_refuses_over_long_and_clashing_output_names(tmp_path, capsys):
    long_name = str(tmp_path / ("p" * 240 + ".safetensors"))  # fits; its outputs' names do not
    os.rename(save_prompt_embedding(str(tmp_path / "short.safetensors"), torch.zeros(1, 226, 32)), long_name)
    code, err = _cli(["generate", "--stage1", "x", "--vae", "y", "--skip-stage2", "--embedding", long_name,
                      "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "over the file system's limit" in err and "rename the embedding file" in err, err
    deep = tmp_path
    while len(str(deep)) < 3990:  # a folder that fits in PATH_MAX (4096), its files' paths do not
        deep = deep / ("d" * min(250, 3990 - len(str(deep)) - 1))
    deep.mkdir(parents=True)
    name = save_prompt_embedding(str(tmp_path / ("n" * 100 + ".safetensors")), torch.zeros(1, 226, 32))
    code, err = _cli(["generate", "--stage1", "x", "--vae", "y", "--skip-stage2", "--embedding", name,
                      "--output-dir", str(deep)], capsys)
    assert code == 2 and "path limit" in err and "shorter output folder" in err, err
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = save_prompt_embedding(str(tmp_path / "a" / "cat.safetensors"), torch.zeros(1, 226, 32))
    two = save_prompt_embedding(str(tmp_path / "b" / "cat.safetensors"), torch.zeros(1, 226, 32))
    code, err = _cli(["generate", "--stage1", "x", "--vae", "y", "--skip-stage2", "--embedding", one, two,
                      "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "would write the same" in err and "rename one" in err, err
    code, err = _cli(["generate", "--stage1", "x", "--vae", "y", "--skip-stage2", "--embedding",
                      str(tmp_path / "nope.safetensors"), "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "--embedding" in err and "no such file" in err, err


def test_demo_refuses_to_overwrite_before_making_models(tmp_path, capsys):
    (tmp_path / "demo_seed0_stage1.mp4").write_bytes(b"keep")
    code, err = _cli(["demo", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "--overwrite" in err
    assert (tmp_path / "demo_seed0_stage1.mp4").read_bytes() == b"keep"


def test_convert_and_make_tiny_check_their_paths(tmp_path, capsys, embedding):
    code, err = _cli(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "o.safetensors")], capsys)
    assert code == 2 and "no such file" in err
    (tmp_path / "dir.safetensors").mkdir()
    code, err = _cli(["convert", embedding, str(tmp_path / "dir.safetensors")], capsys)
    assert code == 2 and "is a folder" in err
    kept = tmp_path / "kept.safetensors"
    kept.write_bytes(b"a converted model")
    code, err = _cli(["convert", embedding, str(kept)], capsys)
    assert code == 2 and "--force" in err and kept.read_bytes() == b"a converted model"
    code, err = _cli(["convert", embedding, str(tmp_path / ("x" * 300 + ".safetensors"))], capsys)
    assert code == 2 and "limit" in err
    code, err = _cli(["make-tiny", embedding], capsys)
    assert code == 2 and "models_dir" in err and "is a file" in err


def test_unexpected_errors_end_in_one_line_unless_debugging(missing, tmp_path, capsys, monkeypatch):
    def bug(args):
        raise RuntimeError("something nobody checked\nsecond line")

    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr(cli, "_check_arguments", bug)
    code, err = _cli([*missing, "--output-dir", str(tmp_path)], capsys)
    assert code == 1 and "unexpected RuntimeError: something nobody checked" in err and "--debug" in err, err
    with pytest.raises(RuntimeError):
        cli.main([*missing, "--output-dir", str(tmp_path), "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(RuntimeError):
        cli.main([*missing, "--output-dir", str(tmp_path)])


# ---- the same values through a real host's HTTP API ------------------------------------------------------------

@pytest.fixture(scope="module")
def api_server(comfyui_host, tmp_path_factory):
    from support.workflow_runs import served_with_models

    with served_with_models(comfyui_host.location, tmp_path_factory.mktemp("comfyui-hostile")) as server:
        yield server


def _stage1_graph(**widgets) -> dict:
    inputs = {"model": ["m1", 0], "positive": ["emb", 0], "width": 48, "height": 32, "frames": 9, "steps": 2,
              "cfg": 8.0, "seed": 0, **widgets}
    return {
        "emb": {"class_type": "FlashVideoLoadPromptEmbedding",
                "inputs": {"embedding": "flashvideo_example_prompt.safetensors"}},
        "m1": {"class_type": "FlashVideoModelLoader",
               "inputs": {"model_name": "stage1.pt", "weight_dtype": "auto", "attention": "comfy"}},
        "s1": {"class_type": "FlashVideoStage1Sampler", "inputs": inputs},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["s1", 0], "filename_prefix": "hostile/s1"}},
    }


@pytest.mark.comfyui
@pytest.mark.parametrize("widgets, name", [
    ({"cfg": float("nan")}, "cfg"),  # NaN passes the server's min/max comparison
    ({"frames": 48}, "frames"),  # the server never checks step
    ({"width": 40}, "width"),
    ({"model_weight_dtype": "int4"}, "weight_dtype"),  # V3 combos are not checked by 0.3.64
])
def test_api_values_the_server_lets_through_are_refused_by_the_nodes(api_server, widgets, name):
    from support.comfyui_host import history_messages

    graph = _stage1_graph(**{k: v for k, v in widgets.items() if not k.startswith("model_")})
    if "model_weight_dtype" in widgets:
        graph["m1"]["inputs"]["weight_dtype"] = widgets["model_weight_dtype"]
    status, body = api_server.queue_prompt(graph)
    if status != 200:  # a newer server refused it itself: fine, if it names the input
        assert name in json_text(body), body
        return
    entry = api_server.wait_history(body["prompt_id"], 120)
    errors = history_messages(entry, "execution_error")
    assert entry["status"]["status_str"] == "error" and errors, entry["status"]
    message = errors[0]["exception_message"]
    assert errors[0]["exception_type"].endswith("InputError"), errors[0]
    assert f"'{name}'" in message and "Fix:" in message, message


@pytest.mark.comfyui
def test_an_old_memory_name_in_a_saved_prompt_still_runs(api_server):
    graph = _stage1_graph()
    graph["m1"]["inputs"]["memory"] = "whole"  # the loader's name for sequential before it took the core's names
    status, body = api_server.queue_prompt(graph)
    assert status == 200, body
    entry = api_server.wait_history(body["prompt_id"], 120)
    assert entry["status"]["status_str"] == "success", entry["status"]


def json_text(body) -> str:
    import json

    return json.dumps(body)
