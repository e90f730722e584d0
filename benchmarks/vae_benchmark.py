#!/usr/bin/env python
"""CPU benchmark: the pack's CogVideoX VAE against diffusers' ``AutoencoderKLCogVideoX``.

Not a test: it measures wall time and peak memory of decode and encode, for the
same weights, input shape, batch size and thread count on both sides, and compares
the pack's analytic memory estimate (``estimate_peak_bytes``) with what it measures.

How it measures
---------------
* Every measured configuration (model config x op x mode x batch x implementation)
  runs in its own fresh worker process (``multiprocessing`` spawn). The two workers of
  a pair (pack, diffusers) load their model and input, then the parent runs them
  alternately: pack, diffusers, pack, diffusers, ... The first call of each worker is a
  warm-up (not timed into the median); the median is over the ``--repeats`` calls after it.
* Peak memory of a worker = ``ru_maxrss`` after its first call minus its RSS right
  before that call (taken after model load, input creation, ``gc`` and ``malloc_trim``).
  It is the extra resident memory the call needs (activations, output, allocator slack).
  If ``ru_maxrss`` did not grow during the call (an earlier high-water mark hides it) the
  peak is reported as unknown ("<=").
* The parent never imports torch, so it stays small: a spawned child inherits its
  parent's RSS high-water mark in ``ru_maxrss`` (Linux copies it across fork + exec).
* ``torch.set_num_threads(--threads)`` in every worker.

Run ``python benchmarks/vae_benchmark.py --help``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MIB = 2**20
SMALL_WIDTHS = dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=16)
OFFICIAL_WIDTHS = dict(block_out_channels=(128, 256, 256, 512), layers_per_block=3, latent_channels=16)
#: pack tiled mode used for the memory rows (latent units); diffusers gets the equivalent tiles.
TILED = dict(chunk_latents=2, tile_latents=8, tile_overlap=4)


# ============================================================================ worker side (imports torch)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _trim() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _make_weights(widths: dict, path: str, seed: int) -> None:
    """Child job: official-layout random weights, written once and shared by all workers."""
    import torch

    from flashvideo_core.tiny import random_vae_state_dict
    from flashvideo_core.vae.config import VAEConfig

    torch.save(random_vae_state_dict(VAEConfig(**widths), seed), path)


def _environment(out_queue) -> None:
    """Child job: versions and the pack's plans at full resolution (official widths, bf16)."""
    import torch

    import diffusers
    from flashvideo_core.vae.config import VAEConfig
    from flashvideo_core.vae.slicing import ACTIVATION_FACTOR, SlicingOptions, plan_slicing

    plans = {}
    for label, (h, w) in {"49x1072x1920": (134, 240), "49x1440x2560": (180, 320)}.items():
        plan = plan_slicing(
            VAEConfig(), "decode", (1, 16, 13, h, w), torch.bfloat16, SlicingOptions(mode="reference"),
            budget_bytes=22 * 2**30,
        )
        plans[label] = {"describe": plan.describe(), "estimated_mib": plan.estimated_bytes / MIB}
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out_queue.put({
        "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
        "cpu": cpu, "cores": os.cpu_count(), "activation_factor": ACTIVATION_FACTOR, "plans": plans,
    })


def _overlap_extra(spans_h, spans_w, lat_h, lat_w) -> float:
    """Sum of tile areas read / full area - 1 (latent units)."""
    read = sum(h for h in spans_h) * sum(w for w in spans_w)
    return read / (lat_h * lat_w) - 1.0


