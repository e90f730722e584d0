#!/usr/bin/env python
"""CPU benchmark: the native ComfyUI FlashVideo model against the core DiT, one DiT step.

Not a test. Native = ``nodes/native/loader.py::load_flashvideo_model(path, "fp32")`` loaded by the host
(``comfy.model_management.load_models_gpu``) and called as the host's samplers call it:
``patcher.model.diffusion_model(x[B, C, T, H, W], t, context, transformer_options={}, **extra)``
(``comfy.ops`` layers, the host's attention dispatch). Core = ``flashvideo_core.dit.model.FlashVideoDiT``
called on x[B, T, C, H, W], exactly as ``dit_benchmark.py`` builds and calls it ("pack" there).

Both sides run in the same ComfyUI host's python (same torch, ``torch.set_num_threads(--threads)``), with
the same random weights (``random_dit_state_dict(config, seed=0)``: the core loads it directly, the native
side from a SAT-layout file of it, as a user's checkpoint) and the same inputs (``dit_benchmark.bench_inputs``);
batch 2 (the CFG batch), fp32, no_grad. The harness is ``dit_benchmark.run_case``: a fresh spawned worker
per side, warm-up/memory call first, then timed calls alternating ABBA, median of ``--repeats``; peak =
``ru_maxrss`` growth during the first call. Outputs are compared in the core's layout (the stage-II native
output is the negated core output, the host's flow convention).

The script re-runs itself in each host's python (``--in-host``; the parent of the workers must be the
host's interpreter, since spawned workers inherit its ``sys.path``), then writes one table for all hosts.

    .venv/bin/python benchmarks/native_vs_core.py            # medium configs, 0.33.0 + 0.3.64 -> results/native_vs_core.md
    .venv/bin/python benchmarks/native_vs_core.py --quick    # tiny configs, one host, no file: a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import dit_benchmark as db  # noqa: E402  (the shared harness; imports no torch)

ROOT = db.ROOT
HOSTS_DIR = os.path.expanduser(os.environ.get("FLASHVIDEO_COMFY_HOSTS", "~/.cache/flashvideo-comfy"))
DEFAULT_HOSTS = "0.33.0,0.3.64"
#: name -> benchmark config (dit_benchmark's medium configs: 4 layers x 768, stage-I and stage-II latents)
CONFIGS = {"stage1-medium": db.BENCH["medium"], "stage2-medium": db.BENCH2["medium"],
           "stage1-tiny": db.BENCH["tiny"], "stage2-tiny": db.BENCH2["tiny"]}
IMPLS = ("native", "core")  # native is compared against core (the reference)


def host_python(host_dir: str) -> str:
    return os.path.join(host_dir, ".venv", "bin", "python")


# ============================================================================ worker side (host python)


def _import_host(host_dir: str, host_args: str = ""):
    """ComfyUI in-process on the CPU (as tests/support/native_checks.py does, plus ``host_args`` on its
    command line) + the pack as ``flashvideo_pack``."""
    import importlib.util

    sys.argv = [sys.argv[0], "--cpu", *host_args.split()]
    if host_dir not in sys.path:
        sys.path.insert(0, host_dir)
    os.chdir(host_dir)
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.model_management  # noqa: F401

    if "flashvideo_pack" not in sys.modules:
        spec = importlib.util.spec_from_file_location("flashvideo_pack", os.path.join(ROOT, "__init__.py"),
                                                      submodule_search_locations=[ROOT])
        pack = importlib.util.module_from_spec(spec)
        sys.modules["flashvideo_pack"] = pack
        spec.loader.exec_module(pack)


def _build_native(spec: dict):
    import gc

    import torch

    _import_host(spec["host"], spec.get("host_args", ""))
    import comfy.model_management as mm

    from flashvideo_pack.flashvideo_core.checkpoints.dit_keys import SAT_PREFIX, canonical_to_sat
    from flashvideo_pack.nodes.native.loader import load_flashvideo_model

    config, state, x, t, ctx, extra = db.bench_inputs(spec)
    stage2 = config.stage2_embeddings
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
    del x
    gc.collect()
    from comfy.ldm.modules import attention as host_attn

    block = dm.transformer_blocks[0] if hasattr(dm, "transformer_blocks") else None
    mods = [m for m in dm.modules() if hasattr(m, "comfy_cast_weights")]
    info = dict(patcher=type(patcher).__name__, model=type(patcher.model).__name__,
                manual_cast=str(getattr(patcher.model, "manual_cast_dtype", None)),
                weight_dtype=str(next(dm.parameters()).dtype),
                op_classes=sorted({f"{type(m).__module__}.{type(m).__qualname__}" for m in mods}),
                cast_modules=sum(bool(m.comfy_cast_weights) for m in mods), op_modules=len(mods),
                attention=getattr(block.attn1.attention_fn, "__name__", "?") if block is not None else "?",
                host_attention=getattr(host_attn.optimized_attention, "__name__", "?"),
                threads=torch.get_num_threads())
    with open(spec["out_path"] + ".info.json", "w") as f:
        json.dump(info, f)
    keep = [patcher]

    def call():
        keep  # noqa: B018  (the patcher stays alive while the model is used)
        return dm(xn, t, ctx, transformer_options={}, **extra)

    def to_reference(out):  # -> the core's layout and sign
        out = out.movedim(2, 1)
        return -out if stage2 else out

    return dm, call, to_reference


def _native_worker(conn, spec: dict) -> None:
    db._worker(conn, spec, _build_native)


def _probe_host(conn, host_dir: str) -> None:
    try:
        import torch

        version = {}
        with open(os.path.join(host_dir, "comfyui_version.py")) as f:
            exec(f.read(), version)
        conn.send(("ok", dict(torch=torch.__version__, comfyui=version.get("__version__"),
                              python=platform.python_version())))
    except BaseException:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))


def in_host(args) -> int:
    """Run every config in this (host) python; results as JSON to ``args.json``."""
    start = time.time()

    def log(msg):
        print(f"[{os.path.basename(args.in_host)} {time.time() - start:6.1f}s] {msg}", flush=True)

    ctx = mp.get_context("spawn")
    env = db.run_once(ctx, _probe_host, args.in_host)
    results = []
    with tempfile.TemporaryDirectory(prefix="native_vs_core_") as tmp:
        for name in args.configs.split(","):
            cfg = dict(CONFIGS[name])
            if name.endswith("medium") and args.medium_frames:
                cfg["latent"] = (args.medium_frames,) + tuple(cfg["latent"][1:])
            r = db.run_case(ctx, name, cfg, args, tmp, log, impls=IMPLS, targets={"native": _native_worker},
                            spec_extra={"native": dict(host=args.in_host, host_args=args.host_args[0])})
            with open(os.path.join(tmp, f"{name}_native.pt.info.json")) as f:
                r["native_info"] = json.load(f)
            results.append(r)
    with open(args.json, "w") as f:
        json.dump(dict(env=env, host_args=args.host_args[0], results=results, elapsed=time.time() - start), f, default=list)
    return 0


# ============================================================================ parent side (no torch)


def fmt_peak(side: dict) -> str:
    return db.fmt_peak(side)


def render(runs, args, env) -> str:
    L = ["# Native ComfyUI FlashVideo model vs the core DiT (CPU, one DiT step)", ""]
    L.append(f"Run {env['date']} on {env['cpus']} CPUs ({env['machine']}); fp32, no_grad, "
             f"`torch.set_num_threads({args.threads})`, batch {args.batch} (the CFG batch), {db.TEXT_TOKENS} text "
             "tokens, the same random weights (`random_dit_state_dict(seed=0)`) and inputs on both sides, both "
             "in the host's python. Native = `load_flashvideo_model(path, \"fp32\")` loaded by the host, "
             "`.model.diffusion_model(x[B,C,T,H,W], t, context, transformer_options={})`; core = `FlashVideoDiT` "
             "on x[B,T,C,H,W]. Median of "
             f"{args.repeats} timed calls after a warm-up, native and core alternating (ABBA), each side in a fresh "
             "spawned process (`dit_benchmark.run_case`); peak = growth of `ru_maxrss` during the first call over "
             "the RSS just before it. max |diff| in the core's layout (stage II: native = -core). "
             f"Command: `{env['cmd']}`.")
    L.append("")
    L.append("| config | tokens (video + text) | core ms | native ms | time ratio | core peak MiB | native peak MiB "
             "| memory ratio | max \\|diff\\| | host | torch | date | machine note |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        henv = run["env"]
        for r in run["results"]:
            n, c = r["sides"]["native"], r["sides"]["core"]
            cfg = r["cfg"]
            f, _, h, w = cfg["latent"]
            label = f"{r['name']}: {cfg['layers']} x {cfg['width']}, latent {args.batch}x{f}x16x{h}x{w}"
            mem = f"{n['peak'] / c['peak']:.3f}" if n["peak"] and c["peak"] else "n/a"
            slow = n["slow"] + c["slow"]
            note = (f"{env['cpus']} CPUs, {args.threads} threads; "
                    + (f"{slow} slow samples kept" if slow else "no slow samples")
                    + f", busy before <= {r['busy_before']:.0%}")
            L.append(f"| {label} | {r['video']:,} + {cfg['text_len']} | {c['median'] * 1e3:.0f} "
                     f"| {n['median'] * 1e3:.0f} | **{n['median'] / c['median']:.3f}** | {fmt_peak(c)} "
                     f"| {fmt_peak(n)} | **{mem}** | {r['cmp']['max_abs']:.1e} | ComfyUI {henv['comfyui']} "
                     f"`{('--cpu ' + run['host_args']).strip()}` | {henv['torch']} | {env['date'][:10]} | {note} |")
    L.append("")
    L.append("Ratios are native / core (goal: <= 1.02 for both). Peaks in MiB (exact values: the per-run "
             "details below); timed calls per side, in seconds:")
    L.append("")
    for run in runs:
        for r in run["results"]:
            n, c = r["sides"]["native"], r["sides"]["core"]
            info = r["native_info"]
            L.append(f"* ComfyUI {run['env']['comfyui']} `{('--cpu ' + run['host_args']).strip()}`, {r['name']}: core {' '.join(f'{x:.3f}' for x in c['walls'])}"
                     f" / native {' '.join(f'{x:.3f}' for x in n['walls'])}"
                     + (f" (each sample {r['inner']} back-to-back forwards)" if r["inner"] > 1 else "")
                     + f"; peak bytes core {c['peak']} / native {n['peak']}; params {c['params']:,} / {n['params']:,}; "
                     f"output scale {r['cmp']['ref_max']:.2f}, rel L2 diff {r['cmp']['rel']:.1e}; native model: "
                     f"{info['patcher']} / {info['model']}, weights {info['weight_dtype']}, manual_cast "
                     f"{info['manual_cast']}, attention {info['attention']} -> {info['host_attention']}, {info['cast_modules']}/{info['op_modules']} ops casting weights per "
                     f"call, threads {info['threads']}.")
    L.append("")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: tiny configs, first host only, 1 repeat, no file written unless --out")
    ap.add_argument("--hosts", default=None,
                    help=f"comma-separated ComfyUI versions under {HOSTS_DIR}/comfyui-<v> or host dirs "
                         f"(default {DEFAULT_HOSTS}; the first with --quick)")
    ap.add_argument("--configs", default=None,
                    help="comma-separated subset of " + ", ".join(CONFIGS) + " (default the two medium ones; "
                         "the tiny ones with --quick)")
    ap.add_argument("--medium-frames", type=int, default=None, help="latent frames of the medium configs (default 13)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every worker (default 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per side (default 3; 1 with --quick)")
    ap.add_argument("--batch", type=int, default=2, help="batch size (default 2, the CFG batch)")
    ap.add_argument("--wait-idle", type=float, default=None,
                    help="wait up to this many seconds for idle CPUs before each config (default 60; 0 with --quick)")
    ap.add_argument("--retry-slow", type=int, default=2, help="re-measure a sample slowed by other processes (default 2)")
    ap.add_argument("--out", default=None, help="markdown file (default benchmarks/results/native_vs_core.md; none with --quick)")
    ap.add_argument("--host-args", action="append", default=None,
                    help="ComfyUI command-line flags (after --cpu) for the native side; repeat for several runs per "
                         "host (default: --use-pytorch-cross-attention, the SDPA dispatch ComfyUI picks by itself "
                         "on NVIDIA; '' = a CPU host's own default, sub-quadratic attention)")
    ap.add_argument("--in-host", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.configs = args.configs or ("stage1-tiny,stage2-tiny" if args.quick else "stage1-medium,stage2-medium")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.host_args = args.host_args if args.host_args is not None else ["--use-pytorch-cross-attention"]
    if args.wait_idle is None:
        args.wait_idle = 0.0 if args.quick else 60.0
    for name in args.configs.split(","):
        if name not in CONFIGS:
            ap.error(f"unknown config {name!r}")
    if args.in_host:
        return in_host(args)

    hosts = (args.hosts or (DEFAULT_HOSTS.split(",")[0] if args.quick else DEFAULT_HOSTS)).split(",")
    hosts = [h if os.path.isdir(h) else os.path.join(HOSTS_DIR, f"comfyui-{h}") for h in hosts]
    out = args.out or (None if args.quick else os.path.join(HERE, "results", "native_vs_core.md"))
    start = time.time()
    env = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), cpus=os.cpu_count(),
               machine=platform.processor() or platform.machine(),
               cmd="python benchmarks/native_vs_core.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    runs = []
    with tempfile.TemporaryDirectory(prefix="native_vs_core_") as tmp:
        for i, (host, host_args) in enumerate((h, a) for h in hosts for a in args.host_args):
            py = host_python(host)
            if not os.path.exists(py):
                print(f"skipping {host}: no {py}", flush=True)
                continue
            js = os.path.join(tmp, f"host{i}.json")
            cmd = [py, os.path.abspath(__file__), "--in-host", host, "--json", js, "--configs", args.configs,
                   "--threads", str(args.threads), "--repeats", str(args.repeats), "--batch", str(args.batch),
                   "--wait-idle", str(args.wait_idle), "--retry-slow", str(args.retry_slow), f"--host-args={host_args}"]
            if args.medium_frames:
                cmd += ["--medium-frames", str(args.medium_frames)]
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
    print()
    print(text)
    print(f"total {time.time() - start:.0f} s")
    db.write_results(text, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
