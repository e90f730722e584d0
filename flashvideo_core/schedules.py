"""The zero-terminal-SNR scaled-linear DDPM schedule of both stages (docs/SAMPLING.md#noise-schedule).

beta = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2 in float64, alpha_bar = cumprod(1 - beta),
an optional SNR shift, then (in float32) a = sqrt(alpha_bar) over a subset of timesteps,
rescaled so the largest timestep of the subset has a = 0 exactly (zero terminal SNR).
"""

from __future__ import annotations

import numpy as np
import torch

NUM_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012


def alphas_cumprod(shift: float = 1.0) -> torch.Tensor:
    """alpha_bar for timesteps 0..999 in float64, after the SNR shift alpha_bar / (s + (1 - s) alpha_bar)."""
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, NUM_TIMESTEPS, dtype=torch.float64) ** 2
    ac = torch.cumprod(1.0 - betas, dim=0)
    return ac / (shift + (1.0 - shift) * ac)


def sqrt_alpha(timesteps, shift: float = 1.0) -> torch.Tensor:
    """Zero-SNR-rescaled sqrt(alpha_bar) (float32) over ``timesteps`` (ascending integers).

    The rescale uses the smallest and largest timestep of this subset, so a subset's
    values differ slightly from the full table's (the stage-I sampler relies on this).
    """
    t = torch.as_tensor(timesteps, dtype=torch.long)
    a = alphas_cumprod(shift).float()[t].sqrt()
    first, last = a[0], a[-1]
    return (a - last) * first / (first - last)


def full_sqrt_alpha_table(shift: float = 1.0) -> torch.Tensor:
    """The denoiser's 1000-entry table: index i <-> timestep i. a(675) = 0.2639587 at shift 1."""
    return sqrt_alpha(range(NUM_TIMESTEPS), shift)


def degradation_coefficients(noise_step: int) -> tuple[float, float]:
    """(a, sqrt(1 - a^2)) of the stage-II latent degradation x = a z + sqrt(1 - a^2) eps
    (docs/SAMPLING.md#degradation)."""
    if not 0 <= noise_step < NUM_TIMESTEPS:
        raise ValueError(f"noise step must be in [0, {NUM_TIMESTEPS - 1}], got {noise_step}")
    a = float(full_sqrt_alpha_table()[noise_step])
    return a, float(np.sqrt(1.0 - a * a))
