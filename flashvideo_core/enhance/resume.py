"""The CLI's resumable output: each finished window's frames become an mp4 segment in a work folder beside the
output, with the overlap the next window cross-fades and a small state file; a killed run started again with the
same command continues after the last finished window, and the segments are joined (packets copied, no second
encode) with the input's audio at the end (docs/ENHANCE.md#stopping-and-resuming)."""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional

import torch

from ..errors import InputError
from ..io.output_files import output_file, write_bytes
from ..io.video import VideoWriter, concatenate
from .enhancer import Pending

STATE_VERSION = 1


def work_folder(output: str) -> str:
    return output + ".parts"


def file_identity(path: str) -> dict:
    """What says a file is still the one a run started with, without reading gigabytes again."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class ResumableOutput:
    """``write`` and ``saved`` are ``enhance_video``'s ``write`` and ``on_window``; ``finish`` joins the segments.
    ``key``: everything that changes the frames (input, models, settings); a work folder of another key is
    refused, not silently mixed or thrown away."""

    def __init__(self, output: str, key: dict, crf: int = 14, restart: bool = False):
        self.output, self.key, self.crf = output, key, crf
        self.folder = work_folder(output)
        self.state_path = os.path.join(self.folder, "state.json")
        self.restart = restart
        self.window = 0

    def start(self, fps) -> Pending:
        """Where to begin: after the last finished window of a matching earlier run, else at window 0."""
        self.fps = fps
        if os.path.islink(self.folder) or (os.path.exists(self.folder) and not os.path.isdir(self.folder)):
            raise InputError(f"{self.folder} (the run's work folder) is a link or a file; move it away")
        if os.path.isdir(self.folder) and hasattr(os, "getuid") and os.stat(self.folder).st_uid != os.getuid():
            raise InputError(f"{self.folder} (the run's work folder) belongs to another user, so its segments cannot "
                             "be trusted; move it away")
        if self.restart and os.path.isdir(self.folder):
            shutil.rmtree(self.folder)
        state = self._load_state()
        if state is None:
            os.makedirs(self.folder, exist_ok=True)
            self._save_state(0)
            return Pending(0, None)
        if state.get("key") != self.key:
            changed = sorted(k for k in set(self.key) | set(state.get("key", {}))
                             if self.key.get(k) != state.get("key", {}).get(k))
            raise InputError(f"{self.folder} holds an unfinished run with other settings ({', '.join(changed)} "
                             "changed); rerun with the same settings to resume it, or pass --restart to start over")
        self.window = int(state["windows_done"])
        frames = None
        if os.path.exists(self.pending(self.window)):
            frames = self._load_pending(self.pending(self.window))
        print(f"resuming after window {self.window} ({self.folder})")
        return Pending(self.window, frames)

    def segment(self, index: int) -> str:
        return os.path.join(self.folder, f"window_{index:05d}.mp4")

    def pending(self, index: int) -> str:
        """The overlap window ``index`` cross-fades (named by the window, so a kill between saving it and the state
        never pairs a window with the wrong overlap)."""
        return os.path.join(self.folder, f"overlap_{index:05d}.safetensors")

    def write(self, frames: torch.Tensor) -> None:
        with VideoWriter(self.segment(self.window), self.fps, self.crf, bframes=0, folder=self.folder) as writer:
            writer.write(frames)

    def saved(self, pending: Pending) -> None:
        """After window ``pending.next_window - 1``: its overlap first, then the state that points past it."""
        from safetensors.torch import save_file

        if pending.frames is not None:
            with output_file(self.pending(pending.next_window), self.folder) as temporary:
                save_file({"frames": pending.frames.contiguous()}, temporary)
        self._save_state(pending.next_window)
        if os.path.exists(self.pending(self.window)):
            os.unlink(self.pending(self.window))
        self.window = pending.next_window

    def finish(self, windows: int, audio_from: Optional[str]) -> int:
        frames = concatenate([self.segment(k) for k in range(windows)], self.output, audio_from)
        shutil.rmtree(self.folder, ignore_errors=True)
        return frames

    def _load_pending(self, path: str) -> torch.Tensor:
        """The saved overlap frames, (n, H, W, 3) floats in [0, 1]; anything else is a damaged work folder."""
        from safetensors.torch import load_file

        damaged = f"{path} is damaged; pass --restart to start the run over"
        if os.path.islink(path) or not os.path.isfile(path):
            raise InputError(f"{path} is not a regular file; pass --restart to start the run over")
        try:
            frames = load_file(path).get("frames")
        except Exception:  # safetensors raises its own error types for every kind of damage
            raise InputError(damaged) from None
        if (not isinstance(frames, torch.Tensor) or not frames.is_floating_point() or frames.ndim != 4
                or frames.shape[-1] != 3 or frames.numel() == 0 or not torch.isfinite(frames).all()
                or float(frames.min()) < 0 or float(frames.max()) > 1):
            raise InputError(damaged)
        return frames

    def _load_state(self) -> Optional[dict]:
        try:
            with open(self.state_path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise InputError(f"{self.state_path} is unreadable; pass --restart to start the run over") from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "windows_done" not in state:
            raise InputError(f"{self.state_path} is not a state this version wrote; pass --restart to start over")
        return state

    def _save_state(self, windows_done: int) -> None:
        state = {"version": STATE_VERSION, "windows_done": windows_done, "key": self.key}
        write_bytes(self.state_path, json.dumps(state, indent=1).encode("utf-8"), self.folder)
