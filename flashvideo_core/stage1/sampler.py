"""Stage-I sampler: v-prediction denoiser + SDE DPM-Solver++(2M), 51 steps, DynamicCFG (docs/SAMPLING.md#sde-dpm2m).

Every random draw comes from one CPU generator in the reference's order (one at step
0, two at steps 1..N-2 with the first thrown away, none at the last step), so a seed
gives the same latent on every device. The last step returns the x0 prediction.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..dit.guidance import autocast_for, forward_pair
from ..dit.memory import plan_for
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


def log_snr_halves(alphas) -> list:
    """lambda_i = log(a_i / sigma_i) per sampler alpha (-inf at a = 0, +inf at a = 1)."""
    return [-math.inf if a == 0.0 else math.inf if a * a >= 1.0 else math.log(a / math.sqrt(1.0 - a * a))
            for a in alphas]


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


def reference_denoised(x: torch.Tensor, v: torch.Tensor, alpha, noise_level) -> torch.Tensor:
    """The reference's v-prediction denoiser, D = a x - sqrt(1 - a^2) v, with ``x`` in VP form, ``alpha`` the
    step's sqrt(alpha_bar) snapped to the 1000-step table and ``noise_level`` = sqrt(1 - alpha^2) (numbers, or
    tensors that broadcast per batch element)."""
    return alpha * x - noise_level * v


def guided(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale (cond - uncond). (In ComfyUI the host's ``cfg_function`` mixes,
    with the same formula, so its post-CFG patches apply.)"""
    return uncond + scale * (cond - uncond)


def sample_reference_sde(denoise: Callable, x: torch.Tensor, alphas, randn: Callable,
                         on_step: Optional[Callable] = None) -> torch.Tensor:
    """The reference's stage-I loop, shared by the CLI and the ComfyUI SAMPLER: SDE DPM-Solver++(2M) on the VP
    state ``x`` over the run's sampler ``alphas`` (N + 1 values, 1.0 last). ``denoise(x, i)`` gives step i's x0
    prediction, ``on_step(i, x, denoised)`` follows each step; the last step returns its x0 prediction."""
    lambdas = log_snr_halves(alphas)
    steps = len(alphas) - 1
    denoised = denoised_prev = None
    for i in range(steps):
        denoised = denoise(x, i)
        if on_step is not None:
            on_step(i, x, denoised)
        if i == steps - 1:
            break
        x = sde_dpmpp_2m_update(x, denoised, denoised_prev, i, alphas, lambdas, randn)
        denoised_prev = denoised
    return denoised


def check_finite(sample: torch.Tensor, stage: str, dtype: torch.dtype) -> torch.Tensor:
    """Refuse a NaN/Inf result once per run (a check per step would synchronise the device every step)."""
    if not torch.isfinite(sample).all():
        raise InputError(f"{stage} produced NaN/Inf (weights {dtype}). fp16 overflows on CogVideoX-class models: "
                         "load the model in bf16 or fp32.")
    return sample


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

    def denoise(x, i):
        progress.check()
        t = torch.full((batch,), float(schedule.timesteps[i]), device=device)
        with autocast:
            v_uncond, v_cond = (v.float() for v in forward_pair(model, x, t, contexts, plan))
        alpha = schedule.snapped_alphas[i]
        level = math.sqrt(1.0 - alpha * alpha)
        return guided(reference_denoised(x, v_uncond, alpha, level), reference_denoised(x, v_cond, alpha, level),
                      schedule.cfg_scales[i])

    progress.start(steps)
    denoised = sample_reference_sde(denoise, x, schedule.alphas, randn,
                                    lambda i, x, denoised: progress.advance(1, preview=denoised))
    # The reference hands the sample to the VAE in the DiT dtype (bf16 on GPU).
    return check_finite(denoised.to(dtype).float(), "stage I", dtype)
