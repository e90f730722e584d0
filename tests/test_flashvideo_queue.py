"""flashvideo_queue against an in-process fake ComfyUI (tests/support/fake_comfy_server.py): substitution,
downloads and manifest, server errors and bounded retries, resume after a crash or Ctrl-C, dying and
unreachable servers, input errors, two servers, UI workflows (conversion, extra_pnginfo), node titles, and
hostile or damaged manifests and local write failures. tests/test_queue_real_host.py covers real hosts."""

from __future__ import annotations

import ast
import io
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flashvideo_queue import InputError, Options, run
from flashvideo_queue.cli import main
from flashvideo_queue.outputs import collect_outputs, local_names, slug
from flashvideo_queue.workflow import Plan, load_workflow, parse_sets, parse_targets
from support.fake_comfy_server import FLAKY, FakeComfy
from support.queue_runs import manifest, run_quiet

REPO = Path(__file__).resolve().parent.parent

WORKFLOW = {
    "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5xxl_fp16.safetensors", "type": "sd3"}},
    "2": {"class_type": "FlashVideoTextEncode", "inputs": {"clip": ["1", 0], "prompt": "placeholder"}},
    "3": {"class_type": "FlashVideoModelLoader", "inputs": {"model_name": "stage1.pt", "weight_dtype": "auto",
                                                            "attention": "sdpa"}},
    "4": {"class_type": "FlashVideoStage1Sampler", "inputs": {
        "model": ["3", 0], "positive": ["2", 0], "width": 480, "height": 272, "frames": 49, "steps": 50, "cfg": 6.0,
        "seed": 123}},
    "5": {"class_type": "FlashVideoLatentDegrade", "inputs": {"samples": ["4", 0], "noise_step": 675, "seed": 9}},
    "6": {"class_type": "CreateVideo", "inputs": {"images": ["5", 0], "fps": 8}},
    "8": {"class_type": "SaveVideo", "inputs": {"video": ["6", 0], "filename_prefix": "flashvideo", "format": "mp4",
                                                "codec": "h264"}},
}
PROMPTS = ["A red fox trots through fresh snow at dawn, camera tracking low.",
           "A humpback whale breaches beside a sailboat; spray glitters in the sun.",
           "Close-up of rain on a neon-lit Tokyo street at night, reflections rippling."]


def write_inputs(tmp_path: Path, prompts=PROMPTS, workflow=WORKFLOW, header="# FlashVideo batch\n\n"):
    prompts_file, workflow_file = tmp_path / "prompts.txt", tmp_path / "workflow.json"
    prompts_file.write_text(header + "\n".join(prompts) + "\n", "utf-8")
    workflow_file.write_text(json.dumps(workflow), "utf-8")
    return prompts_file, workflow_file


def options(tmp_path: Path, servers, **kwargs) -> Options:
    prompts_file, workflow_file = tmp_path / "prompts.txt", tmp_path / "workflow.json"
    if not prompts_file.exists():
        write_inputs(tmp_path)
    values = dict(prompts=prompts_file, workflow=workflow_file, servers=[s.url if isinstance(s, FakeComfy) else s
                                                                            for s in servers],
                  output_dir=tmp_path / "out", poll_interval=0.05, server_grace=0.4, connect_timeout=2.0,
                  http_timeout=5.0)
    values.update(kwargs)
    return Options(**values)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: the pack's own standard-library-only modules the client shares (one output-writing path for every file written)
SHARED_CORE_MODULES = {"flashvideo_core.io.output_files"}


def test_package_imports_the_standard_library_and_websocket_client_only():
    for path in (REPO / "flashvideo_queue").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] in sys.stdlib_module_names | {"websocket"} or name in SHARED_CORE_MODULES, \
                    f"{path.name} imports {name}"
    assert not (REPO / "flashvideo_queue" / "websocket.py").exists()  # no home-made RFC 6455 code
    # the shared core modules stay standard-library only: the whole client imports without torch, numpy or av
    probe = "import sys, flashvideo_queue.cli; print(sorted({'torch', 'numpy', 'av'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


# -- graph substitution and naming ------------------------------------------------------------------------------------
def test_plan_puts_prompt_seeds_prefix_and_overrides_in_a_copy(tmp_path):
    workflow = json.loads(json.dumps(WORKFLOW))
    workflow["9"] = {"class_type": "FlashVideoVAEEncode", "inputs": {"images": ["6", 0], "seed": ["10", 0]}}
    workflow["10"] = {"class_type": "FlashVideoStage1Noise", "inputs": {"seed": 5}}
    write_inputs(tmp_path, workflow=workflow)
    graph = load_workflow(tmp_path / "workflow.json", dict).graph
    plan = Plan(graph, parse_targets(graph, []), parse_sets(graph, ["4.steps=20", "3.attention=sdpa", '9.x=["5", 0]']))
    built = plan.build("a cat", 42, "flashvideo_queue/run/0007")
    assert built["2"]["inputs"]["prompt"] == "a cat"
    assert built["4"]["inputs"]["seed"] == 42 and built["5"]["inputs"]["seed"] == 42
    assert built["9"]["inputs"]["seed"] == ["10", 0]  # a linked seed is left to its source
    assert built["8"]["inputs"]["filename_prefix"] == "flashvideo_queue/run/0007"
    assert built["4"]["inputs"]["steps"] == 20 and built["9"]["inputs"]["x"] == ["5", 0]
    assert graph["2"]["inputs"]["prompt"] == "placeholder" and graph["4"]["inputs"]["seed"] == 123  # untouched
    kept = Plan(graph, [("1", "clip_name")], keep_seeds=True).build("t5.safetensors", 42, "p")
    assert kept["1"]["inputs"]["clip_name"] == "t5.safetensors" and kept["4"]["inputs"]["seed"] == 123


