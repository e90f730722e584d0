"""VAE nodes: encode a frame batch, decode in memory-bounded slices (the loader is in loader_nodes.py).

Widget order and node ids are frozen (saved workflows store widget values by position):
new inputs may only be appended, optional, at the end.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

import comfy.model_management as mm

from ..flashvideo_core.errors import InputError
from ..flashvideo_core.settings import SEED
from ..flashvideo_core.vae.model import DiagonalGaussian
from ..flashvideo_core.vae.slicing import decode_sliced, encode_sliced
from .host import ComfyProgress, VAEHolder, setting_input
from .input_checks import combo_widget, image_batch, latent_tensor, refuse, widget
from .latents import STAGE_KEY, latent_stage, untagged_cause
from .vae_helpers import (
    DECODE, ENCODE, FRAME_RULES, POSTERIORS, SCALE_TOOLTIP, STAGE_NUMBERS, STAGES, FlashVideoVAE, check_size,
    check_stage, check_vae, fit_frame_count, prepare, slicing_inputs, slicing_options,
)

log = logging.getLogger("flashvideo")

CATEGORY = "FlashVideo"


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
                *slicing_inputs(),
            ],
            outputs=[io.Image.Output(display_name="frames", tooltip="Video frames as an image batch [frames, H, W, 3].")],
        )

    @classmethod
    def execute(cls, vae: VAEHolder, samples: dict, latent_scale: str = "stage1", slicing: str = "reference",
                memory_budget_mb: int = 0, chunk_latents: int = 2, tile_size: int = 0, tile_overlap: int = 128) -> io.NodeOutput:
        vae = check_vae(vae, DECODE)
        z = latent_tensor(samples, DECODE, "samples", vae.model.config.latent_channels)  # unscaled: the VAE's space
        check_stage(latent_scale, DECODE)
        stage, known = latent_stage(samples, z, DECODE)
        if known == "tagged" and f"stage{stage}" != latent_scale:
            raise refuse(DECODE, "latent_scale", f"this latent comes from FlashVideo stage {stage} but latent_scale "
                         f"is {latent_scale}", f"set latent_scale to stage{stage}")
        if known == "size" and f"stage{stage}" != latent_scale:
            raise refuse(DECODE, "latent_scale", f"{untagged_cause(z, stage)}, but latent_scale is {latent_scale}",
                         f"set latent_scale to stage{stage} (the latent's stage: stage1 for the stage-I preview, "
                         "stage2 for Stage II Upscale/Refiner outputs)")
        options = slicing_options(slicing, memory_budget_mb, chunk_latents, tile_size, tile_overlap,
                                   stage=STAGE_NUMBERS[latent_scale], node=DECODE)
        budget = prepare(vae, "decode", tuple(z.shape), options, DECODE)
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
                    "last frames; pad: repeat the last frame (the decoded video is then longer).",
                ),
                *slicing_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, vae: VAEHolder, images: torch.Tensor, latent_scale: str = "stage2", posterior: str = "sample",
                seed: int = 0, frame_rule: str = "error", slicing: str = "reference", memory_budget_mb: int = 0,
                chunk_latents: int = 2, tile_size: int = 0, tile_overlap: int = 128) -> io.NodeOutput:
        vae = check_vae(vae, ENCODE)
        stage = check_stage(latent_scale, ENCODE)
        combo_widget(posterior, ENCODE, "posterior", POSTERIORS)
        seed = widget(SEED, seed, ENCODE, "seed")
        options = slicing_options(slicing, memory_budget_mb, chunk_latents, tile_size, tile_overlap, node=ENCODE)
        frames = fit_frame_count(image_batch(images, ENCODE), frame_rule, ENCODE)
        check_size(frames)
        video = (frames.movedim(-1, 0).unsqueeze(0) * 2 - 1).float()  # [1, 3, T, H, W] in [-1, 1]
        budget = prepare(vae, "encode", tuple(video.shape), options, ENCODE)
        moments = encode_sliced(vae.model, video, options, ComfyProgress(preview=False),
                                output_device=mm.intermediate_device(), budget_bytes=budget)
        gaussian = DiagonalGaussian(moments)
        z = gaussian.sample(torch.Generator().manual_seed(seed)) if posterior == "sample" else gaussian.mode()
        return io.NodeOutput({"samples": z, STAGE_KEY: STAGE_NUMBERS[stage]})


