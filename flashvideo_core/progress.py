"""A tiny progress/cancel interface, so long core loops never import ComfyUI.

The core calls ``start(total)`` once, ``advance()`` after each unit of work (a VAE
chunk or tile, a sampling step) and ``check()`` before each unit. The ComfyUI nodes
subclass it to drive ``comfy.utils.ProgressBar`` and ComfyUI's interrupt flag; the
CLI prints with :class:`ConsoleProgress`; everything else gets the silent default.
"""

from __future__ import annotations


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
