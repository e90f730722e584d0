"""An in-process stand-in for ComfyUI's HTTP and websocket API (docs/HOST.md#http-api), for testing flashvideo_queue
without a GPU or a ComfyUI checkout.

It serves /prompt, /ws, /history/{id}, /queue, /interrupt, /view, /upload/image (multipart, parsed with the
standard library's email package: not the client's encoder), /system_stats and /object_info (built from
support/node_schemas.py, whose orders tests/test_comfyui_real.py checks against real hosts) on 127.0.0.1:<free port>,
runs queued prompts one at a time in a background thread (execution_start, executing per node, progress with
binary previews, executed, then executing with node None, history written first as ComfyUI does), records
every graph it receives, and writes a fake mp4 per save node. The websocket side is its own small server
implementation (not the client's codec), so the two check each other.

Misbehaviour on request; predicates take (prompt_text, times_this_text_was_submitted):
  reject=...        400 with error + node_errors
  node_errors=...   200 that carries node_errors (not run)
  exec_error=...    execution_error at the first node with a seed input
  die_after=N       after N finished prompts, die while running the next: listener and sockets closed
  drop_ws=True      close every websocket when a prompt starts (the client must fall back to polling)
  hold=Event        each prompt waits for the event before it starts
  upload_status=N   /upload/image answers HTTP N (e.g. 413) instead of storing the file
  upload_rename=s   /upload/image stores the file as "<s><name>" and answers that name (the client must use it)
A graph whose LoadVideo ``file`` names no uploaded file is rejected as ComfyUI's validation does; a saved
"video" holds the prompt text and the sha256 of the LoadVideo file it read, so a test can tell which input made it.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qs, unquote, urlsplit

Predicate = Union[bool, Callable[[str, int], bool], None]
REPO = Path(__file__).resolve().parents[2]


def fake_object_info() -> dict:
    """/object_info for every node the shipped templates use, in the ComfyUI 0.3.64 form: widget order from
    support/node_schemas.py (a CONTROL slot becomes control_after_generate on the widget before it), widget
    types from the values the templates store (combos as STRING: the client does not check options), outputs of the
    pack's nodes."""
    from support.node_schemas import (CONTROL, CORE_SOCKETS, CORE_WIDGETS, FROZEN_OUTPUTS, FROZEN_SOCKETS,
                                      FROZEN_WIDGETS)

    kinds: dict[tuple[str, str], str] = {}
    for path in sorted((REPO / "example_workflows").glob("*.json")):
        for node in json.loads(path.read_text())["nodes"]:
            names = [n for n in {**FROZEN_WIDGETS, **CORE_WIDGETS}.get(node["type"], [])]
            for name, value in zip(names, node.get("widgets_values") or []):
                kind = ("BOOLEAN" if isinstance(value, bool) else "INT" if isinstance(value, int)
                        else "FLOAT" if isinstance(value, float) else "STRING")
                kinds.setdefault((node["type"], name), kind)
    info = {}
    for node_type, widgets in {**FROZEN_WIDGETS, **CORE_WIDGETS}.items():
        required: dict[str, list] = {}
        for name, kind in {**FROZEN_SOCKETS, **CORE_SOCKETS}.get(node_type, []):
            required[name] = [kind, {}]
        for name in widgets:
            if name == CONTROL:
                last = [k for k in required if required[k][0] != "*"][-1]
                required[last][1]["control_after_generate"] = True
            else:
                required[name] = [kinds.get((node_type, name), "STRING"), {}]
        info[node_type] = {"input": {"required": required}, "input_order": {"required": list(required)},
                           "name": node_type, "display_name": node_type, "output_node": node_type == "SaveVideo"}
        if node_type in FROZEN_OUTPUTS:  # the pack's outputs: links to a slot a node lacks are refused
            info[node_type]["output"] = list(FROZEN_OUTPUTS[node_type])
    return info

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PREVIEW = struct.pack(">II", 1, 1) + b"\xff\xd8\xff\xe0fake-jpeg-preview"


def FLAKY(text: str, seen: int) -> bool:  # noqa: N802 (a constant-like predicate)
    """Fails the first attempt of every prompt."""
    return seen == 1


