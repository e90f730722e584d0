#!/usr/bin/env python
"""One-command GPU check: time and peak memory of FlashVideo's heavy calls at real sizes, against the H100/H200
bf16 bound.

Not a test. Random real-width bf16 weights (no checkpoint needed), CUDA. Rows: a stage-I step at 270p, a stage-II
step at 1080p with each attention kernel (sdpa, flash and sage when importable, the block-sparse 7x11x11 window),
the lean memory mode, the same step under an 8 GB memory limit, a VAE decode of a 49-frame 1080p latent (reference
slicing and auto), the bridge's 1080p encode, a stage-II step at 2K, the enhancer, with several GPUs a
sequence-parallel 2K step and a CFG split of stage I (skipped with a line on one GPU), and the end-to-end estimate they imply (50
stage-I steps, 5 stage-II steps, the bridge and the decode). Per row: seconds of the timed call (after a warm-up), peak memory
(``torch.cuda.max_memory_allocated`` above what the weights and inputs hold), the FLOPs and the ratio of the time
to ``FLOPs / 989 TFLOP/s`` (the H100/H200 dense bf16 peak). A failing row is reported, not fatal. Fits in about
8 minutes on one H100/H200; writes the markdown table after every row, and ``--deadline S`` skips the rows not
started within S seconds, so a short lease still leaves a table.

``--cpu-smoke`` runs the same code on tiny configs on the CPU in seconds (CI runs it so this script never rots).

    python benchmarks/gpu_check.py                         # -> benchmarks/results/gpu_check.md
    python benchmarks/gpu_check.py --cpu-smoke --out /tmp/gpu_check_smoke.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.util
import os
import platform
import re
import statistics
import sys
import time
import traceback

import harness
import torch
from torch.utils.flop_counter import FlopCounterMode

from flashvideo_core.constants import LATENT_SCALE_STAGE2
from flashvideo_core.dit.config import STAGE1_CONFIG, STAGE2_CONFIG, DiTConfig
from flashvideo_core.dit.guidance import forward_pair
from flashvideo_core.dit.memory import ForwardPlan, plan_for
from flashvideo_core.dit.window_attention import DEFAULT_WINDOW, window_attention
from flashvideo_core.dit.window_blocks import evaluated_fraction, flex_available
from flashvideo_core.enhance.enhancer import enhance_video, plan_enhance
from flashvideo_core.enhance.windows import plan_windows
from flashvideo_core.stage2.refiner import refine_stage2
from memory_probe import LiveTensorBytes
from flashvideo_core.tiny import TINY_VAE_CONFIG
from flashvideo_core.vae.config import OFFICIAL_VAE_CONFIG
from flashvideo_core.vae.model import CogVideoXVAE
from flashvideo_core.vae.slicing import SlicingOptions, decode_sliced, encode_sliced

GIB = 2**30
LIMIT_GB = 8
#: (B, C, T, H, W) latents of 49 frames
REAL_SIZES = {"stage1": (1, 16, 13, 32, 60), "1080p": (1, 16, 13, 134, 240), "2K": (1, 16, 13, 180, 320)}
SMOKE_SIZES = {"stage1": (1, 16, 2, 8, 12), "1080p": (1, 16, 3, 16, 24), "2K": (1, 16, 3, 16, 32)}
SMOKE_DIT = {"stage1": DiTConfig(num_layers=2, hidden_size=64, head_dim=32, text_hidden_size=32),
             "stage2": DiTConfig(num_layers=2, hidden_size=64, head_dim=32, text_hidden_size=32, stage2_embeddings=True)}
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

    def measure(self, call, repeats: int, count_flops: bool, warmup=None) -> tuple:
        """(median seconds of ``repeats`` timed calls after one warm-up, peak bytes above the start, FLOPs of the
        warm-up when ``count_flops``). ``warmup`` replaces the warm-up by a cheaper call (the VAE rows warm up on a
        small latent: a second 1080p decode would cost a minute of a short GPU lease); FLOPs are then counted
        during the first timed call."""
        counter = FlopCounterMode(display=False) if count_flops else None
        if warmup is not None:
            warmup()
        elif counter is not None:
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
        for index in range(repeats):
            probe = LiveTensorBytes() if not self.cuda else None
            counting = counter if warmup is not None and index == 0 else None
            start = time.perf_counter()
            with counting or contextlib.nullcontext(), probe or contextlib.nullcontext():
                call()
            if probe is not None:
                peak = max(peak, probe.peak)
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
    parts = harness.dit_flops(config.num_layers, config.hidden_size, video, harness.TEXT_TOKENS, 2 * batch,
                         text_dim=config.text_hidden_size, stage2=config.stage2_embeddings)
    if window is None:
        return parts["total"]
    return parts["linear"] + parts["attn"] * evaluated_fraction(harness.TEXT_TOKENS, (frames, height // 2, width // 2), window)


def dit_step(model, latent: tuple, dev: Device, plan: ForwardPlan, window=None):
    """One guided step (cond + zero uncond) as a closure, with its inputs on the device."""
    batch, channels, frames, height, width = latent
    x, t, ctx, conds = harness.dit_inputs(model.config, batch, (frames, channels, height, width), dev.device, dev.dtype)
    if window is not None:
        conds["window"] = window

    @torch.no_grad()
    def call():
        return forward_pair(model, x, t, (ctx, torch.zeros_like(ctx)), plan, **conds)

    return call


def window_kernel_check(dev: Device) -> str:
    """Largest difference between the block-sparse window kernel and the tile loop (the masked definition) on a
    small grid: the CUDA kernel's correctness, which no CPU test reaches (the CPU runs Inductor's kernel)."""
    grid, text_len = ((13, 30, 40), 226) if dev.cuda else ((3, 6, 8), 7)
    window = DEFAULT_WINDOW if dev.cuda else (3, 3, 5)
    gen = torch.Generator(device=dev.device).manual_seed(2)
    q, k, v = (torch.randn(1, 2, text_len + grid[0] * grid[1] * grid[2], 64, generator=gen, device=dev.device)
               for _ in range(3))
    parts = []
    for dtype in (torch.float32, torch.bfloat16):
        args = (q.to(dtype), k.to(dtype), v.to(dtype), text_len, grid, window)
        with torch.no_grad():
            reference = window_attention(*args, kernel="tiles").float()
            kernel = window_attention(*args, kernel="flex").float()
        parts.append(f"{str(dtype).split('.')[-1]} max abs diff {(kernel - reference).abs().max().item():.2e}")
    return f"check at {'x'.join(map(str, grid))}, window {'x'.join(map(str, window))}: " + ", ".join(parts)


def bound_ratio(seconds: float, flops: int) -> str:
    return f"{seconds / (flops / harness.H100_BF16_DENSE):.2f}" if flops else "-"


class Table:
    """The rows measured so far. A row not started by ``deadline`` (a ``time.perf_counter`` value) is listed as
    skipped, and ``on_row(rows)`` runs after each row, so a lease that ends early still leaves a table."""

    def __init__(self, dev: Device, repeats: int, say, deadline: float, on_row):
        self.dev, self.repeats, self.say, self.deadline, self.on_row = dev, repeats, say, deadline, on_row
        self.rows = []

    def _record(self, name: str, measure):
        self.say(f"- {name}")
        if time.perf_counter() > self.deadline:
            self.rows.append(dict(name=name, seconds=None, peak=None, flops=0, note="skipped: past --deadline"))
        else:
            try:
                self.rows.append(dict(name=name, **measure()))
            except Exception as error:  # report and go on: one GPU run should show as much as it can
                traceback.print_exc()
                first_line = str(error).splitlines()[0][:120] if str(error) else ""
                self.rows.append(dict(name=name, seconds=None, peak=None, flops=0,
                                      note=f"failed: {type(error).__name__}: {first_line}"))
            finally:
                gc.collect()
                if self.dev.cuda:
                    torch.cuda.empty_cache()
        self.say(f"  {self.rows[-1]}")
        if self.on_row is not None:
            self.on_row(self.rows)

    def row(self, name: str, build, flops=None, warmup=None, note=None):
        """Time ``build()``'s call; FLOPs given, or counted during the warm-up (or the first timed call when a
        cheaper ``warmup`` builder is given); ``note(call)`` may add a remark after the timing."""
        def measure():
            call = build()
            seconds, peak, counted = self.dev.measure(call, self.repeats, count_flops=flops is None,
                                                      warmup=warmup() if warmup is not None else None)
            return dict(seconds=seconds, peak=peak, flops=flops if flops is not None else counted,
                        note=note(call) if note is not None else "")
        self._record(name, measure)

    def external(self, name: str, measure):
        """A row measured elsewhere (other processes): ``measure()`` returns seconds, peak, flops and note."""
        self._record(name, measure)

    def skip(self, name: str, why: str):
        self.say(f"- {name}: {why}")
        self.rows.append(dict(name=name, seconds=None, peak=None, flops=0, note=f"skipped: {why}"))
        if self.on_row is not None:
            self.on_row(self.rows)

    def check(self, name: str, compare):
        """A correctness row: ``compare()`` returns the note (``check at ...``), nothing is timed."""
        self._record(name, lambda: dict(seconds=None, peak=None, flops=0, note=compare()))


def window_rows(table: Table, dev: Device, sizes: dict):
    table.check("window attention: block-sparse kernel vs tile loop (fp32, bf16)", lambda: window_kernel_check(dev))


def stage1_rows(table: Table, dev: Device, sizes: dict):
    config = STAGE1_CONFIG if dev.cuda else SMOKE_DIT["stage1"]
    model = harness.random_dit(config, dev.device, dev.dtype)
    table.row("stage I step, 270p (CFG batch 2)", lambda: dit_step(model, sizes["stage1"], dev, ForwardPlan(True)),
              dit_flops(config, sizes["stage1"]))


def stage2_rows(table: Table, dev: Device, sizes: dict, resolutions=("1080p",)):
    config = STAGE2_CONFIG if dev.cuda else SMOKE_DIT["stage2"]
    stage2 = harness.random_dit(config, dev.device, dev.dtype)
    batched = ForwardPlan(True)
    if "1080p" in resolutions:
        full_flops = dit_flops(config, sizes["1080p"])
        kernels = ["sdpa"] + [name for name, module in (("flash", "flash_attn"), ("sage", "sageattention"))
                              if importlib.util.find_spec(module)]
        for kernel in kernels:
            def build(kernel=kernel):
                stage2.set_attention_backend(kernel)
                return dit_step(stage2, sizes["1080p"], dev, batched)
            table.row(f"stage II step, 1080p, {kernel} (CFG batch 2)", build, full_flops)
        stage2.set_attention_backend("sdpa")
        window = DEFAULT_WINDOW if dev.cuda else (1, 5, 5)
        kernel = "block-sparse FlexAttention" if flex_available(dev.device) else "tile loop (no CUDA)"
        table.row(f"stage II step, 1080p, window {'x'.join(map(str, window))}, {kernel}",
                  lambda: dit_step(stage2, sizes["1080p"], dev, batched, window=window),
                  dit_flops(config, sizes["1080p"], window))
        lean = plan_for(config, sizes["1080p"], dev.dtype, mode="lean", free_bytes=1)  # the leanest plan
        table.row(f"stage II step, 1080p, lean (one after the other, chunks of {lean.chunk_tokens})",
                  lambda: dit_step(stage2, sizes["1080p"], dev, lean), full_flops)
        if dev.cuda:
            total = torch.cuda.get_device_properties(dev.device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, LIMIT_GB * GIB / total))
            try:
                plan = plan_for(config, sizes["1080p"], dev.dtype, free_bytes=LIMIT_GB * GIB - torch.cuda.memory_allocated())
                table.row(f"stage II step, 1080p, under an {LIMIT_GB} GB limit ({plan.mode}), bf16 weights on the GPU",
                          lambda: dit_step(stage2, sizes["1080p"], dev, plan), full_flops)
            finally:
                torch.cuda.set_per_process_memory_fraction(1.0)
    if "2K" in resolutions:
        table.row("stage II step, 2K, sdpa (CFG batch 2)", lambda: dit_step(stage2, sizes["2K"], dev, batched),
                  dit_flops(config, sizes["2K"]))


def vae_rows(table: Table, dev: Device, sizes: dict):
    vae = random_vae(dev)
    z = torch.randn(sizes["1080p"], device=dev.device, dtype=dev.dtype)
    small_z = z[:, :, :3, :16, :16].contiguous()
    for mode in ("reference", "auto"):
        options = SlicingOptions(mode=mode, stage=2)
        table.row(f"VAE decode, 49-frame 1080p latent, {mode} slicing",
                  lambda options=options: (lambda: decode_sliced(vae, z, options)),
                  warmup=lambda options=options: (lambda: decode_sliced(vae, small_z, options)))
    batch, _, frames, height, width = sizes["1080p"]
    video = torch.rand(batch, 3, 4 * (frames - 1) + 1, 8 * height, 8 * width, device=dev.device, dtype=dev.dtype) * 2 - 1
    small_video = video[:, :, :9, :128, :128].contiguous()
    options = SlicingOptions(mode="reference")
    table.row("VAE encode, 49-frame 1080p video, reference slicing (the bridge)",
              lambda: (lambda: encode_sliced(vae, video, options)),
              warmup=lambda: (lambda: encode_sliced(vae, small_video, options)))


def random_vae(dev: Device) -> CogVideoXVAE:
    torch.manual_seed(0)
    return CogVideoXVAE(OFFICIAL_VAE_CONFIG if dev.cuda else TINY_VAE_CONFIG).to(dev.device, dev.dtype).eval()


def kernel_rows(table: Table, dev: Device, sizes: dict):
    """Choices below the model: PyTorch's SDPA kernels at the stage-II attention shapes (attention is ~90 % of a
    1080p step's FLOPs) and cuDNN autotuning for the VAE's 3D convolutions (one reference decode chunk)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    config = STAGE2_CONFIG if dev.cuda else SMOKE_DIT["stage2"]
    heads, head_dim = config.num_heads, config.head_dim
    backends = [("default", None), ("flash", SDPBackend.FLASH_ATTENTION)]
    if dev.cuda:
        backends += [("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)]
    for resolution in ("1080p", "2K"):
        _, _, frames, height, width = sizes[resolution]
        seq = harness.TEXT_TOKENS + frames * (height // 2) * (width // 2)
        gen = torch.Generator(device=dev.device).manual_seed(3)
        q, k, v = (torch.randn(2, heads, seq, head_dim, generator=gen, device=dev.device, dtype=dev.dtype) for _ in range(3))
        reference = {}
        for label, backend in backends:
            def build(backend=backend):
                def call():
                    with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
                        return torch.nn.functional.scaled_dot_product_attention(q, k, v)
                return call

            def note(call):
                out = call().float()
                if not reference:
                    reference["out"] = out
                    return ""
                return f"max abs diff to default {(out - reference['out']).abs().max().item():.1e}"
            table.row(f"attention {resolution} (CFG batch 2, {heads} heads, {seq} tokens), SDPA {label}", build,
                      4 * 2 * heads * seq * seq * head_dim, note=note)
        q = k = v = None
        reference.clear()

    vae = random_vae(dev)
    z = torch.randn(sizes["1080p"], device=dev.device, dtype=dev.dtype)[:, :, :3].contiguous()
    options = SlicingOptions(mode="reference", stage=2)
    for benchmark, layout in ((False, torch.contiguous_format), (True, torch.contiguous_format),
                              (True, torch.channels_last_3d)):
        def build(benchmark=benchmark, layout=layout):
            for param in vae.parameters():  # the 3D convolution kernels take the layout
                if param.dim() == 5:
                    param.data = param.data.contiguous(memory_format=layout)
            z_in = z.contiguous(memory_format=layout)

            def call():
                previous = torch.backends.cudnn.benchmark
                torch.backends.cudnn.benchmark = benchmark
                try:
                    return decode_sliced(vae, z_in, options)
                finally:
                    torch.backends.cudnn.benchmark = previous
            return call
        table.row(f"VAE decode, first reference chunk (3 latents, 1x2 tiles), cudnn.benchmark {benchmark}, "
                  f"{str(layout).split('.')[-1]}", build)


def enhance_rows(table: Table, dev: Device, sizes: dict):
    """The enhancer (flashvideo_core/enhance) from a 480x270 clip to 1920x1080 (run at 1920x1088), 5 Euler steps,
    colour fix wavelet, random weights: a 49-frame clip (one window) and an 89-frame clip (two windows sharing
    9 frames). Frames per second, and whether the peak grows with the clip (it should not)."""
    config = STAGE2_CONFIG if dev.cuda else SMOKE_DIT["stage2"]
    model = harness.random_dit(config, dev.device, dev.dtype)
    vae = random_vae(dev)
    context = torch.randn(1, harness.TEXT_TOKENS, config.text_hidden_size, device=dev.device)
    source, resolution = ((270, 480), "1080p") if dev.cuda else ((24, 40), (32, 48))

    def refine(latent):
        return refine_stage2(model, context, latent * LATENT_SCALE_STAGE2, 675, STAGE2_STEPS) / LATENT_SCALE_STAGE2

    def build(frames, size=source, target=resolution):
        plan = plan_enhance(frames, size, target, 8, 675, 0, "wavelet")
        clip = (torch.rand(frames, *size, 3) * 255).to(torch.uint8)
        return lambda: enhance_video(vae, iter(clip), plan, refine, lambda out: None, SlicingOptions())

    for frames in (49, 89):
        windows = len(plan_windows(frames, 8))
        table.row(f"enhance, {frames} frames 480x270 -> 1920x1080 ({windows} window{'s' * (windows > 1)}, "
                  f"{STAGE2_STEPS} steps)", lambda frames=frames: build(frames), flops=0,
                  warmup=lambda: build(5, (16, 16), (32, 32)),
                  note=lambda call, frames=frames: f"{frames} frames")


def sequence_parallel_step(processes: int, size: str, dev: Device, repeats: int) -> dict:
    """``parallel_step.py`` under torchrun over ``processes`` GPUs (CPU processes with gloo in the smoke run)."""
    import json
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               os.path.join(os.path.dirname(os.path.abspath(__file__)), "parallel_step.py"), "--size", size,
               "--repeats", str(repeats)] + ([] if dev.cuda else ["--cpu-smoke"])
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    result = next((line[7:] for line in run.stdout.splitlines() if line.startswith("RESULT ")), None)
    if run.returncode != 0 or result is None:
        lines = [line.strip() for line in run.stderr.splitlines() if line.strip() and not set(line.strip()) <= set("=-")]
        causes = [line for line in lines if re.match(r"\[rank\d+\]: \w[\w.]*(Error|Exception)", line)]
        causes = causes or [line for line in lines if "exitcode" in line or "error" in line.lower()] or lines or [""]
        raise RuntimeError(f"torchrun exited {run.returncode}: {' | '.join(causes[-3:])[:400]}")
    return json.loads(result)


def cfg_split_step(config: DiTConfig, latent: tuple, dev: Device, devices: list):
    """Cond on one device and the zero uncond on another at once, each with its own copy of the model: what the
    host's MultiGPU CFG Split does with a model that samples through its conditioning batches."""
    from concurrent.futures import ThreadPoolExecutor

    halves = []
    for device, zero in zip(devices, (False, True)):
        model = harness.random_dit(config, device, dev.dtype)
        batch, channels, frames, height, width = latent
        x, t, ctx, conds = harness.dit_inputs(config, batch, (frames, channels, height, width), device, dev.dtype)
        halves.append((model, x, t, torch.zeros_like(ctx) if zero else ctx, conds))
    pool = ThreadPoolExecutor(len(devices))

    @torch.no_grad()
    def forward(half):
        model, x, t, ctx, conds = half
        out = model(x, t, ctx, **conds)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        return out

    return lambda: [f.result() for f in [pool.submit(forward, half) for half in halves]]


def multigpu_rows(table: Table, dev: Device, sizes: dict):
    """Several GPUs (docs/PARALLEL.md): a stage-II step at 2K sequence-parallel over 2, 4 and 8 GPUs (as many as
    there are), and a stage-I step with cond and uncond on two GPUs. On one GPU the rows are listed as skipped;
    the smoke run uses 2 CPU processes (gloo) and 2 threads."""
    count = torch.cuda.device_count() if dev.cuda else 2
    unit = "GPUs" if dev.cuda else "CPU processes"
    if count < 2:
        table.skip("stage II step, 2K, sequence-parallel over N GPUs", f"needs 2 or more GPUs, {count} here")
        table.skip("stage I step, 270p, cond and uncond on 2 GPUs (CFG split)", f"needs 2 or more GPUs, {count} here")
        return
    config = STAGE2_CONFIG if dev.cuda else SMOKE_DIT["stage2"]
    for processes in [n for n in (2, 4, 8) if n <= count]:
        def measure(processes=processes):
            note = f"largest peak of {processes} processes"
            try:
                result = sequence_parallel_step(processes, "2K", dev, table.repeats)
            except RuntimeError as error:  # a launch can fail on its own (a port taken): one more, and say so
                table.say(f"  first launch failed, launching again: {error}")
                result = sequence_parallel_step(processes, "2K", dev, table.repeats)
                note += f"; launched twice, the first failed: {str(error)[:160]}"
            return dict(seconds=result["seconds"], peak=result["peak"], flops=dit_flops(config, sizes["2K"]),
                        note=note)
        table.external(f"stage II step, 2K, sequence-parallel over {processes} {unit} (CFG batch 2)", measure)
    stage1 = STAGE1_CONFIG if dev.cuda else SMOKE_DIT["stage1"]
    devices = [torch.device("cuda", 0), torch.device("cuda", 1)] if dev.cuda else [dev.device, dev.device]
    table.row(f"stage I step, 270p, cond and uncond on 2 {'GPUs' if dev.cuda else 'CPU threads'} (CFG split)",
              lambda: cfg_split_step(stage1, sizes["stage1"], dev, devices), dit_flops(stage1, sizes["stage1"]),
              note=lambda call: "peak on the first device")


GROUPS = {"window": window_rows, "stage1": stage1_rows, "stage2": stage2_rows, "vae": vae_rows,
          "2K": lambda table, dev, sizes: stage2_rows(table, dev, sizes, resolutions=("2K",)), "kernels": kernel_rows, "enhance": enhance_rows,
          "multigpu": multigpu_rows}


def run_rows(dev: Device, repeats: int, say, deadline: float = float("inf"), on_row=None, groups=tuple(GROUPS)) -> list:
    """The rows of ``groups``, in the order of ``GROUPS`` (most telling first, the slow 2K step last)."""
    sizes = REAL_SIZES if dev.cuda else SMOKE_SIZES
    table = Table(dev, repeats, say, deadline, on_row)
    for name, group in GROUPS.items():
        if name in groups:
            group(table, dev, sizes)
            gc.collect()
    return table.rows


def end_to_end(rows: list) -> dict:
    """Seconds of a whole 1080p run: 50 stage-I steps + 5 stage-II steps (sdpa) + the bridge's encode + the decode
    (reference slicing); the bridge counts as one more decode when its encode row is missing."""
    by_name = {r["name"]: r for r in rows if r["seconds"] is not None}
    pick = lambda prefix: next((r for n, r in by_name.items() if n.startswith(prefix)), None)  # noqa: E731
    decode, encode = pick("VAE decode, 49-frame 1080p latent, reference"), pick("VAE encode, 49-frame 1080p")
    parts = [(pick("stage I step"), STAGE1_STEPS), (pick("stage II step, 1080p, sdpa"), STAGE2_STEPS),
             (decode, 1), (encode or decode, 1)]
    if any(r is None for r, _ in parts):
        return dict(name="end to end, 1080p (estimate)", seconds=None, peak=None, flops=0, note="a part failed")
    return dict(name="end to end, 1080p (estimate: 50 + 5 steps, bridge, decode)",
                seconds=sum(r["seconds"] * n for r, n in parts), peak=max(r["peak"] for r, _ in parts),
                flops=sum(r["flops"] * n for r, n in parts), note="" if encode else "bridge counted as a decode")


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
        seconds = harness.fmt_s(r["seconds"]) if r["seconds"] is not None else "-"
        peak = f"{r['peak'] / GIB:.2f}" if r["peak"] is not None else "-"
        ratio = bound_ratio(r["seconds"], r["flops"]) if r["seconds"] is not None else "-"
        lines.append(f"| {r['name']} | {seconds} | {peak} | {harness.fmt_flops(r['flops']) if r['flops'] else '-'} | "
                     f"{ratio} | {r['note']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny configs on the CPU, seconds")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per row after the warm-up")
    parser.add_argument("--out", default=None, help="markdown file (default: results/gpu_check.md on a GPU)")
    parser.add_argument("--groups", default=",".join(GROUPS),
                        help=f"comma-separated row groups, of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds after which rows not yet started are listed as skipped (fit a short lease)")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU, or pass --cpu-smoke", file=sys.stderr)
        return 2
    dev = Device(args.cpu_smoke)
    out = args.out or (None if args.cpu_smoke else os.path.join(harness.RESULTS, "gpu_check.md"))
    start = time.perf_counter()
    deadline = start + args.deadline if args.deadline is not None else float("inf")

    def write(rows, say=lambda _: None):
        harness.write_results(render(rows + [end_to_end(rows)], dev, time.perf_counter() - start), out, say)

    groups = [g for g in args.groups.split(",") if g]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    rows = run_rows(dev, max(1, args.repeats), print, deadline, on_row=write, groups=groups)
    write(rows, print)
    print(render(rows + [end_to_end(rows)], dev, time.perf_counter() - start))
    return 0 if all(r["seconds"] is not None or r["note"].startswith(("check at", "skipped: needs")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
