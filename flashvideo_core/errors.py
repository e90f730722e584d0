"""Exceptions the pack raises on purpose.

Every message names the problem and the fix, so a ComfyUI user (who only sees the
message in a red box) knows what to change without reading a traceback.
"""


class FlashVideoError(Exception):
    """Base class: anything the pack reports deliberately."""


class CheckpointError(FlashVideoError):
    """A model file could not be read, was not recognised, or did not fit the model."""


class InputError(FlashVideoError, ValueError):
    """A tensor or setting given to the core is off its valid grid or holds NaN/Inf."""


class Cancelled(FlashVideoError):
    """The user cancelled a long operation (raised between chunks/steps, never mid-kernel)."""
