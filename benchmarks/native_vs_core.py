#!/usr/bin/env python
"""CPU benchmark: the native ComfyUI FlashVideo model against the core DiT, one DiT step.

Not a test. Native = ``nodes/native/loader.py::load_flashvideo_model(path, "fp32")`` loaded by the host
(``comfy.model_management.load_models_gpu``) and called as the host's samplers call it:
``patcher.model.diffusion_model(x[B, C, T, H, W], t, context, transformer_options={}, **extra)`` (``comfy.ops``
layers, the host's attention dispatch). Core = ``FlashVideoDiT`` on x[B, T, C, H, W], built and called as
``dit_benchmark.py`` does ("pack" there), with the same configs, random weights (the native side loads them from a
SAT-layout file, as a user's checkpoint) and inputs, batch 2, fp32, both in the same ComfyUI host's python, with
the harness's method (``harness.py``). Outputs are compared in the core's layout (the stage-II native output is the
negated core output, the host's flow convention).

The script re-runs itself in each host's python (``--in-host``; the parent of the workers must be the host's
interpreter, since spawned workers inherit its ``sys.path``), then writes one table for all hosts.

    .venv/bin/python benchmarks/native_vs_core.py            # medium configs, 0.33.0 + 0.3.64 -> results/native_vs_core.md
    .venv/bin/python benchmarks/native_vs_core.py --quick    # tiny configs, one host, no file: a smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time

import dit_benchmark as db
import harness
from harness import ROOT, TEXT_TOKENS, fmt_peak

HOSTS_DIR = os.path.expanduser(os.environ.get("FLASHVIDEO_COMFY_HOSTS", "~/.cache/flashvideo-comfy"))
DEFAULT_HOSTS = "0.33.0,0.3.64"
CONFIGS = {f"stage{1 + stage2}-{name}": (name, stage2) for name in ("medium", "tiny") for stage2 in (False, True)}


# ============================================================================ worker side (host python)


def build_native(spec: dict):
    """The harness's build for the native side; its info describes the model the host loaded."""
    import torch

    harness.import_host(spec["host"], spec["host_args"])
    import comfy.model_management as mm
    from comfy.ldm.modules import attention as host_attn

    from flashvideo_pack.flashvideo_core.checkpoints.dit_keys import SAT_PREFIX, canonical_to_sat
    from flashvideo_pack.nodes.native.loader import load_flashvideo_model

    config, state, x, t, ctx, extra = db.bench_inputs(spec["config"])
    path = spec["out_path"] + ".weights.pt"
    sat = canonical_to_sat(state)
    sat[SAT_PREFIX + "transformer.position_embeddings.weight"] = torch.zeros(64, config.hidden_size)  # as upstream
    torch.save({"module": sat}, path)
    del sat, state
    patcher = load_flashvideo_model(path, "fp32")
    os.remove(path)
    mm.load_models_gpu([patcher])
    dm = patcher.model.diffusion_model
    xn = x.movedim(1, 2).contiguous()  # the host's latent layout (B, C, T, H, W)
    block = dm.transformer_blocks[0] if hasattr(dm, "transformer_blocks") else None
    mods = [m for m in dm.modules() if hasattr(m, "comfy_cast_weights")]
    info = dict(params=sum(p.numel() for p in dm.parameters()), patcher=type(patcher).__name__,
                model=type(patcher.model).__name__, manual_cast=str(getattr(patcher.model, "manual_cast_dtype", None)),
                weight_dtype=str(next(dm.parameters()).dtype), op_modules=len(mods),
                cast_modules=sum(bool(m.comfy_cast_weights) for m in mods),
                attention=getattr(block.attn1.attention_fn, "__name__", "?") if block is not None else "?",
                host_attention=getattr(host_attn.optimized_attention, "__name__", "?"), threads=torch.get_num_threads())

    def call():
        patcher  # noqa: B018  (the patcher stays alive while the model is used)
        return dm(xn, t, ctx, transformer_options={}, **extra)

    def to_reference(out):  # -> the core's layout and sign
        out = out.movedim(2, 1)
        return -out if config.stage2_embeddings else out

    return call, info, to_reference


