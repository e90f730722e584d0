"""Load a CogVideoX/FlashVideo VAE from any accepted layout, strictly.

Accepted (detected from keys and metadata, never from the file name):

* ``official``: ``3d-vae.pt`` (``torch.load(...)['state_dict']``; ``loss*`` keys dropped),
* ``diffusers``: ``AutoencoderKLCogVideoX`` weights (safetensors or .bin),
* ``flashvideo``: this pack's single-file safetensors with the config in its metadata.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from ..checkpoints.files import describe
from ..checkpoints.io import RawCheckpoint, read_checkpoint
from ..checkpoints.metadata import MODEL_KEY, config_from_metadata, config_from_shapes, describe_foreign_checkpoint
from ..checkpoints.strict import materialize
from ..checkpoints.vae_keys import diffusers_to_official
from ..errors import CheckpointError
from .config import VAEConfig, infer_vae_config
from .model import CogVideoXVAE

log = logging.getLogger("flashvideo")

KIND = "vae"


def detect_vae_layout(raw: RawCheckpoint) -> str:
    if raw.metadata.get(MODEL_KEY) == KIND:
        return "flashvideo"
    keys = raw.tensors.keys()
    if any(k.startswith("encoder.down.") for k in keys):
        return "official"
    if any(k.startswith("encoder.down_blocks.") for k in keys):
        return "diffusers"
    raise CheckpointError(
        f"{describe(raw.path)}: not a CogVideoX/FlashVideo VAE ({describe_foreign_checkpoint(raw)}). "
        "Expected the official 3d-vae.pt, a diffusers AutoencoderKLCogVideoX file, or a file written "
        "by `python -m flashvideo_core convert`."
    )


def canonical_vae_state_dict(raw: RawCheckpoint) -> tuple[VAEConfig, dict, str]:
    """Return (config, state dict in official names, detected layout)."""
    layout = detect_vae_layout(raw)
    tensors = raw.tensors
    if layout == "official":
        tensors = {k: v for k, v in tensors.items() if not k.startswith("loss")}
    elif layout == "diffusers":
        tensors = diffusers_to_official(tensors)
    if layout == "flashvideo":
        config = config_from_metadata(raw, VAEConfig)
    else:
        source = f"{describe(raw.path)} (detected layout: {layout})"
        config = config_from_shapes(infer_vae_config, tensors, source, "CogVideoX VAE")
    return config, tensors, layout


def load_vae(
    path: str, device: Optional[torch.device | str] = None, dtype: Optional[torch.dtype] = None
) -> CogVideoXVAE:
    """Read, check and build the VAE; ``dtype=None`` keeps fp32."""
    raw = read_checkpoint(path)
    config, tensors, layout = canonical_vae_state_dict(raw)
    vae = materialize(lambda: CogVideoXVAE(config), tensors, raw.path, layout, device=device, dtype=dtype or torch.float32)
    log.info("FlashVideo VAE loaded from %s (layout %s, widths %s, %s)", path, layout, config.block_out_channels, dtype or torch.float32)
    return vae
