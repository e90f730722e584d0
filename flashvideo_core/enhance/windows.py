"""Temporal windows: a clip of any length is enhanced in windows of the trained 49 frames (13 latent frames),
neighbours sharing ``overlap + 1`` frames (docs/ENHANCE.md#windows).

Window starts are multiples of 4 frames, so latent frame j of window k and latent frame j + stride/4 of window
k - 1 stand for the same instant; the two noises of the stage-II start (posterior sample and degradation) are
shared on those latent frames, so both windows start the overlap from the same point and agree there. The
decoded frames of the overlap are then cross-faded. A clip of at most 49 frames is one window: exactly the
single pass of the bridge, degrade, refine and decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..settings import ENHANCE_OVERLAP

#: the frames stage II was trained on (13 latent frames)
WINDOW_FRAMES = 49
#: video frames per latent frame (the causal VAE's first latent frame stands for one)
TEMPORAL = 4
#: the largest overlap (ENHANCE_OVERLAP's): its shared latent frames never reach the previous window's own
#: overlap, so each window's noise is its own draw plus a copy of its neighbour's (closed form: a resumed run
#: redraws it)
MAX_OVERLAP = ENHANCE_OVERLAP.hi
#: window k draws its noise from seed + k * SEED_STRIDE (window 0 from the seed itself)
SEED_STRIDE = 0x9E3779B97F4A7C15


@dataclass(frozen=True)
class Window:
    index: int
    start: int  # first frame of the clip in this window
    end: int  # one past its last frame
    shared: int  # frames shared with the previous window (0 for the first)

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def padded_frames(self) -> int:
        """The 4k+1 frames the VAE takes: the window's, the last one repeated (and cut off again after)."""
        return self.frames + (-(self.frames - 1)) % TEMPORAL

    @property
    def latent_frames(self) -> int:
        return (self.padded_frames - 1) // TEMPORAL + 1


def plan_windows(total_frames: int, overlap: int) -> list:
    """Windows covering ``total_frames``: starts ``48 - overlap`` apart, the last one shorter where the clip ends."""
    if total_frames < 1:
        raise InputError("the clip has no frames; give a video with at least one frame")
    check_overlap(overlap)
    stride = WINDOW_FRAMES - 1 - overlap
    windows = [Window(0, 0, min(WINDOW_FRAMES, total_frames), 0)]
    while windows[-1].end < total_frames:
        start = windows[-1].start + stride
        windows.append(Window(len(windows), start, min(start + WINDOW_FRAMES, total_frames), windows[-1].end - start))
    return windows


def check_overlap(overlap, where: str = "overlap") -> int:
    return ENHANCE_OVERLAP.check(overlap, where)


def window_seed(seed: int, index: int) -> int:
    return (int(seed) + index * SEED_STRIDE) % 2**64


def shared_latent_frames(window: Window) -> int:
    """Latent frames window k takes from window k - 1 (its first ``shared`` frames, the boundary frame included)."""
    return 0 if window.index == 0 else (window.shared - 1) // TEMPORAL + 1


def window_noise(draw, seed: int, windows: list, index: int, latent_shape) -> torch.Tensor:
    """The noise of window ``index``: ``draw(shape, seed)`` for it, its first latent frames replaced by the ones
    window ``index - 1`` drew for the same instants. ``latent_shape(window)`` gives a window's latent shape."""
    window = windows[index]
    noise = draw(latent_shape(window), window_seed(seed, index))
    shared = shared_latent_frames(window)
    if shared:
        previous = windows[index - 1]
        offset = (window.start - previous.start) // TEMPORAL
        noise[:, :, :shared] = draw(latent_shape(previous), window_seed(seed, index - 1))[:, :, offset:offset + shared]
    return noise


def crossfade_weights(shared: int) -> torch.Tensor:
    """The incoming window's weight on each of the ``shared`` frames: a raised cosine rising from near 0 to near 1
    (the outgoing window keeps 1 - w), so neither window's edge frame shows alone."""
    position = torch.arange(1, shared + 1, dtype=torch.float64) / (shared + 1)
    return (0.5 - 0.5 * torch.cos(math.pi * position)).float()
