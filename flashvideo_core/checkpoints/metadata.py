"""Metadata of the pack's own safetensors files, and naming what a foreign file is.

A converted file records which model it holds, the full architecture config (so
nothing is ever inferred from its name) and the sha256 of the file it came from.
"""

from __future__ import annotations

from ..errors import CheckpointError

FORMAT_KEY = "flashvideo.format"
FORMAT_VERSION = "1"
MODEL_KEY = "flashvideo.model"
CONFIG_KEY = "flashvideo.config"
SOURCE_SHA_KEY = "flashvideo.source_sha256"
SOURCE_LAYOUT_KEY = "flashvideo.source_layout"
SOURCE_NAME_KEY = "flashvideo.source_file"


def config_from_metadata(raw, config_cls):
    version = raw.metadata.get(FORMAT_KEY)
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{raw.path}: written by an unknown version of the FlashVideo converter (format {version!r}, "
            f"this pack reads {FORMAT_VERSION!r}); update the pack or convert the original file again"
        )
    text = raw.metadata.get(CONFIG_KEY)
    if not text:
        raise CheckpointError(f"{raw.path}: FlashVideo metadata has no {CONFIG_KEY!r} entry; convert the original again")
    return config_cls.from_json(text)


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
    return f"{len(keys)} tensors, first keys: {', '.join(keys[:3])}"