def test_outputs_are_collected_from_every_list_of_files_and_named_predictably():
    entry = {"outputs": {
        "12": {"images": [{"filename": "b.mp4", "subfolder": "s", "type": "output"}], "animated": [True]},
        "8": {"gifs": [{"filename": "a.gif", "subfolder": "", "type": "output"}],
              "videos": [{"filename": "a.gif", "subfolder": "", "type": "output"}], "text": ["not a file"]}}}
    refs = collect_outputs(entry)
    assert [(r["node"], r["filename"]) for r in refs] == [("8", "a.gif"), ("12", "b.mp4")]
    assert local_names(3, "Ünïcode: a very, very long prompt about a fox in the snow at dawn!", refs) == [
        "0003_unicode-a-very-very-long-prompt-about-a_8_a.gif",
        "0003_unicode-a-very-very-long-prompt-about-a_12_b.mp4"]
    assert slug("###") == "prompt" and len(slug("x" * 100)) == 40


# -- whole batches ----------------------------------------------------------------------------------------------------
def test_batch_substitutes_downloads_and_writes_the_manifest(tmp_path, fakes):
    fake = fakes()
    summary = run_quiet(options(tmp_path, [fake], seed_base=1000, sets=["4.steps=5", "6.fps=16"]))
    assert summary.exit_code == 0 and len(summary.done) == 3, summary.report()
    data = manifest(tmp_path)
    run_id = data["run_id"]
    assert len(run_id) == 12 and data["workflow"]["sha256"] and data["prompts"]["sha256"]
    assert [r["text"] for r in fake.received] == PROMPTS
    for i, received in enumerate(fake.received):
        graph = received["graph"]
        assert graph["2"]["inputs"]["prompt"] == PROMPTS[i]
        assert graph["4"]["inputs"]["seed"] == graph["5"]["inputs"]["seed"] == 1000 + i
        assert graph["8"]["inputs"]["filename_prefix"] == f"flashvideo_queue/{run_id}/{i:04d}"
        assert graph["4"]["inputs"]["steps"] == 5 and graph["6"]["inputs"]["fps"] == 16
    for i, item in enumerate(data["items"]):
        assert {k: item[k] for k in ("index", "line", "prompt", "seed", "status", "server", "attempts", "error")} == {
            "index": i, "line": 3 + i, "prompt": PROMPTS[i], "seed": 1000 + i, "status": "done", "server": fake.url,
            "attempts": 1, "error": None}
        assert item["prompt_id"] == fake.received[i]["prompt_id"]
        assert item["outputs"] == [f"{i:04d}_{slug(PROMPTS[i])}_8_{i:04d}_00001_.mp4"]
        content = (tmp_path / "out" / item["outputs"][0]).read_bytes()
        assert content.startswith(b"\x00\x00\x00\x18ftyp") and PROMPTS[i].encode() in content
    assert summary.report().count("done    #") == 3
    assert fake.pongs and fake.client_closes == 1  # answered the server's ping, closed cleanly

    again = run_quiet(options(tmp_path, [fake], seed_base=1000, sets=["4.steps=5", "6.fps=16"]))
    assert again.exit_code == 0 and again.skipped == 3 and len(fake.received) == 3  # nothing done twice

    other = tmp_path / "other"  # another --set is another batch: its own run id, so its own server-side folder
    other.mkdir()
    assert run_quiet(options(other, [fake], seed_base=1000, sets=["4.steps=6", "6.fps=16"])).exit_code == 0
    assert manifest(other)["run_id"] != run_id


@pytest.mark.parametrize("mode", ["node_errors", "reject"])
def test_rejected_graph_reports_the_servers_message_and_is_not_retried(tmp_path, fakes, mode):
    fake = fakes(**{mode: lambda text, seen: text == PROMPTS[1]})
    summary = run_quiet(options(tmp_path, [fake], retries=2))
    assert summary.exit_code == 1
    assert [i["index"] for i in summary.done] == [0, 2] and [i["index"] for i in summary.failed] == [1]
    assert fake.texts().count(PROMPTS[1]) == 1  # validation would refuse it again: no retry
    error = manifest(tmp_path)["items"][1]["error"]
    assert "node 3 (FlashVideoModelLoader): Value not in list: model_name: 'stage1.pt' not in" in error
    assert ("HTTP 400" in error) == (mode == "reject")
    assert ("the valid rest was cancelled" in error) == (mode == "node_errors")
    assert "not retried" in error and "fix the workflow" in error
    assert manifest(tmp_path)["items"][1]["attempts"] == 1
    assert "FAILED  #0001 line 4 (1 attempt)" in summary.report() and "Value not in list" in summary.report()


def test_execution_error_carries_node_type_and_exception_message(tmp_path, fakes):
    fake = fakes(exec_error=lambda text, seen: text == PROMPTS[0])
    summary = run_quiet(options(tmp_path, [fake], retries=1))
    assert summary.exit_code == 1 and fake.texts().count(PROMPTS[0]) == 2
    error = summary.failed[0]["error"]
    assert "FlashVideoStage1Sampler (node 4)" in error and "CUDA out of memory" in error, error
    assert "back in the queue" in summary.log and "FAILED" in summary.log

    healthy = fakes()  # a rerun gives failed items a fresh set of attempts; done items stay done
    summary = run_quiet(options(tmp_path, [healthy], retries=1))
    assert summary.exit_code == 0 and healthy.texts() == [PROMPTS[0]]
    assert manifest(tmp_path)["items"][0]["attempts"] == 3