def _worker(conn, spec: dict) -> None:
    """One measured configuration. Commands from the parent: run / save / compare / quit."""
    import torch

    torch.set_num_threads(spec["threads"])
    from flashvideo_core.vae.config import VAEConfig

    config = VAEConfig(**spec["widths"])
    sd = torch.load(spec["weights"], weights_only=True)
    batch, (t, h, w) = spec["batch"], spec["latent"]
    gen = torch.Generator().manual_seed(1234)
    if spec["op"] == "decode":
        x = torch.randn(batch, config.latent_channels, t, h, w, generator=gen)
    else:
        from flashvideo_core.vae.slicing import decoded_frame_count

        frames = decoded_frame_count(config, t)
        f = config.spatial_compression
        x = torch.rand(batch, config.in_channels, frames, h * f, w * f, generator=gen) * 2 - 1
    info = {}

    if spec["impl"] == "pack":
        from flashvideo_core.vae.model import CogVideoXVAE
        from flashvideo_core.vae.slicing import SlicingOptions, decode_sliced, encode_sliced, plan_slicing

        with torch.device("meta"):
            model = CogVideoXVAE(config)
        model.load_state_dict(sd, strict=True, assign=True)
        model.eval()
        opts = SlicingOptions(**spec["options"])
        plan = plan_slicing(config, spec["op"], tuple(x.shape), torch.float32, opts, budget_bytes=None)
        info["estimated_bytes"] = plan.estimated_bytes
        info["plan"] = plan.describe()
        info["overlap_extra"] = _overlap_extra(
            [t_.read_end - t_.read_start for t_ in plan.tiles_h], [t_.read_end - t_.read_start for t_ in plan.tiles_w],
            h, w,
        )
        fn = decode_sliced if spec["op"] == "decode" else encode_sliced

        def call():
            # budget_bytes only matters for reference/auto (no cap: the plan never tiles here).
            return fn(model, x, opts, budget_bytes=2**62)
    else:
        from diffusers.models.autoencoders.autoencoder_kl_cogvideox import AutoencoderKLCogVideoX

        from flashvideo_core.checkpoints.vae_keys import official_to_diffusers

        with torch.device("meta"):
            model = AutoencoderKLCogVideoX(norm_num_groups=32, **spec["widths"])
        model.load_state_dict(official_to_diffusers(sd), strict=True, assign=True)
        model.eval()
        mode = spec["mode"]
        if mode == "tiled":
            tl, ov = TILED["tile_latents"], TILED["tile_overlap"]
            f = config.spatial_compression
            model.enable_tiling(
                tile_sample_min_height=tl * f, tile_sample_min_width=tl * f,
                tile_overlap_factor_height=ov / tl, tile_overlap_factor_width=ov / tl,
            )
            stride_h = int(model.tile_latent_min_height * (1 - model.tile_overlap_factor_height))
            stride_w = int(model.tile_latent_min_width * (1 - model.tile_overlap_factor_width))
            tile_h, tile_w = model.tile_latent_min_height, model.tile_latent_min_width
            info["overlap_extra"] = _overlap_extra(
                [min(tile_h, h - i) for i in range(0, h, stride_h)], [min(tile_w, w - j) for j in range(0, w, stride_w)],
                h, w,
            )
            info["plan"] = (
                f"diffusers tiles {tile_h}x{tile_w} latents, stride {stride_h}x{stride_w}, "
                f"time batches of {model.num_latent_frames_batch_size} latents / {model.num_sample_frames_batch_size} frames"
            )
        else:
            info["overlap_extra"] = 0.0
        if spec["op"] == "decode":
            if mode == "whole":
                def call():
                    return model.decoder(x)[0]
            else:
                def call():
                    return model.decode(x).sample
        else:
            if mode == "whole":
                def call():
                    return model.encoder(x)[0]
            else:
                def call():
                    return model.encode(x).latent_dist.parameters

    del sd
    _trim()
    info["rss_mib"] = _rss_bytes() / MIB
    conn.send({"ready": True, **info})
    out = None
    while True:
        cmd, arg = conn.recv()
        if cmd == "run":
            out = None
            _trim()
            rss0, max0 = _rss_bytes(), _maxrss_bytes()
            t0 = time.perf_counter()
            with torch.no_grad():
                out = call()
            dt = time.perf_counter() - t0
            max1 = _maxrss_bytes()
            conn.send({"time": dt, "rss_before": rss0, "maxrss_before": max0, "maxrss_after": max1,
                       "shape": list(out.shape)})
        elif cmd == "save":
            torch.save(out.contiguous(), arg)
            conn.send(True)
        elif cmd == "compare":
            other = torch.load(arg, weights_only=True)
            conn.send(float((out.float() - other.float()).abs().max()) if other.shape == out.shape else None)
        else:
            conn.send(True)
            return


# ============================================================================ parent side (no torch)


def decoded_frames(latent_frames: int) -> int:
    t = latent_frames
    for _ in range(2):  # temporal_compression_ratio 4 for both configs benchmarked here
        t = 2 * t - 1 if t % 2 else 2 * t
    return t


