"""Block-sparse window attention: the 7x11x11 window of :mod:`.window_attention` as a FlexAttention block mask.

Tokens are regrouped so that each block of the mask is a small 3D tile of the latent-patch grid: query tiles
of (1, 5, 12) patches and key tiles of the same size on a grid shifted by the window radius, so the keys a
query tile can reach are exactly 7 x 3 x 2 key tiles (fewer at the borders). Every tile is padded to
``BLOCK`` slots. The kernel evaluates only reachable tile pairs: at 1080p 2.9 % of the query-key pairs of
full attention, padding and text included (:func:`evaluated_fraction`; the window itself is 0.8 %), where
blocks in raster order would need ~8 %. Evaluated blocks apply the mask per element, so the result is the
masked definition exactly; only complete blocks that every query sees whole skip it (the text blocks: the
60-token tiles leave padding in every video block).

FlexAttention is fast only compiled; :func:`flex_available` says whether to use it (CUDA, and a torch whose
``BlockMask.from_kv_blocks`` takes ``seq_lengths``), and :func:`.window_attention.window_attention` falls back
to the dense tile loop elsewhere.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from functools import lru_cache

import torch

#: slots per tile (query and key blocks of the mask); tiles hold up to this many tokens, the rest is padding
BLOCK = 64
QUERY_TILE = (1, 5, 12)
KEY_TILE = (1, 5, 12)

_TEXT, _VIDEO, _PAD = 0, 1, 2


def flex_available(device: torch.device) -> bool:
    """Whether the compiled FlexAttention kernel can run on ``device`` (asked per layer: answered once per type)."""
    return _flex_available_on(torch.device(device).type)


@lru_cache(maxsize=None)
def _flex_available_on(device_type: str) -> bool:
    if device_type != "cuda" or importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
        return False
    from torch.nn.attention.flex_attention import BlockMask

    return "seq_lengths" in inspect.signature(BlockMask.from_kv_blocks).parameters


def _axis_tiles(length: int, size: int, offset: int) -> list:
    """[start, stop) tiles of ``size`` covering 0..length, the first starting at ``-offset`` (clipped)."""
    starts = range(-offset, length, size)
    return [(max(0, s), min(length, s + size)) for s in starts if min(length, s + size) > max(0, s)]


def _key_offset(query: int, key: int, radius: int) -> int:
    """Shift of the key grid that lines key tiles up with a query tile's reach (start - radius)."""
    return radius % key if query % key == 0 else 0


@dataclass(frozen=True)
class WindowBlocks:
    """Slot layouts and the block structure of one (grid, text length, window)."""

    query_tokens: torch.Tensor  # (Q slots,) token index per query slot, -1 for padding
    key_tokens: torch.Tensor  # (K slots,)
    query_pos: torch.Tensor  # (Q slots, 4): kind, t, h, w
    key_pos: torch.Tensor  # (K slots, 4)
    reach: torch.Tensor  # (Q blocks, K blocks) bool: the block is evaluated
    full: torch.Tensor  # (Q blocks, K blocks) bool: evaluated without the mask
    window: tuple

    def evaluated_pairs(self) -> int:
        return int(self.reach.sum()) * BLOCK * BLOCK


