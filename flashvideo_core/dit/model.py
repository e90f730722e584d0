"""The FlashVideo DiT: one implementation for stage I (5B-shaped) and stage II (2B-shaped).

Text tokens are prepended to the video tokens; every block modulates text and video
with their own adaLN shift/scale/gate (the "expert" adaLN), applies qk-LayerNorm and
3D RoPE on the video tokens only, then a GELU-tanh MLP (docs/SAMPLING.md#the-dit). Parameter names
follow diffusers' ``CogVideoXTransformer3DModel``, so its weights load as they are;
the official SAT layout is converted on load (:mod:`flashvideo_core.checkpoints.dit_keys`).

The layer classes and the attention function are injectable: the defaults are ``torch.nn`` and the
pack's SDPA dispatch (the CLI), while ComfyUI builds the same model with its own operations (manual
cast, fp8 storage, partial loading) and its attention dispatch (``nodes/native``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..parallel.sequence import SHARDS_OPTION, Shards
from .attention import attention, resolve_backend
from .config import DiTConfig
from .rope import apply_rope, rope_table
from .window_attention import window_attention

#: epsilons of the reference (docs/SAMPLING.md#the-dit)
BLOCK_NORM_EPS = 1e-5
QK_NORM_EPS = 1e-6
OUT_NORM_EPS = 1e-6

#: attention_fn(q, k, v, **attention_options) over (B, heads, S, head_dim) -> the same layout
AttentionFn = Callable[..., torch.Tensor]


def sdpa_attention(q, k, v, backend: str = "sdpa", **_options) -> torch.Tensor:
    """The default attention function: the pack's dispatch (SDPA, or flash-attn / SageAttention)."""
    return attention(q, k, v, backend)


def timestep_sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[cos(t f) | sin(t f)], f_k = exp(-ln(max_period) k / (dim/2)), computed in fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int, layers=nn, **factory):
        super().__init__()
        self.linear_1 = layers.Linear(in_dim, dim, **factory)
        self.linear_2 = layers.Linear(dim, dim, **factory)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class PatchEmbed(nn.Module):
    def __init__(self, config: DiTConfig, layers=nn, **factory):
        super().__init__()
        p = config.patch_size
        self.proj = layers.Conv2d(config.in_channels, config.hidden_size, kernel_size=p, stride=p, **factory)
        self.text_proj = layers.Linear(config.text_hidden_size, config.hidden_size, **factory)

    def forward(self, text: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames = video.shape[:2]
        x = self.proj(video.flatten(0, 1))  # (B*T, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2).unflatten(0, (batch, frames)).flatten(1, 2)  # (B, T*h*w, D) in (t, h, w) order
        return self.text_proj(text), x


class AdaLayerNormZero(nn.Module):
    """LayerNorm + (shift, scale, gate) for video and for text from the time embedding."""

    def __init__(self, time_dim: int, dim: int, layers=nn, **factory):
        super().__init__()
        self.linear = layers.Linear(time_dim, 6 * dim, **factory)
        self.norm = layers.LayerNorm(dim, eps=BLOCK_NORM_EPS, **factory)

    def modulation(self, temb) -> tuple:
        """((shift, scale, gate) of video, (shift, scale, gate) of text), each (B, 1, D)."""
        shift, scale, gate, t_shift, t_scale, t_gate = (m[:, None] for m in self.linear(F.silu(temb)).chunk(6, dim=1))
        return (shift, scale, gate), (t_shift, t_scale, t_gate)

    def modulate(self, x, shift_scale_gate: tuple) -> torch.Tensor:
        shift, scale, _ = shift_scale_gate
        return self.norm(x) * (1 + scale) + shift


class Attention(nn.Module):
    def __init__(self, dim: int, head_dim: int, layers=nn, attention_fn: Optional[AttentionFn] = None, **factory):
        super().__init__()
        self.head_dim = head_dim
        self.attention_fn = attention_fn or sdpa_attention
        self.to_q = layers.Linear(dim, dim, **factory)
        self.to_k = layers.Linear(dim, dim, **factory)
        self.to_v = layers.Linear(dim, dim, **factory)
        self.norm_q = layers.LayerNorm(head_dim, eps=QK_NORM_EPS, **factory)
        self.norm_k = layers.LayerNorm(head_dim, eps=QK_NORM_EPS, **factory)
        self.to_out = nn.ModuleList([layers.Linear(dim, dim, **factory)])

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (-1, self.head_dim)).transpose(1, 2)  # (B, heads, S, d)

    def projection(self, tokens: torch.Tensor, which: int, rope: Optional[tuple]) -> torch.Tensor:
        """q, k or v (``which`` 0, 1, 2) as (B, heads, S, d) of ``tokens``; q and k normalised, with RoPE when
        ``rope`` (rows for these tokens). One at a time, so only one projection's temporaries are ever alive."""
        linear, norm = ((self.to_q, self.norm_q), (self.to_k, self.norm_k), (self.to_v, None))[which]
        out = self._heads(linear(tokens))
        if norm is None:
            return out
        out = norm(out)
        return out if rope is None else apply_rope(out, *rope)

    def attend(self, q, k, v, text_len: int, grid: tuple, window=None, attention_options=None) -> torch.Tensor:
        options = attention_options or {}
        shards = options.get(SHARDS_OPTION)
        if shards is not None:  # this process holds one shard of the sequence (flashvideo_core.parallel)
            rest = {name: value for name, value in options.items() if name != SHARDS_OPTION}
            return shards.parallel.attend(self.attention_fn, q, k, v, shards, rest)
        if window is None:
            return self.attention_fn(q, k, v, **options)
        return window_attention(q, k, v, text_len, grid, window)


