"""The batch's memory: ``<output-dir>/manifest.json`` records every item's state, server, prompt_id and files.

It is rewritten atomically (temp file, fsync, ``os.replace``) after every state change, so a crash, a
Ctrl-C or a dead server never loses what is done, and a rerun of the same command skips finished items and
picks up prompts that were still running. The input hashes make sure a rerun really is the same batch.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import IO, Any, Optional

from .client import normalize_server
from flashvideo_core.io.output_files import write_bytes

from .errors import InputError, LocalWriteError
from .jsonvalues import loads
from .outputs import is_safe_name
from .prompts import Prompt

MANIFEST_NAME = "manifest.json"
VERSION = 1
STATUSES = ("pending", "running", "done", "failed")

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, concurrent runs on one folder are the user's problem
    fcntl = None  # type: ignore[assignment]


def lock_folder(folder: Path) -> Optional[IO[str]]:
    """Hold an advisory lock on the output folder for the run (released when the handle or process closes):
    two runs sharing one manifest would do items twice."""
    try:  # O_NOFOLLOW: a link planted in the folder must not make us create a file elsewhere
        fd = os.open(folder / ".manifest.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise InputError(f"cannot write in --output-dir {folder}: {e.strerror or e}; make it writable or pick "
                         "another folder") from None
    handle = os.fdopen(fd, "a+")
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InputError(f"another flashvideo_queue run is using {folder}; wait for it or pick another "
                         "--output-dir") from None
    return handle


def new_item(prompt: Prompt, seed: Optional[int], key: str, video: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """``key``: hash of the graph this item submits (output prefix aside): what "the same item" means. ``video``:
    the --videos file's record (name, size, sha256), for an item made from a video."""
    item = {"index": prompt.index, "line": prompt.line, "prompt": prompt.text, "seed": seed, "key": key,
            "status": "pending", "server": None, "prompt_id": None, "attempts": 0, "outputs": [], "remote": [],
            "error": None}
    if video is not None:
        item["video"] = dict(video)
    return item


def item_label(item: dict[str, Any]) -> str:
    """How logs and the summary point at an item's input: its video's file name, its line in the prompts file,
    or --prompt."""
    video = item.get("video")
    if isinstance(video, dict) and isinstance(video.get("name"), str):
        return video["name"]
    return f"line {item['line']}" if item.get("line") is not None else "--prompt"


CARRIED = ("status", "server", "prompt_id", "attempts", "outputs", "remote", "error")


def item_problem(old: Any, fresh: dict[str, Any]) -> Optional[str]:
    """Why a manifest item cannot be trusted as the record of ``fresh`` (None if it can): another prompt, seed or
    graph, or fields an edit made unsafe (a file name with a path in it, an unknown status, a bad server URL)."""
    if not isinstance(old, dict):
        return "missing"
    for key in ("index", "prompt", "seed", "key", *(("video",) if "video" in fresh else ())):
        if old.get(key, fresh[key]) != fresh[key] or (key != "key" and key not in old):
            return f"its {key} differs"
    if old.get("status") not in STATUSES:
        return f"unknown status {old.get('status')!r}"
    outputs, remote = old.get("outputs"), old.get("remote")
    if not isinstance(outputs, list) or not all(is_safe_name(n) for n in outputs):
        return "its output names are not plain file names in the output folder"
    if not isinstance(remote, list) or not all(isinstance(r, dict) and all(isinstance(r.get(k), str) for k in (
            "filename", "subfolder", "type")) for r in remote):
        return "its remote file list is malformed"
    if not isinstance(old.get("attempts"), int) or old["attempts"] < 0:
        return "its attempt count is malformed"
    if old.get("prompt_id") is not None and not isinstance(old["prompt_id"], str):
        return "its prompt_id is malformed"
    if old.get("server") is not None:
        try:
            if normalize_server(old["server"]) != old["server"]:
                return "its server URL is malformed"
        except InputError:
            return "its server URL is malformed"
    if old["status"] == "done" and not outputs:
        return None  # a finished prompt without files (no save node) is still done
    if old["status"] == "running" and not (old.get("prompt_id") and old.get("server")):
        return "it is running without a prompt_id and server"
    return None