class _WsConn:
    """Server side of one websocket: unmasked frames out, masked frames in."""

    def __init__(self, sock: socket.socket):
        self.sock, self.lock, self.open = sock, threading.Lock(), True

    def send(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        n = len(payload)
        first = (0x80 if fin else 0) | opcode
        head = bytes([first, n]) if n < 126 else (bytes([first, 126]) + n.to_bytes(2, "big") if n < 65536
                                                 else bytes([first, 127]) + n.to_bytes(8, "big"))
        with self.lock:
            if self.open:
                try:
                    self.sock.sendall(head + payload)
                except OSError:
                    self.open = False

    def send_json(self, obj: Any, fragmented: bool = False) -> None:
        data = json.dumps(obj).encode()
        if fragmented and len(data) > 2:  # only the executor thread sends data frames: fragments stay together
            half = len(data) // 2
            self.send(0x1, data[:half], fin=False)
            self.send(0x0, data[half:])
        else:
            self.send(0x1, data)

    @staticmethod
    def read_frame(rfile) -> Optional[tuple[int, bytes]]:
        head = rfile.read(2)
        if len(head) < 2:
            return None
        assert head[1] & 0x80, "client frames must be masked (RFC 6455 5.1)"
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(rfile.read(2), "big")
        elif n == 127:
            n = int.from_bytes(rfile.read(8), "big")
        mask = rfile.read(4)
        data = rfile.read(n)
        return head[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))

    def kill(self) -> None:
        with self.lock:
            self.open = False
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


