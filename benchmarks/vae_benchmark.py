#!/usr/bin/env python
"""CPU benchmark: the pack's CogVideoX VAE against diffusers' ``AutoencoderKLCogVideoX``.

Not a test: it measures wall time and peak memory of decode and encode, for the same weights (official layout,
mapped to diffusers by ``official_to_diffusers``, loaded strictly), input, batch and thread count on both sides,
with the harness's method (``harness.py``: fresh workers, ABBA, median; peak = ``ru_maxrss`` growth of the first
call, taken with glibc's mmap threshold at 128 KiB so that RSS follows the live tensors, ``--stock-malloc`` to
leave glibc alone), and compares the pack's analytic memory estimate (``estimate_peak_bytes``) with what it
measures. A tiny call before the measured ones starts the thread pools and oneDNN. A JSON of the raw numbers is
written next to the markdown after every configuration, so ``--resume`` can finish an interrupted run.

Run ``python benchmarks/vae_benchmark.py --help``; see benchmarks/README.md.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

import harness
from harness import BUSY_UTIL, MIB, fmt_peak

SMALL_WIDTHS = dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=16)
OFFICIAL_WIDTHS = dict(block_out_channels=(128, 256, 256, 512), layers_per_block=3, latent_channels=16)
#: pack tiled mode used for the memory rows (latent units); diffusers gets the equivalent tiles.
TILED = dict(chunk_latents=2, tile_latents=8, tile_overlap=4)
#: diffusers tiling settings whose output size is checked: (tile px, overlap factor H, overlap factor W).
TILING_CHECKS = [(tile, fh, fw) for tile in (64, 72, 100, 128) for fh, fw in ((1 / 6, 1 / 5), (0.25, 0.25))]


# ============================================================================ worker side (imports torch)


def _make_weights(widths: dict, path: str) -> None:
    """Official-layout random weights, written once and shared by all workers."""
    import torch

    from flashvideo_core.tiny import random_vae_state_dict
    from flashvideo_core.vae.config import VAEConfig

    torch.save(random_vae_state_dict(VAEConfig(**widths), 0), path)


def _plans() -> dict:
    """The pack's plans at full resolution (official widths, bf16)."""
    import torch

    from flashvideo_core.vae.config import VAEConfig
    from flashvideo_core.vae.slicing import ACTIVATION_FACTOR, SlicingOptions, plan_slicing

    plans = {}
    for label, (h, w) in {"49x1072x1920": (134, 240), "49x1440x2560": (180, 320)}.items():
        plan = plan_slicing(VAEConfig(), "decode", (1, 16, 13, h, w), torch.bfloat16, SlicingOptions(mode="reference"),
                            budget_bytes=22 * 2**30)
        plans[label] = plan.describe()
    return dict(activation_factor=ACTIVATION_FACTOR, plans=plans)


