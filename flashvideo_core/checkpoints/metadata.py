"""Metadata of the pack's own safetensors files, and naming what a foreign file is.

A converted file records which model it holds, the full architecture config (so
nothing is ever inferred from its name) and the sha256 of the file it came from.
"""

from __future__ import annotations

import dataclasses
import json
import math

from ..errors import CheckpointError
from .files import describe

FORMAT_KEY = "flashvideo.format"
FORMAT_VERSION = "1"
MODEL_KEY = "flashvideo.model"
CONFIG_KEY = "flashvideo.config"
SOURCE_SHA_KEY = "flashvideo.source_sha256"
SOURCE_LAYOUT_KEY = "flashvideo.source_layout"
SOURCE_NAME_KEY = "flashvideo.source_file"
PROMPT_KEY = "flashvideo.prompt"


#: Sane ranges for every architecture field, checked before any model is built: a file whose metadata
#: declares a million layers or a width of 2**40 is refused here instead of hanging the model build.
#: Generous: the official models sit well inside (DiT 42 x 3072, VAE widths up to 512).
CONFIG_RANGES = {
    "num_layers": (1, 256), "hidden_size": (8, 32768), "head_dim": (8, 1024), "in_channels": (1, 1024),
    "patch_size": (1, 16), "time_embed_dim": (1, 32768), "text_hidden_size": (1, 32768), "mlp_ratio": (1, 16),
    "out_channels": (1, 1024), "latent_channels": (1, 1024), "layers_per_block": (1, 32),
    "norm_num_groups": (1, 1024), "temporal_compression_ratio": (1, 8),
}
BLOCK_WIDTH_RANGE = (1, 8192)
MAX_LEVELS = 8


def config_from_metadata(raw, config_cls):
    version = raw.metadata.get(FORMAT_KEY)
    shown = describe(raw.path)
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{shown}: written by an unknown version of the FlashVideo converter (format {str(version)[:40]!r}, "
            f"this pack reads {FORMAT_VERSION!r}); update the pack or convert the original file again"
        )
    text = raw.metadata.get(CONFIG_KEY)
    if not text:
        raise CheckpointError(f"{shown}: FlashVideo metadata has no {CONFIG_KEY!r} entry; convert the original again")
    fix = "the metadata is damaged: convert the original file again"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{shown}: {CONFIG_KEY} is not valid JSON ({type(e).__name__}: {str(e)[:120]}); "
                              f"{fix}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{shown}: {CONFIG_KEY} must be a JSON object, got {type(data).__name__}; {fix}")
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CheckpointError(f"{shown}: {CONFIG_KEY} has unknown fields {unknown[:5]}; written by a newer pack? "
                              "Update the pack or convert the original file again")
    defaults = dataclasses.asdict(config_cls())
    for name, value in data.items():
        _check_field(shown, name, value, defaults[name])
    try:
        config = config_cls(**data)
    except (ValueError, TypeError, ArithmeticError, CheckpointError) as e:
        raise CheckpointError(f"{shown}: {CONFIG_KEY} describes an impossible model ({e}); {fix}") from None
    check_config(config, shown)
    return config


def _check_field(shown, name, value, default):
    """The JSON value has the type of the field's default (int, float, bool, list of ints)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = type(value) is int
    elif isinstance(default, float):
        ok = type(value) in (int, float) and math.isfinite(value)
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, list) and all(type(v) is int for v in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise CheckpointError(f"{shown}: {CONFIG_KEY} field {name!r} is {str(value)[:40]!r}, expected a "
                              f"{type(default).__name__}; the metadata is damaged: convert the original file again")


def check_config(config, shown: str) -> None:
    """Refuse sizes outside :data:`CONFIG_RANGES` (read from metadata or inferred from shapes) before a model
    is built from them."""
    data = dataclasses.asdict(config)
    problems = []
    for name, value in data.items():
        if name in CONFIG_RANGES and not isinstance(value, bool):
            lo, hi = CONFIG_RANGES[name]
            if not lo <= value <= hi:
                problems.append(f"{name}={value} (allowed {lo}..{hi})")
    widths = data.get("block_out_channels")
    if widths is not None:
        lo, hi = BLOCK_WIDTH_RANGE
        if not 1 <= len(widths) <= MAX_LEVELS or not all(lo <= w <= hi for w in widths):
            problems.append(f"block_out_channels={list(widths)[:10]} (1..{MAX_LEVELS} levels of {lo}..{hi})")
    eps = data.get("norm_eps")
    if eps is not None and not 0 < eps < 1:
        problems.append(f"norm_eps={eps} (must be in (0, 1))")
    if problems:
        raise CheckpointError(f"{shown}: declares an absurd model size: {'; '.join(problems)}. The file is damaged "
                              "or not a FlashVideo model: convert or download the original again.")


def describe_foreign_checkpoint(raw) -> str:
    """A short guess of what a file holds, for error messages."""
    keys = list(raw.tensors)
    if raw.metadata.get(MODEL_KEY):
        return f"it is a FlashVideo {raw.metadata[MODEL_KEY]!r} file"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "it looks like a FlashVideo/CogVideoX SAT DiT checkpoint (stage1.pt/stage2.pt): use the model loader"
    if any(k.startswith("transformer_blocks.") for k in keys):
        return "it looks like a diffusers transformer: use the model loader"
    if any("encoder.block." in k or "shared.weight" == k for k in keys):
        return "it looks like a T5 text encoder: load it with ComfyUI's CLIPLoader"
    return f"{len(keys)} tensors, first keys: {', '.join(k[:80] for k in keys[:3])}"


def config_from_shapes(infer, tensors: dict, source: str, model: str):
    """``infer(tensors, source=)`` range-checked; shapes that describe no valid ``model`` refuse the file."""
    try:
        config = infer(tensors, source=source)
    except (IndexError, ValueError, TypeError, ArithmeticError) as e:
        raise CheckpointError(f"{source}: its tensor shapes describe no valid {model} ({e}); the file is damaged "
                              f"or not a {model}") from None
    check_config(config, source)
    return config
