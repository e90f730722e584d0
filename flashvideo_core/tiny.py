"""Tiny random-weight models in the official layouts, for tests, the demo and smoke installs.

Random weights decode to noise; they exist to exercise every code path (loading,
slicing, nodes, workflows) in seconds on a CPU, never to make pictures.
"""

from __future__ import annotations

import os

import torch

from .checkpoints.io import write_safetensors
from .checkpoints.vae_keys import official_to_diffusers
from .vae.config import VAEConfig
from .vae.model import CogVideoXVAE

#: Smallest VAE that keeps every official structural feature (4 levels, 2 temporal,
#: shortcuts where widths change, 32-group GroupNorm).
TINY_VAE_CONFIG = VAEConfig(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=16)


def random_vae_state_dict(config: VAEConfig = TINY_VAE_CONFIG, seed: int = 0) -> dict:
    """Official-layout weights: small random convs, norm scales near 1 (so activations stay O(1))."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CogVideoXVAE(config).state_dict().items()}
    out = {}
    for key, shape in shapes.items():
        if len(shape) == 1 and key.endswith("weight"):  # GroupNorm scale
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            out[key] = 0.05 * torch.randn(shape, generator=gen)
        else:
            fan_in = int(torch.tensor(shape[1:]).prod())
            out[key] = torch.randn(shape, generator=gen) / fan_in**0.5
    return out


def write_tiny_vae(path: str, layout: str = "official", config: VAEConfig = TINY_VAE_CONFIG, seed: int = 0) -> str:
    """Write a tiny VAE as ``official`` (.pt with 'state_dict' and a loss entry) or ``diffusers`` (safetensors)."""
    sd = random_vae_state_dict(config, seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if layout == "official":
        torch.save({"state_dict": {**sd, "loss.logvar": torch.zeros(())}, "global_step": 0}, path)
    elif layout == "diffusers":
        write_safetensors(path, official_to_diffusers(sd), {})
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return path
