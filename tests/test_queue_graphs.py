"""The batch client's one graph check (flashvideo_queue/graphcheck.py, nodedefs.py, jsonvalues.py, inputfiles.py)
on hostile and on large legal input: loops, dangling links and slots, left-over widget values, forceInput,
unknown inputs and --set inputs, malformed /object_info entries, deep JSON, non-finite numbers, pipes and folders
as input files; a 5,000-Reroute chain and 100,000-node workflows in bounded time. Every refusal is an InputError
(exit code 2, one line) that names the node, the input and the fix; nothing reaches the server."""

from __future__ import annotations

import json
import os
import time

import pytest

from flashvideo_queue import InputError
from flashvideo_queue.cli import main
from flashvideo_queue.graphcheck import check_graph, check_structure
from flashvideo_queue.jsonvalues import MAX_DEPTH
from flashvideo_queue.nodedefs import NodeDefs
from flashvideo_queue.uigraph import convert
from flashvideo_queue.workflow import load_workflow, read_json

HANG_GUARD_S = 60  # not a speed test: a quadratic or recursive walk takes minutes (or crashes) on these sizes

INFO = {  # a hand-written /object_info in the shape ComfyUI serves it, with outputs
    "Empty": {"input": {"required": {"width": ["INT", {}]}}, "input_order": {"required": ["width"]},
              "output": ["LATENT"], "display_name": "Empty"},
    "Pass": {"input": {"required": {"latent": ["LATENT", {}], "strength": ["FLOAT", {}]},
                       "optional": {"mask": ["MASK", {}]}},
             "input_order": {"required": ["latent", "strength"], "optional": ["mask"]}, "output": ["LATENT"]},
    "Sampler": {"input": {"required": {"latent": ["LATENT", {}], "steps": ["INT", {}],
                                       "seed": ["INT", {"control_after_generate": True}],
                                       "sigma": ["FLOAT", {"forceInput": True}]}},
                "input_order": {"required": ["latent", "steps", "seed", "sigma"]}, "output": ["LATENT", "INT"]},
    "LoadClip": {"input": {"required": {"file": [["a.mp4", "b.mp4"], {"video_upload": True}]}},
                 "output": ["VIDEO"]},
    "Save": {"input": {"required": {"latent": ["LATENT", {}], "format": ["COMFY_DYNAMICCOMBO_V3", {"options": [
        {"key": "mp4", "inputs": {"required": {"codec": [["h264", "av1"], {}]}}}, {"key": "gif", "inputs": {}}]}]},
        "optional": {"codec": [["auto", "h264"], {"hidden": True}]}},
        "input_order": {"required": ["latent", "format"], "optional": ["codec"]}, "output": []},
}


