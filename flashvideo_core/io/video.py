"""Writing frames to mp4 with PyAV (values rounded, not truncated as in the reference)."""

from __future__ import annotations

import torch


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8, rounded to nearest."""
    x = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous()


def write_video(path: str, video: torch.Tensor, fps: int = 8, crf: int = 14) -> None:
    """Write (3, T, H, W) in [-1, 1] as H.264 mp4 (even sizes required by yuv420p)."""
    import av

    frames = to_uint8_frames(video).cpu().numpy()
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"mp4 (yuv420p) needs even width and height, got {width}x{height}")
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
