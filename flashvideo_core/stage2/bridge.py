"""The bridge from a stage-I latent (or any video) to the stage-II input latent (docs/SAMPLING.md#bridge).

Done in pixel space as the reference: decode with the stage-I scale, resize each frame
bilinearly with antialiasing, encode with the stage-II scale and *sample* the posterior.
Every VAE pass goes through the memory-bounded slicer.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

import torch
import torch.nn.functional as F

from ..constants import LATENT_SCALE_STAGE1, LATENT_SCALE_STAGE2
from ..errors import InputError
from ..progress import Progress
from ..vae.model import CogVideoXVAE, DiagonalGaussian
from ..vae.slicing import SlicingOptions, decode_sliced, encode_sliced

log = logging.getLogger("flashvideo")

#: (height, width) presets; 1080 // 16 * 16 = 1072, as the reference rounds.
RESOLUTIONS = {"1080p": (1072, 1920), "2K": (1440, 2560)}
TRAINED_RESOLUTION = RESOLUTIONS["1080p"]
#: frames resized per interpolate call (bounds the fp32 working set at 2K).
RESIZE_FRAMES_PER_CALL = 4


def check_target_size(height: int, width: int) -> tuple[int, int]:
    if height % 16 or width % 16 or height <= 0 or width <= 0:
        raise InputError(
            f"stage-II size must be positive multiples of 16, got {width}x{height}; "
            f"try {max(16, width // 16 * 16)}x{max(16, height // 16 * 16)}"
        )
    if (height, width) not in RESOLUTIONS.values():
        log.warning("FlashVideo: stage II was trained at 1072x1920 (2K works by RoPE extrapolation); "
                    "%dx%d is off-distribution", width, height)
    return height, width


def _check_finite(x: torch.Tensor, what: str, fix: str) -> None:
    """NaN/Inf would pass through resize and the VAE into a silently black or noisy video."""
    if not x.is_floating_point():
        raise InputError(f"stage-II bridge: the {what} has dtype {x.dtype}, not floating point. Fix: {fix}")
    if not torch.isfinite(x).all():
        raise InputError(f"stage-II bridge: the {what} holds NaN/Inf values. Fix: {fix}")


def resize_video(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B, 3, T, *size): bilinear, antialiased, fp32, a few frames at a time."""
    batch, channels, frames = video.shape[:3]
    if tuple(video.shape[-2:]) == tuple(size):
        return video.float()
    out = torch.empty(batch, channels, frames, *size, dtype=torch.float32, device=video.device)
    for start in range(0, frames, RESIZE_FRAMES_PER_CALL):
        chunk = video[:, :, start : start + RESIZE_FRAMES_PER_CALL].float()
        flat = chunk.transpose(1, 2).flatten(0, 1)  # (B*t, 3, H, W)
        resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
        out[:, :, start : start + chunk.shape[2]] = resized.unflatten(0, (batch, -1)).transpose(1, 2)
    return out


def encode_for_stage2(
    vae: CogVideoXVAE,
    video: torch.Tensor,
    size: tuple[int, int],
    seed: int = 0,
    options: SlicingOptions = SlicingOptions(),
    progress: Optional[Progress] = None,
    budget_bytes: Optional[int] = None,
    noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Video (B, 3, T, H, W) in [-1, 1] -> stage-II latent (B, 16, T', h/8, w/8), posterior sample x 1.15258426.

    The posterior noise is ``noise`` if given, else ``posterior_noise(shape, seed)``: one draw from a CPU
    generator (the reference draws per encode chunk on the GPU, which no other device can reproduce anyway).
    """
    if video.ndim != 5 or video.shape[1] != 3 or video.shape[2] == 0:
        raise InputError(f"stage-II bridge: the video has shape {tuple(video.shape)}. Fix: pass (batch, 3, frames, "
                         "height, width) with at least one frame")
    if (video.shape[2] - 1) % 4:
        raise InputError(f"the VAE needs 4k+1 frames (17, 33, 49, ...), got {video.shape[2]}")
    _check_finite(video, "video", "pass frames with values in [-1, 1] (an fp16 decode overflows: use bf16 or fp32)")
    height, width = check_target_size(*size)
    resized = resize_video(video.clamp(-1, 1), (height, width))
    moments = encode_sliced(vae, resized, options, progress, output_device=video.device, budget_bytes=budget_bytes)
    del resized
    posterior = DiagonalGaussian(moments)
    z = posterior.sample(noise=posterior_noise(posterior.mean.shape, seed) if noise is None else noise)
    return z * LATENT_SCALE_STAGE2


def posterior_noise(shape: tuple, seed: int = 0) -> torch.Tensor:
    """The bridge's posterior noise for ``seed`` (fp32, CPU-drawn: the same on every device)."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)


def stage1_to_stage2(
    vae: CogVideoXVAE,
    stage1_latent: torch.Tensor,
    size: tuple[int, int] = TRAINED_RESOLUTION,
    seed: int = 0,
    options: SlicingOptions = SlicingOptions(),
    progress: Optional[Progress] = None,
    budget_bytes: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-I latent (B, 16, T', h, w), scaled by 0.7 -> (stage-II latent, decoded stage-I video in [-1, 1])."""
    if stage1_latent.ndim != 5 or 0 in stage1_latent.shape:
        raise InputError(f"stage-II bridge: the stage-I latent has shape {tuple(stage1_latent.shape)}. Fix: pass "
                         "(batch, 16, latent frames, height/8, width/8)")
    _check_finite(stage1_latent, "stage-I latent", "re-run stage I (fp16 overflows in CogVideoX models: use bf16)")
    stage1_options = replace(options, stage=1)  # a stage-I latent, whatever stage the caller's options name
    preview = decode_sliced(vae, stage1_latent.float() / LATENT_SCALE_STAGE1, stage1_options, progress,
                            budget_bytes=budget_bytes)
    preview = preview.clamp(-1, 1)  # the reference clamps to [0, 255] before re-normalising
    return encode_for_stage2(vae, preview, size, seed, options, progress, budget_bytes), preview
