"""ComfyUI's HTTP API (docs/HOST.md#http-api) over the standard library's http.client, plus its ``/ws`` event stream
over the maintained ``websocket-client`` library (the one ComfyUI's own API example uses).

One connection per call and no proxy lookup: calls are rare (a submit, a few polls, the downloads) and a
proxy variable meant for the internet must not capture a render node on the LAN. Connection-level failures
become ServerUnreachable; unexpected statuses become HttpError; a file we cannot write here is a
LocalWriteError (never blamed on the server); the caller decides what each means.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import mimetypes
import re
import uuid
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Optional, Union
from urllib.parse import quote, urlencode, urlsplit

import websocket

from flashvideo_core.io.output_files import output_file

from .errors import HttpError, InputError, InputFileError, LocalWriteError, ServerUnreachable
from .jsonvalues import loads, loads_or_none

HOST_NAME = re.compile(r"^[A-Za-z0-9._-]+$|^[0-9A-Fa-f:.]+$")
UPLOAD_CHUNK = 1 << 20
FORM_UNSAFE = re.compile(r'["\\\r\n]')


def normalize_server(url: str) -> str:
    """``host:port`` or ``http(s)://host:port[/prefix]`` → ``http(s)://host:port[/prefix]`` (no trailing slash)."""
    given = url
    url = url.strip() if isinstance(url, str) else ""
    if "://" not in url:
        url = "http://" + url
    hint = "expected http://HOST:PORT, e.g. http://127.0.0.1:8188"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:  # "Invalid IPv6 URL", port out of range or not a number
        raise InputError(f"--server {given!r}: {e}; {hint}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--server {given!r}: {hint}")
    if not HOST_NAME.match(parts.hostname) or any(c.isspace() or ord(c) < 32 for c in url):
        raise InputError(f"--server {given!r}: {parts.hostname!r} is not a host name or IP address; {hint} "
                         "(international names in their xn-- form)")
    if port == 0 or parts.query or parts.fragment or parts.username or parts.password:
        raise InputError(f"--server {given!r}: no port 0, query, fragment or user name allowed; {hint}")
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
                sink: Optional[Path] = None, stream: Optional[tuple[Iterable[bytes], dict[str, str]]] = None
                ) -> tuple[int, bytes]:
        """(status, body); with ``sink`` a 200 body is streamed to that file (atomically) instead. ``stream``:
        (chunks, headers) sent as the body instead of ``payload`` (an upload, never held in memory)."""
        body: Any = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if stream is not None:
            body, headers = stream
        conn = self._connection(timeout)
        try:
            try:
                conn.request(method, self.prefix + path, body=body, headers=headers)
            except (OSError, http.client.HTTPException) as sent_error:
                if stream is None:
                    raise
                # a server refusing an upload (413: too large) may answer and close before reading it all
                response = _early_response(conn, sent_error)
            else:
                response = conn.getresponse()
            if sink is None or response.status != 200:
                return response.status, response.read()
            _stream_to(response, sink)
            return 200, b""
        except LocalWriteError:
            raise
        except (OSError, http.client.HTTPException) as e:
            raise ServerUnreachable(str(e) or type(e).__name__) from e
        finally:
            conn.close()

    def _json(self, method: str, path: str, payload: Any = None, timeout: Optional[float] = None,
              ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        status, data = self.request(method, path, payload, timeout)
        parsed = loads_or_none(data) if data else None
        if data and parsed is None:  # not JSON we accept (or nested absurdly deep): kept as text for the message
            parsed = data.decode("utf-8", "replace")
        if status not in ok:
            raise HttpError(method, path, status, parsed)
        return status, parsed

    def _json_object(self, path: str, timeout: Optional[float] = None) -> dict:
        """A GET whose answer ComfyUI always gives as a JSON object (empty answers count as {}); anything else is
        an HttpError naming the path, never an AttributeError deep in the worker."""
        status, parsed = self._json("GET", path, timeout=timeout)
        if parsed is None:
            return {}
        if not isinstance(parsed, dict):
            raise HttpError("GET", path, status, f"not the JSON object ComfyUI answers ({type(parsed).__name__}: "
                            f"{str(parsed)[:100]}); is this a ComfyUI server?")
        return parsed

    def system_stats(self, timeout: Optional[float] = None) -> dict:
        return self._json_object("/system_stats", timeout=timeout)

    def object_info(self) -> Any:
        """Every node type's input definitions: what turns a UI workflow's widgets_values into named inputs."""
        return self._json("GET", "/object_info", timeout=max(self.timeout, 60))[1]  # checked by NodeDefs

    def queue_prompt(self, graph: dict, prompt_id: str, extra_data: Optional[dict] = None) -> tuple[int, Any]:
        """POST /prompt with our own prompt_id (recorded before sending, so a crash cannot lose track of it);
        ``extra_data`` carries ``extra_pnginfo`` (the UI workflow the server embeds in the saved video)."""
        payload = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            payload["extra_data"] = extra_data
        return self._json("POST", "/prompt", payload, ok=(200, 400))

    def history(self, prompt_id: str) -> Optional[dict]:
        """The finished prompt's history entry, or None while it is queued, running or unknown."""
        path = f"/history/{quote(prompt_id, safe='')}"
        entry = self._json_object(path).get(prompt_id)
        if entry is not None and not isinstance(entry, dict):
            raise HttpError("GET", path, 200, f"the entry of {prompt_id} is not a JSON object; is this a ComfyUI "
                            "server?")
        return entry

    def queued_ids(self) -> tuple[set[str], set[str]]:
        """(running, pending) prompt ids; queue items are [number, prompt_id, prompt, extra_data, outputs]."""
        queue = self._json_object("/queue")

        def ids(key: str) -> set[str]:
            items = queue.get(key)
            return {item[1] for item in items if isinstance(item, list) and len(item) > 1 and isinstance(item[1], str)
                    } if isinstance(items, list) else set()

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

    def upload_input(self, path: Path, name: str, subfolder: str, size: int, sha256: str) -> str:
        """Upload a local file into the server's input folder as ``subfolder/name`` (POST /upload/image, which
        takes any file; ``overwrite`` so the server keeps the name we chose) and return the reference a
        LoadVideo ``file`` input takes: ``subfolder/name`` as the server answers it. The file is streamed once,
        hashed on the way: content that no longer matches ``size``/``sha256`` (edited since the run started) is
        an InputFileError, as is a file that cannot be read."""
        boundary = f"flashvideo-{uuid.uuid4().hex}"
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        head, tail = multipart_form({"type": "input", "subfolder": subfolder, "overwrite": "true"}, "image", name,
                                    content_type, boundary)
        try:
            f = open(path, "rb")
        except OSError as e:
            raise InputFileError(f"cannot read {path}: {e.strerror or e}") from None
        with f:
            chunks = FileChunks(f, path, size)
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                       "Content-Length": str(len(head) + size + len(tail))}
            status, data = self.request("POST", "/upload/image", timeout=max(self.timeout, 120),
                                        stream=(_chain(head, chunks, tail), headers))
        if chunks.sent == size and chunks.digest.hexdigest() != sha256:
            raise InputFileError(f"{path} changed since the run started (its content no longer matches the sha256 "
                                 "recorded then)")
        text = data.decode("utf-8", "replace")
        if status != 200:
            raise HttpError("POST", "/upload/image", status, text)
        try:
            answer = loads(text)
        except ValueError:
            answer = None
        if not (isinstance(answer, dict) and isinstance(answer.get("name"), str) and answer["name"]
                and isinstance(answer.get("subfolder", ""), str) and answer.get("type", "input") == "input"):
            raise HttpError("POST", "/upload/image", status, f"unexpected answer {text[:200]!r}")
        folder = answer.get("subfolder", "").strip("/")
        return f"{folder}/{answer['name']}" if folder else answer["name"]

    def ws_url(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.label}{self.prefix}/ws?clientId={self.client_id}"

    def open_ws(self, timeout: Optional[float] = None) -> "EventStream":
        return EventStream.connect(self.ws_url(), timeout or self.timeout)


