"""FlashVideo Enhance Video on every tested host (ids name the version), with make-tiny's files.

Through a real server over HTTP: Load Video (clips written into the host's input folder, with audio) -> Enhance
Video -> Save Video keeps the input's frame count, frame rate and audio at the size the node's log line states, for
an odd size, 1 and 2 frames, a clip of two windows and a VIDEO made by Create Video; a bad widget value sent over the
API is refused naming the input. In process (support/enhance_checks.py, the host's python): a clip that fits one
window equals the single-pass node chain exactly, and an interrupt inside a window leaves nothing in the temp folder.
"""

from __future__ import annotations

import json
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from support.comfyui_host import history_messages, make_base_dir, running_server
from support.workflow_runs import install_models, saved_videos

pytestmark = pytest.mark.comfyui
REPO = Path(__file__).resolve().parents[1]
PACK_FOLDER = "ComfyUI-FlashVideo"
PROMPT = "flashvideo_example_prompt.safetensors"
TIMEOUT_S = 120
STEPS = 2

#: clip -> (frames, fps, width, height); written into the host's input folder with an audio track
CLIPS = {
    "enh_odd.mp4": (9, 12, 37, 23),
    "enh_one.mp4": (1, 15, 40, 24),
    "enh_two.mp4": (2, 15, 40, 24),
    "enh_fifty.mp4": (50, 24, 40, 24),
}


def clip_frames(frames: int, height: int, width: int) -> torch.Tensor:
    t = torch.linspace(0, 1, frames)[:, None, None, None]
    y = torch.linspace(0, 1, height)[None, :, None, None]
    x = torch.linspace(0, 1, width)[None, None, :, None]
    return (0.5 + 0.4 * torch.sin(5 * x + 3 * y + 2 * t + torch.tensor([0.0, 1.5, 3.0]))).float()


def write_clip(path: Path, frames: int, fps: int, width: int, height: int) -> None:
    """With the pack's VideoWriter where H.264 in yuv420p allows it (even sides); odd sides in yuv444p (which the
    writer does not make), both with a second of tone as AAC."""
    from flashvideo_core.io.video import VideoWriter

    tone = torch.sin(torch.arange(16000) / 16000 * 2 * torch.pi * 440)[None, None] * 0.3
    audio = {"waveform": tone, "sample_rate": 16000}
    video = clip_frames(frames, height, width)
    if width % 2 == 0 and height % 2 == 0:
        with VideoWriter(str(path), fps, audio=audio) as writer:
            writer.write(video)
        return
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        sound = container.add_stream("aac", rate=16000)
        sound.layout = "mono"
        for frame in (video * 255).round().to(torch.uint8).numpy():
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        samples = av.AudioFrame.from_ndarray(tone[0].numpy(), format="fltp", layout="mono")
        samples.sample_rate = 16000
        for packet in [*sound.encode(samples), *sound.encode(None)]:
            container.mux(packet)


@pytest.fixture(scope="module")
def server(comfyui_host, tmp_path_factory):
    base = make_base_dir(tmp_path_factory.mktemp("comfyui-enhance"), REPO, PACK_FOLDER)
    install_models(base)
    for name, spec in CLIPS.items():
        write_clip(base / "input" / name, *spec)
    with running_server(comfyui_host.location, base) as host:
        yield host


def graph(video_nodes: dict, video: list, prefix: str, **widgets) -> dict:
    enhance = {"resolution": "input size", "width": 1920, "height": 1080, "noise_step": 675, "steps": STEPS,
               "cfg": 13.0, "shift": 2.5, "seed": 3, "overlap": 8, "colour_fix": "wavelet", "attention": "full",
               "slicing": "reference", "memory_budget_mb": 0, "chunk_latents": 2, "tile_size": 0, "tile_overlap": 128}
    enhance.update(widgets)
    return {
        **video_nodes,
        "emb": {"class_type": "FlashVideoLoadPromptEmbedding", "inputs": {"embedding": PROMPT}},
        "m2": {"class_type": "FlashVideoModelLoader", "inputs": {"model_name": "stage2.pt", "weight_dtype": "auto",
                                                                 "attention": "comfy", "memory": "auto"}},
        "vae": {"class_type": "FlashVideoVAELoader", "inputs": {"vae_name": "3d-vae.pt", "dtype": "auto"}},
        "enh": {"class_type": "FlashVideoEnhanceVideo", "inputs": {
            "model": ["m2", 0], "vae": ["vae", 0], "positive": ["emb", 0], "video": video, **enhance}},
        "save": {"class_type": "SaveVideo", "inputs": {"video": ["enh", 0], "filename_prefix": f"enhance/{prefix}",
                                                       "format": "mp4", "codec": "h264"}},
    }


def failure(entry: dict) -> list:
    return [(e["exception_type"], e["exception_message"], e.get("traceback", [])[-3:])
            for e in history_messages(entry, "execution_error")]


def load(name: str) -> dict:
    return {"load": {"class_type": "LoadVideo", "inputs": {"file": name}}}


def saved(path: Path) -> dict:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate, audio = stream.average_rate, len(container.streams.audio)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return {"frames": len(frames), "fps": rate, "audio": audio, "size": (frames[0].shape[1], frames[0].shape[0])}


def plan_lines(log: str) -> list:
    """(input size, output size, the rest of the line) of each plan line the node logged, in the order of runs."""
    return re.findall(r"FlashVideo Enhance Video: \d+ frames, (\d+x\d+) -> (\d+x\d+)(.*)", log)


