"""One classifier-free-guidance evaluation (cond and uncond) run as a :class:`~.memory.ForwardPlan` says:
one batch of two, or one after the other, whole-sequence or in token chunks. The outputs differ only by float
rounding (matrix kernels may pick other blockings for other batch sizes)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .memory import ForwardPlan


def forward_pair(model, x: torch.Tensor, timesteps: torch.Tensor, contexts: tuple, plan: ForwardPlan,
                 **conds) -> tuple:
    """``model`` at ``x`` under each of the two ``contexts`` -> (first, second). ``timesteps`` and ``conds``
    (e.g. stage II's ``latent_frames``, ``ref_step``) are per element of ``x``."""
    if plan.chunk_tokens is not None:
        conds["chunk_tokens"] = plan.chunk_tokens
    if plan.cfg_batched:
        twice = lambda value: torch.cat([value, value]) if torch.is_tensor(value) else value  # noqa: E731
        out = model(twice(x), twice(timesteps), torch.cat(contexts), **{name: twice(v) for name, v in conds.items()})
        return out.chunk(2)
    return tuple(model(x, timesteps, context, **conds) for context in contexts)


def autocasts(device, dtype: torch.dtype) -> bool:
    """Whether the samplers run a ``dtype`` model under autocast (half-precision weights on CUDA, as the reference)."""
    return torch.device(device).type == "cuda" and dtype != torch.float32


def autocast_for(device, dtype: torch.dtype):
    return torch.autocast(torch.device(device).type, dtype=dtype) if autocasts(device, dtype) else nullcontext()
