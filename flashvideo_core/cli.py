"""Command line: ``python -m flashvideo_core {demo,generate,enhance,make-tiny,convert} ...``.

Every argument is checked before a model loads (minutes with the real checkpoints) and every output path
before generation starts, so a bad value never costs a run and finished work is never thrown away by a
late check. Errors end in one line naming the argument, the cause and the fix.

Under ``torchrun --nproc-per-node N`` the DiTs run sequence-parallel (docs/PARALLEL.md): process 0 prints and
writes, the others only compute. The pack's checks fail alike in every process, so process 0 reports them; an
error of one process only (an exception no check caught, its GPU) is reported by that process, once; processes
that stop because a peer failed stay silent.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import sys
import tempfile
import time

import torch

from .dit.attention import BACKENDS
from .dit.memory import MODES as MEMORY_MODES
from .dit.window_attention import DEFAULT_WINDOW
from .errors import FlashVideoError, InputError
from .io.output_files import check_output_path
from .enhance.colour import COLOUR_FIXES
from .parallel.layout import ThisProcessFailed, layout_from_environment, start_parallel, stop_parallel
from .parallel.sequence import PeerFailed
from .settings import (
    COLOUR_FIX_DEFAULT, COLOUR_FIX_HELP, DTYPES, ENHANCE_OVERLAP, FPS, SLICING, VAE_MEMORY_MB, Setting,
    Stage1Settings, Stage2Settings, check_settings, resolve_dtype, setting,
)
from .vae.slicing import MODES as SLICING_MODES

DEBUG_ENV = "FLASHVIDEO_DEBUG"
#: the outputs of one clip (each written through io.output_files)
OUTPUT_KINDS = ("stage1", "stage2", "joint")
#: the pipeline settings with a flag of their own (stage II's size comes from --resolution, the seeds below)
FLAGS = {"stage1.height": "--height", "stage1.width": "--width", "stage1.frames": "--frames", "stage1.steps": "--steps1",
         "stage1.cfg": "--cfg1", "stage2.noise_step": "--noise-step", "stage2.steps": "--steps2", "stage2.cfg": "--cfg2",
         "stage2.shift": "--shift"}

#: the stage-II settings enhance takes (its size comes from --resolution, its seed from --seed)
ENHANCE_FLAGS = {key: flag for key, flag in FLAGS.items() if key.startswith("stage2.")}
CRF = Setting(14, 0, 51, help="H.264 quality")
#: device types the models run on (torch.device also parses meta, xla, ... which cannot hold a run's weights)
RUNNABLE_DEVICES = ("cpu", "cuda", "mps")


def _input_file(flag: str, path: str, what: str) -> None:
    if not os.path.exists(path):
        raise FlashVideoError(f"{flag} {path}: no such file; give the path of {what}")
    if os.path.isdir(path):
        raise FlashVideoError(f"{flag} {path} is a folder; give the path of {what} (the file itself)")


def _writable_folder(flag: str, folder: str) -> None:
    """Create ``folder`` if needed and prove a file can be written there."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FlashVideoError(f"{flag} {folder} is a file, not a folder; choose a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise FlashVideoError(f"cannot write to {flag} {folder}: {e.strerror or e}; choose another folder") from None


def _convert(args) -> int:
    from .checkpoints.convert import convert_checkpoint

    _input_file("input", args.input, "the checkpoint to convert")
    _writable_folder("output folder", os.path.dirname(os.path.abspath(args.output)))
    check_output_path(args.output, "output", overwrite=args.force, overwrite_flag="--force")
    meta = convert_checkpoint(args.input, args.output, trust_pickle=args.trust_pickle, dtype=DTYPES.get(args.dtype),
                              quantize=args.quantize, overwrite=args.force)
    print(f"wrote {args.output}: {meta['flashvideo.model']} from layout {meta['flashvideo.source_layout']}, "
          f"source sha256 {meta['flashvideo.source_sha256']}")
    return 0


