"""How much working memory one DiT forward needs, so the host can evict other models first.

A block holds the residual stream, its normalised copy, q/k/v and the attention output
(about 6 x width per token) until the attention ends, then the 4x-wide MLP input and its
GELU (8 x width); attention itself is linear in memory (never an S x S matrix). So the
peak is about 12 x width values per token, plus the RoPE tables.
"""

from __future__ import annotations

import torch

from .config import DiTConfig

WIDTHS_PER_TOKEN = 12
TEXT_TOKENS = 226


def video_tokens(config: DiTConfig, latent_frames: int, latent_height: int, latent_width: int) -> int:
    p = config.patch_size
    return latent_frames * (latent_height // p) * (latent_width // p)


def forward_bytes(config: DiTConfig, latent_shape: tuple, dtype: torch.dtype, cfg_batch: int = 2) -> int:
    """Working memory of one forward over ``latent_shape`` (B, C, T, H, W), CFG-batched."""
    batch, _, frames, height, width = latent_shape
    tokens = video_tokens(config, frames, height, width)
    element = torch.empty((), dtype=dtype).element_size()
    activations = cfg_batch * batch * (tokens + TEXT_TOKENS) * config.hidden_size * WIDTHS_PER_TOKEN * element
    rope = 2 * tokens * config.head_dim * 4 * 2  # cos/sin in fp32, CPU copy + device copy
    return int(activations + rope)
