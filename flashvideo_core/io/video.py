"""Writing frames to mp4 with PyAV (values rounded, not truncated as in the reference)."""

from __future__ import annotations

import os

import torch

from ..errors import InputError


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8, rounded to nearest."""
    x = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous()


def write_video(path: str, video: torch.Tensor, fps: int = 8, crf: int = 14) -> None:
    """Write (3, T, H, W) in [-1, 1] as H.264 mp4 (even sizes required by yuv420p).

    Written to a sibling ``.partial.mp4`` and renamed at the end, so a failed write never leaves a broken file
    or destroys one that was there.
    """
    import av

    if video.ndim != 4 or video.shape[0] != 3 or 0 in video.shape:
        raise InputError(f"{path}: a video to write must be (3, frames, height, width), got {tuple(video.shape)}")
    if not torch.isfinite(video).all():
        raise InputError(f"{path}: the video holds NaN/Inf values (fp16 overflow?); not written. Fix: run in bf16 "
                         "or fp32")
    frames = to_uint8_frames(video).cpu().numpy()
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise InputError(f"{path}: mp4 (yuv420p) needs even width and height, got {width}x{height}")
    partial = partial_path(path)
    try:
        _encode(partial, frames, fps, crf, av)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def partial_path(path: str) -> str:
    """Where ``write_video`` writes before renaming (the container format follows the .mp4 ending)."""
    stem, ext = os.path.splitext(path)
    return f"{stem}.partial{ext or '.mp4'}"


def _encode(path: str, frames, fps: int, crf: int, av) -> None:
    _, height, width, _ = frames.shape
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
