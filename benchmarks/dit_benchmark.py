#!/usr/bin/env python
"""CPU benchmark: the pack's FlashVideo DiT against diffusers' ``CogVideoXTransformer3DModel``.

Not a test. For the same config, weights (``random_dit_state_dict``, loaded strictly into
both), inputs, batch (2, the CFG batch), dtype (fp32) and thread count it measures one
forward pass on each side and reports pack/diffusers ratios of wall time and peak memory,
the largest output difference, and FLOP counts: analytic, cross-checked with
``torch.utils.flop_counter.FlopCounterMode`` on the meta device, for the benchmark configs
and for the real stage-I / stage-II configs together with the H100 lower bound they imply.

How it measures
---------------
* Each implementation x config runs in its own fresh worker process (``multiprocessing``
  spawn; the parent never imports torch). Workers build the model on the meta device and
  ``load_state_dict(assign=True)`` the weights, so loading leaves no high-water mark.
* Peak memory = ``ru_maxrss`` after the first call minus RSS right before it (after ``gc``,
  ``malloc_trim`` and resetting the kernel's RSS high-water mark via
  ``/proc/self/clear_refs``, so the growth is visible even if loading peaked higher). If
  ``ru_maxrss`` did not grow the peak is reported as "<= x" (unknown).
* The first call of each worker is the warm-up (and the memory call). Then the timed calls
  alternate pack/diffusers in ABBA order (pack, diffusers, diffusers, pack, ...), so a
  background load drifting in time hits both sides alike; time = median of ``--repeats``.
* Forwards shorter than 0.5 s (tiny) are timed as samples of several back-to-back forwards
  (time per forward reported), so the median is not dominated by timer and scheduler noise.
* CPU utilisation of each timed call = process CPU time / (wall x threads); calls below
  85 % were slowed by other processes on the machine: such a sample is measured again
  (``--retry-slow`` times at most) and counted in the "slow" column only if every attempt was slow.
* diffusers gets its RoPE table precomputed outside the timed call (its pipeline computes it
  once per step outside the transformer); the pack computes it inside, cached per shape.
  diffusers' final LayerNorm eps is set to the reference's 1e-6, as in tests/test_dit_model.py.

Stage II (``--stage2``)
----------------------
* Step rows: the pack's stage-II DiT (``stage2_embeddings=True``: ``time_size_embedding`` and
  ``ref_step_time_embedding`` added to the time embedding) against diffusers' transformer with the
  same two embeddings added from diffusers' own parts (``TimestepEmbedding`` of a
  ``get_timestep_embedding(..., flip_sin_to_cos=True, downscale_freq_shift=0)`` sinusoid, as in
  ``tests/test_stage2.py``), one state dict loaded strictly into both. One step = one forward of
  the [cond, uncond] CFG batch at a stage-II network timestep. Same timing and memory method as above.
* Attention memory: one call of ``flashvideo_core.dit.attention.attention`` (full) and of
  ``window_attention`` (7x11x11 window) per fresh worker, B=1, 2 heads of 64, fp32, at growing
  sequence lengths: peak RSS growth per token against the S x S score matrix a naive kernel holds.
* FLOPs at 1080p / 2K with the H100 bound for 4 (paper NFE) and 5 (code default) steps, and the
  attention work of the 7x11x11 window: ideal (only in-window pairs, analytic) and as the pack's
  ``window_attention`` evaluates it (query tiles against every key their windows reach, masked
  pairs included; ``FlopCounterMode`` on the meta device).

Run ``python benchmarks/dit_benchmark.py --help``.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MIB = 2**20
BUSY_UTIL = 0.85
#: a timed sample shorter than this repeats the forward back to back (time per forward reported)
MIN_SAMPLE_S = 0.5
H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM dense bf16 (no sparsity)
TEXT_TOKENS = 226  # CogVideoX pads T5 prompts to 226 tokens
SAMPLING = 500.0  # timestep used in the benchmark (the same for both halves of the CFG batch)

#: benchmark configs: latent is (frames, channels, height, width) per batch element.
BENCH = {
    "tiny": dict(layers=2, width=128, text_dim=32, text_len=TEXT_TOKENS, latent=(3, 16, 16, 24)),
    "medium": dict(layers=4, width=768, text_dim=4096, text_len=TEXT_TOKENS, latent=(13, 16, 32, 60)),
}
#: stage-II benchmark configs (``--stage2``): same widths, 16:9-ish latents like 1080p's 134x240.
BENCH2 = {
    "tiny": dict(layers=2, width=128, text_dim=32, text_len=TEXT_TOKENS, latent=(3, 16, 18, 32), stage2=True),
    "medium": dict(layers=4, width=768, text_dim=4096, text_len=TEXT_TOKENS, latent=(13, 16, 36, 64), stage2=True),
}
STAGE2_TIMESTEP = 904.0  # second network timestep of the bf16 stage-II grid (SPEC Appendix B)
STAGE2_REF_STEP = 676.0  # noise step 675 as embedded in bf16 (SPEC 1.6)
#: attention-memory probe: B=1, 2 heads of 64, fp32; video grids (frames, height, width) + 226 text tokens
ATTN_HEADS, ATTN_HEAD_DIM = 2, 64
ATTN_GRIDS = {8192: (2, 64, 64), 16384: (4, 64, 64), 32768: (8, 64, 64), 65536: (16, 64, 64)}
WINDOW = (7, 11, 11)  # (frames, height, width) in latent patches, the paper's window
#: the real models (SPEC): stage I CogVideoX-5B-shaped, stage II CogVideoX-2B-shaped.
REAL = [
    dict(name="stage I, 270p preview", layers=42, width=3072, video=6240, text=TEXT_TOKENS, batch=2, steps=51,
         stage2=False, latent=(13, 16, 32, 60), paper_s=30.0),
    dict(name="stage II, 1080p", layers=30, width=1920, video=104520, text=TEXT_TOKENS, batch=2, steps=5,
         stage2=True, latent=(13, 16, 134, 240), paper_s=72.0),
    dict(name="stage II, 2K", layers=30, width=1920, video=187200, text=TEXT_TOKENS, batch=2, steps=5,
         stage2=True, latent=(13, 16, 180, 320), paper_s=209.8),
]
REAL2 = [m for m in REAL if m["stage2"]]


# ============================================================================ analytic FLOPs


def dit_flops(layers, width, video, text, batch, text_dim=4096, head_dim=64, mlp_ratio=4, time_dim=512,
              patch_in=16 * 2 * 2, stage2=False) -> dict:
    """FLOPs (2 per multiply-add) of one DiT forward, by part. Elementwise work (norms, RoPE,
    softmax, GELU, modulation) is left out: it is O(S*D) against the O(S*D^2) and O(S^2*D) below."""
    D, S, B = width, video + text, batch
    per_layer_linear = 2 * B * S * (4 * D * D + 2 * mlp_ratio * D * D)  # q, k, v, out + MLP up/down
    per_layer_attn = 2 * 2 * B * S * S * D  # Q K^T and P V over all heads (heads * head_dim = D)
    per_layer_ada = 2 * 2 * B * time_dim * 6 * D  # norm1 + norm2 adaLN linears
    n_time = 3 if stage2 else 1
    parts = {
        "qkv_out": layers * 2 * B * S * 4 * D * D,
        "mlp": layers * 2 * B * S * 2 * mlp_ratio * D * D,
        "attn": layers * per_layer_attn,
        "patch_embed": 2 * B * video * patch_in * D,
        "text_proj": 2 * B * text * text_dim * D,
        "time_adaln_out": n_time * 2 * B * (D * time_dim + time_dim * time_dim) + layers * per_layer_ada
        + 2 * B * time_dim * 2 * D,
        "proj_out": 2 * B * video * D * patch_in,
    }
    assert parts["qkv_out"] + parts["mlp"] == layers * per_layer_linear
    parts["linear"] = sum(v for k, v in parts.items() if k != "attn")
    parts["total"] = parts["linear"] + parts["attn"]
    return parts


def fmt_flops(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def fmt_s(x: float) -> str:
    return f"{x:.3g} s" if x < 100 else f"{x:.0f} s"


def window_pairs(text: int, grid, window=WINDOW) -> dict:
    """Query-key pairs of one head of one batch element: full attention, and an ideal window that
    evaluates only the in-window video pairs (text queries and text keys stay global, as in the pack).
    What the pack's ``window_attention`` evaluates (its query tiles against every key their windows can
    reach, masked pairs included) is counted with FlopCounterMode instead (``_window_flop_count``)."""
    frames, height, width = grid
    video = frames * height * width
    S = text + video

    def clipped(n, r):  # sum over positions of the clipped window length along one axis
        return sum(min(n, i + r + 1) - max(0, i - r) for i in range(n))

    local = 1
    for n, w in zip(grid, window):
        local *= clipped(n, w // 2)
    return dict(full=S * S, ideal=text * S + video * text + local)


# ============================================================================ worker side (imports torch)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _settle() -> bool:
    """gc + malloc_trim, then reset the RSS high-water mark; True if the reset worked."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


