"""Colour fixes that pull an enhanced frame's colours back to its input, and the measure used to choose the
default (docs/ENHANCE.md#colour).

- ``wavelet``: keep the output's detail (its high frequencies) and take the input's low frequencies, split by a
  stack of dilated blurs (an a-trous wavelet). Colour and shading come from the input, texture from stage II.
- ``adain``: per frame and channel, shift and scale the output to the input's mean and standard deviation.
- ``none``: the output as stage II made it.

Frames are (T, H, W, 3) in [0, 1] (a ComfyUI IMAGE batch). Lab is CIE L*a*b* (D65) from sRGB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOUR_FIXES = ("wavelet", "adain", "none")
#: blur levels of the wavelet split: dilations 1, 2, ..., 16, so the low band holds structures above ~64 px
WAVELET_LEVELS = 5
#: the measure's low-frequency scale: frames are averaged down by this factor before comparing colours
MEASURE_POOL = 16


def _blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """(N, C, H, W): the separable [1, 2, 1] / 4 kernel at ``dilation``, edges repeated."""
    kernel = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    channels = x.shape[1]
    rows = kernel.view(1, 1, 3, 1).expand(channels, 1, 3, 1)
    cols = kernel.view(1, 1, 1, 3).expand(channels, 1, 1, 3)
    x = F.conv2d(F.pad(x, (0, 0, dilation, dilation), mode="replicate"), rows, dilation=(dilation, 1), groups=channels)
    return F.conv2d(F.pad(x, (dilation, dilation, 0, 0), mode="replicate"), cols, dilation=(1, dilation), groups=channels)


def low_frequencies(x: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """(N, C, H, W) -> its low band after ``levels`` dilated blurs (dilation 2^i, capped below the frame size so
    the edge padding stays valid)."""
    for level in range(levels):
        dilation = min(2**level, max(1, min(x.shape[-2:]) - 1))
        x = _blur(x, dilation)
    return x


def wavelet_fix(output: torch.Tensor, reference: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    out, ref = output.movedim(-1, 1).float(), reference.movedim(-1, 1).float()
    fixed = out - low_frequencies(out, levels) + low_frequencies(ref, levels)
    return fixed.movedim(1, -1).clamp(0, 1)


def adain_fix(output: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    out, ref = output.float(), reference.float()
    out_mean, out_std = out.mean(dim=(1, 2), keepdim=True), out.std(dim=(1, 2), keepdim=True)
    ref_mean, ref_std = ref.mean(dim=(1, 2), keepdim=True), ref.std(dim=(1, 2), keepdim=True)
    return ((out - out_mean) / (out_std + eps) * ref_std + ref_mean).clamp(0, 1)


def apply_colour_fix(name: str, output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``output`` and ``reference``: (T, H, W, 3) in [0, 1], the same size."""
    if name == "none":
        return output
    if name == "wavelet":
        return wavelet_fix(output, reference)
    if name == "adain":
        return adain_fix(output, reference)
    raise ValueError(f"colour fix must be one of {COLOUR_FIXES}, got {name!r}")


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> (..., 3) L*a*b* (D65 white, the CIE formulas)."""
    rgb = rgb.double().clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                           [0.2126729, 0.7151522, 0.0721750],
                           [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64, device=rgb.device)
    xyz = linear @ to_xyz.T / torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64, device=rgb.device)
    delta = 6 / 29
    f = torch.where(xyz > delta**3, xyz.clamp_min(0) ** (1 / 3), xyz / (3 * delta**2) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], dim=-1)


def low_frequency_colour_difference(a: torch.Tensor, b: torch.Tensor, pool: int = MEASURE_POOL) -> float:
    """Mean Lab distance (CIE76 delta E) between two (T, H, W, 3) clips after averaging ``pool`` x ``pool``
    blocks: how far the colours (not the detail) moved."""
    def low(x):
        x = x.movedim(-1, 1).float()
        size = max(1, min(pool, *x.shape[-2:]))
        return F.avg_pool2d(x, size, ceil_mode=True).movedim(1, -1)

    return float((srgb_to_lab(low(a)) - srgb_to_lab(low(b))).norm(dim=-1).mean())
