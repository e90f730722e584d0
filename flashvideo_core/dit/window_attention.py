"""Experimental local-window attention for stage II (the paper's H=11, W=11, T=7 latent-patch window).

The paper reports that stage-II attention maps are spatially sparse: a window cuts the
cost a lot on low-motion clips but blurs large motion, and the released code has no
such option. Here every video query sees all text tokens and the video tokens within
the window around it (clipped at the borders, as a mask would); text queries see
everything. Queries run in small tiles, each against only the keys its windows can
reach, so memory stays linear; at 1080p a tile's 7 x 21 x 21 reachable keys are ~3% of
the 104,746 of full attention (the per-query window itself is 7 x 11 x 11 = 847).

That loop issues about a thousand small masked SDPA calls per layer at 1080p, which a GPU runs far below its
peak; on CUDA the same attention runs as one block-sparse FlexAttention kernel instead
(:mod:`.window_blocks`), and this loop is the fallback everywhere else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .window_blocks import block_sparse_window_attention, flex_available

#: (frames, height, width) in latent patches, as in the paper
DEFAULT_WINDOW = (7, 11, 11)
#: query x key elements per masked SDPA call
BLOCK_ELEMENTS = 1 << 24


def _offsets(length: int, start: int, stop: int, radius: int) -> tuple[int, int]:
    return max(0, start - radius), min(length, stop + radius)


def _tile_edge(height: int, width: int, text_len: int, rt: int, rh: int, rw: int) -> int:
    """Query tile edge (latent patches): one window wide, halved until the mask fits BLOCK_ELEMENTS."""
    edge = max(2 * rh + 1, 2 * rw + 1)
    while edge > 1 and edge * edge * (text_len + (2 * rt + 1) * (edge + 2 * rh) * (edge + 2 * rw)) > BLOCK_ELEMENTS:
        edge //= 2
    return edge


def _axis(start: int, stop: int, device) -> torch.Tensor:
    return torch.arange(start, stop, device=device)


def window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, text_len: int, grid: tuple[int, int, int],
    window: tuple[int, int, int] = DEFAULT_WINDOW, kernel: str = "auto",
) -> torch.Tensor:
    """Attention over (B, heads, text_len + T*H*W, d) with video queries limited to ``window``.

    ``kernel``: "flex" (block-sparse FlexAttention, compiled), "tiles" (the loop below) or "auto" (flex on
    CUDA). The loop runs queries in (1 frame x edge x edge) tiles against the keys their windows can reach
    (the tile grown by the window radius), masked to each query's own window.
    """
    if len(window) != 3 or min(window) < 1:
        raise ValueError(f"window must be three positive sizes (frames, height, width), got {window}")
    if kernel == "flex" or kernel == "auto" and flex_available(q.device):
        return block_sparse_window_attention(q, k, v, text_len, grid, window)
    frames, height, width = grid
    rt, rh, rw = (w // 2 for w in window)
    out = torch.empty_like(q)
    out[:, :, :text_len] = F.scaled_dot_product_attention(q[:, :, :text_len], k, v)
    qv, kv, vv = (x[:, :, text_len:].unflatten(2, (frames, height, width)) for x in (q, k, v))
    out_video = out[:, :, text_len:].view(q.shape[:2] + (frames, height, width, q.shape[-1]))
    k_text, v_text = k[:, :, :text_len], v[:, :, :text_len]
    edge = _tile_edge(height, width, text_len, rt, rh, rw)
    dev = q.device
    for t in range(frames):
        t0, t1 = _offsets(frames, t, t + 1, rt)
        for h0 in range(0, height, edge):
            h1 = min(height, h0 + edge)
            kh0, kh1 = _offsets(height, h0, h1, rh)
            for w0 in range(0, width, edge):
                w1 = min(width, w0 + edge)
                kw0, kw1 = _offsets(width, w0, w1, rw)
                keys = torch.cat([k_text, kv[:, :, t0:t1, kh0:kh1, kw0:kw1].flatten(2, 4)], dim=2)
                values = torch.cat([v_text, vv[:, :, t0:t1, kh0:kh1, kw0:kw1].flatten(2, 4)], dim=2)
                near_h = (_axis(h0, h1, dev)[:, None] - _axis(kh0, kh1, dev)[None]).abs() <= rh  # (qh, kh)
                near_w = (_axis(w0, w1, dev)[:, None] - _axis(kw0, kw1, dev)[None]).abs() <= rw  # (qw, kw)
                local = (near_h[:, None, :, None] & near_w[None, :, None, :]).flatten(0, 1).flatten(1, 2)
                local = local.repeat(1, t1 - t0)  # every frame of the time window
                mask = torch.cat([torch.ones(local.shape[0], text_len, dtype=torch.bool, device=dev), local], dim=1)
                queries = qv[:, :, t, h0:h1, w0:w1].flatten(2, 3)
                result = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)
                out_video[:, :, t, h0:h1, w0:w1] = result.unflatten(2, (h1 - h0, w1 - w0))
    return out
