"""Model loader and the stage-I sampler (the cheap 270p preview).

The loader returns a core MODEL (a native ComfyUI model: partial loading, Dynamic VRAM, the host's attention
and quantised weights apply). The sampler is a convenience wrapper over FlashVideo's sampling parts
(nodes/sampling_nodes.py) run through ``comfy.samplers``; it returns a standard LATENT, so core
SaveLatent/LoadLatent can keep the preview and a failed decode never costs a resample.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

import comfy.model_management as mm
import folder_paths

from ..flashvideo_core.dit.memory import OLD_MODE_NAMES
from ..flashvideo_core.settings import Stage1Settings, setting
from ..flashvideo_core.stage1.sampler import TRAINED_FRAMES, TRAINED_SIZE, latent_shape
from .comfy_bridge import setting_input
from .input_checks import combo_widget, model_file, widget
from .native.options import ATTENTION_CHOICES, HOST_ATTENTION, MEMORY_CHOICES, WEIGHT_DTYPE_CHOICES
from .sampling_nodes import STAGE_KEY, check_prompt, native, require_stage

log = logging.getLogger("flashvideo")

CATEGORY = "FlashVideo"


class FlashVideoModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoModelLoader",
            display_name="FlashVideo Model Loader",
            category=CATEGORY,
            description="Loads a FlashVideo DiT (stage1.pt or stage2.pt, or converted safetensors) from "
            "models/diffusion_models as a native ComfyUI MODEL: the host loads it partially when memory is short "
            "(Dynamic VRAM on 0.33), and core nodes (TorchCompileModel, ModelSamplingSD3, samplers) accept it. "
            "The stage is detected from the weights and logged; LoRA is merged at load.",
            inputs=[
                io.Combo.Input("model_name", options=folder_paths.get_filename_list("diffusion_models"),
                               tooltip="stage1.pt (270p preview) or stage2.pt (1080p refiner), any accepted layout. "
                               "Converted final-layout safetensors (python -m flashvideo_core convert) load fastest "
                               "and stream under Dynamic VRAM."),
                io.Combo.Input("weight_dtype", options=WEIGHT_DTYPE_CHOICES, default="auto",
                               tooltip="How the weights are stored; the host computes in bf16 (GPU) or fp32 (CPU). "
                               "auto: the host's choice for this device. fp16 overflows in CogVideoX-class models "
                               "(NaN, black video) and is replaced by bf16. fp8_e4m3fn: the host's fp8 storage "
                               "(about half the memory of bf16), cast per layer; slightly less faithful."),
                io.Combo.Input("attention", options=ATTENTION_CHOICES, default=HOST_ATTENTION,
                               tooltip="comfy: the host's attention (as ComfyUI was started: --use-sage-attention, "
                               "--use-flash-attention, xformers or PyTorch SDPA). sdpa / flash / sage: override with "
                               "FlashVideo's own call (flash-attn / SageAttention if installed, else SDPA)."),
                io.Combo.Input("memory", options=MEMORY_CHOICES, default="auto", optional=True,  # old API prompts
                               tooltip="Working memory of each step (same result up to float rounding): auto: "
                               "whole-sequence forwards when they fit the free memory, token chunks otherwise (1080p "
                               "stage II: ~10 GB fastest, ~2.5 GB chunked). sequential: never chunk (fastest; may run "
                               "out of memory; older workflows call it whole). lean: always chunk, and tell ComfyUI to "
                               "plan for the small figure. ComfyUI runs cond and uncond as one batch when the memory "
                               "allows."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, memory: str = "auto"):
        """Takes the memory check from the host, which would refuse an old saved name; execute checks it."""
        return True

    @classmethod
    def execute(cls, model_name: str, weight_dtype: str = "auto", attention: str = HOST_ATTENTION,
                memory: str = "auto") -> io.NodeOutput:
        node = "FlashVideo Model Loader"
        combo_widget(weight_dtype, node, "weight_dtype", WEIGHT_DTYPE_CHOICES)
        combo_widget(attention, node, "attention", ATTENTION_CHOICES)
        memory = combo_widget(memory, node, "memory", MEMORY_CHOICES, aliases=OLD_MODE_NAMES)
        path = model_file(folder_paths, "diffusion_models", model_name, node, "model_name")
        from .native.loader import load_flashvideo_model  # the host's model classes, needed only from here

        return io.NodeOutput(load_flashvideo_model(path, weight_dtype, attention, memory=memory))


SAMPLER = "FlashVideo Stage I Sampler"
WIDGETS = ("width", "height", "frames", "steps", "cfg", "seed")  # the saved order (not the dataclass's)


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
                io.Model.Input("model", tooltip="A stage-I model from FlashVideo Model Loader."),
                io.Conditioning.Input("positive", tooltip="From FlashVideo Text Encode or Load Prompt Embedding. "
                                      "No negative: the reference's unconditional context is all zeros."),
                *(setting_input(name, setting(Stage1Settings, name)) for name in WIDGETS),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Stage-I latent [1, 16, T', H/8, W/8].")],
        )

    @classmethod
    def execute(cls, model, positive, **widgets) -> io.NodeOutput:
        # API clients skip the frontend's steps (and some hosts NaN): off-grid values are refused, never snapped
        values = {name: widget(setting(Stage1Settings, name), widgets.get(name, getattr(Stage1Settings, name)),
                               SAMPLER, name) for name in WIDGETS}
        width, height, frames, steps, cfg, seed = values.values()
        require_stage(model, 1, SAMPLER)
        check_prompt(model, positive, SAMPLER, "positive")
        context = positive[0][0]
        if (height, width) != TRAINED_SIZE or frames != TRAINED_FRAMES:
            log.warning("FlashVideo: stage I was trained at %dx%d, %d frames; %dx%d, %d frames is off-distribution",
                        TRAINED_SIZE[1], TRAINED_SIZE[0], TRAINED_FRAMES, width, height, frames)
        batch, latent_frames, channels, latent_h, latent_w = latent_shape(frames, height, width, batch=context.shape[0])
        latent = {"samples": torch.zeros((batch, channels, latent_frames, latent_h, latent_w))}
        sampling = native()
        guider = sampling.DynamicCFGGuider(model)
        guider.set_conds(positive, sampling.zero_conditioning(positive))
        guider.set_cfg(cfg)
        samples = sample_with(guider, sampling.Stage1ReferenceNoise(seed), sampling.stage1_sampler(),
                              sampling.stage1_sigmas(model, steps), latent, model)
        return io.NodeOutput({"samples": samples, STAGE_KEY: 1})


def sample_with(guider, noise, sampler, sigmas, latent: dict, model) -> torch.Tensor:
    """Run a guider as core SamplerCustomAdvanced does: host progress bar, latent previews, interrupt."""
    import comfy.utils
    import latent_preview

    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    samples = guider.sample(noise.generate_noise(latent), latent["samples"], sampler, sigmas, callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=noise.seed)
    return samples.to(mm.intermediate_device())
