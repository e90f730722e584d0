"""A tiny progress/cancel interface, so long core loops never import ComfyUI.

The core calls ``start(total)`` once, ``advance()`` after each unit of work (a VAE
chunk or tile, a sampling step) and ``check()`` before each unit. The ComfyUI nodes
subclass it to drive ``comfy.utils.ProgressBar`` and ComfyUI's interrupt flag; the
CLI and tests use the callback form or the silent default.
"""

from __future__ import annotations

from typing import Callable, Optional

from .errors import Cancelled


class Progress:
    """Silent default: no reporting, never cancels."""

    def start(self, total: int) -> None:  # noqa: D401 - interface
        pass

    def advance(self, n: int = 1, preview=None) -> None:
        pass

    def begin_phase(self, name: str) -> None:
        """The pipeline names each phase (stage I, bridge, ...) before its passes; reporters may show it."""

    def check(self) -> None:
        """Raise if the user asked to stop. Called between units of work."""


class ConsoleProgress(Progress):
    """The command line's progress: per pass a line "phase: done/total steps, seconds" (redrawn in place on a
    terminal, printed once per pass otherwise). The pipeline names the phase before each pass."""

    def __init__(self, stream=None, width: int = 24):
        import sys

        self.stream = stream or sys.stderr
        self.width, self.phase, self.total, self.done, self.started = width, "", 0, 0, 0.0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def begin_phase(self, name: str) -> None:
        self.phase = name

    def start(self, total: int) -> None:
        import time

        self.total, self.done, self.started = max(int(total), 1), 0, time.perf_counter()
        if self.tty:
            self._draw("")

    def advance(self, n: int = 1, preview=None) -> None:
        self.done = min(self.total, self.done + n)
        finished = self.done == self.total
        if self.tty or finished:
            self._draw("\n" if finished else "")

    def _draw(self, end: str) -> None:
        import time

        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.phase or 'pass'}: [{bar}] {self.done}/{self.total} ({time.perf_counter() - self.started:.1f} s)"
        self.stream.write(("\r" if self.tty else "") + line + end)
        self.stream.flush()


class CallbackProgress(Progress):
    """Progress driven by plain callables (CLI, tests, other hosts)."""

    def __init__(
        self,
        on_progress: Optional[Callable[[int, int], None]] = None,
        should_cancel: Optional[Callable[[], bool]] = None,
        on_preview: Optional[Callable[[object], None]] = None,
    ):
        self.on_progress = on_progress
        self.should_cancel = should_cancel
        self.on_preview = on_preview
        self.done = 0
        self.total = 0

    def start(self, total: int) -> None:
        self.done, self.total = 0, total
        if self.on_progress:
            self.on_progress(0, total)

    def advance(self, n: int = 1, preview=None) -> None:
        self.done += n
        if self.on_progress:
            self.on_progress(self.done, self.total)
        if preview is not None and self.on_preview:
            self.on_preview(preview)

    def check(self) -> None:
        if self.should_cancel and self.should_cancel():
            raise Cancelled(f"cancelled after {self.done} of {self.total} units of work")
