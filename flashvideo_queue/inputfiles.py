"""The one way the client reads a local input file it is given by name (the workflow, the prompts file): only
a regular file is read (a FIFO or device would block forever, a folder answers with an odd OSError), and only up
to a size no real input reaches, so a wrong path fails at once with the file named."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputError

MAX_BYTES = 128 << 20  # a 100,000-node UI workflow saved by ComfyUI is about 40 MB


def read_input(path: Path, what: str, limit: int = MAX_BYTES) -> bytes:
    """The file's bytes; ``what`` ("workflow", "prompts file") names it in a refusal."""
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else "not a regular file"
            raise InputError(f"{what} {path} is {kind}; pass the path of a {what} file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit:,} bytes"
        raise InputError(f"{what} {path} is larger than {size}, the most this client reads; is this the right file?")
    return data
