"""The stage-II latent degradation ("DEG_latent", docs/SAMPLING.md#degradation).

x0 = a z + sqrt(1 - a^2) eps, a = sqrt(alpha_bar) at ``noise_step`` of the zero-terminal-SNR
table (SNR shift 1): the refiner's ODE starts from this point, so the noise step is
the knob between "keep the preview" (low) and "let stage II repaint" (high).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import InputError
from ..schedules import NUM_TIMESTEPS, degradation_coefficients
from .schedule import DEFAULT_NOISE_STEP

#: The degradation noise uses its own stream, so sharing one seed with the bridge's
#: posterior sample (same shape) never reuses that noise.
NOISE_STREAM_OFFSET = 0x5EED_DE6


def degradation_noise(shape: tuple, seed: int = 0) -> torch.Tensor:
    """The noise ``degrade_latent`` draws for ``seed``: a CPU generator (seed + NOISE_STREAM_OFFSET), so a seed
    gives the same result on every device."""
    generator = torch.Generator().manual_seed((int(seed) + NOISE_STREAM_OFFSET) % 2**64)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def degrade_latent(z: torch.Tensor, noise_step: int = DEFAULT_NOISE_STEP, seed: int = 0,
                   noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Degrade a scaled stage-II latent (any layout); fp32. ``noise``: eps itself (default: drawn for ``seed``)."""
    if not 0 <= noise_step < NUM_TIMESTEPS:
        raise InputError(f"noise_step must be in [0, {NUM_TIMESTEPS - 1}] (650-750 recommended), got {noise_step}")
    if not torch.isfinite(z).all():
        raise InputError("the latent to degrade holds NaN/Inf values; re-encode it with the VAE in bf16 or fp32")
    a, sigma = degradation_coefficients(noise_step)
    eps = degradation_noise(z.shape, seed) if noise is None else noise
    if tuple(eps.shape) != tuple(z.shape):
        raise InputError(f"degradation noise {tuple(eps.shape)} does not match the latent {tuple(z.shape)}")
    return a * z.float() + sigma * eps.to(z.device, torch.float32)