class Worker:
    def __init__(self, ctx, spec):
        self.spec = spec
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, spec), daemon=True)
        self.proc.start()
        child.close()

    def ready(self) -> dict:
        return self.conn.recv()

    def ask(self, cmd, arg=None):
        self.conn.send((cmd, arg))
        return self.conn.recv()

    def close(self):
        try:
            self.ask("quit")
        except (EOFError, OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=30)


def expected_shape(case) -> list:
    b, (t, h, w) = case["batch"], case["latent"]
    if case["op"] == "decode":
        return [b, 3, decoded_frames(t), h * 8, w * 8]
    return [b, 32, t, h, w]


def run_case(ctx, case: dict, args, tmp: str, log) -> dict:
    """Run one pack (and optionally one diffusers) worker, alternating calls."""
    impls = [("pack", case["pack"])] + ([("diffusers", case["diffusers"])] if case.get("diffusers") else [])
    workers = {}
    for impl, mode_or_opts in impls:
        spec = dict(impl=impl, widths=case["widths"], weights=case["weights"], op=case["op"], batch=case["batch"],
                    latent=case["latent"], threads=args.threads)
        if impl == "pack":
            spec["options"] = mode_or_opts
        else:
            spec["mode"] = mode_or_opts
        workers[impl] = Worker(ctx, spec)  # both start (import, load) before anything is timed
    result = {k: v for k, v in case.items() if k not in ("weights",)}
    try:
        for impl, w in workers.items():
            result[impl] = {"info": w.ready(), "calls": []}
        calls = 1 + case.get("repeats", args.repeats)
        for i in range(calls):
            for impl, w in workers.items():
                r = w.ask("run")
                result[impl]["calls"].append(r)
                log(f"    {impl:9s} call {i + 1}/{calls}: {r['time']:.2f} s")
        for impl, w in workers.items():
            calls_ = result[impl]["calls"]
            first = calls_[0]
            grew = first["maxrss_after"] > first["maxrss_before"]
            timed = [c["time"] for c in calls_[1:]] or [first["time"]]
            result[impl].update(
                median_s=statistics.median(timed), n=len(timed),
                peak_mib=(first["maxrss_after"] - first["rss_before"]) / MIB, peak_exact=grew,
                shape=first["shape"], shape_ok=first["shape"] == expected_shape(case),
            )
        if "diffusers" in workers and case.get("compare", True):
            path = os.path.join(tmp, "pack_out.pt")
            workers["pack"].ask("save", path)
            result["max_abs_diff"] = workers["diffusers"].ask("compare", path)
            os.remove(path)
    finally:
        for w in workers.values():
            w.close()
    return result


def build_cases(args, weights: dict) -> list:
    """The measured configurations, in run order."""
    small, official = weights["small"], weights["official"]
    tiled = dict(mode="manual", **TILED)
    cases = []

    def add(name, widths, wpath, latent, op, label, pack, diffusers, batches, **kw):
        for b in batches:
            cases.append(dict(config=name, widths=widths, weights=wpath, latent=latent, op=op, label=label,
                              pack=pack, diffusers=diffusers, batch=b, **kw))

    if args.quick:
        s_lat, o_lat, batches, o_batches = (5, 8, 12), None, (1, 2), ()
    else:
        s_lat, o_lat, batches, o_batches = (13, 8, 12), (5, 4, 6), (1, 2), (1, 2)
    sname = "small " + "x".join(map(str, SMALL_WIDTHS["block_out_channels"])) + f" L1, latent {'x'.join(map(str, s_lat))}"
    add(sname, SMALL_WIDTHS, small, s_lat, "decode", "whole: pack whole / diffusers decoder()",
        dict(mode="whole"), "whole", batches)
    add(sname, SMALL_WIDTHS, small, s_lat, "decode", "chunked: pack reference / diffusers decode()",
        dict(mode="reference"), "framewise", batches if not args.quick else (1,))
    add(sname, SMALL_WIDTHS, small, s_lat, "decode", "tiled: pack manual c2 t8 o4 / diffusers tiling",
        tiled, "tiled", (1,), compare=False)
    add(sname, SMALL_WIDTHS, small, s_lat, "encode", "whole: pack whole / diffusers encoder()",
        dict(mode="whole"), "whole", batches if not args.quick else (1,))
    add(sname, SMALL_WIDTHS, small, s_lat, "encode", "chunked: pack manual c2 (8 frames) / diffusers encode()",
        dict(mode="manual", chunk_latents=2), "framewise", batches if not args.quick else (1,))
    add(sname, SMALL_WIDTHS, small, s_lat, "encode", "tiled: pack manual c2 t8 o4 / diffusers tiling",
        tiled, "tiled", (1,), compare=False)
    if o_lat:
        oname = f"official 128x256x256x512 L3, latent {'x'.join(map(str, o_lat))}"
        add(oname, OFFICIAL_WIDTHS, official, o_lat, "decode", "whole: pack whole / diffusers decoder()",
            dict(mode="whole"), "whole", o_batches)
        add(oname, OFFICIAL_WIDTHS, official, o_lat, "decode", "chunked: pack reference / diffusers decode()",
            dict(mode="reference"), "framewise", o_batches)
        add(oname, OFFICIAL_WIDTHS, official, o_lat, "encode", "whole: pack whole / diffusers encoder()",
            dict(mode="whole"), "whole", o_batches)
        add(oname, OFFICIAL_WIDTHS, official, o_lat, "encode", "chunked: pack manual c2 (8 frames) / diffusers encode()",
            dict(mode="manual", chunk_latents=2), "framewise", (1,))
    if args.full:
        # Official widths at a size that can be tiled with overlap 4: pack only, one call each.
        m_lat = (5, 8, 12)
        mname = f"official 128x256x256x512 L3, latent {'x'.join(map(str, m_lat))}"
        for op in ("decode", "encode"):
            add(mname, OFFICIAL_WIDTHS, official, m_lat, op, "whole: pack whole (memory only)",
                dict(mode="whole"), None, (1,), repeats=0)
            add(mname, OFFICIAL_WIDTHS, official, m_lat, op, "tiled: pack manual c2 t8 o4 (memory only)",
                tiled, None, (1,), repeats=0)
    return cases


