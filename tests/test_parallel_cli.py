"""``torchrun --nproc-per-node N -m flashvideo_core generate|enhance`` on the CPU (gloo): the same videos as one
process, written once by process 0, the layout in the output, and one message when a process fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flashvideo_core.cli import main
from flashvideo_core.io.video import VideoWriter, read_frames
from flashvideo_core.tiny_install import make_tiny

pytest.importorskip("yunchang", reason="the sequence-parallel engine (requirements-dev.txt)")
SUPPORT = Path(__file__).resolve().parent / "support"
GENERATE = ["--height", "32", "--width", "48", "--frames", "9", "--steps1", "3", "--steps2", "2", "--resolution",
            "96x64", "--seed", "3"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_tiny(str(tmp_path_factory.mktemp("models")))


def model_flags(models: dict, stage1: bool = True) -> list:
    flags = ["--stage2", models["stage2"], "--vae", models["vae"], "--embedding", models["embedding"]]
    return (["--stage1", models["stage1"]] if stage1 else []) + flags


def torchrun(processes: int, *argv: str, script: str = "") -> subprocess.CompletedProcess:
    entry = [script] if script else ["-m", "flashvideo_core"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(processes), *entry, *argv], capture_output=True, text=True, env=env, timeout=300)


def frames(path: Path) -> torch.Tensor:
    return torch.stack([torch.as_tensor(f) for f in read_frames(str(path))]).float()


def assert_same_video(parallel: Path, single: Path) -> None:
    """Equal up to the rounding that float differences of ~1e-6 can flip (a level here and there)."""
    a, b = frames(parallel), frames(single)
    assert a.shape == b.shape and a.std() > 5  # a picture, not a flat frame
    assert (a - b).abs().mean() < 0.05 and (a - b).abs().max() <= 3, float((a - b).abs().max())


def errors(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_generate_over_two_processes_writes_the_single_process_videos_once(models, tmp_path):
    assert main(["generate", *model_flags(models), *GENERATE, "--output-dir", str(tmp_path / "one")]) == 0
    run = torchrun(2, "generate", *model_flags(models), *GENERATE, "--output-dir", str(tmp_path / "two"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 processes, sequence-parallel: Ulysses degree 2, ring degree 1" in run.stdout
    written = [line for line in run.stdout.splitlines() if line.startswith("wrote ")]
    assert len(written) == 3 and len(set(written)) == 3, run.stdout  # by process 0 only
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    for kind in ("stage1", "stage2"):
        name = f"flashvideo_example_prompt_seed3_{kind}.mp4"
        assert_same_video(tmp_path / "two" / name, tmp_path / "one" / name)
    assert run.stderr.count("stage II: [") == 1  # one progress display


def test_enhance_over_two_processes_gives_the_single_process_video(models, tmp_path):
    clip = tmp_path / "clip.mp4"
    t = torch.arange(60.0).view(-1, 1, 1, 1)
    x = torch.arange(48.0).view(1, 1, -1, 1)
    with VideoWriter(str(clip), 24, 12) as writer:  # 60 frames: two windows
        writer.write((0.5 + 0.4 * torch.sin((x - 2 * t) / 5 + torch.tensor([0.0, 1.0, 2.0]))).expand(60, 32, 48, 3))
    flags = [*model_flags(models, stage1=False), "--resolution", "input", "--steps2", "2"]
    assert main(["enhance", str(clip), str(tmp_path / "one.mp4"), *flags]) == 0
    run = torchrun(2, "enhance", str(clip), str(tmp_path / "two.mp4"), *flags)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote ") == 1 and "Ulysses degree 2" in run.stdout
    assert_same_video(tmp_path / "two.mp4", tmp_path / "one.mp4")


def test_a_check_that_fails_everywhere_is_reported_once(models, tmp_path):
    run = torchrun(3, "generate", *model_flags(models), *GENERATE, "--output-dir", str(tmp_path / "out"))
    assert run.returncode != 0
    assert errors(run.stderr) == ["error: 3 processes but the stage1 DiT has 2 attention heads; run at most 2 "
                                  "processes (even splits: [1, 2])"], run.stderr[-3000:]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_process_that_fails_alone_reports_it_and_the_others_stop_silently(models, tmp_path):
    run = torchrun(2, "generate", *model_flags(models), *GENERATE, "--output-dir", str(tmp_path / "out"),
                   script=str(SUPPORT / "failing_process.py"))
    assert run.returncode != 0
    (line,) = errors(run.stderr)
    assert line.startswith("error: unexpected RuntimeError: simulated fault on this GPU.") and \
        line.endswith("(process 1 of 2)"), run.stderr[-3000:]
