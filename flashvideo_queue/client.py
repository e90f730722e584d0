"""ComfyUI's HTTP API (COMFYUI.md §11) over the standard library's http.client, plus its ``/ws`` event stream.

One connection per call and no proxy lookup: calls are rare (a submit, a few polls, the downloads) and a
proxy variable meant for the internet must not capture a render node on the LAN. Connection-level failures
become ServerUnreachable; unexpected statuses become HttpError; the caller decides what each means.
"""

from __future__ import annotations

import http.client
import json
import os
import uuid
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote, urlencode, urlsplit

from .errors import HttpError, InputError, ItemFailed, ServerUnreachable
from .websocket import WebSocket


def normalize_server(url: str) -> str:
    """``host:port`` or ``http(s)://host:port[/prefix]`` → ``http(s)://host:port[/prefix]`` (no trailing slash)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--server {url!r}: expected http://HOST:PORT")
    try:
        _ = parts.port
    except ValueError:
        raise InputError(f"--server {url!r}: bad port") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class ComfyClient:
    """One ComfyUI server as seen by one worker (``client_id`` is that worker's websocket session)."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base = normalize_server(base_url)
        parts = urlsplit(self.base)
        self.secure = parts.scheme == "https"
        self.host, self.port = parts.hostname or "", parts.port or (443 if self.secure else 80)
        self.prefix = parts.path
        self.label = parts.netloc
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.secure else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout or self.timeout)

    def request(self, method: str, path: str, payload: Any = None, timeout: Optional[float] = None,
                sink: Optional[Path] = None) -> tuple[int, bytes]:
        """(status, body); with ``sink`` a 200 body is streamed to that file (atomically) instead."""
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn = self._connection(timeout)
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            if sink is None or response.status != 200:
                return response.status, response.read()
            part = sink.with_name(f".{sink.name}.part")
            with open(part, "wb") as f:
                while chunk := response.read(1 << 20):
                    try:
                        f.write(chunk)
                    except OSError as e:  # a full disk is not the server's fault
                        raise ItemFailed(f"cannot write {part}: {e.strerror or e}") from e
            os.replace(part, sink)
            return 200, b""
        except (OSError, http.client.HTTPException) as e:
            raise ServerUnreachable(str(e) or type(e).__name__) from e
        finally:
            conn.close()

    def _json(self, method: str, path: str, payload: Any = None, timeout: Optional[float] = None,
              ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        status, data = self.request(method, path, payload, timeout)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode("utf-8", "replace")
        if status not in ok:
            raise HttpError(method, path, status, parsed)
        return status, parsed

    def system_stats(self, timeout: Optional[float] = None) -> dict:
        return self._json("GET", "/system_stats", timeout=timeout)[1]

    def queue_prompt(self, graph: dict, prompt_id: str) -> tuple[int, Any]:
        """POST /prompt with our own prompt_id (recorded before sending, so a crash cannot lose track of it)."""
        payload = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        return self._json("POST", "/prompt", payload, ok=(200, 400))

    def history(self, prompt_id: str) -> Optional[dict]:
        """The finished prompt's history entry, or None while it is queued, running or unknown."""
        entries = self._json("GET", f"/history/{quote(prompt_id, safe='')}")[1] or {}
        return entries.get(prompt_id)

    def queued_ids(self) -> tuple[set[str], set[str]]:
        """(running, pending) prompt ids; queue items are [number, prompt_id, prompt, extra_data, outputs]."""
        queue = self._json("GET", "/queue")[1] or {}

        def ids(key: str) -> set[str]:
            return {item[1] for item in queue.get(key, []) if isinstance(item, list) and len(item) > 1}

        return ids("queue_running"), ids("queue_pending")

    def knows(self, prompt_id: str) -> bool:
        running, pending = self.queued_ids()
        return prompt_id in running or prompt_id in pending or self.history(prompt_id) is not None

    def cancel(self, prompt_id: str) -> None:
        """Stop ``prompt_id`` only: delete it if pending, interrupt it if running (never someone else's prompt)."""
        running, pending = self.queued_ids()
        if prompt_id in pending:
            self._json("POST", "/queue", {"delete": [prompt_id]})
        if prompt_id in running:
            self._json("POST", "/interrupt", {"prompt_id": prompt_id})

    def download(self, ref: dict[str, str], dest: Path) -> None:
        query = urlencode({"filename": ref["filename"], "subfolder": ref.get("subfolder", ""),
                           "type": ref.get("type", "output")})
        status, body = self.request("GET", f"/view?{query}", sink=dest, timeout=max(self.timeout, 120))
        if status != 200:
            raise HttpError("GET", f"/view?{query}", status, body.decode("utf-8", "replace"))

    def ws_url(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.label}{self.prefix}/ws?clientId={self.client_id}"

    def open_ws(self, timeout: Optional[float] = None) -> WebSocket:
        return WebSocket.connect(self.ws_url(), timeout or self.timeout)


def describe_rejection(body: Any) -> str:
    """A readable message from a /prompt 400 (or a 200 with node_errors): the error plus each node's errors."""
    if not isinstance(body, dict):
        return str(body)[:500]
    parts = []
    error = body.get("error")
    if isinstance(error, dict):
        message, details = error.get("message") or error.get("type") or "error", error.get("details")
        parts.append(f"{message}: {details}" if details else str(message))
    elif error:
        parts.append(str(error))
    for node_id, node in (body.get("node_errors") or {}).items():
        errors = node.get("errors") if isinstance(node, dict) else None
        for err in errors or [node]:
            text = err.get("message", "error") if isinstance(err, dict) else str(err)
            details = err.get("details") if isinstance(err, dict) else None
            parts.append(f"node {node_id} ({node.get('class_type', '?') if isinstance(node, dict) else '?'}): "
                         f"{text}{': ' + details if details else ''}")
    return "; ".join(parts) or json.dumps(body)[:500]


def describe_execution_error(data: dict) -> str:
    """An ``execution_error`` payload (websocket or history) as 'NodeType (node N): ExceptionType: message'."""
    kind = data.get("exception_type") or "error"
    message = str(data.get("exception_message") or "").strip()
    return f"{data.get('node_type', '?')} (node {data.get('node_id', '?')}): {kind}: {message}"


def history_error(entry: dict) -> str:
    """Why a finished prompt did not succeed, from its history ``status.messages``."""
    status = entry.get("status") or {}
    for message in status.get("messages") or []:
        if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
            if message[0] == "execution_error":
                return describe_execution_error(message[1])
            if message[0] == "execution_interrupted":
                return f"interrupted on the server at node {message[1].get('node_id', '?')}"
    return f"finished with status {status.get('status_str')!r}"
