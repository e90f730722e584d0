"""The batch client's UI-workflow support against real ComfyUI hosts: each shipped UI template converted with the
host's own /object_info gives its API twin, and a batch queued from a UI template renders on the host with the
submitted UI workflow (its seeds "fixed") embedded in the saved mp4. A batch over a folder of videos uploads each
clip through the host's /upload/image and gets each one's copy back (core nodes only: LoadVideo -> SaveVideo).

Runs once per tested host (support/hosts.py); skipped with one reason when no host is available.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from flashvideo_queue import Options, run
from flashvideo_queue.uigraph import DYNAMIC_COMBO, convert
from support.comfyui_host import make_base_dir, running_server
from support.workflow_runs import SMOKE_SIZES, install_models

pytestmark = pytest.mark.comfyui

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_workflows"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.json"))
PACK_FOLDER = "ComfyUI-FlashVideo"


@pytest.fixture(scope="module")
def server(comfyui_host, tmp_path_factory):
    base = make_base_dir(tmp_path_factory.mktemp("comfyui-queue"), REPO, PACK_FOLDER)
    install_models(base)
    with running_server(comfyui_host.location, base) as host:
        yield host


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def host_form(twin: dict, object_info: dict) -> dict:
    """The API twin as this host's frontend would write it: where SaveVideo's ``format`` is a dynamic combo
    (ComfyUI 0.33) the codec is its nested ``format.codec``; the twin's top-level codec is the 0.3.64 form."""
    expected = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in twin.items()}
    spec = object_info["SaveVideo"]["input"]["required"]["format"]
    if spec[0] == DYNAMIC_COMBO:
        for node in expected.values():
            if node["class_type"] == "SaveVideo" and "codec" in node["inputs"]:
                node["inputs"]["format.codec"] = node["inputs"].pop("codec")
    return expected


@pytest.mark.parametrize("name", NAMES)
def test_ui_template_converts_to_its_api_twin_with_the_hosts_object_info(object_info, name):
    ui = json.loads((EXAMPLES / f"{name}.json").read_text())
    twin = json.loads((EXAMPLES / "api" / f"{name}.json").read_text())
    converted = convert(ui, object_info, name).graph
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in converted.items()} == host_form(
        twin, object_info)


@pytest.mark.parametrize("name", NAMES)
def test_ui_template_as_the_hosts_frontend_saves_it_converts_too(object_info, comfyui_host, name):
    """What the host's frontend appends on save (LoadVideo's upload button value; on 0.33 CreateVideo's bit_depth,
    SaveVideo's encoding and hidden codec: support/node_schemas.py) is consumed, never refused as left over."""
    from support.node_schemas import core_nodes_for

    added = {kind: spec.get("added", []) for kind, spec in core_nodes_for(comfyui_host.version).items()}
    ui = json.loads((EXAMPLES / f"{name}.json").read_text())
    for node in ui["nodes"]:
        node["widgets_values"] = (node.get("widgets_values") or []) + added.get(node["type"], [])
    converted = convert(ui, object_info, name).graph
    expected = host_form(json.loads((EXAMPLES / "api" / f"{name}.json").read_text()), object_info)
    for node_id, node in expected.items():
        if node["class_type"] == "CreateVideo" and added["CreateVideo"]:
            node["inputs"]["bit_depth"] = added["CreateVideo"][0]
        if node["class_type"] == "SaveVideo" and "format.codec" in node["inputs"]:
            node["inputs"].update({"format.codec.encoding": "auto"} if added["SaveVideo"] else {})
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in converted.items()} == expected


