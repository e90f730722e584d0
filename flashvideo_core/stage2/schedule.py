"""Stage-II flow-matching time grid (docs/SAMPLING.md#stage-ii-grid).

t = 0 is the degraded latent, t = 1 the clean one. The uniform grid u is shifted by
t = 1 - s(1-u) / (1 + (s-1)(1-u)), which spends the steps near the noisy end, and the
network sees 1000 (1 - t). The reference builds the grid in the latent's dtype (bf16
on GPU), which moves the grid and the timesteps visibly ([1000, 904, 784, 624, 384]
instead of [1000, 909.1, 789.5, 625, 384.6]); pass that dtype to reproduce it.
"""

from __future__ import annotations

import torch

DEFAULT_STEPS = 5  # the released code; the paper and README say 4
DEFAULT_CFG = 13.0
DEFAULT_SHIFT = 2.5
DEFAULT_NOISE_STEP = 675
MAX_STEPS = 10


def time_grid(steps: int = DEFAULT_STEPS, shift: float = DEFAULT_SHIFT, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The N + 1 shifted grid points from 0 to 1, computed (and rounded) in ``dtype``."""
    if steps < 1:
        raise ValueError(f"stage II needs at least 1 step, got {steps}")
    if shift <= 0:
        raise ValueError(f"the time shift must be positive, got {shift}")
    u = torch.linspace(0, 1, steps + 1, dtype=dtype)
    return 1 - shift * (1 - u) / (1 + (shift - 1) * (1 - u))


def network_timesteps(grid: torch.Tensor) -> torch.Tensor:
    """1000 (1 - t) in the grid's dtype, one per Euler step (the endpoint t = 1 is never evaluated)."""
    return (1000 - 1000 * grid)[:-1]


def embedded_noise_step(noise_step: int, dtype: torch.dtype = torch.float32) -> float:
    """The degradation step as the ref-step embedding sees it: the reference stores it in the
    timestep tensor's dtype, so in bf16 675 becomes 676 (650 -> 648, 750 -> 752)."""
    return float(torch.tensor(float(noise_step), dtype=dtype))