def _diffusers_tiling_check(threads: int) -> list:
    """Output size of diffusers' tiled decode/encode (small random model, 1 frame, 16x24 latents)."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_cogvideox import AutoencoderKLCogVideoX

    torch.set_num_threads(threads)
    model = AutoencoderKLCogVideoX(norm_num_groups=32, **SMALL_WIDTHS).eval()
    h, w = 16, 24
    z, x = torch.randn(1, 16, 1, h, w), torch.rand(1, 3, 1, 8 * h, 8 * w) * 2 - 1
    rows = []
    for tile, fh, fw in TILING_CHECKS:
        model.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                            tile_overlap_factor_height=fh, tile_overlap_factor_width=fw)
        row = {"tile": tile, "fh": fh, "fw": fw}
        for op, fn, want in (("decode", lambda: model.decode(z).sample, [8 * h, 8 * w]),
                             ("encode", lambda: model.encode(x).latent_dist.parameters, [h, w])):
            try:
                with torch.no_grad():
                    got = list(fn().shape[-2:])
                row[op] = "OK" if got == want else f"WRONG {got[0]}x{got[1]}"
            except Exception as e:  # noqa: BLE001 - recorded, it is the finding
                row[op] = f"error: {type(e).__name__}"
        rows.append(row)
    return rows


def _overlap_extra(spans_h, spans_w, lat_h, lat_w) -> float:
    """Sum of tile areas read / full area - 1 (latent units)."""
    return sum(spans_h) * sum(spans_w) / (lat_h * lat_w) - 1.0


def build(spec: dict):
    """The harness's build: one implementation (``spec['impl']``) of one op in one mode."""
    import torch

    from flashvideo_core.vae.config import VAEConfig
    from flashvideo_core.vae.slicing import SlicingOptions, decode_sliced, decoded_frame_count, encode_sliced

    config = VAEConfig(**spec["widths"])
    sd = torch.load(spec["weights"], weights_only=True)
    batch, (t, h, w), f = spec["batch"], spec["latent"], config.spatial_compression
    decode = spec["op"] == "decode"
    gen = torch.Generator().manual_seed(1234)
    if decode:
        x = torch.randn(batch, config.latent_channels, t, h, w, generator=gen)
    else:
        x = torch.rand(batch, config.in_channels, decoded_frame_count(config, t), h * f, w * f, generator=gen) * 2 - 1
    tiny = x[:, :, :1, : 2 * (1 if decode else f), : 2 * (1 if decode else f)].clone()
    if spec["impl"] == "pack":
        from flashvideo_core.vae.model import CogVideoXVAE
        from flashvideo_core.vae.slicing import plan_slicing

        with torch.device("meta"):
            model = CogVideoXVAE(config)
        model.load_state_dict(sd, strict=True, assign=True)
        model.eval()
        opts = SlicingOptions(**spec["options"])
        plan = plan_slicing(config, spec["op"], tuple(x.shape), torch.float32, opts, budget_bytes=None)
        info = dict(estimated_bytes=plan.estimated_bytes, plan=plan.describe(), overlap_extra=_overlap_extra(
            [s.read_end - s.read_start for s in plan.tiles_h], [s.read_end - s.read_start for s in plan.tiles_w], h, w))
        fn = decode_sliced if decode else encode_sliced
        fn(model, tiny, SlicingOptions(mode="whole"))  # thread pools, oneDNN, allocator: one-time costs
        # budget_bytes only matters for reference/auto (no cap: the plan never tiles here)
        return (lambda: fn(model, x, opts, budget_bytes=2**62)), info
    from diffusers.models.autoencoders.autoencoder_kl_cogvideox import AutoencoderKLCogVideoX

    from flashvideo_core.checkpoints.vae_keys import official_to_diffusers

    with torch.device("meta"):
        model = AutoencoderKLCogVideoX(norm_num_groups=32, **spec["widths"])
    model.load_state_dict(official_to_diffusers(sd), strict=True, assign=True)
    model.eval()
    info = dict(overlap_extra=0.0)
    if spec["mode"] == "tiled":
        tl, ov = TILED["tile_latents"], TILED["tile_overlap"]
        model.enable_tiling(tile_sample_min_height=tl * f, tile_sample_min_width=tl * f,
                            tile_overlap_factor_height=ov / tl, tile_overlap_factor_width=ov / tl)
        tile_h, tile_w = model.tile_latent_min_height, model.tile_latent_min_width
        stride_h = int(tile_h * (1 - model.tile_overlap_factor_height))
        stride_w = int(tile_w * (1 - model.tile_overlap_factor_width))
        info["overlap_extra"] = _overlap_extra([min(tile_h, h - i) for i in range(0, h, stride_h)],
                                               [min(tile_w, w - j) for j in range(0, w, stride_w)], h, w)
    part = model.decoder if decode else model.encoder
    part(tiny)  # thread pools, oneDNN, allocator: one-time costs
    if spec["mode"] == "whole":
        return (lambda: part(x)[0]), info
    return (lambda: model.decode(x).sample) if decode else (lambda: model.encode(x).latent_dist.parameters), info


# ============================================================================ parent side (no torch)


def expected_shape(case) -> list:
    b, (t, h, w) = case["batch"], case["latent"]
    if case["op"] == "encode":
        return [b, 32, t, h, w]
    for _ in range(2):  # temporal compression 4: 13 latents -> 49 frames
        t = 2 * t - 1 if t % 2 else 2 * t
    return [b, 3, t, h * 8, w * 8]


