"""Rewrite any accepted model file as one pack-native safetensors file.

The output holds tensors in the pack's canonical (official) names plus metadata:
the model kind, the architecture config and the sha256 of the source file, so the
result loads with no config file and can be traced back to what it came from.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..errors import CheckpointError
from . import metadata as md
from . import scaled_fp8
from .files import describe
from .io import RawCheckpoint, read_checkpoint, sha256_of_file, write_safetensors
from .strict import check_state_dict

log = logging.getLogger("flashvideo")


@dataclass(frozen=True)
class ModelKind:
    """How to recognise, canonicalise and build one kind of model."""

    name: str
    detect: Callable[[RawCheckpoint], bool]
    canonicalize: Callable[[RawCheckpoint], tuple]  # -> (config, state dict, layout)
    build: Callable[[object], nn.Module]


def model_kinds() -> list[ModelKind]:
    from ..dit import loader as dit_loader
    from ..dit.model import FlashVideoDiT
    from ..vae import loader as vae_loader
    from ..vae.model import CogVideoXVAE

    def detects(detect):
        def check(raw):
            try:
                detect(raw)
                return True
            except CheckpointError:
                return False

        return check

    return [
        ModelKind("vae", detects(vae_loader.detect_vae_layout), vae_loader.canonical_vae_state_dict, CogVideoXVAE),
        ModelKind("dit", detects(dit_loader.detect_dit_layout), dit_loader.canonical_dit_state_dict, FlashVideoDiT),
    ]


def detect_kind(raw: RawCheckpoint) -> ModelKind:
    for kind in model_kinds():
        if kind.detect(raw):
            return kind
    raise CheckpointError(f"{raw.path}: no known FlashVideo model found ({md.describe_foreign_checkpoint(raw)})")


def check_output_path(src: str, dst: str, overwrite: bool) -> None:
    """Refuse, before reading anything, an output that would clobber the input, a folder or an existing file."""
    shown = describe(dst)
    if os.path.lexists(dst) and os.path.exists(src) and os.path.samefile(src, dst) or \
            os.path.abspath(src) == os.path.abspath(dst):
        raise CheckpointError(f"convert: the output {shown} is the input file; give another output name")
    if os.path.isdir(dst):
        raise CheckpointError(f"convert: the output {shown} is a folder; give a file name inside it, "
                              f"e.g. {os.path.join(shown, 'model.safetensors')}")
    if os.path.lexists(dst) and not overwrite:
        raise CheckpointError(f"convert: the output {shown} already exists; choose another name, or pass --force "
                              "(overwrite=True) to replace it")
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise CheckpointError(f"convert: the output folder {describe(parent)} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise CheckpointError(f"convert: the output folder {describe(parent)} is not writable; pick another one")


def convert_checkpoint(
    src: str, dst: str, trust_pickle: bool = False, dtype: Optional[torch.dtype] = None, quantize: Optional[str] = None,
    overwrite: bool = False,
) -> dict:
    """Convert ``src`` to ``dst``; returns the metadata written. ``quantize="scaled_fp8"`` stores a DiT's
    transformer-block weights in the scaled fp8 format ComfyUI reads natively (about half the bytes of bf16).
    An existing ``dst`` is refused before any work unless ``overwrite`` (the CLI's ``--force``)."""
    if quantize not in (None, "scaled_fp8"):
        raise CheckpointError(f"convert: unknown quantisation {quantize!r}; the one available is scaled_fp8")
    check_output_path(src, dst, overwrite)
    raw = read_checkpoint(src, trust_pickle=trust_pickle)
    kind = detect_kind(raw)
    config, tensors, layout = kind.canonicalize(raw)
    with torch.device("meta"):
        model = kind.build(config)
    check_state_dict(model, tensors, raw.path, layout)
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    if quantize:
        if kind.name != "dit":
            raise CheckpointError(f"convert: {quantize} is for the DiTs (stage1.pt/stage2.pt), not the {kind.name}")
        tensors = scaled_fp8.quantize(tensors, config)
    meta = {
        md.FORMAT_KEY: md.FORMAT_VERSION,
        md.MODEL_KEY: kind.name,
        md.CONFIG_KEY: config.to_json(),
        md.SOURCE_SHA_KEY: sha256_of_file(src),
        md.SOURCE_LAYOUT_KEY: layout,
        md.SOURCE_NAME_KEY: os.path.basename(src),
    }
    write_safetensors(dst, tensors, meta)
    log.info("converted %s (%s, layout %s) -> %s", src, kind.name, layout, dst)
    return meta
