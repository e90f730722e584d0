"""The benchmarks' shared harness: paths and constants, analytic DiT FLOPs, number formats, the command line and
the results writer, a random DiT and its inputs, and the CPU method of the pack-vs-peer benchmarks.

The method (``run_pair``): each side of a comparison runs in its own fresh spawned worker, which builds its model
and inputs, then makes a first call that is both the warm-up and the memory call (peak = growth of ``ru_maxrss``
during it over the RSS just before it, taken after ``gc``, ``malloc_trim`` and a reset of the kernel's RSS
high-water mark); then the timed calls alternate between the sides in ABBA order (a load drifting in time hits both
alike), the median is reported, and a sample with CPU utilisation under ``BUSY_UTIL`` (slowed by other processes)
is measured again. Forwards shorter than ``MIN_SAMPLE_S`` are timed as several back-to-back calls.

Torch is imported only inside functions: a parent that imported it would hand its RSS high-water mark to every
worker it spawns (Linux keeps ``ru_maxrss`` across fork + exec).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results")

MIB = 2**20
BUSY_UTIL = 0.85  # timed samples under this CPU utilisation were slowed by other processes
MIN_SAMPLE_S = 0.5  # a timed sample shorter than this repeats the call back to back (time per call reported)
H100_BF16_DENSE = 989e12  # FLOP/s, H100/H200 SXM dense bf16 (no sparsity)
TEXT_TOKENS = 226  # CogVideoX pads T5 prompts to 226 tokens


# ============================================================================ FLOPs, formats, command line, output


def dit_flops(layers, width, video, text, batch, text_dim=4096, mlp_ratio=4, time_dim=512, patch_in=16 * 2 * 2,
              stage2=False) -> dict:
    """FLOPs (2 per multiply-add) of one DiT forward, by part. Elementwise work (norms, RoPE, softmax, GELU,
    modulation) is left out: it is O(S*D) against the O(S*D^2) and O(S^2*D) below."""
    D, S, B = width, video + text, batch
    parts = {
        "qkv_out": layers * 2 * B * S * 4 * D * D,
        "mlp": layers * 2 * B * S * 2 * mlp_ratio * D * D,
        "attn": layers * 2 * 2 * B * S * S * D,  # Q K^T and P V over all heads (heads * head_dim = D)
        "patch_embed": 2 * B * video * patch_in * D,
        "text_proj": 2 * B * text * text_dim * D,
        "time_adaln_out": (3 if stage2 else 1) * 2 * B * (D * time_dim + time_dim * time_dim)
        + layers * 2 * 2 * B * time_dim * 6 * D + 2 * B * time_dim * 2 * D,  # time embeddings, adaLN, final norm
        "proj_out": 2 * B * video * D * patch_in,
    }
    parts["linear"] = sum(v for k, v in parts.items() if k != "attn")
    parts["total"] = parts["linear"] + parts["attn"]
    return parts


def fmt_flops(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def fmt_s(x: float) -> str:
    return f"{x:.3g} s" if x < 100 else f"{x:.0f} s"


def fmt_peak(side: dict) -> str:
    """MiB of a measured peak, or "<= bound" when ``ru_maxrss`` did not grow (an earlier high-water mark hid it)."""
    return f"<= {side['peak_bound'] / MIB:.0f}" if side["peak"] is None else f"{side['peak'] / MIB:.0f}"


def parser(doc: str, quick: str, out: str) -> argparse.ArgumentParser:
    """The options every pack-vs-peer benchmark takes; ``parse`` fills their defaults."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every worker (default 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per side after the warm-up (default 3, "
                    "1 with --quick)")
    ap.add_argument("--wait-idle", type=float, default=None, metavar="S",
                    help="wait up to S seconds for idle CPUs before each configuration (a quarter of it before each "
                         "timed call; default 60, 0 with --quick)")
    ap.add_argument("--retry-slow", type=int, default=2, metavar="N",
                    help=f"measure a timed sample again (up to N times) when its CPU utilisation is below "
                         f"{BUSY_UTIL * 100:.0f}%%, i.e. other processes slowed it (default 2)")
    ap.add_argument("--out", default=None, help=out)
    return ap


def parse(ap: argparse.ArgumentParser, argv, out, quick_out: str | None = None) -> argparse.Namespace:
    """Parse, filling the defaults: ``out`` (a file name under benchmarks/results, or a function of the arguments
    giving it) unless --quick, then ``quick_out``."""
    args = ap.parse_args(argv)
    out = out(args) if callable(out) else out
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 0:
        ap.error("--repeats must be >= 0")
    if args.wait_idle is None:
        args.wait_idle = 0.0 if args.quick else 60.0
    name = quick_out if args.quick else out
    args.out = args.out or (os.path.join(RESULTS, name) if name else None)
    return args


def logger(prefix: str = ""):
    start = time.time()
    return lambda msg: print(f"[{prefix}{time.time() - start:6.1f}s] {msg}", flush=True)


