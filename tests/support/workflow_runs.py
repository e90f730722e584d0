"""Running the example workflows on a real host at CPU size: the model files they name, the input clip, the
smoke variant of a prompt, and checks of the videos it writes. Shared by the server and browser tests."""

from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path

INPUT_VIDEO = "flashvideo_input.mp4"
T5_FILE = "t5xxl_fp16.safetensors"

#: workflow -> {SaveVideo node id: (frames, width, height)} of its smoke variant
EXPECTED_VIDEOS = {
    "flashvideo_270p_preview": {"8": (9, 48, 32)},
    "flashvideo_1080p": {"8": (9, 48, 32), "15": (9, 96, 64)},
    "flashvideo_2k": {"8": (9, 48, 32), "15": (9, 96, 64)},
    "flashvideo_enhance_video": {"15": (9, 96, 64)},
    "flashvideo_1080p_advanced": {"8": (9, 48, 32), "15": (9, 96, 64)},
}


def write_input_video(path: Path, frames: int = 10, width: int = 64, height: int = 48) -> None:
    """A small clip for the enhance-a-video workflow (10 frames: the workflow trims to 4k+1 = 9)."""
    import torch

    from flashvideo_core.io.video import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    t = torch.linspace(0, 1, frames)[:, None, None]
    x = torch.linspace(-1, 1, width)[None, None, :].expand(frames, height, width)
    write_video(str(path), torch.stack([torch.sin(3 * x + 4 * t), torch.cos(2 * x - t), x * 0.5]), fps=8)


def install_models(base: Path, t5_listing: bool = False) -> None:
    """Every file the example workflows name, in a ComfyUI base directory: make-tiny's models and prompt
    embedding, the enhance workflow's input clip and, with ``t5_listing``, an empty file under the T5 name so
    the frontend finds it in CLIPLoader's list (never loaded: the smoke variant replaces T5)."""
    from flashvideo_core.tiny_install import make_tiny

    make_tiny(str(Path(base) / "models"))
    write_input_video(Path(base) / "input" / INPUT_VIDEO)
    if t5_listing:
        (Path(base) / "models" / "text_encoders").mkdir(parents=True, exist_ok=True)
        (Path(base) / "models" / "text_encoders" / T5_FILE).write_bytes(b"")


def smoke_variant(api: dict, output_folder: str = "") -> dict:
    """An example workflow as a smoke install runs it: the saved prompt embedding instead of T5 (9.5 GB),
    and CPU-sized stage I (9 frames, 48x32) and stage II (96x64, 3 steps). Wiring and node settings stay.
    ``output_folder`` prefixes the saved videos' names (a re-post that differs only there still saves)."""
    graph = copy.deepcopy(api)
    for node_id, node in list(graph.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "SaveVideo" and output_folder:
            inputs["filename_prefix"] = f"{output_folder}/{inputs['filename_prefix']}"
        if kind == "CLIPLoader":
            del graph[node_id]
        elif kind == "FlashVideoTextEncode":
            graph[node_id] = {"class_type": "FlashVideoLoadPromptEmbedding",
                              "inputs": {"embedding": "flashvideo_example_prompt.safetensors"}}
        elif kind == "FlashVideoStage1Sampler":
            inputs.update(width=48, height=32, frames=9, steps=4)
        elif kind == "FlashVideoStage2Upscale":
            inputs.update(resolution="custom", width=96, height=64)
        elif kind in ("FlashVideoStage2Refiner", "FlashVideoStage2Sigmas"):
            inputs.update(steps=3)
    return graph


def saved_videos(entry: dict, base: Path) -> dict:
    """{SaveVideo node id: path} of a finished prompt."""
    out = {}
    for node_id, node_output in entry.get("outputs", {}).items():
        for item in node_output.get("images", []) + node_output.get("videos", []):
            out[node_id] = Path(base) / "output" / item.get("subfolder", "") / item["filename"]
    return out


def check_video(path: Path, frames: int, width: int = 96, height: int = 64, fps: int = 8) -> None:
    import av

    assert path.is_file(), f"{path} was not written"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (width, height)
        assert stream.average_rate == Fraction(fps)
        decoded = list(container.decode(stream))
    assert len(decoded) == frames
    assert (decoded[0].width, decoded[0].height) == (width, height)


def check_smoke_run(entry: dict, base: Path, name: str) -> None:
    """A finished smoke run of example workflow ``name`` wrote exactly its videos, at the expected sizes."""
    videos = saved_videos(entry, base)
    assert sorted(videos) == sorted(EXPECTED_VIDEOS[name]), entry["outputs"]
    for node_id, (frames, width, height) in EXPECTED_VIDEOS[name].items():
        check_video(videos[node_id], frames=frames, width=width, height=height)