def node(node_id, kind, values, inputs=(), title=None, mode=0):
    out = {"id": node_id, "type": kind, "mode": mode, "widgets_values": values,
           "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs]}
    if title:
        out["title"] = title
    return out


def ui(nodes, links):
    return {"nodes": nodes, "links": links, "version": 0.4}


def refused(call, *parts):
    with pytest.raises(InputError) as err:
        call()
    message = str(err.value)
    for part in parts:
        assert part in message, message
    assert "internal error" not in message and "Traceback" not in message
    return message


# -- structure: loops, links, slots -------------------------------------------------------------------------------
def test_a_link_loop_between_real_nodes_is_refused_naming_the_loop():
    loop = ui([node(1, "Pass", [0.5], [("latent", "LATENT", 1)], title="A"),
               node(2, "Pass", [0.5], [("latent", "LATENT", 2)], title="B"),
               node(3, "Save", ["mp4", "h264"], [("latent", "LATENT", 3)])],
              [[1, 2, 0, 1, 0, "LATENT"], [2, 1, 0, 2, 0, "LATENT"], [3, 2, 0, 3, 0, "LATENT"]])
    refused(lambda: convert(loop, INFO, "loop.json"), "loop.json: the links form a loop", "node 1 'A' (Pass)",
            "node 2 'B' (Pass)", "remove one of these links")
    api = {"1": {"class_type": "Pass", "inputs": {"latent": ["1", 0], "strength": 1.0}}}  # a node fed by itself
    refused(lambda: check_structure(api, "api.json"), "the links form a loop (node 1 (Pass) <- node 1 (Pass))")


@pytest.mark.parametrize("inputs, message", [
    ({"latent": ["9", 0]}, "input 'latent' is linked to node '9', which the workflow does not have"),
    ({"latent": ["1", -1]}, "is linked to output -1 of node 1 (Empty); an output slot is a whole number from 0"),
    ({"latent": ["1", "0"]}, "is linked to output '0' of node 1 (Empty)"),
    ({"latent": ["1", 0, 0]}, "a link is [node id, output slot]"),
])
def test_api_links_must_name_an_existing_node_and_slot(inputs, message):
    graph = {"1": {"class_type": "Empty", "inputs": {"width": 8}}, "2": {"class_type": "Pass", "inputs": inputs}}
    refused(lambda: check_structure(graph, "api.json"), "api.json: node 2 (Pass)", message)


def test_a_link_to_an_output_the_source_does_not_have_is_refused():
    graph = {"1": {"class_type": "Empty", "inputs": {"width": 8}},
             "2": {"class_type": "Pass", "inputs": {"latent": ["1", 1], "strength": 1.0}}}
    refused(lambda: check_graph(graph, NodeDefs(INFO, "http://srv"), "api.json"),
            "node 2 (Pass) input 'latent' is linked to output 1 of node 1 (Empty), which has 1 output(s) (0 to 0)")
    graph["2"]["inputs"]["latent"] = ["1", 0]
    check_graph(graph, NodeDefs(INFO, "http://srv"), "api.json")  # the same graph, linked right, passes


# -- widgets: counts, forceInput, uploads, hidden ---------------------------------------------------------------
def test_left_over_widget_values_are_refused_not_dropped():
    extra = ui([node(1, "Empty", [64, 32], title="Size")], [])
    refused(lambda: convert(extra, INFO, "x.json"), "node 1 'Size' (Empty): 2 widget values saved but Empty on this "
            "server has widgets for 1 (width); the rest (from 32) would be dropped", "Save (API)")


def test_a_value_saved_for_an_input_the_server_marks_force_input_is_refused():
    """sigma was a widget when the workflow was saved; this server takes it only as a link."""
    saved = ui([node(1, "Empty", [64]), node(2, "Sampler", [20, 5, "fixed", 0.7], [("latent", "LATENT", 1)])],
               [[1, 1, 0, 2, 0, "LATENT"]])
    refused(lambda: convert(saved, INFO, "x.json"), "node 2 (Sampler): 4 widget values saved",
            "the rest (from 0.7) would be dropped; sigma take(s) only a link (forceInput) on this server")


def test_upload_button_and_hidden_widget_values_are_consumed_not_submitted():
    """What a frontend saves beyond the prompt's inputs: LoadClip's upload button value, Save's hidden codec."""
    graph = convert(ui([node(1, "LoadClip", ["b.mp4", "image"]), node(2, "Empty", [8]),
                        node(3, "Save", ["mp4", "av1", "auto"], [("latent", "LATENT", 1)])],
                       [[1, 2, 0, 3, 0, "LATENT"]]), INFO, "x.json").graph
    assert graph["1"]["inputs"] == {"file": "b.mp4"}
    assert graph["3"]["inputs"] == {"format": "mp4", "format.codec": "av1", "latent": ["2", 0]}


# -- unknown inputs and --set ------------------------------------------------------------------------------------
def test_an_input_the_class_does_not_have_is_refused_with_its_real_inputs():
    graph = {"1": {"class_type": "Empty", "inputs": {"width": 8, "widht": 9}, "_meta": {"title": "Size"}}}
    refused(lambda: check_graph(graph, NodeDefs(INFO, "http://srv"), "api.json"),
            "api.json: node 1 'Size' (Empty): input 'widht': Empty on http://srv has no input 'widht' (its inputs: "
            "width)")
    save = {"1": {"class_type": "Empty", "inputs": {"width": 8}},
            "2": {"class_type": "Save", "inputs": {"latent": ["1", 0], "format": "gif", "format.codec": "h264"}}}
    refused(lambda: check_graph(save, NodeDefs(INFO, "http://srv"), "api.json"),  # codec belongs to mp4 only
            "input 'format.codec': Save on http://srv has no input 'format.codec' (its inputs: latent, format, "
            "format.codec, codec)")
    save["2"]["inputs"]["format"] = "mp4"
    check_graph(save, NodeDefs(INFO, "http://srv"), "api.json")


def api_workflow(tmp_path):
    from test_flashvideo_queue import WORKFLOW, write_inputs

    return write_inputs(tmp_path, prompts=["a fox"], workflow=WORKFLOW)


@pytest.mark.parametrize("setting, message", [
    ("4.stpes=5", "node 4 (FlashVideoStage1Sampler): --set 4.stpes: FlashVideoStage1Sampler on {url} has no input "
                  "'stpes' (its inputs: model, positive, width, height, frames, steps, cfg, seed); correct or drop "
                  "that --set"),
    ("4.steps=abc", "--set 4.steps: 'abc' does not fit input 'steps' (INT: a whole number); correct or drop that --set"),
    ("4.steps=7.5", "--set 4.steps: 7.5 does not fit input 'steps' (INT: a whole number)"),
    ("4.cfg=NaN", "--set '4.cfg=NaN': the value: NaN is not a JSON number"),
    ("4.cfg=1e999", "--set '4.cfg=1e999': the value: the number 1e999 is too large to be a finite number"),
    ("4.cfg=" + "[" * 200 + "]" * 200, f"nested more than {MAX_DEPTH} levels deep"),
    ("4.model=[\"99\", 0]", "--set 4.model is linked to node '99', which the workflow does not have"),
])
def test_bad_set_values_exit_2_before_anything_is_queued(tmp_path, capsys, fakes, setting, message):
    fake = fakes()
    prompts, workflow = api_workflow(tmp_path)
    code = main([str(prompts), "--workflow", str(workflow), "--server", fake.url, "--output-dir",
                 str(tmp_path / "out"), "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and message.format(url=fake.url) in err, err
    assert err.count("\n") == 1 and "internal error" not in err
    assert not fake.received and not (tmp_path / "out" / "manifest.json").exists()


def test_set_on_a_ui_workflow_input_the_class_lacks_is_refused(tmp_path, capsys, fakes):
    from test_flashvideo_queue import EXAMPLES

    fake = fakes()
    (tmp_path / "p.txt").write_text("a fox\n")
    code = main([str(tmp_path / "p.txt"), "--workflow", str(EXAMPLES / "flashvideo_270p_preview.json"), "--server",
                 fake.url, "--output-dir", str(tmp_path / "out"), "--set", "Stage I model.atention=sdpa"])
    err = capsys.readouterr().err
    assert code == 2 and "node 3 'Stage I model' (FlashVideoModelLoader): --set 3.atention" in err, err
    assert "(its inputs: model_name, weight_dtype, attention, memory)" in err and not fake.received


def test_seeds_and_values_outside_the_widgets_range_are_refused_naming_their_source(tmp_path, capsys, fakes):
    """Every item's seed (--seed-base + index) and every --set value against the server's min/max."""
    fake = fakes()
    for node_type in ("FlashVideoStage1Sampler", "FlashVideoLatentDegrade"):
        fake.object_info[node_type]["input"]["required"]["seed"][1].update(min=0, max=2**32 - 1)
    fake.object_info["FlashVideoStage1Sampler"]["input"]["required"]["steps"][1].update(min=1, max=200)
    prompts, workflow = api_workflow(tmp_path)
    prompts.write_text("a fox\na whale\na cat\n")

    def run(*extra):
        code = main([str(prompts), "--workflow", str(workflow), "--server", fake.url, "--output-dir",
                     str(tmp_path / "out"), *extra])
        return code, capsys.readouterr().err

    code, err = run("--seed-base", str(2**32 - 2))  # the third item's seed is 2**32
    assert code == 2 and f"input 'seed' (an item's seed, --seed-base + its index: {2**32}): {2**32} is above the " \
                         f"maximum {2**32 - 1} of input 'seed'; pick a --seed-base" in err, err
    code, err = run("--seed-base", "-1")
    assert code == 2 and "-1 is below the minimum 0 of input 'seed'" in err, err
    code, err = run("--set", "4.steps=0")
    assert code == 2 and "--set 4.steps: 0 is below the minimum 1 of input 'steps'; correct or drop that" in err, err
    code, err = run("--prompt-target", "4.width")
    assert code == 2 and "input 'width' (where the prompt goes): 'a prompt' does not fit input 'width'" in err, err
    assert not fake.received
    code, err = run("--seed-base", str(2**32 - 3), "--set", "4.steps=200")  # the edges are legal: it runs
    assert code == 0 and len(fake.received) == 3, err
    assert [r["graph"]["4"]["inputs"]["seed"] for r in fake.received] == [2**32 - 3, 2**32 - 2, 2**32 - 1]


def test_a_primitive_holding_a_list_is_refused_not_taken_for_a_link():
    workflow = ui([node(1, "Empty", [64]), node(2, "PrimitiveNode", [["1", 0], "fixed"]),
                   node(3, "Pass", [0.5], [("latent", "LATENT", 1), ("strength", "FLOAT", 2)])],
                  [[1, 1, 0, 3, 0, "LATENT"], [2, 2, 0, 3, 1, "FLOAT"]])
    workflow["nodes"][2]["inputs"][1]["widget"] = {"name": "strength"}
    refused(lambda: convert(workflow, INFO, "x.json"), "node 2 (PrimitiveNode) feeding node 3 (Pass) holds "
            "['1', 0], not a single value")


# -- the server's definitions --------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry, problem", [
    (["not", "an", "object"], "the entry is a list, not an object"),
    ({"input": "required"}, "'input' is a str, not an object"),
    ({"input": {"required": ["width"]}}, "'input.required' is a list, not an object"),
    ({"input": {"required": {"width": "INT"}}}, "input 'width' is INT, not [type, options]"),
    ({"input": {"required": {"width": ["INT", ["min", 0]]}}}, "input 'width': its options are a list"),
    ({"input": {"required": {"width": [{"INT": 1}]}}}, "input 'width': its type is {'INT': 1}"),
    ({"input": {"required": {"width": ["INT", {}]}}, "input_order": {"required": "width"}},
     "'input_order.required' is not a list of names"),
    ({"input": {"required": {"width": ["COMFY_DYNAMICCOMBO_V3", {}]}}}, "dynamic input 'width' has no list of options"),
    ({"input": {"required": {"width": ["COMFY_DYNAMICCOMBO_V3", {"options": [7]}]}}}, "dynamic input 'width': option 7 has no key"),
    ({"input": {"required": {"width": ["INT", {}]}}, "output": "LATENT"}, "'output' is a str, not a list"),
])
def test_a_malformed_object_info_entry_is_refused_naming_the_class_and_the_server(entry, problem):
    info = {**INFO, "Empty": entry}
    for call in (lambda: convert(ui([node(1, "Empty", [64])], []), NodeDefs(info, "http://srv:8188"), "x.json"),
                 lambda: check_graph({"1": {"class_type": "Empty", "inputs": {}}}, NodeDefs(info, "http://srv:8188"),
                                     "api.json")):
        refused(call, "node 1 (Empty): the server http://srv:8188 describes node type 'Empty' in a form this client "
                f"cannot read (/object_info: {problem}", "update or reinstall the custom node pack")


def test_dynamic_combos_nested_without_end_are_refused():
    spec: list = ["INT", {}]
    for _ in range(40):
        spec = ["COMFY_DYNAMICCOMBO_V3", {"options": [{"key": "a", "inputs": {"required": {"x": spec}}}]}]
    info = {"Deep": {"input": {"required": {"x": spec}}}}
    refused(lambda: check_graph({"1": {"class_type": "Deep", "inputs": {}}}, NodeDefs(info, "http://srv"), "a.json"),
            "dynamic inputs nested more than 16 levels deep")


def test_object_info_that_is_not_an_object_is_refused(tmp_path, capsys, fakes):
    fake = fakes()
    fake.object_info = ["not", "definitions"]
    prompts, workflow = api_workflow(tmp_path)
    code = main([str(prompts), "--workflow", str(workflow), "--server", fake.url, "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and f"{fake.url}/object_info is not a JSON object of node definitions" in err, err


# -- JSON and input files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, f"nested more than {MAX_DEPTH} levels deep"),
    ('{"nodes": [{"id": 1, "type": "Empty", "widgets_values": ' + "[" * 150 + "1" + "]" * 150 + "}], \"links\": []}",
     f"nested more than {MAX_DEPTH} levels deep"),
    ('{"1": {"class_type": "Empty", "inputs": {"width": NaN}}}', "NaN is not a JSON number"),
    ('{"1": {"class_type": "Empty", "inputs": {"width": -Infinity}}}', "-Infinity is not a JSON number"),
    ('{"1": {"class_type": "Empty", "inputs": {"width": 1e400}}}', "the number 1e400 is too large"),
])
def test_deep_or_non_finite_json_is_refused_with_the_limit_named(tmp_path, text, message):
    path = tmp_path / "w.json"
    path.write_text(text)
    refused(lambda: read_json(path), f"{path}: ", message)


def test_a_link_to_a_slot_a_pack_node_lacks_is_refused_before_queueing(tmp_path, capsys, fakes):
    from test_flashvideo_queue import WORKFLOW

    fake = fakes()
    prompts, workflow = api_workflow(tmp_path)
    graph = json.loads(json.dumps(WORKFLOW))
    graph["4"]["inputs"]["model"] = ["3", 1]  # the model loader has one output
    workflow.write_text(json.dumps(graph))
    code = main([str(prompts), "--workflow", str(workflow), "--server", fake.url, "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "node 4 (FlashVideoStage1Sampler) input 'model' is linked to output 1 of node 3 " \
                         "(FlashVideoModelLoader), which has 1 output(s) (0 to 0)" in err, err
    assert not fake.received


def test_an_input_file_over_the_size_limit_is_refused_unread(tmp_path):
    from flashvideo_queue.inputfiles import read_input

    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 2000)
    refused(lambda: read_input(big, "prompts file", limit=1000), f"prompts file {big} is larger than 1,000 bytes, the most")
    assert read_input(big, "prompts file", limit=2000) == b"x" * 2000


def test_a_pipe_or_a_folder_as_workflow_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    start = time.monotonic()
    refused(lambda: read_json(fifo), f"workflow {fifo} is a pipe; pass the path of a workflow file")
    refused(lambda: read_json(tmp_path), f"workflow {tmp_path} is a folder")
    assert time.monotonic() - start < 5


def test_a_deeply_nested_manifest_asks_for_restart(tmp_path):
    from flashvideo_queue.manifest import Manifest

    (tmp_path / "manifest.json").write_text('{"version": 1, "items": ' + "[" * 5000 + "]" * 5000 + "}")
    refused(lambda: Manifest.load(tmp_path), "is unreadable (nested more than", "pass --restart")


def test_malformed_ui_parts_are_refused_not_crashed_on():
    good = ui([node(1, "Empty", [64]), node(2, "Pass", [0.5], [("latent", "LATENT", 1)])], [[1, 1, 0, 2, 0, "LATENT"]])
    cases = [
        (lambda w: w.update(definitions=["not", "an", "object"]), None),
        (lambda w: w["nodes"][1]["inputs"][0].update(widget="latent"), None),
        (lambda w: w["nodes"][1]["inputs"][0].update(link=[1]), "malformed input"),
        (lambda w: w["links"][0].__setitem__(0, [1]), "malformed link"),
        (lambda w: w["nodes"][0].update(id=[1]), "a node without an id or type"),
        (lambda w: w["nodes"][1].update(inputs="latent"), "'inputs' is not a list"),
        (lambda w: w.update(links={"1": 1}), "'links' is not a list"),
    ]
    for change, message in cases:
        workflow = json.loads(json.dumps(good))
        change(workflow)
        if message is None:  # harmless oddities: converted as if absent
            assert convert(workflow, INFO, "x.json").graph["2"]["inputs"]["latent"] == ["1", 0]
        else:
            refused(lambda: convert(workflow, INFO, "x.json"), "x.json: ", message)


# -- large legal inputs --------------------------------------------------------------------------------------------
def reroute_chain(length: int, kind: str = "Reroute") -> dict:
    """Empty -> ``length`` x kind -> Pass; node ids 1..length+2, link i feeds node i+1."""
    nodes = [node(1, "Empty", [64])]
    links = []
    for i in range(2, length + 2):
        nodes.append(node(i, kind, [] if kind == "Reroute" else [0.5], [("latent", "LATENT", i - 1)]))
        links.append([i - 1, i - 1, 0, i, 0, "LATENT"])
    nodes.append(node(length + 2, "Pass", [1.0], [("latent", "LATENT", length + 1)]))
    links.append([length + 1, length + 1, 0, length + 2, 0, "LATENT"])
    return ui(nodes, links)


def test_a_5000_reroute_chain_converts_to_one_link():
    start = time.monotonic()
    graph = convert(reroute_chain(5000), INFO, "chain.json").graph
    assert graph == {"1": {"class_type": "Empty", "inputs": {"width": 64}, "_meta": {"title": "Empty"}},
                     "5002": {"class_type": "Pass", "inputs": {"strength": 1.0, "latent": ["1", 0]},
                              "_meta": {"title": "Pass"}}}
    assert time.monotonic() - start < HANG_GUARD_S


def test_100k_node_workflows_convert_and_check_in_bounded_time(tmp_path):
    """A chain of 100,000 real nodes: as a UI workflow (parsed, converted, checked) and as an API workflow with a
    loop at its far end (refused, not walked forever or recursively)."""
    path = tmp_path / "big.json"
    path.write_text(json.dumps(reroute_chain(100_000, "Pass")))
    start = time.monotonic()
    workflow = load_workflow(path, lambda: NodeDefs(INFO, "http://srv"))
    assert len(workflow.graph) == 100_002 and workflow.graph["100002"]["inputs"]["latent"] == ["100001", 0]
    api = {str(i): {"class_type": "Pass", "inputs": {"latent": [str(i - 1), 0], "strength": 1.0}}
           for i in range(2, 100_001)}
    api["1"] = {"class_type": "Pass", "inputs": {"latent": ["100000", 0], "strength": 1.0}}
    refused(lambda: check_structure(api, "api.json"), "the links form a loop (node ")
    elapsed = time.monotonic() - start
    assert elapsed < HANG_GUARD_S, f"{elapsed:.1f} s"


def test_a_long_prompt_list_makes_its_items_in_bounded_time(tmp_path):
    from flashvideo_queue.prompts import read_prompts
    from flashvideo_queue.runner import Options, _fresh_items
    from flashvideo_queue.workflow import Plan, parse_targets
    from test_flashvideo_queue import WORKFLOW

    (tmp_path / "p.txt").write_text("".join(f"prompt number {i}\n" for i in range(20_000)))
    start = time.monotonic()
    prompts, _ = read_prompts(tmp_path / "p.txt")
    graph = json.loads(json.dumps(WORKFLOW))
    plan = Plan(graph, parse_targets(graph, []))
    items = _fresh_items(plan, Options(prompts=tmp_path / "p.txt", workflow=tmp_path / "w.json"), prompts, None, "p")
    assert len(items) == 20_000 and len({item["key"] for item in items}) == 20_000
    assert time.monotonic() - start < HANG_GUARD_S
