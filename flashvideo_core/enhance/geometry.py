"""Frame sizes for the enhancer: the output size a user asked for (aspect kept, even for H.264) and the grid
size the models run at (multiples of 16: the VAE's 8 times the DiT's 2x2 patches). Frames are resized to the
output size, edge-padded to the grid and cropped back after decoding (docs/ENHANCE.md#sizes)."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from ..errors import InputError

log = logging.getLogger("flashvideo")

#: short side of each preset: 1080p is a true 1080 (1920x1080 for 16:9), 2K 1440 (2560x1440)
SHORT_SIDES = {"1080p": 1080, "2K": 1440}
INPUT_SIZE = "input"
GRID = 16
MIN_SIDE, MAX_SIDE = 16, 4096
#: stage II's trained token count (1072x1920): far beyond it the planner's memory grows and quality drops
TRAINED_PIXELS = 1072 * 1920


def _even(value: float) -> int:
    """The nearest even size, halves up (an odd 37 becomes 38: one pixel more, not one less)."""
    return max(2, 2 * math.floor(value / 2 + 0.5))


def output_size(input_size: tuple, resolution) -> tuple:
    """(height, width) of the enhanced video: a preset name (short side scaled to it), ``"input"``, or an exact
    (height, width)."""
    in_h, in_w = (int(v) for v in input_size)
    if resolution == INPUT_SIZE:
        height, width = _even(in_h), _even(in_w)
    elif resolution in SHORT_SIDES:
        scale = SHORT_SIDES[resolution] / min(in_h, in_w)
        height, width = _even(in_h * scale), _even(in_w * scale)
    elif isinstance(resolution, tuple) and len(resolution) == 2:
        height, width = (int(v) for v in resolution)
        if height % 2 or width % 2:
            raise InputError(f"the output size {width}x{height} must have even sides (H.264 video); "
                             f"try {width + width % 2}x{height + height % 2}")
    else:
        raise InputError(f"resolution must be one of {', '.join(SHORT_SIDES)}, {INPUT_SIZE} or WIDTHxHEIGHT, got "
                         f"{resolution!r}")
    if min(height, width) < MIN_SIDE or max(height, width) > MAX_SIDE:
        raise InputError(f"the output size {width}x{height} is outside {MIN_SIDE}..{MAX_SIDE} pixels a side; choose "
                         "another resolution")
    return height, width


def grid_size(size: tuple) -> tuple:
    """The size the models run at: each side rounded up to a multiple of 16."""
    return tuple(-(-int(v) // GRID) * GRID for v in size)


def pad_to_grid(video: torch.Tensor, grid: tuple) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C, T, *grid), the last row and column repeated (no hard black border for the
    VAE's convolutions to smear inwards)."""
    pad_h, pad_w = grid[0] - video.shape[-2], grid[1] - video.shape[-1]
    if pad_h == 0 and pad_w == 0:
        return video
    return F.pad(video, (0, pad_w, 0, pad_h, 0, 0), mode="replicate")


def describe(input_size: tuple, size: tuple) -> str:
    grid = grid_size(size)
    text = f"{input_size[1]}x{input_size[0]} -> {size[1]}x{size[0]}"
    if grid != tuple(size):
        text += f" (run at {grid[1]}x{grid[0]}, the edge padded to multiples of {GRID}, then cropped)"
    if grid[0] * grid[1] > 2 * TRAINED_PIXELS:
        log.warning("FlashVideo enhance: %dx%d is %.1fx stage II's trained 1920x1072 pixels: slow, much memory, and "
                    "off-distribution", grid[1], grid[0], grid[0] * grid[1] / TRAINED_PIXELS)
    return text
