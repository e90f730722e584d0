"""Memory-bounded VAE encode and decode: temporal chunks and blended spatial tiles.

Temporal chunks carry the causal-conv cache, so every convolution is exact across
chunk edges. What does change with the chunking is GroupNorm: its statistics are
taken per chunk (and per tile), exactly as in the official code. Hence the modes:

* ``reference`` (default): the official temporal boundaries (decode: latent frames
  [0:3] then pairs; encode: 17 pixel frames then 16s, i.e. [17, 16, 16] for 49), so
  official weights give the official look. A decode of a stage-II latent
  (``SlicingOptions.stage == 2``) also uses the official spatial split (docs/VAE.md#reference-slicing):
  1 x 2 width tiles, nominal boundaries ``idx * L // n``, each read ``tile_overlap``
  (16) latents beyond its inner sides where that much exists. More tiles only if the
  budget needs them (noted in the log), never fewer. Stage-I decodes and all encodes
  get spatial tiles only if the budget needs them.
* ``auto``: the largest chunks, then the fewest tiles, that fit the memory budget.
  Fewer chunk edges means GroupNorm statistics closer to a whole-clip pass.
* ``manual``: chunk and tile sizes as given.
* ``whole``: one pass, no slicing (the exact whole-clip result; most memory).

Spatial tiles overlap by ``tile_overlap`` latents on each inner side and are blended
with linear ramps over a band of the same width centred on the nominal boundary, so
each blended value still has ``tile_overlap / 2`` latents of context. The reference
used the same 16-latent overlap but cut hard at the boundary, leaving a visible seam
when tile statistics differ; blending removes it. ``hard_seams=True`` cuts at the
boundary instead, which with the stage-II reference tiles reproduces the official
crop-and-paste exactly.

The stage is data, never guessed from shapes: callers that decode a stage-II latent
pass ``stage=2``.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..device_memory import free_memory_bytes
from ..errors import InputError
from ..progress import Progress
from .config import VAEConfig
from .layers import CausalConvCache, ResnetBlock3D
from .model import CogVideoXVAE

log = logging.getLogger("flashvideo")

MODES = ("reference", "auto", "manual", "whole")
STAGES = (1, 2)
#: the official stage-II decode split (utils.save_mem_decode): (height tiles, width tiles).
REFERENCE_STAGE2_TILES = (1, 2)
#: the official decode chunk (latent frames after the first 1 + 2) and encode chunk (16 pixel frames = 4 latents).
REFERENCE_CHUNK_LATENTS = {"decode": 2, "encode": 4}
DEFAULT_TILE_OVERLAP = 16
#: Widest-activation copies alive at the peak. Measured on CPU (benchmarks/vae_benchmark.py): 4.6-7.7,
#: highest for small chunks; 6.5 keeps the plan on the safe side for the reference chunks.
ACTIVATION_FACTOR = 6.5


@dataclass(frozen=True)
class SlicingOptions:
    """User-facing slicing knobs; sizes are in latent units (1 latent = 8 px, 4 frames)."""

    mode: str = "reference"
    #: cap in MiB; None means the free memory of the device.
    memory_budget_mib: Optional[int] = None
    #: manual: latent frames per temporal chunk (decode: even; encode uses 4x as many pixel frames).
    chunk_latents: Optional[int] = None
    #: manual: nominal tile edge in latents; None or 0 = no spatial tiling.
    tile_latents: Optional[int] = None
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    #: cut tiles at the nominal boundary like the reference instead of blending (shows seams).
    hard_seams: bool = False
    #: the FlashVideo stage whose latent is decoded (1: the 270p preview, 2: the 1080p refiner).
    #: In ``reference`` mode a stage-2 decode uses the official 1x2 width tiles; encodes ignore it.
    stage: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"slicing mode {self.mode!r} is not one of {MODES}")
        if self.stage not in STAGES:
            raise InputError(f"slicing stage must be one of {STAGES}, got {self.stage!r}")
        if self.tile_overlap < 0:
            raise InputError("tile_overlap must be >= 0")


def manual_tiles(lat_h: int, lat_w: int, options: SlicingOptions, names: tuple = ("tile_size", "tile_overlap")) -> tuple:
    """(rows, columns) of ``manual`` tiles over a lat_h x lat_w latent; refused, in the user's pixels and under the
    caller's ``names`` for the two settings, when a tile would be smaller than the overlap. Pure, so callers check
    their sizes before any model loads."""
    if not options.tile_latents:
        return 1, 1
    nh = max(1, math.ceil(lat_h / options.tile_latents))
    nw = max(1, math.ceil(lat_w / options.tile_latents))
    smallest = min(lat_h // nh if nh > 1 else lat_h, lat_w // nw if nw > 1 else lat_w)
    if (nh > 1 or nw > 1) and smallest < options.tile_overlap:
        raise InputError(
            f"{names[0]} {options.tile_latents * 8} px with {names[1]} {options.tile_overlap * 8} px: the "
            f"{lat_w * 8}x{lat_h * 8} frames split into tiles of {smallest * 8} px, smaller than the overlap; use a "
            f"larger {names[0]} or a {names[1]} of at most {smallest * 8} px"
        )
    return nh, nw


@dataclass(frozen=True)
class Tile:
    """One tile along one axis, in latent units: decode [read_start, read_end), own [start, end)."""

    read_start: int
    read_end: int
    start: int
    end: int


@dataclass
class SlicePlan:
    direction: str  # "decode" or "encode"
    time_chunks: list  # (start, end) in input frames (latent for decode, pixel for encode)
    tiles_h: list
    tiles_w: list
    tile_overlap: int
    #: width of the blended band in latents (0 = hard cut at the boundary)
    blend_band: int
    estimated_bytes: int
    budget_bytes: Optional[int]
    notes: list = field(default_factory=list)

    @property
    def num_units(self) -> int:
        return len(self.time_chunks) * len(self.tiles_h) * len(self.tiles_w)

    def describe(self) -> str:
        sizes = [e - s for s, e in self.time_chunks]
        budget = "unbounded" if self.budget_bytes is None else f"{self.budget_bytes / 2**20:.0f} MiB"
        text = (
            f"VAE {self.direction}: {len(self.time_chunks)} time chunk(s) {sizes}, "
            f"{len(self.tiles_h)}x{len(self.tiles_w)} tile(s) (overlap {self.tile_overlap} latents), "
            f"estimated peak {self.estimated_bytes / 2**20:.0f} MiB, budget {budget}"
        )
        return text + "".join(f"; {n}" for n in self.notes)


# ----------------------------------------------------------------------------- time chunks


def causal_time_chunks(frames: int, chunk: int) -> list:
    """Split ``frames`` into causal chunks: a first chunk of ``1 + r`` (odd counts keep the
    first frame apart), then chunks of ``chunk``. Even counts split into plain chunks.

    ``causal_time_chunks(13, 2)`` = [0:3], [3:5], ..., [11:13] (official decode);
    ``causal_time_chunks(49, 16)`` = [0:17], [17:33], [33:49] (official encode).
    """
    if frames <= 0:
        raise InputError("no frames to process")
    if chunk <= 0 or frames <= chunk:
        return [(0, frames)]
    if frames % 2:
        first = 1 + ((frames - 1) % chunk or chunk)
    else:
        first = frames % chunk or chunk
    bounds = [0, first] + list(range(first + chunk, frames + 1, chunk))
    return list(zip(bounds[:-1], bounds[1:]))


def _time_step(direction: str, config: VAEConfig) -> int:
    """Chunks must keep the temporal pairs aligned: even latents; 2**levels pixel frames."""
    return 2 if direction == "decode" else 2**config.temporal_levels


def _chunk_in_frames(direction: str, config: VAEConfig, latents: int) -> int:
    return latents if direction == "decode" else latents * config.temporal_compression_ratio


# ----------------------------------------------------------------------------- tiles


def axis_tiles(length: int, count: int, overlap: int) -> list:
    """``count`` tiles over ``length``: nominal bounds round(i * length / count), each read
    ``overlap`` beyond its inner sides, clamped to [0, length)."""
    bounds = [round(i * length / count) for i in range(count + 1)]
    tiles = []
    for i in range(count):
        start, end = bounds[i], bounds[i + 1]
        read_start = max(0, start - overlap) if i > 0 else 0
        read_end = min(length, end + overlap) if i < count - 1 else length
        tiles.append(Tile(read_start, read_end, start, end))
    return tiles


def reference_axis_tiles(length: int, count: int, overlap: int) -> list:
    """Tiles as the official stage-II decode cuts them (docs/VAE.md#reference-slicing).

    Nominal bounds are ``i * length // count`` (floor). An inner side reads ``overlap``
    more latents only if all of them exist (no clamping: a tile too close to the edge
    gets no overlap on that side). ``reference_axis_tiles(240, 2, 16)`` reads [0, 136)
    and [104, 240) and owns [0, 120) and [120, 240).
    """
    tiles = []
    for i in range(count):
        start, end = i * length // count, (i + 1) * length // count
        read_start, read_end = start, end
        if count > 1 and start - overlap >= 0:
            read_start = start - overlap
        if count > 1 and end + overlap <= length:
            read_end = end + overlap
        tiles.append(Tile(read_start, read_end, start, end))
    return tiles


def seam_context(tiles: list) -> Optional[int]:
    """The fewest latents any tile reads beyond an inner boundary (None for one tile)."""
    sides = [t.start - t.read_start for t in tiles[1:]] + [t.read_end - t.end for t in tiles[:-1]]
    return min(sides) if sides else None


def axis_weights(tile: Tile, length: int, band: int, scale: int) -> torch.Tensor:
    """Blend weights over [read_start, read_end) * scale output positions.

    Linear ramps of width ``band`` (latents) centred on the inner boundaries; the
    ramps of two neighbours sum to one, so no normalisation is needed. ``band = 0``
    gives a hard cut at the boundary (the reference's behaviour).
    """
    pos = torch.arange(tile.read_start * scale, tile.read_end * scale, dtype=torch.float64) + 0.5
    w = torch.ones_like(pos)
    if tile.start > 0:
        w = w * _ramp(pos, tile.start, band, scale)
    if tile.end < length:
        w = w * (1 - _ramp(pos, tile.end, band, scale))
    return w.float()


def _ramp(pos: torch.Tensor, boundary: int, band: int, scale: int) -> torch.Tensor:
    if band == 0:
        return (pos >= boundary * scale).double()
    return ((pos - (boundary - band / 2) * scale) / (band * scale)).clamp(0, 1)


def _tile_layouts(lat_h: int, lat_w: int, max_tiles: int):
    """(nh, nw) layouts by increasing tile count, the squarest tiles first within a count."""
    for n in range(1, max_tiles + 1):
        layouts = [(nh, n // nh) for nh in range(1, n + 1) if n % nh == 0]
        layouts.sort(key=lambda hw: abs(math.log((lat_h / hw[0]) / (lat_w / hw[1]))))
        yield from layouts


# ----------------------------------------------------------------------------- memory


def estimate_peak_bytes(
    config: VAEConfig, direction: str, frames: int, height: int, width: int, dtype_bytes: int, batch: int = 1
) -> int:
    """Estimated activation peak of one unsliced pass.

    ``frames`` and the sizes are the pass input in its own units (latents for decode,
    pixels for encode). The largest activation is a level's widest feature map with
    two causal context frames; ``ACTIVATION_FACTOR`` of them are alive at once.
    """
    levels = config.num_levels
    widths = config.block_out_channels
    worst = 0
    for level in range(levels):
        if direction == "decode":
            scale = 2 ** (levels - 1 - level)
            t = frames
            for _ in range(min(config.temporal_levels, levels - 1 - level)):
                t = 2 * t - 1 if t % 2 else 2 * t
            in_ch = widths[min(level + 1, levels - 1)]
            elems = max(in_ch, widths[level]) * (t + 2) * height * scale * width * scale
        else:
            scale = 2**level
            t = frames
            for _ in range(min(config.temporal_levels, level)):
                t = (t + 1) // 2 if t % 2 else t // 2
            in_ch = widths[max(level - 1, 0)]
            elems = max(in_ch, widths[level]) * (t + 2) * (height // scale) * (width // scale)
        worst = max(worst, elems)
    return int(ACTIVATION_FACTOR * worst * dtype_bytes * batch)


# ----------------------------------------------------------------------------- planning


def plan_slicing(
    config: VAEConfig,
    direction: str,
    shape: tuple,
    dtype: torch.dtype,
    options: SlicingOptions,
    budget_bytes: Optional[int] = None,
) -> SlicePlan:
    """Choose time chunks and tiles for an input of ``shape`` (B, C, T, H, W).

    ``shape`` is a latent shape for decode and a pixel shape for encode.
    ``budget_bytes`` is the free memory when ``options`` gives no cap.
    """
    if direction not in ("decode", "encode"):
        raise ValueError(direction)
    batch, _, frames, height, width = shape
    f = 1 if direction == "decode" else config.spatial_compression
    lat_h, lat_w = height // f, width // f
    dtype_bytes = torch.finfo(dtype).bits // 8
    if options.memory_budget_mib:
        budget_bytes = int(options.memory_budget_mib) * 2**20
    overlap = options.tile_overlap
    step = _time_step(direction, config)

    def build(chunk_frames: int, nh: int, nw: int, tiler=axis_tiles) -> SlicePlan:
        chunks = causal_time_chunks(frames, chunk_frames) if chunk_frames else [(0, frames)]
        tiles_h, tiles_w = tiler(lat_h, nh, overlap), tiler(lat_w, nw, overlap)
        biggest_t = max(e - s for s, e in chunks)
        th = max(t.read_end - t.read_start for t in tiles_h) * f
        tw = max(t.read_end - t.read_start for t in tiles_w) * f
        est = estimate_peak_bytes(config, direction, biggest_t, th, tw, dtype_bytes, batch)
        # blend only over context every tile actually decoded (the reference tiles may have none)
        contexts = [c for c in (seam_context(tiles_h), seam_context(tiles_w)) if c is not None]
        band = 0 if options.hard_seams else min([overlap, *contexts])
        return SlicePlan(direction, chunks, tiles_h, tiles_w, overlap, band, est, budget_bytes)

    if options.mode == "whole":
        return build(0, 1, 1)
    if options.mode == "manual":
        chunk = options.chunk_latents or 0
        if chunk and chunk % 2 and direction == "decode":
            raise InputError(f"chunk_latents must be even for decoding (got {chunk}): odd chunks break the frame pairing")
        nh, nw = manual_tiles(lat_h, lat_w, options)
        return build(_chunk_in_frames(direction, config, chunk) if chunk else 0, nh, nw)

    fits = lambda p: budget_bytes is None or p.estimated_bytes <= budget_bytes  # noqa: E731
    reference_chunk = _chunk_in_frames(direction, config, REFERENCE_CHUNK_LATENTS[direction])
    min_tile = max(overlap, 8)
    max_tiles = max(1, (lat_h // min_tile + 1) * (lat_w // min_tile + 1))

    def too_small(nh: int, nw: int) -> bool:
        return (nh > 1 and lat_h / nh < min_tile) or (nw > 1 and lat_w / nw < min_tile)

    if options.mode == "reference" and direction == "decode" and options.stage == 2:
        return _plan_reference_stage2(build, fits, reference_chunk, lat_h, lat_w, overlap, max_tiles, too_small)
    if options.mode == "reference":
        chunk_choices = [reference_chunk]
    else:
        longest = frames - 1 if frames % 2 else frames
        chunk_choices = [0] + [c for c in (64, 48, 32, 24, 16, 12, 8, 6, 4, 2) if c % step == 0 and c < longest]
    for chunk in chunk_choices:
        plan = build(chunk, 1, 1)
        if fits(plan):
            return plan
    smallest_chunk = chunk_choices[-1]
    plan = None
    for nh, nw in _tile_layouts(lat_h, lat_w, max_tiles):
        if too_small(nh, nw):
            continue
        plan = build(smallest_chunk, nh, nw)
        if fits(plan):
            return plan
    plan = plan or build(smallest_chunk, 1, 1)
    plan.notes.append("no plan fits the budget; using the smallest tiles (may run out of memory)")
    return plan


def _plan_reference_stage2(build, fits, chunk, lat_h, lat_w, overlap, max_tiles, too_small) -> SlicePlan:
    """The official stage-II decode split: 1x2 width tiles with the official extents, the official
    time chunks; more tiles (same extent rule) only if the budget needs them, never fewer."""
    want_h, want_w = REFERENCE_STAGE2_TILES
    nh, nw = min(want_h, max(lat_h, 1)), min(want_w, max(lat_w, 1))
    official = build(chunk, nh, nw, reference_axis_tiles)
    if (nh, nw) != (want_h, want_w):
        official.notes.append(f"a latent {lat_w} wide cannot be split into the official {want_h}x{want_w} tiles")
    context = seam_context(official.tiles_w)
    if context is not None and context < overlap:
        official.notes.append(
            f"stage-II latent only {lat_w} wide: an official tile gets no {overlap}-latent overlap, "
            "so the seam is cut hard"
        )
    if fits(official):
        return official
    plan = None
    for th, tw in _tile_layouts(lat_h, lat_w, max_tiles):
        if th < want_h or tw < want_w or th * tw <= nh * nw or too_small(th, tw):
            continue
        plan = build(chunk, th, tw, reference_axis_tiles)
        if fits(plan):
            plan.notes.append(
                f"the memory budget needs {th}x{tw} tiles instead of the official stage-II {want_h}x{want_w}; "
                "the picture differs slightly from the reference"
            )
            return plan
    plan = plan or official
    plan.notes.append("no plan fits the budget; using the smallest tiles (may run out of memory)")
    return plan


# ----------------------------------------------------------------------------- running


def _run_sliced(
    fn, x: torch.Tensor, plan: SlicePlan, in_scale: int, out_scale: int, out_channels: int,
    out_frames: int, device, dtype, output_device, progress: Progress,
) -> torch.Tensor:
    """Run ``fn(chunk, cache)`` over every tile and time chunk and blend the results."""
    batch = x.shape[0]
    lat_h = plan.tiles_h[-1].end
    lat_w = plan.tiles_w[-1].end
    out = torch.zeros(batch, out_channels, out_frames, lat_h * out_scale, lat_w * out_scale, device=output_device)
    progress.start(plan.num_units)
    tiled = len(plan.tiles_h) * len(plan.tiles_w) > 1
    for th in plan.tiles_h:
        wh = axis_weights(th, lat_h, plan.blend_band, out_scale).to(output_device)
        for tw in plan.tiles_w:
            ww = axis_weights(tw, lat_w, plan.blend_band, out_scale).to(output_device)
            weight = wh[:, None] * ww[None, :] if tiled else None
            cache = CausalConvCache()
            t_out = 0
            for t0, t1 in plan.time_chunks:
                progress.check()
                piece = x[:, :, t0:t1, th.read_start * in_scale : th.read_end * in_scale, tw.read_start * in_scale : tw.read_end * in_scale]
                y = fn(piece.to(device=device, dtype=dtype), cache)
                n = y.shape[2]
                region = out[:, :, t_out : t_out + n, th.read_start * out_scale : th.read_end * out_scale, tw.read_start * out_scale : tw.read_end * out_scale]
                y = y.to(output_device, torch.float32)
                region.add_(y * weight) if tiled else region.copy_(y)
                t_out += n
                progress.advance(1, preview=y[0, :, 0] if out_scale > 1 else None)
                del y
    if t_out != out_frames:
        raise RuntimeError(f"internal error: produced {t_out} frames, expected {out_frames}")
    return out


def decoded_frame_count(config: VAEConfig, latent_frames: int) -> int:
    """Frames of a decoded clip: its first latent frame is one frame, every other one 2**levels (1 + 4 (T - 1))."""
    return 1 + (latent_frames - 1) * 2**config.temporal_levels


def encoded_frame_count(config: VAEConfig, frames: int) -> int:
    t = frames
    for _ in range(config.temporal_levels):
        t = (t + 1) // 2 if t % 2 else t // 2
    return t


@torch.no_grad()
def decode_sliced(
    vae: CogVideoXVAE,
    z: torch.Tensor,
    options: SlicingOptions = SlicingOptions(),
    progress: Optional[Progress] = None,
    output_device=None,
    budget_bytes: Optional[int] = None,
) -> torch.Tensor:
    """Decode unscaled latents (B, C, T', h, w) to video (B, 3, T, 8h, 8w), float32, about [-1, 1].

    ``budget_bytes`` is the memory available when ``options`` sets no cap (default: the
    free memory of the VAE's device). Output goes to ``output_device`` (default: z's).
    """
    _check_latent(z, vae.config)
    return _sliced_pass(vae, "decode", z, options, progress, output_device, budget_bytes)


@torch.no_grad()
def encode_sliced(
    vae: CogVideoXVAE,
    video: torch.Tensor,
    options: SlicingOptions = SlicingOptions(),
    progress: Optional[Progress] = None,
    output_device=None,
    budget_bytes: Optional[int] = None,
) -> torch.Tensor:
    """Encode video (B, 3, T, H, W) in [-1, 1] to posterior moments (B, 2C, T', H/8, W/8), float32."""
    _check_video(video, vae.config)
    return _sliced_pass(vae, "encode", video, options, progress, output_device, budget_bytes)


def _sliced_pass(vae, direction, x, options, progress, output_device, budget_bytes) -> torch.Tensor:
    config = vae.config
    param = next(vae.parameters())
    if budget_bytes is None and options.memory_budget_mib is None:
        budget_bytes = free_memory_bytes(param.device)
    plan = plan_slicing(config, direction, tuple(x.shape), param.dtype, options, budget_bytes)
    (log.warning if plan.notes else log.info)(plan.describe())
    f = config.spatial_compression
    if direction == "decode":
        fn, in_scale, out_scale, channels, count = vae.decode, 1, f, config.out_channels, decoded_frame_count
    else:
        fn, in_scale, out_scale, channels, count = vae.encode_moments, f, 1, 2 * config.latent_channels, encoded_frame_count
    if direction == "decode":  # the clip's first latent frame is one frame, whichever chunk sizes
        frames = count(config, x.shape[2])
    else:
        frames = sum(count(config, end - start) for start, end in plan.time_chunks)
    progress = progress or Progress()
    with _checks_inside_chunks(vae, progress):
        return _run_sliced(
            fn, x, plan, in_scale, out_scale, channels, frames,
            param.device, param.dtype, output_device or x.device, progress,
        )


@contextmanager
def _checks_inside_chunks(vae: torch.nn.Module, progress: Progress):
    """``progress.check()`` before every resnet block as well, so a stop request lands within a chunk: one 1080p
    chunk runs for a minute on a slow device, far too long to wait for the next chunk boundary."""
    hooks = [m.register_forward_pre_hook(lambda *_: progress.check()) for m in vae.modules()
             if isinstance(m, ResnetBlock3D)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def _check_latent(z: torch.Tensor, config: VAEConfig) -> None:
    if z.ndim != 5 or z.shape[1] != config.latent_channels:
        raise InputError(
            f"expected a video latent (batch, {config.latent_channels}, frames, height, width), got shape "
            f"{tuple(z.shape)}. Image latents (4-D) or latents of another VAE cannot be decoded by the FlashVideo VAE."
        )
    if not torch.isfinite(z).all():
        raise InputError(
            "the latent holds NaN or Inf values, so decoding would give a black or noisy video. The sampler "
            "that produced it overflowed: run the DiT in bf16 or fp32 (fp16 overflows on CogVideoX models)."
        )


def _check_video(video: torch.Tensor, config: VAEConfig) -> None:
    if video.ndim != 5 or video.shape[1] != config.in_channels:
        raise InputError(f"expected video (batch, {config.in_channels}, frames, height, width), got {tuple(video.shape)}")
    f = config.spatial_compression
    if video.shape[-1] % f or video.shape[-2] % f:
        raise InputError(
            f"height and width must be multiples of {f} for the VAE, got {video.shape[-2]}x{video.shape[-1]}; "
            f"resize to {video.shape[-2] // f * f}x{video.shape[-1] // f * f} first"
        )
    if not torch.isfinite(video).all():
        raise InputError("the input video holds NaN or Inf values")
