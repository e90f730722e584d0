"""One thread per ComfyUI server: submit an item's graph, follow it over the websocket (or /history when the
websocket is gone), download its outputs; also collect prompts a previous run left behind. Each failure is
sorted into "this attempt failed" (ItemFailed) or "this server is gone" (ServerGone) for the batch to act on."""

from __future__ import annotations

import errno
import threading
import time
import traceback
import uuid
from typing import Any, Callable, Optional, TypeVar

from .batch import Batch
from .client import ComfyClient, EventStream, describe_execution_error, describe_rejection, history_error
from .errors import (HttpError, InputFileError, ItemFailed, ItemRejected, LocalWriteError, ServerGone,
                     ServerUnreachable, Stopped, UploadRefused)
from .jsonvalues import loads_or_none
from .manifest import item_label
from .outputs import collect_outputs, local_names, name_source, summarize_files
from .videos import UPLOAD_SUBFOLDER

T = TypeVar("T")


class Worker(threading.Thread):
    """Feeds one server, one item at a time; also used unstarted to check a prompt on a server not in the list."""

    def __init__(self, batch: Batch, client: ComfyClient, grace: Optional[float] = None, may_wait: bool = True):
        super().__init__(name=f"flashvideo_queue {client.label}", daemon=True)
        self.batch, self.client = batch, client
        self.grace = batch.opts.server_grace if grace is None else grace
        self.may_wait = may_wait
        self.ws: Optional[EventStream] = None
        self.ws_error: Optional[str] = None
        self.ws_warned = False
        self.gone: Optional[str] = None

    # -- the thread ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        batch = self.batch
        try:
            while not self.gone and (task := batch.dispatch.take(self.client.base)) is not None:
                index, kind = task
                requeue = None
                try:
                    requeue = index if self.handle(index, kind) else None
                except ServerGone as e:
                    self.gone = str(e)
                    batch.log(f"warning: {self.client.base} stopped responding ({e}); no more items go there")
                    requeue = index if self.server_lost(index, kind) else None
                except Stopped:
                    pass
                except LocalWriteError as e:
                    batch.local_failure(index, e)
                finally:
                    batch.dispatch.finish(requeue)
                    batch.progress.update(self.client.label, None)
        finally:
            try:
                if not batch.stopping.is_set():
                    for index, _ in batch.dispatch.release(self.client.base):
                        batch.update(index, status="pending")
                        batch.dispatch.push(index)
            except LocalWriteError as e:
                batch.local_failure(None, e)
            if self.ws is not None:
                self.ws.close(wait=0.2)

    def handle(self, index: int, kind: str) -> bool:
        """Do one task; True if the item must go back to the queue."""
        try:
            if kind == "redownload":
                return self.redownload(index)
            if kind == "adopt":
                return self.adopt(index)
            return self.attempt(index)
        except (ServerGone, Stopped):
            raise
        except LocalWriteError as e:  # not the server's fault and not the item's: stop, keep it collectable
            self.batch.local_failure(index, e)
            return False
        except Exception as e:  # a bug must not hang the batch: count it as a failed attempt
            self.batch.log(traceback.format_exc().rstrip())
            if kind != "run":
                self.batch.update(index, status="pending")
                return True
            return self.batch.attempt_failed(index, f"internal error: {type(e).__name__}: {e}", self.client.label)

    def server_lost(self, index: int, kind: str) -> bool:
        if kind == "run":
            return self.batch.attempt_failed(index, f"server {self.client.base} stopped responding", self.client.label)
        self.batch.update(index, status="pending")
        return True

    # -- helpers ---------------------------------------------------------------------------------------------------
    def show(self, index: int, text: str, event: bool = False) -> None:
        self.batch.progress.update(self.client.label, f"item {index} on {self.client.label}: {text}", event)

    def check_stop(self) -> None:
        if self.batch.stopping.is_set():
            raise Stopped()

    def until_back(self, call: Callable[[], T]) -> T:
        """``call()``, retried while the server is unreachable, for at most the grace period."""
        since = time.monotonic()
        while True:
            self.check_stop()
            try:
                return call()
            except ServerUnreachable as e:
                if time.monotonic() - since >= self.grace:
                    raise ServerGone(str(e)) from e
                self.batch.stopping.wait(min(1.0, self.batch.opts.poll_interval))

    def node_name(self, node: Any) -> str:
        node_def = self.batch.plan.graph.get(str(node))
        return f"node {node} ({node_def['class_type']})" if node_def else f"node {node}"

    # -- one attempt ------------------------------------------------------------------------------------------------
    def attempt(self, index: int) -> bool:
        batch = self.batch
        batch.count_attempt(index)
        item = batch.manifest.items[index]
        prompt_id = str(uuid.uuid4())  # recorded before the POST: a crash right after it cannot lose the prompt
        batch.update(index, status="running", server=self.client.base, prompt_id=prompt_id,
                     attempts=item["attempts"] + 1, error=None, outputs=[], remote=[])
        try:
            video = self.upload(index) if batch.videos else None
            self.show(index, f"queued ({item_label(item)})", event=True)
            prompt_id = self.submit(batch.graph_for(index, video), prompt_id, index)
            self.finish(index, self.wait(prompt_id, index))
            return False
        except ItemFailed as e:
            return batch.attempt_failed(index, str(e), self.client.label, e.final_note if e.permanent else "")

    def upload(self, index: int) -> str:
        """Item ``index``'s video in this server's input folder, as the reference its LoadVideo takes. Uploaded
        once per server and run (a retry, or another item with the same content, reuses it); a file that cannot
        be sent is refused for good, a server error is a failed attempt."""
        video = self.batch.videos[index]
        known = self.batch.uploaded(self.client.base, video)
        if known is not None:
            return known
        size = f"{video.size / 1e6:.1f} MB"
        self.show(index, f"uploading {video.name} ({size})", event=True)
        try:
            reference = self.until_back(lambda: self.client.upload_input(
                video.path, video.upload_name, UPLOAD_SUBFOLDER, video.size, video.sha256))
        except InputFileError as e:
            raise UploadRefused(f"{e}; fix the file and rerun (with --restart if you replaced or edited it)") from None
        except HttpError as e:
            if e.status == 413:
                raise UploadRefused(f"{self.client.label} refused the upload of {video.name} ({size}) as too large "
                                    "(HTTP 413); start ComfyUI there with --max-upload-size N, N in MB above the "
                                    "file's size (default 100)") from None
            raise ItemFailed(f"upload of {video.name} to {self.client.label} failed: HTTP {e.status}: "
                             f"{str(e.body)[:300]}") from None
        self.batch.remember_upload(self.client.base, video, reference)
        return reference

    def submit(self, graph: dict, prompt_id: str, index: int) -> str:
        if self.ws is None:
            try:
                self.ws = self.client.open_ws(self.batch.opts.connect_timeout)
            except OSError as e:  # retried for the next item, reported once
                if not self.ws_warned:
                    self.ws_warned = True
                    self.batch.log(f"warning: no websocket to {self.client.label} ({e}); polling /history instead")
        self.ws_error = None
        try:
            status, body = self.client.queue_prompt(graph, prompt_id, self.batch.extra_data_for(graph))
        except HttpError as e:
            raise ItemFailed(f"POST /prompt failed: HTTP {e.status}: {str(e.body)[:300]}") from None
        except ServerUnreachable as e:
            try:  # did the prompt get there before the connection broke?
                self.until_back(self.client.system_stats)
                if self.until_back(lambda: self.client.knows(prompt_id)):
                    return prompt_id
            except HttpError as answer:  # e.g. a proxy's 502 while ComfyUI restarts
                raise ItemFailed(f"POST /prompt failed ({e}); then {self.client.label} answered HTTP "
                                 f"{answer.status}: will retry") from None
            raise ItemFailed(f"POST /prompt failed: {e}") from None
        if status == 200 and isinstance(body, dict) and body.get("prompt_id"):
            if not body.get("node_errors"):
                if body["prompt_id"] != prompt_id:  # a server that ignores client-chosen ids
                    self.batch.update(index, prompt_id=str(body["prompt_id"]))
                return str(body["prompt_id"])
            self.cancel(str(body["prompt_id"]))  # the valid rest would run: a partial result is not wanted
        how = "HTTP 200 with node_errors; the valid rest was cancelled" if status == 200 else f"HTTP {status}"
        raise ItemRejected(f"rejected by {self.client.label} ({how}): {describe_rejection(body)}")

    def cancel(self, prompt_id: str) -> None:
        try:
            self.client.cancel(prompt_id)
        except (ServerUnreachable, HttpError):
            pass

    def wait(self, prompt_id: str, index: int) -> dict:
        """Follow the prompt until its /history entry exists. Websocket events give progress, early errors and
        a prompt "done"; /history is polled as a safety net, and is all there is when the websocket is down."""
        opts = self.batch.opts
        deadline = time.monotonic() + opts.timeout
        next_poll = time.monotonic() + opts.poll_interval
        failing_since: Optional[float] = None
        while True:
            self.check_stop()
            now = time.monotonic()
            if now >= deadline:
                self.cancel(prompt_id)
                raise ItemFailed(f"timed out after {opts.timeout:g} s; prompt {prompt_id} was cancelled on the server")
            if now < next_poll:
                pause = min(next_poll, deadline) - now
                if self.ws is None:
                    self.batch.stopping.wait(min(pause, 0.5))
                    continue
                try:
                    message = self.ws.recv(min(pause, 1.0))
                except OSError as e:
                    self.batch.log(f"warning: websocket to {self.client.label} dropped ({e}); polling /history")
                    self.ws.close(wait=0)
                    self.ws, next_poll = None, now
                    continue
                if isinstance(message, str) and self.on_event(message, prompt_id, index):
                    next_poll = now
                continue  # binary frames (previews) and timeouts
            next_poll = now + opts.poll_interval
            try:
                entry = self.client.history(prompt_id)
                if entry is None and not self.client.knows(prompt_id):
                    raise ItemFailed(f"prompt {prompt_id} vanished from {self.client.label} (server restarted?)")
                failing_since = None
            except (ServerUnreachable, HttpError) as e:
                failing_since = failing_since or now
                if now - failing_since >= self.grace:
                    raise ServerGone(str(e)) from e
                next_poll = now + min(opts.poll_interval, 1.0)
                continue
            if entry is not None:
                return entry

    def on_event(self, message: str, prompt_id: str, index: int) -> bool:
        """Handle one websocket event; True when it says our prompt is finished."""
        event = loads_or_none(message)  # a server's event is untrusted: bounded nesting, and maybe not an object
        if not isinstance(event, dict):
            return False
        kind, data = event.get("type"), event.get("data")
        if not isinstance(data, dict) or data.get("prompt_id", prompt_id) != prompt_id:
            return False
        if kind == "executing":
            if data.get("node") is None:
                return data.get("prompt_id") == prompt_id
            self.show(index, self.node_name(data["node"]))
        elif kind == "progress":
            self.show(index, f"node {data.get('node')} step {data.get('value')}/{data.get('max')}")
        elif kind == "execution_start":
            self.show(index, "started")
        elif kind == "execution_error":
            self.ws_error = describe_execution_error(data)
        elif kind == "execution_interrupted":
            self.ws_error = f"interrupted on the server at {self.node_name(data.get('node_id'))}"
        return False

    def finish(self, index: int, entry: dict) -> None:
        """Check the history entry and download every output; the item is done only once all files are here."""
        status = entry.get("status")
        if not isinstance(status, dict) or status.get("status_str") != "success":
            raise ItemFailed(self.ws_error or history_error(entry))
        item = self.batch.manifest.items[index]
        refs = collect_outputs(entry)
        names = local_names(index, name_source(item), refs)
        self.show(index, f"downloading {len(refs)} file(s)")
        for ref, name in zip(refs, names):
            self.download(ref, name)
        if not refs:
            self.batch.log(f"warning: item {index} finished without output files (no SaveVideo in the workflow?)")
        self.batch.update(index, status="done", outputs=names, remote=refs, error=None)
        self.show(index, f"done -> {summarize_files(names)}", event=True)

    def download(self, ref: dict[str, str], name: str) -> None:
        folder = self.batch.manifest.folder
        try:
            try:
                self.until_back(lambda: self.client.download(ref, folder / name))
            except LocalWriteError as e:
                if e.errno != errno.ENOENT or folder.is_dir():
                    raise
                try:
                    folder.mkdir(parents=True, exist_ok=True)  # the output folder was deleted mid-run: make it again
                except OSError as error:
                    raise LocalWriteError(folder, error) from None
                self.batch.log(f"warning: {folder} was deleted during the run; made it again (rerun to fetch "
                               "the files of earlier items)")
                self.until_back(lambda: self.client.download(ref, folder / name))
        except HttpError as e:
            raise ItemFailed(f"cannot download {ref['subfolder']}/{ref['filename']} from {self.client.label}: "
                             f"HTTP {e.status}") from None

    # -- resuming ---------------------------------------------------------------------------------------------------
    def adopt(self, index: int) -> bool:
        """A prompt the last run left ``running``: collect it if it finished, wait if it is still queued,
        re-queue it if it failed or the server no longer knows it."""
        batch, item = self.batch, self.batch.manifest.items[index]
        prompt_id = item["prompt_id"]
        self.show(index, f"looking up prompt {prompt_id} from the last run", event=True)
        try:
            entry = self.until_back(lambda: self.client.history(prompt_id))
            if entry is None:
                if not (self.may_wait and self.until_back(lambda: self.client.knows(prompt_id))):
                    batch.update(index, status="pending")
                    batch.log(f"item {index}: {self.client.label} no longer knows prompt {prompt_id}; re-queued")
                    return True
                batch.log(f"item {index}: prompt {prompt_id} from the last run is still on {self.client.label}; "
                          "waiting for it")
                self.ws_error = None
                entry = self.wait(prompt_id, index)
            self.finish(index, entry)
            batch.log(f"item {index}: collected prompt {prompt_id} from the last run")
            return False
        except (ItemFailed, HttpError) as e:
            batch.update(index, status="pending", error=str(e))
            batch.log(f"item {index}: the last run's prompt did not succeed ({e}); re-queued")
            return True

    def redownload(self, index: int) -> bool:
        """A ``done`` item with files missing here: fetch them again, or re-run it if the server lost them."""
        item = self.batch.manifest.items[index]
        refs, names = item.get("remote") or [], item.get("outputs") or []
        try:
            if not refs or len(refs) != len(names):
                raise ItemFailed("the manifest does not say where its files came from")
            for ref, name in zip(refs, names):
                if not (self.batch.manifest.folder / name).is_file():
                    self.download(ref, name)
            self.batch.log(f"item {index}: downloaded its missing files again from {self.client.label}")
            return False
        except ItemFailed as e:
            self.batch.update(index, status="pending", outputs=[], remote=[], error=f"{e}; re-running")
            self.batch.log(f"item {index}: files missing and not on {self.client.label} ({e}); re-running")
            return True
