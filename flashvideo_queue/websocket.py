"""A minimal RFC 6455 websocket client, because ComfyUI reports progress over ``/ws`` and pipeline machines
may not have websocket-client or aiohttp installed.

It covers what a ComfyUI client needs and nothing more: the client handshake (no extensions offered, so the
server never compresses), masked frames out, text/binary messages in (fragmented or not), ping/pong and the
closing handshake. The frame codec is two pure functions so it can be tested byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Optional, Union
from urllib.parse import urlsplit

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_KNOWN = {OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG}
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 256 << 20  # ComfyUI's previews are a few hundred KiB; anything this big is a broken stream
MAX_HANDSHAKE = 64 << 10


class WebSocketError(OSError):
    """A protocol violation or a failed handshake (an OSError, so callers treat it as a connection problem)."""


class WebSocketClosed(WebSocketError):
    """The peer closed the connection (with or without a close frame)."""


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


def apply_mask(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (masking and unmasking are the same operation)."""
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, mask: Optional[bytes] = None, fin: bool = True) -> bytes:
    """One frame; clients must pass a fresh 4-byte ``mask``, servers pass None."""
    n = len(payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if mask is None:
        return bytes(head) + payload
    if len(mask) != 4:
        raise ValueError("a websocket mask is 4 bytes")
    return bytes(head) + mask + apply_mask(payload, mask)


def decode_frame(buf: Union[bytes, bytearray], max_payload: int = MAX_MESSAGE) -> Optional[tuple[Frame, int]]:
    """Parse one frame from the start of ``buf``: (frame, bytes used), or None while it is incomplete."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    if b0 & 0x70:
        raise WebSocketError("websocket frame has reserved bits set (no extension was negotiated)")
    fin, opcode, masked, n, pos = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F, 2
    if opcode not in _KNOWN:
        raise WebSocketError(f"unknown websocket opcode {opcode:#x}")
    if n == 126:
        if len(buf) < 4:
            return None
        (n,), pos = struct.unpack_from("!H", buf, 2), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        (n,), pos = struct.unpack_from("!Q", buf, 2), 10
        if n >> 63:
            raise WebSocketError("websocket frame length has its top bit set")
    if opcode >= OP_CLOSE and (not fin or n > 125):
        raise WebSocketError("websocket control frames must be whole and at most 125 bytes")
    if n > max_payload:
        raise WebSocketError(f"websocket frame of {n} bytes is over the {max_payload} byte limit")
    mask = b""
    if masked:
        if len(buf) < pos + 4:
            return None
        mask, pos = bytes(buf[pos:pos + 4]), pos + 4
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos:pos + n])
    return Frame(fin, opcode, apply_mask(payload, mask) if masked else payload), pos + n


class WebSocket:
    """A connected client websocket. ``recv`` returns str (text), bytes (binary) or None on timeout."""

    def __init__(self, sock: socket.socket, buffered: bytes = b""):
        self.sock = sock
        self._buf = bytearray(buffered)
        self._parts: list[bytes] = []
        self._part_op = 0
        self._send_lock = threading.Lock()
        self._close_sent = False
        self.closed = False

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0) -> "WebSocket":
        """Open ``ws://`` or ``wss://`` ``url`` and complete the opening handshake."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a websocket URL: {url}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        sock = socket.create_connection((parts.hostname, port), timeout)
        try:
            if secure:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
            sock.sendall(request.encode("ascii"))
            data = bytearray()
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise WebSocketError("connection closed during the websocket handshake")
                data += chunk
                if len(data) > MAX_HANDSHAKE:
                    raise WebSocketError("websocket handshake response too long")
            head, _, rest = bytes(data).partition(b"\r\n\r\n")
            status, *lines = head.decode("iso-8859-1").split("\r\n")
            if status.split(" ")[1:2] != ["101"]:
                raise WebSocketError(f"websocket handshake refused: {status}")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            if headers.get("upgrade", "").lower() != "websocket":
                raise WebSocketError("websocket handshake: no 'Upgrade: websocket' in the response")
            if headers.get("sec-websocket-accept") != accept_key(key):
                raise WebSocketError("websocket handshake: wrong Sec-WebSocket-Accept")
            return cls(sock, rest)
        except BaseException:
            sock.close()
            raise

    def _send(self, opcode: int, payload: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(encode_frame(opcode, payload, os.urandom(4)))

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        self._send(OP_BINARY, data)

    def ping(self, payload: bytes = b"") -> None:
        self._send(OP_PING, payload)

    def _next_frame(self, deadline: Optional[float]) -> Optional[Frame]:
        while True:
            got = decode_frame(self._buf)
            if got:
                frame, used = got
                del self._buf[:used]
                return frame
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                self._drop()
                raise WebSocketClosed("websocket connection closed by the server")
            self._buf += chunk

    def recv(self, timeout: Optional[float] = None) -> Union[str, bytes, None]:
        """The next text (str) or binary (bytes) message; None if ``timeout`` seconds pass first."""
        if self.closed:
            raise WebSocketClosed("websocket is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self._next_frame(deadline)
            if frame is None:
                return None
            if frame.opcode == OP_PING:
                self._send(OP_PONG, frame.payload)
            elif frame.opcode == OP_CLOSE:
                code = struct.unpack("!H", frame.payload[:2])[0] if len(frame.payload) >= 2 else 1005
                reason = frame.payload[2:].decode("utf-8", "replace")
                self._answer_close(frame.payload[:2])
                raise WebSocketClosed(f"websocket closed by the server (code {code}{', ' + reason if reason else ''})")
            elif frame.opcode == OP_PONG:
                continue
            else:
                if frame.opcode == OP_CONT:
                    if not self._parts:
                        raise WebSocketError("websocket continuation frame without a message")
                elif self._parts:
                    raise WebSocketError("websocket message started inside a fragmented one")
                else:
                    self._part_op = frame.opcode
                self._parts.append(frame.payload)
                if sum(map(len, self._parts)) > MAX_MESSAGE:
                    raise WebSocketError("websocket message over the size limit")
                if frame.fin:
                    data, self._parts = b"".join(self._parts), []
                    if self._part_op == OP_BINARY:
                        return data
                    try:
                        return data.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise WebSocketError(f"websocket text message is not UTF-8: {e}") from None

    def _answer_close(self, code: bytes) -> None:
        try:
            if not self._close_sent:
                self._close_sent = True
                self._send(OP_CLOSE, code)
        except OSError:
            pass
        self._drop()

    def _drop(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def close(self, code: int = 1000, reason: str = "", wait: float = 1.0) -> None:
        """Closing handshake: send a close frame, wait briefly for the server's, then drop the socket."""
        if self.closed:
            return
        try:
            self._close_sent = True
            self._send(OP_CLOSE, struct.pack("!H", code) + reason.encode("utf-8")[:123])
            deadline = time.monotonic() + wait
            while (frame := self._next_frame(deadline)) is not None and frame.opcode != OP_CLOSE:
                pass
        except OSError:
            pass
        self._drop()
