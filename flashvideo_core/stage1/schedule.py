"""Stage-I sampling schedule: timesteps, sampler alphas, snapped denoiser alphas, DynamicCFG.

All values reproduce the reference run (docs/SAMPLING.md#stage-i-schedule); the tests check every step at
the default 51 steps against the values it printed (``tests/data/reference_schedules.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..schedules import NUM_TIMESTEPS, full_sqrt_alpha_table, sqrt_alpha

DEFAULT_STEPS = 51
DYNAMIC_CFG_EXP = 5.0
DEFAULT_CFG = 8.0


@dataclass(frozen=True)
class Stage1Schedule:
    #: network timesteps, sampling order (999, 979, ..., 19 for 51 steps)
    timesteps: list
    #: sampler sqrt(alpha_bar), sampling order, with 1.0 appended (len = steps + 1)
    alphas: list
    #: sqrt(alpha_bar) snapped to the full 1000 table, used for c_skip/c_out (len = steps)
    snapped_alphas: list
    cfg_scales: list


def sampler_timesteps(steps: int) -> list:
    """linspace(999, 0, steps, endpoint=False) truncated to int, ascending."""
    return np.linspace(NUM_TIMESTEPS - 1, 0, steps, endpoint=False).astype(int)[::-1].tolist()


def dynamic_cfg_scale(timestep: int, scale: float, steps: int = DEFAULT_STEPS) -> float:
    """1 + scale (1 - cos(pi ((N - t) / N)^5)) / 2 with the actual timestep t and the run's step count N,
    in float64.

    (N - t) is mostly large and negative, so the cosine argument is huge and the scale is a
    deterministic pseudo-random sequence in [1, 1 + scale]: the reference's behaviour, kept because it
    shapes every stage-I picture. The reference only runs N != 51 with sampler and guider both set to N
    (docs/SAMPLING.md#dynamiccfg), so N is the run's step count, not the yaml's 51.
    """
    x = ((steps - timestep) / steps) ** DYNAMIC_CFG_EXP
    return 1.0 + scale * (1.0 - math.cos(math.pi * x)) / 2.0


def stage1_schedule(steps: int = DEFAULT_STEPS, cfg: float = DEFAULT_CFG) -> Stage1Schedule:
    if steps < 2:
        raise ValueError("stage I needs at least 2 steps")
    ascending = sampler_timesteps(steps)
    a = sqrt_alpha(ascending)  # rescaled over this subset
    timesteps = ascending[::-1]
    alphas = a.flip(0).tolist() + [1.0]
    table = full_sqrt_alpha_table()
    snapped_idx = (table[None] - torch.tensor(alphas[:-1])[:, None]).abs().argmin(dim=1)
    return Stage1Schedule(
        timesteps=timesteps,
        alphas=alphas,
        snapped_alphas=table[snapped_idx].tolist(),
        cfg_scales=[dynamic_cfg_scale(t, cfg, steps) for t in timesteps],
    )
