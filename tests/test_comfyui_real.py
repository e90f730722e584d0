"""The pack inside a real ComfyUI server: import, /object_info schema (frozen widget order), a tiny
encode -> decode -> SaveVideo run over HTTP, our error for a bad frame count, and --quick-test-for-ci.

Runs once per tested host (support/hosts.py: the shared snapshots, laid out on first use, or COMFYUI_DIR); the
test ids name the host version. Without any host the whole module is skipped with one reason. One server per
host serves the module (~15 s to start on CPU); the quick-test process runs alongside it in its own base directory.
"""

from __future__ import annotations

import copy
import json
import time
import urllib.request
from pathlib import Path

import pytest

from support.node_schemas import (
    CONTROL,
    CORE_FILE_WIDGETS,
    CORE_WIDGETS,
    FROZEN_OUTPUTS,
    FROZEN_SOCKETS,
    FROZEN_WIDGETS,
    core_nodes_for,
)
from support.workflow_runs import (
    EXPECTED_VIDEOS,
    check_smoke_run,
    check_video,
    install_models,
    saved_videos,
    smoke_variant,
)
from support.comfyui_host import (
    IMPORT_FAILED,
    HostProcess,
    history_messages,
    import_line,
    make_base_dir,
    output_files,
    running_server,
)

pytestmark = pytest.mark.comfyui

REPO = Path(__file__).resolve().parents[1]
PACK_FOLDER = "ComfyUI-FlashVideo"
TINY_VAE = "flashvideo-tiny-vae.pt"
TINY_STAGE1 = "flashvideo-tiny-stage1.pt"
TINY_STAGE2 = "flashvideo-tiny-stage2.pt"
TINY_PROMPT = "flashvideo-tiny-prompt.safetensors"
NOT_T5 = "not-a-t5.safetensors"  # a prompt embedding put among the text encoders: the T5 loader must refuse it
EXAMPLES = REPO / "example_workflows"
WORKFLOWS = EXAMPLES / "api"
STARTUP_TIMEOUT_S = 90
PROMPT_TIMEOUT_S = 60
QUICK_TEST_TIMEOUT_S = 120

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}

GRAPH = {
    "1": {"class_type": "FlashVideoVAELoader", "inputs": {"vae_name": TINY_VAE, "dtype": "auto"}},
    "2": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 17, "color": 8421504}},
    "3": {"class_type": "FlashVideoVAEEncode", "inputs": {
        "vae": ["1", 0], "images": ["2", 0], "latent_scale": "stage2", "posterior": "sample", "seed": 1,
        "frame_rule": "error", "slicing": "reference", "memory_budget_mb": 0, "chunk_latents": 2,
        "tile_size": 0, "tile_overlap": 128}},
    "4": {"class_type": "FlashVideoVAEDecode", "inputs": {
        "vae": ["1", 0], "samples": ["3", 0], "latent_scale": "stage2", "slicing": "manual",
        "memory_budget_mb": 0, "chunk_latents": 2, "tile_size": 64, "tile_overlap": 16}},
    "5": {"class_type": "CreateVideo", "inputs": {"images": ["4", 0], "fps": 8}},
    "6": {"class_type": "SaveVideo", "inputs": {
        "video": ["5", 0], "filename_prefix": "fv_test", "format": "mp4", "codec": "h264"}},
}


def graph(frames: int = 17, seed: int = 1, prefix: str = "fv_test") -> dict:
    g = copy.deepcopy(GRAPH)
    g["2"]["inputs"]["batch_size"] = frames
    g["3"]["inputs"]["seed"] = seed
    g["6"]["inputs"]["filename_prefix"] = prefix
    return g


