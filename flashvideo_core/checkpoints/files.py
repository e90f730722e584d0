"""Opening a model file: only regular files, checked with ``stat`` before anything reads them.

A FIFO, a terminal or ``/dev/zero`` given as a model path would block or stream forever in
``open``/``read``; a symlink loop or an over-long name fails with an errno nobody reads. Each
gets a :class:`CheckpointError` naming the path, the cause and what to give instead.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import CheckpointError

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def describe(path) -> str:
    """The path as shown in messages (long names shortened, so the message stays readable)."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else repr(path)
    return text if len(text) <= 300 else f"{text[:140]}...{text[-140:]} ({len(text)} characters)"


def check_regular_file(path: str) -> os.stat_result:
    """``stat`` the path (following symlinks) and refuse anything but a non-empty regular file."""
    shown = describe(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise CheckpointError(f"{shown}: is a symlink to {os.readlink(path)!r}, which does not exist; "
                                  "fix or remove the link") from None
        raise CheckpointError(f"{shown}: file not found; check the path and the models folder") from None
    except ValueError:
        raise CheckpointError(f"{shown}: the path contains a NUL byte; give a plain file path") from None
    except OSError as e:
        raise CheckpointError(f"{shown}: {_errno_text(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(
            f"{shown}: is a folder. Point to a single model file (.safetensors, .pt, .bin); "
            f"for a diffusers folder use its diffusion_pytorch_model.safetensors"
        )
    for test, kind in _KINDS:
        if test(st.st_mode):
            raise CheckpointError(f"{shown}: is {kind}, not a regular file; give the path of the downloaded model file")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{shown}: is not a regular file; give the path of the downloaded model file")
    if st.st_size == 0:
        raise CheckpointError(f"{shown}: the file is empty (an interrupted download?); download it again")
    return st


def open_regular_file(path: str):
    """Open for reading without ever blocking (O_NONBLOCK: a FIFO swapped in after ``stat`` cannot hang us),
    and check the opened file is still the regular file that was checked. Returns (binary file, size)."""
    st = check_regular_file(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise CheckpointError(f"{describe(path)}: {_errno_text(e)}") from None
    fst = os.fstat(fd)
    if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise CheckpointError(f"{describe(path)}: the file changed while it was being opened; try again")
    return os.fdopen(fd, "rb"), fst.st_size


def _errno_text(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "the path is a symlink loop (or has too many levels of links); point to the real file"
    if e.errno == errno.ENAMETOOLONG:
        return "the file name is too long for the file system (at most 255 bytes per name); rename the file"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; make the file readable by the user running ComfyUI"
    if e.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a folder; check the path"
    return f"cannot be opened ({e.strerror or e}); check the path"


def available_memory() -> int | None:
    """Bytes the process could still get (MemAvailable + SwapFree), or None where /proc/meminfo is missing."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[1:2]}
        return info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, KeyError, ValueError, IndexError):
        return None


def check_memory(nbytes: int, shown: str) -> None:
    """Refuse before reading when the weights cannot fit: a clear message instead of the OOM killer."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise CheckpointError(f"{shown}: loading needs {nbytes / 2**30:.1f} GiB of memory but only {free / 2**30:.1f} GiB "
                              "is available; close other programs, or use a smaller file (convert --dtype bf16, or "
                              "--quantize scaled_fp8 for the DiTs)")