def _layout(text_len: int, grid: tuple, tiles: list) -> tuple:
    """Token index and (kind, t, h, w) per slot: text first, then each tile padded to BLOCK slots."""
    frames, height, width = grid
    text_blocks = -(-text_len // BLOCK)
    tokens = torch.full(((text_blocks + len(tiles)) * BLOCK,), -1, dtype=torch.long)
    pos = torch.zeros((tokens.shape[0], 4), dtype=torch.long)
    pos[:, 0] = _PAD
    tokens[:text_len] = torch.arange(text_len)
    pos[:text_len, 0] = _TEXT
    for i, ((t0, t1), (h0, h1), (w0, w1)) in enumerate(tiles):
        t, h, w = torch.meshgrid(torch.arange(t0, t1), torch.arange(h0, h1), torch.arange(w0, w1), indexing="ij")
        t, h, w = t.flatten(), h.flatten(), w.flatten()
        start = (text_blocks + i) * BLOCK
        tokens[start:start + t.numel()] = text_len + (t * height + h) * width + w
        pos[start:start + t.numel()] = torch.stack([torch.full_like(t, _VIDEO), t, h, w], dim=1)
    return tokens, pos, text_blocks


def _tiles(grid: tuple, tile: tuple, offsets: tuple) -> list:
    axes = [_axis_tiles(n, size, off) for n, size, off in zip(grid, tile, offsets)]
    return [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]]


def _axis_relation(query_tiles: list, key_tiles: list, radius: int) -> tuple:
    """(reach, full) between query and key intervals on one axis: some pair / every pair within ``radius``."""
    q0, q1 = (torch.tensor([t[i] for t in query_tiles])[:, None] for i in (0, 1))
    k0, k1 = (torch.tensor([t[i] for t in key_tiles])[None, :] for i in (0, 1))
    reach = (k0 <= q1 - 1 + radius) & (k1 - 1 >= q0 - radius)
    full = ((q1 - 1) - k0 <= radius) & ((k1 - 1) - q0 <= radius)
    return reach, full


