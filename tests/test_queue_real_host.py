"""The batch client's UI-workflow support against real ComfyUI hosts: each shipped UI template converted with the
host's own /object_info gives its API twin, and a batch queued from a UI template renders on the host with the
submitted UI workflow (its seeds "fixed") embedded in the saved mp4.

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
