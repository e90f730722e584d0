"""Stage-I sampler: v-prediction denoiser + SDE DPM-Solver++(2M), 51 steps, DynamicCFG (docs/SAMPLING.md#sde-dpm2m).

Every random draw comes from one CPU generator in the reference's order (one at step
0, two at steps 1..N-2 with the first thrown away, none at the last step), so a seed
gives the same latent on every device. The last step returns the x0 prediction.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..dit.guidance import autocast_for, forward_pair, plan_for
from ..errors import InputError
from ..progress import Progress
from .schedule import DEFAULT_CFG, DEFAULT_STEPS, stage1_schedule

TRAINED_SIZE = (256, 480)
TRAINED_FRAMES = 49


def latent_shape(frames: int, height: int, width: int, batch: int = 1, channels: int = 16) -> tuple:
    """(B, T', C, H/8, W/8) for a 4k+1-frame video whose sides are multiples of 16."""
    if (frames - 1) % 4 or height % 16 or width % 16:
        raise InputError(f"stage I needs 4k+1 frames and sides that are multiples of 16, got {frames}x{height}x{width}")
    return batch, (frames - 1) // 4 + 1, channels, height // 8, width // 8


def _lambda(a: float) -> float:
    sigma = math.sqrt(max(1.0 - a * a, 0.0))
    if a == 0.0:
        return -math.inf
    if sigma == 0.0:
        return math.inf
    return math.log(a / sigma)


def log_snr_halves(alphas) -> list:
    """lambda_i = log(a_i / sigma_i) per sampler alpha (-inf at a = 0, +inf at a = 1)."""
    return [_lambda(a) for a in alphas]


def sde_dpmpp_2m_update(x, denoised, denoised_prev, i: int, alphas, lambdas, randn):
    """One SDE DPM-Solver++(2M) step from i to i + 1 in VP form with the reference's draws (one at step 0,
    two later with the first thrown away); ``randn()`` gives one noise tensor like ``x``."""
    a_cur, a_next = alphas[i], alphas[i + 1]
    s_cur, s_next = math.sqrt(1 - a_cur**2), math.sqrt(1 - a_next**2)
    h = lambdas[i + 1] - lambdas[i]
    noise_keep = math.sqrt(max(1.0 - math.exp(-2 * h), 0.0))
    d_mix = a_next * (1 - math.exp(-2 * h))
    first_order_noise = randn()
    if i == 0:  # lambda_0 = -inf: the decay term vanishes
        return d_mix * denoised + s_next * noise_keep * first_order_noise
    r = (lambdas[i] - lambdas[i - 1]) / h
    corrected = denoised if math.isinf(r) else (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * denoised_prev
    return (s_next / s_cur) * math.exp(-h) * x + d_mix * corrected + s_next * noise_keep * randn()


@torch.no_grad()
def sample_stage1(
    model: torch.nn.Module,
    context: torch.Tensor,
    shape: tuple,
    steps: int = DEFAULT_STEPS,
    cfg: float = DEFAULT_CFG,
    seed: int = 0,
    progress: Optional[Progress] = None,
    memory: str = "auto",
) -> torch.Tensor:
    """Sample a stage-I latent (B, T', 16, H/8, W/8), float32, unscaled by nothing (DiT space).

    ``context`` is the (B, 226, text_dim) prompt embedding; the unconditional context is
    all zeros, as in the reference (negative prompts have no effect there). ``memory``: how each guided
    step runs (:mod:`flashvideo_core.dit.memory`); the result changes only by float rounding.
    """
    progress = progress or Progress()
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    if not torch.isfinite(context).all():
        raise InputError("the prompt embedding holds NaN/Inf; re-encode the prompt (T5 in fp16 can overflow)")
    schedule = stage1_schedule(steps, cfg)
    gen = torch.Generator().manual_seed(int(seed))
    randn = lambda: torch.randn(shape, generator=gen, dtype=torch.float32).to(device)  # noqa: E731
    x = randn()
    cond = context.to(device=device, dtype=torch.float32)
    contexts = (torch.zeros_like(cond), cond)  # [uncond, cond], as the reference batches stage I
    batch, frames, channels, height, width = shape
    plan = plan_for(model, (batch, channels, frames, height, width), dtype, device, memory)
    autocast = autocast_for(device, dtype)
    progress.start(steps)
    denoised_prev = None
    lambdas = log_snr_halves(schedule.alphas)
    for i in range(steps):
        progress.check()
        t = torch.full((batch,), float(schedule.timesteps[i]), device=device)
        with autocast:
            v_uncond, v_cond = (v.float() for v in forward_pair(model, x, t, contexts, plan))
        a_q = schedule.snapped_alphas[i]
        d_uncond, d_cond = (a_q * x - math.sqrt(1.0 - a_q * a_q) * v for v in (v_uncond, v_cond))
        denoised = d_uncond + schedule.cfg_scales[i] * (d_cond - d_uncond)
        if not torch.isfinite(denoised).all():
            raise InputError(
                f"stage I produced NaN/Inf at step {i + 1} (weights {dtype}). fp16 overflows on CogVideoX-5B-class "
                "models: load the model in bf16 or fp32."
            )
        if i == steps - 1:
            progress.advance(1, preview=denoised)
            break
        x = sde_dpmpp_2m_update(x, denoised, denoised_prev, i, schedule.alphas, lambdas, randn)
        denoised_prev = denoised
        progress.advance(1, preview=denoised)
    # The reference hands the sample to the VAE in the DiT dtype (bf16 on GPU).
    return denoised.to(dtype).float()
