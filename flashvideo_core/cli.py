"""Command line: ``python -m flashvideo_core {demo,generate,make-tiny,convert} ...``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import torch

from .dit.attention import BACKENDS
from .dit.window_attention import DEFAULT_WINDOW
from .errors import FlashVideoError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _convert(args) -> int:
    from .checkpoints.convert import convert_checkpoint

    meta = convert_checkpoint(args.input, args.output, trust_pickle=args.trust_pickle, dtype=DTYPES.get(args.dtype),
                              quantize=args.quantize)
    print(f"wrote {args.output}: {meta['flashvideo.model']} from layout {meta['flashvideo.source_layout']}, "
          f"source sha256 {meta['flashvideo.source_sha256']}")
    return 0


def _make_tiny(args) -> int:
    from .tiny_install import make_tiny

    for kind, path in make_tiny(args.models_dir, force=args.force).items():
        print(f"{kind:>9}: {path}")
    print("random weights: every output is noise. Copy or point ComfyUI's models folder here to try workflows.")
    return 0


def _device_and_dtype(device_name: str, dtype_name: str) -> tuple[torch.device, torch.dtype]:
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    if dtype_name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return device, torch.bfloat16 if bf16 else torch.float32
    return device, DTYPES[dtype_name]


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
    from .pipeline import Stage1Settings, Stage2Settings
    from .stage2.bridge import RESOLUTIONS

    if args.resolution in RESOLUTIONS:
        height, width = RESOLUTIONS[args.resolution]
    else:
        try:
            width, height = (int(v) for v in args.resolution.lower().split("x"))
        except ValueError:
            raise FlashVideoError(f"--resolution must be 1080p, 2K or WIDTHxHEIGHT, got {args.resolution!r}") from None
    stage1 = Stage1Settings(height=args.height, width=args.width, frames=args.frames, steps=args.steps1,
                            cfg=args.cfg1, seed=args.seed)
    stage2 = Stage2Settings(height=height, width=width, noise_step=args.noise_step, steps=args.steps2,
                            cfg=args.cfg2, shift=args.shift,
                            seed=args.seed if args.seed_bridge is None else args.seed_bridge,
                            degrade_seed=args.seed_degrade, window=DEFAULT_WINDOW if args.window_attention else None)
    return stage1, stage2


def _write_outputs(result, out_dir: str, stem: str, fps: int) -> list:
    from .io.video import write_video
    from .stage2.bridge import resize_video

    os.makedirs(out_dir, exist_ok=True)
    written = []
    for b in range(result.preview.shape[0]):
        tag = stem if result.preview.shape[0] == 1 else f"{stem}_{b}"
        path = os.path.join(out_dir, f"{tag}_stage1.mp4")
        write_video(path, result.preview[b], fps=fps)
        written.append(path)
        if result.refined is None:
            continue
        path = os.path.join(out_dir, f"{tag}_stage2.mp4")
        write_video(path, result.refined[b], fps=fps)
        written.append(path)
        upsampled = resize_video(result.preview[b : b + 1], tuple(result.refined.shape[-2:]))[0]
        path = os.path.join(out_dir, f"{tag}_joint.mp4")
        write_video(path, torch.cat([upsampled.clamp(-1, 1), result.refined[b]], dim=-1), fps=fps, crf=15)
        written.append(path)
    return written


def _check_before_loading(args, stage1_settings, stage2_settings) -> None:
    """Everything that can be refused without the models: sizes, frame counts, steps and the output folder,
    so a bad argument never costs a model load (minutes with the real checkpoints)."""
    from .stage1.sampler import latent_shape
    from .stage2.bridge import check_target_size

    latent_shape(stage1_settings.frames, stage1_settings.height, stage1_settings.width)
    if stage1_settings.steps < 2:
        raise FlashVideoError(f"--steps1 must be at least 2, got {stage1_settings.steps}")
    if not args.skip_stage2:
        check_target_size(stage2_settings.height, stage2_settings.width)
    try:
        os.makedirs(args.output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.output_dir):
            pass
    except OSError as e:
        raise FlashVideoError(f"cannot write to --output-dir {args.output_dir}: {e.strerror or e}; choose another "
                              "folder") from None


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
    from .progress import ConsoleProgress
    from .vae.slicing import SlicingOptions

    device, dtype = _device_and_dtype(args.device, args.dtype)
    stage1_settings, stage2_settings = _settings(args)
    _check_before_loading(args, stage1_settings, stage2_settings)
    # the pipeline sets the stage per decode (stage-II latents get the official 1x2 tiles in reference mode)
    slicing = SlicingOptions(mode=args.slicing, memory_budget_mib=args.vae_memory_mb, hard_seams=args.hard_seams,
                             chunk_latents=args.chunk_latents, tile_latents=args.tile_size // 8 or None,
                             tile_overlap=args.tile_overlap // 8)
    t0 = time.perf_counter()
    stage1, stage2, vae = _load_models(args, dtype)
    load_seconds = time.perf_counter() - t0
    for model in (stage1, stage2):
        if model is not None:
            model.set_attention_backend(args.attention)
    _check_embedding_widths(contexts, names, {"stage1": stage1, "stage2": stage2})
    print(f"device {device}, dtype {dtype}; models loaded in {load_seconds:.2f} s")
    for (context1, context2), name in zip(contexts, names):
        result = generate_two_stage(stage1, stage2, vae, context1, context2, stage1_settings, stage2_settings,
                                    slicing, device=device, progress=ConsoleProgress())
        for path in _write_outputs(result, args.output_dir, f"{name}_seed{args.seed}", args.fps):
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
    contexts, names = [], []
    for k, path in enumerate(args.embedding):
        context1, prompt = load_prompt_embedding(path)
        context2 = load_prompt_embedding(args.embedding2[k])[0] if args.embedding2 else None
        print(f"prompt {k}: {prompt[:80]!r}" if prompt else f"prompt {k}: {path}")
        contexts.append((context1, context2))
        names.append(os.path.splitext(os.path.basename(path))[0])
    return _run_pipeline(args, contexts, names)


def _demo(args) -> int:
    """The two-stage pipeline on tiny random-weight checkpoints made on the fly."""
    from .tiny_install import make_tiny, tiny_prompt_embedding

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = make_tiny(tmp)
        print(f"made tiny random-weight checkpoints in {time.perf_counter() - t0:.2f} s")
        args.stage1, args.stage2, args.vae = paths["stage1"], paths["stage2"], paths["vae"]
        code = _run_pipeline(args, [(tiny_prompt_embedding(), None)], ["demo"])
    print("note: random weights, so every video is noise. For real videos run `python -m flashvideo_core generate "
          "--stage1 stage1.pt --stage2 stage2.pt --vae 3d-vae.pt --embedding prompt.safetensors` (README).")
    return code


def _add_pipeline_args(p: argparse.ArgumentParser, stage1_size: tuple, resolution: str, frames: int) -> None:
    p.add_argument("--output-dir", default="out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=stage1_size[0], help="stage-I height (multiple of 16)")
    p.add_argument("--width", type=int, default=stage1_size[1], help="stage-I width (multiple of 16)")
    p.add_argument("--frames", type=int, default=frames, help="4k+1 frames at 8 fps")
    p.add_argument("--steps1", type=int, default=51, help="stage-I steps (reference 51)")
    p.add_argument("--cfg1", type=float, default=8.0, help="stage-I DynamicCFG base (6-8)")
    p.add_argument("--resolution", default=resolution, help="stage-II size: 1080p (1072x1920), 2K (1440x2560) or WxH")
    p.add_argument("--noise-step", type=int, default=675, help="latent degradation step (650-750)")
    p.add_argument("--steps2", type=int, default=5, help="stage-II Euler steps = NFE (4-6)")
    p.add_argument("--cfg2", type=float, default=13.0, help="stage-II CFG (10-13)")
    p.add_argument("--shift", type=float, default=2.5, help="stage-II time-grid shift (2-3.5)")
    p.add_argument("--skip-stage2", action="store_true", help="stop after the preview")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", *sorted(DTYPES)], help="auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--seed-bridge", type=int, default=None, help="seed of the bridge's posterior sample (default --seed)")
    p.add_argument("--seed-degrade", type=int, default=None, help="seed of the degradation noise (default --seed)")
    p.add_argument("--attention", default="sdpa", choices=list(BACKENDS),
                   help="attention kernel of both DiTs: sdpa, or flash / sage when installed (else sdpa)")
    p.add_argument("--window-attention", action="store_true",
                   help="stage II: experimental 7x11x11 local attention (less work at 1080p/2K, blurs fast motion)")
    p.add_argument("--slicing", default="reference", choices=["reference", "auto", "manual", "whole"],
                   help="VAE slicing mode")
    p.add_argument("--chunk-latents", type=int, default=None, help="--slicing manual: latent frames per chunk (even)")
    p.add_argument("--tile-size", type=int, default=0, help="--slicing manual: tile edge in pixels (0: no tiles)")
    p.add_argument("--tile-overlap", type=int, default=128, help="VAE tile overlap in pixels (blended)")
    p.add_argument("--vae-memory-mb", type=int, default=None, help="VAE memory cap in MiB (default: free memory)")
    p.add_argument("--hard-seams", action="store_true",
                   help="cut the VAE tiles at their boundary as the official code does (with --slicing reference: "
                   "its exact stage-II decode) instead of blending them")
    p.add_argument("--fps", type=int, default=8)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flashvideo_core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="rewrite any accepted checkpoint as one pack-native safetensors file")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--dtype", choices=sorted(DTYPES), help="cast floating tensors (default: keep)")
    c.add_argument("--trust-pickle", action="store_true", help="allow a pickle that runs code (only for files you trust)")
    c.add_argument("--quantize", choices=["scaled_fp8"],
                   help="DiTs only: transformer-block weights in ComfyUI's scaled fp8 format (about half of bf16)")
    c.set_defaults(func=_convert)
    g = sub.add_parser("generate", help="prompt embedding(s) -> stage-I, stage-II and side-by-side mp4s")
    g.add_argument("--stage1", required=True, help="stage1.pt (or any accepted stage-I layout)")
    g.add_argument("--stage2", help="stage2.pt (or any accepted stage-II layout)")
    g.add_argument("--vae", required=True, help="3d-vae.pt (or any accepted VAE layout)")
    g.add_argument("--embedding", nargs="+", required=True,
                   help="prompt embedding file(s) saved by FlashVideo Save Prompt Embedding (README)")
    g.add_argument("--embedding2", nargs="+", help="stage-II embedding(s), e.g. of 'medium motion, <prompt>'")
    _add_pipeline_args(g, (256, 480), "1080p", 49)
    g.set_defaults(func=_generate)
    t = sub.add_parser("make-tiny", help="write tiny random-weight checkpoints into a ComfyUI models folder")
    t.add_argument("models_dir")
    t.add_argument("--force", action="store_true", help="overwrite existing files")
    t.set_defaults(func=_make_tiny)
    d = sub.add_parser("demo", help="the two-stage pipeline on tiny random weights (CPU, about a minute)")
    _add_pipeline_args(d, (64, 96), "192x128", 49)
    d.set_defaults(func=_demo)
    return p


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FlashVideoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