@pytest.fixture(scope="module", autouse=True)
def quick_test(comfyui_host, tmp_path_factory):
    """``main.py --quick-test-for-ci`` (exits 0 even when a pack fails to import), started first so it overlaps the server start-up."""
    base = make_base_dir(tmp_path_factory.mktemp("comfyui-quick"), REPO, PACK_FOLDER)
    proc = HostProcess(comfyui_host.location, [
        "--cpu", "--quick-test-for-ci", "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
    ], base / "quick-test.log").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def server(comfyui_host, tmp_path_factory):
    import torch

    from flashvideo_core.text_embeddings import save_prompt_embedding
    from flashvideo_core.tiny import write_tiny_dit, write_tiny_vae

    base = make_base_dir(tmp_path_factory.mktemp("comfyui-server"), REPO, PACK_FOLDER)
    write_tiny_vae(str(base / "models" / "vae" / TINY_VAE))
    write_tiny_dit(str(base / "models" / "diffusion_models" / TINY_STAGE1))
    write_tiny_dit(str(base / "models" / "diffusion_models" / TINY_STAGE2), "stage2")
    install_models(base)  # make-tiny: every file the example workflows name, the tiny T5 included
    save_prompt_embedding(str(base / "models" / "text_encoders" / NOT_T5), torch.zeros(1, 226, 32), "not a T5")
    context = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(0))
    save_prompt_embedding(str(base / "models" / "flashvideo_embeddings" / TINY_PROMPT), context, "a tiny test prompt")
    with running_server(comfyui_host.location, base, STARTUP_TIMEOUT_S) as host:
        yield host


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def test_pack_imports(server):
    log = server.log()
    line = import_line(log, PACK_FOLDER)
    assert line is not None, f"no '{PACK_FOLDER}' line in the 'Import times for custom nodes' block\n{server.log_tail()}"
    assert IMPORT_FAILED not in line, f"the pack failed to import: {line!r}\n{server.log_tail(120)}"
    assert f"Cannot import {server.base / 'custom_nodes' / PACK_FOLDER}" not in log


@pytest.mark.parametrize("node_id", sorted(FROZEN_WIDGETS))
def test_object_info_schema(object_info, node_id):
    assert node_id in object_info, f"{node_id} not registered; FlashVideo nodes: " + str(
        sorted(k for k in object_info if k.startswith("FlashVideo")))
    info = object_info[node_id]
    assert info["python_module"] == f"custom_nodes.{PACK_FOLDER}"
    assert info["category"].split("/")[0] == "FlashVideo"
    assert info.get("description")

    widgets, sockets = widgets_and_sockets(info, f"{node_id}.")
    assert widgets == FROZEN_WIDGETS[node_id], "widget order changed: saved workflows would load wrong values"
    assert sockets == FROZEN_SOCKETS[node_id]
    assert info["output"] == FROZEN_OUTPUTS[node_id]


def visible_inputs(info: dict) -> dict:
    """{name: spec} of a node's required and optional inputs, in order, without the hidden ones."""
    order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
    inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    assert sorted(order) == sorted(inputs)
    return {name: inputs[name] for name in order if not (len(inputs[name]) > 1 and inputs[name][1].get("hidden"))}