def write_results(text: str, out: str | None, say=print) -> None:
    """Write a results table when ``out`` is given, and say where."""
    if not out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    say(f"wrote {os.path.relpath(out, ROOT)}")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def environment(ctx, script: str, argv, modules=("torch", "diffusers")) -> dict:
    """Date, machine, command line, and the versions of ``modules`` (read in a child: the parent keeps no torch)."""
    env = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), cpus=os.cpu_count(), cpu=cpu_name(),
               python=platform.python_version(),
               cmd=f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv))
    return {**env, **run_once(ctx, _versions, modules)} if modules else env


def _versions(modules) -> dict:
    import importlib

    return {m: importlib.import_module(m).__version__ for m in modules}


# ============================================================================ a random DiT and its inputs


def random_dit(config, device="cpu", dtype=None):
    """A FlashVideoDiT of ``config`` with N(0, 0.02) weights from seed 0."""
    import torch

    from flashvideo_core.dit.model import FlashVideoDiT

    torch.manual_seed(0)
    model = FlashVideoDiT(config, device=device, dtype=dtype).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02)
    return model


def dit_inputs(config, batch: int, latent: tuple, device="cpu", dtype=None, timestep=500.0, ref_step=675.0):
    """(x[B, T, C, H, W], t, text context, stage-II conditions) of one forward; ``latent`` = (T, C, H, W)."""
    import torch

    frames, channels, height, width = latent
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(batch, frames, channels, height, width, generator=gen, device=device, dtype=dtype)
    ctx = torch.randn(batch, TEXT_TOKENS, config.text_hidden_size, generator=gen, device=device, dtype=dtype)
    t = torch.full((batch,), timestep, device=device)
    extra = {}
    if config.stage2_embeddings:
        extra = dict(latent_frames=torch.full((batch,), float(frames), device=device),
                     ref_step=torch.full((batch,), ref_step, device=device))
    return x, t, ctx, extra


# ============================================================================ worker side (imports torch)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _libc():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def set_malloc(tight: bool) -> None:
    """glibc thresholds. Tight: blocks >= 128 KiB are mmapped and go back to the OS when freed, so RSS follows the
    live tensors. Otherwise glibc's steady state in a long-running process (mmap threshold 32 MiB, trim twice that)."""
    libc = _libc()
    if libc is not None:
        mmap_at = 128 * 1024 if tight else 32 * MIB
        libc.mallopt(-3, mmap_at)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, mmap_at if tight else 2 * mmap_at)  # M_TRIM_THRESHOLD


def peak_call(call) -> tuple:
    """(output, stats) of one call: wall and CPU seconds, and its peak memory as the growth of ``ru_maxrss`` over
    the RSS just before it (``peak`` None when ``ru_maxrss`` did not grow; ``peak_bound`` is then an upper bound)."""
    import gc

    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:  # reset the RSS high-water mark
            f.write("5")
    except OSError:
        pass
    rss0, max0 = _rss_bytes(), _maxrss_bytes()
    w0, c0 = time.perf_counter(), time.process_time()
    out = call()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    max1 = _maxrss_bytes()
    return out, dict(wall=wall, cpu=cpu, peak=max1 - rss0 if max1 > max0 else None, peak_bound=max0 - rss0)


def _child(conn, fn, args) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except (EOFError, BrokenPipeError):  # the parent went away: nothing to report to
        pass
    except BaseException:  # noqa: BLE001  (report anything to the parent)
        try:
            conn.send(("error", traceback.format_exc()))
        except (OSError, BrokenPipeError):
            pass
    finally:
        conn.close()


