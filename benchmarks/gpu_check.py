#!/usr/bin/env python
"""One-command GPU check: time and peak memory of FlashVideo's heavy calls at real sizes, against the H100/H200
bf16 bound.

Not a test. Random real-width bf16 weights (no checkpoint needed), CUDA. Rows: a stage-I step at 270p, a stage-II
step at 1080p with each attention kernel (sdpa, flash and sage when importable, the block-sparse 7x11x11 window),
the lean memory mode, the same step under an 8 GB memory limit, a stage-II step at 2K, a VAE decode of a 49-frame
1080p latent (reference slicing and auto), and the end-to-end estimate they imply (50 stage-I steps, 5 stage-II
steps, the bridge and the decode). Per row: seconds of the timed call (after a warm-up), peak memory
(``torch.cuda.max_memory_allocated`` above what the weights and inputs hold), the FLOPs and the ratio of the time
to ``FLOPs / 989 TFLOP/s`` (the H100/H200 dense bf16 peak). A failing row is reported, not fatal. Fits in about
8 minutes on one H100/H200; writes a markdown table.

``--cpu-smoke`` runs the same code on tiny configs on the CPU in seconds (CI runs it so this script never rots).

    python benchmarks/gpu_check.py                         # -> benchmarks/results/gpu_check.md
    python benchmarks/gpu_check.py --cpu-smoke --out /tmp/gpu_check_smoke.md
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import os
import platform
import statistics
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import dit_benchmark as db  # noqa: E402  (the shared harness)

sys.path.insert(0, db.ROOT)

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from flashvideo_core.dit.config import STAGE1_CONFIG, STAGE2_CONFIG, DiTConfig  # noqa: E402
from flashvideo_core.dit.guidance import forward_pair  # noqa: E402
from flashvideo_core.dit.memory import ForwardPlan, plan_forward  # noqa: E402
from flashvideo_core.dit.model import FlashVideoDiT  # noqa: E402
from flashvideo_core.dit.window_attention import DEFAULT_WINDOW  # noqa: E402
from flashvideo_core.dit.window_blocks import evaluated_fraction, flex_available  # noqa: E402
from flashvideo_core.memory_probe import LiveTensorBytes  # noqa: E402
from flashvideo_core.tiny import TINY_VAE_CONFIG  # noqa: E402
from flashvideo_core.vae.config import OFFICIAL_VAE_CONFIG  # noqa: E402
from flashvideo_core.vae.model import CogVideoXVAE  # noqa: E402
from flashvideo_core.vae.slicing import SlicingOptions, decode_sliced  # noqa: E402

GIB = 2**30
LIMIT_GB = 8
#: (B, C, T, H, W) latents of 49 frames
REAL_SIZES = {"stage1": (1, 16, 13, 32, 60), "1080p": (1, 16, 13, 134, 240), "2K": (1, 16, 13, 180, 320)}
SMOKE_SIZES = {"stage1": (1, 16, 2, 8, 12), "1080p": (1, 16, 3, 16, 24), "2K": (1, 16, 3, 16, 32)}
SMOKE_DIT = {"stage1": DiTConfig(num_layers=2, hidden_size=64, text_hidden_size=32),
             "stage2": DiTConfig(num_layers=2, hidden_size=64, text_hidden_size=32, stage2_embeddings=True)}
STAGE1_STEPS, STAGE2_STEPS = 50, 5


class Device:
    """Timing and peak memory on CUDA, or their CPU stand-ins for the smoke run."""

    def __init__(self, cpu_smoke: bool):
        self.cuda = not cpu_smoke
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.dtype = torch.bfloat16 if self.cuda else torch.float32

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def measure(self, call, repeats: int, count_flops: bool) -> tuple:
        """(median seconds of ``repeats`` timed calls after one warm-up, peak bytes above the start, FLOPs of the
        warm-up when ``count_flops``)."""
        counter = FlopCounterMode(display=False) if count_flops else None
        if counter is not None:
            with counter:
                call()
        else:
            call()
        self.sync()
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        times, peak = [], 0
        for _ in range(repeats):
            probe = LiveTensorBytes() if not self.cuda else None
            start = time.perf_counter()
            if probe is not None:
                with probe:
                    call()
                peak = max(peak, probe.peak)
            else:
                call()
            self.sync()
            times.append(time.perf_counter() - start)
        if self.cuda:
            peak = torch.cuda.max_memory_allocated() - base
        return statistics.median(times), peak, counter.get_total_flops() if counter is not None else 0


def dit_flops(config: DiTConfig, latent: tuple, window=None) -> int:
    """Analytic FLOPs of one guided step (both CFG halves); window attention counts the pairs the block-sparse
    kernel evaluates."""
    batch, _, frames, height, width = latent
    video = frames * (height // 2) * (width // 2)
    parts = db.dit_flops(config.num_layers, config.hidden_size, video, db.TEXT_TOKENS, 2 * batch,
                         text_dim=config.text_hidden_size, head_dim=config.head_dim, stage2=config.stage2_embeddings)
    if window is None:
        return parts["total"]
    return parts["linear"] + parts["attn"] * evaluated_fraction(db.TEXT_TOKENS, (frames, height // 2, width // 2), window)


def random_dit(config: DiTConfig, dev: Device) -> FlashVideoDiT:
    torch.manual_seed(0)
    model = FlashVideoDiT(config, device=dev.device, dtype=dev.dtype).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02)
    return model


def dit_step(model, latent: tuple, dev: Device, plan: ForwardPlan, window=None):
    """One guided step (cond + zero uncond) as a closure, with its inputs on the device."""
    batch, channels, frames, height, width = latent
    gen = torch.Generator(device=dev.device).manual_seed(1)
    x = torch.randn(batch, frames, channels, height, width, generator=gen, device=dev.device, dtype=dev.dtype)
    ctx = torch.randn(batch, db.TEXT_TOKENS, model.config.text_hidden_size, generator=gen, device=dev.device,
                      dtype=dev.dtype)
    t = torch.full((batch,), 500.0, device=dev.device)
    conds = {}
    if model.config.stage2_embeddings:
        conds = {"latent_frames": torch.full((batch,), float(frames), device=dev.device),
                 "ref_step": torch.full((batch,), 675.0, device=dev.device)}
    if window is not None:
        conds["window"] = window

    @torch.no_grad()
    def call():
        return forward_pair(model, x, t, (ctx, torch.zeros_like(ctx)), plan, **conds)

    return call


def bound_ratio(seconds: float, flops: int) -> str:
    return f"{seconds / (flops / db.H100_BF16_DENSE):.2f}" if flops else "-"


def run_rows(dev: Device, repeats: int, say) -> list:
    sizes = REAL_SIZES if dev.cuda else SMOKE_SIZES
    rows = []

    def row(name, build, flops=None):
        """Measure ``build()``'s call; FLOPs given, or counted during the warm-up."""
        say(f"- {name}")
        try:
            seconds, peak, counted = dev.measure(build(), repeats, count_flops=flops is None)
            flops = flops if flops is not None else counted
            rows.append(dict(name=name, seconds=seconds, peak=peak, flops=flops, note=""))
        except Exception as error:  # report and go on: one GPU run should show as much as it can
            traceback.print_exc()
            rows.append(dict(name=name, seconds=None, peak=None, flops=0, note=f"failed: {type(error).__name__}: "
                             f"{str(error).splitlines()[0][:120] if str(error) else ''}"))
        finally:
            gc.collect()
            if dev.cuda:
                torch.cuda.empty_cache()

    config1 = STAGE1_CONFIG if dev.cuda else SMOKE_DIT["stage1"]
    models = {"stage1": random_dit(config1, dev)}
    row("stage I step, 270p (CFG batch 2)", lambda: dit_step(models["stage1"], sizes["stage1"], dev, ForwardPlan(True)),
        dit_flops(config1, sizes["stage1"]))
    models.clear()
    gc.collect()

    config2 = STAGE2_CONFIG if dev.cuda else SMOKE_DIT["stage2"]
    stage2 = models["stage2"] = random_dit(config2, dev)
    batched, full_flops = ForwardPlan(True), dit_flops(config2, sizes["1080p"])
    kernels = ["sdpa"] + [name for name, module in (("flash", "flash_attn"), ("sage", "sageattention"))
                          if importlib.util.find_spec(module)]
    for kernel in kernels:
        def build(kernel=kernel):
            stage2.set_attention_backend(kernel)
            return dit_step(stage2, sizes["1080p"], dev, batched)
        row(f"stage II step, 1080p, {kernel} (CFG batch 2)", build, full_flops)
    stage2.set_attention_backend("sdpa")
    window = DEFAULT_WINDOW if dev.cuda else (1, 5, 5)
    kernel = "block-sparse FlexAttention" if flex_available(dev.device) else "tile loop (no CUDA)"
    row(f"stage II step, 1080p, window {'x'.join(map(str, window))}, {kernel}",
        lambda: dit_step(stage2, sizes["1080p"], dev, batched, window=window), dit_flops(config2, sizes["1080p"], window))
    lean = plan_forward(config2, sizes["1080p"], dev.dtype, 1, "lean")  # the leanest plan
    row(f"stage II step, 1080p, lean (one after the other, chunks of {lean.chunk_tokens})",
        lambda: dit_step(stage2, sizes["1080p"], dev, lean), full_flops)
    if dev.cuda:
        total = torch.cuda.get_device_properties(dev.device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, LIMIT_GB * GIB / total))
        try:
            plan = plan_forward(config2, sizes["1080p"], dev.dtype, LIMIT_GB * GIB - torch.cuda.memory_allocated())
            row(f"stage II step, 1080p, under an {LIMIT_GB} GB limit ({plan.mode}), bf16 weights on the GPU",
                lambda: dit_step(stage2, sizes["1080p"], dev, plan), full_flops)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
    row("stage II step, 2K, sdpa (CFG batch 2)", lambda: dit_step(stage2, sizes["2K"], dev, batched),
        dit_flops(config2, sizes["2K"]))
    stage2 = None
    models.clear()
    gc.collect()

    vae_config = OFFICIAL_VAE_CONFIG if dev.cuda else TINY_VAE_CONFIG
    torch.manual_seed(0)
    vae = CogVideoXVAE(vae_config).to(dev.device, dev.dtype).eval()
    z = torch.randn(sizes["1080p"], device=dev.device, dtype=dev.dtype)
    for mode in ("reference", "auto"):
        options = SlicingOptions(mode=mode, stage=2)
        row(f"VAE decode, 49-frame 1080p latent, {mode} slicing",
            lambda options=options: (lambda: decode_sliced(vae, z, options)))
    return rows


