#!/usr/bin/env python
"""CPU benchmark of the video enhancer (``flashvideo_core enhance``): speed and peak memory by clip length, how
smooth the joins between windows are by overlap, how much neighbouring windows agree with and without shared
noise, and how far each colour fix leaves the input's colours; plus the planner's per-window figures at 1080p.

Not a test. Tiny random-weight models (``make-tiny``), so the pictures are noise: the numbers measure the
windowing, streaming and colour machinery, not stage II's quality.

- Length: the CLI (``enhance IN OUT``, file to file) on clips of 49 ... 490 frames at 48x32 and 96x64, each in a
  fresh process; peak = growth of the RSS high-water mark over the RSS before the call (models included, so equal
  lengths of work compare); frames/s of the whole command. Measured twice: in a fresh process, and in a warm one
  that enhanced a 9-frame clip first. A fresh process pays one-time costs (library code paged in, thread pools,
  ~30 MiB) during its first window, mostly after that window's peak, so they land under the second window's peak:
  at tiny sizes that step is a tenth of the total, at true size it vanishes in gigabytes of activations.
- Joins: 97-frame clips with known motion (a drifting pattern, a pan, a scene cut), the largest frame-to-frame
  change at a join over the median change inside windows (the issue's bound: 1.2). A zero-velocity refiner
  isolates what the windows do (each window's causal VAE starts afresh); the random DiT's column adds its noise.
- Agreement: mean |window k - window k+1| over their shared frames, random DiT at noise step 675, with the noise
  shared across the overlap (the default) or drawn independently per window.
- Colour: mean CIE76 Lab distance between the input's and the output's low frequencies (16x16 block means).

    .venv/bin/python benchmarks/enhance.py           # -> results/enhance.md (~15 min on 2 idle cores)
    .venv/bin/python benchmarks/enhance.py --quick   # shorter clips, no file
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import tempfile

import torch

import harness  # noqa: E402  (puts the repository on the path)
from clips import join_ratio, moving_clip  # noqa: E402
from flashvideo_core.constants import LATENT_SCALE_STAGE2  # noqa: E402
from flashvideo_core.dit.config import STAGE2_CONFIG  # noqa: E402
from flashvideo_core.dit.memory import candidate_plans, plan_bytes  # noqa: E402
from flashvideo_core.enhance import enhancer, windows as windows_module  # noqa: E402
from flashvideo_core.enhance.colour import COLOUR_FIXES, low_frequency_colour_difference  # noqa: E402
from flashvideo_core.enhance.geometry import grid_size, output_size  # noqa: E402
from flashvideo_core.vae.config import VAEConfig  # noqa: E402
from flashvideo_core.vae.slicing import SlicingOptions, plan_slicing  # noqa: E402

SIZE = (32, 48)
#: the length rows run at two tiny sizes: at 48x32 a window's activations are barely larger than the process's
#: one-time allocations, at 96x64 they dominate as they do at true size (docs/ENHANCE.md, "Memory")
LENGTH_SIZES = ((32, 48), (64, 96))
OVERLAPS = (0, 8, 20)
CLIPS = ("pattern", "pan", "cut")


def tiny_models(folder: str) -> dict:
    from flashvideo_core.tiny_install import make_tiny

    return make_tiny(folder)


def loaded(paths: dict):
    from flashvideo_core.dit.loader import load_dit
    from flashvideo_core.text_embeddings import load_prompt_embedding
    from flashvideo_core.vae.loader import load_vae

    return (load_dit(paths["stage2"], device="cpu", expect_stage="stage2"), load_vae(paths["vae"], device="cpu"),
            load_prompt_embedding(paths["embedding"])[0])


def clip_file(frames: int, size: tuple, folder: str) -> str:
    from flashvideo_core.io.video import VideoWriter

    path = os.path.join(folder, f"in_{frames}_{size[1]}x{size[0]}.mp4")
    if not os.path.exists(path):
        with VideoWriter(path, 24, 10) as writer:
            for start in range(0, frames, 49):
                writer.write(moving_clip(min(49, frames - start), *size, kind="pan"))
    return path


def cli_run(frames: int, size: tuple, folder: str, paths: dict, warm: bool) -> dict:
    """One ``enhance`` command on a ``frames``-long clip of ``size`` (height, width), in a fresh process: its own
    memory high-water mark. ``warm``: first enhance a 9-frame clip in the same process (not measured), so the
    process's one-time costs (library code paged in, thread pools) are paid before the measured call."""
    from flashvideo_core.cli import main

    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    harness.set_malloc(tight=True)

    def command(length: int, name: str) -> list:
        return ["enhance", clip_file(length, size, folder), os.path.join(folder, name), "--stage2", paths["stage2"],
                "--vae", paths["vae"], "--embedding", paths["embedding"], "--resolution", "input", "--overwrite"]

    if warm and main(command(9, f"warm_{os.getpid()}.mp4")) != 0:
        raise RuntimeError("the warm-up clip failed")
    code, stats = harness.peak_call(lambda: main(command(frames, f"out_{frames}_{size[1]}x{size[0]}.mp4")))
    return dict(stats, code=code)


