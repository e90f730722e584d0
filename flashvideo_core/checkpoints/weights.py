"""The weights of every model file, checked once, whoever loads them.

Every loader (the core DiT and VAE, ``convert``, the native DiT loader, the T5 loader) reads its file with
``io.read_checkpoint`` (regular file, non-blocking, safetensors or weights-only pickle, memory, tensor kinds) and
passes the tensors it will use through :func:`checked_weights` before a model or a host sees them: real floating
point only, every value finite, and quantised files (scaled fp8, ComfyUI 0.33's per-layer fp8) with valid scales.
A weight stored as int/bool, a NaN, or a zero scale would otherwise load silently and surface later as a black
or NaN video, or as a raw error from the host far from its cause.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import CheckpointError
from . import scaled_fp8

#: dtypes a weight may be stored in; fp8 only in a quantised file (its scales come with it) or where rules allow it
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
#: ComfyUI 0.33's per-layer quantisation: a ``<layer>.comfy_quant`` JSON entry and scales under these names
LAYER_QUANT = ".comfy_quant"
LAYER_SCALES = (".weight_scale", ".input_scale", ".weight_scale_2")
LAYER_FP8_FORMATS = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
MAX_QUANT_JSON = 4096


def _never(*_args) -> bool:
    return False


@dataclass(frozen=True)
class WeightRules:
    """What one model's files may hold besides plain finite float weights."""

    #: scaled-fp8 files (marker + ``.scale_weight``) are read
    scaled_files: bool = False
    #: in a scaled-fp8 file, the weights that must be quantised (key, tensor) -> bool
    must_scale: Callable = scaled_fp8.is_linear_weight
    #: fp8 weights that may come without a scale (key) -> bool; the host casts them up as they are
    unscaled_fp8: Callable = _never
    #: ComfyUI 0.33's per-layer fp8 format (``.comfy_quant`` + ``.weight_scale``) is read
    layer_quant: bool = False
    #: entries that are no weights of the model (key) -> bool: neither checked nor refused here
    auxiliary: Callable = _never


#: the VAE and prompt embeddings: plain float weights only
PLAIN = WeightRules()
#: the DiTs: plain, or scaled fp8 as ``convert --quantize scaled_fp8`` writes it
DIT = WeightRules(scaled_files=True)


def checked_weights(tensors: dict, source: str, rules: WeightRules = PLAIN) -> dict:
    """The tensors a model will take, refused with the file, the cause and the fix unless every weight is real
    floating point and finite and every scale valid. Returns them with the scales as float32 scalars."""
    if scaled_fp8.is_scaled_fp8(tensors):
        if not rules.scaled_files:
            raise CheckpointError(f"{source}: a scaled-fp8 file, which this model is not read from; give its plain "
                                  "(fp32/fp16/bf16) file")
        tensors = scaled_fp8.checked(tensors, source, rules.must_scale, rules.unscaled_fp8)
        fp8_ok, skip = (lambda key: True), scaled_fp8.is_quantization_key
    elif rules.layer_quant and any(k.endswith(LAYER_QUANT) for k in tensors):
        tensors, quantised = _checked_layer_quant(tensors, source)
        fp8_ok = lambda key: key in quantised or rules.unscaled_fp8(key)  # noqa: E731
        skip = lambda key: key.endswith(LAYER_QUANT) or key.endswith(LAYER_SCALES)  # noqa: E731
    else:
        stray = next((k for k in tensors if k.endswith(LAYER_SCALES + (LAYER_QUANT, scaled_fp8.SCALE_SUFFIX,
                                                                         scaled_fp8.INPUT_SUFFIX))), None)
        if stray is not None and not rules.auxiliary(stray):
            raise CheckpointError(f"{source}: holds the quantisation entry {stray} but no quantised format that "
                                  "declares it (a scaled_fp8 marker or a .comfy_quant entry), so its weights would "
                                  "be read unscaled; the file is damaged: download or convert it again")
        fp8_ok, skip = rules.unscaled_fp8, _never
    check_weight_values({k: v for k, v in tensors.items() if not rules.auxiliary(k) and not skip(k)}, source, fp8_ok)
    return tensors