class FakeComfy:
    def __init__(self, *, steps: int = 3, step_delay: float = 0.002, reject: Predicate = None,
                 node_errors: Predicate = None, exec_error: Predicate = None, die_after: Optional[int] = None,
                 drop_ws: bool = False, hold: Optional[threading.Event] = None, ping: bool = True,
                 upload_status: Optional[int] = None, upload_rename: str = ""):
        self.upload_status, self.upload_rename = upload_status, upload_rename
        self.uploads: list[dict[str, Any]] = []  # every POST /upload/image: fields, filename, size, sha256, headers
        self.steps, self.step_delay = steps, step_delay
        self.reject, self.node_errors_for, self.exec_error = reject, node_errors, exec_error
        self.die_after, self.drop_ws, self.hold, self.ping = die_after, drop_ws, hold, ping
        self.received: list[dict[str, Any]] = []  # every POST /prompt: prompt_id, client_id, graph, text
        self.history: dict[str, dict] = {}
        self.queue: deque = deque()
        self.running: Optional[tuple] = None
        self.completed = 0
        self.interrupts: list[dict] = []
        self.deleted: list[str] = []
        self.views: list[str] = []
        self.pongs: list[bytes] = []
        self.client_closes = 0
        self.dead = False
        self.out_dir = Path(tempfile.mkdtemp(prefix="fake_comfy_"))
        self.in_dir = self.out_dir / "_input"
        self.object_info = fake_object_info()
        self._seen: Counter = Counter()
        self._number = 0
        self._sockets: dict[str, _WsConn] = {}
        self._cond = threading.Condition()
        self._httpd: Optional[ThreadingHTTPServer] = None

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    def start(self) -> "FakeComfy":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        threading.Thread(target=self._executor, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def die(self) -> None:
        """Stop like a crashed server: no listener (connection refused), every websocket dropped."""
        with self._cond:
            if self.dead:
                return
            self.dead = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        for conn in list(self._sockets.values()):
            conn.kill()

    def stop(self) -> None:
        if not self.dead:
            self.die()
        shutil.rmtree(self.out_dir, ignore_errors=True)

    def __enter__(self) -> "FakeComfy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def texts(self) -> list[str]:
        return [r["text"] for r in self.received]

    # -- HTTP routes --------------------------------------------------------------------------------------------------
    @staticmethod
    def _matches(predicate: Predicate, text: str, seen: int) -> bool:
        return bool(predicate(text, seen) if callable(predicate) else predicate)

    def post_prompt(self, body: dict) -> tuple[int, dict]:
        graph, client_id = body.get("prompt") or {}, body.get("client_id")
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        text = next((n["inputs"].get("prompt", "") for n in graph.values()
                     if n.get("class_type") == "FlashVideoTextEncode"), "")
        with self._cond:
            self._seen[text] += 1
            seen = self._seen[text]
            self.received.append({"prompt_id": prompt_id, "client_id": client_id, "graph": graph, "text": text,
                                  "extra_data": body.get("extra_data")})
        node_errors = {"3": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                         "details": "model_name: 'stage1.pt' not in ['other.pt']", "extra_info": {}}],
                             "dependent_outputs": ["8"], "class_type": "FlashVideoModelLoader"}}
        missing = {n: node["inputs"].get("file") for n, node in graph.items() if node.get("class_type") == "LoadVideo"
                   and self.input_sha256(str(node["inputs"].get("file"))) is None}
        if missing:  # as ComfyUI's LoadVideo.validate_inputs
            return 400, {"error": {"type": "prompt_outputs_failed_validation", "message":
                                   "Prompt outputs failed validation", "details": "", "extra_info": {}},
                         "node_errors": {n: {"errors": [{"type": "custom_validation_failed", "message":
                                                         f"Invalid video file: {f}", "details": ""}],
                                             "class_type": "LoadVideo"} for n, f in missing.items()}}
        if self._matches(self.reject, text, seen):
            return 400, {"error": {"type": "prompt_outputs_failed_validation", "message":
                                   "Prompt outputs failed validation", "details": "", "extra_info": {}},
                         "node_errors": node_errors}
        with self._cond:
            self._number += 1
            if self._matches(self.node_errors_for, text, seen):
                return 200, {"prompt_id": prompt_id, "number": self._number, "node_errors": node_errors}
            self.queue.append((self._number, prompt_id, graph, client_id, text, seen))
            self._cond.notify_all()
        return 200, {"prompt_id": prompt_id, "number": self._number, "node_errors": {}}

    def post_upload(self, content_type: str, body: bytes, headers: dict) -> tuple[int, Union[dict, bytes]]:
        """ComfyUI's /upload/image as the tests need it: store the ``image`` part under input/<subfolder>/<name>
        and answer {name, subfolder, type}."""
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields, upload = {}, None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename() is not None:
                upload = (name, part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
            else:
                fields[name] = part.get_payload(decode=True).decode()
        record = {"fields": fields, "headers": headers, "field": upload and upload[0],
                  "filename": upload and upload[1], "content_type": upload and upload[2],
                  "size": upload and len(upload[3]), "sha256": upload and hashlib.sha256(upload[3]).hexdigest()}
        self.uploads.append(record)
        if self.upload_status is not None:
            return self.upload_status, b"refused (fake)"
        if upload is None or upload[0] != "image" or fields.get("type", "input") != "input":
            return 400, b""
        name = self.upload_rename + upload[1]
        folder = self.in_dir / fields.get("subfolder", "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(upload[3])
        return 200, {"name": name, "subfolder": fields.get("subfolder", ""), "type": "input"}

    def input_sha256(self, reference: str) -> Optional[str]:
        """The sha256 of an uploaded file by its LoadVideo reference (``subfolder/name``), None if absent."""
        path = self.in_dir / reference
        return hashlib.sha256(path.read_bytes()).hexdigest() if ".." not in reference and path.is_file() else None

    def queue_state(self) -> dict:
        def item(q: tuple) -> list:
            return [q[0], q[1], q[2], {"client_id": q[3]}, []]

        with self._cond:
            return {"queue_running": [item(self.running)] if self.running else [],
                    "queue_pending": [item(q) for q in self.queue]}

    def post_queue(self, body: dict) -> None:
        with self._cond:
            for prompt_id in body.get("delete", []):
                self.deleted.append(prompt_id)
                for q in list(self.queue):
                    if q[1] == prompt_id:
                        self.queue.remove(q)

    # -- execution ----------------------------------------------------------------------------------------------------
    def _send(self, client_id: Optional[str], kind: str, data: dict, fragmented: bool = False) -> None:
        conn = self._sockets.get(client_id or "")
        if conn is not None:
            conn.send_json({"type": kind, "data": data}, fragmented)

    def _executor(self) -> None:
        while True:
            with self._cond:
                while not self.queue and not self.dead:
                    self._cond.wait()
                if self.dead:
                    return
                self.running = self.queue.popleft()
            _, prompt_id, graph, client_id, text, seen = self.running
            if self.hold is not None:
                while not self.hold.wait(0.05) and not self.dead:
                    pass
            if self.dead:
                return
            self._execute(prompt_id, graph, client_id, text, seen)
            with self._cond:
                self.running = None

    def _execute(self, prompt_id: str, graph: dict, client_id: Optional[str], text: str, seen: int) -> None:
        messages: list = []

        def event(kind: str, data: dict) -> None:
            messages.append([kind, data])
            self._send(client_id, kind, data)

        if self.drop_ws:
            for conn in list(self._sockets.values()):
                conn.kill()
        event("execution_start", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        event("execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        outputs: dict[str, dict] = {}
        failing = self._matches(self.exec_error, text, seen)
        status = "success"
        for node_id in sorted(graph, key=lambda n: (len(n), n)):
            node = graph[node_id]
            inputs = node.get("inputs", {})
            self._send(client_id, "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
            if "steps" in inputs:
                for value in range(1, self.steps + 1):
                    time.sleep(self.step_delay)
                    self._send(client_id, "progress", {"value": value, "max": self.steps, "prompt_id": prompt_id,
                                                       "node": node_id})
                    conn = self._sockets.get(client_id or "")
                    if conn is not None:
                        conn.send(0x2, PREVIEW)
                if self.die_after is not None and self.completed >= self.die_after:
                    self.die()
                    return
            if failing and "seed" in inputs:
                event("execution_error", {
                    "prompt_id": prompt_id, "node_id": node_id, "node_type": node["class_type"], "executed": [],
                    "exception_message": "CUDA out of memory. Tried to allocate 20.00 GiB (fake)",
                    "exception_type": "torch.OutOfMemoryError", "traceback": ["fake"], "current_inputs": {},
                    "current_outputs": {}})
                status = "error"
                break
            prefix = inputs.get("filename_prefix")
            if isinstance(prefix, str):
                read = [self.input_sha256(str(n["inputs"].get("file"))) for n in graph.values()
                        if n.get("class_type") == "LoadVideo"]
                ref = self._write_video(prefix, f"{text}|{prompt_id}" + "".join(f"|video={h}" for h in read))
                outputs[node_id] = {"images": [ref], "animated": [True]}
                self._send(client_id, "executed", {"node": node_id, "display_node": node_id,
                                                   "output": outputs[node_id], "prompt_id": prompt_id},
                           fragmented=True)
        if status == "success":
            event("execution_success", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        with self._cond:
            self.history[prompt_id] = {
                "prompt": [0, prompt_id, graph, {"client_id": client_id}, list(outputs)],
                "outputs": outputs if status == "success" else {},
                "status": {"status_str": status, "completed": status == "success", "messages": messages},
                "meta": {}}
            self.completed += 1
        self._send(client_id, "executing", {"node": None, "display_node": None, "prompt_id": prompt_id})

    def _write_video(self, prefix: str, content: str) -> dict[str, str]:
        subfolder, name = os.path.dirname(os.path.normpath(prefix)), os.path.basename(os.path.normpath(prefix))
        folder = self.out_dir / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        counter = len(list(folder.glob(f"{name}_*_.mp4"))) + 1
        filename = f"{name}_{counter:05d}_.mp4"
        (folder / filename).write_bytes(b"\x00\x00\x00\x18ftypmp42" + content.encode())
        return {"filename": filename, "subfolder": subfolder, "type": "output"}

    # -- websocket ----------------------------------------------------------------------------------------------------
    def serve_ws(self, handler: BaseHTTPRequestHandler, client_id: str) -> None:
        key = handler.headers.get("Sec-WebSocket-Key", "")
        if handler.headers.get("Upgrade", "").lower() != "websocket" or not key:
            handler.send_error(400, "expected a websocket upgrade")
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        conn = _WsConn(handler.connection)
        with conn.lock:  # events from the executor must not overtake the handshake
            self._sockets[client_id] = conn
            conn.sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        conn.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": len(self.queue)}},
                                                   "sid": client_id}})
        if self.ping:
            conn.send(0x9, b"are-you-there")
        try:
            while (frame := conn.read_frame(handler.rfile)) is not None:
                opcode, payload = frame
                if opcode == 0xA:
                    self.pongs.append(payload)
                elif opcode == 0x8:
                    self.client_closes += 1
                    conn.send(0x8, payload[:2])
                    break
        except (OSError, ValueError):
            pass
        finally:
            if self._sockets.get(client_id) is conn:
                del self._sockets[client_id]
            conn.kill()
        handler.close_connection = True


def _handler(fake: FakeComfy) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def reply(self, status: int, body: Union[dict, bytes], content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            if url.path == "/ws":
                fake.serve_ws(self, query.get("clientId") or uuid.uuid4().hex)
            elif url.path == "/object_info":
                self.reply(200, fake.object_info)
            elif url.path == "/system_stats":
                self.reply(200, {"system": {"os": "fake", "comfyui_version": "0.0-fake"}, "devices": []})
            elif url.path.startswith("/history/"):
                prompt_id = unquote(url.path[len("/history/"):])
                entry = fake.history.get(prompt_id)
                self.reply(200, {prompt_id: entry} if entry else {})
            elif url.path == "/queue":
                self.reply(200, fake.queue_state())
            elif url.path == "/view":
                path = fake.out_dir / query.get("subfolder", "") / os.path.basename(query.get("filename", ""))
                fake.views.append(query.get("filename", ""))
                if query.get("type") == "output" and path.is_file():
                    self.reply(200, path.read_bytes(), "video/mp4")
                else:
                    self.reply(404, b"not found", "text/plain")
            else:
                self.reply(404, {"error": "no such route"})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = urlsplit(self.path).path
            if path == "/upload/image":
                self.reply(*fake.post_upload(self.headers.get("Content-Type", ""), raw, dict(self.headers)))
                return
            body = json.loads(raw or b"{}")
            if path == "/prompt":
                self.reply(*fake.post_prompt(body))
            elif path == "/queue":
                fake.post_queue(body)
                self.reply(200, {})
            elif path == "/interrupt":
                fake.interrupts.append(body)
                self.reply(200, {})
            else:
                self.reply(404, {"error": "no such route"})

    return Handler
