"""FlashVideo T5 Loader: a T5-v1.1 encoder file as a standard CLIP, its size read from the weights.

Core Load CLIP builds T5-XXL from a fixed config (d_model 4096, 24 layers), so only the 9.5 GB
file loads through it. This loader reads the config from the file's tensor shapes and hands it to the
host's own T5 text-encoder class and tokenizer (the sd3 recipe, T5 only, as Load CLIP with type sd3
builds it): the real ``t5xxl_fp16.safetensors`` gives exactly the host's T5-XXL, make-tiny's tiny T5
a 32-wide one that fits the tiny DiTs, so the templates run unchanged on both. The CLIP it returns is
the host's, so FlashVideo Text Encode and any core node take it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re

from comfy_api.latest import io

import folder_paths

from ..flashvideo_core.checkpoints.files import describe
from ..flashvideo_core.errors import CheckpointError, InputError
from .input_checks import combo_widget, model_file

log = logging.getLogger("flashvideo")

CATEGORY = "FlashVideo"
DEVICES = ["default", "cpu"]
#: the config entries a T5 file's shapes determine (the rest come from the host's T5-XXL config)
SHAPE_KEYS = ("d_model", "num_heads", "d_kv", "d_ff", "num_layers", "vocab_size", "is_gated_act")
_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
#: entries a T5 file may carry besides the encoder's weights: fp8 scales and markers (both hosts' formats), the
#: decoder and LM head of a full seq2seq checkpoint, and the encoder's tied copy of the token embeddings
_QUANT_SUFFIXES = (".scale_weight", ".scale_input", ".weight_scale", ".weight_scale_2", ".input_scale", ".comfy_quant")
_IGNORED_PREFIXES = ("decoder.", "lm_head.")
_IGNORED_KEYS = {"scaled_fp8", "encoder.embed_tokens.weight", "spiece_model"}


def t5_config_from_shapes(shapes: dict, source: str = "the T5 file") -> dict:
    """The shape-determined T5 config entries (``SHAPE_KEYS``) of a T5 encoder state dict given as
    {key: shape}; a file that is not a gated (v1.1) T5 encoder is refused, naming what is wrong with it."""
    def need(key: str) -> tuple:
        if key not in shapes:
            raise CheckpointError(
                f"{source} is not a T5 encoder in the t5xxl_fp16.safetensors layout: it has no {key!r}. Pick a "
                "T5-v1.1-XXL file (t5xxl_fp16.safetensors from comfyanonymous/flux_text_encoders) in "
                "models/text_encoders")
        shape = tuple(shapes[key])
        if len(shape) != 2:
            raise CheckpointError(f"{source}: {key!r} has shape {shape}, where a T5 encoder has a matrix; the file is "
                                  "damaged or not a T5 encoder: download t5xxl_fp16.safetensors again")
        return shape

    vocab_size, d_model = need("shared.weight")
    inner, _ = need("encoder.block.0.layer.0.SelfAttention.q.weight")
    buckets, num_heads = need("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    if "encoder.block.0.layer.1.DenseReluDense.wi.weight" in shapes:
        raise CheckpointError(
            f"{source} is an original T5 (one ungated feed-forward input, 'wi'), not T5-v1.1: FlashVideo reads "
            "T5-v1.1-XXL states. Use t5xxl_fp16.safetensors (comfyanonymous/flux_text_encoders)")
    d_ff, _ = need("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")
    if buckets != 32 or inner % num_heads:
        raise CheckpointError(f"{source}: relative attention has {buckets} buckets and {num_heads} heads for width "
                              f"{inner}; ComfyUI's T5 needs 32 buckets and a width divisible by the heads: use a "
                              "T5-v1.1 encoder (t5xxl_fp16.safetensors from comfyanonymous/flux_text_encoders)")
    blocks = {int(m.group(1)) for key in shapes if (m := _BLOCK.match(key))}
    if blocks != set(range(len(blocks))):
        raise CheckpointError(f"{source}: encoder blocks {sorted(blocks)} are not numbered 0..N-1 (a truncated or "
                              "merged file?); download it again")
    return {"d_model": d_model, "num_heads": num_heads, "d_kv": inner // num_heads, "d_ff": d_ff,
            "num_layers": len(blocks), "vocab_size": vocab_size, "is_gated_act": True}


def host_t5_xxl_config() -> dict:
    """The host's own T5-XXL config (what core Load CLIP builds for t5xxl files)."""
    import comfy.text_encoders.sd3_clip as sd3_clip

    with open(os.path.join(os.path.dirname(os.path.realpath(sd3_clip.__file__)), "t5_config_xxl.json")) as f:
        return json.load(f)


def _is_auxiliary(key: str) -> bool:
    return key in _IGNORED_KEYS or key.startswith(_IGNORED_PREFIXES) or key.endswith(_QUANT_SUFFIXES)


