"""Stage II as a video enhancer for clips of any length: window by window, bridge (resize, pad, encode, posterior
sample), degrade, refine, decode, crop, colour fix, cross-fade, and hand the finished frames on
(docs/ENHANCE.md). Only one window's frames, latents and activations exist at a time, so memory does not grow
with the clip; the frames come from an iterator and go to ``write`` as soon as no later window touches them.

The refiner is a callback, so the CLI (the core's Euler loop) and ComfyUI (the host's sampler, with its patches)
share everything else. Latents cross it in a ComfyUI LATENT's space (unscaled), as the nodes pass them, so a clip
that fits one window gives exactly the single pass of Stage II Upscale, Latent Degrade, Refiner and VAE Decode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Optional

import torch

from ..constants import LATENT_SCALE_STAGE2
from ..errors import InputError
from ..progress import Progress
from ..stage2.bridge import encode_for_stage2, posterior_noise, resize_video
from ..stage2.degrade import degradation_noise, degrade_latent
from ..vae.slicing import SlicingOptions, decode_sliced
from .colour import COLOUR_FIXES, apply_colour_fix
from .geometry import describe, grid_size, output_size, pad_to_grid
from .windows import Window, crossfade_weights, plan_windows, window_noise

log = logging.getLogger("flashvideo")

#: refine(degraded latent (1, 16, T', h, w), unscaled) -> refined latent, unscaled
Refine = Callable[[torch.Tensor], torch.Tensor]
#: vae_budget(direction, input shape, options) -> bytes the VAE may use (None: its device's free memory)
Budget = Callable[[str, tuple, SlicingOptions], Optional[int]]


@dataclass(frozen=True)
class EnhancePlan:
    total_frames: int
    input_size: tuple  # (height, width)
    size: tuple  # the output's (height, width)
    windows: tuple
    noise_step: int
    seed: int
    colour_fix: str

    @property
    def grid(self) -> tuple:
        return grid_size(self.size)

    def latent_shape(self, window: Window) -> tuple:
        return (1, 16, window.latent_frames, self.grid[0] // 8, self.grid[1] // 8)

    def describe(self) -> str:
        count = len(self.windows)
        return (f"{self.total_frames} frames, {describe(self.input_size, self.size)}, {count} window"
                f"{'s' if count > 1 else ''} of up to 49 frames, colour fix {self.colour_fix}")


def plan_enhance(total_frames: int, input_size: tuple, resolution, overlap: int, noise_step: int, seed: int,
                 colour_fix: str) -> EnhancePlan:
    """Every check that needs no model: sizes, windows, colour fix (before minutes of loading)."""
    if colour_fix not in COLOUR_FIXES:
        raise InputError(f"colour fix must be one of {', '.join(COLOUR_FIXES)}, got {colour_fix!r}")
    if len(input_size) != 2 or min(input_size) < 1:
        raise InputError(f"the input frames are {input_size}; give frames at least 1 pixel a side")
    size = output_size(tuple(input_size), resolution)
    return EnhancePlan(int(total_frames), tuple(int(v) for v in input_size), size,
                       tuple(plan_windows(int(total_frames), overlap)), int(noise_step), int(seed), colour_fix)


@dataclass
class Pending:
    """The last window's frames that the next window overlaps (not yet written), for resuming as well."""
    next_window: int
    frames: Optional[torch.Tensor]  # (n, H, W, 3) in [0, 1], or None before the first window


class FrameWindows:
    """Cuts an iterator of frames ((H, W, 3) in [0, 1] or uint8) into the windows, keeping only the frames a
    later window still needs."""

    def __init__(self, frames: Iterable, total: int):
        self.frames: Iterator = iter(frames)
        self.total = total
        self.buffer: list = []
        self.buffer_start = 0  # the clip index of buffer[0]

    def take(self, window: Window) -> torch.Tensor:
        while self.buffer_start < window.start:  # frames no window needs any more (all of them when resuming)
            self.buffer.pop(0) if self.buffer else self._next()
            self.buffer_start += 1
        while len(self.buffer) < window.frames:
            self.buffer.append(self._next())
        return _as_float(torch.stack([torch.as_tensor(f) for f in self.buffer[: window.frames]]))

    def _next(self):
        frame = next(self.frames, None)
        if frame is None:
            raise InputError(f"the video ended after {self.buffer_start + len(self.buffer)} frames, but {self.total} "
                             "were announced; the file may be truncated: re-encode it (ffmpeg -i in.mp4 out.mp4) and "
                             "try again")
        return frame


