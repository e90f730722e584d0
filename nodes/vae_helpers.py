"""The VAE nodes' shared parts, public so every node that runs the VAE (encode, decode, the stage-II upscale) uses
the same checks, slicing widgets and memory request."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..flashvideo_core.errors import InputError
from ..flashvideo_core.settings import SLICING
from ..flashvideo_core.vae.slicing import MODES, SlicingOptions, manual_tiles, plan_slicing
from .host import VAEHolder, setting_input
from .input_checks import combo_widget, refuse, widget
from .latents import SPATIAL

log = logging.getLogger("flashvideo")

ENCODE, DECODE = "FlashVideo VAE Encode", "FlashVideo VAE Decode"

FlashVideoVAE = io.Custom("FLASHVIDEO_VAE")


STAGES = ["stage1", "stage2"]


STAGE_NUMBERS = {"stage1": 1, "stage2": 2}


POSTERIORS = ["sample", "mode"]


FRAME_RULES = ["error", "trim", "pad"]




SCALE_TOOLTIP = (
    "Which FlashVideo stage this latent belongs to: stage1 (the 270p preview) or stage2 (the 1080p/2K refiner). "
    "LATENTs are unscaled, as everywhere in ComfyUI; the models apply their scale (stage1 x0.7, stage2 x1.15258426) "
    "when sampling. Decoding a stage2 latent in reference slicing uses the official left/right tiles; a latent "
    "that carries its stage is refused under the other one, and so is an untagged one (core Save/Load Latent "
    "drop the tag) whose size only one stage makes (about 256x480: stage1; 1080p or more: stage2)."
)


SLICING_TOOLTIP = (
    "reference: the official chunk boundaries (decode: latent frames 0-2 then pairs; encode: 17 frames then 16s), "
    "so official weights give the official look. Decoding a stage2 latent also uses the official split into a left "
    "and a right tile (128 px overlap), blended across the seam (the official code cuts hard); more tiles only when "
    "memory needs them. Other passes: tiles only when memory needs them. "
    "auto: the largest chunks and fewest tiles that fit the memory budget (GroupNorm statistics are per chunk, "
    "so the look differs slightly from reference). manual: the chunk and tile sizes below. "
    "whole: one pass, most memory."
)


def slicing_inputs() -> list:
    return [
        io.Combo.Input("slicing", options=list(MODES), default="reference", tooltip=SLICING_TOOLTIP),
        *(setting_input(name, setting) for name, setting in SLICING.items()),
    ]


def slicing_options(slicing, memory_budget_mb, chunk_latents, tile_size, tile_overlap,
                     stage: int = 1, node: str = "FlashVideo VAE") -> SlicingOptions:
    """``stage``: the FlashVideo stage of the decoded latent (2: the official stage-II tiles in reference mode).
    The widget ranges are checked here: API clients skip the frontend's limits."""
    combo_widget(slicing, node, "slicing", MODES)  # ComfyUI 0.3.64 does not check V3 combo values
    memory_budget_mb, chunk_latents, tile_size, tile_overlap = (
        widget(SLICING[name], value, node, name)
        for name, value in zip(SLICING, (memory_budget_mb, chunk_latents, tile_size, tile_overlap)))
    return SlicingOptions(
        mode=slicing,
        memory_budget_mib=memory_budget_mb or None,
        chunk_latents=chunk_latents,
        tile_latents=tile_size // SPATIAL or None,
        tile_overlap=tile_overlap // SPATIAL,
        stage=stage,
    )


def check_stage(stage: str, node: str = "FlashVideo VAE") -> str:
    return combo_widget(stage, node, "latent_scale", STAGES)


def check_vae(vae, node: str) -> VAEHolder:
    if not isinstance(vae, VAEHolder):
        raise refuse(node, "vae", f"got {type(vae).__name__}, not a FlashVideo VAE",
                     "connect the output of FlashVideo VAE Loader")
    return vae


def check_tiles(options: SlicingOptions, lat_h: int, lat_w: int, node: str) -> None:
    """Manual tiles no smaller than their overlap on a lat_h x lat_w latent (the core's one check, manual_tiles),
    refused naming the widgets before any VAE work."""
    if options.mode != "manual":
        return
    try:
        manual_tiles(lat_h, lat_w, options)
    except InputError as e:
        raise refuse(node, "tile_overlap", str(e), "lower tile_overlap or raise tile_size (both in pixels)") from None


def prepare(vae: VAEHolder, direction: str, shape: tuple, options: SlicingOptions, node: str = "FlashVideo VAE") -> int:
    """Load the VAE (ComfyUI evicts idle models to make room) and return the budget in bytes. ``shape``: the latent
    (decode) or the pixel video (encode)."""
    pixels = SPATIAL if direction == "encode" else 1
    check_tiles(options, shape[-2] // pixels, shape[-1] // pixels, node)
    wish = plan_slicing(vae.model.config, direction, shape, vae.dtype, options, int(0.8 * vae.total_memory_bytes()))
    vae.load(memory_required=wish.estimated_bytes)
    return int(0.9 * vae.free_memory_bytes())


def fit_frame_count(images: torch.Tensor, rule: str, node: str = ENCODE) -> torch.Tensor:
    """``images`` already checked by ``image_batch`` (at least one frame)."""
    combo_widget(rule, node, "frame_rule", FRAME_RULES)
    n = images.shape[0]
    if (n - 1) % 4 == 0:
        return images
    lower, upper = n - (n - 1) % 4, n - (n - 1) % 4 + 4
    if rule == "trim":
        log.warning("FlashVideo encode: trimming %d frames to %d (4k+1)", n, lower)
        return images[:lower]
    if rule == "pad":
        log.warning("FlashVideo encode: padding %d frames to %d (4k+1) by repeating the last frame", n, upper)
        return torch.cat([images, images[-1:].expand(upper - n, -1, -1, -1)], dim=0)
    raise InputError(
        f"{node}, input 'images': the VAE needs 4k+1 frames (..., 17, 33, 49, ...); got {n}. Fix: use {lower} or "
        f"{upper} frames, or set frame_rule to trim or pad."
    )


def check_size(frames: torch.Tensor) -> None:
    height, width = frames.shape[1:3]
    if height % SPATIAL or width % SPATIAL:
        raise InputError(
            f"{ENCODE}, input 'images': frame size {width}x{height} is not a multiple of {SPATIAL}. Fix: resize or "
            f"crop to {max(16, width // 16 * 16)}x{max(16, height // 16 * 16)} (multiples of 16 suit FlashVideo "
            "stage II)."
        )
