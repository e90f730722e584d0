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

SHOWN = 5


#: dtypes a weight may be stored in; fp8 only inside a scaled-fp8 file (its scales come with it)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def check_state_dict(model: nn.Module, state_dict: dict, source: str, layout: str, allow_fp8: bool = False) -> None:
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
    check_weight_values(state_dict, source, allow_fp8)


def check_weight_values(state_dict: dict, source: str, allow_fp8: bool = False) -> None:
    """Every weight real floating point (no int/bool/complex storage to be cast silently) and finite."""
    allowed = FLOAT_DTYPES + (FP8_DTYPES if allow_fp8 else ())
    wrong = [f"{k} ({v.dtype})" for k, v in state_dict.items() if v.dtype not in allowed]
    if wrong:
        raise CheckpointError(
            f"{source}: {len(wrong)} weights are not stored as real floating point numbers (e.g. {wrong[0]}); "
            f"a model file stores weights in {', '.join(str(d).replace('torch.', '') for d in FLOAT_DTYPES)}"
            + (" (or fp8 in a scaled-fp8 file)" if not allow_fp8 else "")
            + ". The file is damaged or not a FlashVideo model: download the official one."
        )
    bad = [k for k, v in state_dict.items() if not _all_finite(v)]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} tensors hold NaN/Inf (e.g. {bad[0]}); the file is damaged. "
                              "Download it again.")


def _all_finite(tensor: torch.Tensor) -> bool:
    if tensor.dtype in FP8_DTYPES:  # no isfinite kernel for fp8: widen (tensor by tensor, so peak stays one tensor)
        tensor = tensor.float()
    return bool(torch.isfinite(tensor).all())


def materialize(model_factory, state_dict: dict, source: str, layout: str, device=None, dtype=None) -> nn.Module:
    """Build the model without allocating random weights, check and load ``state_dict``."""
    with torch.device("meta"):
        model = model_factory()
    check_state_dict(model, state_dict, source, layout)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model = model.to(device=device or "cpu", dtype=dtype)
    return model.eval().requires_grad_(False)
