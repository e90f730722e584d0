"""The "scaled fp8" weight format that ComfyUI reads natively (0.3.64 directly, 0.33 by converting it to its
quantisation metadata): every Linear weight stored as float8_e4m3fn W / s with one per-tensor scale
s = absmax / 448 in ``<layer>.scale_weight``, plus an empty ``scaled_fp8`` marker tensor whose dtype names the
fp8 format. All Linears, because 0.3.64's scaled-fp8 layers store every Linear weight in fp8 (an unscaled one
would lose its range); the patch-embedding Conv2d, norms and biases stay as they are. About half the bytes of
bf16. The pack's own (CLI) loader dequantises it; ComfyUI keeps the fp8 weights and casts per layer.
"""

from __future__ import annotations

import re

import torch

from ..errors import CheckpointError

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
MARKER = "scaled_fp8"
#: what a quantised weight and its scale may be stored as
STORED_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float32, torch.float16, torch.bfloat16)
SCALE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
SCALE_SUFFIX = ".scale_weight"
#: the weights that are quantised: 2-D ``.weight`` tensors, i.e. every Linear of the DiT
LINEAR_WEIGHT = re.compile(r"\.weight$")


def is_scaled_fp8(tensors) -> bool:
    return MARKER in tensors


def is_quantization_key(key: str) -> bool:
    """The marker and the per-layer scales: not weights of the model itself."""
    return key == MARKER or key.endswith(SCALE_SUFFIX) or key.endswith(".scale_input")


def quantize(tensors: dict, config) -> dict:
    """The canonical state dict with every Linear (2-D) weight in scaled fp8."""
    out = {}
    for key, value in tensors.items():
        if LINEAR_WEIGHT.search(key) and value.ndim == 2:
            weight = value.detach().float()
            scale = weight.abs().max().clamp(min=1e-12) / FP8_MAX
            out[key] = (weight / scale).to(FP8)
            out[key[: -len(".weight")] + SCALE_SUFFIX] = scale.reshape(())
        else:
            out[key] = value
    out[MARKER] = torch.empty(0, dtype=FP8)
    return out


def dequantize(tensors: dict, source: str) -> dict:
    """Plain weights (fp32 for the quantised ones) from a scaled-fp8 state dict, for the pack's own loader."""
    marker = tensors[MARKER]
    if marker.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2, torch.float32):
        raise CheckpointError(f"{source}: unknown scaled fp8 marker dtype {marker.dtype}; expected float8_e4m3fn")
    out = {}
    for key, value in tensors.items():
        if key == MARKER or key.endswith(SCALE_SUFFIX) or key.endswith(".scale_input"):
            continue
        scale_key = key[: -len(".weight")] + SCALE_SUFFIX if key.endswith(".weight") else None
        if scale_key in tensors:
            if value.dtype not in STORED_DTYPES or tensors[scale_key].dtype not in SCALE_DTYPES:
                raise CheckpointError(f"{source}: {key} ({value.dtype}) with scale {scale_key} "
                                      f"({tensors[scale_key].dtype}): a scaled-fp8 weight must be fp8 (or float) with a "
                                      "float scale; the file is damaged: convert the original again")
            scale = tensors[scale_key].float()
            if scale.numel() != 1 or not torch.isfinite(scale).all() or float(scale) <= 0:
                raise CheckpointError(f"{source}: {scale_key} must be one positive finite number, got "
                                      f"{str(scale.flatten()[:4].tolist())[:80]}; the file is damaged: convert again")
            out[key] = value.float() * scale
        elif value.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            raise CheckpointError(f"{source}: {key} is stored in fp8 without a {SCALE_SUFFIX}; the file is incomplete")
        else:
            out[key] = value
    return out
