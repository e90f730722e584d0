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

    def check(self) -> None:
        """Raise if the user asked to stop. Called between units of work."""


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