def check_weight_values(state_dict: dict, source: str, fp8_ok: Callable = _never) -> None:
    """Every weight real floating point (no int/bool/complex storage to be cast silently; fp8 where ``fp8_ok``)
    and finite."""
    wrong = [f"{k} ({v.dtype})" for k, v in state_dict.items()
             if v.dtype not in FLOAT_DTYPES and not (v.dtype in FP8_DTYPES and fp8_ok(k))]
    if wrong:
        raise CheckpointError(
            f"{source}: {len(wrong)} of its weights not stored as real floating point numbers (e.g. {wrong[0]}); "
            f"a model file stores weights in {', '.join(str(d).replace('torch.', '') for d in FLOAT_DTYPES)}"
            " (or fp8 with its scales in a quantised file). The file is damaged or not the model it should be: "
            "download the official one.")
    bad = [k for k, v in state_dict.items() if not _all_finite(v)]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} of its tensors hold NaN/Inf (e.g. {bad[0]}); the file is damaged. "
                              "Download it again.")


def _all_finite(tensor: torch.Tensor) -> bool:
    if tensor.dtype in FP8_DTYPES:  # no isfinite kernel for fp8: widen (tensor by tensor, so peak stays one tensor)
        tensor = tensor.float()
    return bool(torch.isfinite(tensor).all())


def _checked_layer_quant(tensors: dict, source: str) -> tuple[dict, set]:
    """ComfyUI 0.33's per-layer format, fp8 formats only (the ones whose scales can be checked here): each
    ``<layer>.comfy_quant`` names a float8 format, ``<layer>.weight`` is stored in it, its ``.weight_scale`` and
    ``.input_scale`` are one positive finite number. Returns (tensors with float32 scalar scales, quantised weights)."""
    out, quantised = dict(tensors), set()
    for key, value in tensors.items():
        if not key.endswith(LAYER_QUANT):
            continue
        layer = key[: -len(LAYER_QUANT)]
        fmt = _layer_format(key, value, source)
        dtype = LAYER_FP8_FORMATS.get(fmt)
        if dtype is None:
            raise CheckpointError(f"{source}: layer {layer} is quantised as {fmt!r}; this loader reads the fp8 formats "
                                  f"({', '.join(LAYER_FP8_FORMATS)}) and plain fp16/bf16/fp32 files. Use such a file "
                                  "(e.g. t5xxl_fp16.safetensors)")
        weight = tensors.get(f"{layer}.weight")
        if weight is None or weight.dtype != dtype:
            raise CheckpointError(f"{source}: layer {layer} is declared {fmt} but its weight is "
                                  f"{'missing' if weight is None else weight.dtype}; the file is damaged: download "
                                  "it again")
        if f"{layer}.weight_scale" not in tensors:
            raise CheckpointError(f"{source}: layer {layer} is declared {fmt} but has no .weight_scale, so its values "
                                  "have no known scale; the file is incomplete: download it again")
        quantised.add(f"{layer}.weight")
    for key, value in tensors.items():
        suffix = next((s for s in LAYER_SCALES if key.endswith(s)), None)
        if suffix is None:
            continue
        if f"{key[: -len(suffix)]}.weight" not in quantised:
            raise CheckpointError(f"{source}: {key} scales no quantised layer (no {key[: -len(suffix)]}{LAYER_QUANT}); "
                                  "the file is damaged: download it again")
        out[key] = scaled_fp8.one_scale(key, value, source)
    return out, quantised


def _layer_format(key: str, value: torch.Tensor, source: str) -> str:
    try:
        if value.dtype != torch.uint8 or value.ndim != 1 or value.numel() > MAX_QUANT_JSON:
            raise ValueError(f"{value.dtype} of shape {tuple(value.shape)}")
        entry = json.loads(bytes(value.tolist()).decode("utf-8"))
        fmt = entry["format"]
        if not isinstance(fmt, str):
            raise ValueError("format is no text")
        return fmt
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise CheckpointError(f"{source}: {key} is not a quantisation entry (JSON text with a 'format'; "
                              f"{type(e).__name__}: {str(e)[:80]}); the file is damaged: download it again") from None

