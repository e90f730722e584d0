"""Experimental local-window attention for stage II (the paper's H=11, W=11, T=7 latent-patch window).

The paper reports that stage-II attention maps are spatially sparse: a window cuts the
cost a lot on low-motion clips but blurs large motion, and the released code has no
such option. Here every video query sees all text tokens and the video tokens within
the window around it (clipped at the borders, as a mask would); text queries see
everything. Queries run in bands of rows of one latent frame, each against only the
keys its window can reach, so memory stays linear and the work is ~(7*11*11)/S of full.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: (frames, height, width) in latent patches, as in the paper
DEFAULT_WINDOW = (7, 11, 11)
#: query x key elements per masked SDPA call
BLOCK_ELEMENTS = 1 << 24


def _offsets(length: int, start: int, stop: int, radius: int) -> tuple[int, int]:
    return max(0, start - radius), min(length, stop + radius)


def _row_band(height: int, width: int, text_len: int, rt: int, rh: int) -> int:
    """The most query rows per call whose mask stays under BLOCK_ELEMENTS."""
    band = height
    while band > 1 and band * width * (text_len + (2 * rt + 1) * (band + 2 * rh) * width) > BLOCK_ELEMENTS:
        band //= 2
    return band


def window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, text_len: int, grid: tuple[int, int, int],
    window: tuple[int, int, int] = DEFAULT_WINDOW,
) -> torch.Tensor:
    """Attention over (B, heads, text_len + T*H*W, d) with video queries limited to ``window``."""
    frames, height, width = grid
    rt, rh, rw = (w // 2 for w in window)
    out = torch.empty_like(q)
    out[:, :, :text_len] = F.scaled_dot_product_attention(q[:, :, :text_len], k, v)
    shape = q.shape[:2] + (frames, height, width, q.shape[-1])
    qv, kv, vv = (x[:, :, text_len:].unflatten(2, (frames, height, width)) for x in (q, k, v))
    out_video = out[:, :, text_len:].view(shape)
    k_text, v_text = k[:, :, :text_len], v[:, :, :text_len]
    band = _row_band(height, width, text_len, rt, rh)
    cols = torch.arange(width, device=q.device)
    for t in range(frames):
        t0, t1 = _offsets(frames, t, t + 1, rt)
        for h0 in range(0, height, band):
            h1 = min(height, h0 + band)
            k0, k1 = _offsets(height, h0, h1, rh)
            keys = torch.cat([k_text, kv[:, :, t0:t1, k0:k1].flatten(2, 4)], dim=2)
            values = torch.cat([v_text, vv[:, :, t0:t1, k0:k1].flatten(2, 4)], dim=2)
            q_rows = torch.arange(h0, h1, device=q.device).repeat_interleave(width)
            q_cols = cols.repeat(h1 - h0)
            k_rows = torch.arange(k0, k1, device=q.device).repeat_interleave(width).repeat(t1 - t0)
            k_cols = cols.repeat((k1 - k0) * (t1 - t0))
            local = ((q_rows[:, None] - k_rows[None]).abs() <= rh) & ((q_cols[:, None] - k_cols[None]).abs() <= rw)
            mask = torch.cat([torch.ones(local.shape[0], text_len, dtype=torch.bool, device=q.device), local], dim=1)
            queries = qv[:, :, t, h0:h1].flatten(2, 3)
            result = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)
            out_video[:, :, t, h0:h1] = result.unflatten(2, (h1 - h0, width))
    return out
