"""A folder of videos as batch items (``--videos DIR``): which files count, what identifies each one, the name it
gets in the server's input folder, and how the prompts pair with the videos.

Each video is hashed once at start: the sha256 goes into the manifest (so a rerun resumes, and a video replaced
under the same name is seen like an edited prompt) and into the name the video is uploaded under
(``flashvideo_batch/<stem>_<sha256[:12]><ext>``), so one name always means one content: re-uploading with
``overwrite=true`` can never swap another batch's input, and the graph of an item changes exactly when its
video does.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import InputError
from .prompts import Prompt

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")
UPLOAD_SUBFOLDER = "flashvideo_batch"  # under the server's input folder; one name per content, so shared safely
STEM_CHARS = 60
CHUNK = 1 << 20


@dataclass(frozen=True)
class Video:
    """One video file of the folder, as it was when the run started."""

    path: Path
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    def record(self) -> dict[str, Any]:
        """What the manifest keeps per item: enough to tell this file from an edited or swapped one."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256}

    @property
    def upload_name(self) -> str:
        """``<stem>_<sha256[:12]><ext>`` in plain ASCII: the server stores the name it is sent without cleaning it,
        and the hash keeps two different clips called ``take1.mp4`` (or an edited one) apart."""
        stem = unicodedata.normalize("NFKD", self.path.stem).encode("ascii", "ignore").decode("ascii")
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:STEM_CHARS].rstrip("-_") or "video"
        return f"{stem}_{self.sha256[:12]}{self.path.suffix.lower()}"

    @property
    def expected_reference(self) -> str:
        """The LoadVideo ``file`` value once uploaded (``subfolder/name``), before the server has answered: what
        the item's graph key is computed with."""
        return f"{UPLOAD_SUBFOLDER}/{self.upload_name}"


def is_video_name(name: str) -> bool:
    """A video by its extension (any case); hidden files (``._clip.mp4`` from macOS copies, editors' temp files)
    are not videos."""
    return not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS)


def hash_file(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file read once in chunks (videos can be gigabytes: never read whole)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def list_videos(folder: Path) -> list[Video]:
    """Every video file directly in ``folder`` (not in subfolders), sorted by name, each hashed. Anything that
    would only fail later on the server (an empty or unreadable file, a name that is not UTF-8) is refused here,
    naming the file."""
    extensions = " ".join(VIDEO_EXTENSIONS)
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except FileNotFoundError:
        raise InputError(f"--videos {folder}: no such folder; give the folder that holds the videos") from None
    except NotADirectoryError:
        raise InputError(f"--videos {folder}: not a folder; give the folder that holds the videos (every "
                         f"{extensions} file directly in it is one item)") from None
    except OSError as e:
        raise InputError(f"--videos {folder}: cannot list it: {e.strerror or e}; check its permissions") from None
    videos = []
    for path in entries:
        if not is_video_name(path.name) or not path.is_file():
            continue
        try:
            path.name.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"--videos: {str(path)!r}: the file name is not valid UTF-8; rename the file") from None
        try:
            size, sha = hash_file(path)
        except OSError as e:
            raise InputError(f"--videos: cannot read {path}: {e.strerror or e}; fix its permissions or move it out "
                             f"of {folder}") from None
        if size == 0:
            raise InputError(f"--videos: {path} is empty (0 bytes), not a video; remove it from {folder}")
        videos.append(Video(path, size, sha))
    if not videos:
        raise InputError(f"--videos {folder}: no video files in it (looked for {extensions}, any case, directly in "
                         "the folder, not in subfolders)")
    return videos


def videos_sha256(videos: list[Video]) -> str:
    """One hash over the folder's videos (names, sizes, contents), for the batch's identity: adding, removing,
    renaming or editing a video makes it another batch, as editing the prompts file does."""
    return hashlib.sha256(json.dumps([v.record() for v in videos]).encode("utf-8")).hexdigest()


def pair_prompts(prompts: list[Prompt], videos: list[Video], source: str, folder: Path) -> list[Optional[Prompt]]:
    """The prompt for each video, in the videos' order: one prompt is used for every video, as many prompts as
    videos are paired in name order; any other count is ambiguous and refused. No prompts: None for each."""
    if not prompts:
        return [None] * len(videos)
    if len(prompts) == 1:
        return [prompts[0]] * len(videos)
    if len(prompts) == len(videos):
        return list(prompts)
    raise InputError(f"{source} has {len(prompts)} prompts and --videos {folder} has {len(videos)} videos: give one "
                     f"prompt (used for every video) or exactly {len(videos)} (paired with the videos in name order)")
