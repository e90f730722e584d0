"""VAE nodes: load the CogVideoX 3D VAE, encode a frame batch, decode in memory-bounded slices.

Widget order and node ids are frozen (saved workflows store widget values by position):
new inputs may only be appended, optional, at the end.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

import comfy.model_management as mm
import folder_paths

from ..flashvideo_core.errors import InputError
from ..flashvideo_core.settings import SEED, SLICING, resolve_dtype
from ..flashvideo_core.vae.loader import load_vae
from ..flashvideo_core.vae.model import DiagonalGaussian
from ..flashvideo_core.vae.slicing import MODES, SlicingOptions, decode_sliced, encode_sliced, plan_slicing
from .comfy_bridge import DTYPE_CHOICES, ComfyProgress, ManagedModel, setting_input
from .input_checks import combo_widget, image_batch, latent_tensor, model_file, refuse, shape_stage, widget

log = logging.getLogger("flashvideo")

FlashVideoVAE = io.Custom("FLASHVIDEO_VAE")

CATEGORY = "FlashVideo"
STAGES = ["stage1", "stage2"]
STAGE_NUMBERS = {"stage1": 1, "stage2": 2}
STAGE_KEY = "flashvideo_stage"  # the same key as sampling_nodes.STAGE_KEY (that module imports the host's samplers)
POSTERIORS = ["sample", "mode"]
ENCODE, DECODE = "FlashVideo VAE Encode", "FlashVideo VAE Decode"
FRAME_RULES = ["error", "trim", "pad"]
SPATIAL = 8

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


def _slicing_inputs() -> list:
    return [
        io.Combo.Input("slicing", options=list(MODES), default="reference", tooltip=SLICING_TOOLTIP),
        *(setting_input(name, setting) for name, setting in SLICING.items()),
    ]


def _slicing_options(slicing, memory_budget_mb, chunk_latents, tile_size, tile_overlap,
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


def _check_stage(stage: str, node: str = "FlashVideo VAE") -> str:
    return combo_widget(stage, node, "latent_scale", STAGES)


def _check_vae(vae, node: str) -> ManagedModel:
    if not isinstance(vae, ManagedModel):
        raise refuse(node, "vae", f"got {type(vae).__name__}, not a FlashVideo VAE",
                     "connect the output of FlashVideo VAE Loader")
    return vae


def carried_stage(samples: dict, node: str, name: str = "samples"):
    """The stage tag a LATENT carries (1 or 2), or None when it lost it (core Save/Load Latent)."""
    carried = samples.get(STAGE_KEY)
    if carried is not None and (type(carried) is not int or carried not in (1, 2)):  # not True, not 1.0
        raise refuse(node, name, f"its stage tag {carried!r} is not 1 or 2",
                     "connect the latent straight from a FlashVideo node")
    return carried


def latent_stage(samples: dict, z: torch.Tensor, node: str, name: str = "samples"):
    """(stage, how known): the carried tag, else the stage the latent's size points to, else (None, None)."""
    carried = carried_stage(samples, node, name)
    if carried is not None:
        return carried, "tagged"
    guessed = shape_stage(z)
    return guessed, None if guessed is None else "size"


def untagged_cause(z: torch.Tensor, stage: int) -> str:
    return (f"this latent carries no stage tag (core Save/Load Latent keep only the tensor) and its "
            f"{z.shape[-1] * SPATIAL}x{z.shape[-2] * SPATIAL} px size is that of a stage-{stage} latent")


def _prepare(vae: ManagedModel, direction: str, shape: tuple, options: SlicingOptions) -> int:
    """Load the VAE (ComfyUI evicts idle models to make room) and return the budget in bytes."""
    wish = plan_slicing(vae.model.config, direction, shape, vae.dtype, options, int(0.8 * vae.total_memory_bytes()))
    vae.load(memory_required=wish.estimated_bytes)
    return int(0.9 * vae.free_memory_bytes())


class FlashVideoVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoVAELoader",
            display_name="FlashVideo VAE Loader",
            category=CATEGORY,
            description="Loads the CogVideoX 3D causal VAE used by both FlashVideo stages (3d-vae.pt, or a "
            "converted/diffusers safetensors) from the models/vae folder. The layout and architecture are read "
            "from the file itself.",
            inputs=[
                io.Combo.Input(
                    "vae_name", options=folder_paths.get_filename_list("vae"),
                    tooltip="The FlashVideo VAE file in models/vae (official 3d-vae.pt, diffusers "
                    "AutoencoderKLCogVideoX weights, or a file from `python -m flashvideo_core convert`).",
                ),
                io.Combo.Input(
                    "dtype", options=DTYPE_CHOICES, default="auto",
                    tooltip="auto: bf16 on GPUs that support it, fp32 on CPU. fp16 can overflow to NaN (black video).",
                ),
            ],
            outputs=[FlashVideoVAE.Output(display_name="vae")],
        )

    @classmethod
    def execute(cls, vae_name: str, dtype: str = "auto") -> io.NodeOutput:
        node = "FlashVideo VAE Loader"
        combo_widget(dtype, node, "dtype", DTYPE_CHOICES)
        path = model_file(folder_paths, "vae", vae_name, node, "vae_name")
        load_device, offload_device = mm.vae_device(), mm.vae_offload_device()
        torch_dtype = resolve_dtype(dtype, load_device)
        if dtype == "fp16":
            log.warning("FlashVideo: fp16 can overflow to NaN in CogVideoX models; prefer bf16 or fp32")
        model = load_vae(path, device=offload_device, dtype=torch_dtype)
        return io.NodeOutput(ManagedModel(model, load_device, offload_device, torch_dtype, path))


class FlashVideoVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoVAEDecode",
            display_name="FlashVideo VAE Decode (sliced)",
            category=CATEGORY,
            description="Decodes a FlashVideo latent to video frames in memory-bounded temporal chunks and blended "
            "spatial tiles, with a progress bar per chunk and interrupt support. 1080p fits in 24 GB.",
            inputs=[
                FlashVideoVAE.Input("vae", tooltip="From FlashVideo VAE Loader."),
                io.Latent.Input("samples", tooltip="A video latent [batch, 16, frames, height/8, width/8]."),
                io.Combo.Input("latent_scale", options=STAGES, default="stage1", tooltip=SCALE_TOOLTIP),
                *_slicing_inputs(),
            ],
            outputs=[io.Image.Output(display_name="frames", tooltip="Video frames as an image batch [frames, H, W, 3].")],
        )

    @classmethod
    def execute(cls, vae: ManagedModel, samples: dict, latent_scale: str = "stage1", slicing: str = "reference",
                memory_budget_mb: int = 0, chunk_latents: int = 2, tile_size: int = 0, tile_overlap: int = 128) -> io.NodeOutput:
        vae = _check_vae(vae, DECODE)
        z = latent_tensor(samples, DECODE, "samples", vae.model.config.latent_channels)  # unscaled: the VAE's space
        _check_stage(latent_scale, DECODE)
        stage, known = latent_stage(samples, z, DECODE)
        if known == "tagged" and f"stage{stage}" != latent_scale:
            raise refuse(DECODE, "latent_scale", f"this latent comes from FlashVideo stage {stage} but latent_scale "
                         f"is {latent_scale}", f"set latent_scale to stage{stage}")
        if known == "size" and f"stage{stage}" != latent_scale:
            raise refuse(DECODE, "latent_scale", f"{untagged_cause(z, stage)}, but latent_scale is {latent_scale}",
                         f"set latent_scale to stage{stage} (the latent's stage: stage1 for the stage-I preview, "
                         "stage2 for Stage II Upscale/Refiner outputs)")
        options = _slicing_options(slicing, memory_budget_mb, chunk_latents, tile_size, tile_overlap,
                                   stage=STAGE_NUMBERS[latent_scale], node=DECODE)
        budget = _prepare(vae, "decode", tuple(z.shape), options)
        video = decode_sliced(vae.model, z, options, ComfyProgress(), output_device=mm.intermediate_device(), budget_bytes=budget)
        if not torch.isfinite(video).all():
            raise InputError(
                f"the VAE produced NaN/Inf values (VAE dtype {vae.dtype}). This usually means fp16 overflow: "
                "reload the VAE with dtype bf16 or fp32."
            )
        frames = ((video.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).flatten(0, 1).contiguous()
        return io.NodeOutput(frames)


class FlashVideoVAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoVAEEncode",
            display_name="FlashVideo VAE Encode (sliced)",
            category=CATEGORY,
            description="Encodes video frames (an image batch) to a FlashVideo latent, sampling the posterior as the "
            "reference stage-II bridge does, in memory-bounded chunks and tiles.",
            inputs=[
                FlashVideoVAE.Input("vae", tooltip="From FlashVideo VAE Loader."),
                io.Image.Input("images", tooltip="Video frames as an image batch; width and height multiples of 8 "
                               "(16 for FlashVideo stage II)."),
                io.Combo.Input("latent_scale", options=STAGES, default="stage2", tooltip=SCALE_TOOLTIP),
                io.Combo.Input(
                    "posterior", options=["sample", "mode"], default="sample",
                    tooltip="sample: mean + std * noise (the reference bridge); mode: the mean (deterministic).",
                ),
                setting_input("seed", SEED, tooltip="Seed of the posterior sample noise (drawn on the CPU: same on "
                              "every device)."),
                io.Combo.Input(
                    "frame_rule", options=FRAME_RULES, default="error",
                    tooltip="The VAE needs 4k+1 frames (e.g. 17, 33, 49). error: stop with a message; trim: drop the "
                    "last frames; pad: repeat the last frame (the decoded video is then longer). Only 8k+1 counts "
                    "(9, 17, ..., 49) decode back to the same count: like CogVideoX, an even number of latent "
                    "frames decodes to 4 frames per latent.",
                ),
                *_slicing_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, vae: ManagedModel, images: torch.Tensor, latent_scale: str = "stage2", posterior: str = "sample",
                seed: int = 0, frame_rule: str = "error", slicing: str = "reference", memory_budget_mb: int = 0,
                chunk_latents: int = 2, tile_size: int = 0, tile_overlap: int = 128) -> io.NodeOutput:
        vae = _check_vae(vae, ENCODE)
        stage = _check_stage(latent_scale, ENCODE)
        combo_widget(posterior, ENCODE, "posterior", POSTERIORS)
        seed = widget(SEED, seed, ENCODE, "seed")
        options = _slicing_options(slicing, memory_budget_mb, chunk_latents, tile_size, tile_overlap, node=ENCODE)
        frames = _fit_frame_count(image_batch(images, ENCODE), frame_rule, ENCODE)
        _check_size(frames)
        video = (frames.movedim(-1, 0).unsqueeze(0) * 2 - 1).float()  # [1, 3, T, H, W] in [-1, 1]
        budget = _prepare(vae, "encode", tuple(video.shape), options)
        moments = encode_sliced(vae.model, video, options, ComfyProgress(preview=False),
                                output_device=mm.intermediate_device(), budget_bytes=budget)
        gaussian = DiagonalGaussian(moments)
        z = gaussian.sample(torch.Generator().manual_seed(seed)) if posterior == "sample" else gaussian.mode()
        return io.NodeOutput({"samples": z, STAGE_KEY: STAGE_NUMBERS[stage]})


def _fit_frame_count(images: torch.Tensor, rule: str, node: str = ENCODE) -> torch.Tensor:
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


def _check_size(frames: torch.Tensor) -> None:
    height, width = frames.shape[1:3]
    if height % SPATIAL or width % SPATIAL:
        raise InputError(
            f"{ENCODE}, input 'images': frame size {width}x{height} is not a multiple of {SPATIAL}. Fix: resize or "
            f"crop to {max(16, width // 16 * 16)}x{max(16, height // 16 * 16)} (multiples of 16 suit FlashVideo "
            "stage II)."
        )
