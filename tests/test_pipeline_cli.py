"""The two-stage pipeline on tiny checkpoints, and the generate / make-tiny / demo commands."""

import os
import re

import av
import pytest
import torch

from flashvideo_core.cli import main
from flashvideo_core.constants import LATENT_SCALE_STAGE2
from flashvideo_core.dit.loader import load_dit
from flashvideo_core.pipeline import Stage1Settings, Stage2Settings, generate_two_stage
from flashvideo_core.text_embeddings import load_prompt_embedding
from flashvideo_core.tiny_install import TINY_FILES, make_tiny
from flashvideo_core.vae.loader import load_vae
from flashvideo_core.vae.slicing import SlicingOptions, decode_sliced


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return make_tiny(str(tmp_path_factory.mktemp("models")))


def _probe(path):
    with av.open(path) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), stream.width, stream.height, float(stream.average_rate)


def test_make_tiny_writes_official_layouts_and_refuses_to_overwrite(tiny_models, tmp_path):
    assert set(tiny_models) == set(TINY_FILES.values())
    assert load_dit(tiny_models["stage1"], expect_stage="stage1").config.stage == "stage1"
    assert load_dit(tiny_models["stage2"], expect_stage="stage2").config.stage == "stage2"
    assert torch.load(tiny_models["stage1"], weights_only=True)["module"].keys().__contains__(
        "model.diffusion_model.transformer.layers.0.attention.dense.matrix_A.0")  # unmerged LoRA, as stage1.pt
    context, prompt = load_prompt_embedding(tiny_models["embedding"])
    assert context.shape == (1, 226, 32) and prompt
    assert main(["make-tiny", str(tmp_path)]) == 0
    assert main(["make-tiny", str(tmp_path)]) == 2  # exists: refused
    pack = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert main(["make-tiny", os.path.join(pack, "ComfyUI", "models")]) == 2  # inside the pack: refused, nothing written
    assert not os.path.exists(os.path.join(pack, "ComfyUI"))


def test_two_stage_pipeline_gives_frames_of_the_right_count_and_size(tiny_models):
    stage1 = load_dit(tiny_models["stage1"], device="cpu")
    stage2 = load_dit(tiny_models["stage2"], device="cpu")
    vae = load_vae(tiny_models["vae"])
    context, _ = load_prompt_embedding(tiny_models["embedding"])
    s1 = Stage1Settings(height=32, width=48, frames=17, steps=4, seed=1)
    s2 = Stage2Settings(height=64, width=96, steps=2, seed=1)
    result = generate_two_stage(stage1, stage2, vae, context, None, s1, s2, SlicingOptions())
    assert result.preview.shape == (1, 3, 17, 32, 48)
    assert result.refined.shape == (1, 3, 17, 64, 96)
    assert result.stage1_latent.shape == (1, 16, 5, 4, 6) and result.stage2_latent.shape == (1, 16, 5, 8, 12)
    assert torch.isfinite(result.refined).all() and result.refined.abs().max() <= 1
    assert list(result.timings) == ["stage I", "bridge", "degrade", "stage II", "decode"]
    # the final decode is told it is a stage-II latent (reference mode: the official 1x2 width tiles)
    stage2_decode = decode_sliced(vae, result.stage2_latent / LATENT_SCALE_STAGE2, SlicingOptions(stage=2))
    torch.testing.assert_close(result.refined, stage2_decode.clamp(-1, 1))
    again = generate_two_stage(stage1, stage2, vae, context, None, s1, s2, SlicingOptions())
    torch.testing.assert_close(again.refined, result.refined)  # seeded end to end
    preview_only = generate_two_stage(stage1, None, vae, context, None, s1, s2)
    assert preview_only.refined is None
    torch.testing.assert_close(preview_only.preview, result.preview)


def test_generate_writes_three_mp4s_at_8_fps(tiny_models, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--stage1", tiny_models["stage1"], "--stage2", tiny_models["stage2"], "--vae",
                 tiny_models["vae"], "--embedding", tiny_models["embedding"], "--output-dir", str(out),
                 "--height", "32", "--width", "48", "--frames", "9", "--steps1", "3", "--steps2", "2",
                 "--resolution", "96x64", "--seed", "3", "--hard-seams"])
    assert code == 0
    stem = "flashvideo_example_prompt_seed3"
    assert _probe(str(out / f"{stem}_stage1.mp4")) == (9, 48, 32, 8.0)
    assert _probe(str(out / f"{stem}_stage2.mp4")) == (9, 96, 64, 8.0)
    assert _probe(str(out / f"{stem}_joint.mp4")) == (9, 192, 64, 8.0)
    progress = capsys.readouterr().err  # one line per pass when not on a terminal: phase, steps, seconds
    assert re.search(r"^stage I: \[#+\] 3/3 \(\d+\.\d s\)$", progress, re.M), progress
    assert re.search(r"^stage II: \[#+\] 2/2 ", progress, re.M) and "bridge: [" in progress


