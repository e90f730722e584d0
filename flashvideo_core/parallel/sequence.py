"""Ulysses sequence parallelism for the FlashVideo DiT, with yunchang's all-to-all (docs/PARALLEL.md).

Each process holds the 226 text tokens and one contiguous shard of the video tokens (with its RoPE rows), so every
per-token step (norms, projections, MLP, modulation) runs on a 1/N slice. Attention is the only step that needs the
whole sequence: an all-to-all trades the token split for a head split, each process attends with its 1/N of the
heads over all tokens, and a second all-to-all trades back.

The joint text is handled as xDiT's joint attention does it ("front"): the text queries travel with every shard
(so each process gets its text rows back), while the text keys and values enter once, as this process's head
slice, in front of the gathered video keys. The result equals single-process attention up to float rounding.

Uneven splits are padded rather than refused: video tokens up to a multiple of N (the padding is cut from the keys
and from the output), heads up to a multiple of N (zero heads, whose output is dropped). Padding heads costs
(padded - heads) / heads more attention work, e.g. 32/30 for stage II on 4 or 8 processes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import FlashVideoError

#: attention_options key under which a sharded forward tells the blocks' attention how the sequence is cut
SHARDS_OPTION = "flashvideo_shards"


class PeerFailed(FlashVideoError):
    """Another process stopped; it printed the reason, so this one stops without a second message."""


def ulysses_degrees(num_heads: int) -> list:
    """Process counts that split ``num_heads`` evenly (no padded heads)."""
    return [n for n in range(1, num_heads + 1) if num_heads % n == 0]


@dataclass(frozen=True)
class Shards:
    """How one forward's [text | video] sequence is cut: the text on every process, ``shard_len`` video tokens
    each (the last shards padded), ``video_len`` real video tokens in all."""

    text_len: int
    video_len: int
    shard_len: int
    parallel: "SequenceParallel"


class SequenceParallel:
    """The sequence-parallel parts of a DiT forward on one process: shard, attend, gather."""

    def __init__(self, layout, group):
        self.layout = layout
        self.group = group

    @property
    def size(self) -> int:
        return self.layout.ulysses_degree

    @property
    def rank(self) -> int:
        import torch.distributed as dist

        return dist.get_rank(self.group)

    def check_model(self, config) -> None:
        """Refuse a model whose heads cannot go round the processes (each needs at least one real head)."""
        if config.num_heads < self.size:
            raise FlashVideoError(
                f"{self.size} processes but the {config.stage} DiT has {config.num_heads} attention heads; "
                f"run at most {config.num_heads} processes (even splits: {ulysses_degrees(config.num_heads)})")

    def padded_heads(self, heads: int) -> int:
        return math.ceil(heads / self.size) * self.size

    # -- the three steps ------------------------------------------------------------------------------------------
    def shard(self, tokens):
        """``tokens`` (the whole [text | video] sequence, as ``FlashVideoDiT.embed`` returns it) cut to this
        process's text and video shard, with its RoPE rows."""
        text_len = tokens.text_len
        video_len = tokens.hidden.shape[1] - text_len
        shard_len = math.ceil(video_len / self.size)
        start = self.rank * shard_len
        video = _padded_rows(tokens.hidden[:, text_len:], start, shard_len, dim=1)
        rope = tuple(_padded_rows(rows, start, shard_len, dim=0) for rows in tokens.rope)
        hidden = torch.cat([tokens.hidden[:, :text_len], video], dim=1)
        return dataclasses.replace(tokens, hidden=hidden, rope=rope,
                                   shards=Shards(text_len, video_len, shard_len, self))

    def attend(self, attention_fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shards: Shards,
               options: dict) -> torch.Tensor:
        """Attention of this process's queries over the whole sequence. q, k, v: (B, heads, text + shard, d)."""
        heads, text_len = q.shape[1], shards.text_len
        per_rank = self.padded_heads(heads) // self.size
        mine = slice(self.rank * per_rank, (self.rank + 1) * per_rank)

        def tokens_major(x):  # (B, heads, S, d) -> (B, S, padded heads, d), the engine's layout
            x = x.transpose(1, 2)
            return F.pad(x, (0, 0, 0, self.padded_heads(heads) - heads)) if x.shape[2] != self.padded_heads(heads) else x

        query = self._all_to_all(tokens_major(q), scatter=2, gather=1)  # [text, shard 0, text, shard 1, ...]
        key = torch.cat([tokens_major(k[:, :, :text_len])[:, :, mine],
                         self._all_to_all(tokens_major(k[:, :, text_len:]), scatter=2, gather=1)[:, :shards.video_len]],
                        dim=1)
        value = torch.cat([tokens_major(v[:, :, :text_len])[:, :, mine],
                           self._all_to_all(tokens_major(v[:, :, text_len:]), scatter=2, gather=1)[:, :shards.video_len]],
                          dim=1)
        out = attention_fn(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), **options)
        out = self._all_to_all(out.transpose(1, 2), scatter=1, gather=2)  # this shard's rows, every head
        return out[:, :, :heads].transpose(1, 2)

    def gather(self, video: torch.Tensor, shards: Shards) -> torch.Tensor:
        """Every process's (B, shard_len, C) output rows -> the whole video's (B, video_len, C), on every process."""
        import torch.distributed as dist

        parts = [torch.empty_like(video) for _ in range(self.size)]
        self._collective(dist.all_gather, parts, video.contiguous(), group=self.group)
        return torch.cat(parts, dim=1)[:, :shards.video_len]

    def from_main(self, x: torch.Tensor) -> torch.Tensor:
        """Process 0's ``x`` on every process, so all shards work on one input even where each process computed
        it (a VAE encode on each GPU may differ in the last bit)."""
        import torch.distributed as dist

        x = x.contiguous()
        self._collective(dist.broadcast, x, src=0, group=self.group)
        return x

    def from_main_object(self, value):
        """Process 0's ``value`` (a small picklable object) on every process."""
        import torch.distributed as dist

        box = [value]
        self._collective(dist.broadcast_object_list, box, src=0, group=self.group)
        return box[0]

    # -- the engine -----------------------------------------------------------------------------------------------
    def _all_to_all(self, x: torch.Tensor, scatter: int, gather: int) -> torch.Tensor:
        from yunchang.comm.all_to_all import SeqAllToAll4D

        return self._collective(SeqAllToAll4D.apply, self.group, x.contiguous(), scatter, gather)

    @staticmethod
    def _collective(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:  # gloo/NCCL: a peer went away (it reports its own error)
            if "Connection" in str(e) or "closed" in str(e) or "peer" in str(e).lower() or "timed out" in str(e):
                raise PeerFailed(f"another process stopped ({str(e).splitlines()[0][:200]})") from e
            raise


def _padded_rows(x: torch.Tensor, start: int, length: int, dim: int) -> torch.Tensor:
    """``length`` rows of ``x`` from ``start`` along ``dim``, zero-padded past its end."""
    part = x.narrow(dim, min(start, x.shape[dim]), max(0, min(length, x.shape[dim] - start)))
    missing = length - part.shape[dim]
    if not missing:
        return part
    shape = list(part.shape)
    shape[dim] = missing
    return torch.cat([part, part.new_zeros(shape)], dim=dim)
