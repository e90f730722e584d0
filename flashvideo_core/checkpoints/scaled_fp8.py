"""The "scaled fp8" weight format that ComfyUI reads natively (0.3.64 directly, 0.33 by converting it to its
quantisation metadata): every Linear weight stored as float8_e4m3fn W / s with one per-tensor scale
s = absmax / 448 in ``<layer>.scale_weight``, plus an empty ``scaled_fp8`` marker tensor whose dtype names the
fp8 format. All Linears, because 0.3.64's scaled-fp8 layers store every Linear weight in fp8 (an unscaled one
would lose its range); the patch-embedding Conv2d, norms and biases stay as they are. About half the bytes of
bf16. The pack's own (CLI) loader dequantises it; ComfyUI keeps the fp8 weights and casts per layer.
"""

from __future__ import annotations

import math
import re

import torch

from ..errors import CheckpointError

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
MARKER = "scaled_fp8"
#: what a scale may be stored as
SCALE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
SCALE_SUFFIX = ".scale_weight"
INPUT_SUFFIX = ".scale_input"
#: the weights that are quantised: 2-D ``.weight`` tensors, i.e. every Linear of the DiT
LINEAR_WEIGHT = re.compile(r"\.weight$")


def is_scaled_fp8(tensors) -> bool:
    return MARKER in tensors


def is_quantization_key(key: str) -> bool:
    """The marker and the per-layer scales: not weights of the model itself."""
    return key == MARKER or key.endswith(SCALE_SUFFIX) or key.endswith(INPUT_SUFFIX)


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


def is_linear_weight(key: str, tensor: torch.Tensor) -> bool:
    """What ``quantize`` quantises, so what a scaled-fp8 DiT file must hold quantised: every 2-D ``.weight``."""
    return bool(LINEAR_WEIGHT.search(key)) and tensor.ndim == 2


def scale_key(weight_key: str) -> str:
    return weight_key[: -len(".weight")] + SCALE_SUFFIX


def checked(tensors: dict, source: str, must_scale=is_linear_weight, unscaled_fp8=lambda key: False) -> dict:
    """The one validation of a scaled-fp8 state dict, run before the pack dequantises it and before a host's fp8
    layers see it (they read scales unchecked: a zero, NaN or missing scale gives a black or NaN video, a scale of
    another shape a raw error deep in the host). Returns the tensors with every scale as a float32 scalar.

    ``must_scale(key, tensor)``: weights that must be quantised (a host's scaled-fp8 layer would otherwise cast a
    plain weight to fp8 with scale 1 and lose its range); ``unscaled_fp8(key)``: fp8 weights that may come without
    a scale (e.g. T5's embeddings, which the host casts up as they are)."""
    marker = tensors[MARKER]
    if marker.dtype not in (FP8, torch.float32) or marker.numel() > 2:
        raise CheckpointError(f"{source}: its {MARKER!r} marker is {marker.dtype} of shape {tuple(marker.shape)}; "
                              "ComfyUI and this pack read float8_e4m3fn scaled-fp8 files (an empty float8_e4m3fn "
                              "marker). The file is damaged or of another format: convert the original again "
                              "(python -m flashvideo_core convert --quantize scaled_fp8)")
    out = dict(tensors)
    for key, value in tensors.items():
        for suffix in (SCALE_SUFFIX, INPUT_SUFFIX):
            if key.endswith(suffix):
                if key[: -len(suffix)] + ".weight" not in tensors:
                    raise CheckpointError(f"{source}: {key} scales a weight {key[: -len(suffix)]}.weight that the "
                                          "file does not hold; the file is damaged: convert the original again")
                out[key] = one_scale(key, value, source)
    for key, value in tensors.items():
        if key == MARKER or is_quantization_key(key):
            continue
        scaled = key.endswith(".weight") and scale_key(key) in tensors
        if scaled and value.dtype != FP8:
            raise CheckpointError(f"{source}: {key} is stored as {value.dtype} beside its {SCALE_SUFFIX}; a scaled-fp8 "
                                  "weight is float8_e4m3fn (what ComfyUI's fp8 layers read). The file is damaged: "
                                  "convert the original again")
        if not scaled and value.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) and not unscaled_fp8(key):
            raise CheckpointError(f"{source}: {key} is stored in fp8 without its {SCALE_SUFFIX}, so its values have no "
                                  "known scale; the file is incomplete: convert the original again")
        if not scaled and must_scale(key, value):
            raise CheckpointError(f"{source}: {key} has no {SCALE_SUFFIX}: in a scaled-fp8 file every Linear weight is "
                                  "quantised with its scale (a host's fp8 layer would cut an unscaled one to fp8's "
                                  "range). The file is incomplete: convert the original again")
    return out


def one_scale(key: str, value: torch.Tensor, source: str) -> torch.Tensor:
    """One positive finite real number, as a float32 scalar (the shape both hosts' layers expect)."""
    if value.dtype not in SCALE_DTYPES or value.numel() != 1 or value.ndim > 1:
        raise CheckpointError(f"{source}: {key} is {value.dtype} of shape {tuple(value.shape)}; a scale is one real "
                              f"floating-point number ({', '.join(str(d).replace('torch.', '') for d in SCALE_DTYPES)}, "
                              "shape () or (1,)). The file is damaged: convert the original again")
    number = float(value.float().reshape(()))
    if not math.isfinite(number) or number <= 0:
        raise CheckpointError(f"{source}: {key} is {number}; a scale must be a positive finite number (it multiplies "
                              "every weight of its layer). The file is damaged: convert the original again")
    return value.float().reshape(())


def dequantize(tensors: dict, source: str) -> dict:
    """Plain weights (fp32 for the quantised ones) from a scaled-fp8 state dict, for the pack's own loader."""
    tensors = checked(tensors, source)
    out = {}
    for key, value in tensors.items():
        if key == MARKER or is_quantization_key(key):
            continue
        scale = tensors.get(scale_key(key)) if key.endswith(".weight") else None
        out[key] = value if scale is None else value.float() * scale
    return out