def multipart_form(fields: dict[str, str], file_field: str, filename: str, content_type: str,
                   boundary: str) -> tuple[bytes, bytes]:
    """The bytes before and after a file's content in a ``multipart/form-data`` body (RFC 7578): the text fields,
    then the file part's headers; the content is streamed between the two, so a video is never held in memory.
    Values are written as they are, so they must be plain (no quote, backslash or line break: our names are)."""
    for value in (*fields, *fields.values(), file_field, filename, content_type, boundary):
        if FORM_UNSAFE.search(value):
            raise ValueError(f"multipart value {value!r} needs quoting; use a plain name")
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
                 f"Content-Type: {content_type}\r\n\r\n")
    return "".join(parts).encode("utf-8"), f"\r\n--{boundary}--\r\n".encode("utf-8")


class FileChunks:
    """Exactly ``size`` bytes of an open file, in chunks, hashed as they go: the upload's body. A read error or
    a file that got shorter is an InputFileError (a short body would leave the server waiting for the rest)."""

    def __init__(self, f: IO[bytes], path: Path, size: int):
        self.f, self.path, self.size = f, path, size
        self.digest = hashlib.sha256()
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < self.size:
            try:
                chunk = self.f.read(min(UPLOAD_CHUNK, self.size - self.sent))
            except OSError as e:
                raise InputFileError(f"cannot read {self.path}: {e.strerror or e}") from None
            if not chunk:
                raise InputFileError(f"{self.path} got shorter since the run started ({self.sent} of "
                                     f"{self.size} bytes left)")
            self.digest.update(chunk)
            self.sent += len(chunk)
            yield chunk