def _serve(conn, build, spec: dict) -> None:
    """A measured side. ``build(spec)`` -> (call, info) or (call, info, convert); the first call's output is saved
    to ``spec['out_path']`` (through ``convert``) when that is set. Commands: "first", ("time", n), "quit"."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.set_grad_enabled(False)
    if spec.get("tight_malloc"):
        set_malloc(True)
    call, info, *convert = build(spec)
    torch.set_num_threads(spec["threads"])  # again, in case building imported something that changed it
    conn.send(("ready", info))
    while True:
        cmd = conn.recv()
        if cmd == "first":
            out, stats = peak_call(call)
            if spec.get("out_path"):
                torch.save((convert[0](out) if convert else out).contiguous(), spec["out_path"])
            conn.send(("ok", dict(stats, shape=list(out.shape))))
            del out
            if spec.get("tight_malloc"):
                set_malloc(False)  # memory measured: time the other calls as a warm process runs
        elif isinstance(cmd, tuple) and cmd[0] == "time":
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(cmd[1]):
                call()
            conn.send(("ok", dict(wall=(time.perf_counter() - w0) / cmd[1], cpu=(time.process_time() - c0) / cmd[1])))
        elif cmd == "quit":
            return
        else:
            raise ValueError(cmd)


def compare_outputs(paths) -> dict:
    """max |a - b|, max |b| and |a - b| / |b| (L2) of two saved outputs (b the reference); NaN if shapes differ."""
    import torch

    a, b = (torch.load(p, weights_only=True).float() for p in paths)
    if a.shape != b.shape:
        return dict(max_abs=float("nan"), ref_max=float("nan"), rel=float("nan"), same_shape=False)
    diff = (a - b).abs()
    return dict(max_abs=diff.max().item(), ref_max=b.abs().max().item(), rel=(diff.norm() / b.norm()).item(),
                same_shape=True)


# ============================================================================ parent side (no torch)


def machine_busy(interval: float = 0.5) -> float:
    """Fraction of all CPU time busy over ``interval`` (sampled while our workers are idle)."""

    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)

    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_until_idle(limit_s: float, log, threshold: float = 0.2) -> float:
    """Wait (up to ``limit_s``) until other processes use less than ``threshold`` of the CPUs; returns the load seen."""
    busy = machine_busy()
    deadline = time.time() + limit_s
    if busy > threshold and limit_s > 0:
        log(f"  machine {busy:.0%} busy with other processes; waiting up to {limit_s:.0f} s")
    while busy > threshold and time.time() < deadline:
        time.sleep(2)
        busy = machine_busy()
    return busy


class Worker:
    def __init__(self, ctx, target, *args):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()

    def recv(self):
        kind, payload = self.conn.recv()
        if kind == "error":
            raise RuntimeError(f"worker failed:\n{payload}")
        return payload

    def ask(self, cmd):
        self.conn.send(cmd)
        return self.recv()

    def close(self):
        try:
            self.conn.send("quit")
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


def run_once(ctx, fn, *args):
    """``fn(*args)`` in a fresh spawned process (``fn`` a module-level function); its result or a RuntimeError."""
    w = Worker(ctx, _child, fn, args)
    try:
        return w.recv()
    finally:
        w.proc.join(timeout=30)


def run_pair(ctx, builds: dict, specs: dict, args, log, repeats=None) -> dict:
    """Measure the sides ``builds`` (impl -> build function) with ``specs`` (impl -> spec; ``threads`` is added)
    as the module docstring says, ``repeats`` (default ``args.repeats``) timed calls each; with two sides that
    both set ``out_path``, their first outputs are compared (the second side is the reference)."""
    impls = list(builds)
    repeats = args.repeats if repeats is None else repeats
    busy = wait_until_idle(args.wait_idle, log)
    workers, info, first = {}, {}, {}
    walls, utils, redone, loads = ({i: [] for i in impls}, {i: [] for i in impls}, dict.fromkeys(impls, 0), [])
    inner = 1
    try:
        for impl in impls:  # load one after the other: the second load should not overlap the first call
            workers[impl] = Worker(ctx, _serve, builds[impl], dict(specs[impl], threads=args.threads))
            info[impl] = workers[impl].recv()
        for impl in impls:
            first[impl] = workers[impl].ask("first")
            log(f"  {impl:9s} warm-up {first[impl]['wall']:.2f} s")
        if repeats:
            # very short calls: one timed sample = `inner` back-to-back calls, reported per call; calibrated on
            # one more untimed call per side (the warm-up carries one-time costs)
            calib = min(f["wall"] for f in first.values())
            if calib < 10 * MIN_SAMPLE_S:
                calib = min(workers[impl].ask(("time", 1))["wall"] for impl in impls)
            inner = max(1, min(50, int(MIN_SAMPLE_S / max(1e-4, calib)))) if calib < MIN_SAMPLE_S else 1
        order = [impl for r in range(repeats) for impl in (impls if r % 2 == 0 else impls[::-1])]
        for impl in order:
            for attempt in range(1 + args.retry_slow):
                if args.wait_idle:
                    loads.append(wait_until_idle(args.wait_idle / 4, log))
                res = workers[impl].ask(("time", inner))
                util = res["cpu"] / (res["wall"] * args.threads)
                log(f"  {impl:9s} {res['wall']:.3f} s  (cpu {util:.0%})")
                if util >= BUSY_UTIL or attempt == args.retry_slow:
                    break
                redone[impl] += 1
                log(f"  {impl:9s} slowed by other processes; measuring this sample again")
            walls[impl].append(res["wall"])
            utils[impl].append(util)
    finally:
        for w in workers.values():
            w.close()
    paths = [specs[i].get("out_path") for i in impls]
    cmp = run_once(ctx, compare_outputs, paths) if len(impls) == 2 and all(paths) else None
    sides = {}
    for impl in impls:
        f = first[impl]
        timed = walls[impl] or [f["wall"]]
        util = utils[impl] or [f["cpu"] / (f["wall"] * args.threads)]
        sides[impl] = dict(median=statistics.median(timed), walls=timed, n=len(timed), min_util=min(util),
                           slow=sum(u < BUSY_UTIL for u in util), redone=redone[impl], peak=f["peak"],
                           peak_bound=f["peak_bound"], shape=f["shape"], info=info[impl])
    return dict(sides=sides, cmp=cmp, inner=inner, busy_before=max([busy] + loads))


# ============================================================================ ComfyUI hosts

def import_host(host_dir: str, host_args: str) -> None:
    """ComfyUI in-process on the CPU (as tests/support/native_checks.py does, plus ``host_args`` on its command
    line) + the pack as ``flashvideo_pack``."""
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
