#!/usr/bin/env python
"""Working memory of the DiT per memory mode, measured on the CPU, and the 1080p pipeline on an 8 GB GPU.

Not a test. Part 1 measures one stage-II forward (the real width 1920, 64-wide heads, T5 width 4096, reduced
to ``--layers`` layers: a block frees its activations before the next starts, so depth does not change the
peak) for each mode of ``flashvideo_core.dit.memory``: the peak bytes of tensors alive at once
(``memory_probe.LiveTensorBytes``, which counts every storage an operator returns), per token of
one sample, and the estimate it implies for the real 30 layers at 1080p and 2K in bf16 (measured fp32 bytes
per token / 2), next to the planner's estimate. All modes must give the batched result (max relative diff).

Part 2 is the plan for the whole 1080p pipeline (49 frames) on a GPU with 8 GB (and 6 GB): per phase the
weights, the working memory (DiT: the planner's leanest plan that fits; VAE: the slicing planner under the
remaining budget), and how much of the weights the host's partial loading must leave off the GPU. Estimates,
not GPU measurements (``benchmarks/gpu_check.py`` measures where a GPU is lent).

    .venv/bin/python benchmarks/dit_memory.py                # ~2 min on 2 cores -> results/dit_memory.md
    .venv/bin/python benchmarks/dit_memory.py --quick        # seconds, no file
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import harness
import torch

from flashvideo_core.dit.config import STAGE1_CONFIG, STAGE2_CONFIG, DiTConfig
from flashvideo_core.dit.guidance import forward_pair
from flashvideo_core.dit.memory import ForwardPlan, candidate_plans, plan_bytes, plan_for
from flashvideo_core.dit.model import FlashVideoDiT
from memory_probe import LiveTensorBytes
from flashvideo_core.vae.config import OFFICIAL_VAE_CONFIG
from flashvideo_core.vae.model import CogVideoXVAE
from flashvideo_core.vae.slicing import SlicingOptions, plan_slicing

GB = 1e9
#: lean chunks as a share of the sequence: 16384 and 4096 tokens of 1080p's 104,520 video tokens
LEAN_SHARES = (16384 / 104_520, 4096 / 104_520)
#: latent (B, C, T, H, W) of 49 frames: stage-I 256x480 (the model's 270p), stage-II 1080p and 2K
LATENTS = {"270p": (1, 16, 13, 32, 60), "1080p": (1, 16, 13, 134, 240), "2K": (1, 16, 13, 180, 320)}
T5_XXL_PARAMS = 4_762_310_656  # T5-XXL encoder (t5xxl_fp16.safetensors), the host's text encoder
#: CUDA context, the sampler's latents and the host's own reserve, kept off the budget
RESERVE_BYTES = 0.8 * GB


def modes(video_tokens: int) -> dict:
    """name -> (plan at this size, share of the video tokens per chunk or None)."""
    lean = {f"lean (chunk {max(1, round(video_tokens * share))}, = {round(share * 104_520)} at 1080p)":
            (ForwardPlan(False, max(1, round(video_tokens * share))), share) for share in LEAN_SHARES}
    return {"batched": (ForwardPlan(True), None), "sequential": (ForwardPlan(False), None), **lean}


def params_of(config) -> int:
    """Parameters of the DiT (a DiTConfig) or of the VAE (a VAEConfig), counted on the meta device."""
    with torch.device("meta"):
        model = FlashVideoDiT(config) if isinstance(config, DiTConfig) else CogVideoXVAE(config)
        return sum(p.numel() for p in model.parameters())


def measure(layers: int, latent: tuple, say) -> list:
    """(mode, plan, share, peak bytes, bytes per token, max rel diff vs batched) for one guided step per mode."""
    config = DiTConfig(num_layers=layers, hidden_size=1920, stage2_embeddings=True)
    model = harness.random_dit(config)
    batch, channels, frames, height, width = latent
    x, t, ctx, conds = harness.dit_inputs(config, batch, (frames, channels, height, width))
    tokens = frames * (height // 2) * (width // 2) + harness.TEXT_TOKENS
    rows, reference = [], None
    with torch.no_grad():
        forward_pair(model, x, t, (ctx, torch.zeros_like(ctx)), ForwardPlan(False), **conds)  # RoPE table cached
        for name, (plan, share) in modes(tokens - harness.TEXT_TOKENS).items():
            start = time.perf_counter()
            with LiveTensorBytes() as probe:
                out = torch.cat(forward_pair(model, x, t, (ctx, torch.zeros_like(ctx)), plan, **conds))
            reference = out if reference is None else reference
            diff = float((out - reference).abs().max() / reference.abs().max())
            rows.append((name, plan, share, probe.peak, probe.peak / tokens, diff))
            say(f"  {name}: peak {probe.peak / 2**20:.0f} MiB, {probe.peak / tokens:.0f} B/token, "
                f"{time.perf_counter() - start:.1f} s, diff {diff:.1e}")
    return rows, tokens


def pipeline_rows(budget: float) -> list:
    """Per phase of the 1080p pipeline on a GPU of ``budget`` bytes: weights (bf16 / fp8), working memory, and
    the weights left off the GPU (streamed per layer by the host's partial loading)."""
    usable = budget - RESERVE_BYTES
    rows = []

    def dit_row(name, config, latent):
        for label, weight_bytes in (("bf16", 2), ("fp8", 1)):
            weights = params_of(config) * weight_bytes
            # as in ComfyUI: the host keeps the lean estimate free, loads what weights fit, and each forward then
            # takes the fastest plan that fits the memory left
            plan = plan_for(config, latent, torch.bfloat16, free_bytes=int(max(usable - weights, 0)))
            work = plan_bytes(config, latent, torch.bfloat16, plan)
            rows.append((f"{name}, {label} weights", weights, work, plan.mode + (f" {plan.chunk_tokens}" if plan.chunk_tokens else ""),
                         max(0.0, weights + work - usable)))

    def vae_row(name, direction, shape, overlap=SlicingOptions().tile_overlap):
        weights = params_of(OFFICIAL_VAE_CONFIG) * 2
        options = SlicingOptions(mode="auto", tile_overlap=overlap)
        plan = plan_slicing(OFFICIAL_VAE_CONFIG, direction, shape, torch.bfloat16, options, int(usable - weights))
        slices = f"{len(plan.time_chunks)} chunks x {len(plan.tiles_h)}x{len(plan.tiles_w)} tiles, overlap {overlap}"
        off = max(0.0, weights + plan.estimated_bytes - usable)
        rows.append((name, weights, plan.estimated_bytes, slices, off))
        return off

    rows.append(("T5-XXL encode (host, fp8 weights)", T5_XXL_PARAMS, 0.05 * GB, "226 tokens",
                 max(0.0, T5_XXL_PARAMS + 0.05 * GB - usable)))
    dit_row("stage I 270p step", STAGE1_CONFIG, LATENTS["270p"])
    vae_row("bridge: decode the 270p preview", "decode", LATENTS["270p"])
    vae_row("bridge: encode 49 x 1072x1920", "encode", (1, 3, 49, 1072, 1920))
    dit_row("stage II 1080p step", STAGE2_CONFIG, LATENTS["1080p"])
    if vae_row("decode 49 x 1072x1920", "decode", LATENTS["1080p"]):  # smaller tiles need a narrower blend band
        vae_row("decode 49 x 1072x1920, tile_overlap 8", "decode", LATENTS["1080p"], overlap=8)
    return rows


def render(measured, tokens, layers, latent, pipelines, elapsed) -> str:
    gib = lambda b: f"{b / GB:.2f}"  # noqa: E731
    lines = [
        "# DiT working memory per mode, and the 1080p pipeline on 8 GB", "",
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {elapsed:.0f} s. Written by `benchmarks/dit_memory.py`.", "",
        f"## Measured: one guided stage-II step, {layers} layers x width 1920, latent {latent[2:]} "
        f"({tokens} tokens per sample), fp32, CPU", "",
        "Peak bytes of tensors alive at once (`LiveTensorBytes`), per token of one sample; the 1080p / 2K columns "
        "scale the measured bytes per token to 104,746 / 187,426 tokens in bf16 (half the fp32 bytes); "
        "'planner' is `plan_bytes` for the same mode (bf16).", "",
        "| mode | peak MiB | bytes / token (fp32) | widths / token | 1080p bf16 GB | planner 1080p | 2K bf16 GB "
        "| planner 2K | max rel diff vs batched |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, plan, share, peak, per_token, diff in measured:
        video = {"1080p": 104_520, "2K": 187_200}
        at = {k: plan if share is None else ForwardPlan(False, round(share * n)) for k, n in video.items()}
        est = {k: plan_bytes(STAGE2_CONFIG, LATENTS[k], torch.bfloat16, at[k]) for k in video}
        scaled = {k: per_token / 2 * (n + harness.TEXT_TOKENS) for k, n in video.items()}
        lines.append(f"| {name} | {peak / 2**20:.0f} | {per_token:.0f} | {per_token / (4 * 1920):.2f} | "
                     f"{gib(scaled['1080p'])} | {gib(est['1080p'])} | {gib(scaled['2K'])} | {gib(est['2K'])} | {diff:.1e} |")
    lean = min(plan_bytes(STAGE2_CONFIG, LATENTS["1080p"], torch.bfloat16, p) for p in candidate_plans("lean"))
    lean_2k = min(plan_bytes(STAGE2_CONFIG, LATENTS["2K"], torch.bfloat16, p) for p in candidate_plans("lean"))
    lines += ["", f"Goal: 1080p stage-II forward <= 3 GB in the leanest mode: planner {gib(lean)} GB; "
              f"2K <= 5 GB: planner {gib(lean_2k)} GB.", ""]
    for budget, rows in pipelines:
        lines += [f"## Plan: 1080p pipeline (49 frames) on a {budget / GB:.0f} GB GPU", "",
                  f"Usable {(budget - RESERVE_BYTES) / GB:.1f} GB after {RESERVE_BYTES / GB:.1f} GB for the CUDA context, "
                  "latents and the host's reserve. 'Off GPU' = weights the host's partial loading streams per layer "
                  "(slower, same result).", "",
                  "| phase | weights GB | working GB | plan | off GPU GB |", "|---|---|---|---|---|"]
        for name, weights, work, plan, off in rows:
            lines.append(f"| {name} | {gib(weights)} | {gib(work)} | {plan} | {gib(off)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a small latent, no results file")
    parser.add_argument("--out", default=os.path.join(harness.RESULTS, "dit_memory.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    latent = (1, 16, 2, 16, 24) if args.quick else (1, 16, 3, 48, 80)
    start = time.perf_counter()
    print(f"measuring {args.layers} layers x 1920, latent {latent}")
    measured, tokens = measure(args.layers, latent, print)
    pipelines = [(budget, pipeline_rows(budget)) for budget in (8 * GB, 6 * GB)]
    text = render(measured, tokens, args.layers, latent, pipelines, time.perf_counter() - start)
    print(text)
    harness.write_results(text, None if args.quick else args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