def _chain(head: bytes, chunks: Iterable[bytes], tail: bytes) -> Iterator[bytes]:
    yield head
    yield from chunks
    yield tail


def _early_response(conn: http.client.HTTPConnection, sent_error: Exception) -> http.client.HTTPResponse:
    """The answer a server sent before it stopped reading our body, or the send error again if there is none."""
    try:
        return conn.getresponse()
    except (OSError, http.client.HTTPException):
        raise sent_error from None


class _ReadFailed(Exception):
    """A read from the server failed while a download was being written (a connection error, not a local one)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _stream_to(response: http.client.HTTPResponse, sink: Path) -> None:
    """Stream a 200 body to ``sink`` through the pack's one output-writing path (a private temporary name, renamed
    into place; no link is ever written through). Local failures are LocalWriteError; a read failure stays a
    connection error."""
    try:
        with output_file(str(sink)) as temporary, open(temporary, "wb") as f:
            while True:
                try:
                    chunk = response.read(1 << 20)
                except (OSError, http.client.HTTPException) as e:
                    raise _ReadFailed(e) from None
                if not chunk:
                    break
                f.write(chunk)
    except _ReadFailed as failed:
        raise failed.error from None
    except OSError as e:
        raise LocalWriteError(sink, e) from None


class EventStream:
    """ComfyUI's ``/ws`` messages. ``recv`` gives str (JSON events), bytes (previews) or None on timeout and
    raises OSError once the connection is gone; pings are answered by the library."""

    def __init__(self, ws: websocket.WebSocket):
        self.ws = ws

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0) -> "EventStream":
        try:  # no proxy from the environment (see above) and no Origin header (ComfyUI checks it against Host)
            return cls(websocket.create_connection(url, timeout=timeout, http_no_proxy=["*"], suppress_origin=True,
                                                   enable_multithread=True))
        except websocket.WebSocketException as e:
            raise ConnectionError(f"websocket {url}: {e}") from None

    def recv(self, timeout: Optional[float] = None) -> Union[str, bytes, None]:
        try:
            self.ws.settimeout(timeout)
            return self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        except websocket.WebSocketException as e:  # closed by the server, protocol error
            raise ConnectionError(f"websocket: {e or type(e).__name__}") from None

    def close(self, wait: float = 1.0) -> None:
        """Closing handshake, waiting at most ``wait`` seconds for the server's answer."""
        try:
            self.ws.close(timeout=wait)
        except (OSError, websocket.WebSocketException):
            pass


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
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    messages = status.get("messages")
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
            if message[0] == "execution_error":
                return describe_execution_error(message[1])
            if message[0] == "execution_interrupted":
                return f"interrupted on the server at node {message[1].get('node_id', '?')}"
    return f"finished with status {status.get('status_str')!r}"
