"""Strict state-dict matching with errors a user can act on.

The reference loads with ``strict=False`` and only prints what did not fit, so a
wrong or partial file silently produces garbage. Here every key must be used and
every shape must match, and the error names the file, the detected layout and the
first offenders.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import CheckpointError
from .weights import PLAIN, checked_weights

SHOWN = 5


def check_state_dict(model: nn.Module, state_dict: dict, source: str, layout: str) -> None:
    """Keys, shapes and (through the one value check every loader uses) the weights' dtypes and values."""
    check_keys(model, state_dict, source, layout)
    checked_weights(state_dict, source, PLAIN)


def check_keys(model: nn.Module, state_dict: dict, source: str, layout: str) -> None:
    """Every key of the model present with its shape, nothing else."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {expected[k]}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if items:
            more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
            problems.append(f"{len(items)} {label}: " + "; ".join(items[:SHOWN]) + more)
    if problems:
        raise CheckpointError(
            f"{source} (detected layout: {layout}) does not fit the model it describes: "
            + " | ".join(problems)
            + ". The file is probably incomplete, of another model, or a variant this pack does not know."
        )


def materialize(model_factory, state_dict: dict, source: str, layout: str, device=None, dtype=None) -> nn.Module:
    """Build the model without allocating random weights, check and load ``state_dict``."""
    with torch.device("meta"):
        model = model_factory()
    check_state_dict(model, state_dict, source, layout)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model = model.to(device=device or "cpu", dtype=dtype)
    return model.eval().requires_grad_(False)