@pytest.mark.parametrize("name, widgets, size, windows", [
    ("enh_odd.mp4", {}, (38, 24), 1),  # odd sides: rounded to even, run at 48x32 and cropped
    ("enh_one.mp4", {}, (40, 24), 1),
    ("enh_two.mp4", {"resolution": "custom", "width": 42, "height": 26}, (42, 26), 1),
    ("enh_fifty.mp4", {"colour_fix": "adain"}, (40, 24), 2),  # windows 0-48 and 40-49, 9 frames cross-faded
], ids=["odd-37x23", "1-frame", "2-frames-custom", "50-frames-2-windows"])
def test_load_video_enhance_save_video_keeps_frames_fps_and_audio(server, name, widgets, size, windows):
    frames, fps, width, height = CLIPS[name]
    entry = server.run_prompt(graph(load(name), ["load", 0], name.split(".")[0], **widgets), TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", failure(entry)
    out = saved(saved_videos(entry, server.base)["save"])
    assert out == {"frames": frames, "fps": Fraction(fps), "audio": 1, "size": size}, out
    line = plan_lines(server.log())[-1]
    assert line[:2] == (f"{width}x{height}", f"{size[0]}x{size[1]}"), line
    assert f"{windows} window{'s' if windows > 1 else ''} of up to 49 frames" in line[2], line
    assert f"at {fps} fps; frames streamed from " in line[2] and line[2].endswith(name), line  # not decoded whole


def test_a_video_made_in_the_graph_goes_through_the_hosts_decode(server):
    """Create Video's VIDEO is no file: the node takes the host's components (frames, rate, no audio)."""
    nodes = {"img": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 24, "batch_size": 3,
                                                            "color": 0x3366CC}},
             "mk": {"class_type": "CreateVideo", "inputs": {"images": ["img", 0], "fps": 10.0}}}
    entry = server.run_prompt(graph(nodes, ["mk", 0], "made"), TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", failure(entry)
    out = saved(saved_videos(entry, server.base)["save"])
    assert out == {"frames": 3, "fps": Fraction(10), "audio": 0, "size": (40, 24)}, out
    assert plan_lines(server.log())[-1][2].endswith("at 10 fps; frames decoded by the host")


@pytest.mark.parametrize("widgets, message", [
    ({"overlap": 6}, "FlashVideo Enhance Video, input 'overlap' is 6: off the grid, multiples of 4. Fix: use 4 or 8"),
    ({"resolution": "custom", "width": 41},
     "FlashVideo Enhance Video, input 'width' is 41: off the grid, even. Fix: use 40 or 42"),
], ids=["overlap-6", "odd-custom-width"])
def test_values_the_host_lets_through_are_refused_naming_the_input(server, widgets, message):
    """In range, so the host accepts the prompt (it never checks a widget's step); the node refuses it."""
    status, body = server.queue_prompt(graph(load("enh_one.mp4"), ["load", 0], "bad", **widgets))
    assert status == 200 and not body.get("node_errors"), body
    (error,) = history_messages(server.wait_history(body["prompt_id"], TIMEOUT_S), "execution_error")
    assert error["node_type"] == "FlashVideoEnhanceVideo" and error["exception_type"].endswith("InputError"), error
    assert message in error["exception_message"], error["exception_message"]


def test_an_unknown_choice_is_refused_naming_the_input(server):
    status, body = server.queue_prompt(graph(load("enh_one.mp4"), ["load", 0], "bad", resolution="720p"))
    if status == 200 and not body.get("node_errors"):  # 0.3.64 does not check V3 combo values: the node does
        (error,) = history_messages(server.wait_history(body["prompt_id"], TIMEOUT_S), "execution_error")
        assert "FlashVideo Enhance Video, input 'resolution': '720p' is not one of its choices. Fix: pick one of" in (
            error["exception_message"]), error
    else:  # 0.33 checks combo values before it runs anything
        assert "resolution" in json.dumps(body["node_errors"]["enh"]), body


def test_one_window_equals_the_single_pass_chain_and_an_interrupt_leaves_nothing(comfyui_host, tmp_path):
    location = comfyui_host.location
    proc = subprocess.run([location.python, str(REPO / "tests" / "support" / "enhance_checks.py"),
                           str(location.directory), str(REPO), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    # Upscale (frame_rule pad) -> Degrade (same seed) -> Refiner -> Decode vs the enhancer's one window: bit-equal
    assert r["frames17_shapes"] == [[17, 32, 64, 3]] * 2 and r["frames17_equal"], r
    assert r["frames6_shapes"] == [[9, 32, 64, 3], [6, 32, 64, 3]] and r["frames6_equal"], r  # the chain pads to 9
    assert r["interrupt"] == "InterruptProcessingException" and r["interrupt_frames_written"] == 0, r
    assert 3 <= r["interrupt_progress_updates"] < 12, r  # stopped inside the first window (its encode has 3 chunks)
    assert r["temp_files_after_interrupt"] == [], r  # no .partial, no mp4
    assert r["output_type"] == "VideoFromFile" and r["output_in_temp"] and r["output_components"] == [50, [40, 24]], r
    assert len(r["temp_files_after_run"]) == 1 and r["temp_files_after_run"][0].startswith("flashvideo_enhance_"), r