def widgets_and_sockets(info: dict, need_tooltips: str = "") -> tuple:
    """(widget names with the frontend's seed-control slot, [(socket name, type)]) as /object_info shows them;
    with ``need_tooltips`` (a label), every input must have a tooltip."""
    widgets, sockets = [], []
    for name, spec in visible_inputs(info).items():
        kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
        if need_tooltips:
            assert str(options.get("tooltip", "")).strip(), f"{need_tooltips}{name} has no tooltip"
        if (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput"):
            widgets.append(name)
            if options.get("control_after_generate"):
                widgets.append(CONTROL)
        else:
            sockets.append((name, kind))
    return widgets, sockets


def accepts(spec: list, path: list, value) -> bool:
    """Whether an input spec from /object_info takes ``value`` at ``path`` (names inside dynamic combos)."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if kind == "COMFY_DYNAMICCOMBO_V3":
        choices = {option["key"]: option["inputs"] for option in options["options"]}
        if not path:
            return value in choices
        return any(accepts(nested[path[0]], path[1:], value)
                   for inputs in choices.values()
                   for nested in (inputs.get("required", {}), inputs.get("optional", {})) if path[0] in nested)
    if isinstance(kind, list):
        return value in kind
    if kind == "COMBO":
        return value in options.get("options", [])
    if kind in ("INT", "FLOAT"):
        return options.get("min", float("-inf")) <= value <= options.get("max", float("inf"))
    return kind in ("STRING", "BOOLEAN")


@pytest.mark.parametrize("node_id", sorted(CORE_WIDGETS))
def test_core_nodes_match_what_the_example_workflows_assume(comfyui_host, object_info, node_id):
    """The host's form of each core node the templates use is the one recorded for it, and every value the
    templates store for that node is valid there (so a template made for 0.3.64 validates on this host)."""
    expected = core_nodes_for(comfyui_host.version)[node_id]
    info = object_info[node_id]
    assert widgets_and_sockets(info) == (expected["widgets"], expected["sockets"]), (
        f"core {node_id} changed on ComfyUI {comfyui_host.version}: record its form in support/node_schemas.py")
    inputs = visible_inputs(info)
    all_inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    paths = expected.get("template_paths", CORE_WIDGETS[node_id])
    for workflow in sorted(EXAMPLES.glob("*.json")):
        for node in json.loads(workflow.read_text())["nodes"]:
            if node["type"] != node_id:
                continue
            for path, value in zip(paths, node.get("widgets_values") or []):
                if path in CORE_FILE_WIDGETS:
                    continue
                head, *rest = path.split(".")
                spec = inputs.get(head, all_inputs.get(head))
                assert spec is not None and accepts(spec, rest, value), (
                    f"{workflow.name}: {node_id} {path}={value!r} is not valid on ComfyUI {comfyui_host.version}")


def test_loader_lists_models_vae(object_info):
    spec = object_info["FlashVideoVAELoader"]["input"]["required"]["vae_name"]
    assert TINY_VAE in spec[1]["options"]


def test_encode_decode_save_video(server):
    entry = server.run_prompt(graph(), PROMPT_TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", history_messages(entry, "execution_error")
    files = output_files(entry, server.base)
    assert len(files) == 1 and files[0].suffix == ".mp4", entry["outputs"]
    check_video(files[0], frames=17)


STAGE1_GRAPH = {
    "1": {"class_type": "FlashVideoLoadPromptEmbedding", "inputs": {"embedding": TINY_PROMPT}},
    "2": {"class_type": "FlashVideoModelLoader", "inputs": {
        "model_name": TINY_STAGE1, "weight_dtype": "auto", "attention": "sdpa"}},
    "3": {"class_type": "FlashVideoStage1Sampler", "inputs": {
        "model": ["2", 0], "positive": ["1", 0], "width": 48, "height": 32, "frames": 9, "steps": 4, "cfg": 8.0,
        "seed": 0}},
    "4": {"class_type": "FlashVideoVAELoader", "inputs": {"vae_name": TINY_VAE, "dtype": "auto"}},
    "5": {"class_type": "FlashVideoVAEDecode", "inputs": {
        "vae": ["4", 0], "samples": ["3", 0], "latent_scale": "stage1", "slicing": "reference",
        "memory_budget_mb": 0, "chunk_latents": 2, "tile_size": 0, "tile_overlap": 128}},
    "6": {"class_type": "CreateVideo", "inputs": {"images": ["5", 0], "fps": 8}},
    "7": {"class_type": "SaveVideo", "inputs": {
        "video": ["6", 0], "filename_prefix": "fv_stage1", "format": "mp4", "codec": "h264"}},
}


def test_stage1_preview_from_a_saved_prompt_embedding(server):
    """Saved embedding -> tiny stage-I DiT (SAT layout, unmerged LoRA) -> sliced decode -> mp4, no T5 needed."""
    entry = server.run_prompt(copy.deepcopy(STAGE1_GRAPH), PROMPT_TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", history_messages(entry, "execution_error")
    files = output_files(entry, server.base)
    assert len(files) == 1 and files[0].suffix == ".mp4", entry["outputs"]
    check_video(files[0], frames=9, width=48, height=32)


TWO_STAGE_GRAPH = {
    **copy.deepcopy(STAGE1_GRAPH),
    "8": {"class_type": "FlashVideoModelLoader", "inputs": {
        "model_name": TINY_STAGE2, "weight_dtype": "auto", "attention": "sdpa"}},
    "9": {"class_type": "FlashVideoStage2Upscale", "inputs": {
        "vae": ["4", 0], "images": ["5", 0], "resolution": "custom", "width": 96, "height": 64, "seed": 0,
        "frame_rule": "error", "slicing": "reference", "memory_budget_mb": 0, "chunk_latents": 2, "tile_size": 0,
        "tile_overlap": 128}},
    "10": {"class_type": "FlashVideoLatentDegrade", "inputs": {"samples": ["9", 0], "noise_step": 675, "seed": 0}},
    "11": {"class_type": "FlashVideoStage2Refiner", "inputs": {
        "model": ["8", 0], "positive": ["1", 0], "samples": ["10", 0], "steps": 5, "cfg": 13.0, "shift": 2.5,
        "attention": "full"}},
    "12": {"class_type": "FlashVideoVAEDecode", "inputs": {
        "vae": ["4", 0], "samples": ["11", 0], "latent_scale": "stage2", "slicing": "reference",
        "memory_budget_mb": 0, "chunk_latents": 2, "tile_size": 0, "tile_overlap": 128}},
    "13": {"class_type": "CreateVideo", "inputs": {"images": ["12", 0], "fps": 8}},
    "14": {"class_type": "SaveVideo", "inputs": {
        "video": ["13", 0], "filename_prefix": "fv_stage2", "format": "mp4", "codec": "h264"}},
}


def test_two_stage_graph_writes_preview_and_refined_videos(server):
    entry = server.run_prompt(copy.deepcopy(TWO_STAGE_GRAPH), PROMPT_TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", history_messages(entry, "execution_error")
    files = sorted(output_files(entry, server.base), key=lambda p: p.name)
    assert [f.name.split("_")[1] for f in files] == ["stage1", "stage2"], files
    check_video(files[0], frames=9, width=48, height=32)
    check_video(files[1], frames=9, width=96, height=64)


@pytest.mark.parametrize("name", sorted(EXPECTED_VIDEOS))
def test_example_workflow_runs(server, name):
    """Each template as shipped (its T5 loader, text encode, the clip it names), on make-tiny's files only; only
    sizes, frames and steps are CPU-sized."""
    api = json.loads((WORKFLOWS / f"{name}.json").read_text())
    entry = server.run_prompt(smoke_variant(api), PROMPT_TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", history_messages(entry, "execution_error")
    check_smoke_run(entry, server.base, name)


def test_templates_and_their_thumbnails_are_served(server):
    """What the template browser of both frontends fetches: the pack's template names (every UI json, nothing
    else) and <name>.jpg from the pack's example_workflows."""
    listed = server.get("/workflow_templates")[PACK_FOLDER]
    names = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    assert sorted(listed) == names
    for name in names:
        url = f"{server.url}/api/workflow_templates/{PACK_FOLDER}/{name}.jpg"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
            assert resp.read() == (EXAMPLES / f"{name}.jpg").read_bytes()


