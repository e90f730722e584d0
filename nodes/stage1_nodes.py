"""Model loader and the stage-I sampler (the cheap 270p preview).

The sampler returns a standard LATENT, so core SaveLatent/LoadLatent can keep the
preview and a failed decode never costs a resample.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

import comfy.model_management as mm
import folder_paths

from ..flashvideo_core.dit.attention import BACKENDS
from ..flashvideo_core.dit.fp8 import store_blocks_in_fp8
from ..flashvideo_core.dit.loader import load_dit
from ..flashvideo_core.dit.memory import forward_bytes
from ..flashvideo_core.errors import InputError
from ..flashvideo_core.stage1.sampler import TRAINED_FRAMES, TRAINED_SIZE, latent_shape, sample_stage1
from ..flashvideo_core.stage1.schedule import DEFAULT_CFG, DEFAULT_STEPS
from ..flashvideo_core.text_embeddings import check_context
from .comfy_bridge import DTYPE_CHOICES, ComfyProgress, ManagedModel, resolve_dtype

log = logging.getLogger("flashvideo")

FlashVideoModel = io.Custom("FLASHVIDEO_MODEL")
CATEGORY = "FlashVideo"
FP8_CHOICE = "fp8_e4m3fn"


class FlashVideoModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoModelLoader",
            display_name="FlashVideo Model Loader",
            category=CATEGORY,
            description="Loads a FlashVideo DiT (stage1.pt or stage2.pt, or converted safetensors) from "
            "models/diffusion_models. The stage is detected from the weights and logged; LoRA is merged at load.",
            inputs=[
                io.Combo.Input("model_name", options=folder_paths.get_filename_list("diffusion_models"),
                               tooltip="stage1.pt (270p preview) or stage2.pt (1080p refiner), any accepted layout."),
                io.Combo.Input("weight_dtype", options=DTYPE_CHOICES + [FP8_CHOICE], default="auto",
                               tooltip="auto: bf16 on GPUs that support it, fp32 on CPU. Stage I overflows in fp16 "
                               "(NaN, black video), so fp16 is replaced by bf16 for it. fp8_e4m3fn stores the "
                               "transformer blocks in fp8 (about half the memory of bf16) and computes in bf16/fp32; "
                               "slightly less faithful."),
                io.Combo.Input("attention", options=list(BACKENDS), default="sdpa",
                               tooltip="sdpa: PyTorch's memory-efficient attention (always available). flash / sage: "
                               "flash-attn or SageAttention if installed, else sdpa with a log line."),
            ],
            outputs=[FlashVideoModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model_name: str, weight_dtype: str = "auto", attention: str = "sdpa") -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("diffusion_models", model_name)
        load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
        fp8 = weight_dtype == FP8_CHOICE
        dtype = resolve_dtype("auto" if fp8 else weight_dtype, torch.device(load_device))
        model = load_dit(path, device=offload_device, dtype=dtype)
        if attention not in BACKENDS:
            raise InputError(f"attention must be one of {list(BACKENDS)}, got {attention!r}")
        log.info("FlashVideo: attention backend %s", model.set_attention_backend(attention))
        if model.config.stage == "stage1" and dtype == torch.float16:
            log.warning("FlashVideo: stage I gives NaNs in fp16 (as CogVideoX-5B); using bf16 instead")
            dtype = torch.bfloat16
            model = model.to(dtype)
        if fp8:
            store_blocks_in_fp8(model, dtype)
        log.info("FlashVideo: %s detected in %s", model.config.stage, model_name)
        return io.NodeOutput(ManagedModel(model, load_device, offload_device, dtype, path))


def _snap(value: int, multiple: int, name: str) -> int:
    snapped = max(multiple, round(value / multiple) * multiple)
    if snapped != value:
        log.warning("FlashVideo: %s %d is not a multiple of %d; using %d", name, value, multiple, snapped)
    return snapped


def latent_preview(denoised: torch.Tensor) -> torch.Tensor:
    """A rough look at the x0 prediction: middle frame, first three latent channels."""
    frame = denoised[0, denoised.shape[1] // 2, :3].float()
    return torch.tanh(frame / (frame.std() + 1e-6))


class FlashVideoStage1Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage1Sampler",
            display_name="FlashVideo Stage I Sampler (preview)",
            category=CATEGORY,
            description="Samples the cheap low-resolution preview (256x480, 49 frames) with the reference "
            "SDE DPM-Solver++(2M), DynamicCFG and a zero unconditional context. Decode it with FlashVideo VAE Decode "
            "(latent_scale stage1), or pass it to stage II.",
            inputs=[
                FlashVideoModel.Input("model", tooltip="A stage-I model from FlashVideo Model Loader."),
                io.Conditioning.Input("positive", tooltip="From FlashVideo Text Encode or Load Prompt Embedding. "
                                      "No negative: the reference's unconditional context is all zeros."),
                io.Int.Input("width", default=TRAINED_SIZE[1], min=16, max=2048, step=16,
                             tooltip="Multiple of 16. Trained at 480; other sizes are off-distribution."),
                io.Int.Input("height", default=TRAINED_SIZE[0], min=16, max=2048, step=16,
                             tooltip="Multiple of 16. Trained at 256 (the reference's 270 rounded down to 16)."),
                io.Int.Input("frames", default=TRAINED_FRAMES, min=1, max=201, step=4,
                             tooltip="4k+1 frames at 8 fps. Trained at 49 (about 6 s)."),
                io.Int.Input("steps", default=DEFAULT_STEPS, min=2, max=200,
                             tooltip="Network calls (x2 for CFG). The reference uses 51."),
                io.Float.Input("cfg", default=DEFAULT_CFG, min=1.0, max=15.0, step=0.1, round=0.01,
                               tooltip="DynamicCFG base scale; 6-8 recommended (the reference uses 8)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise is drawn on the CPU, so a seed gives the same preview on every device."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Stage-I latent [1, 16, T', H/8, W/8].")],
        )

    @classmethod
    def execute(cls, model: ManagedModel, positive, width: int = 480, height: int = 256, frames: int = 49,
                steps: int = DEFAULT_STEPS, cfg: float = DEFAULT_CFG, seed: int = 0) -> io.NodeOutput:
        if model.model.config.stage != "stage1":
            raise InputError("this is the stage-II model; the stage-I sampler needs stage1.pt")
        context = check_context(positive[0][0], "positive conditioning")
        width, height = _snap(width, 16, "width"), _snap(height, 16, "height")
        if (frames - 1) % 4:
            fixed = (frames - 1) // 4 * 4 + 1
            log.warning("FlashVideo: %d frames is not 4k+1; using %d", frames, fixed)
            frames = fixed
        if (height, width) != TRAINED_SIZE or frames != TRAINED_FRAMES:
            log.warning("FlashVideo: stage I was trained at %dx%d, %d frames; %dx%d, %d frames is off-distribution",
                        TRAINED_SIZE[1], TRAINED_SIZE[0], TRAINED_FRAMES, width, height, frames)
        shape = latent_shape(frames, height, width, batch=context.shape[0], channels=model.model.config.in_channels)
        dit = model.load(memory_required=forward_bytes(model.model.config, (shape[0], shape[2], shape[1], *shape[3:]), model.dtype))
        progress = ComfyProgress(to_frame=latent_preview)
        sample = sample_stage1(dit, context, shape, steps=steps, cfg=cfg, seed=seed, progress=progress)
        latent = sample.permute(0, 2, 1, 3, 4).to(mm.intermediate_device()).contiguous()
        return io.NodeOutput({"samples": latent, "flashvideo_stage": 1})
