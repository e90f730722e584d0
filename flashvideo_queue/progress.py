"""A one-line progress display on stderr without third-party libraries.

On a terminal the line is redrawn in place with '\\r' ("[3/10 done, 1 failed] item 4 on host:8188: node 11
step 3/5 | ..."); in a log file (not a TTY) each event is a plain line and step updates are throttled, so CI
and render-farm logs stay readable.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Optional, TextIO


class Progress:
    def __init__(self, stream: TextIO, total: int, tty: Optional[bool] = None, throttle: float = 30.0):
        self.stream, self.total, self.throttle = stream, total, throttle
        self.tty = stream.isatty() if tty is None else tty
        self.done = self.failed = 0
        self.status: dict[str, str] = {}  # worker label -> what it is doing
        self._last_plain: dict[str, float] = {}
        self._width = 0
        self._lock = threading.Lock()

    def _line(self) -> str:
        head = f"[{self.done}/{self.total} done, {self.failed} failed]"
        return f"{head} {' | '.join(self.status.values())}" if self.status else head

    def _draw(self) -> None:
        line = self._line()[: max(20, shutil.get_terminal_size().columns - 1)]
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def _clear(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0

    def counts(self, done: int, failed: int) -> None:
        with self._lock:
            self.done, self.failed = done, failed
            if self.tty:
                self._draw()

    def update(self, worker: str, text: Optional[str], event: bool = False) -> None:
        """What ``worker`` does now (None: nothing). ``event`` lines always print; step updates are throttled."""
        with self._lock:
            if text is None:
                self.status.pop(worker, None)
            else:
                self.status[worker] = text
            if self.tty:
                self._draw()
            elif text is not None:
                now = time.monotonic()
                if event or now - self._last_plain.get(worker, -1e9) >= self.throttle:
                    self._last_plain[worker] = now
                    self.stream.write(f"[{self.done}/{self.total} done, {self.failed} failed] {text}\n")
                    self.stream.flush()

    def log(self, message: str) -> None:
        """A message on its own line (the progress line is redrawn under it on a terminal)."""
        with self._lock:
            if self.tty:
                self._clear()
            self.stream.write(message + "\n")
            if self.tty and self.status:
                self._draw()
            self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self.tty:
                self._clear()
                self.stream.flush()
