#!/usr/bin/env python
"""Memory per GPU of a sequence-parallel DiT step at true size, measured per rank, next to the planner.

Not a test (``tests/test_parallel_memory.py`` checks the bounds). For both stages' real configs at their sizes and
N = 1, 2, 4, 8 processes, one guided step per memory mode runs as one rank under ``FakeTensorMode``
(``simulated_rank``: the real shard / attend / blocks, the collectives stood in for with their real allocations):
the peak bytes alive at once (``memory_probe.LiveTensorBytes``) plus the RoPE tables the rank keeps, the most of
any rank, next to ``plan_bytes(..., processes=N)``. bf16 throughout, measured directly (no fp32 halving).

Fake tensors cost no memory and no compute, so the real widths and sequence lengths run in seconds; the models
have ``--layers`` blocks (each block frees its activations before the next, so the peak does not depend on depth;
the 'depth' section measures some rows at the real depth to show it).

    .venv/bin/python benchmarks/parallel_memory.py           # ~5 min on 2 cores -> results/parallel_memory.md
    .venv/bin/python benchmarks/parallel_memory.py --quick   # stage II 1080p only, no file
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re
import sys
import time

import harness
import torch

from flashvideo_core.dit.config import STAGE1_CONFIG, STAGE2_CONFIG
from flashvideo_core.dit.memory import CHUNK_CANDIDATES, ForwardPlan, plan_bytes, video_tokens
from simulated_rank import rank_bytes, step_peak

GB = 1e9
#: latent (B, C, T, H, W) of 49 frames: stage I's preview (256x480, the size it was trained at), 1080p, 2K
LATENTS = {"270p": (1, 16, 13, 32, 60), "1080p": (1, 16, 13, 134, 240), "2K": (1, 16, 13, 180, 320)}
STAGES = {"II": (STAGE2_CONFIG, ("1080p", "2K")), "I": (STAGE1_CONFIG, ("270p", "1080p", "2K"))}
PROCESSES = (1, 2, 4, 8)
MODES = {"batched": ForwardPlan(True), "sequential": ForwardPlan(False),
         **{f"lean {chunk}": ForwardPlan(False, chunk) for chunk in CHUNK_CANDIDATES}}
#: rows measured again at the real depth (stage, size, N, mode)
DEPTH_ROWS = (("II", "1080p", 1, "batched"), ("II", "1080p", 4, "lean 4096"), ("II", "2K", 8, "sequential"),
              ("I", "1080p", 2, "sequential"))
DIT_MEMORY = os.path.join(harness.RESULTS, "dit_memory.md")


def measure(stages, layers: int, say) -> list:
    """(stage, size, N, mode, measured bytes, worst rank, planner bytes) for every row."""
    rows = []
    for stage, (config, sizes) in stages.items():
        model_config = dataclasses.replace(config, num_layers=layers)
        for size in sizes:
            for processes in PROCESSES:
                for mode, plan in MODES.items():
                    measured, rank = rank_bytes(model_config, LATENTS[size], plan, processes)
                    planner = plan_bytes(config, LATENTS[size], torch.bfloat16, plan, processes)
                    rows.append((stage, size, processes, mode, measured, rank, planner))
                    say(f"stage {stage} {size} N={processes} {mode}: {measured / GB:.3f} GB (rank {rank}), "
                        f"planner {planner / GB:.3f}, x{planner / measured:.3f}")
    return rows


def depth_check(layers: int, say) -> list:
    """(row, peak at ``layers`` blocks, peak at the real depth) for DEPTH_ROWS."""
    out = []
    for stage, size, processes, mode in DEPTH_ROWS:
        config = STAGES[stage][0]
        peaks = [step_peak(dataclasses.replace(config, num_layers=n), LATENTS[size], MODES[mode], processes)["peak"]
                 for n in (layers, config.num_layers)]
        out.append(((stage, size, processes, mode), *peaks))
        say(f"depth: stage {stage} {size} N={processes} {mode}: {peaks[0]} B at {layers} layers, {peaks[1]} B at "
            f"{config.num_layers}")
    return out


def dit_memory_figures(path: str = DIT_MEMORY) -> dict:
    """dit_memory.md's measured table: mode -> (peak MiB at its small size, 1080p GB, 2K GB) (bf16 = half its
    fp32 bytes per token, scaled to the true size)."""
    figures = {}
    with open(path) as f:
        for line in f:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 9 and re.match(r"(batched|sequential|lean \(chunk \d+, = \d+ at 1080p\))$", cells[0]):
                mode = re.sub(r"lean \(chunk \d+, = (\d+) at 1080p\)", r"lean \1", cells[0])
                figures[mode] = (float(cells[1]), float(cells[4]), float(cells[6]))
    return figures


def single_process_rows(layers: int, rerun: bool, say) -> list:
    """Stage II on one process against dit_memory.md, per mode: (mode, MiB at its setup: its file, rerun today with
    real tensors or None, here under fake tensors; then per size (1080p, 2K): here at true size, its file's GB,
    today's rerun scaled as it scales, or None). Its setup: 2 layers, fp32, latent (3, 48, 80), lean chunks the
    same share of the video tokens; it built the RoPE tables before measuring, so they are left out here too."""
    small, small_video = (1, 16, 3, 48, 80), 3 * 24 * 40
    rerun_rows = {}
    if rerun:  # dit_memory.py's own measurement, real tensors, today's code (~2 min)
        import dit_memory

        for name, _, _, peak, per_token, _ in dit_memory.measure(2, small, say)[0]:
            rerun_rows[re.sub(r"lean \(chunk \d+, = (\d+) at 1080p\)", r"lean \1", name)] = (peak, per_token)
    config = dataclasses.replace(STAGE2_CONFIG, num_layers=layers)
    rows = []
    for mode, (mib, *theirs) in dit_memory_figures().items():
        plan = MODES[mode]
        if plan.chunk_tokens:  # the chunk dit_memory.py used at its size: the same share of the video tokens
            plan = ForwardPlan(False, max(1, round(small_video * plan.chunk_tokens / 104_520)))
        fake_small = step_peak(dataclasses.replace(STAGE2_CONFIG, num_layers=2), small, plan, 1,
                               dtype=torch.float32)["peak"]
        peak, per_token = rerun_rows.get(mode, (None, None))
        sizes = []
        for size, their_gb in zip(("1080p", "2K"), theirs):
            tokens = video_tokens(STAGE2_CONFIG, *LATENTS[size][2:]) + harness.TEXT_TOKENS
            ours = step_peak(config, LATENTS[size], MODES[mode], 1)["peak"] / GB
            sizes.append((ours, their_gb, None if per_token is None else per_token / 2 * tokens / GB))
        rows.append((mode, mib, None if peak is None else peak / harness.MIB, fake_small / harness.MIB, *sizes))
    return rows


def render(rows, depth, single, layers, elapsed) -> str:
    def span(which):
        ratios = [planner / measured for _, _, n, _, measured, _, planner in rows if which(n)]
        return f"{min(ratios):.3f} to {max(ratios):.3f}" if ratios else "-"

    lines = [
        "# DiT memory per GPU, sequence-parallel, at true size", "",
        f"{datetime.date.today()}, {harness.cpu_name()}, torch {torch.__version__}, {elapsed:.0f} s. "
        "Written by `benchmarks/parallel_memory.py`.", "",
        "One guided step (cond + uncond) of the real stage-I (42 x 3072, 48 heads) and stage-II (30 x 1920, 30 heads) "
        f"configs, run as one rank of N under `FakeTensorMode` (`benchmarks/simulated_rank.py`; {layers} blocks, "
        "the peak is per block: see 'depth'), bf16 measured directly. 'measured' = peak bytes alive at once "
        "(`LiveTensorBytes`) + the RoPE tables the rank keeps, the most of any rank (every rank's shard is whole "
        "at these sizes: 104,520 and 187,200 video tokens split evenly, so rank 0 stands for all; stage II pads 30 "
        "heads to 32 on 4 and 8). 'planner' = `plan_bytes(..., processes=N)`, GB = 1e9 bytes.", "",
        f"Planner / measured, N > 1 (the per-process rule): {span(lambda n: n > 1)}; N = 1 (the single-process "
        f"rule): {span(lambda n: n == 1)}. Rows outside 1 - 1.25 are marked.", "",
        "| stage | size | N | mode | measured GB / rank | planner GB | planner / measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, size, processes, mode, measured, _, planner in rows:
        flag = "" if measured <= planner <= 1.25 * measured else " **(outside 1 - 1.25)**"
        lines.append(f"| {stage} | {size} | {processes} | {mode} | {measured / GB:.3f} | {planner / GB:.3f} | "
                     f"{planner / measured:.3f}{flag} |")
    pct = lambda ours, theirs: "-" if theirs is None else f"{100 * (ours / theirs - 1):+.1f} %"  # noqa: E731
    num = lambda value, form: "-" if value is None else format(value, form)  # noqa: E731
    lines += ["", "## Single process against dit_memory.md", "",
              "Stage II, N = 1, the step's peak without the RoPE tables (dit_memory.md built them before measuring).",
              "", "At dit_memory.md's own setup (2 layers x 1920, fp32, 3,106 tokens): the MiB its file records, "
              "its measurement rerun today with real tensors (`dit_memory.measure`), and the same step measured "
              "here under fake tensors.", "",
              "| mode | its file MiB | rerun today, real MiB | here, fake MiB |", "|---|---|---|---|"]
    for mode, mib, rerun, fake, *_ in single:
        lines.append(f"| {mode} | {mib:.0f} | {num(rerun, '.0f')} | {fake:.0f} |")
    lines += ["", "At true size in bf16: here (fake tensors, the real sequence) against dit_memory.md's figures "
              "(its fp32 bytes per token at 3,106 tokens, scaled to the true size and halved) and against the same "
              "scaling of today's rerun.", "",
              "| mode | size | here GB | its file GB | difference | today's rerun, scaled GB | difference |",
              "|---|---|---|---|---|---|---|"]
    for mode, _, _, _, *sizes in single:
        for size, (ours, theirs, today) in zip(("1080p", "2K"), sizes):
            lines.append(f"| {mode} | {size} | {ours:.2f} | {theirs:.2f} | {pct(ours, theirs)} | "
                         f"{num(today, '.2f')} | {pct(ours, today)} |")
    spread = max(abs(ours / theirs - 1) for *_, a, b in single for ours, theirs, _ in (a, b))
    lines += ["", f"Largest difference from the file at true size: {100 * spread:.1f} % "
              f"({'within' if spread <= 0.05 else 'outside'} 5 %). Scaling bytes per token from 3,106 tokens (7 % "
              "of them text, chunks of 113 and 451) to the true size is itself good to a few %: the peaks do not "
              "all grow with the sequence alike."]
    stale = [abs(rerun / mib - 1) for _, mib, rerun, *_ in single if rerun is not None]
    if stale and max(stale) > 0.01:
        today = max(abs(ours / scaled - 1) for *_, a, b in single for ours, _, scaled in (a, b))
        lines += ["", f"The file's own setup rerun today gives up to {100 * max(stale):.0f} % less than the file "
                  "records: the file predates a change of the block (2026-12-04, q, k and v filled one projection "
                  f"at a time). Against today's rerun, scaled as the file scales, the largest difference is "
                  f"{100 * today:.1f} % ({'within' if today <= 0.05 else 'outside'} 5 %)."]
    lines += ["",
              "## Depth", "", f"Peak bytes of the step at {layers} blocks and at the real depth.", "",
              "| row | peak, few blocks | peak, real depth |", "|---|---|---|"]
    for (stage, size, processes, mode), few, real in depth:
        lines.append(f"| stage {stage} {size} N={processes} {mode} | {few} | {real} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="stage II at 1080p only, no depth check, no file")
    parser.add_argument("--no-rerun", action="store_true",
                        help="skip rerunning dit_memory.py's real-tensor measurement (~2 min)")
    parser.add_argument("--out", default=os.path.join(harness.RESULTS, "parallel_memory.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    say = harness.logger()
    start = time.perf_counter()
    stages = {"II": (STAGE2_CONFIG, ("1080p",))} if args.quick else STAGES
    rows = measure(stages, args.layers, say)
    depth = [] if args.quick else depth_check(args.layers, say)
    single = single_process_rows(args.layers, not (args.quick or args.no_rerun), say)
    text = render(rows, depth, single, args.layers, time.perf_counter() - start)
    print(text)
    harness.write_results(text, None if args.quick else args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
