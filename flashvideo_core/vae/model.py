"""The CogVideoX 3D causal VAE: encoder, decoder and the diagonal-Gaussian posterior.

This is the plain (unsliced) computation. :mod:`flashvideo_core.vae.slicing` runs the
same modules chunk by chunk and tile by tile within a memory budget.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .config import VAEConfig
from .layers import CausalConv3d, CausalConvCache, Downsample3D, ResnetBlock3D, SpatialNorm3D, Upsample3D


class _EncoderLevel(nn.Module):
    def __init__(self, blocks: list[nn.Module], downsample: Optional[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.downsample = downsample


class _MidBlock(nn.Module):
    def __init__(self, channels: int, config: VAEConfig, zq_channels: Optional[int]):
        super().__init__()
        groups, eps = config.norm_num_groups, config.norm_eps
        self.block_1 = ResnetBlock3D(channels, channels, groups, eps, zq_channels)
        self.block_2 = ResnetBlock3D(channels, channels, groups, eps, zq_channels)

    def forward(self, x, cache=None, zq=None):
        return self.block_2(self.block_1(x, cache, zq), cache, zq)


class Encoder3D(nn.Module):
    """Video (B, 3, T, H, W) in [-1, 1] -> moments (B, 2 * latent, T', H/8, W/8)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, groups, eps = config.block_out_channels, config.norm_num_groups, config.norm_eps
        self.conv_in = CausalConv3d(config.in_channels, widths[0])
        self.down = nn.ModuleList()
        in_ch = widths[0]
        for level, out_ch in enumerate(widths):
            blocks = []
            for i in range(config.layers_per_block):
                blocks.append(ResnetBlock3D(in_ch if i == 0 else out_ch, out_ch, groups, eps))
            is_last = level == config.num_levels - 1
            downsample = None if is_last else Downsample3D(out_ch, compress_time=level < config.temporal_levels)
            self.down.append(_EncoderLevel(blocks, downsample))
            in_ch = out_ch
        self.mid = _MidBlock(widths[-1], config, zq_channels=None)
        self.norm_out = nn.GroupNorm(groups, widths[-1], eps=eps, affine=True)
        self.conv_out = CausalConv3d(widths[-1], 2 * config.latent_channels)

    def forward(self, x: torch.Tensor, cache: Optional[CausalConvCache] = None) -> torch.Tensor:
        h = self.conv_in(x, cache)
        for level in self.down:
            for block in level.block:
                h = block(h, cache)
            if level.downsample is not None:
                h = level.downsample(h)
        h = self.mid(h, cache)
        h = nn.functional.silu(self.norm_out(h), inplace=True)
        return self.conv_out(h, cache)


class _DecoderLevel(nn.Module):
    def __init__(self, blocks: list[nn.Module], upsample: Optional[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.upsample = upsample


class Decoder3D(nn.Module):
    """Latent (B, latent, T', h, w) -> video (B, 3, T, 8h, 8w) in about [-1, 1].

    Every norm is conditioned on the decoder input ``z`` (SpatialNorm3D). Levels are
    numbered as in the encoder and run from the deepest (``up.{n-1}``) to ``up.0``.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, groups, eps, zq = config.block_out_channels, config.norm_num_groups, config.norm_eps, config.latent_channels
        self.conv_in = CausalConv3d(config.latent_channels, widths[-1])
        self.mid = _MidBlock(widths[-1], config, zq_channels=zq)
        levels: list[nn.Module] = [None] * config.num_levels  # type: ignore[list-item]
        in_ch = widths[-1]
        for level in reversed(range(config.num_levels)):
            out_ch = widths[level]
            blocks = []
            for i in range(config.layers_per_block + 1):
                blocks.append(ResnetBlock3D(in_ch if i == 0 else out_ch, out_ch, groups, eps, zq_channels=zq))
            # The deepest temporal_levels levels double the frame count (reverse of the encoder).
            compress_time = level >= config.num_levels - config.temporal_levels
            upsample = Upsample3D(out_ch, compress_time) if level > 0 else None
            levels[level] = _DecoderLevel(blocks, upsample)
            in_ch = out_ch
        self.up = nn.ModuleList(levels)
        self.norm_out = SpatialNorm3D(widths[0], zq, groups, eps)
        self.conv_out = CausalConv3d(widths[0], config.out_channels)

    def forward(self, z: torch.Tensor, cache: Optional[CausalConvCache] = None) -> torch.Tensor:
        starts_clip = cache is None or cache.is_empty()  # the first latent frame is one video frame
        h = self.conv_in(z, cache)
        h = self.mid(h, cache, z)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h, cache, z)
            if level.upsample is not None:
                h = level.upsample(h, starts_clip)
        h = nn.functional.silu(self.norm_out(h, z), inplace=True)
        return self.conv_out(h, cache)


class DiagonalGaussian:
    """Posterior N(mean, exp(logvar)) from the encoder moments (logvar clamped to [-30, 20])."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: Optional[torch.Generator] = None, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """mean + std * eps; eps is ``noise`` if given (the enhancer shares it between windows), else drawn on the
        generator's device, so a CPU generator gives the same latent on every device."""
        if noise is None:
            device = generator.device if generator is not None else self.mean.device
            noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(noise.shape) != tuple(self.mean.shape):
            raise ValueError(f"posterior noise {tuple(noise.shape)} does not match the latent {tuple(self.mean.shape)}")
        return self.mean + self.std * noise.to(self.mean.device, self.mean.dtype)


class CogVideoXVAE(nn.Module):
    """The FlashVideo / CogVideoX 3D causal VAE with official parameter names.

    ``encode_moments`` and ``decode`` act on unscaled latents; multiply by the stage's
    scale factor (:mod:`flashvideo_core.constants`) when handing latents to a DiT.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder3D(config)
        self.decoder = Decoder3D(config)

    def encode_moments(self, video: torch.Tensor, cache: Optional[CausalConvCache] = None) -> torch.Tensor:
        return self.encoder(video, cache)

    def decode(self, z: torch.Tensor, cache: Optional[CausalConvCache] = None) -> torch.Tensor:
        return self.decoder(z, cache)
