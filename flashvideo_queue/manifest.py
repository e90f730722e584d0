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

from .errors import InputError
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
    if fcntl is None:
        return None
    handle = open(folder / ".manifest.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InputError(f"another flashvideo_queue run is using {folder}; wait for it or pick another "
                         "--output-dir") from None
    return handle


def new_item(prompt: Prompt, seed: Optional[int]) -> dict[str, Any]:
    return {"index": prompt.index, "line": prompt.line, "prompt": prompt.text, "seed": seed, "status": "pending",
            "server": None, "prompt_id": None, "attempts": 0, "outputs": [], "remote": [], "error": None}


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
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise InputError(f"{path} is unreadable ({e}); pass --restart to start the batch over") from None
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("items"), list):
            raise InputError(f"{path} is not a flashvideo_queue manifest (version {VERSION}); use another "
                             "--output-dir or pass --restart")
        return cls(path, data)

    def check_same_batch(self, header: dict[str, Any]) -> None:
        """Refuse to resume a manifest written for other inputs: its done items would not match this batch."""
        changed = [key for key in ("workflow", "prompts")
                   if self.data.get(key, {}).get("sha256") != header[key]["sha256"]]
        changed += [f"{key} {self.data.get('settings', {}).get(key)!r} -> {value!r}"
                    for key, value in header["settings"].items() if self.data.get("settings", {}).get(key) != value]
        if changed:
            raise InputError(f"{self.path} belongs to another batch ({', '.join(changed)} changed since it was "
                             "written); use a new --output-dir, or pass --restart to start over in this one")

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
        with self.lock:
            text = json.dumps(self.data, indent=1, ensure_ascii=False)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
