#!/usr/bin/env python
"""CPU benchmark: the pack's FlashVideo DiT against diffusers' ``CogVideoXTransformer3DModel``.

Not a test. For the same config, weights (``random_dit_state_dict``, loaded strictly into both), inputs, batch
(2, the CFG batch), dtype (fp32) and thread count it measures one forward on each side with the harness's method
(``harness.py``: fresh workers, ABBA, median, peak = ``ru_maxrss`` growth of the first call) and reports
pack/diffusers ratios of wall time and peak memory, the largest output difference, and FLOP counts: analytic,
cross-checked with ``FlopCounterMode`` on the meta device, for the benchmark configs and for the real stage-I /
stage-II models with the H100 lower bound they imply. diffusers gets its RoPE table precomputed outside the timed
call (its pipeline computes it once per step); the pack computes it inside, cached per shape. diffusers' final
LayerNorm eps is set to the reference's 1e-6, as in tests/test_dit_model.py.

``--stage2``: the pack's stage-II DiT (``stage2_embeddings=True``) against diffusers' transformer with
``time_size_embedding`` and ``ref_step_time_embedding`` added from diffusers' own parts (``TimestepEmbedding`` of
``get_timestep_embedding(..., flip_sin_to_cos=True, downscale_freq_shift=0)`` sinusoids, as in
tests/test_stage2.py); one step = one forward of the [cond, uncond] CFG batch at a stage-II timestep. Then the
attention memory at long sequences (one call of ``attention`` and of the 7x11x11 ``window_attention`` per fresh
process, B=1, 2 heads of 64, fp32), and the 1080p / 2K FLOPs with the window's attention work: ideal (in-window
pairs only) and as ``window_attention`` evaluates it (``FlopCounterMode`` on the meta device).

Run ``python benchmarks/dit_benchmark.py --help``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time

import harness
from harness import BUSY_UTIL, H100_BF16_DENSE, MIB, TEXT_TOKENS, fmt_flops, fmt_peak, fmt_s

BATCH = 2  # the CFG batch
SAMPLING = 500.0  # stage-I timestep of the benchmark (the same for both halves of the CFG batch)
STAGE2_TIMESTEP = 904.0  # second network timestep of the bf16 stage-II grid
STAGE2_REF_STEP = 676.0  # noise step 675 as embedded in bf16
MODELS = {"tiny": dict(layers=2, width=128, text_dim=32), "medium": dict(layers=4, width=768, text_dim=4096)}
#: latent (frames, channels, height, width) per batch element: stage I, and stage II (16:9-ish like 1080p's 134x240)
LATENTS = {False: {"tiny": (3, 16, 16, 24), "medium": (13, 16, 32, 60)},
           True: {"tiny": (3, 16, 18, 32), "medium": (13, 16, 36, 64)}}
ATTN_HEADS, ATTN_HEAD_DIM = 2, 64  # attention-memory probe: B=1, fp32, video on a (frames, 64, 64) grid
WINDOW = (7, 11, 11)  # (frames, height, width) in latent patches, the paper's window
#: the real models: stage I CogVideoX-5B-shaped, stage II CogVideoX-2B-shaped; steps: stage II's paper NFE, code
REAL = [
    dict(name="stage I, 270p preview", layers=42, width=3072, stage2=False, latent=(13, 16, 32, 60), steps=(51,),
         paper_s=30.0),
    dict(name="stage II, 1080p", layers=30, width=1920, stage2=True, latent=(13, 16, 134, 240), steps=(4, 5),
         paper_s=72.0),
    dict(name="stage II, 2K", layers=30, width=1920, stage2=True, latent=(13, 16, 180, 320), steps=(4, 5),
         paper_s=209.8),
]


def bench_config(name: str, stage2: bool = False, quick: bool = False) -> dict:
    """A benchmark config; --quick runs the medium model on one latent frame."""
    latent = LATENTS[stage2][name]
    return dict(MODELS[name], stage2=stage2, latent=(1,) + latent[1:] if quick and name == "medium" else latent)


def video_tokens(latent) -> int:
    frames, _, height, width = latent
    return frames * (height // 2) * (width // 2)


def real_flops(m: dict) -> dict:
    return harness.dit_flops(m["layers"], m["width"], video_tokens(m["latent"]), TEXT_TOKENS, BATCH,
                             stage2=m["stage2"])


def window_pairs(grid, window=WINDOW) -> dict:
    """Query-key pairs of one head and batch element: full attention, and an ideal window that evaluates only the
    in-window video pairs (text queries and keys stay global, as in the pack)."""
    video = grid[0] * grid[1] * grid[2]
    local = 1
    for n, w in zip(grid, window):  # the clipped window length along each axis, summed over positions
        local *= sum(min(n, i + w // 2 + 1) - max(0, i - w // 2) for i in range(n))
    S = TEXT_TOKENS + video
    return dict(full=S * S, ideal=TEXT_TOKENS * S + video * TEXT_TOKENS + local)


# ============================================================================ worker side (imports torch)


def bench_inputs(cfg: dict):
    """(DiTConfig, random state dict, x[B, T, C, H, W], t, ctx, extra kwargs) of a benchmark config: what every
    implementation of a case gets (also native_vs_core.py). Stage II: [cond, uncond] with the zero uncond text."""
    from flashvideo_core.dit.config import DiTConfig
    from flashvideo_core.tiny import random_dit_state_dict

    config = DiTConfig(num_layers=cfg["layers"], hidden_size=cfg["width"], text_hidden_size=cfg["text_dim"],
                       stage2_embeddings=cfg["stage2"])
    x, t, ctx, extra = harness.dit_inputs(config, BATCH, cfg["latent"], timestep=STAGE2_TIMESTEP if cfg["stage2"]
                                          else SAMPLING, ref_step=STAGE2_REF_STEP)
    if cfg["stage2"]:
        ctx[BATCH // 2:] = 0
    return config, random_dit_state_dict(config, seed=0), x, t, ctx, extra


def _diffusers_stage2(model, width: int, extra: dict, state: dict) -> dict:
    """Wrap diffusers' time embedding with the stage-II size and ref-step embeddings, built from diffusers'
    ``TimestepEmbedding`` and ``get_timestep_embedding`` as in tests/test_stage2.py; returns the state dict
    with the pack's keys renamed to match."""
    import torch
    from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding

    names = ("time_size_embedding", "ref_step_time_embedding")

    class Stage2TimeEmbedding(torch.nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base = base
            for name in names:
                setattr(self, name, TimestepEmbedding(width, 512))

        def forward(self, t_emb, cond=None):
            out = self.base(t_emb, cond)
            for name, value in zip(names, (extra["latent_frames"], extra["ref_step"])):
                sinus = get_timestep_embedding(value, width, flip_sin_to_cos=True, downscale_freq_shift=0)
                out = out + getattr(self, name)(sinus.to(t_emb.dtype))
            return out

    with torch.device("meta"):
        model.time_embedding = Stage2TimeEmbedding(model.time_embedding)

    def key(k):
        if k.startswith("time_embedding."):
            return "time_embedding.base." + k[len("time_embedding."):]
        return "time_embedding." + k if k.split(".")[0] in names else k

    return {key(k): v for k, v in state.items()}


def build(spec: dict):
    """The harness's build: ``spec['impl']`` in {pack (alias core), diffusers} on ``spec['config']``."""
    import torch

    cfg = spec["config"]
    config, state, x, t, ctx, extra = bench_inputs(cfg)
    frames, channels, height, width = cfg["latent"]
    if spec["impl"] in ("pack", "core"):
        from flashvideo_core.dit.model import FlashVideoDiT

        with torch.device("meta"):
            model = FlashVideoDiT(config)
        model.load_state_dict(state, strict=True, assign=True)
        model.eval()
        call = lambda: model(x, t, ctx, **extra)  # noqa: E731
    else:
        import diffusers

        from flashvideo_core.dit.rope import rope_table

        with torch.device("meta"):
            model = diffusers.CogVideoXTransformer3DModel(
                num_attention_heads=cfg["width"] // 64, attention_head_dim=64, in_channels=channels,
                out_channels=channels, time_embed_dim=512, text_embed_dim=cfg["text_dim"], num_layers=cfg["layers"],
                patch_size=2, use_rotary_positional_embeddings=True)
        if cfg["stage2"]:
            state = _diffusers_stage2(model, cfg["width"], extra, state)
        model.load_state_dict(state, strict=True, assign=True)
        model.eval()
        model.norm_out.norm.eps = 1e-6  # the reference's final-norm eps (diffusers uses norm_eps there)
        if any(p.is_meta for p in [*model.parameters(), *model.buffers()]):
            raise RuntimeError("diffusers tensors left on meta after loading")
        rope = rope_table(frames, height // 2, width // 2, 64, "cpu")
        call = lambda: model(hidden_states=x, encoder_hidden_states=ctx, timestep=t,  # noqa: E731
                             image_rotary_emb=rope, return_dict=False)[0]
    return call, dict(params=sum(p.numel() for p in model.parameters()))


def _flop_counts(cases) -> list:
    """FlopCounterMode totals of one forward per case on the meta device (no memory, no time)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from flashvideo_core.dit.config import DiTConfig
    from flashvideo_core.dit.model import FlashVideoDiT

    torch.set_grad_enabled(False)
    results = []
    for c in cases:
        config = DiTConfig(num_layers=c["layers"], hidden_size=c["width"], text_hidden_size=c.get("text_dim", 4096),
                           stage2_embeddings=c["stage2"])
        frames, channels, height, width = c["latent"]
        with torch.device("meta"):
            model = FlashVideoDiT(config).eval()
            x = torch.empty(BATCH, frames, channels, height, width)
            ctx, t = torch.empty(BATCH, TEXT_TOKENS, config.text_hidden_size), torch.empty(BATCH)
            extra = dict(latent_frames=torch.empty(BATCH), ref_step=torch.empty(BATCH)) if c["stage2"] else {}
        counter = FlopCounterMode(display=False)
        with counter:
            model(x, t, ctx, **extra)
        results.append(counter.get_total_flops())
    return results


def _window_pair_counts(cases) -> list:
    """Query-key pairs per head and batch element that one ``window_attention`` call evaluates, from
    FlopCounterMode on the meta device (masked SDPA decomposes to bmm there, so every pair evaluated is counted,
    masked or not; 4 FLOPs x head_dim per pair: QK^T and PV). Cases: (batch, heads, grid)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from flashvideo_core.dit.window_attention import window_attention

    torch.set_grad_enabled(False)
    results = []
    for batch, heads, grid in cases:
        S = TEXT_TOKENS + grid[0] * grid[1] * grid[2]
        q, k, v = (torch.empty(batch, heads, S, 64, device="meta") for _ in range(3))
        counter = FlopCounterMode(display=False)
        with counter:
            window_attention(q, k, v, TEXT_TOKENS, grid, WINDOW)
        results.append(counter.get_total_flops() // (4 * batch * heads * 64))
    return results


def _attention_memory(kind: str, grid: tuple, threads: int) -> dict:
    """Peak RSS growth and wall time of one attention call (B=1, fp32) in this fresh process."""
    import torch

    from flashvideo_core.dit.attention import attention
    from flashvideo_core.dit.window_attention import window_attention

    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    S = TEXT_TOKENS + grid[0] * grid[1] * grid[2]

    def call(q, k, v, g):
        return window_attention(q, k, v, TEXT_TOKENS, g, WINDOW) if kind == "window" else attention(q, k, v)

    # start the thread pools and kernels on a tiny call (its one-time allocations are not the call's)
    call(*(torch.randn(1, ATTN_HEADS, TEXT_TOKENS + 2 * 4 * 4, ATTN_HEAD_DIM) for _ in range(3)), (2, 4, 4))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, ATTN_HEADS, S, ATTN_HEAD_DIM, generator=gen) for _ in range(3))
    out, stats = harness.peak_call(lambda: call(q, k, v, grid))
    return dict(stats, S=S, finite=bool(torch.isfinite(out).all()), out_bytes=out.numel() * out.element_size())


# ============================================================================ parent side (no torch)


def run_case(ctx, name: str, cfg: dict, args, tmp: str, log, builds=None, spec_extra=None) -> dict:
    """One config, the first of ``builds`` (impl -> build; default pack and diffusers) against the second (the
    reference of the output comparison); ``spec_extra[impl]`` is added to that side's spec."""
    video = video_tokens(cfg["latent"])
    log(f"[{name}] {cfg['layers']} layers, width {cfg['width']}, latent {BATCH}x{'x'.join(map(str, cfg['latent']))}"
        f" = {video} video + {TEXT_TOKENS} text tokens")
    builds = builds or {"pack": build, "diffusers": build}
    specs = {i: dict(impl=i, config=cfg, out_path=os.path.join(tmp, f"{name}_{i}.pt"), **(spec_extra or {}).get(i, {}))
             for i in builds}
    result = harness.run_pair(ctx, builds, specs, args, log)
    flops = harness.dit_flops(cfg["layers"], cfg["width"], video, TEXT_TOKENS, BATCH, text_dim=cfg["text_dim"],
                              stage2=cfg["stage2"])
    return dict(result, name=name, cfg=cfg, video=video, flops=flops)


def run_attention_memory(ctx, sizes, args, log) -> list:
    rows = []
    for video in sizes:
        grid = (video // 4096, 64, 64)
        for kind in ("full", "window"):
            harness.wait_until_idle(args.wait_idle / 4, log)
            res = harness.run_once(ctx, _attention_memory, kind, grid, args.threads)
            res.update(kind=kind, grid=grid, util=res["cpu"] / (res["wall"] * args.threads))
            log(f"  attention {kind:6s} S={res['S']:6d}: peak {fmt_peak(res)} MiB, {res['wall']:.2f} s "
                f"(cpu {res['util']:.0%})")
            rows.append(res)
    return rows


def render(results, bench_counts, real_counts, attn_rows, probe_pairs, window_counts, args, env) -> str:
    stage2 = args.stage2
    L = [f"# FlashVideo {'stage-II ' * stage2}DiT vs diffusers `CogVideoXTransformer3DModel`"
         f"{' + stage-II embeddings' * stage2} (CPU)", "",
         f"Run {env['date']} on {env['cpus']} CPUs ({env['cpu']}), torch {env['torch']}, diffusers {env['diffusers']}, "
         f"python {env['python']}; fp32, no_grad, `torch.set_num_threads({args.threads})`. Total run "
         f"{env['elapsed']:.0f} s. Command: `{env['cmd']}`.", ""]
    if results:
        step = (f"at timestep {STAGE2_TIMESTEP:g} (uncond text = zeros), `latent_frames` = latent frames, `ref_step` = "
                f"{STAGE2_REF_STEP:g}; diffusers gets `time_size_embedding` and `ref_step_time_embedding` as diffusers "
                "`TimestepEmbedding`s of `get_timestep_embedding(..., flip_sin_to_cos=True, downscale_freq_shift=0)` "
                "sinusoids added to its time embedding (as `tests/test_stage2.py`)" if stage2 else
                f"at timestep {SAMPLING:g}")
        L += ["## Speed and memory", "",
              f"One forward of the CFG batch ({BATCH}) {step}; {TEXT_TOKENS} text tokens, random weights "
              "(`random_dit_state_dict`) loaded strictly into both. Median of "
              f"{args.repeats} calls after a warm-up, pack and diffusers alternating (ABBA), each side in a fresh "
              "spawned process; peak = growth of `ru_maxrss` during the first call over the RSS just before it.", "",
              "| config | tokens (video + text) | pack s | diffusers s | time ratio | pack MiB | diffusers MiB "
              "| memory ratio | max abs diff (rel L2) | slow samples kept (pack/diff) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in results:
            p, d, c = r["sides"]["pack"], r["sides"]["diffusers"], r["cfg"]
            mem = f"{p['peak'] / d['peak']:.2f}" if p["peak"] and d["peak"] else "n/a"
            L.append(f"| {r['name']}: {c['layers']} layers, width {c['width']}, text dim {c['text_dim']}, latent "
                     f"{BATCH}x{'x'.join(map(str, c['latent']))} | {r['video']:,} + {TEXT_TOKENS} | {p['median']:.3f} "
                     f"| {d['median']:.3f} | **{p['median'] / d['median']:.2f}** | {fmt_peak(p)} | {fmt_peak(d)} "
                     f"| {mem} | {r['cmp']['max_abs']:.1e} ({r['cmp']['rel']:.1e}) "
                     f"| {p['slow']}/{d['slow']} ({p['redone']}/{d['redone']} redone) |")
        L += ["", "Ratios are pack / diffusers (goal: time ratio <= 1.0). Output magnitudes up to "
              + ", ".join(f"{r['cmp']['ref_max']:.1f}" for r in results)
              + f". \"slow samples\" = timed samples below {BUSY_UTIL:.0%} CPU utilisation (slowed by other "
              f"processes), measured again up to {args.retry_slow} times (\"redone\"); highest machine load seen "
              "before a config or timed call: " + ", ".join(f"{r['name']} {r['busy_before']:.0%}" for r in results)
              + "." + "".join(f" Each timed sample of {r['name']} is {r['inner']} back-to-back forwards (time per "
                              "forward)." for r in results if r["inner"] > 1), "",
              "| config | analytic GFLOP / forward | FlopCounterMode (pack, meta) | attention share | pack GFLOP/s "
              "| diffusers GFLOP/s | all timed calls pack / diffusers (s) |", "|---|---|---|---|---|---|---|"]
        for r, counted in zip(results, bench_counts):
            p, d, tot = r["sides"]["pack"], r["sides"]["diffusers"], r["flops"]["total"]
            L.append(f"| {r['name']} | {tot / 1e9:.1f} | {counted / 1e9:.1f} | {r['flops']['attn'] / tot:.0%} "
                     f"| {tot / p['median'] / 1e9:.1f} | {tot / d['median'] / 1e9:.1f} "
                     f"| {' '.join(f'{x:.2f}' for x in p['walls'])} / {' '.join(f'{x:.2f}' for x in d['walls'])} |")
        L.append("")
    if attn_rows:
        L += ["## Attention memory at long sequences", "",
              f"One call per fresh process, B=1, {ATTN_HEADS} heads of {ATTN_HEAD_DIM}, fp32, {TEXT_TOKENS} text + "
              "video tokens on a (frames, 64, 64) grid. \"full\" = `flashvideo_core.dit.attention.attention` (CPU "
              "SDPA flash kernel; query chunks only where SDPA would take its math kernel); \"window\" = "
              f"`window_attention` with window {'x'.join(map(str, WINDOW))}. Peak = growth of `ru_maxrss` during "
              "the call over the RSS just before it (q, k, v allocated, thread pools started by a tiny call), so it "
              f"includes the output ({ATTN_HEADS * ATTN_HEAD_DIM * 4} B/token). Naive = the fp32 S x S scores of all "
              "heads, which a kernel materialising them needs on top. \"pairs computed\" = query-key pairs the call "
              "evaluates (window: its query tiles against every key their windows can reach, masked pairs included, "
              "`FlopCounterMode` on the meta device) over S^2. Time is one call, indicative only.", "",
              "| S (tokens) | grid | kind | peak MiB | bytes / token | beyond output, bytes / token "
              "| naive S x S scores | naive / peak | pairs computed / S^2 | time s (cpu util) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for a in attn_rows:
            naive = ATTN_HEADS * a["S"] ** 2 * 4
            peak, per, beyond, ratio = fmt_peak(a), "n/a", "n/a", "n/a"
            if a["peak"] is not None:
                peak = f"{a['peak'] / MIB:.1f}"
                per, beyond = f"{a['peak'] / a['S']:.0f}", f"{(a['peak'] - a['out_bytes']) / a['S']:.0f}"
                ratio = f"{naive / a['peak']:.0f}x"
            computed = probe_pairs[a["grid"]] / a["S"] ** 2 if a["kind"] == "window" else 1.0
            L.append(f"| {a['S']:,} | {'x'.join(map(str, a['grid']))} | {a['kind']} | {peak} | {per} "
                     f"| {beyond} | {naive / MIB:,.0f} MiB | {ratio} | {computed:.0%} | {a['wall']:.2f} "
                     f"({a['util']:.0%}) |{'' if a['finite'] else ' NON-FINITE OUTPUT |'}")
        L.append("")
    L += ["## FLOPs of the real models and the H100 lower bound", "",
          "Analytic, 2 FLOPs per multiply-add, batch 2 (CFG), 226 text tokens, every weight matmul (patch embed, "
          "text projection, the time embeddings (three in stage II), adaLN, output projection) plus QK^T + PV; "
          "elementwise ops (norms, RoPE, softmax, GELU) excluded; cross-checked with `FlopCounterMode` on the meta "
          "device. Bound = FLOPs / 989 TFLOP/s (H100 SXM dense bf16 peak, the same for H800), i.e. 100 % "
          "utilisation. Stage II: the paper's NFE is 4 (README: \"270p to 1080p, NFE = 4, Takes ~72s\"), the released "
          "code runs `sample_step = 5`; the 2K time, 209.8 s, is second-hand (paper summaries; the same table gives "
          "74.4 s at 1080p). \"bound / paper\" = the utilisation the paper's time implies if the DiT alone took "
          "it.", "",
          "| model | layers x width | tokens S | linear / step | attention / step | total / step "
          "| FlopCounterMode / step | H100 bound / step | bound, all steps | paper | bound / paper |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, counted in zip(REAL, real_counts):
        f = real_flops(m)
        step_s = f["total"] / H100_BF16_DENSE
        bounds = " / ".join(f"{fmt_s(n * step_s)} ({n} steps)" for n in m["steps"])
        L.append(f"| {m['name']} | {m['layers']} x {m['width']} | {video_tokens(m['latent']) + TEXT_TOKENS:,} "
                 f"| {fmt_flops(f['linear'])} | {fmt_flops(f['attn'])} ({f['attn'] / f['total']:.0%}) "
                 f"| {fmt_flops(f['total'])} | {fmt_flops(counted)} | {fmt_s(step_s)} | **{bounds}** "
                 f"| ~{m['paper_s']:g} s | {m['steps'][0] * step_s / m['paper_s']:.0%} |")
    L.append("")
    if window_counts:
        L += [f"### {'x'.join(map(str, WINDOW))} window attention (estimate)", "",
              "Query-key pairs per head and batch element: full = S^2; ideal = text queries see all tokens, video "
              "queries all text tokens and the in-window video tokens (clipped at the borders), nothing else "
              "evaluated (what a block-sparse kernel approaches); pack = what `window_attention`'s tile loop "
              "evaluates: its query tiles against every key their windows can reach, masked pairs included "
              "(`FlopCounterMode` on one meta-device call). \"keys / video query\" = (pairs - text x S) / video "
              "tokens. Attention FLOPs = 4 x B x width x pairs per layer; linear FLOPs are unchanged by the "
              "window.", "",
              "| model | patch grid | pairs / layer: full / ideal / pack | keys / video query: full / ideal / pack "
              "| attention / step: full / ideal / pack | total / step: ideal / pack "
              "| H100 bound 4 / 5 steps: ideal / pack |", "|---|---|---|---|---|---|---|"]
        for m, pack_pairs in zip(REAL[1:], window_counts):
            f, video = real_flops(m), video_tokens(m["latent"])
            grid = (m["latent"][0], m["latent"][2] // 2, m["latent"][3] // 2)
            pairs = [*window_pairs(grid).values(), pack_pairs]
            keys = [(x - TEXT_TOKENS * (video + TEXT_TOKENS)) / video for x in pairs]
            attn = [m["layers"] * 4 * BATCH * m["width"] * x for x in pairs]
            tot = [f["linear"] + x for x in attn[1:]]
            L.append(f"| {m['name']} | {'x'.join(map(str, grid))} | {' / '.join(f'{x / 1e9:.4g} G' for x in pairs)} "
                     f"| {' / '.join(f'{x:,.0f}' for x in keys)} | {fmt_flops(attn[0])} / "
                     + " / ".join(f"{fmt_flops(x)} ({x / attn[0]:.1%})" for x in attn[1:])
                     + " | " + " / ".join(f"{fmt_flops(x)} ({x / f['total']:.0%} of full)" for x in tot) + " | "
                     + " / ".join(f"{fmt_s(4 * x / H100_BF16_DENSE)}, {fmt_s(5 * x / H100_BF16_DENSE)}" for x in tot)
                     + " |")
        L.append("")
    L += ["Units: P = 1e15, T = 1e12, G = 1e9.", ""]
    return "\n".join(L)


def main(argv=None) -> int:
    ap = harness.parser(__doc__, quick="smoke run (< 1 min): tiny + a 1-frame medium, 1 repeat, no file",
                        out="markdown file (default benchmarks/results/dit_cpu.md, dit_stage2_cpu.md with --stage2; "
                            "none with --quick)")
    ap.add_argument("--configs", default="tiny,medium", help="comma-separated subset of tiny, medium ('none' with "
                    "--stage2: no step rows)")
    ap.add_argument("--stage2", action="store_true",
                    help="stage II instead: stage-II DiT step rows (tiny 3x18x32, medium 13x36x64 latents), attention "
                         "memory at long sequences, 1080p/2K FLOPs with the 7x11x11 window estimate")
    ap.add_argument("--attention-sizes", default=None,
                    help="with --stage2: video token counts (multiples of 4096) of the attention-memory rows, or "
                         "'none' (default 8192,16384,32768,65536; 4096,8192 with --quick)")
    args = harness.parse(ap, argv, lambda a: "dit_stage2_cpu.md" if a.stage2 else "dit_cpu.md")
    names = [n.strip() for n in args.configs.split(",") if n.strip() not in ("", "none")]
    sizes = args.attention_sizes or ("4096,8192" if args.quick else "8192,16384,32768,65536")
    sizes = [int(x) for x in sizes.split(",") if x.strip()] if args.stage2 and sizes != "none" else []
    if any(n not in MODELS for n in names) or any(s % 4096 for s in sizes):
        ap.error("configs are tiny, medium; attention sizes multiples of 4096")
    start, log = time.time(), harness.logger()
    ctx = mp.get_context("spawn")
    env = harness.environment(ctx, "dit_benchmark.py", argv)
    configs = {n: bench_config(n, args.stage2, args.quick) for n in names}
    with tempfile.TemporaryDirectory(prefix="dit_bench_") as tmp:
        results = [run_case(ctx, name, cfg, args, tmp, log) for name, cfg in configs.items()]
    attn_rows = run_attention_memory(ctx, sizes, args, log) if sizes else []
    log("counting FLOPs with FlopCounterMode on the meta device")
    counts = harness.run_once(ctx, _flop_counts, list(configs.values()) + REAL)
    probe_grids = sorted({a["grid"] for a in attn_rows})
    real = [(BATCH, m["width"] // 64, (m["latent"][0], m["latent"][2] // 2, m["latent"][3] // 2)) for m in REAL[1:]]
    cases = (real if args.stage2 else []) + [(1, ATTN_HEADS, g) for g in probe_grids]
    pairs = harness.run_once(ctx, _window_pair_counts, cases) if cases else []
    n = len(cases) - len(probe_grids)
    env["elapsed"] = time.time() - start
    text = render(results, counts[:len(configs)], counts[len(configs):], attn_rows,
                  dict(zip(probe_grids, pairs[n:])), pairs[:n], args, env)
    print("\n" + text)
    harness.write_results(text, args.out, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