def run_case(ctx, case: dict, args, tmp: str, log) -> dict:
    """The pack (and, when the case names a diffusers mode, diffusers) on one configuration."""
    builds = {"pack": build, **({"diffusers": build} if case["diffusers"] else {})}
    compare = len(builds) == 2 and case.get("compare", True)
    specs = {impl: dict(impl=impl, widths=case["widths"], weights=case["weights"], op=case["op"], batch=case["batch"],
                        latent=case["latent"], options=case["pack"], mode=case["diffusers"],
                        tight_malloc=not args.stock_malloc,
                        out_path=os.path.join(tmp, f"{impl}.pt") if compare else None)
             for impl in builds}
    result = harness.run_pair(ctx, builds, specs, args, log, repeats=case.get("repeats"))
    for side in result["sides"].values():
        side["shape_ok"] = side["shape"] == expected_shape(case)
    return dict({k: v for k, v in case.items() if k != "weights"}, **result)


def build_cases(args, weights: dict) -> list:
    """The measured configurations, in run order."""
    tiled = dict(mode="manual", **TILED)
    cases = []

    def add(name, widths, latent, op, label, pack, diffusers, batches, **kw):
        for b in batches:
            cases.append(dict(config=f"{name}, latent {'x'.join(map(str, latent))}", widths=widths, latent=latent,
                              weights=weights["small" if widths is SMALL_WIDTHS else "official"], op=op, label=label,
                              pack=pack, diffusers=diffusers, batch=b, **kw))

    q = args.quick
    s_lat, both = ((5, 8, 12), (1,)) if q else ((13, 8, 12), (1, 2))
    small, official = (SMALL_WIDTHS, "small 32x32x64x64 L1"), (OFFICIAL_WIDTHS, "official 128x256x256x512 L3")
    for op, whole in (("decode", "decoder()"), ("encode", "encoder()")):
        add(small[1], small[0], s_lat, op, f"whole: pack whole / diffusers {whole}", dict(mode="whole"), "whole", both)
        if op == "decode":
            add(small[1], small[0], s_lat, op, "chunked: pack reference / diffusers decode()", dict(mode="reference"),
                "framewise", both)
        elif not q:
            add(small[1], small[0], s_lat, op, "chunked: pack manual c2 (8 frames) / diffusers encode()",
                dict(mode="manual", chunk_latents=2), "framewise", both)
        if op == "decode" or not q:
            add(small[1], small[0], s_lat, op, "tiled: pack manual c2 t8 o4 / diffusers tiling", tiled, "tiled", (1,),
                compare=False, repeats=1)
    if q:
        return cases
    chunked = {"decode": ("reference / diffusers decode()", dict(mode="reference")),
               "encode": ("manual c2 (8 frames) / diffusers encode()", dict(mode="manual", chunk_latents=2))}
    for op, whole in (("decode", "decoder()"), ("encode", "encoder()")):
        add(official[1], official[0], (5, 4, 6), op, f"whole: pack whole / diffusers {whole}", dict(mode="whole"),
            "whole", (1, 2))
        add(official[1], official[0], (5, 4, 6), op, f"chunked: pack {chunked[op][0]}", chunked[op][1], "framewise",
            (1, 2) if args.full else (1,))
    # Official widths, 49 frames of 64x96 (big enough to tile with overlap 4): pack only, one call each.
    for op in ("decode", "encode") if args.full else ("decode",):
        add(official[1], official[0], (13, 8, 12), op, "whole: pack whole (memory only)", dict(mode="whole"), None,
            (1,), repeats=0)
        add(official[1], official[0], (13, 8, 12), op, "tiled: pack manual c2 t8 o4 (memory only)", tiled, None,
            (1,), repeats=0)
    return cases