def end_to_end(rows: list) -> dict:
    """Seconds of a whole 1080p run: 50 stage-I steps + 5 stage-II steps (sdpa) + the decode (reference), the
    bridge counted as one more decode (its encode at 1080p costs about what the decode does)."""
    by_name = {r["name"]: r for r in rows if r["seconds"] is not None}
    pick = lambda prefix: next((r for n, r in by_name.items() if n.startswith(prefix)), None)  # noqa: E731
    parts = [(pick("stage I step"), STAGE1_STEPS), (pick("stage II step, 1080p, sdpa"), STAGE2_STEPS),
             (pick("VAE decode, 49-frame 1080p latent, reference"), 2)]
    if any(r is None for r, _ in parts):
        return dict(name="end to end, 1080p (estimate)", seconds=None, peak=None, flops=0, note="a part failed")
    return dict(name="end to end, 1080p (estimate: 50 + 5 steps, bridge, decode)",
                seconds=sum(r["seconds"] * n for r, n in parts), peak=max(r["peak"] for r, _ in parts),
                flops=sum(r["flops"] * n for r, n in parts), note="")


def render(rows: list, dev: Device, elapsed: float) -> str:
    if dev.cuda:
        name = torch.cuda.get_device_name(dev.device)
        where = f"{name}, CUDA {torch.version.cuda}, bf16 weights"
    else:
        where = f"CPU smoke run ({platform.machine()}), tiny configs, fp32: checks the script, not the speed"
    lines = ["# GPU check", "",
             f"{datetime.date.today()}, {where}, torch {torch.__version__}, {elapsed:.0f} s. "
             "Written by `benchmarks/gpu_check.py`. Peak = memory allocated during the timed call above what was "
             "allocated before it (weights and inputs excluded); bound = FLOPs / 989 TFLOP/s (H100/H200 dense bf16); "
             "ratio = time / bound.", "",
             "| row | time | peak GiB | FLOPs | ratio to bound | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        seconds = db.fmt_s(r["seconds"]) if r["seconds"] is not None else "-"
        peak = f"{r['peak'] / GIB:.2f}" if r["peak"] is not None else "-"
        ratio = bound_ratio(r["seconds"], r["flops"]) if r["seconds"] is not None else "-"
        lines.append(f"| {r['name']} | {seconds} | {peak} | {db.fmt_flops(r['flops']) if r['flops'] else '-'} | "
                     f"{ratio} | {r['note']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny configs on the CPU, seconds")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per row after the warm-up")
    parser.add_argument("--out", default=None, help="markdown file (default: results/gpu_check.md on a GPU)")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU, or pass --cpu-smoke", file=sys.stderr)
        return 2
    dev = Device(args.cpu_smoke)
    start = time.perf_counter()
    rows = run_rows(dev, max(1, args.repeats), print)
    rows.append(end_to_end(rows))
    text = render(rows, dev, time.perf_counter() - start)
    print(text)
    out = args.out or (None if args.cpu_smoke else os.path.join(HERE, "results", "gpu_check.md"))
    db.write_results(text, out)
    return 0 if all(r["seconds"] is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
