"""Finds a finished prompt's files in its ``/history`` entry and names their local copies predictably, so a
pipeline can find item 7's video without reading the manifest: ``0007_<prompt slug>_<node>_<server name>``, or
for a ``--videos`` item ``0007_<video stem slug>_<node>_<server name>`` (the index keeps clips with the same
stem, such as ``take.mp4`` and ``take.mov``, apart)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

SLUG_CHARS = 40
NAME_CHARS = 160  # well under the usual 255-byte file name limit, with room for the ".<name>.part" download
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def is_safe_name(name: object) -> bool:
    """A plain file name inside the output folder: no path, no leading dot, nothing a manifest edit could use to
    write elsewhere. Every name this client makes passes."""
    return isinstance(name, str) and len(name) <= NAME_CHARS and SAFE_NAME.fullmatch(name) is not None


def slug(text: str, limit: int = SLUG_CHARS) -> str:
    """Lowercase ASCII words joined by '-', at most ``limit`` characters ('prompt' if nothing is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:limit].rstrip("-") or "prompt"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".") or "file"


def collect_outputs(entry: dict[str, Any]) -> list[dict[str, str]]:
    """Every file reference under ``outputs[node]`` (images, gifs, videos, animated or any list of dicts with a
    filename), in node order, without duplicates. Non-file entries such as ``"animated": [true]`` are skipped."""
    refs, seen = [], set()
    outputs = entry.get("outputs")
    outputs = outputs if isinstance(outputs, dict) else {}  # a malformed answer lists no files (then: "no output")
    for node_id in sorted(outputs, key=lambda n: (len(str(n)), str(n))):
        node_outputs = outputs[node_id]
        for values in node_outputs.values() if isinstance(node_outputs, dict) else ():
            for value in values if isinstance(values, list) else ():
                if isinstance(value, dict) and isinstance(value.get("filename"), str):
                    ref = {"node": str(node_id), "filename": value["filename"],
                           "subfolder": str(value.get("subfolder") or ""), "type": str(value.get("type") or "output")}
                    key = (ref["filename"], ref["subfolder"], ref["type"])
                    if key not in seen:
                        seen.add(key)
                        refs.append(ref)
    return refs


def name_source(item: dict[str, Any]) -> str:
    """The text an item's files are named after: its video's stem (a --videos item: the clip is what a user
    looks for), else its prompt."""
    video = item.get("video")
    if isinstance(video, dict) and isinstance(video.get("name"), str):
        return video["name"].rsplit(".", 1)[0]
    return item.get("prompt") or ""


def local_names(index: int, prompt: str, refs: list[dict[str, str]]) -> list[str]:
    """``<index:04d>_<slug>_<node_id>_<filename>`` for each ref, made unique if two refs would clash."""
    names: list[str] = []
    for ref in refs:
        name = f"{index:04d}_{slug(prompt)}_{_safe(ref['node'])[:20]}_{_safe(ref['filename'])}"
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        ext = ext[:12]
        stem = stem[:NAME_CHARS - 20 - len(ext)]
        name = f"{stem}{dot}{ext}"
        n = 1
        while name in names:
            n += 1
            name = f"{stem}-{n}{dot}{ext}"
        names.append(name)
    return names


def summarize_files(names: list[str]) -> str:
    """'first.mp4 (+3 more)' for logs and the summary."""
    return f"{names[0]}{f' (+{len(names) - 1} more)' if len(names) > 1 else ''}" if names else "(no files)"