def check_t5_keys(state_dict: dict, config: dict, source: str) -> None:
    """Strict: every weight of the host's T5 built with ``config`` is in the file with its shape (packed
    quantised weights are not shape-checked), and the file holds nothing else but auxiliary entries."""
    import torch

    import comfy.ops
    import comfy.text_encoders.t5

    expected = comfy.text_encoders.t5.T5(config, torch.float32, "meta", comfy.ops.manual_cast).state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected and not _is_auxiliary(k)]
    shaped = [k for k, v in expected.items() if k in state_dict and state_dict[k].is_floating_point()
              and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or shaped:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
                 f"mis-shaped {[(k, tuple(state_dict[k].shape)) for k in shaped[:3]]}" if shaped else ""]
        raise CheckpointError(
            f"{source} does not fit a T5-v1.1 encoder of the size its weights give (d_model {config['d_model']}, "
            f"{config['num_layers']} layers): {'; '.join(p for p in parts if p)}. The file is damaged or not a T5 "
            "encoder; download t5xxl_fp16.safetensors again")


class _Target:
    """What ``comfy.sd.CLIP`` builds from: the text-encoder class, its tokenizer, extra parameters."""

    def __init__(self, clip, tokenizer):
        self.clip, self.tokenizer, self.params = clip, tokenizer, {}


def load_t5(path: str, device: str = "default", disable_dynamic: bool = False):
    """The T5 encoder in ``path`` as the host's CLIP (sd3 recipe, T5 only), sized from its weights."""
    import torch

    import comfy.sd
    import comfy.text_encoders.sd3_clip as sd3_clip
    import comfy.utils

    if device not in DEVICES:
        raise InputError(f"device must be one of {DEVICES}, got {device!r}")
    try:
        state_dict, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except Exception as err:  # truncated download, not a tensor file
        raise CheckpointError(f"{describe(path)} cannot be read as a T5 encoder ({type(err).__name__}: {err}); "
                              "download it again") from err
    source = os.path.basename(path)
    shaped = t5_config_from_shapes({k: tuple(v.shape) for k, v in state_dict.items()}, source)
    xxl_config = host_t5_xxl_config()
    config = {**xxl_config, **shaped}
    check_t5_keys(state_dict, config, source)
    if hasattr(comfy.utils, "convert_old_quants"):  # 0.33, as its load_clip: scaled-fp8 files to its quant format
        state_dict, metadata = comfy.utils.convert_old_quants(state_dict, model_prefix="", metadata=metadata)
    # the host applies "<model_name>_model_config" over its T5-XXL json: identical for the real file
    model_options = {"t5xxl_model_config": shaped}
    if device == "cpu":
        model_options["load_device"] = model_options["offload_device"] = torch.device("cpu")
    target = _Target(sd3_clip.sd3_clip(clip_l=False, clip_g=False, t5=True, **sd3_clip.t5_xxl_detect(state_dict)),
                     sd3_clip.SD3Tokenizer)
    kwargs = {"embedding_directory": folder_paths.get_folder_paths("embeddings"),
              "parameters": comfy.utils.calculate_parameters(state_dict), "model_options": model_options}
    accepts = inspect.signature(comfy.sd.CLIP.__init__).parameters
    if "state_dict" in accepts:  # 0.33 loads the weights while it builds the patcher (Dynamic VRAM)
        clip = comfy.sd.CLIP(target, state_dict=[state_dict], disable_dynamic=disable_dynamic, **kwargs)
    else:  # 0.3.64 loads them afterwards, as its load_text_encoder_state_dicts
        clip = comfy.sd.CLIP(target, **kwargs)
        clip.load_sd(state_dict)
    if hasattr(clip.patcher, "cached_patcher_init"):  # 0.33: hooks and multi-GPU rebuild the encoder from here
        clip.patcher.cached_patcher_init = (_load_t5_patcher, (path, device))
    xxl = config == xxl_config
    (log.info if xxl else log.warning)(
        "FlashVideo: %s as T5 %s (d_model %d, %d layers, %d heads)%s", source, "XXL" if xxl else "encoder",
        config["d_model"], config["num_layers"], config["num_heads"],
        "" if xxl else ": not T5-XXL, so only a DiT with the same text width (make-tiny's) can read its states")
    return clip


def _load_t5_patcher(path: str, device: str = "default", disable_dynamic: bool = False):
    return load_t5(path, device, disable_dynamic).patcher


class FlashVideoT5Loader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoT5Loader",
            display_name="FlashVideo T5 Loader",
            category=CATEGORY,
            description="Loads a T5-v1.1 text encoder (t5xxl_fp16.safetensors) from models/text_encoders as a "
            "standard CLIP for FlashVideo Text Encode. Its size is read from the weights, so the real T5-XXL and "
            "make-tiny's tiny test encoder both load; with the real file it equals core Load CLIP (type sd3).",
            inputs=[
                io.Combo.Input("clip_name", options=folder_paths.get_filename_list("text_encoders"),
                               tooltip="t5xxl_fp16.safetensors (9.5 GB, comfyanonymous/flux_text_encoders) or another "
                               "T5-v1.1-XXL encoder, e.g. an fp8 one, in models/text_encoders."),
                io.Combo.Input("device", options=DEVICES, default="default",
                               tooltip="default: ComfyUI's text-encoder device. cpu: keep T5 on the CPU (slower "
                               "encode, frees ~10 GB of GPU memory for the DiTs)."),
            ],
            outputs=[io.Clip.Output(display_name="clip")],
        )

    @classmethod
    def execute(cls, clip_name: str, device: str = "default") -> io.NodeOutput:
        node = "FlashVideo T5 Loader"
        combo_widget(device, node, "device", DEVICES)
        return io.NodeOutput(load_t5(model_file(folder_paths, "text_encoders", clip_name, node, "clip_name"), device))
