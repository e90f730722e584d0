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

from comfy_api.latest import io

import folder_paths

from ..flashvideo_core.checkpoints import scaled_fp8
from ..flashvideo_core.checkpoints.files import describe
from ..flashvideo_core.checkpoints.io import read_checkpoint
from ..flashvideo_core.checkpoints.t5_shapes import t5_config_from_shapes
from ..flashvideo_core.checkpoints.weights import LAYER_QUANT, WeightRules, checked_weights
from ..flashvideo_core.errors import CheckpointError, InputError
from .input_checks import combo_widget, model_file

log = logging.getLogger("flashvideo")

CATEGORY = "FlashVideo"
DEVICES = ["default", "cpu"]
#: entries a T5 file may carry besides the encoder's weights: fp8 scales and markers (both hosts' formats), the
#: decoder and LM head of a full seq2seq checkpoint, and the encoder's tied copy of the token embeddings
_QUANT_SUFFIXES = (".scale_weight", ".scale_input", ".weight_scale", ".weight_scale_2", ".input_scale", ".comfy_quant")
_IGNORED_PREFIXES = ("decoder.", "lm_head.")
_IGNORED_KEYS = {"scaled_fp8", "encoder.embed_tokens.weight", "spiece_model"}
#: T5's embeddings, which the host casts up as they are: fp8 without a scale even in a quantised file
_EMBEDDINGS = ("shared.weight", "relative_attention_bias.weight")


def host_t5_xxl_config() -> dict:
    """The host's own T5-XXL config (what core Load CLIP builds for t5xxl files)."""
    import comfy.text_encoders.sd3_clip as sd3_clip

    with open(os.path.join(os.path.dirname(os.path.realpath(sd3_clip.__file__)), "t5_config_xxl.json")) as f:
        return json.load(f)


def _is_auxiliary(key: str) -> bool:
    return key in _IGNORED_KEYS or key.startswith(_IGNORED_PREFIXES) or key.endswith(_QUANT_SUFFIXES)


def _not_encoder(key: str) -> bool:
    """Entries the host's T5 encoder never reads (the quantisation entries are checked with their weights)."""
    return key in _IGNORED_KEYS or key.startswith(_IGNORED_PREFIXES)


def t5_weight_rules(tensors: dict) -> WeightRules:
    """fp8 T5 files in both hosts' formats: scaled fp8 (0.3.64's), per-layer fp8 (0.33's), and plain fp8 files
    without scales (t5xxl_fp8_e4m3fn.safetensors, cast up by the host). In a quantised file only the embeddings
    may be fp8 without a scale (a Linear's missing scale would silently be 1)."""
    quantised = scaled_fp8.is_scaled_fp8(tensors) or any(k.endswith(LAYER_QUANT) for k in tensors)
    unscaled = (lambda key: key.endswith(_EMBEDDINGS)) if quantised else (lambda key: True)
    return WeightRules(scaled_files=True, must_scale=lambda key, tensor: False, unscaled_fp8=unscaled,
                       layer_quant=True, auxiliary=_not_encoder)


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


def _layer_quant_as_tensors(tensors: dict, metadata: dict, source: str) -> tuple[dict, dict]:
    """0.33's per-layer quantisation given in the file's metadata, as the ``.comfy_quant`` entries the host makes
    of it (so the one weight check sees which layers are quantised before the host does)."""
    import torch

    text = metadata.get("_quantization_metadata")
    if text is None:
        return tensors, metadata
    try:
        layers = json.loads(text)["layers"]
        entries = {f"{layer}{LAYER_QUANT}": torch.tensor(list(json.dumps(conf).encode()), dtype=torch.uint8)
                   for layer, conf in layers.items() if isinstance(layer, str)}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise CheckpointError(f"{source}: its _quantization_metadata is not a JSON object with 'layers' "
                              f"({type(e).__name__}); the file is damaged: download it again") from None
    return {**tensors, **entries}, {k: v for k, v in metadata.items() if k != "_quantization_metadata"}


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
    raw = read_checkpoint(path)  # the pack's one reader: regular file, no code, bounded, process-owned tensors
    source = describe(path)
    tensors, metadata = _layer_quant_as_tensors(raw.tensors, raw.metadata, source)
    if not hasattr(comfy.utils, "convert_old_quants") and any(k.endswith(LAYER_QUANT) for k in tensors):
        raise CheckpointError(f"{source}: quantised per layer (.comfy_quant), a format this ComfyUI version does not "
                              "read (its layers would use the fp8 weights unscaled); update ComfyUI (0.33 or newer) "
                              "or use a fp16 or scaled-fp8 T5 file (t5xxl_fp16.safetensors)")
    state_dict = checked_weights(tensors, source, t5_weight_rules(tensors))
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
