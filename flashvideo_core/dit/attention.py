"""Attention backends. PyTorch SDPA by default; long CPU sequences run in query chunks
so memory grows linearly with the sequence (no S x S score matrix is ever built)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger("flashvideo")

#: CPU SDPA may fall back to the math kernel; above this many score elements per call, chunk queries.
CPU_SCORE_ELEMENTS = 1 << 26


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal attention over (B, heads, S, d) with scale 1/sqrt(d)."""
    batch, heads, seq, _ = q.shape
    if q.device.type != "cpu" or batch * heads * seq * k.shape[2] <= CPU_SCORE_ELEMENTS:
        return F.scaled_dot_product_attention(q, k, v)
    rows = max(1, CPU_SCORE_ELEMENTS // (batch * heads * k.shape[2]))
    out = torch.empty_like(q)
    for start in range(0, seq, rows):
        out[:, :, start : start + rows] = F.scaled_dot_product_attention(q[:, :, start : start + rows], k, v)
    return out