@pytest.mark.parametrize("frames", [1, 5, 13, 17])
def test_every_frame_count_on_the_grid_comes_back_whole(tiny_models, tmp_path, frames):
    """Every 4k+1 frame count runs end to end and each video has that many frames: an even latent count (5, 13
    frames) once decoded to 4 frames per latent and ended in a size mismatch after two videos were written."""
    out = tmp_path / "out"
    code = main(["generate", "--stage1", tiny_models["stage1"], "--stage2", tiny_models["stage2"], "--vae",
                 tiny_models["vae"], "--embedding", tiny_models["embedding"], "--output-dir", str(out),
                 "--height", "32", "--width", "48", "--frames", str(frames), "--steps1", "2", "--steps2", "1",
                 "--resolution", "64x32"])
    assert code == 0
    for kind in ("stage1", "stage2", "joint"):
        assert _probe(str(out / f"flashvideo_example_prompt_seed0_{kind}.mp4"))[0] == frames, kind


@pytest.mark.parametrize("height, width, resolution", [
    (16, 16, "16x16"), (48, 32, "32x48"), (32, 48, "16x16"), (16, 48, "96x32"), (48, 16, "16x80")])
def test_sizes_on_the_grid_run_end_to_end(tiny_models, tmp_path, height, width, resolution):
    """The smallest sizes, portrait and landscape, a stage II smaller than stage I and aspect changes: every size
    the checks accept (multiples of 16) runs and comes back at the size asked for."""
    out = tmp_path / "out"
    code = main(["generate", "--stage1", tiny_models["stage1"], "--stage2", tiny_models["stage2"], "--vae",
                 tiny_models["vae"], "--embedding", tiny_models["embedding"], "--output-dir", str(out),
                 "--height", str(height), "--width", str(width), "--frames", "5", "--steps1", "2", "--steps2", "1",
                 "--resolution", resolution])
    assert code == 0
    w2, h2 = (int(side) for side in resolution.split("x"))
    assert _probe(str(out / "flashvideo_example_prompt_seed0_stage1.mp4"))[:3] == (5, width, height)
    assert _probe(str(out / "flashvideo_example_prompt_seed0_stage2.mp4"))[:3] == (5, w2, h2)


def test_generate_reports_bad_arguments(tiny_models, tmp_path, capsys):
    common = ["--vae", tiny_models["vae"], "--embedding", tiny_models["embedding"], "--output-dir", str(tmp_path)]
    assert main(["generate", "--stage1", tiny_models["stage1"], *common]) == 2
    assert "--stage2" in capsys.readouterr().err
    assert main(["generate", "--stage1", tiny_models["stage2"], "--skip-stage2", *common]) == 2
    assert "expected stage1" in capsys.readouterr().err
    assert main(["generate", "--stage1", tiny_models["stage1"], "--stage2", tiny_models["stage2"],
                 "--resolution", "big", *common]) == 2
    assert "--resolution" in capsys.readouterr().err