@lru_cache(maxsize=8)
def window_blocks(text_len: int, grid: tuple, window: tuple) -> WindowBlocks:
    """The block structure for ``grid`` (frames, height, width) in latent patches (cached per shape)."""
    radius = tuple(w // 2 for w in window)
    key_offsets = tuple(_key_offset(q, k, r) for q, k, r in zip(QUERY_TILE, KEY_TILE, radius))
    q_tiles = _tiles(grid, QUERY_TILE, (0, 0, 0))
    k_tiles = _tiles(grid, KEY_TILE, key_offsets)
    q_tokens, q_pos, text_blocks = _layout(text_len, grid, q_tiles)
    k_tokens, k_pos, _ = _layout(text_len, grid, k_tiles)
    reach = torch.ones(len(q_tiles), len(k_tiles), dtype=torch.bool)
    full = torch.ones_like(reach)
    for axis in range(3):
        axis_reach, axis_full = _axis_relation([t[axis] for t in q_tiles], [t[axis] for t in k_tiles], radius[axis])
        reach &= axis_reach
        full &= axis_full
    key_complete = torch.tensor([(t1 - t0) * (h1 - h0) * (w1 - w0) == BLOCK for (t0, t1), (h0, h1), (w0, w1) in k_tiles])
    full &= key_complete[None, :]
    text_complete = [min(BLOCK, text_len - b * BLOCK) == BLOCK for b in range(text_blocks)]
    n_q, n_k = text_blocks + len(q_tiles), text_blocks + len(k_tiles)
    block_reach = torch.zeros(n_q, n_k, dtype=torch.bool)
    block_full = torch.zeros_like(block_reach)
    block_reach[:text_blocks] = True  # text queries see every key
    block_reach[:, :text_blocks] = True  # every query sees the text
    block_reach[text_blocks:, text_blocks:] = reach
    block_full[text_blocks:, text_blocks:] = full
    for b, complete in enumerate(text_complete):
        block_full[:, b] = complete
    block_full[:text_blocks, text_blocks:] = key_complete[None, :]
    return WindowBlocks(q_tokens, k_tokens, q_pos, k_pos, block_reach, block_full & block_reach, tuple(window))


def evaluated_fraction(text_len: int, grid: tuple, window: tuple) -> float:
    """Query-key pairs the block-sparse kernel evaluates, as a share of full attention's (S x S)."""
    seq = text_len + grid[0] * grid[1] * grid[2]
    return window_blocks(text_len, tuple(grid), tuple(window)).evaluated_pairs() / (seq * seq)


def _block_mask(blocks: WindowBlocks, device):
    from torch.nn.attention.flex_attention import BlockMask

    radius = [w // 2 for w in blocks.window]
    q_kind, q_t, q_h, q_w = (c.contiguous() for c in blocks.query_pos.to(device).unbind(1))
    k_kind, k_t, k_h, k_w = (c.contiguous() for c in blocks.key_pos.to(device).unbind(1))

    def in_window(b, h, q_idx, kv_idx):
        near = (((q_t[q_idx] - k_t[kv_idx]).abs() <= radius[0]) & ((q_h[q_idx] - k_h[kv_idx]).abs() <= radius[1])
                & ((q_w[q_idx] - k_w[kv_idx]).abs() <= radius[2]))
        video_query, text_key = q_kind[q_idx] == _VIDEO, k_kind[kv_idx] == _TEXT
        # text queries see every key, video queries the text and their window, padding rows only the text
        return (k_kind[kv_idx] != _PAD) & ((q_kind[q_idx] == _TEXT) | text_key | (video_query & near))

    def indices(selected: torch.Tensor) -> tuple:
        counts = selected.sum(dim=1).to(torch.int32)
        order = torch.argsort((~selected).to(torch.int8), dim=1, stable=True).to(torch.int32)  # selected first
        return counts[None, None].to(device), order[None, None].to(device)

    partial = blocks.reach & ~blocks.full
    kv_num, kv_idx = indices(partial)
    full_num, full_idx = indices(blocks.full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=(BLOCK, BLOCK), mask_mod=in_window,
                                    seq_lengths=(blocks.query_tokens.numel(), blocks.key_tokens.numel()))


_compiled = None


def _flex(q, k, v, block_mask, compiled: bool):
    from torch.nn.attention.flex_attention import flex_attention

    if not compiled:
        return flex_attention(q, k, v, block_mask=block_mask)
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(flex_attention, dynamic=False)
    # the kernel's tiles must divide the mask's blocks (some versions default to 128-row tiles)
    options = {"BLOCK_M": BLOCK, "BLOCK_N": BLOCK} if q.is_cuda else None
    return _compiled(q, k, v, block_mask=block_mask, kernel_options=options)


@lru_cache(maxsize=4)
def _on_device(text_len: int, grid: tuple, window: tuple, device: str) -> tuple:
    """(query slot -> token, key slot -> token, query tokens of the real slots, real-slot mask, BlockMask) on
    ``device``, built once per shape: every layer and step reuses them instead of rebuilding the index tables."""
    blocks = window_blocks(text_len, grid, window)
    q_tokens, k_tokens = blocks.query_tokens.to(device), blocks.key_tokens.to(device)
    valid = q_tokens >= 0
    return q_tokens.clamp(min=0), k_tokens.clamp(min=0), q_tokens[valid], valid, _block_mask(blocks, device)


def block_sparse_window_attention(q, k, v, text_len: int, grid: tuple, window: tuple, compiled: bool = True):
    """Attention over (B, heads, text_len + T*H*W, d) with video queries limited to ``window``: the same result
    as :func:`.window_attention.window_attention`, evaluating only reachable tile pairs (compiled FlexAttention;
    ``compiled=False`` runs FlexAttention's dense reference, for tests)."""
    q_slots, k_slots, tokens, valid, block_mask = _on_device(text_len, tuple(grid), tuple(window), str(q.device))
    # one dtype, as SDPA gets under autocast (there the normalised q, k are fp32 and v is bf16)
    q, k = q.to(v.dtype), k.to(v.dtype)
    # padding slots read token 0: masked as keys, dropped as queries
    out_slots = _flex(q[:, :, q_slots], k[:, :, k_slots], v[:, :, k_slots], block_mask, compiled)
    out = torch.empty_like(q)
    out[:, :, tokens] = out_slots[:, :, valid]
    return out
