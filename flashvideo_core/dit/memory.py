"""How much working memory one DiT forward needs, and the fastest way to run it in the memory that is free.

Three ways to run a guided step, fastest first (results equal up to float rounding, <= 1e-6 relative in fp32;
``tests/test_dit_memory.py``):

* ``batched``: cond and uncond in one forward of batch 2, each block on the whole sequence.
* ``sequential``: cond, then uncond (batch 1 each), whole sequence.
* ``lean``: one after the other, and every per-token step (norms, q/k/v and output projections, MLP) on
  ``chunk_tokens`` video tokens at a time, so only the residual stream, q, k, v and the attention output
  exist for the whole sequence.

Widths per token (values of the model width held at the peak), counted with
``LiveTensorBytes`` (``benchmarks/memory_probe.py``) on a 2-layer width-1920 stage-II model
(``benchmarks/dit_memory.py``, ``benchmarks/results/dit_memory.md``): 11 x S for the whole sequence; chunked,
the larger of 5 x S (residual, q, k, v, attention output) and 4 x S + 6 x chunk (q, k, v filled one projection at
a time; ~6.1 x chunk measured at true size under fake tensors, ``benchmarks/parallel_memory.py``). The
estimates add one width per token for buffers kernels keep to themselves. Attention never holds an S x S
matrix (flash / memory-efficient kernels); the RoPE tables add 2 x 64 fp32 per video token.

Sequence-parallel over N processes (``flashvideo_core.parallel``), per process: the rule above on this process's
shard (text + ceil(V / N) tokens), but never below two things lean mode cannot cut: the Ulysses all-to-all around
attention (this shard's q, k, v and residual, plus the all-to-all'd query, keys, values, attention output and
yunchang's copies in and out: ~11 widths per shard token, ~4 + 7 x padded heads / heads) and the embedding of the
whole sequence, which every process does before keeping its shard (2 widths per token). Each process also holds
the whole RoPE tables, the step's latents and prompt embeddings. Measured at true size under fake tensors per rank
(``benchmarks/parallel_memory.py``, ``benchmarks/results/parallel_memory.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..device_memory import free_memory_bytes
from ..text_embeddings import TEXT_TOKENS
from .config import DiTConfig

#: measured peaks (see the module docstring) plus one width for kernels' own buffers
WIDTHS_WHOLE = 12
WIDTHS_CHUNKED_ATTENTION = 6
WIDTHS_CHUNKED_PROJECTION = 5
WIDTHS_PER_CHUNK_TOKEN = 7
MODES = ("auto", "batched", "sequential", "lean")
#: names the ComfyUI loader used before it took the core's (saved workflows keep them)
OLD_MODE_NAMES = {"whole": "sequential"}
#: sequence-parallel: per shard token around the all-to-all (fixed + per padded-head share), per whole-sequence
#: token while embedding; measured peaks (module docstring) plus one width for kernels' own buffers
WIDTHS_ALL_TO_ALL = 4
WIDTHS_ALL_TO_ALL_HEADS = 8
WIDTHS_EMBED = 2
#: chunk sizes tried by ``lean``/``auto``, largest (fastest) first
CHUNK_CANDIDATES = (16384, 8192, 4096, 2048, 1024)
#: keep this share of the free memory spare (fragmentation, the sampler's own tensors)
HEADROOM = 0.85


@dataclass(frozen=True)
class ForwardPlan:
    """How to run one guided DiT step: CFG halves in one batch or one after the other, and token chunks."""

    cfg_batched: bool
    chunk_tokens: Optional[int] = None

    @property
    def mode(self) -> str:
        if self.chunk_tokens is not None:
            return "lean"
        return "batched" if self.cfg_batched else "sequential"


def video_tokens(config: DiTConfig, latent_frames: int, latent_height: int, latent_width: int) -> int:
    p = config.patch_size
    return latent_frames * (latent_height // p) * (latent_width // p)


def forward_bytes(config: DiTConfig, latent_shape: tuple, dtype: torch.dtype, cfg_batch: int = 2,
                  chunk_tokens: Optional[int] = None, processes: int = 1) -> int:
    """Working memory of one forward over ``latent_shape`` (B, C, T, H, W) run ``cfg_batch`` times as one
    batch, whole-sequence or in ``chunk_tokens`` chunks; with ``processes`` > 1, that of each process of a
    sequence-parallel forward."""
    batch, _, frames, height, width = latent_shape
    tokens = video_tokens(config, frames, height, width)
    element = dtype.itemsize
    rope = 2 * tokens * config.head_dim * 4 * 2  # cos/sin in fp32, CPU copy + device copy
    if processes == 1:
        widths = _block_widths(tokens + TEXT_TOKENS, chunk_tokens)
        return int(cfg_batch * batch * widths * config.hidden_size * element + rope)
    shard = TEXT_TOKENS + math.ceil(tokens / processes)
    padded_heads = math.ceil(config.num_heads / processes) * processes
    all_to_all = shard * (WIDTHS_ALL_TO_ALL + WIDTHS_ALL_TO_ALL_HEADS * padded_heads / config.num_heads)
    widths = max(_block_widths(shard, chunk_tokens), all_to_all, WIDTHS_EMBED * (tokens + TEXT_TOKENS))
    # the step's own inputs and outputs, whole on every process: the CFG pair's latents (batched in, or gathered
    # out) and prompt embeddings (the pair batched, and the empty prompt); a few % of the embedding's peak
    latents = 2 * tokens * config.patch_size**2 * config.out_channels
    prompts = 3 * TEXT_TOKENS * config.text_hidden_size
    return int((cfg_batch * batch * widths * config.hidden_size + batch * (latents + prompts)) * element + rope)


def _block_widths(sequence: int, chunk_tokens: Optional[int]) -> int:
    """Widths held at a block's peak over ``sequence`` tokens (text included), whole or in chunks."""
    if chunk_tokens is None or chunk_tokens >= sequence - TEXT_TOKENS:
        return sequence * WIDTHS_WHOLE
    return max(sequence * WIDTHS_CHUNKED_ATTENTION,
               sequence * WIDTHS_CHUNKED_PROJECTION + max(chunk_tokens, TEXT_TOKENS) * WIDTHS_PER_CHUNK_TOKEN)


