"""Running the example workflows on a real host at CPU size: make-tiny's files (all the templates need), the
smoke variant of a prompt (sizes only), and checks of the videos it writes. Shared by the server and browser
tests."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

from flashvideo_core.tiny_install import EXAMPLE_CLIP_FRAMES

#: workflow -> {SaveVideo node id: (frames, width, height)} of its smoke variant (the enhance template reads
#: make-tiny's example clip: all its frames, 4k+1)
EXPECTED_VIDEOS = {
    "flashvideo_270p_preview": {"8": (9, 48, 32)},
    "flashvideo_1080p": {"8": (9, 48, 32), "15": (9, 96, 64)},
    "flashvideo_2k": {"8": (9, 48, 32), "15": (9, 96, 64)},
    "flashvideo_enhance_video": {"15": (EXAMPLE_CLIP_FRAMES, 96, 64)},
    "flashvideo_1080p_advanced": {"8": (9, 48, 32), "15": (9, 96, 64)},
}


@contextmanager
def served_with_models(location, folder: Path):
    """A running host whose base directory (made in ``folder``) has the pack and make-tiny's models."""
    from .comfyui_host import make_base_dir, running_server

    base = make_base_dir(folder, Path(__file__).resolve().parents[2], "ComfyUI-FlashVideo")
    install_models(base)
    with running_server(location, base) as server:
        yield server


def install_models(base: Path) -> dict:
    """What the README's make-tiny step gives a ComfyUI base directory, and nothing else: every model file the
    example workflows name (the tiny T5 under the T5-XXL name included) and the enhance template's example clip
    in ``input``. Returns make-tiny's {kind: path}."""
    from flashvideo_core.tiny_install import make_tiny

    (Path(base) / "input").mkdir(parents=True, exist_ok=True)
    paths = make_tiny(str(Path(base) / "models"))
    assert "input_clip" in paths, "make-tiny did not find the base directory's input folder"
    return paths


#: the widgets a CPU-sized run overrides (sizes, frames, steps); everything else runs as the template has it
SMOKE_SIZES = {
    "FlashVideoStage1Sampler": {"width": 48, "height": 32, "frames": 9, "steps": 4},
    "FlashVideoStage2Upscale": {"resolution": "custom", "width": 96, "height": 64},
    "FlashVideoStage2Refiner": {"steps": 3},
    "FlashVideoStage2Sigmas": {"steps": 3},
    "FlashVideoEnhanceVideo": {"resolution": "custom", "width": 96, "height": 64, "steps": 3},
}


def smoke_variant(api: dict, output_folder: str = "") -> dict:
    """An example workflow at CPU size: stage I 9 frames at 48x32, stage II (and Enhance Video) to 96x64 in 3 steps. Only those
    widgets change: the nodes, their wiring (T5 loader and text encode included) and every other setting stay.
    ``output_folder`` prefixes the saved videos' names (a re-post that differs only there still saves)."""
    graph = copy.deepcopy(api)
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "SaveVideo" and output_folder:
            inputs["filename_prefix"] = f"{output_folder}/{inputs['filename_prefix']}"
        inputs.update(SMOKE_SIZES.get(kind, {}))
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
