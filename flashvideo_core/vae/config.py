"""Architecture of the CogVideoX 3D causal VAE as data.

The loader never needs a config file or a file name: every size that varies between
the official VAE and tiny test VAEs (channel widths, depth per level, latent and image
channels) is read off the tensor shapes of a state dict in the official key layout.
What shapes cannot tell (GroupNorm groups, eps, which levels compress time) is fixed
by the CogVideoX VAE family and kept here with the official values; a pack-native
safetensors file records the whole config in its metadata anyway.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Mapping

from ..errors import CheckpointError


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of a CogVideoX-family VAE (defaults = the official ``3d-vae.pt``)."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    #: output channels of encoder level L (= decoder level L), L = 0 is full resolution.
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512)
    #: ResNet blocks per encoder level; the decoder has one more per level.
    layers_per_block: int = 3
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    #: the first log2(ratio) levels halve (encoder) or double (decoder) the frame count.
    temporal_compression_ratio: int = 4

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        for c in self.block_out_channels + (self.latent_channels,):
            if c <= 0:
                raise ValueError(f"channel counts must be positive, got {self.block_out_channels}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(
                    f"every width in block_out_channels {self.block_out_channels} must be a multiple of "
                    f"norm_num_groups={self.norm_num_groups} (GroupNorm)"
                )
        if self.temporal_compression_ratio not in (1, 2, 4, 8):
            raise ValueError("temporal_compression_ratio must be a power of two <= 8")

    @property
    def num_levels(self) -> int:
        return len(self.block_out_channels)

    @property
    def spatial_compression(self) -> int:
        return 2 ** (self.num_levels - 1)

    @property
    def temporal_levels(self) -> int:
        return self.temporal_compression_ratio.bit_length() - 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)



#: The official FlashVideo / CogVideoX VAE.
OFFICIAL_VAE_CONFIG = VAEConfig()


def infer_vae_config(state_dict: Mapping[str, "object"], source: str = "state dict") -> VAEConfig:
    """Read a :class:`VAEConfig` off tensor shapes in the official key layout."""

    def shape(key):
        try:
            return tuple(state_dict[key].shape)
        except KeyError:
            raise CheckpointError(
                f"{source}: cannot infer the VAE architecture, key {key!r} is missing. "
                "Is this a CogVideoX/FlashVideo VAE (3d-vae.pt)?"
            ) from None

    levels = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    if not levels or levels != list(range(len(levels))):
        raise CheckpointError(f"{source}: no consecutive encoder.down.N levels found; not a CogVideoX VAE")
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    widths = tuple(shape(f"encoder.down.{lvl}.block.0.conv1.conv.weight")[0] for lvl in levels)
    conv_in = shape("encoder.conv_in.conv.weight")
    enc_out = shape("encoder.conv_out.conv.weight")
    dec_out = shape("decoder.conv_out.conv.weight")
    if any(w % OFFICIAL_VAE_CONFIG.norm_num_groups for w in widths):
        raise CheckpointError(
            f"{source}: channel widths {widths} are not multiples of 32, so the GroupNorm group count "
            "cannot be known from shapes alone. Only files written by this pack's converter "
            "(which record the config in their metadata) may use such widths."
        )
    return VAEConfig(
        in_channels=conv_in[1],
        out_channels=dec_out[0],
        latent_channels=enc_out[0] // 2,
        block_out_channels=widths,
        layers_per_block=len(blocks),
    )

