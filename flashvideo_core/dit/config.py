"""Architecture of the FlashVideo DiT (both stages) as data, inferred from tensor shapes.

Stage I is CogVideoX-5B-shaped (42 layers, width 3072), stage II CogVideoX-2B-shaped
(30 layers, width 1920) plus two extra time embeddings. Everything else (patch 2,
16 latent channels, 64-wide heads, 512-wide time embedding, GELU-tanh MLP x4) is
shared, so one implementation and one shape-based inference serve both.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Mapping

from ..errors import CheckpointError


@dataclass(frozen=True)
class DiTConfig:
    num_layers: int = 42
    hidden_size: int = 3072
    #: width of one attention head; the qk-LayerNorm weights have this size.
    head_dim: int = 64
    in_channels: int = 16
    patch_size: int = 2
    time_embed_dim: int = 512
    text_hidden_size: int = 4096
    mlp_ratio: int = 4
    #: stage II: ``ref_step_time_embedding`` and ``time_size_embedding`` added to the time embedding.
    stage2_embeddings: bool = False

    def __post_init__(self):
        if self.hidden_size % self.head_dim:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of head_dim {self.head_dim}")
        if self.head_dim % 8:
            raise ValueError("head_dim must split into the 1/4 (time) and 3/8 + 3/8 (height, width) RoPE blocks")

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_dim

    @property
    def out_channels(self) -> int:
        return self.in_channels

    @property
    def stage(self) -> str:
        return "stage2" if self.stage2_embeddings else "stage1"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)



STAGE1_CONFIG = DiTConfig(num_layers=42, hidden_size=3072)
STAGE2_CONFIG = DiTConfig(num_layers=30, hidden_size=1920, stage2_embeddings=True)


def infer_dit_config(state_dict: Mapping[str, object], source: str = "state dict") -> DiTConfig:
    """Read a :class:`DiTConfig` off tensor shapes in the pack's canonical layout."""

    def shape(key):
        try:
            return tuple(state_dict[key].shape)
        except KeyError:
            raise CheckpointError(f"{source}: cannot infer the DiT architecture, key {key!r} is missing") from None

    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"transformer_blocks\.(\d+)\.", k))}
    if not layers or layers != set(range(len(layers))):
        raise CheckpointError(f"{source}: no consecutive transformer blocks found; not a FlashVideo/CogVideoX DiT")
    proj = shape("patch_embed.proj.weight")  # (D, C, p, p)
    return DiTConfig(
        num_layers=len(layers),
        hidden_size=proj[0],
        head_dim=shape("transformer_blocks.0.attn1.norm_q.weight")[0],
        in_channels=proj[1],
        patch_size=proj[2],
        time_embed_dim=shape("time_embedding.linear_1.weight")[0],
        text_hidden_size=shape("patch_embed.text_proj.weight")[1],
        mlp_ratio=shape("transformer_blocks.0.ff.net.0.proj.weight")[0] // proj[0],
        stage2_embeddings="ref_step_time_embedding.linear_1.weight" in state_dict,
    )
