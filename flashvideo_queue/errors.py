"""The few outcomes the queue tells apart, as exceptions: each maps to a different recovery (or exit code)."""

from __future__ import annotations


class InputError(Exception):
    """Bad command line, prompts file, workflow or manifest, or no server to talk to: exit code 2, nothing queued."""


class InputFileError(Exception):
    """A local input file (a video being uploaded) could not be read, or changed since the run started: the
    item fails with the file's name and the fix. Not an OSError on purpose: a read failure here must never be
    mistaken for an unreachable server."""


class ServerUnreachable(OSError):
    """The server did not answer (refused, reset, timed out): maybe transient, maybe dead."""


class HttpError(Exception):
    """The server answered with an unexpected HTTP status."""

    def __init__(self, method: str, path: str, status: int, body: object):
        super().__init__(f"{method} {path}: HTTP {status}: {str(body)[:300]}")
        self.status, self.body = status, body


class ItemFailed(Exception):
    """This attempt at an item failed (execution error, timeout, missing output): retry it."""

    permanent = False
    final_note = ""  # for a permanent failure: why it is not retried, and what to do


class ItemRejected(ItemFailed):
    """The server refused the graph (validation errors): the same graph would be refused again, so it is not
    retried; the message says what to fix."""

    permanent = True
    final_note = "validation errors are not retried: fix the workflow, its inputs or --set, then rerun"


class UploadRefused(ItemFailed):
    """The item's input file could not be sent (unreadable, changed since the start, larger than the server
    accepts): another attempt would fail the same way, so it is not retried; the message says what to fix."""

    permanent = True
    final_note = "not retried: the same file would fail again"


class ServerGone(Exception):
    """The server stayed unreachable past the grace period: its worker stops, its item goes back to the queue."""


class Stopped(Exception):
    """The run is stopping (Ctrl-C): leave the item as it is in the manifest."""


class LocalWriteError(OSError):
    """A file could not be written here (read-only or deleted folder, full disk, name too long): not the server's
    fault, and the server still holds the result, so the item stays collectable and the run stops to be fixed."""

    def __init__(self, path: object, error: OSError):
        super().__init__(error.errno, f"cannot write {path}: {error.strerror or error}")
        self.path = path

    def __str__(self) -> str:
        return self.strerror
