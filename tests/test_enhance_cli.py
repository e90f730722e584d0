"""``python -m flashvideo_core enhance IN OUT`` on tiny random weights: frame count, frame rate, stated size and
audio kept; a run killed with SIGKILL resumes from its last finished window and gives the uninterrupted result;
Ctrl-C stops between units and says how to resume; bad flags are refused by name before any model loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flashvideo_core.cli import main
from flashvideo_core.io.video import VideoWriter, probe_video, read_frames
from flashvideo_core.tiny_install import make_tiny

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = make_tiny(str(folder))
    return ["--stage2", paths["stage2"], "--vae", paths["vae"], "--embedding", paths["embedding"]]


def write_clip(path: Path, frames: int, height: int, width: int, fps=24, audio: bool = True) -> Path:
    """A clip with known motion; odd sizes go to a lossless mkv (H.264 in mp4 needs even sides) with PCM audio,
    which enhance re-encodes to AAC (mp4 does not take PCM)."""
    t = torch.arange(frames).float()[:, None, None, None]
    y = torch.arange(height).float()[None, :, None, None]
    x = torch.arange(width).float()[None, None, :, None]
    clip = (0.5 + 0.4 * torch.sin((x - 2 * t + y * torch.tensor([1.0, 0.5, 0.2])) / 5)).expand(frames, height, width, 3)
    sound = {"waveform": 0.2 * torch.sin(torch.arange(int(48000 * frames / fps)) / 10.0).view(1, 1, -1),
             "sample_rate": 48000} if audio else None
    if height % 2 == 0 and width % 2 == 0:
        with VideoWriter(str(path), fps, 10, audio=sound) as writer:
            writer.write(clip)
        return path
    import av
    import numpy as np

    with av.open(str(path), mode="w", format="matroska") as container:
        video = container.add_stream("ffv1", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv444p"
        pcm = container.add_stream("pcm_s16le", rate=48000, layout="mono") if audio else None
        for frame in (clip * 255).round().to(torch.uint8).numpy():
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        if pcm is not None:
            samples = (sound["waveform"][0].numpy() * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = 48000
            container.mux(pcm.encode(frame))
            container.mux(pcm.encode())
    return path


def frames_of(path) -> torch.Tensor:
    return torch.stack(list(read_frames(str(path))))


def test_enhance_keeps_frames_rate_audio_and_states_the_size(models, tmp_path, capsys):
    clip = write_clip(tmp_path / "in.mkv", 50, 23, 37, fps=25)
    out = tmp_path / "out.mp4"
    assert main(["enhance", str(clip), str(out), *models, "--resolution", "input", "--steps2", "1"]) == 0
    info = probe_video(str(out))
    assert (info.frames, info.fps, info.height, info.width, info.has_audio) == (50, 25, 24, 38, True)
    printed = capsys.readouterr().out
    assert "37x23 -> 38x24" in printed and "2 windows" in printed and "audio copied" in printed
    assert not os.path.exists(str(out) + ".parts") and not list(tmp_path.glob("*.partial*"))


@pytest.mark.parametrize("frames", [1, 2])
def test_enhance_one_and_two_frame_clips(models, tmp_path, frames):
    clip = write_clip(tmp_path / "in.mp4", frames, 32, 48, audio=False)
    out = tmp_path / "out.mp4"
    assert main(["enhance", str(clip), str(out), *models, "--resolution", "64x48", "--steps2", "1"]) == 0
    info = probe_video(str(out))
    assert (info.frames, info.height, info.width, info.has_audio) == (frames, 48, 64, False)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_window_and_loses_nothing(models, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", 140, 32, 48)  # 4 windows
    command = [sys.executable, "-m", "flashvideo_core", "enhance", str(clip), str(tmp_path / "out.mp4"), *models,
               "--resolution", "input", "--steps2", "2"]
    state = tmp_path / "out.mp4.parts" / "state.json"
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if state.exists() and json.loads(state.read_text() or "{}").get("windows_done", 0) >= 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed; make the clip longer"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    done = json.loads(state.read_text())["windows_done"]
    assert 2 <= done < 4 and (tmp_path / "out.mp4.parts" / "window_00001.mp4").exists()
    assert not (tmp_path / "out.mp4").exists()
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after window {done}" in resumed.stdout
    whole = subprocess.run([*command[:5], str(tmp_path / "whole.mp4"), *command[6:]], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    assert torch.equal(frames_of(tmp_path / "out.mp4"), frames_of(tmp_path / "whole.mp4"))
    assert probe_video(str(tmp_path / "out.mp4")).has_audio


def test_ctrl_c_stops_between_units_and_says_how_to_resume(models, tmp_path, monkeypatch, capsys):
    from flashvideo_core.progress import ConsoleProgress

    clip = write_clip(tmp_path / "in.mp4", 97, 16, 24, audio=False)
    checks = []

    def interrupt_in_window_two(self):
        checks.append(self.phase)
        if self.phase.startswith("window 2"):
            raise KeyboardInterrupt

    monkeypatch.setattr(ConsoleProgress, "check", interrupt_in_window_two)
    assert main(["enhance", str(clip), str(tmp_path / "out.mp4"), *models, "--resolution", "input",
                 "--steps2", "1"]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert (tmp_path / "out.mp4.parts" / "window_00000.mp4").exists() and not (tmp_path / "out.mp4").exists()
    assert not list((tmp_path / "out.mp4.parts").glob("*.partial*"))
    monkeypatch.undo()
    changed = ["enhance", str(clip), str(tmp_path / "out.mp4"), *models, "--resolution", "input", "--steps2", "2"]
    assert main(changed) == 2  # other settings: refused, not mixed
    assert "--restart" in capsys.readouterr().err
    assert main([*changed, "--restart"]) == 0 and probe_video(str(tmp_path / "out.mp4")).frames == 97


@pytest.mark.parametrize("flags, named", [
    (["--overlap", "6"], "--overlap"), (["--resolution", "15x9"], "even"), (["--resolution", "wide"], "--resolution"),
    (["--steps2", "0"], "--steps2"), (["--noise-step", "1000"], "--noise-step"), (["--crf", "60"], "--crf"),
    (["--tile-size", "12"], "--tile-size"), (["--seed", "-1"], "--seed"),
    (["--resolution", "8x8"], "--resolution 8x8: the output size"), (["--device", "meta"], "--device"),
    (["--tile-size", "512"], "--slicing manual"),
])
def test_bad_flags_are_refused_by_name_before_any_model_loads(models, tmp_path, capsys, flags, named, monkeypatch):
    import flashvideo_core.dit.loader as loader

    monkeypatch.setattr(loader, "load_dit", lambda *a, **k: pytest.fail("a model loaded before the flags were checked"))
    clip = write_clip(tmp_path / "in.mp4", 5, 16, 16, audio=False)
    assert main(["enhance", str(clip), str(tmp_path / "out.mp4"), *models, *flags]) == 2
    assert named in capsys.readouterr().err


def test_existing_output_missing_input_and_output_over_input_are_refused(models, tmp_path, capsys):
    clip = write_clip(tmp_path / "in.mp4", 5, 16, 16, audio=False)
    (tmp_path / "out.mp4").write_bytes(b"keep me")
    assert main(["enhance", str(clip), str(tmp_path / "out.mp4"), *models]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "out.mp4").read_bytes() == b"keep me"
    assert main(["enhance", str(tmp_path / "nope.mp4"), str(tmp_path / "o.mp4"), *models]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["enhance", str(clip), str(clip), *models, "--overwrite"]) == 2
    assert "the output is the input" in capsys.readouterr().err
    fifo = tmp_path / "pipe.mp4"  # a decoder would wait on it forever
    os.mkfifo(fifo)
    assert main(["enhance", str(fifo), str(tmp_path / "o.mp4"), *models]) == 2
    assert "not a regular file" in capsys.readouterr().err
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert main(["enhance", str(tmp_path / "empty.mp4"), str(tmp_path / "o.mp4"), *models]) == 2
    assert "is empty" in capsys.readouterr().err
    (tmp_path / "text.mp4").write_text("not a video")
    assert main(["enhance", str(tmp_path / "text.mp4"), str(tmp_path / "o.mp4"), *models]) == 2
    assert "cannot be read as a video" in capsys.readouterr().err


def test_flashvideo_console_script_has_the_enhance_command():
    from flashvideo_core.cli import build_parser

    text = build_parser().format_help()
    assert "enhance" in text