STAGE2_EMBEDDINGS = ("time_size_embedding", "ref_step_time_embedding")


def _diffusers_stage2_key(name: str) -> str:
    """The pack's state-dict key -> its key in diffusers' model once ``time_embedding`` is wrapped."""
    if name.startswith("time_embedding."):
        return "time_embedding.base." + name[len("time_embedding."):]
    if name.split(".")[0] in STAGE2_EMBEDDINGS:
        return "time_embedding." + name
    return name


def _diffusers_stage2_embedding(base, width: int, time_dim: int):
    """diffusers' time embedding + the stage-II size and ref-step embeddings (SPEC 1.7 order), built
    from diffusers' ``TimestepEmbedding`` and ``get_timestep_embedding`` as in tests/test_stage2.py.
    Set ``.frames`` and ``.ref`` (per batch element) before calling the transformer."""
    import torch
    from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding

    class Stage2TimeEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base = base
            self.time_size_embedding = TimestepEmbedding(width, time_dim)
            self.ref_step_time_embedding = TimestepEmbedding(width, time_dim)
            self.frames = self.ref = None

        def forward(self, t_emb, cond=None):
            sinus = lambda v: get_timestep_embedding(v, width, flip_sin_to_cos=True,  # noqa: E731
                                                     downscale_freq_shift=0).to(t_emb.dtype)
            out = self.base(t_emb, cond)
            out = out + self.time_size_embedding(sinus(self.frames))
            return out + self.ref_step_time_embedding(sinus(self.ref))

    return Stage2TimeEmbedding()


