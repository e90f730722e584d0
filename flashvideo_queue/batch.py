"""State every worker shares: the options, the queue of pending items, and the retry policy, so that
"what happens to an item after a failed attempt" is decided in one place."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .manifest import Manifest, item_label
from .progress import Progress
from .prompts import Prompt
from .videos import Video
from .workflow import Plan

DEFAULT_SERVER = "http://127.0.0.1:8188"


@dataclass
class Options:
    """What ``runner.run`` needs; one field per command-line flag (plus a few timeouts tests shorten)."""

    prompts: Optional[Path]  # the prompts file; None with ``prompt`` or (for a video batch) no prompt at all
    workflow: Path
    servers: list[str] = field(default_factory=lambda: [DEFAULT_SERVER])
    output_dir: Path = Path("queue_out")
    retries: int = 2  # extra attempts per item and run
    seed_base: int = 0
    keep_seeds: bool = False
    timeout: float = 3600.0  # seconds per attempt, from submission
    sets: list[str] = field(default_factory=list)  # NODE.INPUT=VALUE (NODE: id, title or class_type)
    prompt_targets: list[str] = field(default_factory=list)  # NODE.INPUT
    restart: bool = False  # start the batch over (new inputs); finished and running prompts of the same graph carry
    rerender: bool = False  # with restart: carry nothing over, render every item again
    interrupt_on_exit: bool = False  # on Ctrl-C, also cancel our in-flight prompts on the servers
    poll_interval: float = 5.0  # /history safety-net poll while the websocket is up; the poll rate without it
    server_grace: float = 30.0  # how long a server may stay unreachable before its worker gives up
    connect_timeout: float = 10.0  # for the start-up reachability check and the websocket
    http_timeout: float = 30.0
    prompt: Optional[str] = None  # --prompt TEXT: one prompt instead of a prompts file
    videos: Optional[Path] = None  # --videos DIR: one item per video file in it
    video_targets: list[str] = field(default_factory=list)  # NODE.INPUT (default: every LoadVideo's file)


class Dispatcher:
    """The shared queue. ``take`` blocks while another worker's item might still come back for a retry."""

    def __init__(self, pending: list[int], assigned: dict[str, list[tuple[int, str]]]):
        self._cond = threading.Condition()
        self._pending: deque[tuple[int, str]] = deque((i, "run") for i in pending)
        self._assigned = {server: deque(tasks) for server, tasks in assigned.items()}
        self._busy = 0
        self._stopped = False

    def take(self, server: str) -> Optional[tuple[int, str]]:
        """This server's own recovery tasks first, then the next pending item; None when all is settled."""
        with self._cond:
            while not self._stopped:
                queue = self._assigned.get(server) or self._pending
                if queue:
                    self._busy += 1
                    return queue.popleft()
                if not self._busy and not any(self._assigned.values()):
                    return None
                self._cond.wait()
            return None

    def finish(self, requeue: Optional[int]) -> None:
        with self._cond:
            self._busy -= 1
            if requeue is not None:
                self._pending.append((requeue, "run"))
            self._cond.notify_all()

    def release(self, server: str) -> list[tuple[int, str]]:
        """A stopping worker's unstarted recovery tasks (to be re-queued as plain runs)."""
        with self._cond:
            tasks = list(self._assigned.pop(server, ()))
            self._cond.notify_all()
            return tasks

    def push(self, index: int) -> None:
        with self._cond:
            self._pending.append((index, "run"))
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


class Batch:
    """Everything the workers share: inputs, manifest, queue, display, and the retry policy."""

    def __init__(self, opts: Options, plan: Plan, prompts: list[Prompt], manifest: Manifest, progress: Progress,
                 videos: Optional[list[Video]] = None):
        self.opts, self.plan, self.prompts, self.manifest, self.progress = opts, plan, prompts, manifest, progress
        self.videos: list[Video] = videos or []  # item i's video (a --videos batch), else empty
        self._uploads: dict[tuple[str, str], str] = {}  # (server, sha256) -> the LoadVideo reference it answered
        self.run_id: str = manifest.data["run_id"]
        self.stopping = threading.Event()
        self.dispatch = Dispatcher([], {})
        self._attempts: dict[int, int] = {}  # attempts made in this run (the manifest counts all runs)
        self._lock = threading.Lock()
        self.local_error: Optional[str] = None  # a file we could not write here: the run stops

    def local_failure(self, index: Optional[int], error: Exception) -> None:
        """A local write failed (folder read-only or gone, disk full, name too long): stop the run. The item keeps
        its prompt_id and 'running' state, so the rerun collects the result from the server instead of
        rendering it again; nothing is lost or done twice."""
        with self._lock:
            first = self.local_error is None
            if first:
                self.local_error = str(error)
        if first:
            where = f"item {index}: " if index is not None else ""
            self.log(f"local error: {where}{error}; stopping (the server keeps the result; fix it and rerun)")
        self.stopping.set()
        self.dispatch.stop()

    def graph_for(self, index: int, video: Optional[str] = None) -> dict:
        """Item ``index``'s graph; ``video``: its uploaded file's reference on the server it goes to."""
        item = self.manifest.items[index]
        return self.plan.build(item["prompt"], item["seed"], f"flashvideo_queue/{self.run_id}/{index:04d}", video)

    def uploaded(self, server: str, video: Video) -> Optional[str]:
        """The reference ``server`` gave this video earlier in the run: a retry or a second item with the same
        content does not upload it again."""
        with self._lock:
            return self._uploads.get((server, video.sha256))

    def remember_upload(self, server: str, video: Video, reference: str) -> None:
        with self._lock:
            self._uploads[(server, video.sha256)] = reference

    def extra_data_for(self, graph: dict) -> Optional[dict]:
        return self.plan.extra_data(graph)

    def update(self, index: int, **fields: Any) -> dict[str, Any]:
        item = self.manifest.update(index, **fields)
        counts = self.manifest.counts()
        self.progress.counts(counts["done"], counts["failed"])
        return item

    def log(self, message: str) -> None:
        self.progress.log(message)

    def count_attempt(self, index: int) -> None:
        with self._lock:
            self._attempts[index] = self._attempts.get(index, 0) + 1

    def attempt_failed(self, index: int, error: str, where: str, final_note: str = "") -> bool:
        """Record a failed attempt; True if the item goes back to the queue for another one. A permanent
        failure (``final_note`` says why: the server's validation refused the graph, the input file cannot be
        sent) is never retried."""
        with self._lock:
            made = self._attempts.get(index, 0)
        item = self.manifest.items[index]
        label = item_label(item)
        if final_note:
            error = f"{error} ({final_note})"
        elif made <= self.opts.retries:
            self.update(index, status="pending", error=error)
            self.log(f"item {index} ({label}) failed on {where}, attempt {made} of "
                     f"{self.opts.retries + 1}: {error}; back in the queue")
            return True
        self.update(index, status="failed", error=error)
        self.log(f"item {index} ({label}) FAILED on {where} after {plural(made, 'attempt')}: {error}")
        return False


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
