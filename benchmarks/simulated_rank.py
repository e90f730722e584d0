"""One rank of a sequence-parallel DiT forward, run alone: the memory one GPU of N needs, measured without N GPUs.

``SimulatedRank`` is the pack's :class:`~flashvideo_core.parallel.SequenceParallel` with a chosen rank and no
process group; only the collectives are stood in for, and they allocate what the real ones allocate: the
all-to-all runs yunchang's own ``all_to_all_4D`` (its contiguous copy of the input, ``empty_like`` output and
reshuffled copy) with the one network call replaced by a copy into the output it allocated; the all-gather fills
the N output buffers the real code allocates; the broadcast writes in place. Shard, attend and the blocks are the
real code. The data exchanged is this rank's own (values do not matter for memory).

``step_peak`` measures one guided step under ``FakeTensorMode``: the real configs at true size, no compute and
no memory, counted with ``memory_probe.LiveTensorBytes``.
"""

from __future__ import annotations

import types
from contextlib import nullcontext
from unittest import mock

import torch
import torch.nn.functional as F

import harness  # noqa: F401  (puts the repository on sys.path)
from flashvideo_core.dit import rope
from flashvideo_core.dit.guidance import forward_pair
from flashvideo_core.dit.model import FlashVideoDiT
from flashvideo_core.parallel import ParallelLayout, SequenceParallel
from memory_probe import LiveTensorBytes


class SimulatedRank(SequenceParallel):
    """Rank ``rank`` of ``size`` processes, alone in this process."""

    def __init__(self, size: int, rank: int):
        super().__init__(ParallelLayout(rank, size, rank), group=None)

    @property
    def rank(self) -> int:
        return self.layout.rank

    def _collective(self, fn, *args, **kwargs):
        import torch.distributed as dist
        from yunchang.comm import all_to_all
        from yunchang.comm.all_to_all import SeqAllToAll4D

        if fn == SeqAllToAll4D.apply:  # a bound classmethod: equal, not identical
            world = types.SimpleNamespace(get_world_size=lambda group=None: self.size,
                                          all_to_all_single=lambda output, input, group=None: output.copy_(input))
            with mock.patch.object(all_to_all, "dist", world):
                return fn(*args, **kwargs)
        if fn is dist.all_gather:
            parts, tensor = args
            for part in parts:
                part.copy_(tensor)
            return None
        if fn is dist.broadcast:
            return None
        raise NotImplementedError(f"no simulated {fn}")


def flash_attention(q, k, v, **_options):
    """SDPA as the pack's dispatch runs it wherever a flash / memory-efficient kernel applies (every GPU, the CPU
    in bf16/fp32). The dispatch itself asks ``torch._fused_sdp_choice``, which answers "math" for fake tensors and
    would send them down the CPU math fallback's query-chunked loop instead."""
    return F.scaled_dot_product_attention(q, k, v)


def build(config, dtype=torch.bfloat16, size: int = 1, rank: int = 0):
    """A DiT of ``config`` (random weights; under fake tensors, none), rank ``rank`` of ``size`` when size > 1."""
    model = FlashVideoDiT(config, dtype=dtype).eval()
    model.set_attention_fn(flash_attention)
    if size > 1:
        model.enable_sequence_parallel(SimulatedRank(size, rank))
    return model


def step_peak(config, latent: tuple, plan, size: int = 1, rank: int = 0, dtype=torch.bfloat16,
              fake: bool = True) -> dict:
    """One guided step (cond and uncond as ``plan`` says) of rank ``rank`` of ``size`` at ``latent``
    (B, C, T, H, W). Returns ``peak`` (bytes alive at once, made during the step) and ``rope`` (the cached RoPE
    tables, built before the step as after the first step, and alive throughout)."""
    rope._rope_table_cpu.cache_clear()  # a table cached by another mode would leak between fake and real tensors
    rope._rope_table_on.cache_clear()
    try:
        with torch.no_grad(), (torch._subclasses.fake_tensor.FakeTensorMode() if fake else nullcontext()):
            model = build(config, dtype, size, rank)
            batch, channels, frames, height, width = latent
            x, t, ctx, conds = harness.dit_inputs(config, batch, (frames, channels, height, width), dtype=dtype)
            p = config.patch_size
            tables = rope.rope_table(frames, height // p, width // p, config.head_dim, x.device)
            with LiveTensorBytes() as probe:  # the empty prompt inside, as benchmarks/dit_memory.py counts it
                out = forward_pair(model, x, t, (ctx, torch.zeros_like(ctx)), plan, **conds)
            assert out[0].shape == x.shape
            return {"peak": probe.peak, "rope": sum(table.nbytes for table in tables)}
    finally:
        rope._rope_table_cpu.cache_clear()
        rope._rope_table_on.cache_clear()


def ranks_to_measure(config, latent: tuple, size: int) -> list:
    """One rank of each kind of shard: rank 0 (whole), the first padded one, the last (every rank is one of these
    three; padding allocates zeros and a copy that a whole shard's view does not)."""
    _, _, frames, height, width = latent
    video = frames * (height // config.patch_size) * (width // config.patch_size)
    shard = -(-video // size)
    padded = [rank for rank in range(size) if (rank + 1) * shard > video]
    return sorted({0, *padded[:1], *padded[-1:]})


def rank_bytes(config, latent: tuple, plan, size: int, dtype=torch.bfloat16) -> tuple:
    """(bytes, rank): the most any rank of ``size`` holds in one guided step, its step peak plus the RoPE tables
    it keeps (what the planner's per-process figure must cover)."""
    return max((sum(step_peak(config, latent, plan, size, rank, dtype).values()), rank)
               for rank in ranks_to_measure(config, latent, size))
