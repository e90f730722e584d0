"""3D rotary position embedding on integer (t, h, w) positions (docs/SAMPLING.md#rope).

Head dims split 1/4 time, 3/8 height, 3/8 width; frequencies 1/10000^(2j/d) per
block, each repeated for an interleaved (x0, x1) pair. Positions are the plain
integer grid at every resolution (larger inputs extrapolate), never diffusers'
resize-crop grid, which gives fractional positions away from 480x720.
"""

from __future__ import annotations

from functools import lru_cache

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    t = head_dim // 4
    h = head_dim // 8 * 3
    return t, h, head_dim - t - h


def _block_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)
    angles = positions.double()[:, None] * freqs[None, :]
    return angles.repeat_interleave(2, dim=1)  # interleaved pairs share one angle


@lru_cache(maxsize=8)
def _rope_table_cpu(frames: int, height: int, width: int, head_dim: int, theta: float):
    dt, dh, dw = rope_split(head_dim)
    t = _block_angles(torch.arange(frames), dt, theta)
    h = _block_angles(torch.arange(height), dh, theta)
    w = _block_angles(torch.arange(width), dw, theta)
    angles = torch.cat(
        [
            t[:, None, None, :].expand(frames, height, width, dt),
            h[None, :, None, :].expand(frames, height, width, dh),
            w[None, None, :, :].expand(frames, height, width, dw),
        ],
        dim=-1,
    ).reshape(frames * height * width, head_dim)
    return angles.cos().float(), angles.sin().float()


def rope_table(frames: int, height: int, width: int, head_dim: int, device, theta: float = 10000.0):
    """(cos, sin), each (frames * height * width, head_dim) float32, in (t, h, w) row-major order.

    Cached per shape and device (the reference caches once and never invalidates, so a
    second resolution in the same process silently reused the first table).
    """
    return _rope_table_on(frames, height, width, head_dim, str(torch.device(device)), theta)


@lru_cache(maxsize=8)
def _rope_table_on(frames: int, height: int, width: int, head_dim: int, device: str, theta: float):
    cos, sin = _rope_table_cpu(frames, height, width, head_dim, theta)
    return cos.to(device), sin.to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` (..., S, head_dim) in x's dtype (as the reference, bf16 on GPU)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + rotated * sin