def _as_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()


def enhance_window(vae, frames: torch.Tensor, window: Window, plan: EnhancePlan, refine: Refine,
                   options: SlicingOptions, progress: Progress, budget: Optional[Budget] = None) -> torch.Tensor:
    """One window: (n, H, W, 3) in [0, 1] at the input size -> (n, *plan.size, 3) in [0, 1]."""
    video = frames.movedim(-1, 0).unsqueeze(0).float() * 2 - 1  # (1, 3, n, H, W) in [-1, 1]
    missing = window.padded_frames - window.frames
    if missing:
        video = torch.cat([video, video[:, :, -1:].expand(-1, -1, missing, -1, -1)], dim=2)
    resized = resize_video(video, plan.size)
    grid = pad_to_grid(resized, plan.grid)
    posterior = window_noise(posterior_noise, plan.seed, plan.windows, window.index, plan.latent_shape)
    degradation = window_noise(degradation_noise, plan.seed, plan.windows, window.index, plan.latent_shape)
    encode_budget = budget("encode", tuple(grid.shape), options) if budget else None
    z = encode_for_stage2(vae, grid, plan.grid, plan.seed, options, progress, encode_budget, noise=posterior)
    del grid
    latent = z / LATENT_SCALE_STAGE2  # a LATENT's space, as Stage II Upscale hands it on
    degraded = degrade_latent(latent * LATENT_SCALE_STAGE2, plan.noise_step, noise=degradation) / LATENT_SCALE_STAGE2
    refined = refine(degraded)
    decode_options = replace(options, stage=2)
    decode_budget = budget("decode", tuple(refined.shape), decode_options) if budget else None
    decoded = decode_sliced(vae, refined, decode_options, progress, output_device=torch.device("cpu"),
                            budget_bytes=decode_budget)
    if not torch.isfinite(decoded).all():
        raise InputError("the VAE produced NaN/Inf values (fp16 overflow?); load the VAE in bf16 or fp32")
    out = ((decoded.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).flatten(0, 1)  # as FlashVideo VAE Decode
    out = out[: window.frames, : plan.size[0], : plan.size[1]]
    reference = ((resized[0, :, : window.frames].clamp(-1, 1) + 1) / 2).movedim(0, -1)
    return apply_colour_fix(plan.colour_fix, out, reference.to(out.device))


def enhance_video(vae, frames: Iterable, plan: EnhancePlan, refine: Refine, write: Callable[[torch.Tensor], None],
                  options: SlicingOptions = SlicingOptions(), progress: Optional[Progress] = None,
                  budget: Optional[Budget] = None, pending: Optional[Pending] = None,
                  on_window: Optional[Callable[[Pending], None]] = None) -> None:
    """Enhance ``frames`` (an iterator of ``plan.total_frames`` frames, (H, W, 3)) window by window, calling
    ``write`` with the finished frames in order ((n, H', W', 3) in [0, 1], CPU). ``pending``: resume there (the
    frames must still start at frame 0: the windows before are skipped); ``on_window`` gets the state after each
    window (the CLI saves it to resume a killed run)."""
    progress = progress or Progress()
    pending = pending or Pending(0, None)
    source = FrameWindows(frames, plan.total_frames)
    windows = plan.windows
    for window in windows[pending.next_window:]:
        progress.check()
        progress.begin_phase(f"window {window.index + 1}/{len(windows)}")
        log.info("FlashVideo enhance: window %d/%d, frames %d-%d", window.index + 1, len(windows), window.start,
                 window.end - 1)
        out = enhance_window(vae, source.take(window), window, plan, refine, options, progress, budget)
        if window.shared:
            if pending.frames is None or pending.frames.shape[0] != window.shared:
                raise InputError("internal error: the overlap of the previous window is missing; restart the run")
            weight = crossfade_weights(window.shared).view(-1, 1, 1, 1)
            out[: window.shared] = pending.frames * (1 - weight) + out[: window.shared] * weight
        last = window.index == len(windows) - 1
        done = out.shape[0] if last else windows[window.index + 1].start - window.start
        write(out[:done])
        pending = Pending(window.index + 1, None if last else out[done:].clone())
        if on_window is not None:
            on_window(pending)
        del out
