"""Command line: ``python -m flashvideo_core {demo,convert} ...``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import torch

from .errors import FlashVideoError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _convert(args) -> int:
    from .checkpoints.convert import convert_checkpoint

    meta = convert_checkpoint(args.input, args.output, trust_pickle=args.trust_pickle, dtype=DTYPES.get(args.dtype))
    print(f"wrote {args.output}: {meta['flashvideo.model']} from layout {meta['flashvideo.source_layout']}, "
          f"source sha256 {meta['flashvideo.source_sha256']}")
    return 0


def _demo(args) -> int:
    """VAE round trip on an embedded tiny model (grows into the two-stage demo)."""
    from .io.video import write_video
    from .tiny import write_tiny_vae
    from .vae.loader import load_vae
    from .vae.slicing import SlicingOptions, decode_sliced, encode_sliced

    out_dir = args.output_dir
    os.makedirs(out_dir, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        vae_path = args.vae or write_tiny_vae(os.path.join(tmp, "tiny-3d-vae.pt"))
        vae = load_vae(vae_path)
    timings["load VAE"] = time.perf_counter() - t0
    frames, height, width = args.frames, args.height, args.width
    t = torch.linspace(0, 1, frames)[:, None, None]
    yy = torch.linspace(-1, 1, height)[None, :, None]
    xx = torch.linspace(-1, 1, width)[None, None, :]
    shape = (frames, height, width)
    channels = [torch.sin(6 * xx + 4 * t), torch.cos(5 * yy - 3 * t), torch.sin(4 * (xx + yy) + 2 * t)]
    video = torch.stack([c.expand(shape) for c in channels]).unsqueeze(0).contiguous()
    options = SlicingOptions(mode=args.slicing)
    t0 = time.perf_counter()
    moments = encode_sliced(vae, video, options)
    timings["encode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    recon = decode_sliced(vae, moments[:, : vae.config.latent_channels], options)
    timings["decode"] = time.perf_counter() - t0
    path = os.path.join(out_dir, "vae_roundtrip.mp4")
    write_video(path, torch.cat([video, recon.clamp(-1, 1)], dim=-1)[0], fps=8)
    for name, seconds in timings.items():
        print(f"{name:>10}: {seconds:6.2f} s")
    print(f"latent {tuple(moments[:, :16].shape)}, decoded {tuple(recon.shape)}; wrote {path}")
    if not args.vae:
        print("note: the embedded VAE has random weights, so the right half is noise; pass --vae 3d-vae.pt for the real one")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flashvideo_core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="rewrite any accepted checkpoint as one pack-native safetensors file")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--dtype", choices=sorted(DTYPES), help="cast floating tensors (default: keep)")
    c.add_argument("--trust-pickle", action="store_true", help="allow a pickle that runs code (only for files you trust)")
    c.set_defaults(func=_convert)
    d = sub.add_parser("demo", help="run the main job on an embedded tiny model (CPU, seconds)")
    d.add_argument("--output-dir", default="out")
    d.add_argument("--vae", help="a real VAE file instead of the embedded tiny one")
    d.add_argument("--frames", type=int, default=17)
    d.add_argument("--height", type=int, default=64)
    d.add_argument("--width", type=int, default=96)
    d.add_argument("--slicing", default="reference", choices=["reference", "auto", "whole"])
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