def render(results: list, env: dict, args, kept: int = 0) -> str:
    factor = env["activation_factor"]
    malloc = ("glibc malloc left at its defaults" if args.stock_malloc else
              "measured with glibc's mmap threshold at 128 KiB so that RSS follows the live tensors; the timed "
              "calls after it run with glibc's steady-state thresholds (32 MiB)")
    L = [f"# VAE CPU benchmark: pack vs diffusers ({env['date'][:10]})", "",
         f"torch {env['torch']}, diffusers {env['diffusers']}, Python {env['python']}; {env['cpu']}, {env['cpus']} "
         f"cores visible, torch threads = {args.threads}; fp32; repeats = {args.repeats} (+1 warm-up, pack and "
         f"diffusers alternating (ABBA), each configuration in fresh worker processes); command `{env['cmd']}`; "
         + (f"--resume: {kept} of {len(results)} configurations kept from an earlier run, " if kept else "")
         + f"run time {env['elapsed'] / 60:.1f} min.", "",
         f"Peak = ru_maxrss after the first call minus RSS right before it (activations + output), {malloc}. "
         "Ratio = pack time / diffusers time (< 1: pack faster). Shape OK = output is exactly the expected size "
         "(decode: 8x the latent size, 4k+1 frames). max abs diff: pack output vs diffusers output where both "
         "compute the same thing (tiled rows differ by design). CPU util = the lowest of the timed calls' process "
         f"CPU time / (wall x threads); a sample under {BUSY_UTIL:.0%} (slowed by other processes) is measured "
         f"again up to {args.retry_slow} times, and times that kept one are marked *.", "",
         "| config | op | mode | batch | pack median s | diffusers median s | ratio | pack peak MiB | "
         "diffusers peak MiB | shape OK (pack/diffusers) | max abs diff | CPU util pack/diffusers |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def secs(side):
        return f"{side['median']:.2f}" + "*" * bool(side["slow"]) + " (n=1)" * (side["n"] == 1) if side else "-"

    for r in results:
        p, d = r["sides"]["pack"], r["sides"].get("diffusers")
        ratio = f"{p['median'] / d['median']:.2f}" if d else "-"
        ok = " / ".join("-" if s is None else "yes" if s["shape_ok"] else f"NO {s['shape']}" for s in (p, d))
        diff = "-" if r["cmp"] is None else f"{r['cmp']['max_abs']:.1e}"
        util = f"{p['min_util']:.0%}/" + (f"{d['min_util']:.0%}" if d else "-")
        L.append(f"| {r['config']} | {r['op']} | {r['label']} | {r['batch']} | {secs(p)} | {secs(d)} | {ratio} "
                 f"| {fmt_peak(p)} | {fmt_peak(d) if d else '-'} | {ok} | {diff} | {util} |")
    L += ["", f"## Pack memory estimate vs measured (fp32, ACTIVATION_FACTOR = {factor})", "",
          "measured/estimated > 1: the estimate is low (the factor should be larger). implied factor = "
          "ACTIVATION_FACTOR x measured/estimated.", "",
          "| config | op | pack mode | batch | measured peak MiB | estimated MiB | measured/estimated | implied factor "
          "| plan |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r["sides"]["pack"]
        est, q = p["info"]["estimated_bytes"], (p["peak"] or p["peak_bound"]) / p["info"]["estimated_bytes"]
        L.append(f"| {r['config']} | {r['op']} | {r['label'].split(':')[0]} | {r['batch']} | {fmt_peak(p)} "
                 f"| {est / MIB:.0f} | {q:.2f} | {q * factor:.1f} | {p['info']['plan']} |")
    L += ["", "## Chunked + tiled vs whole-clip peak (pack) and tile-overlap compute", "",
          "overlap extra = sum of tile areas read / full area - 1 (0 = no recomputation).", "",
          "| config | op | batch | whole peak MiB | tiled peak MiB | tiled/whole | pack overlap extra | "
          "diffusers overlap extra | diffusers tiled shape |", "|---|---|---|---|---|---|---|---|---|"]
    peak = lambda r: (r["sides"]["pack"]["peak"] or r["sides"]["pack"]["peak_bound"]) / MIB  # noqa: E731
    for r in results:
        whole = next((w for w in results if (w["config"], w["op"], w["batch"]) == (r["config"], r["op"], r["batch"])
                      and w["label"].startswith("whole")), None)
        if not r["label"].startswith("tiled") or whole is None:
            continue
        p, d = r["sides"]["pack"], r["sides"].get("diffusers")
        dshape = "-" if not d else "x".join(map(str, d["shape"])) + (
            " (OK)" if d["shape_ok"] else f" (WRONG, expected {'x'.join(map(str, expected_shape(r)))})")
        L.append(f"| {r['config']} | {r['op']} | {r['batch']} | {peak(whole):.0f} | {peak(r):.0f} "
                 f"| {peak(r) / peak(whole):.2f} | {p['info']['overlap_extra']:.2f} "
                 f"| {format(d['info']['overlap_extra'], '.2f') if d else '-'} | {dshape} |")
    L.append("")
    if env.get("tiling_checks"):
        L += ["## diffusers tiling: output size at other tile settings", "",
              "Small random model, 1 frame, 16x24 latents (128x192 px); `enable_tiling(tile_sample_min_height=tile, "
              "tile_sample_min_width=tile, tile_overlap_factor_height=fh, tile_overlap_factor_width=fw)`; expected "
              "decode 128x192, encode 16x24. (1/6, 1/5) are diffusers' default factors.", "",
              "| tile px | fh | fw | decode | encode |", "|---|---|---|---|---|"]
        L += [f"| {c['tile']} | {c['fh']:.3g} | {c['fw']:.3g} | {c['decode']} | {c['encode']} |"
              for c in env["tiling_checks"]]
        L.append("")
    L += ["## Pack plans at full resolution (official widths, bf16, mode reference, budget 22 GiB)", ""]
    L += [f"* {label}: {plan}" for label, plan in env["plans"].items()]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = harness.parser(__doc__, quick="smoke run (< 1 min): small config only, smaller shapes",
                        out="markdown output (default benchmarks/results/vae_cpu.md, --quick: vae_cpu_quick.md); a "
                            ".json with the raw numbers is written next to it")
    ap.add_argument("--full", action="store_true", help="also official-width encode tiled vs whole (49 frames 64x96) "
                    "and the official chunked decode and encode at batch 2 (~4 more minutes)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the configurations of the previous (possibly interrupted) run, read from the .json "
                    "next to --out, whose timed calls were not slowed by other processes; measure only the rest")
    ap.add_argument("--stock-malloc", action="store_true", help="leave glibc malloc thresholds alone in the memory "
                    "call too (peaks then include allocator slack and vary from run to run)")
    args = harness.parse(ap, argv, "vae_cpu.md", quick_out="vae_cpu_quick.md")
    start, log = time.time(), harness.logger()
    ctx = mp.get_context("spawn")
    env = dict(harness.environment(ctx, "vae_benchmark.py", argv), **harness.run_once(ctx, _plans))
    if not args.quick:
        env["tiling_checks"] = harness.run_once(ctx, _diffusers_tiling_check, args.threads)
    json_path = os.path.splitext(args.out)[0] + ".json"

    def save(results, errors, partial):
        with open(json_path + ".tmp", "w") as f:
            json.dump(dict(env=env, args=vars(args), partial=partial, results=results, errors=errors), f, indent=1)
        os.replace(json_path + ".tmp", json_path)

    key = lambda r: (r["config"], r["op"], r["label"], r["batch"])  # noqa: E731
    previous = {}
    if args.resume and os.path.exists(json_path):
        with open(json_path) as f:
            previous = {key(r): r for r in json.load(f)["results"]
                        if "sides" in r and not any(s["slow"] for s in r["sides"].values())}
    tmp = tempfile.mkdtemp(prefix="fv_vae_bench_")
    try:
        weights = {name: os.path.join(tmp, f"{name}.pt") for name in ("small", "official")}
        for name in ("small",) if args.quick else ("small", "official"):
            harness.run_once(ctx, _make_weights, SMALL_WIDTHS if name == "small" else OFFICIAL_WIDTHS, weights[name])
        log("weights written")
        results, errors, kept = [], [], 0
        for case in build_cases(args, weights):
            if key(case) in previous:
                results.append(previous[key(case)])
                kept += 1
                continue
            log(f"{case['config']} | {case['op']} {case['label']} | batch {case['batch']}")
            try:
                r = run_case(ctx, case, args, tmp, log)
            except (RuntimeError, EOFError, OSError) as e:
                log(f"  FAILED: {e}")
                errors.append(f"{' | '.join(map(str, key(case)))}: {str(e).strip().splitlines()[-1]}")
                continue
            p, d = r["sides"]["pack"], r["sides"].get("diffusers")
            log(f"  pack {p['median']:.2f} s peak {fmt_peak(p)} MiB (estimate {p['info']['estimated_bytes'] / MIB:.0f} "
                "MiB)" + (f" | diffusers {d['median']:.2f} s peak {fmt_peak(d)} MiB shape_ok={d['shape_ok']}"
                          if d else "") + (f" | max|diff| {r['cmp']['max_abs']:.1e}" if r["cmp"] else ""))
            results.append(r)
            save(results, errors, partial=True)  # an interrupted run can --resume
        env["elapsed"] = time.time() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = render(results, env, args, kept)
    if errors:
        text += "\n## Failed configurations\n\n" + "".join(f"* {e}\n" for e in errors)
    print("\n" + text)
    harness.write_results(text, args.out, log)
    save(results, errors, partial=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