def in_host(args) -> int:
    """Run every config in this (host) python; results as JSON to ``args.json``."""
    start, log = time.time(), harness.logger(os.path.basename(args.in_host) + " ")
    ctx = mp.get_context("spawn")
    env = harness.environment(ctx, "native_vs_core.py", None, modules=("torch",))
    with open(os.path.join(args.in_host, "comfyui_version.py")) as f:  # read, not run: a one-line generated file
        env["comfyui"] = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", f.read()).group(1)
    results = []
    with tempfile.TemporaryDirectory(prefix="native_vs_core_") as tmp:
        for name in args.configs.split(","):
            results.append(db.run_case(ctx, name, db.bench_config(*CONFIGS[name]), args, tmp, log,
                                       builds={"native": build_native, "core": db.build},
                                       spec_extra={"native": dict(host=args.in_host, host_args=args.host_args[0])}))
    with open(args.json, "w") as f:
        json.dump(dict(env=env, host_args=args.host_args[0], results=results, elapsed=time.time() - start), f)
    return 0


# ============================================================================ parent side (no torch)


def render(runs, args, env) -> str:
    L = ["# Native ComfyUI FlashVideo model vs the core DiT (CPU, one DiT step)", "",
         f"Run {env['date']} on {env['cpus']} CPUs ({env['cpu']}); fp32, no_grad, "
         f"`torch.set_num_threads({args.threads})`, "
         f"batch {db.BATCH} (the CFG batch), {TEXT_TOKENS} text tokens, the same random weights "
         "(`random_dit_state_dict(seed=0)`) and inputs on both sides, both in the host's python. Native = "
         "`load_flashvideo_model(path, \"fp32\")` loaded by the host, "
         "`.model.diffusion_model(x[B,C,T,H,W], t, context, transformer_options={})`; core = `FlashVideoDiT` on "
         f"x[B,T,C,H,W]. Median of {args.repeats} timed calls "
         "after a warm-up, native and core alternating (ABBA), each side in a fresh spawned process "
         "(`benchmarks/harness.py`); peak = growth of `ru_maxrss` during the first call over the RSS just before it. "
         f"max |diff| in the core's layout (stage II: native = -core). Command: `{env['cmd']}`.", "",
         "| config | tokens (video + text) | core ms | native ms | time ratio | core peak MiB | native peak MiB "
         "| memory ratio | max \\|diff\\| | host | torch | date | machine note |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    details = []
    for run in runs:
        host = f"ComfyUI {run['env']['comfyui']} `{('--cpu ' + run['host_args']).strip()}`"
        for r in run["results"]:
            n, c, cfg, info = r["sides"]["native"], r["sides"]["core"], r["cfg"], r["sides"]["native"]["info"]
            mem = f"{n['peak'] / c['peak']:.3f}" if n["peak"] and c["peak"] else "n/a"
            slow = n["slow"] + c["slow"]
            note = (f"{env['cpus']} CPUs, {args.threads} threads; " + (f"{slow} slow samples kept" if slow else
                    "no slow samples") + f", busy before <= {r['busy_before']:.0%}")
            latent = f"{db.BATCH}x{'x'.join(map(str, cfg['latent']))}"
            L.append(f"| {r['name']}: {cfg['layers']} x {cfg['width']}, latent {latent} "
                     f"| {r['video']:,} + {TEXT_TOKENS} | {c['median'] * 1e3:.0f} | {n['median'] * 1e3:.0f} "
                     f"| **{n['median'] / c['median']:.3f}** | {fmt_peak(c)} | {fmt_peak(n)} | **{mem}** "
                     f"| {r['cmp']['max_abs']:.1e} | {host} | {run['env']['torch']} | {env['date'][:10]} | {note} |")
            details.append(
                f"* {host}, {r['name']}: core {' '.join(f'{x:.3f}' for x in c['walls'])} / native "
                f"{' '.join(f'{x:.3f}' for x in n['walls'])}"
                + (f" (each sample {r['inner']} back-to-back forwards)" if r["inner"] > 1 else "")
                + f"; peak bytes core {c['peak']} / native {n['peak']}; params {c['info']['params']:,} / "
                f"{info['params']:,}; output scale {r['cmp']['ref_max']:.2f}, rel L2 diff {r['cmp']['rel']:.1e}; "
                f"native model: {info['patcher']} / {info['model']}, weights {info['weight_dtype']}, manual_cast "
                f"{info['manual_cast']}, attention {info['attention']} -> {info['host_attention']}, "
                f"{info['cast_modules']}/{info['op_modules']} ops casting weights per call, threads {info['threads']}.")
    L += ["", "Ratios are native / core (goal: <= 1.02 for both). Peaks in MiB (exact values: the per-run details "
          "below); timed calls per side, in seconds:", "", *details, ""]
    return "\n".join(L)


def main(argv=None) -> int:
    ap = harness.parser(__doc__, quick="smoke run: tiny configs, first host only, 1 repeat, no file unless --out",
                        out="markdown file (default benchmarks/results/native_vs_core.md; none with --quick)")
    ap.add_argument("--hosts", default=None, help=f"comma-separated ComfyUI versions under {HOSTS_DIR}/comfyui-<v> "
                    f"or host dirs (default {DEFAULT_HOSTS}; the first with --quick)")
    ap.add_argument("--configs", default=None, help="comma-separated subset of " + ", ".join(CONFIGS)
                    + " (default the two medium ones; the tiny ones with --quick)")
    ap.add_argument("--host-args", action="append", default=None,
                    help="ComfyUI command-line flags (after --cpu) for the native side; repeat for several runs per "
                         "host (default: --use-pytorch-cross-attention, the SDPA dispatch ComfyUI picks by itself on "
                         "NVIDIA; '' = a CPU host's own default, sub-quadratic attention)")
    ap.add_argument("--in-host", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = harness.parse(ap, argv, "native_vs_core.md")
    args.configs = args.configs or ("stage1-tiny,stage2-tiny" if args.quick else "stage1-medium,stage2-medium")
    args.host_args = args.host_args if args.host_args is not None else ["--use-pytorch-cross-attention"]
    if any(name not in CONFIGS for name in args.configs.split(",")):
        ap.error(f"configs are {', '.join(CONFIGS)}")
    if args.in_host:
        return in_host(args)

    hosts = (args.hosts or (DEFAULT_HOSTS.split(",")[0] if args.quick else DEFAULT_HOSTS)).split(",")
    hosts = [h if os.path.isdir(h) else os.path.join(HOSTS_DIR, f"comfyui-{h}") for h in hosts]
    start = time.time()
    env = harness.environment(None, "native_vs_core.py", argv, modules=())
    runs = []
    with tempfile.TemporaryDirectory(prefix="native_vs_core_") as tmp:
        for i, (host, host_args) in enumerate((h, a) for h in hosts for a in args.host_args):
            py = os.path.join(host, ".venv", "bin", "python")
            if not os.path.exists(py):
                print(f"skipping {host}: no {py}", flush=True)
                continue
            js = os.path.join(tmp, f"host{i}.json")
            cmd = [py, os.path.abspath(__file__), "--in-host", host, "--json", js, "--configs", args.configs,
                   "--threads", str(args.threads), "--repeats", str(args.repeats), "--wait-idle", str(args.wait_idle),
                   "--retry-slow", str(args.retry_slow), f"--host-args={host_args}"]
            rc = subprocess.call(cmd, cwd=ROOT)
            if rc:
                print(f"{host}: benchmark failed (exit {rc})", flush=True)
                return rc
            with open(js) as f:
                runs.append(json.load(f))
    if not runs:
        print("no ComfyUI host found", flush=True)
        return 1
    text = render(runs, args, env)
    print(f"\n{text}\ntotal {time.time() - start:.0f} s")
    harness.write_results(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