def bench_inputs(spec: dict):
    """(DiTConfig, random state dict, x[B, T, C, H, W], t, ctx, extra kwargs) of ``spec['config']``: the
    weights and inputs every implementation of a benchmark case gets (also used by native_vs_core.py)."""
    import torch

    from flashvideo_core.dit.config import DiTConfig
    from flashvideo_core.tiny import random_dit_state_dict

    cfg = spec["config"]
    stage2 = cfg.get("stage2", False)
    config = DiTConfig(num_layers=cfg["layers"], hidden_size=cfg["width"], text_hidden_size=cfg["text_dim"],
                       stage2_embeddings=stage2)
    state = random_dit_state_dict(config, seed=0)
    frames, channels, height, width = cfg["latent"]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(spec["batch"], frames, channels, height, width, generator=gen)
    ctx = torch.randn(spec["batch"], cfg["text_len"], cfg["text_dim"], generator=gen)
    t = torch.full((spec["batch"],), SAMPLING)
    extra = {}
    if stage2:  # a refiner step: [cond, uncond] with the zero unconditional embedding, stage-II timestep
        ctx[spec["batch"] // 2 :] = 0
        t = torch.full((spec["batch"],), STAGE2_TIMESTEP)
        extra = dict(latent_frames=torch.full((spec["batch"],), float(frames)),
                     ref_step=torch.full((spec["batch"],), STAGE2_REF_STEP))
    return config, state, x, t, ctx, extra


def _build(spec: dict):
    """Model + a zero-argument forward callable, for ``spec['impl']`` in {pack (alias core), diffusers}."""
    import torch

    from flashvideo_core.dit.model import FlashVideoDiT
    from flashvideo_core.dit.rope import rope_table

    cfg = spec["config"]
    stage2 = cfg.get("stage2", False)
    config, state, x, t, ctx, extra = bench_inputs(spec)
    frames, channels, height, width = cfg["latent"]
    if spec["impl"] in ("pack", "core"):
        with torch.device("meta"):
            model = FlashVideoDiT(config)
        model.load_state_dict(state, strict=True, assign=True)
        model.eval()
        return model, lambda: model(x, t, ctx, **extra)
    import diffusers

    with torch.device("meta"):
        model = diffusers.CogVideoXTransformer3DModel(
            num_attention_heads=cfg["width"] // 64, attention_head_dim=64, in_channels=channels,
            out_channels=channels, time_embed_dim=512, text_embed_dim=cfg["text_dim"], num_layers=cfg["layers"],
            patch_size=2, use_rotary_positional_embeddings=True,
        )
    if stage2:
        with torch.device("meta"):
            model.time_embedding = _diffusers_stage2_embedding(model.time_embedding, cfg["width"], 512)
        model.time_embedding.frames, model.time_embedding.ref = extra["latent_frames"], extra["ref_step"]
        state = {_diffusers_stage2_key(k): v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    model.norm_out.norm.eps = 1e-6  # the reference's final-norm eps (diffusers uses norm_eps there)
    leftover = [n for n, b in model.named_buffers() if b.is_meta] + [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise RuntimeError(f"diffusers tensors left on meta after loading: {leftover[:5]}")
    rope = rope_table(frames, height // 2, width // 2, 64, "cpu")
    return model, lambda: model(hidden_states=x, encoder_hidden_states=ctx, timestep=t, image_rotary_emb=rope,
                                return_dict=False)[0]


def _worker(conn, spec: dict, build=None) -> None:
    try:
        _worker_body(conn, spec, build or _build)
    except (EOFError, BrokenPipeError):  # the parent went away: nothing to report to
        pass
    except BaseException:  # noqa: BLE001  (report anything to the parent)
        try:
            conn.send(("error", traceback.format_exc()))
        except (OSError, BrokenPipeError):
            pass
    finally:
        conn.close()


def _worker_body(conn, spec: dict, build=_build) -> None:
    """``build(spec)`` -> (model, call) or (model, call, to_reference): the first call's output is saved
    through ``to_reference`` (for the output comparison) when given."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.set_grad_enabled(False)
    model, call, *convert = build(spec)
    torch.set_num_threads(spec["threads"])  # again, in case building imported something that changed it
    params = sum(p.numel() for p in model.parameters())
    conn.send(("ready", dict(params=params, rss_loaded=_rss_bytes(), torch=torch.__version__)))
    while True:
        cmd = conn.recv()
        if cmd == "first":
            reset = _settle()
            rss0, max0 = _rss_bytes(), _maxrss_bytes()
            w0, c0 = time.perf_counter(), time.process_time()
            out = call()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            max1 = _maxrss_bytes()
            torch.save((convert[0](out) if convert else out).contiguous(), spec["out_path"])
            conn.send(("ok", dict(wall=wall, cpu=cpu, rss_before=rss0, maxrss_before=max0, maxrss_after=max1,
                                  hwm_reset=reset, shape=list(out.shape))))
            del out
        elif isinstance(cmd, tuple) and cmd[0] == "time":
            inner = cmd[1]
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner):
                out = call()
                del out
            wall, cpu = (time.perf_counter() - w0) / inner, (time.process_time() - c0) / inner
            conn.send(("ok", dict(wall=wall, cpu=cpu)))
        elif cmd == "quit":
            return
        else:
            raise ValueError(cmd)


def _compare(conn, paths) -> None:
    try:
        import torch

        a, b = (torch.load(p) for p in paths)
        diff = (a - b).abs()
        conn.send(("ok", dict(max_abs=diff.max().item(), ref_max=b.abs().max().item(),
                              rel=(diff.norm() / b.norm()).item(), same_shape=a.shape == b.shape)))
    except BaseException:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))


def _flop_count(conn, cases) -> None:
    """FlopCounterMode totals of one forward on the meta device (no memory, no time)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from flashvideo_core.dit.config import DiTConfig
        from flashvideo_core.dit.model import FlashVideoDiT

        torch.set_grad_enabled(False)
        results = []
        for c in cases:
            config = DiTConfig(num_layers=c["layers"], hidden_size=c["width"], text_hidden_size=c.get("text_dim", 4096),
                               stage2_embeddings=c.get("stage2", False))
            frames, channels, height, width = c["latent"]
            with torch.device("meta"):
                model = FlashVideoDiT(config).eval()
                x = torch.empty(c["batch"], frames, channels, height, width)
                ctx = torch.empty(c["batch"], c["text"], config.text_hidden_size)
                t = torch.empty(c["batch"])
            extra = dict(latent_frames=torch.empty(c["batch"], device="meta"),
                         ref_step=torch.empty(c["batch"], device="meta")) if config.stage2_embeddings else {}
            counter = FlopCounterMode(display=False)
            with counter:
                model(x, t, ctx, **extra)
            results.append(counter.get_total_flops())
        conn.send(("ok", results))
    except BaseException:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))


def _window_flop_count(conn, cases) -> None:
    """Query-key pairs per head and batch element that one ``window_attention`` call evaluates,
    from FlopCounterMode on the meta device (masked SDPA decomposes to bmm there, so every pair
    evaluated is counted, masked or not; 4 FLOPs x head_dim per pair: QK^T and PV)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from flashvideo_core.dit.window_attention import window_attention

        torch.set_grad_enabled(False)
        results = []
        for c in cases:
            frames, height, width = c["grid"]
            S = c["text"] + frames * height * width
            q, k, v = (torch.empty(c["batch"], c["heads"], S, 64, device="meta") for _ in range(3))
            counter = FlopCounterMode(display=False)
            with counter:
                window_attention(q, k, v, c["text"], c["grid"], c["window"])
            results.append(counter.get_total_flops() // (4 * c["batch"] * c["heads"] * 64))  # query-key pairs / head
        conn.send(("ok", results))
    except BaseException:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))


def _attention_memory(conn, spec: dict) -> None:
    """Peak RSS growth and wall time of one attention call (B=1, fp32) in this fresh process."""
    try:
        import torch

        from flashvideo_core.dit.attention import attention
        from flashvideo_core.dit.window_attention import window_attention

        torch.set_num_threads(spec["threads"])
        torch.set_grad_enabled(False)
        text, grid = spec["text"], tuple(spec["grid"])
        S = text + grid[0] * grid[1] * grid[2]

        def call(q, k, v, g):
            if spec["kind"] == "window":
                return window_attention(q, k, v, text, g, tuple(spec["window"]))
            return attention(q, k, v)

        # start the thread pools and kernels on a tiny call (its one-time allocations are not the call's)
        small = tuple(torch.randn(1, ATTN_HEADS, text + 2 * 4 * 4, ATTN_HEAD_DIM) for _ in range(3))
        call(*small, (2, 4, 4))
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, ATTN_HEADS, S, ATTN_HEAD_DIM, generator=gen) for _ in range(3))
        del small
        reset = _settle()
        rss0, max0 = _rss_bytes(), _maxrss_bytes()
        w0, c0 = time.perf_counter(), time.process_time()
        out = call(q, k, v, grid)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        max1 = _maxrss_bytes()
        conn.send(("ok", dict(S=S, wall=wall, cpu=cpu, rss_before=rss0, maxrss_before=max0, maxrss_after=max1,
                              hwm_reset=reset, finite=bool(torch.isfinite(out).all()),
                              out_bytes=out.numel() * out.element_size())))
    except BaseException:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))


# ============================================================================ parent side (no torch)


def machine_busy(interval: float = 0.5) -> float:
    """Fraction of all CPU time busy over ``interval`` (sampled while our workers are idle)."""

    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)

    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_until_idle(limit_s: float, log, threshold: float = 0.2) -> float:
    """Wait (up to ``limit_s``) until other processes use less than ``threshold`` of the CPUs; returns the load seen."""
    busy = machine_busy()
    deadline = time.time() + limit_s
    announced = False
    while busy > threshold and time.time() < deadline:
        if not announced:
            log(f"  machine {busy:.0%} busy with other processes; waiting up to {limit_s:.0f} s")
            announced = True
        time.sleep(2)
        busy = machine_busy()
    return busy


class Worker:
    def __init__(self, ctx, target, *args):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()

    def recv(self):
        kind, payload = self.conn.recv()
        if kind == "error":
            raise RuntimeError(f"worker failed:\n{payload}")
        return payload

    def ask(self, cmd):
        self.conn.send(cmd)
        return self.recv()

    def close(self):
        try:
            self.conn.send("quit")
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


def run_once(ctx, target, *args):
    w = Worker(ctx, target, *args)
    try:
        return w.recv()
    finally:
        w.proc.join(timeout=30)


def run_case(ctx, name: str, cfg: dict, args, tmp: str, log, impls=("pack", "diffusers"), targets=None,
             spec_extra=None) -> dict:
    """One config, ``impls[0]`` against ``impls[1]`` (the reference of the output comparison), each in its
    own worker (``targets[impl]``, default ``_worker``; ``spec_extra[impl]`` is added to its spec)."""
    frames, _, height, width = cfg["latent"]
    video = frames * (height // 2) * (width // 2)
    log(f"[{name}] {cfg['layers']} layers, width {cfg['width']}, latent {args.batch}x{frames}x16x{height}x{width}"
        f" = {video} video + {cfg['text_len']} text tokens")
    busy = wait_until_idle(args.wait_idle, log)
    specs = {i: dict(impl=i, config=cfg, batch=args.batch, threads=args.threads,
                     out_path=os.path.join(tmp, f"{name}_{i}.pt"), **(spec_extra or {}).get(i, {})) for i in impls}
    targets = targets or {}
    workers = {}
    try:
        info = {}
        for impl in impls:  # load one after the other: the second load should not overlap the first call
            workers[impl] = Worker(ctx, targets.get(impl, _worker), specs[impl])
            info[impl] = workers[impl].recv()
        first = {}
        for impl in impls:
            first[impl] = workers[impl].ask("first")
            log(f"  {impl:9s} warm-up {first[impl]['wall']:.2f} s")
        # very short forwards (tiny): one timed sample = `inner` back-to-back forwards, reported per forward;
        # calibrated on one more untimed call per side (the warm-up carries one-time costs)
        calib = min(f["wall"] for f in first.values())
        if calib < 10 * MIN_SAMPLE_S:
            calib = min(workers[impl].ask(("time", 1))["wall"] for impl in impls)
        inner = max(1, min(50, int(MIN_SAMPLE_S / max(1e-4, calib)))) if calib < MIN_SAMPLE_S else 1
        walls = {i: [] for i in impls}
        utils = {i: [] for i in impls}
        order = []
        for r in range(args.repeats):
            order += list(impls) if r % 2 == 0 else list(reversed(impls))
        loads = []
        redone = {i: 0 for i in impls}
        for impl in order:
            for attempt in range(1 + args.retry_slow):
                if args.wait_idle:
                    loads.append(wait_until_idle(args.wait_idle / 4, log))
                res = workers[impl].ask(("time", inner))
                util = res["cpu"] / (res["wall"] * args.threads)
                log(f"  {impl:9s} {res['wall']:.3f} s  (cpu {util:.0%})")
                if util >= BUSY_UTIL or attempt == args.retry_slow:
                    break
                redone[impl] += 1
                log(f"  {impl:9s} slowed by other processes; measuring this sample again")
            walls[impl].append(res["wall"])
            utils[impl].append(util)
    finally:
        for w in workers.values():
            w.close()
    cmp = run_once(ctx, _compare, [specs[impls[0]]["out_path"], specs[impls[1]]["out_path"]])
    sides = {}
    for impl in impls:
        f = first[impl]
        grew = f["maxrss_after"] > f["maxrss_before"]
        sides[impl] = dict(
            median=statistics.median(walls[impl]), walls=walls[impl], min_util=min(utils[impl]),
            slow=sum(u < BUSY_UTIL for u in utils[impl]), redone=redone[impl],
            peak=(f["maxrss_after"] - f["rss_before"]) if grew else None,
            peak_bound=f["maxrss_before"] - f["rss_before"], hwm_reset=f["hwm_reset"],
            params=info[impl]["params"], torch=info[impl]["torch"], shape=f["shape"],
        )
    flops = dit_flops(cfg["layers"], cfg["width"], video, cfg["text_len"], args.batch, text_dim=cfg["text_dim"],
                      stage2=cfg.get("stage2", False))
    return dict(name=name, cfg=cfg, video=video, inner=inner, busy_before=max([busy] + loads), sides=sides, cmp=cmp, flops=flops)


def fmt_peak(side: dict) -> str:
    if side["peak"] is None:
        return f"<= {side['peak_bound'] / MIB:.0f}"
    return f"{side['peak'] / MIB:.0f}"


def render(results, flop_checks, real_counts, args, env, elapsed) -> str:
    L = []
    L.append("# FlashVideo DiT vs diffusers `CogVideoXTransformer3DModel` (CPU)")
    L.append("")
    L.append(f"Run {env['date']} on {env['cpus']} CPUs ({env['machine']}), torch {env['torch']}, diffusers "
             f"{env['diffusers']}, python {env['python']}; fp32, no_grad, `torch.set_num_threads({args.threads})`, "
             f"batch {args.batch} (the CFG batch), {TEXT_TOKENS} text tokens, random weights "
             f"(`random_dit_state_dict`, loaded strictly into both). Median of {args.repeats} calls after a warm-up, "
             f"pack and diffusers alternating (ABBA), each in a fresh spawned process; peak = growth of "
             f"`ru_maxrss` during the first call over the RSS just before it. Total run {elapsed:.0f} s. "
             f"Command: `{env['cmd']}`.")
    L.append("")
    L.append("## Speed and memory")
    L.append("")
    L.append("| config | tokens (video + text) | pack s | diffusers s | time ratio | pack MiB | diffusers MiB "
             "| memory ratio | max abs diff | slow samples kept (pack/diff) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        p, d = r["sides"]["pack"], r["sides"]["diffusers"]
        c = r["cfg"]
        f, _, h, w = c["latent"]
        label = f"{r['name']}: {c['layers']} layers, width {c['width']}, text dim {c['text_dim']}, latent {args.batch}x{f}x16x{h}x{w}"
        mem_ratio = f"{p['peak'] / d['peak']:.2f}" if p["peak"] and d["peak"] else "n/a"
        L.append(f"| {label} | {r['video']:,} + {c['text_len']} | {p['median']:.3f} | {d['median']:.3f} "
                 f"| **{p['median'] / d['median']:.2f}** | {fmt_peak(p)} | {fmt_peak(d)} | {mem_ratio} "
                 f"| {r['cmp']['max_abs']:.1e} | {p['slow']}/{d['slow']} ({p['redone']}/{d['redone']} redone) |")
    L.append("")
    L.append("Ratios are pack / diffusers (goal: time ratio <= 1.0). \"max abs diff\" is over the whole output "
             "(output magnitudes up to " + ", ".join(f"{r['cmp']['ref_max']:.1f}" for r in results) + "; relative L2 "
             "difference " + ", ".join(f"{r['cmp']['rel']:.1e}" for r in results) + "). "
             f"\"slow samples\" = timed samples with CPU utilisation below {BUSY_UTIL:.0%}, i.e. slowed by other "
             f"processes on the machine; each is measured again (up to {args.retry_slow} times, \"redone\") "
             "and kept only if every attempt was slow; highest machine load seen before a config or timed call: "
             + ", ".join(f"{r['name']} {r['busy_before']:.0%}" for r in results) + ". "
             + " ".join(f"Each timed sample of {r['name']} is {r['inner']} back-to-back forwards (time per forward)."
                        for r in results if r["inner"] > 1))
    L.append("")
    L.append("| config | analytic GFLOP / forward | FlopCounterMode (pack, meta) | pack GFLOP/s | diffusers GFLOP/s | all timed calls pack / diffusers (s) |")
    L.append("|---|---|---|---|---|---|")
    for r, counted in zip(results, flop_checks):
        p, d = r["sides"]["pack"], r["sides"]["diffusers"]
        tot = r["flops"]["total"]
        L.append(f"| {r['name']} | {tot / 1e9:.1f} | {counted / 1e9:.1f} | {tot / p['median'] / 1e9:.1f} "
                 f"| {tot / d['median'] / 1e9:.1f} | {' '.join(f'{x:.2f}' for x in p['walls'])} / "
                 f"{' '.join(f'{x:.2f}' for x in d['walls'])} |")
    L.append("")
    L.append("## FLOPs of the real models and the H100 lower bound")
    L.append("")
    L.append("Analytic, 2 FLOPs per multiply-add, batch 2 (CFG), 226 text tokens, patch embed (16x2x2 -> D), "
             "text projection (4096 -> D), time embeddings, adaLN and output projection included; elementwise "
             "ops (norms, RoPE, softmax, GELU) excluded. \"linear\" = every weight matmul; \"attention\" = "
             "QK^T + PV (4 x B x S^2 x D per layer). Bound = FLOPs / 989 TFLOP/s (H100 SXM dense bf16 peak), "
             "i.e. 100 % utilisation; the paper's time includes everything else the step does.")
    L.append("")
    L.append("| model | layers x width | tokens S | linear / step | of which QKV+out / MLP | attention / step "
             "| total / step | FlopCounterMode / step | steps | total | H100 bound / step | H100 bound, all steps "
             "| paper | bound / paper |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m, counted in zip(REAL, real_counts):
        f = dit_flops(m["layers"], m["width"], m["video"], m["text"], m["batch"], stage2=m["stage2"])
        S = m["video"] + m["text"]
        step_s = f["total"] / H100_BF16_DENSE
        L.append(
            f"| {m['name']} | {m['layers']} x {m['width']} | {m['video']:,} + {m['text']} = {S:,} "
            f"| {fmt_flops(f['linear'])} ({f['linear'] / f['total']:.0%}) "
            f"| {fmt_flops(f['qkv_out'])} / {fmt_flops(f['mlp'])} "
            f"| {fmt_flops(f['attn'])} ({f['attn'] / f['total']:.0%}) | {fmt_flops(f['total'])} "
            f"| {fmt_flops(counted)} | {m['steps']} | {fmt_flops(f['total'] * m['steps'])} "
            f"| {fmt_s(step_s)} | **{fmt_s(step_s * m['steps'])}** | ~{m['paper_s']:g} s "
            f"| {step_s * m['steps'] / m['paper_s']:.0%} |")
    L.append("")
    L.append("Units: P = 1e15, T = 1e12 FLOPs. \"bound / paper\" is the model-FLOP utilisation the paper's time "
             "implies if the DiT alone took all of it.")
    L.append("")
    return "\n".join(L)


# ============================================================================ stage II (--stage2)


def attention_grid(video: int):
    """Video grid (frames, 64, 64) of the attention-memory probe for ``video`` tokens."""
    if video in ATTN_GRIDS:
        return ATTN_GRIDS[video]
    if video % 4096:
        raise ValueError(f"attention sizes must be multiples of 4096 video tokens, got {video}")
    return (video // 4096, 64, 64)


def run_attention_memory(ctx, sizes, args, log) -> list:
    rows = []
    for video in sizes:
        grid = attention_grid(video)
        for kind in ("full", "window"):
            busy = wait_until_idle(args.wait_idle / 4, log) if args.wait_idle else machine_busy()
            res = run_once(ctx, _attention_memory, dict(kind=kind, text=TEXT_TOKENS, grid=grid, window=WINDOW,
                                                        threads=args.threads))
            grew = res["maxrss_after"] > res["maxrss_before"]
            res.update(kind=kind, video=video, grid=grid, busy_before=busy,
                       peak=(res["maxrss_after"] - res["rss_before"]) if grew else None,
                       peak_bound=res["maxrss_before"] - res["rss_before"],
                       util=res["cpu"] / (res["wall"] * args.threads))
            peak = f"{res['peak'] / MIB:.0f} MiB" if grew else f"<= {res['peak_bound'] / MIB:.0f} MiB (no growth)"
            log(f"  attention {kind:6s} S={res['S']:6d}: peak {peak}, {res['wall']:.2f} s (cpu {res['util']:.0%})")
            rows.append(res)
    return rows


def render_stage2(results, flop_checks, attn_rows, real_counts, window_counts, probe_pairs, args, env,
                  elapsed) -> str:
    L = []
    L.append("# FlashVideo stage-II DiT vs diffusers `CogVideoXTransformer3DModel` + stage-II embeddings (CPU)")
    L.append("")
    L.append(f"Run {env['date']} on {env['cpus']} CPUs ({env['machine']}), torch {env['torch']}, diffusers "
             f"{env['diffusers']}, python {env['python']}; fp32, no_grad, `torch.set_num_threads({args.threads})`. "
             f"Total run {elapsed:.0f} s. Command: `{env['cmd']}`.")
    L.append("")
    if results:
        L.append("## Stage-II step: pack vs diffusers")
        L.append("")
        L.append(f"One step = one forward of the [cond, uncond] CFG batch ({args.batch}; uncond text = zeros) at "
                 f"timestep {STAGE2_TIMESTEP:g}, `latent_frames` = latent frames, `ref_step` = {STAGE2_REF_STEP:g}; "
                 f"{TEXT_TOKENS} text tokens, random weights (`random_dit_state_dict` of the stage-II config) loaded "
                 "strictly into both. diffusers gets `time_size_embedding` and `ref_step_time_embedding` as "
                 "diffusers `TimestepEmbedding`s of `get_timestep_embedding(..., flip_sin_to_cos=True, "
                 "downscale_freq_shift=0)` sinusoids added to its time embedding (as `tests/test_stage2.py`). "
                 f"Median of {args.repeats} calls after a warm-up, pack and diffusers alternating (ABBA), each side "
                 "in a fresh spawned process; peak = growth of `ru_maxrss` during the first call over the RSS just "
                 "before it.")
        L.append("")
        L.append("| config | tokens (video + text) | pack s | diffusers s | time ratio | pack MiB | diffusers MiB "
                 "| memory ratio | max abs diff (rel L2) | slow samples kept (pack/diff) |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            p, d = r["sides"]["pack"], r["sides"]["diffusers"]
            c = r["cfg"]
            f, _, h, w = c["latent"]
            label = (f"{r['name']}: {c['layers']} layers, width {c['width']}, text dim {c['text_dim']}, "
                     f"latent {args.batch}x{f}x16x{h}x{w}")
            mem_ratio = f"{p['peak'] / d['peak']:.2f}" if p["peak"] and d["peak"] else "n/a"
            L.append(f"| {label} | {r['video']:,} + {c['text_len']} | {p['median']:.3f} | {d['median']:.3f} "
                     f"| **{p['median'] / d['median']:.2f}** | {fmt_peak(p)} | {fmt_peak(d)} | {mem_ratio} "
                     f"| {r['cmp']['max_abs']:.1e} ({r['cmp']['rel']:.1e}) "
                     f"| {p['slow']}/{d['slow']} ({p['redone']}/{d['redone']} redone) |")
        L.append("")
        L.append("Ratios are pack / diffusers. Output magnitudes up to "
                 + ", ".join(f"{r['cmp']['ref_max']:.1f}" for r in results)
                 + f". \"slow samples\" = timed samples below {BUSY_UTIL:.0%} CPU utilisation (slowed by other "
                 f"processes), measured again up to {args.retry_slow} times; highest machine load seen before a "
                 "config or timed call: " + ", ".join(f"{r['name']} {r['busy_before']:.0%}" for r in results) + ". "
                 + " ".join(f"Each timed sample of {r['name']} is {r['inner']} back-to-back forwards (time per forward)."
                            for r in results if r["inner"] > 1))
        L.append("")
        L.append("| config | analytic GFLOP / step | FlopCounterMode (pack, meta) | attention share | pack GFLOP/s "
                 "| diffusers GFLOP/s | all timed calls pack / diffusers (s) |")
        L.append("|---|---|---|---|---|---|---|")
        for r, counted in zip(results, flop_checks):
            p, d = r["sides"]["pack"], r["sides"]["diffusers"]
            tot = r["flops"]["total"]
            L.append(f"| {r['name']} | {tot / 1e9:.1f} | {counted / 1e9:.1f} | {r['flops']['attn'] / tot:.0%} "
                     f"| {tot / p['median'] / 1e9:.1f} | {tot / d['median'] / 1e9:.1f} "
                     f"| {' '.join(f'{x:.2f}' for x in p['walls'])} / {' '.join(f'{x:.2f}' for x in d['walls'])} |")
        L.append("")
    if attn_rows:
        L.append("## Attention memory at long sequences")
        L.append("")
        L.append(f"One call per fresh process, B=1, {ATTN_HEADS} heads of {ATTN_HEAD_DIM}, fp32, {TEXT_TOKENS} text "
                 f"+ video tokens on a (frames, 64, 64) grid. \"full\" = `flashvideo_core.dit.attention.attention` "
                 "(CPU SDPA flash kernel; query chunks only where SDPA would take its math kernel); \"window\" = "
                 f"`window_attention` with window {'x'.join(map(str, WINDOW))}. Peak = growth of `ru_maxrss` during "
                 "the call over the RSS just before it (q, k, v already allocated, thread pools started by a tiny "
                 f"call), so it includes the output ({ATTN_HEADS * ATTN_HEAD_DIM * 4} B/token). Naive = the fp32 "
                 "S x S score matrix of all heads (B x heads x S^2 x 4 bytes) that a kernel materialising the "
                 "scores needs on top. \"pairs computed\" = query-key pairs the call evaluates (for the window: "
                 "its query tiles against every key their windows can reach, masked pairs included, counted with "
                 "`FlopCounterMode` on the meta device) over S^2. Time is one call, indicative only.")
        L.append("")
        L.append("| S (tokens) | grid | kind | peak MiB | bytes / token | beyond output, bytes / token "
                 "| naive S x S scores | naive / peak | pairs computed / S^2 | time s (cpu util) |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for a in attn_rows:
            naive = ATTN_HEADS * a["S"] ** 2 * 4
            if a["peak"] is None:
                peak, per, beyond, ratio = f"<= {a['peak_bound'] / MIB:.0f}", "n/a", "n/a", "n/a"
            else:
                peak = f"{a['peak'] / MIB:.1f}"
                per = f"{a['peak'] / a['S']:.0f}"
                beyond = f"{(a['peak'] - a['out_bytes']) / a['S']:.0f}"
                ratio = f"{naive / a['peak']:.0f}x"
            computed = probe_pairs[tuple(a["grid"])] / a["S"] ** 2 if a["kind"] == "window" else 1.0
            L.append(f"| {a['S']:,} | {'x'.join(map(str, a['grid']))} | {a['kind']} | {peak} | {per} | {beyond} "
                     f"| {naive / MIB:,.0f} MiB | {ratio} | {computed:.0%} | {a['wall']:.2f} ({a['util']:.0%}) |")
        L.append("")
        bad = [a for a in attn_rows if not a["finite"]]
        if bad:
            L.append(f"Non-finite outputs in {len(bad)} calls: " + ", ".join(f"{a['kind']} S={a['S']}" for a in bad))
            L.append("")
    L.append("## Stage II at 1080p and 2K: FLOPs per step and the H100 lower bound")
    L.append("")
    L.append("Analytic, 2 FLOPs per multiply-add, batch 2 (CFG), 226 text tokens, every weight matmul (incl. the "
             "three stage-II time embeddings) plus QK^T + PV; elementwise ops excluded; cross-checked with "
             "`FlopCounterMode` on the meta device. Bound = FLOPs / 989 TFLOP/s (H100 SXM dense bf16 peak, the "
             "same for H800), i.e. 100 % utilisation. The paper's NFE is 4 (README: \"270p to 1080p, NFE = 4, "
             "Takes ~72s\"); the released code runs `sample_step = 5`. The 2K time, 209.8 s, is second-hand "
             "(paper summaries; the same table gives 74.4 s at 1080p); no GPU is named.")
    L.append("")
    L.append("| model | tokens S | linear / step | attention / step | total / step | FlopCounterMode / step "
             "| H100 bound / step | bound, 4 steps | bound, 5 steps | paper | bound (4 steps) / paper |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for m, counted in zip(REAL2, real_counts):
        f = dit_flops(m["layers"], m["width"], m["video"], m["text"], m["batch"], stage2=True)
        step_s = f["total"] / H100_BF16_DENSE
        L.append(f"| {m['name']} (30 x 1920) | {m['video'] + m['text']:,} | {fmt_flops(f['linear'])} "
                 f"| {fmt_flops(f['attn'])} ({f['attn'] / f['total']:.0%}) | {fmt_flops(f['total'])} "
                 f"| {fmt_flops(counted)} | {fmt_s(step_s)} | **{fmt_s(4 * step_s)}** | {fmt_s(5 * step_s)} "
                 f"| ~{m['paper_s']:g} s | {4 * step_s / m['paper_s']:.0%} |")
    L.append("")
    L.append(f"### {'x'.join(map(str, WINDOW))} window attention (estimate)")
    L.append("")
    L.append("Query-key pairs per head and batch element: full = S^2; ideal window = text queries see all tokens, "
             "video queries see all text tokens and the in-window video tokens (clipped at the borders), nothing "
             "else evaluated (what a block-sparse kernel such as FlexAttention approaches); pack = what "
             "`window_attention` evaluates: its query tiles against every key their windows can reach, masked "
             "pairs included, counted with `FlopCounterMode` on one meta-device call. \"keys / video query\" = "
             "(pairs - text x S) / video tokens. Attention FLOPs = 4 x B x width x pairs per layer; linear FLOPs "
             "are unchanged by the window.")
    L.append("")
    L.append("| model | patch grid | pairs / layer: full / ideal / pack | keys / video query: full / ideal / pack "
             "| attention / step: full | ideal window | pack window | total / step: ideal / pack window "
             "| H100 bound 4 / 5 steps, ideal window | H100 bound 4 / 5 steps, pack window |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for m, pack_pairs in zip(REAL2, window_counts):
        f = dit_flops(m["layers"], m["width"], m["video"], m["text"], m["batch"], stage2=True)
        _, _, h, w = m["latent"]
        grid = (m["latent"][0], h // 2, w // 2)
        pairs = window_pairs(m["text"], grid)
        S = m["video"] + m["text"]
        keys = [(x - m["text"] * S) / m["video"] for x in (pairs["full"], pairs["ideal"], pack_pairs)]
        per_pair = m["layers"] * 4 * m["batch"] * m["width"]
        ideal, pack = per_pair * pairs["ideal"], per_pair * pack_pairs
        tot_ideal, tot_pack = f["linear"] + ideal, f["linear"] + pack
        L.append(f"| {m['name']} | {'x'.join(map(str, grid))} "
                 f"| {pairs['full'] / 1e9:.2f} G / {pairs['ideal'] / 1e9:.3f} G / {pack_pairs / 1e9:.3f} G "
                 f"| {keys[0]:,.0f} / {keys[1]:,.0f} / {keys[2]:,.0f} "
                 f"| {fmt_flops(f['attn'])} | {fmt_flops(ideal)} ({ideal / f['attn']:.1%}) "
                 f"| {fmt_flops(pack)} ({pack / f['attn']:.1%}) "
                 f"| {fmt_flops(tot_ideal)} ({tot_ideal / f['total']:.0%}) / {fmt_flops(tot_pack)} "
                 f"({tot_pack / f['total']:.0%} of full) "
                 f"| {fmt_s(4 * tot_ideal / H100_BF16_DENSE)} / {fmt_s(5 * tot_ideal / H100_BF16_DENSE)} "
                 f"| {fmt_s(4 * tot_pack / H100_BF16_DENSE)} / {fmt_s(5 * tot_pack / H100_BF16_DENSE)} |")
    L.append("")
    L.append("Units: P = 1e15, T = 1e12, G = 1e9.")
    L.append("")
    return "\n".join(L)


def run_stage2(ctx, args, env, log, start, out) -> int:
    medium_frames = args.medium_frames or (1 if args.quick else 13)
    configs = {}
    for name in (n.strip() for n in args.configs.split(",")):
        if name and name != "none":
            cfg = dict(BENCH2[name])
            if name == "medium":
                cfg["latent"] = (medium_frames,) + cfg["latent"][1:]
            configs[name] = cfg
    sizes = [] if args.attention_sizes == "none" else [int(x) for x in args.attention_sizes.split(",") if x.strip()]
    for video in sizes:
        attention_grid(video)  # fail early on a bad size
    results = []
    with tempfile.TemporaryDirectory(prefix="dit_bench2_") as tmp:
        for name, cfg in configs.items():
            results.append(run_case(ctx, name, cfg, args, tmp, log))
    attn_rows = []
    if sizes:
        log(f"attention memory at {', '.join(map(str, sizes))} video + {TEXT_TOKENS} text tokens")
        attn_rows = run_attention_memory(ctx, sizes, args, log)
    log("counting FLOPs with FlopCounterMode on the meta device")
    bench_cases = [dict(layers=c["layers"], width=c["width"], text_dim=c["text_dim"], text=c["text_len"],
                        latent=c["latent"], batch=args.batch, stage2=True) for c in configs.values()]
    counts = run_once(ctx, _flop_count, bench_cases + [dict(m) for m in REAL2])
    flop_checks, real_counts = counts[: len(bench_cases)], counts[len(bench_cases):]
    window_cases = [dict(batch=m["batch"], heads=m["width"] // 64, text=m["text"], window=WINDOW,
                         grid=(m["latent"][0], m["latent"][2] // 2, m["latent"][3] // 2)) for m in REAL2]
    probe_grids = sorted({tuple(a["grid"]) for a in attn_rows})
    window_cases += [dict(batch=1, heads=ATTN_HEADS, text=TEXT_TOKENS, window=WINDOW, grid=g) for g in probe_grids]
    pairs = run_once(ctx, _window_flop_count, window_cases)
    window_counts, probe_pairs = pairs[: len(REAL2)], dict(zip(probe_grids, pairs[len(REAL2):]))
    text = render_stage2(results, flop_checks, attn_rows, real_counts, window_counts, probe_pairs, args, env,
                         time.time() - start)
    print()
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
        log(f"wrote {os.path.relpath(out, ROOT)}")
    return 0


def _probe_versions(conn) -> None:
    try:
        import diffusers
        import torch

        conn.send(("ok", dict(torch=torch.__version__, diffusers=diffusers.__version__)))
    except BaseException:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run (< 1 min): tiny + a 1-frame medium, 3 repeats")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every worker (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per side after the warm-up (default 3)")
    ap.add_argument("--batch", type=int, default=2, help="batch size (default 2, the CFG batch)")
    ap.add_argument("--medium-frames", type=int, default=None,
                    help="latent frames of the medium config (default 13, the real stage-I count; 1 with --quick)")
    ap.add_argument("--wait-idle", type=float, default=None,
                    help="before each config wait up to this many seconds (a quarter of it before each timed call) "
                         "for other processes to leave the CPUs idle (default 120; 0 with --quick)")
    ap.add_argument("--retry-slow", type=int, default=2,
                    help=f"measure a timed sample again (up to N times) when its CPU utilisation is below "
                         f"{BUSY_UTIL * 100:.0f}%%, i.e. other processes slowed it (default 2)")
    ap.add_argument("--configs", default="tiny,medium",
                    help="comma-separated subset of: " + ", ".join(BENCH) + " (stage-II configs with --stage2; "
                         "'none' there runs no step rows)")
    ap.add_argument("--stage2", action="store_true",
                    help="stage II instead: stage-II DiT step rows (tiny 3x18x32, medium 13x36x64 latents), "
                         "attention memory at long sequences, 1080p/2K FLOPs with the 7x11x11 window estimate; "
                         "~6 min, writes benchmarks/results/dit_stage2_cpu.md")
    ap.add_argument("--attention-sizes", default=None,
                    help="with --stage2: video token counts (multiples of 4096) for the attention-memory rows, "
                         "or 'none' (default 8192,16384,32768,65536; 4096,8192 with --quick)")
    ap.add_argument("--out", default=None,
                    help="markdown file to write (default benchmarks/results/dit_cpu.md, or dit_stage2_cpu.md "
                         "with --stage2; none with --quick)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.attention_sizes is None:
        args.attention_sizes = "4096,8192" if args.quick else "8192,16384,32768,65536"
    default_out = "dit_stage2_cpu.md" if args.stage2 else "dit_cpu.md"
    out = args.out or (None if args.quick else os.path.join(ROOT, "benchmarks", "results", default_out))
    if args.wait_idle is None:
        args.wait_idle = 0.0 if args.quick else 120.0
    medium_frames = args.medium_frames or (1 if args.quick else 13)

    start = time.time()

    def log(msg):
        print(f"[{time.time() - start:6.1f}s] {msg}", flush=True)

    ctx = mp.get_context("spawn")
    env = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), cpus=os.cpu_count(),
               machine=platform.processor() or platform.machine(), python=platform.python_version(),
               cmd="python benchmarks/dit_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    env.update(run_once(ctx, _probe_versions))
    if args.stage2:
        return run_stage2(ctx, args, env, log, start, out)

    configs = {}
    for name in args.configs.split(","):
        cfg = dict(BENCH[name.strip()])
        if name.strip() == "medium":
            cfg["latent"] = (medium_frames,) + cfg["latent"][1:]
        configs[name.strip()] = cfg

    results = []
    with tempfile.TemporaryDirectory(prefix="dit_bench_") as tmp:
        for name, cfg in configs.items():
            results.append(run_case(ctx, name, cfg, args, tmp, log))

    log("counting FLOPs with FlopCounterMode on the meta device")
    bench_cases = [dict(layers=c["layers"], width=c["width"], text_dim=c["text_dim"], text=c["text_len"],
                        latent=c["latent"], batch=args.batch) for c in configs.values()]
    real_cases = [dict(m, batch=m["batch"]) for m in REAL]
    counts = run_once(ctx, _flop_count, bench_cases + real_cases)
    flop_checks, real_counts = counts[: len(bench_cases)], counts[len(bench_cases):]

    text = render(results, flop_checks, real_counts, args, env, time.time() - start)
    print()
    print(text)
    write_results(text, out, log)
    return 0


def write_results(text: str, out: str, say=print) -> None:
    """Write a results table (benchmarks/results/...) when ``out`` is given, and say where."""
    if not out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    say(f"wrote {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
