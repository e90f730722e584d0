"""A test double of the core's progress interface (:mod:`flashvideo_core.progress`)."""

from __future__ import annotations

from typing import Callable, Optional

from flashvideo_core.errors import Cancelled
from flashvideo_core.progress import Progress


class CallbackProgress(Progress):
    """Progress driven by plain callables: records what the core reports and cancels on demand."""

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