def test_t5_loader_refuses_a_file_that_is_not_t5(server):
    graph = {"1": {"class_type": "FlashVideoT5Loader", "inputs": {"clip_name": NOT_T5, "device": "default"}},
             "2": {"class_type": "FlashVideoTextEncode", "inputs": {"clip": ["1", 0], "prompt": "a fox"}},
             "3": {"class_type": "FlashVideoSavePromptEmbedding", "inputs": {"conditioning": ["2", 0], "name": "x"}}}
    status, body = server.queue_prompt(graph)
    assert status == 200 and not body.get("node_errors"), body
    entry = server.wait_history(body["prompt_id"], PROMPT_TIMEOUT_S)
    (error,) = history_messages(entry, "execution_error")
    assert error["node_type"] == "FlashVideoT5Loader" and error["exception_type"].endswith("CheckpointError")
    assert NOT_T5 in error["exception_message"] and "'shared.weight'" in error["exception_message"], error


def test_stage1_is_cached_when_only_stage2_widgets_change(server):
    graph = smoke_variant(json.loads((WORKFLOWS / "flashvideo_1080p.json").read_text()))
    graph["8"]["inputs"]["filename_prefix"] = "fv_cache/preview"
    first = server.run_prompt(copy.deepcopy(graph), PROMPT_TIMEOUT_S)
    assert first["status"]["status_str"] == "success", history_messages(first, "execution_error")
    for change in ({"13": {"steps": 2}}, {"13": {"cfg": 10.0}}, {"11": {"noise_step": 700}}):
        for node_id, values in change.items():
            graph[node_id]["inputs"].update(values)
        entry = server.run_prompt(copy.deepcopy(graph), PROMPT_TIMEOUT_S)
        assert entry["status"]["status_str"] == "success", history_messages(entry, "execution_error")
        cached = {n for msg in history_messages(entry, "execution_cached") for n in msg["nodes"]}
        assert {"3", "4", "6", "10"} <= cached, f"stage I or the bridge re-ran for {change}: cached {sorted(cached)}"
        assert "13" not in cached and "15" not in cached
        check_video(saved_videos(entry, server.base)["15"], frames=9, width=96, height=64)