def test_flaky_server_succeeds_on_retry(tmp_path, fakes):
    fake = fakes(exec_error=FLAKY)
    summary = run_quiet(options(tmp_path, [fake], retries=1))
    assert summary.exit_code == 0 and len(fake.received) == 6
    assert [i["attempts"] for i in manifest(tmp_path)["items"]] == [2, 2, 2]
    assert [i["error"] for i in manifest(tmp_path)["items"]] == [None] * 3


def test_websocket_drop_falls_back_to_polling(tmp_path, fakes):
    fake = fakes(drop_ws=True)
    summary = run_quiet(options(tmp_path, [fake]))
    assert summary.exit_code == 0 and len(fake.received) == 3
    assert "websocket to" in summary.log and "dropped" in summary.log


def test_timeout_cancels_the_prompt_on_the_server(tmp_path, fakes):
    fake = fakes(hold=threading.Event())  # never starts
    write_inputs(tmp_path, prompts=PROMPTS[:1])
    summary = run_quiet(options(tmp_path, [fake], retries=0, timeout=0.3))
    assert summary.exit_code == 1 and "timed out after 0.3 s" in summary.failed[0]["error"]
    assert fake.interrupts == [{"prompt_id": fake.received[0]["prompt_id"]}]  # only ours, by id


def test_resume_collects_finished_prompts_and_redownloads_missing_files(tmp_path, fakes):
    fake = fakes()
    assert run_quiet(options(tmp_path, [fake])).exit_code == 0
    out = tmp_path / "out"
    data = manifest(tmp_path)
    # Simulate a crash after item 1's prompt was queued (it finished on the server meanwhile) ...
    running = data["items"][1]
    (out / running["outputs"][0]).unlink()
    running.update(status="running", outputs=[], remote=[])
    # ... a user who deleted one of item 2's files, and an item 0 whose prompt the server never got.
    (out / data["items"][2]["outputs"][0]).unlink()
    data["items"][0].update(status="running", prompt_id="never-queued", outputs=[], remote=[])
    (out / "manifest.json").write_text(json.dumps(data))
    for name in ("0000_" + slug(PROMPTS[0]) + "_8_0000_00001_.mp4",):
        (out / name).unlink()

    summary = run_quiet(options(tmp_path, [fake]))
    assert summary.exit_code == 0, summary.report()
    assert fake.texts() == PROMPTS + [PROMPTS[0]]  # only the unknown prompt was queued again
    items = manifest(tmp_path)["items"]
    assert [i["status"] for i in items] == ["done"] * 3 and items[0]["attempts"] == 2
    assert items[1]["prompt_id"] == fake.received[1]["prompt_id"] and items[1]["attempts"] == 1
    assert all((out / name).is_file() for item in items for name in item["outputs"])
    assert "collected prompt" in summary.log and "downloaded its missing files again" in summary.log


def start_in_thread(opts, stop=None):
    """run() in a thread, its log readable while it runs."""
    log, result = io.StringIO(), {}
    thread = threading.Thread(target=lambda: result.update(summary=run(opts, stop=stop, stream=log, tty=False)))
    thread.start()
    return thread, log, result


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_ctrl_c_leaves_the_item_running_and_the_rerun_waits_for_it(tmp_path, fakes):
    hold, stop = threading.Event(), threading.Event()
    fake = fakes(hold=hold)  # the first prompt stays "running" on the server until we let it go
    write_inputs(tmp_path, prompts=PROMPTS[:2])
    thread, _, result = start_in_thread(options(tmp_path, [fake]), stop)
    wait_for(lambda: fake.received)
    stop.set()  # what Ctrl-C does in the command
    thread.join(10)
    summary = result["summary"]
    assert summary.exit_code == 130 and "rerun the same command" in summary.report()
    item = manifest(tmp_path)["items"][0]
    assert item["status"] == "running" and item["prompt_id"] == fake.received[0]["prompt_id"]
    assert fake.interrupts == [] and fake.deleted == []  # no /interrupt by default: the server keeps going

    thread, log, result = start_in_thread(options(tmp_path, [fake]))
    wait_for(lambda: "is still on" in log.getvalue())
    hold.set()
    thread.join(10)
    assert result["summary"].exit_code == 0, log.getvalue()
    assert fake.texts() == PROMPTS[:2]  # collected, not queued again
    assert [i["attempts"] for i in manifest(tmp_path)["items"]] == [1, 1]


def test_ctrl_c_with_interrupt_on_exit_cancels_our_prompt(tmp_path, fakes):
    stop = threading.Event()
    fake = fakes(hold=threading.Event())
    write_inputs(tmp_path, prompts=PROMPTS[:1])
    thread, _, result = start_in_thread(options(tmp_path, [fake], interrupt_on_exit=True), stop)
    wait_for(lambda: fake.received)
    stop.set()
    thread.join(10)
    assert result["summary"].exit_code == 130 and "cancelled on their servers" in result["summary"].report()
    assert fake.interrupts == [{"prompt_id": fake.received[0]["prompt_id"]}]


def test_server_dying_mid_batch_hands_its_item_to_the_other(tmp_path, fakes):
    dying, steady = fakes(die_after=1), fakes(step_delay=0.05)
    write_inputs(tmp_path, prompts=PROMPTS + ["A paper boat drifts down a gutter stream after rain."])
    summary = run_quiet(options(tmp_path, [dying, steady]))
    assert summary.exit_code == 0 and len(summary.done) == 4, summary.report()
    assert dying.dead and dying.completed == 1
    lost = dying.received[-1]["text"]
    assert steady.texts().count(lost) == 1 and set(steady.texts()) | {dying.received[0]["text"]} == set(
        i["prompt"] for i in summary.done)
    items = {i["prompt"]: i for i in manifest(tmp_path)["items"]}
    assert items[lost]["attempts"] == 2 and items[lost]["server"] == steady.url
    assert "stopped responding" in summary.log


