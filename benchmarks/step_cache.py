#!/usr/bin/env python
"""CPU benchmark: core EasyCache and LazyCache on FlashVideo's 51-step stage I, against the uncached run.

Not a test. In each ComfyUI host's python (the script re-runs itself there, ``--in-host``): the tiny random stage-I
model (``flashvideo_core.tiny``, as make-tiny writes it) loaded by the native loader, sampled through FlashVideo's
DynamicCFG guider and stage-I SAMPLER for 51 steps on a 13x8x12 latent (49 frames, 96x64), as is, then patched
by the host's own EasyCache and LazyCache nodes. Per host and cache: steps skipped (the cache's own count), wall
time of the whole sampling run (median of ``--repeats``, the three runs interleaved), the ratio cached / uncached,
and the relative difference of the cached latent to the uncached one (L2).

The caches skip a step when the model's output is predicted to have changed less than ``reuse_threshold``; random
tiny weights change their output by 40-80 % a step, so the default 0.2 skips little and the table also shows 0.5.

    .venv/bin/python benchmarks/step_cache.py            # both hosts -> results/step_cache.md
    .venv/bin/python benchmarks/step_cache.py --quick    # one host, 1 repeat, no file
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import harness
from harness import ROOT

HOSTS_DIR = os.path.expanduser(os.environ.get("FLASHVIDEO_COMFY_HOSTS", "~/.cache/flashvideo-comfy"))
STEPS, CFG, SEED = 51, 8.0, 3
LATENT = (1, 16, 13, 8, 12)
CACHES = (("EasyCache", 0.2), ("EasyCache", 0.5), ("LazyCache", 0.2), ("LazyCache", 0.5))


def in_host(host: str, repeats: int, threads: int) -> dict:
    """Time the uncached and cached runs in this (the host's) python."""
    import torch

    torch.set_num_threads(threads)
    log = io.StringIO()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=log, force=True)
    harness.import_host(host, "")
    from comfy_extras import nodes_easycache

    from flashvideo_pack.flashvideo_core.tiny import write_tiny_dit
    from flashvideo_pack.nodes.native import sampling
    from flashvideo_pack.nodes.native.loader import load_flashvideo_model

    path = os.path.join(tempfile.mkdtemp(), "stage1.pt")
    write_tiny_dit(path, "stage1", lora=True)
    model = load_flashvideo_model(path, "fp32")
    context = torch.randn(1, 226, model.model.diffusion_model.config.text_hidden_size,
                          generator=torch.Generator().manual_seed(0))
    latent = torch.zeros(LATENT)
    nodes = {"EasyCache": nodes_easycache.EasyCacheNode, "LazyCache": nodes_easycache.LazyCacheNode}
    patched = {"uncached": model}
    for name, threshold in CACHES:
        out = nodes[name].execute(model, threshold, 0.15, 0.95, False)
        patched[f"{name} {threshold}"] = out.result[0] if hasattr(out, "result") else out[0]

    def run(patcher):
        guider = sampling.DynamicCFGGuider(patcher)
        guider.set_conds([[context, {}]], sampling.zero_conditioning([[context, {}]]))
        guider.set_cfg(CFG)
        noise = sampling.Stage1ReferenceNoise(SEED).generate_noise({"samples": latent})
        start = time.perf_counter()
        sample = guider.sample(noise, latent, sampling.stage1_sampler(), sampling.stage1_sigmas(patcher, STEPS),
                               seed=SEED)
        return time.perf_counter() - start, sample

    run(model)  # warm-up
    walls, samples, skipped = {k: [] for k in patched}, {}, {}
    for _ in range(repeats):
        for key, patcher in patched.items():
            wall, samples[key] = run(patcher)
            walls[key].append(wall)
            counts = re.findall(r"skipped (\d+)/(\d+) steps", log.getvalue())
            skipped[key] = int(counts[-1][0]) if key != "uncached" and counts else 0
    plain = samples["uncached"]
    version = open(os.path.join(host, "comfyui_version.py")).read()
    return {"host": re.search(r"[\d.]+", version.split("=")[-1]).group(0), "rows": [
        dict(cache=key, skipped=skipped[key], wall=statistics.median(walls[key]),
             diff=float((samples[key] - plain).norm() / plain.norm())) for key in patched]}


def render(results: list, args) -> str:
    lines = ["# Step caches on FlashVideo stage I (CPU)", "",
             f"{time.strftime('%Y-%m-%d')}, {harness.cpu_name()}, {args.threads} threads, tiny random stage I, "
             f"{STEPS} steps, latent {'x'.join(map(str, LATENT[2:]))}, median of {args.repeats}. Written by "
             "`benchmarks/step_cache.py`.", "",
             "| host | cache (reuse_threshold) | steps skipped | wall | cached / uncached | rel. L2 diff to uncached |",
             "|---|---|---|---|---|---|"]
    for result in results:
        base = next(r["wall"] for r in result["rows"] if r["cache"] == "uncached")
        for r in result["rows"]:
            lines.append(f"| {result['host']} | {r['cache']} | {r['skipped']}/{STEPS} | {harness.fmt_s(r['wall'])} | "
                         f"{r['wall'] / base:.2f} | {r['diff']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = harness.parser(__doc__, "one host, 1 repeat, no file", "markdown file (default results/step_cache.md)")
    ap.add_argument("--hosts", default="0.33.0,0.3.64", help=f"ComfyUI versions under {HOSTS_DIR}/comfyui-<v>")
    ap.add_argument("--in-host", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = harness.parse(ap, argv, "step_cache.md")
    if args.in_host:
        with open(args.json, "w") as f:
            json.dump(in_host(args.in_host, max(1, args.repeats), args.threads), f)
        return 0
    hosts = args.hosts.split(",")[:1] if args.quick else args.hosts.split(",")
    results = []
    for host in hosts:
        directory = os.path.join(HOSTS_DIR, f"comfyui-{host}")
        python = os.path.join(directory, ".venv", "bin", "python")
        if not os.path.exists(python):
            print(f"no ComfyUI host at {directory} (the test suite lays it out): skipped", file=sys.stderr)
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [python, os.path.abspath(__file__), "--in-host", directory, "--json", out.name,
                   "--repeats", str(args.repeats), "--threads", str(args.threads)]
            if subprocess.call(cmd, cwd=ROOT) != 0:
                return 1
            results.append(json.load(open(out.name)))
    text = render(results, args)
    print(text)
    harness.write_results(text, None if args.quick else args.out)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