def test_generate_checks_arguments_before_loading_any_model(tiny_models, tmp_path, capsys):
    """Bad sizes and unwritable outputs are refused first: the model paths here do not even exist."""
    missing = ["--stage1", str(tmp_path / "no-stage1.pt"), "--stage2", str(tmp_path / "no-stage2.pt"),
               "--vae", str(tmp_path / "no-vae.pt"), "--embedding", tiny_models["embedding"]]
    out = ["--output-dir", str(tmp_path / "out")]
    assert main(["generate", *missing, *out, "--resolution", "100x64"]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    assert main(["generate", *missing, *out, "--frames", "10"]) == 2
    assert "4k+1" in capsys.readouterr().err
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert main(["generate", *missing, "--output-dir", str(blocked / "out")]) == 2
    assert "--output-dir" in capsys.readouterr().err


def test_tiles_smaller_than_their_overlap_are_refused_before_any_model_loads(tiny_models, tmp_path, capsys):
    """Manual tiles are checked on every size the run will decode, in pixels and by flag, before loading (they were
    refused only after stage I had run, in latents)."""
    models = ["--stage1", tiny_models["stage1"], "--stage2", tiny_models["stage2"], "--vae", tiny_models["vae"],
              "--embedding", tiny_models["embedding"]]
    tiles = ["--slicing", "manual", "--tile-size", "16", "--tile-overlap", "128"]
    assert main(["generate", *models, *tiles, "--output-dir", str(tmp_path / "out"), "--height", "32", "--width",
                 "48", "--frames", "9", "--resolution", "96x64"]) == 2
    captured = capsys.readouterr()
    assert "error: --tile-size 16 px with --tile-overlap 128 px: the 48x32 frames split into tiles of 16 px" \
        in captured.err and "models loaded" not in captured.out and "stage I: [" not in captured.err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert main(["generate", *models, "--slicing", "manual", "--tile-size", "256", "--tile-overlap", "64",
                 "--output-dir", str(tmp_path / "ok"), "--height", "32", "--width", "48", "--frames", "9",
                 "--steps1", "2", "--steps2", "1", "--resolution", "96x64"]) == 0


def test_generate_refuses_an_embedding_of_the_wrong_width(tiny_models, tmp_path, capsys):
    from flashvideo_core.text_embeddings import save_prompt_embedding

    wrong = str(tmp_path / "clip_l.safetensors")
    save_prompt_embedding(wrong, torch.zeros(1, 226, 768), "encoded with the wrong text encoder")
    code = main(["generate", "--stage1", tiny_models["stage1"], "--stage2", tiny_models["stage2"], "--vae",
                 tiny_models["vae"], "--embedding", wrong, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "768 wide" in err and "expects 32" in err and "T5" in err, err
    assert not (tmp_path / "out" / "clip_l_seed0_stage1.mp4").exists()


def test_demo_runs_the_two_stage_pipeline(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path), "--frames", "9", "--steps1", "3"]) == 0
    text = capsys.readouterr().out
    for phase in ("stage I", "bridge", "stage II", "decode", "random weights"):
        assert phase in text
    assert _probe(str(tmp_path / "demo_seed0_stage2.mp4")) == (9, 192, 128, 8.0)


def test_generate_has_a_flag_for_every_node_knob(tiny_models, tmp_path, capsys):
    """Separate seeds (bridge, degradation), the attention kernel, window attention and manual VAE slicing, as
    the nodes offer them: each reaches the pipeline and changes what it should (and only that)."""
    common = ["--stage1", tiny_models["stage1"], "--stage2", tiny_models["stage2"], "--vae", tiny_models["vae"],
              "--embedding", tiny_models["embedding"], "--height", "32", "--width", "48", "--frames", "9",
              "--steps1", "2", "--steps2", "2", "--resolution", "96x64", "--seed", "3"]

    def refined(name, *flags):
        out = tmp_path / name
        assert main(["generate", *common, "--output-dir", str(out), *flags]) == 0
        with av.open(str(out / "flashvideo_example_prompt_seed3_stage2.mp4")) as c:
            return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]).float()

    base = refined("base")
    assert torch.equal(refined("same", "--seed-bridge", "3", "--seed-degrade", "3", "--attention", "sage"), base)
    assert not torch.equal(refined("degrade", "--seed-degrade", "4"), base)
    assert not torch.equal(refined("bridge", "--seed-bridge", "4"), base)
    # the 7x11x11 window covers these 3 x 4 x 6 patches: the same attention, up to float error and mp4 rounding
    assert (refined("window", "--window-attention") - base).abs().mean() < 1.0
    assert refined("manual", "--slicing", "manual", "--chunk-latents", "2", "--tile-size", "64",
                   "--tile-overlap", "16").shape == base.shape
    # the memory mode reaches both samplers and does not change the picture (cond and uncond one after the other)
    import flashvideo_core.cli as cli
    import flashvideo_core.stage2.refiner as refiner

    seen, plan_for = [], refiner.plan_for
    refiner.plan_for = lambda *args: seen.append(args[-1]) or plan_for(*args)
    try:
        assert (refined("lean", "--memory", "sequential") - base).abs().mean() < 1.0
    finally:
        refiner.plan_for = plan_for
    assert seen == ["sequential"] and cli.MEMORY_MODES == ("auto", "batched", "sequential", "lean")
    capsys.readouterr()
    assert main(["generate", *common, "--output-dir", str(tmp_path / "x"), "--slicing", "manual",
                 "--chunk-latents", "3"]) == 2  # checked before loading: decode chunks are even
    assert "even" in capsys.readouterr().err


def test_written_files_follow_the_umask(tmp_path, tiny_models):
    """Models, embeddings and videos are created like any file (0644 under the usual umask 022), never 0600 (which
    safetensors 0.8 gives its files)."""
    from flashvideo_core.checkpoints.convert import convert_checkpoint
    from flashvideo_core.io.video import write_video

    old = os.umask(0o022)
    try:
        assert main(["make-tiny", str(tmp_path / "models")]) == 0
        convert_checkpoint(tiny_models["vae"], str(tmp_path / "vae.safetensors"))
        write_video(str(tmp_path / "clip.mp4"), torch.zeros(3, 5, 32, 48), fps=8)
    finally:
        os.umask(old)
    written = [os.path.join(root, name) for root, _, names in os.walk(tmp_path) for name in names]
    assert any(p.endswith(".mp4") for p in written) and any(p.endswith(".safetensors") for p in written)
    modes = {p: oct(os.stat(p).st_mode & 0o777) for p in written}
    assert set(modes.values()) == {"0o644"}, modes