def test_batch_from_a_ui_template_renders_and_embeds_the_submitted_workflow(server, tmp_path):
    """Two prompts through the 270p UI template at CPU size (--set by class_type and by title): each mp4 carries
    the UI workflow with that item's prompt, seed and sizes, seeds "fixed"."""
    import av

    prompts = tmp_path / "prompts.txt"
    texts = ["a tiny red fox in the snow", "a tiny whale near a boat"]
    prompts.write_text("\n".join(texts) + "\n")
    sizes = SMOKE_SIZES["FlashVideoStage1Sampler"]
    sets = [f"FlashVideoStage1Sampler.{k}={v}" for k, v in sizes.items()] + ["Stage I model.attention=sdpa"]
    opts = Options(prompts=prompts, workflow=EXAMPLES / "flashvideo_270p_preview.json", servers=[server.url],
                   output_dir=tmp_path / "out", seed_base=40, sets=sets, poll_interval=0.5, timeout=300)
    summary = run(opts, stream=io.StringIO(), tty=False)
    assert summary.exit_code == 0 and len(summary.done) == 2, summary.report()
    for i, item in enumerate(summary.done):
        (name,) = item["outputs"]
        with av.open(str(tmp_path / "out" / name)) as container:
            metadata = dict(container.metadata)
        workflow = json.loads(metadata["workflow"])
        nodes = {n["id"]: n for n in workflow["nodes"]}
        assert nodes[2]["widgets_values"] == [texts[i]]
        assert nodes[4]["widgets_values"] == [sizes["width"], sizes["height"], sizes["frames"], sizes["steps"], 8.0,
                                              40 + i, "fixed"]
        assert nodes[3]["widgets_values"][2] == "sdpa"
        prompt = json.loads(metadata["prompt"])
        assert prompt["4"]["inputs"]["seed"] == 40 + i and prompt["2"]["inputs"]["prompt"] == texts[i]


def write_clip(path: Path, frames: int, audio: bool = False) -> None:
    """A tiny real mp4 (h264, 64x48, 8 fps), each frame a different grey; with ``audio``, a second of AAC silence
    beside it (LoadVideo and SaveVideo must carry a clip that has sound)."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=8)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("aac", rate=16000) if audio else None
        for n in range(frames):
            image = np.full((48, 64, 3), 20 + 30 * n, dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        if sound is not None:
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 16000), dtype=np.float32), format="fltp", layout="mono")
            samples.sample_rate = 16000
            container.mux(sound.encode(samples))
            container.mux(sound.encode())


def test_batch_over_a_folder_of_videos_uploads_each_clip_and_downloads_its_copy(server, tmp_path):
    """Two clips through LoadVideo -> SaveVideo (no prompt: the workflow takes none): each is uploaded under its
    content name, read by its own item, and comes back named after the clip with all its frames; the rerun
    skips both."""
    import av

    from flashvideo_queue.videos import UPLOAD_SUBFOLDER, list_videos

    clips = tmp_path / "clips"
    write_clip(clips / "b second.mp4", frames=7, audio=True)
    write_clip(clips / "a_first.MP4", frames=5)
    (clips / "notes.txt").write_text("not a video")
    workflow = tmp_path / "copy.json"
    workflow.write_text(json.dumps({
        "1": {"class_type": "LoadVideo", "inputs": {"file": "placeholder.mp4"}},
        "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "x", "format": "mp4",
                                                    "codec": "h264"}}}))
    opts = Options(prompts=None, videos=clips, workflow=workflow, servers=[server.url], output_dir=tmp_path / "out",
                   seed_base=3, poll_interval=0.5, timeout=120)
    summary = run(opts, stream=io.StringIO(), tty=False)
    assert summary.exit_code == 0 and len(summary.done) == 2, summary.report()
    videos = list_videos(clips)
    for item, video, stem, frames in zip(summary.done, videos, ("a-first", "b-second"), (5, 7)):
        uploaded = server.base / "input" / UPLOAD_SUBFOLDER / video.upload_name
        assert uploaded.read_bytes() == video.path.read_bytes()
        (name,) = item["outputs"]
        assert name.startswith(f"{item['index']:04d}_{stem}_2_") and name.endswith(".mp4")
        with av.open(str(tmp_path / "out" / name)) as container:
            prompt = json.loads(container.metadata["prompt"])
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (64, 48)
            assert len(list(container.decode(stream))) == frames
        assert prompt["1"]["inputs"]["file"] == f"{UPLOAD_SUBFOLDER}/{video.upload_name}"
    again = run(opts, stream=io.StringIO(), tty=False)
    assert again.exit_code == 0 and again.skipped == 2, again.report()