class Manifest:
    """Thread-safe owner of the manifest dict; every ``update`` is saved before it returns."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data
        self.lock = threading.RLock()

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.data["items"]

    @classmethod
    def create(cls, folder: Path, header: dict[str, Any], items: list[dict[str, Any]]) -> "Manifest":
        manifest = cls(folder / MANIFEST_NAME, {"version": VERSION, **header, "items": items})
        manifest.save()
        return manifest

    @classmethod
    def load(cls, folder: Path) -> Optional["Manifest"]:
        path = folder / MANIFEST_NAME
        try:
            data = loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # JsonProblem and UnicodeDecodeError are ValueErrors
            raise InputError(f"{path} is unreadable ({e}); pass --restart to start the batch over") from None
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("items"), list):
            raise InputError(f"{path} is not a flashvideo_queue manifest (version {VERSION}); use another "
                             "--output-dir or pass --restart")
        return cls(path, data)

    def check_same_batch(self, header: dict[str, Any]) -> None:
        """Refuse to resume a manifest written for other inputs: its done items would not match this batch."""
        def section(key: str) -> dict:  # an edited manifest may hold anything here
            value = self.data.get(key)
            return value if isinstance(value, dict) else {}

        inputs = ["workflow", "prompts"] + (["videos"] if "videos" in header or "videos" in self.data else [])
        changed = [key for key in inputs if section(key).get("sha256") != (header.get(key) or {}).get("sha256")]
        changed += [f"{key} {section('settings').get(key)!r} -> {value!r}"
                    for key, value in header["settings"].items() if section("settings").get(key) != value]
        if changed:
            raise InputError(f"{self.path} belongs to another batch ({', '.join(changed)} changed since it was "
                             "written); use a new --output-dir, or pass --restart to start over in this one")

    def reconcile(self, fresh: list[dict[str, Any]], carry: Optional[set] = None) -> list[str]:
        """Rebuild the item list from ``fresh`` (one per prompt), keeping each old record that still describes its
        item, so a manifest that lost or garbled items never makes them count as done. ``carry``: the statuses to
        keep (None: all); with --restart only finished and still-running prompts carry over, matched by graph.
        Returns a warning per item that could not be trusted."""
        old_items = self.data.get("items") if isinstance(self.data.get("items"), list) else []
        by_key: dict[Any, dict] = {}
        for old in old_items:
            if isinstance(old, dict):
                by_key.setdefault(old.get("key") if carry is not None else old.get("index"), old)
        warnings, items = [], []
        for item in fresh:
            old = by_key.pop(item["key"] if carry is not None else item["index"], None)
            if carry is not None and isinstance(old, dict):
                # kept only at the same position: its files are named after its index (0007_...)
                old = {**old, "line": item["line"]} if old.get("index") == item["index"] else None
            problem = item_problem(old, item) if old is not None else "missing"
            if problem is None and (carry is None or old["status"] in carry):
                item.update({k: old[k] for k in CARRIED if k in old})
            elif carry is None:
                warnings.append(f"manifest item {item['index']} ({item_label(item)}): {problem}; rendering it")
            items.append(item)
        self.data["items"] = items
        return warnings

    def update(self, index: int, **fields: Any) -> dict[str, Any]:
        with self.lock:
            item = self.items[index]
            item.update(fields)
            self.save()
            return dict(item)

    def counts(self) -> dict[str, int]:
        with self.lock:
            counts = dict.fromkeys(STATUSES, 0)
            for item in self.items:
                counts[item["status"]] += 1
            return counts

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return json.loads(json.dumps(self.items))

    def save(self) -> None:
        """Write atomically; a deleted output folder is made again (the state is in memory), any other failure is
        a LocalWriteError."""
        with self.lock:
            text = (json.dumps(self.data, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
            try:
                self._write(text)
            except FileNotFoundError:
                try:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    self._write(text)
                except OSError as e:
                    raise LocalWriteError(self.path, e) from None
            except OSError as e:
                raise LocalWriteError(self.path, e) from None

    def _write(self, text: bytes) -> None:
        write_bytes(str(self.path), text, sync=True)
