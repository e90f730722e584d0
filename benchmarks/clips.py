"""Synthetic clips with known motion and the join measure, shared by the enhancer's benchmark and its tests."""

from __future__ import annotations

import torch


def moving_clip(frames: int, height: int = 32, width: int = 48, kind: str = "pattern") -> torch.Tensor:
    """(T, H, W, 3) in [0, 1]: a drifting pattern, a pan, or a scene cut a little after the middle."""
    t = torch.arange(frames).float()[:, None, None]
    y = torch.arange(height).float()[None, :, None]
    x = torch.arange(width).float()[None, None, :]
    if kind == "pattern":
        channels = (torch.sin((x - 1.5 * t) / 4), torch.cos((y + 0.7 * t) / 5), torch.sin((x + y) / 6 + 0.2 * t))
    elif kind == "pan":
        channels = (torch.sin((x + 2 * t) / 7) * torch.cos(y / 5), torch.cos((x + 2 * t) / 3),
                    torch.sin((x + 2 * t + y) / 9))
    elif kind == "cut":
        first = (t < frames // 2 + 3).float()
        channels = (first * torch.sin((x - t) / 4) + (1 - first) * torch.cos((y + t) / 3), 0.8 * first - 0.4 + 0 * x,
                    torch.sin((x + y + t) / 5))
    else:
        raise ValueError(f"kind must be pattern, pan or cut, got {kind!r}")
    return torch.stack([(0.5 + 0.4 * c).expand(frames, height, width) for c in channels], dim=-1).clamp(0, 1)


def join_ratio(out: torch.Tensor, windows) -> float:
    """The largest frame-to-frame change where windows meet (their shared frames and the step into them) over the
    median change inside windows: 1 means the joins cannot be told from the motion."""
    change = (out[1:] - out[:-1]).abs().mean(dim=(1, 2, 3))
    joins = {f - 1 for w in windows[1:] for f in range(w.start, w.end)[: w.shared + 1]} & set(range(len(change)))
    inside = torch.stack([c for i, c in enumerate(change) if i not in joins])
    return float(change[sorted(joins)].max() / inside.median())
