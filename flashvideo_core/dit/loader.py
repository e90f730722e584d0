"""Load a FlashVideo DiT (stage I or II) from any accepted layout, strictly.

Accepted (detected from keys and metadata, never from the file name):

* ``sat``: the official ``stage1.pt``/``stage2.pt`` (``torch.load(...)['module']``, keys under
  ``model.diffusion_model.``), with LoRA unmerged (merged here) or already merged,
* ``diffusers``: ``CogVideoXTransformer3DModel`` weights (stage II adds its two embeddings),
* ``flashvideo``: this pack's single-file safetensors with the config in its metadata.

The stage is read off the weights: stage II is the model with the two extra time embeddings.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from ..checkpoints import scaled_fp8
from ..checkpoints.dit_keys import has_unmerged_lora, is_sat_layout, sat_to_canonical
from ..checkpoints.files import describe
from ..checkpoints.io import RawCheckpoint, read_checkpoint
from ..checkpoints.metadata import MODEL_KEY, config_from_metadata, config_from_shapes, describe_foreign_checkpoint
from ..checkpoints.strict import materialize
from ..errors import CheckpointError
from .config import DiTConfig, infer_dit_config
from .model import FlashVideoDiT

log = logging.getLogger("flashvideo")

KIND = "dit"


def detect_dit_layout(raw: RawCheckpoint) -> str:
    if raw.metadata.get(MODEL_KEY) == KIND:
        return "flashvideo"
    keys = raw.tensors.keys()
    if is_sat_layout(keys):
        return "sat"
    if any(k.startswith("transformer_blocks.") for k in keys):
        return "diffusers"
    raise CheckpointError(
        f"{describe(raw.path)}: not a FlashVideo DiT ({describe_foreign_checkpoint(raw)}). Expected stage1.pt/stage2.pt, "
        "a diffusers CogVideoXTransformer3DModel file, or a file written by `python -m flashvideo_core convert`."
    )


def canonical_dit_state_dict(raw: RawCheckpoint, dequantize: bool = True) -> tuple[DiTConfig, dict, str]:
    """(config, state dict in canonical names, layout). Scaled-fp8 files are dequantised unless ``dequantize``
    is False (ComfyUI keeps their fp8 weights)."""
    layout = detect_dit_layout(raw)
    tensors = raw.tensors
    shown = describe(raw.path)
    if scaled_fp8.is_scaled_fp8(tensors) and dequantize:
        tensors = scaled_fp8.dequantize(tensors, shown)
    if layout == "sat":
        if has_unmerged_lora(tensors):
            log.info("FlashVideo DiT: merging LoRA (scale 1/128) from %s", shown)
        tensors, _ = sat_to_canonical(tensors, shown)
    source = f"{shown} (detected layout: {layout})"
    if layout == "flashvideo":
        config = config_from_metadata(raw, DiTConfig)
    else:
        config = config_from_shapes(infer_dit_config, tensors, source, "FlashVideo DiT")
    return config, tensors, layout


def load_dit(
    path: str,
    device: Optional[torch.device | str] = None,
    dtype: Optional[torch.dtype] = None,
    expect_stage: Optional[str] = None,
) -> FlashVideoDiT:
    """Read, check and build the DiT. ``expect_stage`` ("stage1"/"stage2") refuses the other stage."""
    raw = read_checkpoint(path)
    config, tensors, layout = canonical_dit_state_dict(raw)
    if expect_stage and config.stage != expect_stage:
        hint = (
            "a stage-II file must contain ref_step_time_embedding and time_size_embedding (the reference would "
            "silently run without them)" if expect_stage == "stage2" else "this is the stage-II refiner"
        )
        raise CheckpointError(f"{describe(path)} (detected layout: {layout}) is a {config.stage} DiT, expected {expect_stage}: {hint}")
    model = materialize(lambda: FlashVideoDiT(config), tensors, raw.path, layout, device=device, dtype=dtype or torch.float32)
    log.info("FlashVideo DiT loaded from %s: %s, %d layers, width %d (layout %s)", path, config.stage,
             config.num_layers, config.hidden_size, layout)
    return model