class FeedForward(nn.Module):
    def __init__(self, dim: int, inner: int, layers=nn, **factory):
        super().__init__()
        self.net = nn.ModuleList([_Proj(dim, inner, layers, **factory), nn.Identity(), layers.Linear(inner, dim, **factory)])

    def forward(self, x):
        return self.net[2](F.gelu(self.net[0].proj(x), approximate="tanh"))


class _Proj(nn.Module):
    def __init__(self, dim: int, inner: int, layers=nn, **factory):
        super().__init__()
        self.proj = layers.Linear(dim, inner, **factory)


class TransformerBlock(nn.Module):
    def __init__(self, config: DiTConfig, layers=nn, attention_fn: Optional[AttentionFn] = None, **factory):
        super().__init__()
        dim = config.hidden_size
        self.norm1 = AdaLayerNormZero(config.time_embed_dim, dim, layers, **factory)
        self.attn1 = Attention(dim, config.head_dim, layers, attention_fn, **factory)
        self.norm2 = AdaLayerNormZero(config.time_embed_dim, dim, layers, **factory)
        self.ff = FeedForward(dim, config.mlp_ratio * dim, layers, **factory)

    def forward(self, hidden, text_len, temb, rope, grid, chunk_tokens=None, window=None, attention_options=None):
        """One block on ``hidden`` = [text | video] (B, S, D), updated in place and returned. Every per-token step
        (norms, projections, MLP) runs on the text, then on the video ``chunk_tokens`` tokens at a time (None: all
        at once); only the residual stream, q, k, v and the attention output span the whole sequence, so chunks
        cut the working memory to ~5 widths per token with the same result up to float rounding."""
        batch, seq, dim = hidden.shape
        spans = token_spans(text_len, seq, chunk_tokens or seq)
        mod1 = self.norm1.modulation(temb)  # (video, text): indexed by is_text
        head_dim = self.attn1.head_dim
        q, k, v = (hidden.new_empty(batch, dim // head_dim, seq, head_dim) for _ in range(3))
        for start, stop, is_text in spans:
            x = self.norm1.modulate(hidden[:, start:stop], mod1[is_text])
            rows = None if is_text else tuple(r[start - text_len:stop - text_len] for r in rope)
            for which, target in enumerate((q, k, v)):
                target[:, :, start:stop] = self.attn1.projection(x, which, rows)
            x = None  # (a ``del`` would break torch.compile's graph)
        out = self.attn1.attend(q, k, v, text_len, grid, window, attention_options)
        q = k = v = None
        for start, stop, is_text in spans:
            gate = mod1[is_text][2]
            hidden[:, start:stop] += gate * self.attn1.to_out[0](out[:, :, start:stop].transpose(1, 2).flatten(2))
        out = None
        mod2 = self.norm2.modulation(temb)
        for start, stop, is_text in spans:
            part = hidden[:, start:stop]
            part += mod2[is_text][2] * self.ff(self.norm2.modulate(part, mod2[is_text]))
        return hidden


def token_spans(text_len: int, seq: int, chunk_tokens: int) -> list:
    """(start, stop, is_text) chunks of [text | video]: the text in one piece, the video in ``chunk_tokens``."""
    spans = [(0, text_len, True)] if text_len else []
    return spans + [(s, min(seq, s + chunk_tokens), False) for s in range(text_len, seq, chunk_tokens)]


class AdaLayerNormOut(nn.Module):
    def __init__(self, time_dim: int, dim: int, layers=nn, **factory):
        super().__init__()
        self.linear = layers.Linear(time_dim, 2 * dim, **factory)
        self.norm = layers.LayerNorm(dim, eps=OUT_NORM_EPS, **factory)

    def forward(self, x, temb):
        shift, scale = self.linear(F.silu(temb)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class FlashVideoDiT(nn.Module):
    """F(x, t, context): latent (B, T, C, H, W), timesteps (B,), text (B, L, text_dim) -> (B, T, C, H, W).

    Stage II also takes ``latent_frames`` and ``ref_step`` (the degradation noise step),
    embedded like the timestep and added to the time embedding in that order.

    ``layers`` provides ``Linear``, ``Conv2d`` and ``LayerNorm`` (default ``torch.nn``); ``attention_fn``
    replaces the pack's SDPA dispatch; ``device``/``dtype`` are passed to every layer.
    """

    def __init__(self, config: DiTConfig, layers=nn, attention_fn: Optional[AttentionFn] = None, device=None,
                 dtype=None):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        factory = {"device": device, "dtype": dtype}
        self.patch_embed = PatchEmbed(config, layers, **factory)
        self.time_embedding = TimestepEmbedding(dim, config.time_embed_dim, layers, **factory)
        if config.stage2_embeddings:
            self.time_size_embedding = TimestepEmbedding(dim, config.time_embed_dim, layers, **factory)
            self.ref_step_time_embedding = TimestepEmbedding(dim, config.time_embed_dim, layers, **factory)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(config, layers, attention_fn, **factory) for _ in range(config.num_layers))
        self.norm_final = layers.LayerNorm(dim, eps=BLOCK_NORM_EPS, **factory)
        self.norm_out = AdaLayerNormOut(config.time_embed_dim, dim, layers, **factory)
        self.proj_out = layers.Linear(dim, config.patch_size**2 * config.out_channels, **factory)

    #: set by :meth:`enable_sequence_parallel`: this process then runs one shard of every forward
    sequence_parallel = None

    def enable_sequence_parallel(self, parallel) -> None:
        """Run every forward sequence-parallel with the other processes of ``parallel``
        (:class:`flashvideo_core.parallel.SequenceParallel`); each returns the whole output on every process."""
        parallel.check_model(self.config)
        self.sequence_parallel = parallel

    def set_attention_backend(self, name: str) -> str:
        """Use ``name`` ("sdpa", "flash", "sage") if importable, else SDPA; returns the one in use."""
        backend = resolve_backend(name)
        self.set_attention_fn(partial(sdpa_attention, backend=backend))
        return backend

    def set_attention_fn(self, attention_fn: AttentionFn) -> None:
        for block in self.transformer_blocks:
            block.attn1.attention_fn = attention_fn

    def time_embed(self, timesteps, latent_frames=None, ref_step=None, dtype=None) -> torch.Tensor:
        dim = self.config.hidden_size
        dtype = dtype or self.time_embedding.linear_1.weight.dtype
        temb = self.time_embedding(timestep_sinusoid(timesteps, dim).to(dtype))
        if self.config.stage2_embeddings:
            if latent_frames is None or ref_step is None:
                raise ValueError("the stage-II DiT needs latent_frames and ref_step")
            temb = temb + self.time_size_embedding(timestep_sinusoid(latent_frames, dim).to(dtype))
            temb = temb + self.ref_step_time_embedding(timestep_sinusoid(ref_step, dim).to(dtype))
        return temb

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        latent_frames: Optional[torch.Tensor] = None,
        ref_step: Optional[torch.Tensor] = None,
        dtype: Optional[torch.dtype] = None,
        window: Optional[tuple] = None,
        attention_options: Optional[dict] = None,
        chunk_tokens: Optional[int] = None,
    ) -> torch.Tensor:
        """``dtype``: compute dtype (default: the weights'; a host that stores weights in another dtype, e.g.
        fp8, passes its compute dtype). ``window``: experimental local attention for this call.
        ``attention_options``: keyword arguments for ``attention_fn`` (e.g. the host's transformer options).
        ``chunk_tokens``: run every per-token step that many video tokens at a time (same result up to float
        rounding, less working memory; see :mod:`flashvideo_core.dit.memory`); None = the whole sequence at once
        (fastest)."""
        if self.sequence_parallel is not None:
            x = self.sequence_parallel.from_main(x)
        tokens = self.embed(x, timesteps, context, latent_frames, ref_step, dtype)
        if self.sequence_parallel is not None:
            if window is not None:
                raise InputError("window attention does not run sequence-parallel; use full attention, or one "
                                 "process")
            tokens = self.sequence_parallel.shard(tokens)
            attention_options = {**(attention_options or {}), SHARDS_OPTION: tokens.shards}
        for block in self.transformer_blocks:
            tokens.hidden = block(tokens.hidden, tokens.text_len, tokens.temb, tokens.rope, tokens.grid, chunk_tokens,
                                  window, attention_options)
        return self.unembed(tokens, chunk_tokens)

    def embed(self, x, timesteps, context, latent_frames=None, ref_step=None, dtype=None) -> "Tokens":
        """The blocks' input: [text | video] tokens, the time embedding, the RoPE table and the patch grid.

        A latent side that is not a multiple of the patch (an odd latent from a ComfyUI size such as 56 px) is
        padded by repeating its last row or column and cropped again in ``unembed``, as ComfyUI's own DiTs do."""
        size = tuple(x.shape)
        p = self.config.patch_size
        pad_h, pad_w = -x.shape[-2] % p, -x.shape[-1] % p
        if pad_h or pad_w:
            x = F.pad(x.flatten(0, 1), (0, pad_w, 0, pad_h), mode="replicate").unflatten(0, x.shape[:2])
        batch, frames, channels, height, width = x.shape
        dtype = dtype or self.proj_out.weight.dtype
        temb = self.time_embed(timesteps, latent_frames, ref_step, dtype)
        text, video = self.patch_embed(context.to(dtype), x.to(dtype))
        grid = (frames, height // p, width // p)
        rope = rope_table(*grid, self.config.head_dim, x.device)
        return Tokens(torch.cat([text, video], dim=1), text.shape[1], temb, rope, grid, size)

    def unembed(self, tokens: "Tokens", chunk_tokens: Optional[int] = None) -> torch.Tensor:
        """The video tokens back to a latent (B, T, C, H, W); norm_final is per token, so normalising the video
        tokens alone equals normalising [text | video]."""
        batch, frames, channels, height, width = tokens.latent_shape
        p = self.config.patch_size
        rows, columns = tokens.grid[1:]
        video = tokens.hidden[:, tokens.text_len:]
        video = torch.cat([self.proj_out(self.norm_out(self.norm_final(video[:, start:stop]), tokens.temb))
                           for start, stop, _ in token_spans(0, video.shape[1], chunk_tokens or video.shape[1])], dim=1)
        if tokens.shards is not None:  # every process's rows, in order
            video = tokens.shards.parallel.gather(video, tokens.shards)
        out = video.reshape(batch, frames, rows, columns, channels, p, p)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, frames, channels, rows * p, columns * p)
        return out[..., :height, :width]  # the padding of an odd latent side cut off again


@dataclass
class Tokens:
    """What the blocks pass along: ``hidden`` = [text | video] (B, S, D) and what every block reads."""

    hidden: torch.Tensor
    text_len: int
    temb: torch.Tensor
    rope: tuple
    grid: tuple
    latent_shape: tuple
    shards: Optional[Shards] = None  # set when this process holds one shard (flashvideo_core.parallel)
