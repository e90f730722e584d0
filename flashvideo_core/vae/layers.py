"""Building blocks of the CogVideoX 3D causal VAE (docs/VAE.md#architecture).

Module and parameter names follow the official ``3d-vae.pt`` layout, so the official
state dict loads without renaming. The temporal cache of the causal convolutions is
explicit (:class:`CausalConvCache`) rather than hidden module state: a decode that
stops half-way can never leak stale frames into the next one.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class CausalConvCache:
    """The last ``k - 1`` padded input frames of each causal conv, carried across time chunks.

    Passing the same cache to consecutive chunks makes every convolution exact across
    chunk edges; passing ``None`` treats the input as a whole clip.
    """

    def __init__(self):
        self._frames: dict[nn.Module, torch.Tensor] = {}

    def get(self, conv: nn.Module) -> Optional[torch.Tensor]:
        return self._frames.get(conv)

    def put(self, conv: nn.Module, frames: torch.Tensor) -> None:
        self._frames[conv] = frames

    def is_empty(self) -> bool:
        """Whether no chunk has passed yet (the next one starts the clip)."""
        return not self._frames


class SafeConv3d(nn.Conv3d):
    """Conv3d that splits very large inputs into overlapping time windows.

    cuDNN fails on tensors of 2**31 elements or more, which a 1080p decode at full
    width reaches. Splitting along time with ``k_t - 1`` frames of overlap gives
    results identical to one call.
    """

    #: inputs larger than this many elements are split (well under the int32 limit).
    max_input_elements = 2**30

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kt = self.kernel_size[0]
        frames = x.shape[2]
        if x.numel() <= self.max_input_elements or frames <= kt:
            return super().forward(x)
        per_frame = x.numel() // frames
        window = max(1, self.max_input_elements // per_frame - (kt - 1))
        out_frames = frames - kt + 1
        parts = [super(SafeConv3d, self).forward(x[:, :, s : s + window + kt - 1]) for s in range(0, out_frames, window)]
        return torch.cat(parts, dim=2)


class CausalConv3d(nn.Module):
    """3D conv, causal in time: ``k - 1`` frames of left context, zero padding in space.

    The left context is the first frame repeated (start of a clip) or the cached
    frames of the previous chunk. Stored under ``.conv`` as in the official layout.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.time_pad = kernel_size - 1
        space_pad = kernel_size // 2
        self.conv = SafeConv3d(in_channels, out_channels, kernel_size, padding=(0, space_pad, space_pad))

    def forward(self, x: torch.Tensor, cache: Optional[CausalConvCache] = None) -> torch.Tensor:
        if self.time_pad:
            context = cache.get(self) if cache is not None else None
            if context is None:
                context = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
            x = torch.cat([context.to(x.dtype), x], dim=2)
            if cache is not None:
                cache.put(self, x[:, :, -self.time_pad :].clone())
        return self.conv(x)


def _resize_latent_like(zq: torch.Tensor, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-resize the decoder input to a feature map, first frame apart when odd."""
    if frames > 1 and frames % 2 == 1:
        first = F.interpolate(zq[:, :, :1], size=(1, *size))
        rest = F.interpolate(zq[:, :, 1:], size=(frames - 1, *size))
        return torch.cat([first, rest], dim=2)
    return F.interpolate(zq, size=(frames, *size))


class SpatialNorm3D(nn.Module):
    """Decoder norm: GroupNorm(f) * conv_y(zq) + conv_b(zq), zq = latent resized to f."""

    def __init__(self, f_channels: int, zq_channels: int, groups: int, eps: float):
        super().__init__()
        self.norm_layer = nn.GroupNorm(groups, f_channels, eps=eps, affine=True)
        self.conv_y = CausalConv3d(zq_channels, f_channels, kernel_size=1)
        self.conv_b = CausalConv3d(zq_channels, f_channels, kernel_size=1)

    def forward(self, f: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        zq = _resize_latent_like(zq, f.shape[2], f.shape[-2:])
        out = self.norm_layer(f)
        out.mul_(self.conv_y(zq)).add_(self.conv_b(zq))
        return out


class ResnetBlock3D(nn.Module):
    """norm -> SiLU -> conv -> norm -> SiLU -> conv, plus a (1x1x1) shortcut.

    Encoder blocks use GroupNorm; decoder blocks (``zq_channels`` set) use SpatialNorm3D.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float, zq_channels: Optional[int] = None):
        super().__init__()
        if zq_channels is None:
            self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
            self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        else:
            self.norm1 = SpatialNorm3D(in_channels, zq_channels, groups, eps)
            self.norm2 = SpatialNorm3D(out_channels, zq_channels, groups, eps)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.nin_shortcut = SafeConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def _norm(self, norm: nn.Module, x: torch.Tensor, zq: Optional[torch.Tensor]) -> torch.Tensor:
        return norm(x) if zq is None else norm(x, zq)

    def forward(self, x: torch.Tensor, cache: Optional[CausalConvCache] = None, zq: Optional[torch.Tensor] = None):
        h = F.silu(self._norm(self.norm1, x, zq), inplace=True)
        h = self.conv1(h, cache)
        h = F.silu(self._norm(self.norm2, h, zq), inplace=True)
        h = self.conv2(h, cache)
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return h.add_(shortcut)


def _conv2d_per_frame(conv: nn.Conv2d, x: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """Apply a Conv2d to every frame of (B, C, T, H, W) without reshaping copies."""
    return F.conv3d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, stride, stride), padding=(0, padding, padding))


class Downsample3D(nn.Module):
    """Halve H and W (pad right/bottom, 3x3 stride-2 conv); optionally average frame pairs.

    With an odd frame count the first frame stays alone (the causal "image" frame).
    """

    def __init__(self, channels: int, compress_time: bool):
        super().__init__()
        self.compress_time = compress_time
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        if self.compress_time and frames > 1:
            keep = frames % 2
            pairs = x[:, :, keep:].unflatten(2, (-1, 2)).mean(dim=3)
            x = torch.cat([x[:, :, :keep], pairs], dim=2) if keep else pairs
        x = F.pad(x, (0, 1, 0, 1))
        return _conv2d_per_frame(self.conv, x, stride=2, padding=0)


class Upsample3D(nn.Module):
    """Double H and W (nearest, then 3x3 conv); optionally double frames.

    With an odd frame count the first frame is not repeated in time, so 1 + 2k
    latent frames become 1 + 4k. ``starts_clip``: these frames begin the clip, so the first
    one stands for one video frame whatever the count. The reference decides by parity
    alone, which turns an even latent count T (5, 13, 21, ... frames) into 4T frames,
    every frame after the first shifted by three; its clips are always 49 frames (T = 13),
    where both rules agree.
    """

    def __init__(self, channels: int, compress_time: bool):
        super().__init__()
        self.compress_time = compress_time
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, starts_clip: bool = False) -> torch.Tensor:
        frames = x.shape[2]
        if self.compress_time and frames > 1:
            if frames % 2 or starts_clip:
                first = F.interpolate(x[:, :, :1], scale_factor=(1.0, 2.0, 2.0))
                rest = F.interpolate(x[:, :, 1:], scale_factor=(2.0, 2.0, 2.0))
                x = torch.cat([first, rest], dim=2)
            else:
                x = F.interpolate(x, scale_factor=(2.0, 2.0, 2.0))
        else:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0))
        return _conv2d_per_frame(self.conv, x, stride=1, padding=1)