def _make_tiny(args) -> int:
    from .tiny_install import make_tiny

    if os.path.exists(args.models_dir) and not os.path.isdir(args.models_dir):
        raise FlashVideoError(f"models_dir {args.models_dir} is a file, not a folder; give ComfyUI's models folder")
    written = make_tiny(args.models_dir, force=args.force)
    for kind, path in written.items():
        print(f"{kind:>9}: {path}")
    if "input_clip" not in written:
        print("no example clip written (no ComfyUI input folder beside this models folder, or the clip is already "
              "there): the enhance template reads a clip from ComfyUI/input")
    print("random weights: every output is noise. Copy or point ComfyUI's models folder here to try workflows.")
    return 0


def _device_and_dtype(device_name: str, dtype_name: str) -> tuple[torch.device, torch.dtype]:
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device_name)
    except (RuntimeError, ValueError):
        raise FlashVideoError(f"--device {device_name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in RUNNABLE_DEVICES:
        raise FlashVideoError(f"--device {device_name}: models cannot run on {device.type!r} devices; use auto, cpu, "
                              "cuda or cuda:N")
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise FlashVideoError(f"--device {device_name}: no such CUDA device here; use --device cpu (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FlashVideoError(f"--device {device_name}: no Apple GPU (MPS) here; use --device cpu (or auto)")
    return device, resolve_dtype(dtype_name, device)


#: with torchrun, this process's layout once the processes have met (empty before, and for one process)
_joined: dict = {}


def _join_processes(args, device: torch.device) -> tuple:
    """(sequence-parallel group or None, this process's device). With torchrun: every flag is checked, the
    processes meet and each takes the GPU of its LOCAL_RANK; a single process gets (None, ``device``)."""
    layout = layout_from_environment()
    if layout is None:
        return None, device
    if getattr(args, "window_attention", False):
        raise FlashVideoError("--window-attention does not run over several processes (torchrun); leave it out: "
                              "the processes split full attention instead")
    if device.type == "cuda" and device.index is not None:
        raise FlashVideoError(f"--device {device}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                              "give --device cuda (or auto)")
    parallel = start_parallel(layout, device.type)
    _joined["layout"] = layout
    print(layout.describe())
    return parallel, layout.device(device.type)


def _progress():
    from .progress import ConsoleProgress, Progress

    layout = _joined.get("layout")
    return ConsoleProgress() if layout is None or layout.is_main else Progress()


def _writes() -> bool:
    """Whether this process writes outputs (the only one, or process 0 of several)."""
    layout = _joined.get("layout")
    return layout is None or layout.is_main


def _load_models(args, dtype: torch.dtype):
    from .dit.loader import load_dit
    from .vae.loader import load_vae

    stage1_dtype = torch.bfloat16 if dtype == torch.float16 else dtype
    if stage1_dtype != dtype:
        print("note: stage I overflows in fp16 (as CogVideoX-5B); running it in bf16")
    stage1 = load_dit(args.stage1, device="cpu", dtype=stage1_dtype, expect_stage="stage1")
    stage2 = None if args.skip_stage2 else load_dit(args.stage2, device="cpu", dtype=dtype, expect_stage="stage2")
    vae = load_vae(args.vae, device="cpu", dtype=dtype)
    return stage1, stage2, vae


def _settings(args):
    from .stage2.bridge import RESOLUTIONS

    if args.resolution in RESOLUTIONS:
        height, width = RESOLUTIONS[args.resolution]
    else:
        try:
            width, height = (int(v) for v in args.resolution.lower().split("x"))
        except (ValueError, AttributeError):
            raise FlashVideoError(f"--resolution must be 1080p, 2K or WIDTHxHEIGHT, got {args.resolution!r}") from None
    flagged = {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in FLAGS.items()}
    stage1, stage2 = ({key[7:]: value for key, value in flagged.items() if key.startswith(stage)}
                      for stage in ("stage1.", "stage2."))
    return (Stage1Settings(**stage1, seed=args.seed),
            Stage2Settings(**stage2, height=height, width=width, seed=args.seed if args.seed_bridge is None else
                           args.seed_bridge, degrade_seed=args.seed_degrade,
                           window=DEFAULT_WINDOW if args.window_attention else None))


def _output_path(out_dir: str, stem: str, b: int, batch: int, kind: str) -> str:
    return os.path.join(out_dir, f"{stem if batch == 1 else f'{stem}_{b}'}_{kind}.mp4")


def _stem(args, name: str) -> str:
    return f"{name}_seed{args.seed}"


def _write_outputs(result, out_dir: str, stem: str, fps: int) -> list:
    from .io.video import write_video
    from .stage2.bridge import resize_video

    os.makedirs(out_dir, exist_ok=True)
    written = []
    batch = result.preview.shape[0]
    for b in range(batch):
        path = _output_path(out_dir, stem, b, batch, "stage1")
        write_video(path, result.preview[b], fps=fps, folder=out_dir)
        written.append(path)
        if result.refined is None:
            continue
        path = _output_path(out_dir, stem, b, batch, "stage2")
        write_video(path, result.refined[b], fps=fps, folder=out_dir)
        written.append(path)
        upsampled = resize_video(result.preview[b : b + 1], tuple(result.refined.shape[-2:]))[0]
        path = _output_path(out_dir, stem, b, batch, "joint")
        write_video(path, torch.cat([upsampled.clamp(-1, 1), result.refined[b]], dim=-1), fps=fps, crf=15,
                    folder=out_dir)
        written.append(path)
    return written


def _setting_names(args) -> dict:
    """How the CLI calls each pipeline setting, for error messages."""
    return {**FLAGS, "stage1.seed": "--seed", "stage2.height": "--resolution (height)",
            "stage2.width": "--resolution (width)", "stage2.seed": "--seed" if args.seed_bridge is None else
            "--seed-bridge", "stage2.degrade_seed": "--seed-degrade"}


def _check_arguments(args) -> None:
    """Every number, size and seed, before any file is read (pure: no model, no output written)."""

    stage1_settings, stage2_settings = _settings(args)
    # stage II's flags are checked with --skip-stage2 too: a value that could never run is a mistake either way
    check_settings(stage1_settings, stage2_settings, _setting_names(args))
    FPS.check(args.fps, "--fps")
    if args.skip_stage2 and args.window_attention:
        raise FlashVideoError("--window-attention is a stage-II option and --skip-stage2 skips stage II; drop one")
    _check_runtime_arguments(args)


def _check_runtime_arguments(args) -> None:
    """The flags of ``_add_runtime_args``, named as the user typed them."""
    checks = [("--tile-size", SLICING["tile_size"], args.tile_size),
              ("--tile-overlap", SLICING["tile_overlap"], args.tile_overlap)]
    unset = [("--chunk-latents", SLICING["chunk_latents"], args.chunk_latents),
             ("--vae-memory-mb", VAE_MEMORY_MB, args.vae_memory_mb)]
    for flag, declared, value in checks + [entry for entry in unset if entry[2] is not None]:
        declared.check(value, flag)
    manual_only = [flag for flag, given in (("--chunk-latents", args.chunk_latents is not None),
                                            ("--tile-size", bool(args.tile_size))) if given]
    if manual_only and args.slicing != "manual":
        raise FlashVideoError(f"{' and '.join(manual_only)} only appl{'y' if len(manual_only) > 1 else 'ies'} with "
                              f"--slicing manual (this run has --slicing "
                              f"{args.slicing}); add --slicing manual, or drop {' and '.join(manual_only)}")
    _device_and_dtype(args.device, args.dtype)


def _check_tiles(args, frame_sizes: list) -> None:
    """``--tile-size`` against ``--tile-overlap`` on every frame size (height, width) the run will decode, before
    any model loads (in manual slicing; the other modes choose their own tiles)."""
    from .vae.slicing import manual_tiles

    if args.slicing != "manual" or not args.tile_size:
        return
    for height, width in frame_sizes:
        manual_tiles(height // 8, width // 8, _slicing_options(args), names=("--tile-size", "--tile-overlap"))


def _slicing_options(args):
    from .vae.slicing import SlicingOptions

    return SlicingOptions(mode=args.slicing, memory_budget_mib=args.vae_memory_mb, hard_seams=args.hard_seams,
                          chunk_latents=args.chunk_latents, tile_latents=args.tile_size // 8 or None,
                          tile_overlap=args.tile_overlap // 8)


def _check_outputs(args, contexts: list, names: list) -> None:
    """The output folder and every file about to be written, before any model loads: an existing video is
    never replaced without --overwrite, and no run is lost to a name the file system refuses."""
    _writable_folder("--output-dir", args.output_dir)
    kinds = OUTPUT_KINDS[:1] if args.skip_stage2 else OUTPUT_KINDS
    planned = {}
    for (context1, _), name in zip(contexts, names):
        batch = context1.shape[0]
        for b in range(batch):
            for kind in kinds:
                path = _output_path(args.output_dir, _stem(args, name), b, batch, kind)
                if path in planned:
                    raise FlashVideoError(f"--embedding: {planned[path]!r} and {name!r} would write the same "
                                          f"{os.path.basename(path)}; rename one of the embedding files")
                planned[path] = name
                check_output_path(path, "--output-dir", overwrite=args.overwrite, overwrite_flag="--overwrite",
                                  folder=args.output_dir,
                                  fix_name=f"rename the embedding file {name!r} (outputs are named "
                                  "<embedding>_seed<seed>_<stage>.mp4)")


def _check_video_writer() -> None:
    try:
        importlib.import_module("av")
    except ImportError:
        raise FlashVideoError("PyAV is not installed, so no mp4 could be written; install it (pip install av) "
                              "and run again") from None


def _check_embedding_widths(contexts: list, names: list, models: dict) -> None:
    """A prompt embedding must come from the text encoder the DiTs were trained with (T5-XXL: 4096 wide)."""
    for (context1, context2), name in zip(contexts, names):
        for stage, context in (("stage1", context1), ("stage2", context2 if context2 is not None else context1)):
            model = models.get(stage)
            if model is not None and context.shape[-1] != model.config.text_hidden_size:
                raise FlashVideoError(
                    f"prompt embedding {name!r} is {context.shape[-1]} wide but the {stage} model expects "
                    f"{model.config.text_hidden_size} (T5-v1.1-XXL states); save it again with FlashVideo Save "
                    "Prompt Embedding from a T5-XXL text encode")


def _run_pipeline(args, contexts: list, names: list) -> int:
    from .pipeline import generate_two_stage

    device, dtype = _device_and_dtype(args.device, args.dtype)
    stage1_settings, stage2_settings = _settings(args)
    _check_outputs(args, contexts, names)
    _check_video_writer()
    _input_file("--stage1", args.stage1, "stage1.pt (or another accepted stage-I layout)")
    if not args.skip_stage2:
        _input_file("--stage2", args.stage2, "stage2.pt (or another accepted stage-II layout)")
    _input_file("--vae", args.vae, "3d-vae.pt (or another accepted VAE layout)")
    # the pipeline sets the stage per decode (stage-II latents get the official 1x2 tiles in reference mode)
    slicing = _slicing_options(args)
    _check_tiles(args, [(stage1_settings.height, stage1_settings.width)] +
                 ([] if args.skip_stage2 else [(stage2_settings.height, stage2_settings.width)]))
    parallel, device = _join_processes(args, device)
    t0 = time.perf_counter()
    stage1, stage2, vae = _load_models(args, dtype)
    load_seconds = time.perf_counter() - t0
    for model in (stage1, stage2):
        if model is not None:
            model.set_attention_backend(args.attention)
            if parallel is not None:
                model.enable_sequence_parallel(parallel)
    _check_embedding_widths(contexts, names, {"stage1": stage1, "stage2": stage2})
    print(f"device {device}, dtype {dtype}; models loaded in {load_seconds:.2f} s")
    for (context1, context2), name in zip(contexts, names):
        result = generate_two_stage(stage1, stage2, vae, context1, context2, stage1_settings, stage2_settings,
                                    slicing, device=device, progress=_progress(), memory=args.memory)
        for path in _write_outputs(result, args.output_dir, _stem(args, name), args.fps) if _writes() else ():
            print(f"wrote {path}")
        for phase, seconds in result.timings.items():
            print(f"{phase:>15}: {seconds:7.2f} s")
    return 0


def _generate(args) -> int:
    from .text_embeddings import load_prompt_embedding

    if not args.stage2 and not args.skip_stage2:
        raise FlashVideoError("--stage2 stage2.pt is needed (or --skip-stage2 for the preview only)")
    if args.embedding2 and len(args.embedding2) != len(args.embedding):
        raise FlashVideoError("give one --embedding2 per --embedding (or none: stage II reuses the stage-I embedding)")
    _check_arguments(args)
    what = "a prompt embedding saved by FlashVideo Save Prompt Embedding (README)"
    for flag, paths in (("--embedding", args.embedding), ("--embedding2", args.embedding2 or [])):
        for path in paths:
            _input_file(flag, path, what)
    contexts, names = [], []
    for k, path in enumerate(args.embedding):
        context1, prompt = load_prompt_embedding(path)
        context2 = load_prompt_embedding(args.embedding2[k])[0] if args.embedding2 else None
        if context2 is not None and context2.shape[0] != context1.shape[0]:
            raise FlashVideoError(f"--embedding2 {args.embedding2[k]} holds {context2.shape[0]} prompts but "
                                  f"--embedding {path} holds {context1.shape[0]}; pair embeddings of the same batch")
        print(f"prompt {k}: {prompt[:80]!r}" if prompt else f"prompt {k}: {path}")
        contexts.append((context1, context2))
        names.append(os.path.splitext(os.path.basename(path))[0])
    return _run_pipeline(args, contexts, names)


def _enhance_resolution(value: str):
    from .enhance.geometry import INPUT_SIZE, SHORT_SIDES

    if value in SHORT_SIDES or value == INPUT_SIZE:
        return value
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except (ValueError, AttributeError):
        raise FlashVideoError(f"--resolution must be 1080p, 2K, input or WIDTHxHEIGHT, got {value!r}") from None
    return height, width


def _enhance_key(args, info) -> dict:
    """Everything that changes the enhanced frames: a resumed run must have the same."""
    from .enhance.resume import file_identity

    names = ("resolution", "seed", "overlap", "colour_fix", "crf", "dtype", "memory", "attention", "window_attention",
             "slicing", "chunk_latents", "tile_size", "tile_overlap", "hard_seams",
             *(flag[2:].replace("-", "_") for flag in ENHANCE_FLAGS.values()))
    return {"input": file_identity(args.input), "stage2": file_identity(args.stage2), "vae": file_identity(args.vae),
            "embedding": file_identity(args.embedding), "frames": info.frames,
            **{name: getattr(args, name) for name in names}}


def _enhance(args) -> int:
    """``enhance IN OUT``: every flag and path checked before a model loads; the clip streams from file to file
    window by window; a killed run resumes (enhance/resume.py)."""
    from .constants import LATENT_SCALE_STAGE2
    from .dit.loader import load_dit
    from .dit.window_attention import DEFAULT_WINDOW
    from .enhance.enhancer import enhance_video, plan_enhance
    from .enhance.resume import ResumableOutput, work_folder
    from .io.video import probe_video, read_frames
    from .pipeline import resident
    from .stage2.refiner import refine_stage2
    from .text_embeddings import load_prompt_embedding
    from .vae.loader import load_vae

    stage2_values = {key[7:]: getattr(args, flag[2:].replace("-", "_")) for key, flag in ENHANCE_FLAGS.items()}
    check_settings(Stage1Settings(), Stage2Settings(**stage2_values, seed=args.seed), {**ENHANCE_FLAGS,
                   "stage2.seed": "--seed"})
    CRF.check(args.crf, "--crf")
    ENHANCE_OVERLAP.check(args.overlap, "--overlap")
    _check_runtime_arguments(args)
    resolution = _enhance_resolution(args.resolution)
    _input_file("input", args.input, "the video to enhance")
    _check_video_writer()
    info = probe_video(args.input)
    try:
        plan = plan_enhance(info.frames, (info.height, info.width), resolution, args.overlap, args.noise_step,
                            args.seed, args.colour_fix)
    except InputError as e:  # the size the input and --resolution give (the other flags are checked above)
        raise FlashVideoError(f"--resolution {args.resolution}: {e}") from None
    _check_tiles(args, [plan.grid])
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise FlashVideoError("output: the output is the input file; choose another output name")
    _writable_folder("output folder", os.path.dirname(os.path.abspath(args.output)))
    check_output_path(args.output, "output", overwrite=args.overwrite, overwrite_flag="--overwrite")
    check_output_path(os.path.join(work_folder(args.output), "window_00000.mp4"), "output")
    for flag, path, what in (("--stage2", args.stage2, "stage2.pt (or another accepted stage-II layout)"),
                             ("--vae", args.vae, "3d-vae.pt (or another accepted VAE layout)"),
                             ("--embedding", args.embedding, "a prompt embedding saved by FlashVideo Save Prompt "
                              "Embedding (README)")):
        _input_file(flag, path, what)
    print(f"enhance {args.input}: {plan.describe()}, {float(info.fps):g} fps"
          f"{', audio copied' if info.has_audio else ''}")
    device, dtype = _device_and_dtype(args.device, args.dtype)
    parallel, device = _join_processes(args, device)
    output = ResumableOutput(args.output, _enhance_key(args, info), args.crf, args.restart) if _writes() else None
    context, _ = load_prompt_embedding(args.embedding)
    model = load_dit(args.stage2, device="cpu", dtype=dtype, expect_stage="stage2")
    model.set_attention_backend(args.attention)
    if parallel is not None:
        model.enable_sequence_parallel(parallel)
    _check_embedding_widths([(context, None)], [os.path.basename(args.embedding)], {"stage2": model})
    vae = load_vae(args.vae, device=device, dtype=dtype)  # small: stays on the device; the DiT visits per window
    pending = output.start(info.fps) if output is not None else None
    if parallel is not None:  # every process starts at process 0's resume point
        pending = _follow_resume_point(parallel, plan, pending)
    progress = _progress()
    window = DEFAULT_WINDOW if args.window_attention else None

    def refine(latent):
        with resident(model, device):
            refined = refine_stage2(model, context, latent * LATENT_SCALE_STAGE2, args.noise_step, args.steps2,
                                    args.cfg2, args.shift, progress, memory=args.memory, window=window)
        return refined / LATENT_SCALE_STAGE2

    start = time.perf_counter()
    if output is None:  # another process of a torchrun: it only helps with the stage-II forwards
        enhance_video(vae, read_frames(args.input), plan, refine, lambda frames: None, _slicing_options(args),
                      progress, pending=pending)
        return 0
    try:
        enhance_video(vae, read_frames(args.input), plan, refine, output.write, _slicing_options(args), progress,
                      pending=pending, on_window=output.saved)
    except KeyboardInterrupt:
        print(f"stopped after window {output.window} of {len(plan.windows)}; run the same command again to resume",
              file=sys.stderr)
        raise
    frames = output.finish(len(plan.windows), args.input if info.has_audio else None)
    seconds = time.perf_counter() - start
    print(f"wrote {args.output}: {frames} frames, {plan.size[1]}x{plan.size[0]}, {seconds:.1f} s "
          f"({frames / max(seconds, 1e-9):.2f} frames/s)")
    return 0


def _follow_resume_point(parallel, plan, pending):
    """Process 0's resume point on every process. The others write nothing, so their copy of the overlap frames
    is a stand-in of the right shape (the cross-fade they compute is thrown away)."""
    from .enhance.enhancer import Pending

    next_window = parallel.from_main_object(pending.next_window if pending is not None else 0)
    if pending is not None:
        return pending
    shared = plan.windows[next_window].shared if 0 < next_window < len(plan.windows) else 0
    return Pending(next_window, torch.zeros(shared, *plan.size, 3) if shared else None)


def _demo(args) -> int:
    """The two-stage pipeline on tiny random-weight checkpoints made on the fly."""
    from .tiny_install import make_tiny, tiny_prompt_embedding

    _check_arguments(args)
    _check_outputs(args, [(tiny_prompt_embedding(), None)], ["demo"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = make_tiny(tmp)
        print(f"made tiny random-weight checkpoints in {time.perf_counter() - t0:.2f} s")
        args.stage1, args.stage2, args.vae = paths["stage1"], paths["stage2"], paths["vae"]
        code = _run_pipeline(args, [(tiny_prompt_embedding(), None)], ["demo"])
    print("note: random weights, so every video is noise. For real videos run `python -m flashvideo_core generate "
          "--stage1 stage1.pt --stage2 stage2.pt --vae 3d-vae.pt --embedding prompt.safetensors` (README).")
    return code


def _add_pipeline_args(p: argparse.ArgumentParser, resolution: str, **defaults) -> None:
    p.add_argument("--output-dir", default="out")
    p.add_argument("--seed", type=int, default=0, help="seed of stage I (and of stage II unless set below)")
    _add_setting_flags(p, FLAGS, defaults)
    p.add_argument("--resolution", default=resolution, help="stage-II size: 1080p (1072x1920), 2K (1440x2560) or WxH")
    p.add_argument("--skip-stage2", action="store_true", help="stop after the preview")
    p.add_argument("--seed-bridge", type=int, default=None, help="seed of the bridge's posterior sample (default --seed)")
    p.add_argument("--seed-degrade", type=int, default=None, help="seed of the degradation noise (default --seed)")
    _add_runtime_args(p)
    p.add_argument("--fps", type=int, default=FPS.default)
    p.add_argument("--overwrite", action="store_true", help="replace output videos that already exist")


def _add_setting_flags(p: argparse.ArgumentParser, flags: dict, defaults: dict) -> None:
    for key, flag in flags.items():
        stage, name = key.split(".")
        declared = setting(Stage1Settings if stage == "stage1" else Stage2Settings, name)
        p.add_argument(flag, type=float if declared.is_float else int, default=defaults.get(name, declared.default),
                       help=f"stage {'I' if stage == 'stage1' else 'II'}: {declared.help}")


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    """Device, precision, memory, attention and VAE slicing: shared by generate, demo and enhance."""
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", *sorted(DTYPES)], help="auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--memory", default="auto", choices=list(MEMORY_MODES),
                   help="how each guided DiT step runs (same result up to float rounding): auto = the fastest that "
                        "fits the free memory; batched, sequential (cond then uncond) or lean (also in token chunks, "
                        "least memory)")
    p.add_argument("--attention", default="sdpa", choices=list(BACKENDS),
                   help="attention kernel of the DiTs: sdpa, or flash / sage when installed (else sdpa)")
    p.add_argument("--window-attention", action="store_true",
                   help="stage II: experimental 7x11x11 local attention (less work at 1080p/2K, blurs fast motion)")
    p.add_argument("--slicing", default="reference", choices=list(SLICING_MODES),
                   help="VAE slicing mode")
    p.add_argument("--chunk-latents", type=int, default=None, help="--slicing manual: latent frames per chunk (even)")
    p.add_argument("--tile-size", type=int, default=SLICING["tile_size"].default, help=SLICING["tile_size"].help)
    p.add_argument("--tile-overlap", type=int, default=SLICING["tile_overlap"].default,
                   help=SLICING["tile_overlap"].help)
    p.add_argument("--vae-memory-mb", type=int, default=None, help="VAE memory cap in MiB (default: free memory)")
    p.add_argument("--hard-seams", action="store_true",
                   help="cut the VAE tiles at their boundary as the official code does (with --slicing reference: "
                   "its exact stage-II decode) instead of blending them")


def build_parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=f"show the traceback of an unexpected error (or set {DEBUG_ENV}=1)")
    p = argparse.ArgumentParser(prog="python -m flashvideo_core", description=__doc__, parents=[debug])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", parents=[debug], help="rewrite any accepted checkpoint as one pack-native safetensors file")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--dtype", choices=sorted(DTYPES), help="cast floating tensors (default: keep)")
    c.add_argument("--trust-pickle", action="store_true", help="allow a pickle that runs code (only for files you trust)")
    c.add_argument("--force", action="store_true", help="replace the output file if it exists")
    c.add_argument("--quantize", choices=["scaled_fp8"],
                   help="DiTs only: transformer-block weights in ComfyUI's scaled fp8 format (about half of bf16)")
    c.set_defaults(func=_convert)
    g = sub.add_parser("generate", parents=[debug], help="prompt embedding(s) -> stage-I, stage-II and side-by-side mp4s")
    g.add_argument("--stage1", required=True, help="stage1.pt (or any accepted stage-I layout)")
    g.add_argument("--stage2", help="stage2.pt (or any accepted stage-II layout)")
    g.add_argument("--vae", required=True, help="3d-vae.pt (or any accepted VAE layout)")
    g.add_argument("--embedding", nargs="+", required=True,
                   help="prompt embedding file(s) saved by FlashVideo Save Prompt Embedding (README)")
    g.add_argument("--embedding2", nargs="+", help="stage-II embedding(s), e.g. of 'medium motion, <prompt>'")
    _add_pipeline_args(g, "1080p")
    g.set_defaults(func=_generate)
    e = sub.add_parser("enhance", parents=[debug], help="enhance a video of any length with stage II (resumable)")
    e.add_argument("input", help="the video to enhance (mp4, mov, mkv, webm, ...); its frame rate and audio are kept")
    e.add_argument("output", help="the enhanced mp4")
    e.add_argument("--stage2", required=True, help="stage2.pt (or any accepted stage-II layout)")
    e.add_argument("--vae", required=True, help="3d-vae.pt (or any accepted VAE layout)")
    e.add_argument("--embedding", required=True, help="prompt embedding describing the video (FlashVideo Save Prompt "
                   "Embedding; the reference prefixes stage II's prompt with 'medium motion,')")
    e.add_argument("--resolution", default="1080p",
                   help="output size: 1080p or 2K (short side 1080 / 1440, aspect kept), input (the input's size), "
                   "or WxH (exact, even)")
    e.add_argument("--seed", type=int, default=0, help="seed of the posterior and degradation noise")
    _add_setting_flags(e, ENHANCE_FLAGS, {})
    e.add_argument("--overlap", type=int, default=ENHANCE_OVERLAP.default, help=ENHANCE_OVERLAP.help)
    e.add_argument("--colour-fix", "--color-fix", dest="colour_fix", default=COLOUR_FIX_DEFAULT,
                   choices=list(COLOUR_FIXES), help=COLOUR_FIX_HELP)
    e.add_argument("--crf", type=int, default=14, help="H.264 quality of the output (lower: better, bigger)")
    _add_runtime_args(e)
    e.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    e.add_argument("--restart", action="store_true", help="discard an unfinished earlier run of this output")
    e.set_defaults(func=_enhance)
    t = sub.add_parser("make-tiny", parents=[debug], help="write tiny random-weight checkpoints into a ComfyUI models folder")
    t.add_argument("models_dir")
    t.add_argument("--force", action="store_true", help="overwrite existing files")
    t.set_defaults(func=_make_tiny)
    d = sub.add_parser("demo", parents=[debug], help="the two-stage pipeline on tiny random weights (CPU, about a minute)")
    _add_pipeline_args(d, "192x128", height=64, width=96)
    d.set_defaults(func=_demo)
    return p


def _unexpected(e: BaseException) -> str:
    """One line for an error no check caught: what happened, what to try, how to see the traceback."""
    detail = (str(e).strip().splitlines() or [""])[0][:300]
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return (f"out of memory ({detail}); lower --vae-memory-mb or use --slicing auto, a smaller --resolution "
                "or fewer --frames")
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror or detail}; check the path, its permissions and the free disk space"
    return (f"unexpected {type(e).__name__}: {detail}. This case is not handled by the pack; please report it. "
            f"Rerun with --debug (or {DEBUG_ENV}=1) for the traceback")


def _report(message: str, quiet: bool, own: bool) -> None:
    """An error line from process 0 (or a single process), and from another process only when the error is its
    own (``own``: an unexpected exception or :class:`ThisProcessFailed`); the pack's checks fail alike everywhere,
    so process 0 speaks for all."""
    if not quiet:
        print(message, file=sys.stderr)
    elif own:
        layout = layout_from_environment()
        print(f"{message} (process {layout.rank} of {layout.world_size})", file=sys.stderr)


def main(argv=None) -> int:
    try:
        layout = layout_from_environment()
    except FlashVideoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    quiet = layout is not None and not layout.is_main  # another process of a torchrun: compute, don't talk
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    hush = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()  # output discarded
    with hush, (contextlib.redirect_stderr(sys.stdout) if quiet else contextlib.nullcontext()):
        args = build_parser().parse_args(argv)  # a usage error is the same everywhere: process 0 prints it
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        with hush:
            return args.func(args)
    except PeerFailed:
        return 1
    except FlashVideoError as e:
        _report(f"error: {e}", quiet, own=isinstance(e, ThisProcessFailed))
        return 2
    except KeyboardInterrupt:
        if not quiet:
            print("error: interrupted; files already written are complete, nothing half-written is left",
                  file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        _report(f"error: {_unexpected(e)}", quiet, own=True)
        return 1
    finally:
        if _joined.pop("layout", None) is not None:
            stop_parallel()