def fmt_peak(side: dict) -> str:
    if not side:
        return "-"
    return f"{side['peak_mib']:.0f}" if side["peak_exact"] else f"<={side['peak_mib']:.0f}"


def render(results: list, env: dict, args, elapsed: float) -> str:
    lines = []
    add = lines.append
    date = datetime.date.today().isoformat()
    add(f"# VAE CPU benchmark: pack vs diffusers ({date})")
    add("")
    add(f"torch {env['torch']}, diffusers {env['diffusers']}, Python {env['python']}; {env['cpu']}, "
        f"{env['cores']} cores visible, torch threads = {args.threads}; fp32; repeats = {args.repeats} "
        f"(+1 warm-up, alternating pack/diffusers, each configuration in fresh worker processes)"
        f"{'; --quick' if args.quick else ''}{'; --full' if args.full else ''}; total run {elapsed / 60:.1f} min.")
    add("")
    add("Peak = ru_maxrss after the first call minus RSS right before it (activations + output + allocator slack). "
        "Ratio = pack time / diffusers time (< 1: pack faster). Shape OK = output is exactly the expected "
        "size (decode: 8x the latent size, 4k+1 frames).")
    add("")
    add("| config | op | mode | batch | pack median s | diffusers median s | ratio | pack peak MiB | "
        "diffusers peak MiB | shape OK (pack/diffusers) | max abs diff |")
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        p, d = r["pack"], r.get("diffusers")
        ratio = f"{p['median_s'] / d['median_s']:.2f}" if d else "-"
        dt = f"{d['median_s']:.2f}" if d else "-"
        ok = ("yes" if p["shape_ok"] else f"NO {p['shape']}") + " / " + (
            ("yes" if d["shape_ok"] else f"NO {d['shape']}") if d else "-")
        diff = r.get("max_abs_diff")
        diff = "-" if diff is None else f"{diff:.1e}"
        pt = f"{p['median_s']:.2f}" + ("" if p["n"] > 1 else " (n=1)")
        add(f"| {r['config']} | {r['op']} | {r['label']} | {r['batch']} | {pt} | {dt} | {ratio} | {fmt_peak(p)} | "
            f"{fmt_peak(d)} | {ok} | {diff} |")
    add("")
    add(f"## Pack memory estimate vs measured (fp32, ACTIVATION_FACTOR = {env['activation_factor']})")
    add("")
    add("measured/estimated > 1: the estimate is low (the factor should be larger). implied factor = "
        "ACTIVATION_FACTOR x measured/estimated.")
    add("")
    add("| config | op | pack mode | batch | measured peak MiB | estimated MiB | measured/estimated | implied factor | plan |")
    add("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        p = r["pack"]
        est = p["info"]["estimated_bytes"] / MIB
        q = p["peak_mib"] / est
        add(f"| {r['config']} | {r['op']} | {r['label'].split(':')[0]} | {r['batch']} | {fmt_peak(p)} | {est:.0f} | "
            f"{q:.2f} | {q * env['activation_factor']:.1f} | {p['info']['plan']} |")
    add("")
    add("## Chunked + tiled vs whole-clip peak (pack) and tile-overlap compute")
    add("")
    add("overlap extra = sum of tile areas read / full area - 1 (0 = no recomputation).")
    add("")
    add("| config | op | batch | whole peak MiB | tiled peak MiB | tiled/whole | pack overlap extra | "
        "diffusers overlap extra | diffusers tiled shape |")
    add("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if not r["label"].startswith("tiled"):
            continue
        whole = next((w for w in results if w["config"] == r["config"] and w["op"] == r["op"]
                      and w["batch"] == r["batch"] and w["label"].startswith("whole")), None)
        p, d = r["pack"], r.get("diffusers")
        wp = whole["pack"]["peak_mib"] if whole else float("nan")
        dshape = "-" if not d else ("x".join(map(str, d["shape"])) + (" (OK)" if d["shape_ok"] else
                                    f" (WRONG, expected {'x'.join(map(str, expected_shape(r)))})"))
        dextra = f"{d['info']['overlap_extra']:.2f}" if d else "-"
        add(f"| {r['config']} | {r['op']} | {r['batch']} | {wp:.0f} | {p['peak_mib']:.0f} | {p['peak_mib'] / wp:.2f} | "
            f"{p['info']['overlap_extra']:.2f} | {dextra} | {dshape} |")
    add("")
    add("## Pack plans at full resolution (official widths, bf16, mode reference, budget 22 GiB)")
    add("")
    for label, plan in env["plans"].items():
        add(f"* {label}: {plan['describe']}")
    add("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (< 1 min): small config only, smaller shapes")
    ap.add_argument("--full", action="store_true", help="also official widths tiled vs whole at latent 5x8x12 "
                    "(memory only, ~2 more minutes)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every worker (default 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per worker after one warm-up "
                    "(default 3, --quick 1)")
    ap.add_argument("--out", default=None, help="markdown output (default benchmarks/results/vae_cpu.md, "
                    "--quick: vae_cpu_quick.md); a .json with the raw numbers is written next to it")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(ROOT, "benchmarks", "results", "vae_cpu_quick.md" if args.quick else "vae_cpu.md")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", flush=True)

    ctx = mp.get_context("spawn")
    tmp = tempfile.mkdtemp(prefix="fv_vae_bench_")
    try:
        weights = {"small": os.path.join(tmp, "small.pt"), "official": os.path.join(tmp, "official.pt")}
        needed = ["small"] if args.quick else ["small", "official"]
        for name in needed:
            p = ctx.Process(target=_make_weights,
                            args=(SMALL_WIDTHS if name == "small" else OFFICIAL_WIDTHS, weights[name], 0))
            p.start()
            p.join()
            if p.exitcode:
                raise SystemExit(f"weight generation failed for {name}")
        log("weights written")
        q = ctx.Queue()
        p = ctx.Process(target=_environment, args=(q,))
        p.start()
        env = q.get()
        p.join()
        results = []
        for case in build_cases(args, weights):
            log(f"{case['config']} | {case['op']} {case['label']} | batch {case['batch']}")
            r = run_case(ctx, case, args, tmp, log)
            p_, d_ = r["pack"], r.get("diffusers")
            msg = (f"  pack {p_['median_s']:.2f} s peak {fmt_peak(p_)} MiB "
                   f"(estimate {p_['info']['estimated_bytes'] / MIB:.0f} MiB)")
            if d_:
                msg += f" | diffusers {d_['median_s']:.2f} s peak {fmt_peak(d_)} MiB shape_ok={d_['shape_ok']}"
            if r.get("max_abs_diff") is not None:
                msg += f" | max|diff| {r['max_abs_diff']:.1e}"
            log(msg)
            results.append(r)
        text = render(results, env, args, time.perf_counter() - start)
        print()
        print(text)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump({"env": env, "args": vars(args), "results": results}, f, indent=1)
        log(f"wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
