"""Reads the prompts file (one prompt per line, as FlashVideo's example.txt), keeping line numbers so errors
and the manifest can point back at the exact line a pipeline engineer has to fix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .inputfiles import read_input


@dataclass(frozen=True)
class Prompt:
    index: int  # 0-based position among the prompts: the seed offset and the output name prefix
    line: int  # 1-based line in the file
    text: str


def read_prompts(path: Path) -> tuple[list[Prompt], str]:
    """The prompts and the file's sha256; blank lines and lines starting with '#' are skipped."""
    data = read_input(path, "prompts file")
    if b"\0" in data:
        line = data[:data.index(b"\0")].count(b"\n") + 1
        raise InputError(f"{path}:{line}: contains a NUL byte; is this a text file?")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 (byte {data[e.start]:#04x} at column {column}); "
                         "save the file as UTF-8") from None
    prompts: list[Prompt] = []
    # split on "\n" only: str.splitlines also breaks on \v, \f, \x1c..\x1e and U+2028, which editors do not show
    for number, raw in enumerate(text.split("\n"), start=1):
        prompt = raw.strip()
        if prompt and not prompt.startswith("#"):
            prompts.append(Prompt(len(prompts), number, prompt))
    if not prompts:
        raise InputError(f"{path}: no prompts (only blank lines and # comments); write one prompt per line")
    return prompts, hashlib.sha256(data).hexdigest()
