"""flashvideo_queue against an in-process fake ComfyUI (tests/support/fake_comfy_server.py): substitution,
downloads and manifest, server errors and bounded retries, resume after a crash or Ctrl-C, dying and
unreachable servers, input errors, two servers, and the websocket codec byte for byte (RFC 6455 examples)."""

from __future__ import annotations

import ast
import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flashvideo_queue import InputError, Options, run
from flashvideo_queue.cli import main
from flashvideo_queue.outputs import collect_outputs, local_names, slug
from flashvideo_queue.websocket import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, WebSocket,
                                        WebSocketClosed, WebSocketError, accept_key, decode_frame, encode_frame)
from flashvideo_queue.workflow import Plan, load_workflow, parse_sets, parse_targets
from support.fake_comfy_server import FLAKY, FakeComfy

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


@pytest.fixture
def fakes():
    """Factory for fake servers, all stopped at the end."""
    started = []

    def make(**kwargs) -> FakeComfy:
        fake = FakeComfy(**kwargs).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


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


def run_quiet(opts: Options, **kwargs):
    log = io.StringIO()
    summary = run(opts, stream=log, tty=False, **kwargs)
    summary.log = log.getvalue()
    return summary


def manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "manifest.json").read_text("utf-8"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the websocket codec (RFC 6455 section 5.7 examples) ---------------------------------------------------------------
def test_frame_encoding_matches_the_rfc_examples():
    assert encode_frame(OP_TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    masked = bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(OP_TEXT, b"Hello", mask=bytes.fromhex("37fa213d")) == masked
    assert decode_frame(masked) == (decode_frame(bytes.fromhex("810548656c6c6f"))[0], 11)
    assert decode_frame(masked)[0].payload == b"Hello"
    assert encode_frame(OP_BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")  # 16-bit length
    assert encode_frame(OP_BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")  # 64-bit length
    assert encode_frame(OP_PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("mask", [None, b"\x01\x80\xfe\x7f"])
def test_frame_round_trip_and_incomplete_buffers(size, mask):
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = encode_frame(OP_BINARY, payload, mask=mask, fin=False)
    header = 2 + (0 if size < 126 else 2 if size < 65536 else 8) + (4 if mask else 0)
    assert len(frame) == header + size and frame[1] & 0x80 == (0x80 if mask else 0)
    if mask and size:
        assert frame[header:] != payload
    decoded, used = decode_frame(frame + b"next")
    assert (decoded.fin, decoded.opcode, decoded.payload, used) == (False, OP_BINARY, payload, len(frame))
    for cut in {0, 1, header - 1, len(frame) - 1} - {len(frame)}:
        if 0 <= cut < len(frame):
            assert decode_frame(frame[:cut]) is None


def test_bad_frames_are_rejected():
    with pytest.raises(WebSocketError, match="reserved"):
        decode_frame(b"\xc1\x00")
    with pytest.raises(WebSocketError, match="control"):
        decode_frame(bytes([0x89, 126, 0, 200]) + bytes(200))
    with pytest.raises(WebSocketError, match="opcode"):
        decode_frame(b"\x83\x00")
    with pytest.raises(WebSocketError, match="limit"):
        decode_frame(encode_frame(OP_BINARY, bytes(100)), max_payload=10)


def test_websocket_reassembles_fragments_answers_pings_and_closes():
    ours, theirs = socket.socketpair()
    ws = WebSocket(ours)
    theirs.sendall(encode_frame(OP_TEXT, b'{"type": ', fin=False) + encode_frame(OP_PING, b"hb")
                   + encode_frame(OP_CONT, b'"executing"}') + encode_frame(OP_BINARY, b"\x00\x00\x00\x01jpeg"))
    assert ws.recv(1.0) == '{"type": "executing"}'
    assert ws.recv(1.0) == b"\x00\x00\x00\x01jpeg"
    theirs.settimeout(1.0)
    pong, _ = decode_frame(theirs.recv(100))  # decode_frame unmasks: the client masked it
    assert (pong.opcode, pong.payload) == (OP_PONG, b"hb")
    assert ws.recv(0.05) is None  # timeout, nothing lost
    theirs.sendall(encode_frame(OP_CLOSE, struct.pack("!H", 1001) + b"bye"))
    with pytest.raises(WebSocketClosed, match="1001"):
        ws.recv(1.0)
    reply, _ = decode_frame(theirs.recv(100))
    assert reply.opcode == OP_CLOSE and reply.payload == struct.pack("!H", 1001)
    theirs.close()


def test_package_uses_the_standard_library_only():
    for path in (REPO / "flashvideo_queue").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] in sys.stdlib_module_names, f"{path.name} imports {name}"


# -- graph substitution and naming ------------------------------------------------------------------------------------
def test_plan_puts_prompt_seeds_prefix_and_overrides_in_a_copy(tmp_path):
    workflow = json.loads(json.dumps(WORKFLOW))
    workflow["9"] = {"class_type": "FlashVideoVAEEncode", "inputs": {"images": ["6", 0], "seed": ["10", 0]}}
    write_inputs(tmp_path, workflow=workflow)
    graph, _ = load_workflow(tmp_path / "workflow.json")
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
    ("ui workflow", "this is a UI workflow; use the API twin under example_workflows/api/ or Export (API)"),
    ("no text encode", "no FlashVideoTextEncode node"),
    ("bad target node", "--prompt-target '99.prompt': no node '99'"),
    ("bad target input", "node 2 (FlashVideoTextEncode) has no input 'text'"),
    ("bad set", "--set '4.steps': expected NODE_ID.INPUT=VALUE"),
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
    elif case == "ui workflow":
        workflow_file.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    elif case == "no text encode":
        workflow_file.write_text(json.dumps({k: v for k, v in WORKFLOW.items() if k != "2"}))
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
    assert run_quiet(options(tmp_path, [fake], restart=True)).exit_code == 0 and len(fake.received) == 5


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
