"""Attention backends, probed at run time (never a hard dependency).

``sdpa`` (PyTorch scaled_dot_product_attention) is the default and always works. On the
CPU its flash kernel is memory-efficient; where it would fall back to the math kernel,
long sequences run in query chunks, so memory grows linearly with the sequence (no
S x S score matrix is ever built). ``flash`` (flash-attn) and ``sage`` (SageAttention)
are used only when importable and on CUDA with half-precision inputs; otherwise the
call falls back to ``sdpa`` with one log line.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger("flashvideo")

BACKENDS = ("sdpa", "flash", "sage")
_MODULES = {"flash": "flash_attn", "sage": "sageattention"}
#: CPU SDPA may fall back to the math kernel; above this many score elements per call, chunk queries.
CPU_SCORE_ELEMENTS = 1 << 26
_warned: set = set()


def available_backends() -> list:
    return ["sdpa"] + [name for name, module in _MODULES.items() if importlib.util.find_spec(module) is not None]


def resolve_backend(name: str) -> str:
    """The backend actually used for ``name``: itself if importable, else ``sdpa`` (logged once)."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {name!r}")
    if name != "sdpa" and name not in available_backends():
        if name not in _warned:
            log.warning("FlashVideo: attention backend %r is not installed (%s); using PyTorch SDPA", name, _MODULES[name])
            _warned.add(name)
        return "sdpa"
    return name


def _cpu_math_kernel(q, k, v) -> bool:
    """Whether CPU SDPA would use its math kernel (which builds the S x S scores) for these inputs.

    The CPU flash kernel (fp32/bf16/fp16, no mask) is memory-efficient and faster than
    chunking; only the math fallback needs query chunks.
    """
    try:
        return int(torch._fused_sdp_choice(q, k, v)) == 0
    except Exception:  # private API: assume the worst
        return True


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Non-causal attention over (B, heads, S, d) with scale 1/sqrt(d)."""
    if backend != "sdpa" and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        if backend == "flash":
            from flash_attn import flash_attn_func

            return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        if backend == "sage":
            from sageattention import sageattn

            return sageattn(q, k, v, tensor_layout="HND", is_causal=False)
    batch, heads, seq, _ = q.shape
    if q.device.type != "cpu" or batch * heads * seq * k.shape[2] <= CPU_SCORE_ELEMENTS or not _cpu_math_kernel(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)
    rows = max(1, CPU_SCORE_ELEMENTS // (batch * heads * k.shape[2]))
    out = torch.empty_like(q)
    for start in range(0, seq, rows):
        out[:, :, start : start + rows] = F.scaled_dot_product_attention(q[:, :, start : start + rows], k, v)
    return out
