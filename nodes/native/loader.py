"""Loading a FlashVideo DiT file as a core MODEL (as ``comfy.sd.load_diffusion_model`` does for core models).

The file is read and checked strictly by the core (any published layout; LoRA merged), the model is built by
its model config with the host's operations, and wrapped in the host's model patcher: the dynamic kind on
0.33 (Dynamic VRAM streams the weights; final-layout safetensors from ``python -m flashvideo_core convert``
avoid a RAM copy at load), the partial-loading ``ModelPatcher`` on 0.3.64.
"""

from __future__ import annotations

import logging
from functools import partial

import torch

import comfy.model_management as mm
import comfy.model_patcher

from ...flashvideo_core.checkpoints import scaled_fp8
from ...flashvideo_core.checkpoints.io import read_checkpoint
from ...flashvideo_core.checkpoints.files import describe
from ...flashvideo_core.checkpoints.strict import check_keys
from ...flashvideo_core.checkpoints.weights import DIT, checked_weights
from ...flashvideo_core.dit.attention import resolve_backend
from ...flashvideo_core.dit.loader import canonical_dit_state_dict
from ...flashvideo_core.dit.model import FlashVideoDiT, sdpa_attention
from .model_base import model_config_for
from .options import HOST_ATTENTION, WEIGHT_DTYPES

log = logging.getLogger("flashvideo")


def _host_quantization(model_config, tensors: dict, metadata: dict) -> dict:
    """Hand a scaled-fp8 state dict to the host's quantisation: 0.33 converts it to its per-layer quant metadata
    (mixed-precision ops), 0.3.64 reads the marker's dtype (scaled-fp8 ops)."""
    import comfy.utils

    if hasattr(comfy.utils, "convert_old_quants"):
        tensors, _ = comfy.utils.convert_old_quants(dict(tensors), "", metadata=dict(metadata))
        model_config.quant_config = comfy.utils.detect_layer_quantization(tensors, "")
        return tensors
    marker = tensors[scaled_fp8.MARKER]
    model_config.scaled_fp8 = marker.dtype if marker.dtype != torch.float32 else torch.float8_e4m3fn
    return {k: v for k, v in tensors.items() if k != scaled_fp8.MARKER}


def _patcher_class():
    """The host's default patcher, looked up at call time (0.33's main.py may swap it after import)."""
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def load_flashvideo_model(path: str, weight_dtype: str = "auto", attention: str = HOST_ATTENTION,
                          disable_dynamic: bool = False, memory: str = "auto"):
    """A core MODEL (model patcher) for the DiT in ``path``; the choices are the loader node's (it checks them)."""
    raw = read_checkpoint(path)
    dit_config, tensors, layout = canonical_dit_state_dict(raw, dequantize=False)
    # the same checks as the core loader's (scales included) before the host's layers see anything
    tensors = checked_weights(tensors, describe(path), DIT)
    quantized = scaled_fp8.is_scaled_fp8(tensors)
    plain = {k: v for k, v in tensors.items() if not quantized or not scaled_fp8.is_quantization_key(k)}
    with torch.device("meta"):
        check_keys(FlashVideoDiT(dit_config), plain, describe(path), layout)
    model_config = model_config_for(dit_config)
    model_config.memory_mode = memory
    params = sum(t.numel() for t in plain.values())
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    supported = model_config.supported_inference_dtypes
    if quantized:  # the host's own fp8 path: its scaled-fp8 ops (0.3.64) or mixed-precision quant ops (0.33)
        tensors = _host_quantization(model_config, tensors, raw.metadata)
    if weight_dtype == "auto" or quantized:
        dtype = mm.unet_dtype(model_params=params, supported_dtypes=supported)
    else:
        dtype = WEIGHT_DTYPES[weight_dtype]
    if dtype == torch.float16:
        log.warning("FlashVideo: CogVideoX-class DiTs overflow in fp16 (NaN, black video); using bf16 instead")
        dtype = torch.bfloat16
    manual_cast = mm.unet_manual_cast(None if getattr(model_config, "quant_config", None) else dtype, load_device, supported)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model(tensors, "", device=mm.unet_inital_load_device(params, dtype))
    if attention != HOST_ATTENTION:
        backend = resolve_backend(attention)
        model.diffusion_model.set_attention_fn(partial(sdpa_attention, backend=backend))
    patcher_class = comfy.model_patcher.ModelPatcher if disable_dynamic else _patcher_class()
    patcher = patcher_class(model, load_device=load_device, offload_device=offload_device)
    dynamic = bool(getattr(patcher, "is_dynamic", lambda: False)())
    # quantised files keep their fp8 weights and scales for the host's layers; others arrive in the chosen dtype
    weights = tensors if quantized else {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    if dynamic:
        model.load_model_weights(weights, "", assign=True)
    else:
        if not mm.is_device_cpu(offload_device):
            model.to(offload_device)
        model.load_model_weights(weights, "")
    if hasattr(patcher, "cached_patcher_init"):  # 0.33: lets TorchCompile, hooks and multi-GPU rebuild the model
        patcher.cached_patcher_init = (load_flashvideo_model, (path, weight_dtype, attention, False, memory))
    log.info("FlashVideo: %s from %s (layout %s) as a native %s model, weights %s, compute %s, attention %s, "
             "memory %s", dit_config.stage, path, layout, type(model).__name__, dtype, manual_cast or dtype, attention,
             memory)
    return patcher