def test_bad_frame_count_reports_our_error_and_server_recovers(server):
    status, body = server.queue_prompt(graph(frames=16))
    # A wrong frame count is only found at run time: the prompt is accepted...
    assert status == 200 and not body.get("node_errors"), body
    entry = server.wait_history(body["prompt_id"], PROMPT_TIMEOUT_S)
    # ... and fails in history, with the exception in status.messages, not in outputs.
    assert entry["status"]["status_str"] == "error"
    errors = history_messages(entry, "execution_error")
    assert len(errors) == 1, entry["status"]
    error = errors[0]
    assert error["node_type"] == "FlashVideoVAEEncode" and error["node_id"] == "3"
    assert "4k+1" in error["exception_message"] and "got 16" in error["exception_message"], error
    assert error["exception_type"].endswith("InputError"), error["exception_type"]

    # The next good prompt still runs (new seed: nothing comes from the cache). 9 frames, not 5: the CogVideoX
    # VAE round-trips 8m+1 frames exactly, but 5 frames (2 latents, an even count) decode to 8.
    entry = server.run_prompt(graph(frames=9, seed=2, prefix="fv_after_error"), PROMPT_TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", history_messages(entry, "execution_error")
    files = output_files(entry, server.base)
    assert len(files) == 1, entry["outputs"]
    check_video(files[0], frames=9)


def test_quick_test_for_ci(quick_test):
    try:
        code = quick_test.wait(QUICK_TEST_TIMEOUT_S)
    except Exception:
        pytest.fail(f"--quick-test-for-ci still running after {QUICK_TEST_TIMEOUT_S} s\n{quick_test.log_tail()}")
    assert code == 0, f"--quick-test-for-ci exited {code}\n{quick_test.log_tail()}"
    # It exits 0 even when a pack fails to import: check our line.
    line = import_line(quick_test.log(), PACK_FOLDER)
    assert line is not None, quick_test.log_tail()
    assert IMPORT_FAILED not in line, f"{line!r}\n{quick_test.log_tail(120)}"


def test_batch_queue_runs_an_example_workflow_and_resumes(server, tmp_path):
    """python -m flashvideo_queue against the real server on a shipped workflow as it is (make-tiny's tiny T5
    encodes each prompt): two items, outputs downloaded, manifest written; a rerun redoes nothing."""
    import flashvideo_queue
    import io as text_io

    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(smoke_variant(json.loads((WORKFLOWS / "flashvideo_1080p.json").read_text()))))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("A red fox trots through snow.\n# a comment\nA paper boat drifts down a rainy street.\n")
    options = flashvideo_queue.Options(prompts=prompts, workflow=workflow, servers=[server.url],
                                       output_dir=tmp_path / "out", poll_interval=0.5)
    summary = flashvideo_queue.run(options, stream=text_io.StringIO(), tty=False)
    assert summary.exit_code == 0 and len(summary.done) == 2, summary.report()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for item in manifest["items"]:
        assert item["status"] == "done" and len(item["outputs"]) == 2, item
        refined = [tmp_path / "out" / name for name in item["outputs"] if "_15_" in name]
        check_video(refined[0], frames=9, width=96, height=64)
    assert [item["seed"] for item in manifest["items"]] == [0, 1]  # seed = prompt index, as the reference
    again = flashvideo_queue.run(options, stream=text_io.StringIO(), tty=False)
    assert again.exit_code == 0 and again.skipped == 2, again.report()
    rerun = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [i["prompt_id"] for i in rerun["items"]] == [i["prompt_id"] for i in manifest["items"]]  # nothing re-queued


def test_interrupt_during_stage1_stops_within_one_step_and_the_next_prompt_runs(server):
    """POST /interrupt while the stage-I sampler runs: at most one more step reports progress."""
    from flashvideo_queue.client import EventStream

    graph = copy.deepcopy(STAGE1_GRAPH)
    graph["3"]["inputs"].update(width=96, height=64, frames=17, steps=200, seed=77)
    ws = EventStream.connect(f"{server.url.replace('http', 'ws', 1)}/ws?clientId={server.client_id}", timeout=10)
    try:
        status, body = server.queue_prompt(graph)
        assert status == 200 and not body.get("node_errors"), body
        prompt_id, steps_seen, after_interrupt, interrupted = body["prompt_id"], 0, 0, False
        deadline = time.monotonic() + PROMPT_TIMEOUT_S
        while time.monotonic() < deadline:
            message = ws.recv(timeout=5)
            if not isinstance(message, str):
                continue
            event = json.loads(message)
            data = event.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if event["type"] == "progress" and data.get("node") == "3":
                steps_seen += 1
                if interrupted:
                    after_interrupt += 1
                elif steps_seen == 3:
                    server.request("POST", "/interrupt", {})
                    interrupted = True
            if event["type"] in ("execution_interrupted", "execution_success", "execution_error"):
                break
        assert event["type"] == "execution_interrupted", event
        assert interrupted and after_interrupt <= 1, f"{after_interrupt} steps reported after the interrupt"
        assert steps_seen < 200
    finally:
        ws.close()
    entry = server.wait_history(prompt_id, PROMPT_TIMEOUT_S)
    assert entry["status"]["status_str"] == "error"
    next_graph = copy.deepcopy(STAGE1_GRAPH)
    next_graph["3"]["inputs"]["seed"] = 78  # not cached: it must really run
    next_graph["7"]["inputs"]["filename_prefix"] = "fv_after_interrupt"
    entry = server.run_prompt(next_graph, PROMPT_TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", history_messages(entry, "execution_error")
    check_video(output_files(entry, server.base)[0], frames=9, width=48, height=32)
