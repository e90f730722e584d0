"""fp8 weight storage for the DiT's transformer blocks, computed in bf16/fp32.

Each block Linear keeps its weight as float8_e4m3fn with one per-tensor scale
(absmax / 448) and is upcast at use, halving the weight memory of bf16 (stage I:
about 11 GB -> 6 GB) at a small accuracy cost. Embeddings, norms and the output
layer stay in the compute dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


class Fp8Linear(nn.Module):
    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().max().clamp(min=1e-12) / FP8_MAX
        self.register_buffer("weight_fp8", (weight / scale).to(FP8))
        self.register_buffer("scale", scale.reshape(()))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(compute_dtype), requires_grad=False)
        self.compute_dtype = compute_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_fp8.to(self.compute_dtype) * self.scale.to(self.compute_dtype)
        return F.linear(x.to(self.compute_dtype), weight, self.bias)


def store_blocks_in_fp8(model: nn.Module, compute_dtype: torch.dtype) -> nn.Module:
    """Replace every nn.Linear inside ``model.transformer_blocks`` by an :class:`Fp8Linear`."""
    for block in model.transformer_blocks:
        for name, module in list(block.named_modules()):
            if isinstance(module, nn.Linear):
                parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
                setattr(parent, name.rsplit(".", 1)[-1], Fp8Linear(module, compute_dtype))
    return model
