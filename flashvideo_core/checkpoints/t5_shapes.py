"""A T5-v1.1 encoder's config read from its weights' shapes, within bounds.

The FlashVideo T5 Loader sizes the host's T5 from the file instead of assuming T5-XXL (so make-tiny's tiny T5
loads too). The sizes are bounded here, relative to T5-XXL, before anything is built: a file declaring a million
heads or a vocabulary smaller than the tokenizer's would otherwise load and fail later, at encode time, in the
allocator or with an index error far from its cause.
"""

from __future__ import annotations

import re

from ..errors import CheckpointError

#: the config entries a T5 file's shapes determine (the rest come from the host's T5-XXL config)
SHAPE_KEYS = ("d_model", "num_heads", "d_kv", "d_ff", "num_layers", "vocab_size", "is_gated_act")
#: T5-XXL: d_model 4096, 64 heads of 64, d_ff 10240, 24 layers; four times that is far beyond any T5
MAX_SIZES = {"d_model": 16384, "num_heads": 256, "d_kv": 256, "d_ff": 65536, "num_layers": 96}
#: the T5 tokenizer's ids reach 32099, so a smaller vocabulary fails at encode; no T5 has more than 256k
MIN_VOCAB, MAX_VOCAB = 32100, 262144
_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
FIX = "use a T5-v1.1-XXL encoder (t5xxl_fp16.safetensors from comfyanonymous/flux_text_encoders)"


def t5_config_from_shapes(shapes: dict, source: str = "the T5 file") -> dict:
    """The shape-determined T5 config entries (``SHAPE_KEYS``) of a T5 encoder state dict given as
    {key: shape}; a file that is not a gated (v1.1) T5 encoder of sane size is refused, naming what is wrong."""
    def need(key: str) -> tuple:
        if key not in shapes:
            raise CheckpointError(
                f"{source} is not a T5 encoder in the t5xxl_fp16.safetensors layout: it has no {key!r}. Pick a "
                "T5-v1.1-XXL file (t5xxl_fp16.safetensors from comfyanonymous/flux_text_encoders) in "
                "models/text_encoders")
        shape = tuple(shapes[key])
        if len(shape) != 2 or min(shape) < 1:
            raise CheckpointError(f"{source}: {key!r} has shape {shape}, where a T5 encoder has a non-empty matrix; "
                                  "the file is damaged or not a T5 encoder: download t5xxl_fp16.safetensors again")
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
                              f"{inner}; ComfyUI's T5 needs 32 buckets and a width divisible by the heads: {FIX}")
    blocks = {int(m.group(1)) for key in shapes if (m := _BLOCK.match(key))}
    if blocks != set(range(len(blocks))):
        raise CheckpointError(f"{source}: encoder blocks {sorted(blocks)[:8]} are not numbered 0..N-1 (a truncated or "
                              "merged file?); download it again")
    config = {"d_model": d_model, "num_heads": num_heads, "d_kv": inner // num_heads, "d_ff": d_ff,
              "num_layers": len(blocks), "vocab_size": vocab_size, "is_gated_act": True}
    for name, limit in MAX_SIZES.items():
        if config[name] > limit:
            raise CheckpointError(f"{source}: its weights declare {name} {config[name]}, beyond the {limit} this "
                                  f"loader accepts (T5-XXL has {_XXL[name]}); the file is damaged or not a T5 "
                                  f"encoder: {FIX}")
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise CheckpointError(f"{source}: its token embedding has {vocab_size} rows; the T5 tokenizer needs "
                              f"{MIN_VOCAB} to {MAX_VOCAB} (T5-XXL has 32128); the file is damaged or not a T5 "
                              f"encoder: {FIX}")
    return config


_XXL = {"d_model": 4096, "num_heads": 64, "d_kv": 64, "d_ff": 10240, "num_layers": 24}
