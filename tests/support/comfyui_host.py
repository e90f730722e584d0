"""Drive a real ComfyUI checkout from the tests: lay out a base directory, run a server, talk HTTP.

Standard library only (the pack's test venv need not have ComfyUI's dependencies: the server runs in the
checkout's own Python). Which checkouts, and how they are made, is support/hosts.py. See docs/HOST.md#http-api
for the API facts this relies on.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

BASE_SUBDIRS = ("custom_nodes", "models/vae", "input", "output", "temp", "user")
IMPORT_TIMES_HEADER = "Import times for custom nodes:"
IMPORT_FAILED = "(IMPORT FAILED)"


@dataclass(frozen=True)
class ComfyUILocation:
    directory: Path
    python: str


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def make_base_dir(base: Path, pack_dir: Path, pack_folder: str) -> Path:
    """A ComfyUI ``--base-directory`` with the pack symlinked into ``custom_nodes/<pack_folder>``."""
    base = Path(base)
    for sub in BASE_SUBDIRS:
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / pack_folder
    if not link.exists():
        link.symlink_to(Path(pack_dir).resolve(), target_is_directory=True)
    return base


def import_line(log: str, pack_folder: str) -> Optional[str]:
    """The pack's line in the last "Import times for custom nodes" block of a ComfyUI log, or None."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == IMPORT_TIMES_HEADER]
    if not starts:
        return None
    for line in lines[starts[-1] + 1:]:
        if not line.strip():
            break
        path = line.rsplit(": ", 1)[-1].strip().rstrip("/\\")
        if os.path.basename(path) == pack_folder:
            return line
    return None


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


_RUNNING: set = set()


@atexit.register
def _stop_leftovers() -> None:
    """A test run that dies without tearing down its fixtures must not leave servers behind (0.33's main.py
    outlives its parent): stop every process group still registered."""
    for proc in list(_RUNNING):
        proc.stop(grace=2.0)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds fixtures and runs the atexit sweep (SIGTERM alone would skip both)


if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


class HostProcess:
    """A ComfyUI ``main.py`` run in its own process group, stdout and stderr going to a log file."""

    def __init__(self, location: ComfyUILocation, args: list, log_path: Path):
        self.location = location
        self.args = list(args)
        self.log_path = Path(log_path)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def command(self) -> list:
        return [self.location.python, "main.py", *self.args]

    def start(self) -> "HostProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=self.location.directory, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        _RUNNING.add(self)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return f"--- last {lines} lines of {self.log_path} ---\n{tail(self.log(), lines)}"

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, grace: float = 10.0) -> None:
        """Terminate the whole process group (SIGTERM, then SIGKILL after ``grace`` seconds)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Children may outlive the leader: always sweep the group.
        self._signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        _RUNNING.discard(self)

    def _signal_group(self, sig) -> None:
        try:
            if hasattr(os, "killpg"):
                os.killpg(self.proc.pid, sig)
            else:  # pragma: no cover - Windows
                self.proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass


class ComfyUIServer(HostProcess):
    """A ComfyUI HTTP server on 127.0.0.1 with a small JSON client."""

    def __init__(self, location: ComfyUILocation, base: Path, log_path: Path, port: Optional[int] = None,
                 extra_args: tuple = ()):
        self.base = Path(base)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        super().__init__(location, [
            "--cpu", "--listen", "127.0.0.1", "--port", str(self.port), "--base-directory", str(self.base),
            "--database-url", "sqlite:///:memory:", "--disable-auto-launch", *extra_args,
        ], log_path)

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Poll ``/system_stats`` until it answers; raise RuntimeError (with the log tail) on exit or timeout."""
        start = time.monotonic()
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"ComfyUI exited with code {code} before serving\n{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=2)
                return time.monotonic() - start
            except (OSError, ValueError):
                pass
            if time.monotonic() - start > timeout:
                raise RuntimeError(
                    f"ComfyUI did not answer GET {self.url}/system_stats within {timeout:.0f} s\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def request(self, method: str, path: str, body=None, timeout: float = 30.0) -> tuple:
        """(HTTP status, decoded JSON body); HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw)
            except ValueError:
                return err.code, raw.decode(errors="replace")

    def get(self, path: str, timeout: float = 30.0):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {body}")
        return body

    def queue_prompt(self, graph: dict) -> tuple:
        """POST /prompt: (status, body). Note a 200 may still carry node_errors (docs/HOST.md#http-api)."""
        return self.request("POST", "/prompt", {"prompt": graph, "client_id": self.client_id})

    def wait_history(self, prompt_id: str, timeout: float = 60.0) -> dict:
        """Poll ``/history/<id>`` until the entry appears (it is written only when execution ends)."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running prompt {prompt_id}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"prompt {prompt_id} not finished after {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.1)

    def run_prompt(self, graph: dict, timeout: float = 60.0) -> dict:
        """Queue ``graph`` (failing on any node_errors) and return its finished history entry."""
        status, body = self.queue_prompt(graph)
        if status != 200 or body.get("node_errors"):
            raise AssertionError(f"POST /prompt rejected the graph ({status}): {json.dumps(body, indent=1)}")
        return self.wait_history(body["prompt_id"], timeout)


@contextmanager
def running_server(location: ComfyUILocation, base: Path, timeout: float = 90.0, **kwargs):
    """A ComfyUI server on ``base`` that answers HTTP, stopped on exit; one that does not start fails the test
    with its command and log tail (for module fixtures: ``with running_server(...) as host: yield host``)."""
    import pytest

    server = ComfyUIServer(location, base, Path(base) / "server.log", **kwargs).start()
    try:
        try:
            server.wait_ready(timeout)
        except RuntimeError as err:
            pytest.fail(f"ComfyUI server ({' '.join(server.command)}) did not start: {err}", pytrace=False)
        yield server
    finally:
        server.stop()


def history_messages(entry: dict, kind: str) -> list:
    """The payloads of the ``kind`` events (e.g. "execution_error") recorded in a history entry."""
    return [payload for name, payload in entry.get("status", {}).get("messages", []) if name == kind]


def output_files(entry: dict, base: Path) -> list:
    """Paths of the files a finished prompt saved (``type == "output"``), under ``base/output``."""
    files = []
    for node_output in entry.get("outputs", {}).values():
        for key in ("images", "gifs", "videos"):
            for item in node_output.get(key, []) or []:
                if isinstance(item, dict) and item.get("type") == "output":
                    files.append(Path(base) / "output" / item.get("subfolder", "") / item["filename"])
    return files
