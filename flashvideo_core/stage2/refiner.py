"""Stage-II refiner: Euler steps of the flow-matching ODE from the degraded latent (docs/SAMPLING.md#stage-ii-refiner).

The network predicts the velocity v = x1 - x0 at network time 1000 (1 - t); CFG mixes
the prompt's velocity with that of an all-zero context, batched [cond, uncond] as the
reference (or one after the other where memory is short). The two stage-II embeddings get the latent frame count and the degradation
step, the latter rounded through the compute dtype as the reference does (bf16: 675 -> 676).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..dit.guidance import autocast_for, forward_pair
from ..dit.memory import plan_for
from ..errors import InputError
from ..progress import Progress
from ..stage1.sampler import check_finite
from .schedule import DEFAULT_CFG, DEFAULT_NOISE_STEP, DEFAULT_SHIFT, DEFAULT_STEPS, MAX_STEPS, embedded_noise_step, network_timesteps, time_grid


def guided_velocity(v_cond: torch.Tensor, v_uncond: torch.Tensor, cfg: float, dtype: torch.dtype) -> torch.Tensor:
    """The reference's velocity CFG, v_uncond + cfg (v_cond - v_uncond), computed in ``dtype`` (the model's:
    bf16 on GPUs, which moves the result visibly)."""
    v_cond, v_uncond = v_cond.to(dtype), v_uncond.to(dtype)
    return v_uncond + cfg * (v_cond - v_uncond)


def euler_flow(velocity: Callable, x: torch.Tensor, grid: torch.Tensor, on_step: Optional[Callable] = None):
    """Euler steps of dx/dt = v over ``grid`` (t from 0 to 1, in the dtype the reference integrates in), shared by
    the CLI and the ComfyUI SAMPLER: x <- x + (t_next - t) v with ``velocity(x, k)`` at step k;
    ``on_step(k, x, clean)`` gets the new state and its clean estimate x + (1 - t_next) v."""
    for k in range(len(grid) - 1):
        v = velocity(x, k)
        x = x + (grid[k + 1] - grid[k]) * v
        if on_step is not None:
            on_step(k, x, x + (1 - grid[k + 1]) * v)
    return x


@torch.no_grad()
def refine_stage2(
    model: torch.nn.Module,
    context: torch.Tensor,
    x0: torch.Tensor,
    noise_step: int = DEFAULT_NOISE_STEP,
    steps: int = DEFAULT_STEPS,
    cfg: float = DEFAULT_CFG,
    shift: float = DEFAULT_SHIFT,
    progress: Optional[Progress] = None,
    grid_dtype: Optional[torch.dtype] = None,
    memory: str = "auto",
    window: Optional[tuple] = None,
) -> torch.Tensor:
    """Integrate from the degraded latent ``x0`` (B, C, T, H, W), stage-II scaled, to t = 1.

    Returns the refined latent in the same layout, float32. ``grid_dtype`` defaults to the
    model's dtype, which reproduces the reference (bf16 grid, timesteps and Euler updates
    on GPU); fp32 models integrate in fp32. ``memory``: how each guided step runs
    (:mod:`flashvideo_core.dit.memory`: auto, batched, sequential, lean); the result changes only by float rounding.
    ``window``: the experimental local attention (frames, height, width) in latent patches, None = full.
    """
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"stage II takes 1-{MAX_STEPS} Euler steps (4-6 recommended), got {steps}")
    if model.config.stage != "stage2":
        raise InputError("this is the stage-I model; the stage-II refiner needs stage2.pt")
    if x0.ndim != 5 or x0.shape[1] != model.config.in_channels:
        raise InputError(f"expected a stage-II latent (batch, {model.config.in_channels}, frames, height, width), "
                         f"got shape {tuple(x0.shape)}")
    p = model.config.patch_size
    if x0.shape[-1] % p or x0.shape[-2] % p:
        raise InputError(f"latent height and width must be multiples of {p} (video sides multiples of 16), "
                         f"got {x0.shape[-2]}x{x0.shape[-1]}")
    if not torch.isfinite(x0).all():
        raise InputError("the degraded latent holds NaN/Inf values")
    if context.shape[0] != x0.shape[0]:
        if context.shape[0] != 1:
            raise InputError(f"{context.shape[0]} prompt embeddings for a batch of {x0.shape[0]} latents")
        context = context.expand(x0.shape[0], -1, -1)
    progress = progress or Progress()
    param = next(model.parameters())
    device, dtype = param.device, model.proj_out.weight.dtype
    grid_dtype = grid_dtype or dtype
    grid = time_grid(steps, shift, grid_dtype)
    timesteps = network_timesteps(grid).float().to(device)  # on the device once, not copied every step
    batch, _, frames = x0.shape[:3]
    cond = context.to(device=device, dtype=torch.float32)
    contexts = (cond, torch.zeros_like(cond))  # [cond, uncond]: the reverse of stage I
    conds = {"latent_frames": torch.full((batch,), float(frames), device=device)}
    conds["ref_step"] = torch.full((batch,), embedded_noise_step(noise_step, grid_dtype), device=device)
    if window is not None:
        conds["window"] = window
    plan = plan_for(model, tuple(x0.shape), dtype, device, memory)
    autocast = autocast_for(device, dtype)
    x = x0.to(device=device, dtype=grid_dtype).permute(0, 2, 1, 3, 4)  # the DiT's (B, T, C, H, W)

    def velocity(x, k):
        progress.check()
        t = timesteps[k].expand(batch)
        with autocast:
            v_cond, v_uncond = forward_pair(model, x, t, contexts, plan, **conds)
        return guided_velocity(v_cond, v_uncond, cfg, grid_dtype)

    progress.start(steps)
    x = euler_flow(velocity, x, grid.to(device), lambda k, x, clean: progress.advance(1, preview=clean))
    return check_finite(x.permute(0, 2, 1, 3, 4).float(), "stage II", dtype)
