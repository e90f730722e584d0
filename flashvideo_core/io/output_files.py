"""Writing an output file: the one way the pack puts a file on disk (videos, converted checkpoints, the enhance
run's state and segments, the batch client's downloads and manifest).

Every file is first written under a fresh private folder beside its final name (``.<name>.<random>.partial``,
made by ``mkdtemp``: mode 0700, created exclusively), then renamed into place. Nobody can plant a link at a
temporary name that does not exist before the write starts, and nobody else can add one inside that folder, so
no write is ever carried through a link to a file elsewhere. The rename replaces a link at the final name
itself, never the file it points to. A failed or interrupted write leaves the final name as it was.

``check_output_path`` checks a final name before any work (the temporary name fits too, a folder is not there,
an existing file only replaced on request, the file stays inside its output folder); ``output_file`` does the
write. Callers name the setting the path came from, so the message points at the user's flag or widget.
Pure standard library: the batch client uses it without torch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator, Optional

from ..errors import InputError

TEMPORARY_SUFFIX = ".partial"
#: what ``mkdtemp`` adds around the final name for the private folder: "." + name + "." + 8 random + suffix
TEMPORARY_EXTRA_BYTES = 1 + 1 + 8 + len(TEMPORARY_SUFFIX)


def _limit(folder: str, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError, AttributeError):
        return default


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` (its folder resolved through links, the name itself not) lies in ``folder`` (resolved)."""
    parent = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    root = os.path.realpath(folder)
    return parent == root or parent.startswith(root.rstrip(os.sep) + os.sep)


def check_output_path(path: str, setting: str, *, overwrite: bool = True, overwrite_flag: str = "",
                      folder: Optional[str] = None, fix_name: str = "choose a shorter output name") -> None:
    """Refuse, before any work, a final name that ``output_file`` could not write: a name or path over the file
    system's limits (the temporary name included), a folder where the file goes, an existing file when
    ``overwrite`` is off, a path leaving ``folder``. ``setting`` names where the path came from (a flag, a widget)."""
    name = os.path.basename(path)
    if not name or name in (".", ".."):
        raise InputError(f"{setting}: {path!r} names no file; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if folder is not None and not inside(path, folder):
        raise InputError(f"{setting}: {path} lies outside the output folder {folder} (through '..' or a link); "
                         "write inside the output folder")
    longest = len(os.fsencode(name)) + TEMPORARY_EXTRA_BYTES
    name_max = _limit(parent, "PC_NAME_MAX", 255)
    if longest > name_max:
        raise InputError(f"{setting}: the output name {name[:60]}... is {len(os.fsencode(name))} bytes; with the "
                         f"{TEMPORARY_EXTRA_BYTES} bytes of its temporary name that is over the file system's limit of "
                         f"{name_max}; {fix_name}")
    full = len(os.fsencode(os.path.abspath(path))) + 2 * TEMPORARY_EXTRA_BYTES + len(name)
    if full >= _limit(parent, "PC_PATH_MAX", 4096):
        raise InputError(f"{setting}: the output path {os.path.abspath(path)[:60]}... is over the system's path "
                         "limit with its temporary name; choose a shorter output folder")
    if os.path.isdir(path) and not os.path.islink(path):
        raise InputError(f"{setting}: {path} is a folder where an output file goes; move it away or choose another "
                         "output")
    if os.path.lexists(path) and not overwrite:
        raise InputError(f"{setting}: {path} already exists; pass {overwrite_flag or 'overwrite'} to replace it, or "
                         "choose another output")


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, for every thread)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


@contextmanager
def output_file(path: str, folder: Optional[str] = None) -> Iterator[str]:
    """Yield a temporary path to write ``path``'s content to (by any writer: PyAV, safetensors, open()); when the
    block ends without an error the file gets the usual mode and is renamed to ``path``. ``folder``: the output
    folder ``path`` must stay in. A file system failure stays an OSError naming the file (callers check names and
    folders first with ``check_output_path``; what is left is a full disk or a folder deleted meanwhile)."""
    if folder is not None and not inside(path, folder):
        raise InputError(f"{path} lies outside the output folder {folder}; write inside the output folder")
    parent, name = os.path.split(os.path.abspath(path))
    private = tempfile.mkdtemp(prefix=f".{name}.", suffix=TEMPORARY_SUFFIX, dir=parent)
    temporary = os.path.join(private, name)
    try:
        yield temporary
        if os.path.islink(temporary) or not os.path.isfile(temporary):
            raise InputError(f"{path}: nothing was written")
        os.chmod(temporary, 0o666 & ~_umask())  # safetensors creates 0600 files; give the usual mode
        os.replace(temporary, path)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def write_bytes(path: str, data: bytes, folder: Optional[str] = None, sync: bool = False) -> None:
    """A small file (a state, a manifest) written whole through ``output_file``; ``sync``: on disk before the
    rename, so a crash leaves the old or the new content, never an empty file."""
    with output_file(path, folder) as temporary:
        with open(temporary, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