def enhanced(vae, clip, plan, refine) -> torch.Tensor:
    written = []
    enhancer.enhance_video(vae, iter(clip), plan, refine, written.append)
    return torch.cat(written)


def refiner(model, context):
    from flashvideo_core.stage2.refiner import refine_stage2

    return lambda latent: refine_stage2(model, context, latent * LATENT_SCALE_STAGE2, 675, 5, 13.0, 2.5) / \
        LATENT_SCALE_STAGE2


def window_outputs(vae, clip, plan, refine) -> list:
    source = enhancer.FrameWindows(iter(clip), plan.total_frames)
    return [enhancer.enhance_window(vae, source.take(w), w, plan, refine, SlicingOptions(), enhancer.Progress())
            for w in plan.windows]


def agreement(vae, clip, plan, refine) -> float:
    outs = window_outputs(vae, clip, plan, refine)
    gaps = [(a[w.start - p.start:] - b[: w.shared]).abs().mean()
            for p, w, a, b in zip(plan.windows, plan.windows[1:], outs, outs[1:])]
    return float(torch.stack(gaps).mean())


def independent_noise(draw, seed, windows, index, latent_shape):
    return draw(latent_shape(windows[index]), windows_module.window_seed(seed, index))


def planner_rows() -> list:
    """Per-window working memory at 1080p (a 1920x1080 clip runs at 1920x1088): the same for every clip length."""
    grid = grid_size(output_size((1080, 1920), "1080p"))
    latent = (1, 16, 13, grid[0] // 8, grid[1] // 8)
    rows = []
    for plan in candidate_plans("auto")[:2] + candidate_plans("lean")[-1:]:
        rows.append((f"stage-II step, {plan.mode}", plan_bytes(STAGE2_CONFIG, latent, torch.bfloat16, plan)))
    vae = VAEConfig()
    for direction, shape in (("encode", (1, 3, 49, *grid)), ("decode", latent)):
        sliced = plan_slicing(vae, direction, shape, torch.bfloat16, SlicingOptions(stage=2), None)
        rows.append((f"VAE {direction}, reference slicing", sliced.estimated_bytes))
    return rows


def length_rows(ctx, size: tuple, lengths: tuple, folder: str, paths: dict, args, log) -> list:
    lines = [f"## Speed and peak memory by clip length (CLI, file to file, {size[1]}x{size[0]}, 8-frame overlap)",
             "", "| frames | windows | wall | frames/s | peak RSS growth, fresh process | vs 49 frames | "
             "peak RSS growth, warm process | vs 49 frames |", "|---|---|---|---|---|---|---|---|"]
    first = {}
    for frames in lengths:
        row = []
        for warm in (False, True):
            harness.wait_until_idle(args.wait_idle, log)
            for length in (frames, 9):  # the clip and the warm-up clip, written before the measured process
                clip_file(length, size, folder)
            stats = harness.run_once(ctx, cli_run, frames, size, folder, paths, warm)
            if stats["code"] != 0:
                raise RuntimeError(f"enhance on {frames} frames at {size} exited with {stats['code']}")
            peak = stats["peak"] if stats["peak"] is not None else stats["peak_bound"]
            first.setdefault(warm, peak)
            log(f"{size[1]}x{size[0]}, {frames} frames, {'warm' if warm else 'fresh'}: {stats['wall']:.1f} s, "
                f"peak {peak / harness.MIB:.0f} MiB")
            if not warm:
                row += [f"{stats['wall']:.1f} s", f"{frames / stats['wall']:.1f}"]
            row += [f"{peak / harness.MIB:.0f} MiB", f"{peak / first[warm]:.2f}"]
        count = len(windows_module.plan_windows(frames, 8))
        lines.append(f"| {frames} | {count} | " + " | ".join(row) + " |")
    return lines + [""]


def main(argv=None) -> int:
    ap = harness.parser(__doc__, "clips up to 147 frames, no file", "results file (default results/enhance.md)")
    args = harness.parse(ap, argv, "enhance.md")
    log = harness.logger()
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    lengths = (49, 98, 147) if args.quick else (49, 98, 245, 490)
    ctx = multiprocessing.get_context("spawn")
    lines = ["# Enhancer benchmark (CPU, tiny random weights)", "",
             f"{harness.cpu_name()}, torch {torch.__version__}, {args.threads} threads. Written by "
             "`benchmarks/enhance.py`; the pictures are noise (random weights), so these rows measure the windows, "
             "streaming and colour machinery.", ""]
    with tempfile.TemporaryDirectory() as folder:
        paths = tiny_models(folder)
        for size in LENGTH_SIZES:
            lines += length_rows(ctx, size, lengths, folder, paths, args, log)
        model, vae, context = loaded(paths)
        refine, still = refiner(model, context), (lambda latent: latent)
        lines += ["## Joins: largest change at a join / median change inside windows (97 frames; bound 1.2)", "",
                  "| overlap | " + " | ".join(f"{c}, cross-fade" for c in CLIPS) + " | " +
                  " | ".join(f"{c}, hard cut" for c in CLIPS) + " | pan, random DiT |",
                  "|---|" + "---|" * (2 * len(CLIPS) + 1)]
        for overlap in OVERLAPS:
            plan = enhancer.plan_enhance(97, SIZE, "input", overlap, 0, 0, "none")
            row = [join_ratio(enhanced(vae, moving_clip(97, *SIZE, kind=c), plan, still), plan.windows) for c in CLIPS]
            fade = enhancer.crossfade_weights
            enhancer.crossfade_weights = lambda n: torch.zeros(n)
            try:
                row += [join_ratio(enhanced(vae, moving_clip(97, *SIZE, kind=c), plan, still), plan.windows) for c in CLIPS]
            finally:
                enhancer.crossfade_weights = fade
            noisy = enhancer.plan_enhance(97, SIZE, "input", overlap, 675, 0, "none")
            row.append(join_ratio(enhanced(vae, moving_clip(97, *SIZE, kind="pan"), noisy, refine), noisy.windows))
            log(f"overlap {overlap}: {[round(r, 3) for r in row]}")
            lines.append(f"| {overlap} | " + " | ".join(f"{r:.2f}" for r in row) + " |")
        lines += ["", "## Agreement of neighbouring windows on their shared frames (random DiT, noise step 675)", "",
                  "| overlap | shared noise | independent noise |", "|---|---|---|"]
        for overlap in (4, 8, 20):
            plan = enhancer.plan_enhance(97, SIZE, "input", overlap, 675, 0, "none")
            shared = agreement(vae, moving_clip(97, *SIZE, kind="pan"), plan, refine)
            draw = enhancer.window_noise
            enhancer.window_noise = independent_noise
            try:
                independent = agreement(vae, moving_clip(97, *SIZE, kind="pan"), plan, refine)
            finally:
                enhancer.window_noise = draw
            lines.append(f"| {overlap} | {shared:.4f} | {independent:.4f} |")
        lines += ["", "## Colour: low-frequency Lab distance input -> output (delta E, 49 frames)", "",
                  "| clip | " + " | ".join(COLOUR_FIXES) + " |", "|---|" + "---|" * len(COLOUR_FIXES)]
        for kind in CLIPS:
            clip = moving_clip(49, *SIZE, kind=kind)
            row = []
            for fix in COLOUR_FIXES:
                plan = enhancer.plan_enhance(49, SIZE, "input", 8, 675, 0, fix)
                row.append(low_frequency_colour_difference(clip, enhanced(vae, clip, plan, refine)))
            lines.append(f"| {kind} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    lines += ["", "## The planner's per-window figures at 1080p (1920x1080, run at 1920x1088; any clip length)", "",
              "| part | working memory |", "|---|---|"]
    lines += [f"| {name} | {value / 2**30:.2f} GiB |" for name, value in planner_rows()]
    harness.write_results("\n".join(lines), args.out, log)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
