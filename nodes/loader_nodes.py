"""The loaders of FlashVideo's models: the DiTs (either stage, as native ComfyUI MODELs) and the 3D VAE. The T5
loader, which builds the host's own text encoder, is in t5_loader.py.

Widget order and node ids are frozen (saved workflows store widget values by position): new inputs may only be
appended, optional, at the end.
"""

from __future__ import annotations

import logging

from comfy_api.latest import io

import comfy.model_management as mm
import folder_paths

from ..flashvideo_core.dit.memory import OLD_MODE_NAMES
from ..flashvideo_core.settings import resolve_dtype
from ..flashvideo_core.vae.loader import load_vae
from .host import DTYPE_CHOICES, VAEHolder
from .input_checks import combo_widget, model_file
from .native.options import ATTENTION_CHOICES, HOST_ATTENTION, MEMORY_CHOICES, WEIGHT_DTYPE_CHOICES
from .vae_helpers import FlashVideoVAE

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
        return io.NodeOutput(VAEHolder(model, load_device, offload_device, torch_dtype, path))