def test_only_server_dying_exits_1_and_the_rerun_on_a_fresh_server_finishes(tmp_path, fakes):
    dying = fakes(die_after=1)
    summary = run_quiet(options(tmp_path, [dying]))
    assert summary.exit_code == 1 and len(summary.done) == 1 and len(summary.left) == 2
    assert "rerun the same command" in summary.report()
    items = manifest(tmp_path)["items"]
    assert [i["status"] for i in items] == ["done", "pending", "pending"] and items[1]["attempts"] == 1

    fresh = fakes()
    summary = run_quiet(options(tmp_path, [fresh]))
    assert summary.exit_code == 0 and summary.skipped == 1
    assert fresh.texts() == PROMPTS[1:]  # item 0 was not redone
    assert [i["attempts"] for i in manifest(tmp_path)["items"]] == [1, 2, 1]


def test_two_servers_share_the_work(tmp_path, fakes):
    a, b = fakes(step_delay=0.01), fakes(step_delay=0.01)
    prompts = [f"Prompt number {n}: a lighthouse in a storm, seen from the sea." for n in range(6)]
    write_inputs(tmp_path, prompts=prompts)
    summary = run_quiet(options(tmp_path, [a, b]))
    assert summary.exit_code == 0
    assert a.received and b.received and sorted(a.texts() + b.texts()) == sorted(prompts)
    servers = {i["server"] for i in manifest(tmp_path)["items"]}
    assert servers == {a.url, b.url}