def plan_bytes(config: DiTConfig, latent_shape: tuple, dtype: torch.dtype, plan: ForwardPlan,
               processes: int = 1) -> int:
    """Peak working memory of one guided step run as ``plan`` (per process of ``processes``)."""
    return forward_bytes(config, latent_shape, dtype, 2 if plan.cfg_batched else 1, plan.chunk_tokens, processes)


def candidate_plans(mode: str = "auto") -> list:
    """The plans ``mode`` may use, fastest first."""
    if mode not in MODES:
        raise ValueError(f"memory mode must be one of {MODES}, got {mode!r}")
    lean = [ForwardPlan(False, chunk) for chunk in CHUNK_CANDIDATES]
    return {"batched": [ForwardPlan(True)], "sequential": [ForwardPlan(False)], "lean": lean,
            "auto": [ForwardPlan(True), ForwardPlan(False)] + lean}[mode]


def plan_for(model, latent_shape: tuple, dtype: torch.dtype, device=None, mode: str = "auto",
             free_bytes: Optional[int] = None, host: bool = False) -> ForwardPlan:
    """The planner: the fastest plan of ``mode`` for ``model`` (a FlashVideo DiT, per process when it runs
    sequence-parallel, or its config; any other callable runs batched, as given) whose working memory fits
    ``free_bytes`` (default: what ``device`` has free; neither known: the fastest), else the leanest of ``mode``.

    ``host``: ComfyUI runs the forwards: it batches cond and uncond itself (``latent_shape`` counts both) and casts
    weights per layer, so only single-forward plans, in ``dtype``. Else the samplers' autocast on ``device`` applies.
    """
    config = model if isinstance(model, DiTConfig) else getattr(model, "config", None)
    if config is None:
        return ForwardPlan(cfg_batched=True)
    parallel = getattr(model, "sequence_parallel", None)  # a sharded model plans its own process's memory
    processes = parallel.size if parallel is not None else 1
    plans = candidate_plans(mode)
    if host:
        plans = [plan for plan in plans if not plan.cfg_batched] or [ForwardPlan(False)]
    elif device is not None:
        from .guidance import autocasts  # guidance runs the plans this module makes

        if autocasts(device, dtype):
            dtype = torch.float32  # normalised tokens, q and k come out of LayerNorm in fp32 under autocast
    if free_bytes is None and device is not None:
        free_bytes = free_memory_bytes(device)
    if free_bytes is None:
        return plans[0]
    return next((plan for plan in plans
                 if plan_bytes(config, latent_shape, dtype, plan, processes) <= HEADROOM * free_bytes),
                plans[-1])