def test_unreachable_server_is_a_clear_error_or_a_warning(tmp_path, fakes, capsys):
    port = closed_port()
    write_inputs(tmp_path)
    args = [str(tmp_path / "prompts.txt"), "--workflow", str(tmp_path / "workflow.json"),
            "--server", f"127.0.0.1:{port}", "--output-dir", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"cannot reach http://127.0.0.1:{port}: " in err and "is ComfyUI running?" in err
    assert f"python main.py --listen 127.0.0.1 --port {port}" in err

    fake = fakes()
    summary = run_quiet(options(tmp_path, [f"http://127.0.0.1:{port}", fake]))
    assert summary.exit_code == 0 and f"warning: cannot reach http://127.0.0.1:{port}" in summary.log


def test_progress_line_on_a_terminal(tmp_path, fakes, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    fake = fakes()
    write_inputs(tmp_path, prompts=PROMPTS[:1])
    log = io.StringIO()
    # a slow safety-net poll: completion comes from the websocket, after every progress event was shown
    assert run(options(tmp_path, [fake], poll_interval=5.0), stream=log, tty=True).exit_code == 0
    text = log.getvalue()
    assert "\r[0/1 done, 0 failed] item 0 on 127.0.0.1:" in text
    assert ": node 4 (FlashVideoStage1Sampler)\r" in text and ": node 4 step 3/3\r" in text and "\n" not in text


@pytest.mark.parametrize("case, message", [
    ("missing prompts", "prompts file not found"),
    ("nul", "prompts.txt:3: contains a NUL byte"),
    ("latin-1", "prompts.txt:2: not valid UTF-8 (byte 0xe9 at column 4)"),
    ("comments only", "prompts.txt: no prompts"),
    ("missing workflow", "workflow not found"),
    ("not json", "workflow.json:1:2: not valid JSON"),
    ("ui workflow, no server", "checked against a server's node definitions (/object_info), and no server answered"),
    ("no text encode", "no FlashVideoTextEncode node"),
    ("bad target node", "--prompt-target '99.prompt': no node with that id, title or class_type"),
    ("bad target input", "node 2 (FlashVideoTextEncode) has no input 'text'"),
    ("bad set", "--set '4.steps': expected NODE.INPUT=VALUE"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, case, message):
    prompts_file, workflow_file = write_inputs(tmp_path)
    extra = []
    if case == "missing prompts":
        prompts_file.unlink()
    elif case == "nul":
        prompts_file.write_bytes(b"one\n\nthree\x00\n")
    elif case == "latin-1":
        prompts_file.write_bytes(b"fine\ncaf\xe9 au lait\n")
    elif case == "comments only":
        prompts_file.write_text("# nothing\n\n   \n# here\n")
    elif case == "missing workflow":
        workflow_file.unlink()
    elif case == "not json":
        workflow_file.write_text("{oops")
    elif case == "ui workflow, no server":
        workflow_file.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    elif case == "no text encode":
        workflow = json.loads(json.dumps({k: v for k, v in WORKFLOW.items() if k != "2"}))
        del workflow["4"]["inputs"]["positive"]
        workflow_file.write_text(json.dumps(workflow))
    elif case == "bad target node":
        extra = ["--prompt-target", "99.prompt"]
    elif case == "bad target input":
        extra = ["--prompt-target", "2.text"]
    elif case == "bad set":
        extra = ["--set", "4.steps"]
    code = main([str(prompts_file), "--workflow", str(workflow_file), "--server", "http://127.0.0.1:1",
                 "--output-dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing was started


def test_changed_inputs_refuse_to_resume_until_restart(tmp_path, fakes):
    fake = fakes()
    assert run_quiet(options(tmp_path, [fake])).exit_code == 0
    write_inputs(tmp_path, prompts=PROMPTS[:2])
    with pytest.raises(InputError, match="belongs to another batch.*new --output-dir.*--restart"):
        run_quiet(options(tmp_path, [fake]))
    with pytest.raises(InputError, match="seed_base 0 -> 5"):
        write_inputs(tmp_path)
        run_quiet(options(tmp_path, [fake], seed_base=5))
    write_inputs(tmp_path, prompts=PROMPTS[:2])
    # --restart keeps what is finished when its graph did not change: nothing is rendered twice ...
    summary = run_quiet(options(tmp_path, [fake], restart=True))
    assert summary.exit_code == 0 and len(fake.received) == 3 and "pass --rerender" in summary.log
    assert [i["status"] for i in manifest(tmp_path)["items"]] == ["done", "done"]
    # ... unless asked to
    assert run_quiet(options(tmp_path, [fake], restart=True, rerender=True)).exit_code == 0
    assert fake.texts() == PROMPTS + PROMPTS[:2]
    with pytest.raises(InputError, match="--rerender only goes with --restart"):
        run_quiet(options(tmp_path, [fake], rerender=True))


def test_command_line_module_runs_a_batch(tmp_path, fakes):
    fake = fakes()
    prompts_file, workflow_file = write_inputs(tmp_path, prompts=PROMPTS[:2])
    proc = subprocess.run(
        [sys.executable, "-m", "flashvideo_queue", str(prompts_file), "--workflow", str(workflow_file),
         "--server", fake.url, "--output-dir", str(tmp_path / "out"), "--seed-base", "7", "--set", "4.cfg=7.5",
         "--poll-interval", "0.05"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "2/2 done" in proc.stdout and "[2/2 done, 0 failed]" in proc.stderr
    assert [r["graph"]["4"]["inputs"]["seed"] for r in fake.received] == [7, 8]
    assert fake.received[0]["graph"]["4"]["inputs"]["cfg"] == 7.5
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 2


# -- UI workflows -----------------------------------------------------------------------------------------------------
EXAMPLES = REPO / "example_workflows"


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.json")))
def test_shipped_ui_templates_convert_to_their_api_twins(name):
    """With /object_info as the fake serves it (widget order from support/node_schemas.py, which
    tests/test_comfyui_real.py checks against real hosts; tests/test_queue_real_host.py uses the hosts' own)."""
    from support.fake_comfy_server import fake_object_info

    from flashvideo_queue.uigraph import convert

    ui = json.loads((EXAMPLES / f"{name}.json").read_text())
    assert convert(ui, fake_object_info(), name).graph == json.loads((EXAMPLES / "api" / f"{name}.json").read_text())


def ui_node(node_id, kind, values, inputs=(), mode=0, title=None, outputs=()):
    node = {"id": node_id, "type": kind, "mode": mode, "widgets_values": values,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": t, "type": t, "links": links} for t, links in outputs]}
    if title:
        node["title"] = title
    return node


INFO = {  # a hand-written /object_info in the shape ComfyUI serves it
    "Loader": {"input": {"required": {"name": [["a.pt", "b.pt"], {}]}}, "input_order": {"required": ["name"]},
               "display_name": "Loader"},
    "Sampler": {"input": {"required": {"model": ["MODEL", {}], "steps": ["INT", {"default": 5}],
                                       "seed": ["INT", {"control_after_generate": True}],
                                       "cfg": ["FLOAT", {}], "latent": ["LATENT", {"forceInput": True}]},
                          "optional": {"note": ["STRING", {}], "hidden_one": ["INT", {"hidden": True}]},
                          "hidden": {"prompt": "PROMPT"}},
                "input_order": {"required": ["model", "steps", "seed", "cfg", "latent"], "optional": ["note"]},
                "display_name": "My Sampler"},
    "Filter": {"input": {"required": {"model": ["MODEL", {}], "strength": ["FLOAT", {}]}},
               "input_order": {"required": ["model", "strength"]}, "display_name": "Filter"},
    "Empty": {"input": {"required": {"width": ["INT", {}]}}, "input_order": {"required": ["width"]},
              "display_name": "Empty"},
    "Save": {"input": {"required": {"latent": ["LATENT", {}], "filename_prefix": ["STRING", {}],
                                    "format": ["COMFY_DYNAMICCOMBO_V3", {"options": [
                                        {"key": "mp4", "inputs": {"required": {"codec": [["h264", "av1"], {}]},
                                                                  "optional": {"crf": ["FLOAT", {}]}}},
                                        {"key": "gif", "inputs": {}}]}]}},
             "input_order": {"required": ["latent", "filename_prefix", "format"]}, "display_name": "Save"},
}


def small_ui():
    """Loader -> Filter (bypassed) -> Reroute -> Sampler <- Empty; a PrimitiveNode feeds the sampler's cfg widget;
    a muted Filter feeds nothing; the sampler feeds Save."""
    nodes = [
        ui_node(1, "Loader", ["b.pt"], outputs=[("MODEL", [1])]),
        ui_node(2, "Filter", [0.5], inputs=[("model", "MODEL", 1)], mode=4, outputs=[("MODEL", [2])]),
        ui_node(3, "Reroute", [], inputs=[("", "*", 2)], outputs=[("MODEL", [3])]),
        ui_node(4, "Sampler", [7, 123, "randomize", 1.5, "a note"],
                inputs=[("model", "MODEL", 3), ("latent", "LATENT", 4), ("cfg", "FLOAT", 5)], title="Main sampler",
                outputs=[("LATENT", [6])]),
        ui_node(5, "Empty", [64], outputs=[("LATENT", [4])]),
        ui_node(6, "PrimitiveNode", [4.5, "fixed"], outputs=[("FLOAT", [5])]),
        ui_node(7, "Filter", [1.0], inputs=[("model", "MODEL", None)], mode=2),
        ui_node(8, "Save", ["out/x", "mp4", "av1"], inputs=[("latent", "LATENT", 6)]),
        ui_node(8, "Note", ["a note may share an id"]),
    ]
    nodes[3]["inputs"][2]["widget"] = {"name": "cfg"}
    links = [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 3, 0, 4, 0, "MODEL"],
             [4, 5, 0, 4, 1, "LATENT"], {"id": 5, "origin_id": 6, "origin_slot": 0, "target_id": 4, "target_slot": 2,
                                         "type": "FLOAT"}, [6, 4, 0, 8, 0, "LATENT"]]
    return {"nodes": nodes, "links": links, "version": 0.4}


def test_ui_conversion_handles_seeds_links_bypass_mute_reroute_primitives_and_dynamic_combos():
    from flashvideo_queue.uigraph import convert

    result = convert(small_ui(), INFO, "small.json")
    assert result.graph == {
        "1": {"class_type": "Loader", "inputs": {"name": "b.pt"}, "_meta": {"title": "Loader"}},
        "4": {"class_type": "Sampler", "_meta": {"title": "Main sampler"}, "inputs": {
            "steps": 7, "seed": 123, "cfg": 4.5, "note": "a note", "model": ["1", 0], "latent": ["5", 0]}},
        "5": {"class_type": "Empty", "inputs": {"width": 64}, "_meta": {"title": "Empty"}},
        "8": {"class_type": "Save", "inputs": {"filename_prefix": "out/x", "format": "mp4", "format.codec": "av1",
                                               "latent": ["4", 0]}, "_meta": {"title": "Save"}},
    }
    # what was submitted goes back into the UI copy: values in place, seed controls "fixed", the primitive too
    graph = json.loads(json.dumps(result.graph))
    graph["4"]["inputs"].update(seed=9, steps=3, cfg=2.0)
    graph["8"]["inputs"]["format.crf"] = 20.0
    nodes = {(n["id"], n["type"]): n for n in result.updated(graph)["nodes"]}
    assert nodes[(4, "Sampler")]["widgets_values"] == [3, 9, "fixed", 2.0, "a note"]
    assert nodes[(6, "PrimitiveNode")]["widgets_values"] == [2.0, "fixed"]
    assert nodes[(8, "Save")]["widgets_values"] == ["out/x", "mp4", "av1", 20.0]
    assert small_ui()["nodes"][3]["widgets_values"][2] == "randomize"  # the input is left alone


@pytest.mark.parametrize("change, message", [
    (lambda ui: ui["nodes"][0].update(type="Missing"), "node 1 (Missing): the server has no node type 'Missing'"),
    (lambda ui: ui["nodes"][3]["widgets_values"].__setitem__(0, "seven"),
     "node 4 'Main sampler' (Sampler): widget value 'seven' does not fit input 'steps' (INT: a whole number)"),
    (lambda ui: ui["nodes"][1]["inputs"][0].update(type="CLIP"),
     "node 2 (Filter) is bypassed but has no linked input of type MODEL"),
    (lambda ui: ui["nodes"][7]["widgets_values"].__setitem__(1, "webm"), "'webm' is not an option of 'format'"),
    (lambda ui: ui["nodes"].append(ui_node(5, "Empty", [1])), "two nodes have id 5"),
    (lambda ui: ui["nodes"][4].update(type="0a5d-subgraph") or ui.update(
        definitions={"subgraphs": [{"id": "0a5d-subgraph"}]}), "node 5 (0a5d-subgraph) is a subgraph"),
    (lambda ui: ui["links"].pop(), "node 8 (Save) input 'latent' uses link 6, which the workflow does not have"),
])
def test_ui_conversion_refuses_what_it_cannot_convert_naming_the_node_and_the_fix(change, message):
    from flashvideo_queue.uigraph import convert

    ui = small_ui()
    change(ui)
    with pytest.raises(InputError) as err:
        convert(ui, INFO, "small.json")
    assert message in str(err.value) and str(err.value).startswith("small.json: ")
    assert "Save (API)" in str(err.value) or "un-bypass" in str(err.value)


def test_batch_from_a_ui_workflow_sends_it_along_with_the_items_values(tmp_path, fakes):
    fake = fakes()
    write_inputs(tmp_path, prompts=PROMPTS[:2], workflow=json.loads((EXAMPLES / "flashvideo_1080p.json").read_text()))
    summary = run_quiet(options(tmp_path, [fake], seed_base=70, sets=["Stage II upscale (bridge).resolution=custom",
                                                                      "FlashVideoStage2Refiner.steps=4"]))
    assert summary.exit_code == 0, summary.report()
    twin = json.loads((EXAMPLES / "api" / "flashvideo_1080p.json").read_text())
    for i, received in enumerate(fake.received):
        graph = received["graph"]
        assert graph["10"]["inputs"]["resolution"] == "custom" and graph["12"]["inputs"]["steps"] == 4
        assert {k: v["class_type"] for k, v in graph.items()} == {k: v["class_type"] for k, v in twin.items()}
        ui = received["extra_data"]["extra_pnginfo"]["workflow"]
        nodes = {n["id"]: n for n in ui["nodes"] if n["type"] != "Note"}
        assert nodes[2]["widgets_values"] == [PROMPTS[i]]
        assert nodes[4]["widgets_values"][5:] == [70 + i, "fixed"]
        assert nodes[10]["widgets_values"][:5] == ["custom", 1920, 1072, 70 + i, "fixed"]
        assert nodes[11]["widgets_values"] == [675, 70 + i, "fixed"] and nodes[12]["widgets_values"][0] == 4
        assert nodes[15]["widgets_values"][0] == graph["15"]["inputs"]["filename_prefix"]
    api_fake = fakes()  # API input: nothing to send along (the server embeds the API prompt itself)
    other = tmp_path / "api"
    other.mkdir()
    write_inputs(other, prompts=PROMPTS[:1])
    assert run_quiet(options(other, [api_fake])).exit_code == 0 and api_fake.received[0]["extra_data"] is None


def test_nodes_are_addressed_by_id_title_or_class_type_and_ambiguity_is_refused(tmp_path):
    graph = json.loads((EXAMPLES / "api" / "flashvideo_1080p.json").read_text())
    sets = parse_sets(graph, ["Stage I model.attention=sdpa", "FlashVideoStage2Refiner.steps=5", "7.fps=16",
                              "Save preview (270p).format=mp4"])
    assert sets == [("3", "attention", "sdpa"), ("12", "steps", 5), ("7", "fps", 16), ("8", "format", "mp4")]
    assert parse_targets(graph, ["FlashVideoTextEncode.prompt"]) == [("2", "prompt")]
    with pytest.raises(InputError) as err:
        parse_sets(graph, ["FlashVideoVAEDecode.slicing=manual"])
    assert "is ambiguous" in str(err.value) and "node 6 (FlashVideoVAEDecode, 'Decode preview')" in str(err.value)
    assert "node 13 (FlashVideoVAEDecode, 'Decode refined')" in str(err.value) and "node id instead" in str(err.value)
    with pytest.raises(InputError, match="no node with that id, title or class_type.*12 \\(FlashVideoStage2Refiner\\)"):
        parse_sets(graph, ["Stage 2.steps=5"])


def test_help_examples_run_on_the_shipped_workflows(tmp_path, fakes, capsys):
    """Every example command in --help, pointed at a fake server, runs its batch to the end (``clips/``: a folder
    of two clips)."""
    import shlex

    from flashvideo_queue.cli import EPILOG

    fake = fakes()
    text = EPILOG.split("Examples")[1].split("Workflows:")[0].replace("\\\n", " ")
    commands = [shlex.split(line)[3:] for line in text.splitlines() if "python -m flashvideo_queue" in line]
    assert len(commands) >= 4 and any("--videos" in args for args in commands)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[0] + "\n")
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a.mp4", "b.mov"):
        (clips / name).write_bytes(b"\x00\x00\x00\x18ftypisom" + name.encode())

    def local(arg: str) -> str:
        return str(REPO / arg) if arg.startswith("example_workflows") else str(clips) if arg == "clips/" else arg

    for n, args in enumerate(commands):
        args = [a for i, a in enumerate(args) if a != "--server" and (i == 0 or args[i - 1] != "--server")]
        code = main([str(prompts), *[local(a) for a in args[1:]],
                     "--server", fake.url, "--output-dir", str(tmp_path / f"out{n}"), "--poll-interval", "0.05"])
        assert code == 0, (args, capsys.readouterr().err)
    assert len(fake.received) == len(commands) + 1  # the folder of two clips is two items
    assert [u["filename"].split("_")[0] for u in fake.uploads] == ["a", "b"]


# -- damaged or hostile manifests, local failures ------------------------------------------------------------------------
def test_manifest_missing_or_garbled_items_renders_them_and_never_reports_them_done(tmp_path, fakes):
    fake = fakes()
    assert run_quiet(options(tmp_path, [fake])).exit_code == 0
    data = manifest(tmp_path)
    data["items"] = [data["items"][0], dict(data["items"][2], status="finished")]  # item 1 lost, item 2 garbled
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(data))
    summary = run_quiet(options(tmp_path, [fake]))
    assert summary.exit_code == 0 and summary.skipped == 1, summary.report()
    assert fake.texts() == PROMPTS + PROMPTS[1:]
    assert "manifest item 1 (line 4): missing; rendering it" in summary.log
    assert "manifest item 2 (line 5): unknown status 'finished'" in summary.log
    assert [i["status"] for i in manifest(tmp_path)["items"]] == ["done"] * 3


def test_hostile_manifest_cannot_make_the_client_write_outside_the_output_folder(tmp_path, fakes):
    fake = fakes()
    assert run_quiet(options(tmp_path, [fake])).exit_code == 0
    out, data = tmp_path / "out", manifest(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for item, name in zip(data["items"][:2], ["../victim.txt", str(victim)]):
        (out / item["outputs"][0]).unlink()
        item["outputs"] = [name]
    third = data["items"][2]["outputs"][0]
    (out / third).unlink()  # to be downloaded again, through a link planted where the download is written first
    (out / f".{third}.part").symlink_to(victim)
    (out / "manifest.json").write_text(json.dumps(data))
    summary = run_quiet(options(tmp_path, [fake]))
    assert summary.exit_code == 0, summary.report()
    assert victim.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == [
        "out", "prompts.txt", "victim.txt", "workflow.json"]
    assert "output names are not plain file names" in summary.log
    assert (out / third).is_file() and not (out / third).is_symlink()
    assert fake.texts() == PROMPTS + PROMPTS[:2]  # the edited items rendered again, the third only downloaded


def test_read_only_output_folder_is_one_clear_line(tmp_path, capsys, monkeypatch, fakes):
    import errno
    import os

    fake = fakes()
    prompts_file, workflow_file = write_inputs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    real_open = os.open

    def read_only(path, *args, **kwargs):  # root ignores the mode bits: refuse like a read-only folder would
        if str(path).startswith(str(out)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    code = main([str(prompts_file), "--workflow", str(workflow_file), "--output-dir", str(out), "--server", fake.url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write in --output-dir {out}: Permission denied; make it writable" in err


def test_local_write_failure_stops_the_run_and_the_rerun_collects_without_rendering_again(tmp_path, fakes, monkeypatch):
    import flashvideo_queue.worker as worker_module

    fake = fakes()
    real_names = worker_module.local_names
    monkeypatch.setattr(worker_module, "local_names", lambda i, p, refs: ["0000_" + "x" * 300 + ".mp4"] * len(refs))
    summary = run_quiet(options(tmp_path, [fake]))
    assert summary.exit_code == 1 and "File name too long" in summary.local_error
    assert "stopped by a local error" in summary.report() and "server" not in summary.local_error.split(":")[0]
    assert "stopped responding" not in summary.log
    item = manifest(tmp_path)["items"][0]
    assert item["status"] == "running" and item["prompt_id"] == fake.received[0]["prompt_id"]
    assert len(fake.received) == 1  # the run stopped at once

    monkeypatch.setattr(worker_module, "local_names", real_names)
    summary = run_quiet(options(tmp_path, [fake]))
    assert summary.exit_code == 0 and "collected prompt" in summary.log
    assert fake.texts() == PROMPTS  # item 0 was collected from the server, not rendered again


def test_output_folder_deleted_mid_run_loses_no_item(tmp_path, fakes):
    import shutil

    hold = threading.Event()
    fake = fakes(hold=hold)
    write_inputs(tmp_path, prompts=PROMPTS[:2])
    thread, log, result = start_in_thread(options(tmp_path, [fake]))
    wait_for(lambda: fake.received)
    shutil.rmtree(tmp_path / "out")
    hold.set()
    thread.join(20)
    assert result["summary"].exit_code == 0, log.getvalue()
    assert [i["status"] for i in manifest(tmp_path)["items"]] == ["done", "done"]
    again = run_quiet(options(tmp_path, [fake]))
    assert again.exit_code == 0 and fake.texts() == PROMPTS[:2]
    assert all((tmp_path / "out" / n).is_file() for i in manifest(tmp_path)["items"] for n in i["outputs"])


@pytest.mark.parametrize("url", ["http://[::1", "http://host:99999", "ftp://host:8188", "http://", "http://a b:8188",
                                 "host:80/?x=1", "127.0.0.1:abc", "http://host:0", "http://ünï:8188"])
def test_invalid_server_url_is_one_clear_line(tmp_path, capsys, url):
    prompts_file, workflow_file = write_inputs(tmp_path)
    code = main([str(prompts_file), "--workflow", str(workflow_file), "--server", url,
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"flashvideo_queue: error: --server {url!r}: ") and err.count("\n") == 1, err
    assert "http://HOST:PORT" in err


def test_usage_errors_are_one_line(capsys):
    assert main(["prompts.txt"]) == 2
    err = capsys.readouterr().err
    assert err == "flashvideo_queue: error: the following arguments are required: --workflow (see --help)\n"
    assert main(["p.txt", "--workflow", "w.json", "--retries", "-1"]) == 2
    assert capsys.readouterr().err == "flashvideo_queue: error: --retries -1: must be a whole number >= 0\n"
    for flag, value in (("--timeout", "nan"), ("--poll-interval", "inf"), ("--server-grace", "-inf")):
        assert main(["p.txt", "--workflow", "w.json", f"{flag}={value}"]) == 2  # NaN passes every comparison
        assert capsys.readouterr().err == (f"flashvideo_queue: error: {flag} {float(value)!r}: must be a finite "
                                           f"number of seconds {'>= 0' if flag == '--server-grace' else '> 0'}\n")


def test_restart_collects_a_prompt_still_running_instead_of_resubmitting_it(tmp_path, fakes):
    hold, stop = threading.Event(), threading.Event()
    fake = fakes(hold=hold)
    write_inputs(tmp_path, prompts=PROMPTS[:1])
    thread, _, result = start_in_thread(options(tmp_path, [fake]), stop)
    wait_for(lambda: fake.received)
    stop.set()
    thread.join(10)
    assert result["summary"].exit_code == 130
    write_inputs(tmp_path, prompts=PROMPTS[:2])  # inputs changed: only --restart may go on in this folder
    thread, log, result = start_in_thread(options(tmp_path, [fake], restart=True))
    wait_for(lambda: "is still on" in log.getvalue())
    hold.set()
    thread.join(10)
    assert result["summary"].exit_code == 0, log.getvalue()
    assert fake.texts() == PROMPTS[:2]  # item 0 collected, not submitted a second time
    assert manifest(tmp_path)["items"][0]["prompt_id"] == fake.received[0]["prompt_id"]


@pytest.mark.parametrize("answer", [b"[1, 2]", b'"text"', b"7", b'{"p1": [1]}', b'{"queue_running": {"a": 1}}'])
def test_malformed_server_answers_are_http_errors_naming_the_path(monkeypatch, answer):
    from flashvideo_queue.client import ComfyClient, history_error
    from flashvideo_queue.errors import HttpError
    from flashvideo_queue.outputs import collect_outputs

    client = ComfyClient("http://127.0.0.1:1")
    monkeypatch.setattr(client, "request", lambda *a, **k: (200, answer))
    calls = {"/history/p1": lambda: client.history("p1"), "/queue": client.queued_ids,
             "/system_stats": client.system_stats}
    for path, call in calls.items():
        try:
            result = call()
        except HttpError as e:  # refused: the message names the route and the cause
            assert path in str(e) and "ComfyUI" in str(e), e
        else:  # or read as "nothing there", never a wrong type handed on
            assert result in (None, {}, (set(), set())) or isinstance(result, dict), result
    # history entries of the wrong shape: a reason, no output files, no AttributeError
    for entry in ({"status": [1]}, {"status": {"messages": "x"}}, {"outputs": [1]}, {"outputs": {"9": [1]}}):
        assert isinstance(history_error(entry), str) and collect_outputs(entry) == []
