"""Tiny random-weight models in the official layouts, for tests, the demo and smoke installs.

Random weights decode to noise; they exist to exercise every code path (loading,
slicing, nodes, workflows) in seconds on a CPU, never to make pictures.
"""

from __future__ import annotations

import os

import torch

from .checkpoints.dit_keys import SAT_PREFIX, canonical_to_sat
from .checkpoints.io import write_safetensors
from .checkpoints.vae_keys import official_to_diffusers
from .dit.config import DiTConfig
from .dit.model import FlashVideoDiT
from .io.output_files import output_file
from .vae.config import VAEConfig
from .vae.model import CogVideoXVAE

#: Smallest VAE that keeps every official structural feature (4 levels, 2 temporal,
#: shortcuts where widths change, 32-group GroupNorm).
TINY_VAE_CONFIG = VAEConfig(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=16)


def _random_weights(model_factory, seed: int, bias_std: float) -> dict:
    """Random weights with O(1) activations: fan-in scaled matrices, norm scales near 1, small biases.

    Nothing is zero (zero-initialised adaLN or biases would hide mapping bugs).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in model_factory().state_dict().items()}
    out = {}
    for key, shape in shapes.items():
        if len(shape) == 1 and key.endswith("weight"):  # GroupNorm / LayerNorm scale
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            out[key] = bias_std * torch.randn(shape, generator=gen)
        else:
            fan_in = int(torch.tensor(shape[1:]).prod())
            out[key] = torch.randn(shape, generator=gen) / fan_in**0.5
    return out


def random_vae_state_dict(config: VAEConfig = TINY_VAE_CONFIG, seed: int = 0) -> dict:
    """Official-layout VAE weights."""
    return _random_weights(lambda: CogVideoXVAE(config), seed, bias_std=0.05)


def write_tiny_vae(path: str, layout: str = "official", config: VAEConfig = TINY_VAE_CONFIG, seed: int = 0) -> str:
    """Write a tiny VAE as ``official`` (.pt with 'state_dict' and a loss entry) or ``diffusers`` (safetensors)."""
    sd = random_vae_state_dict(config, seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if layout == "official":
        with output_file(path) as temporary:
            torch.save({"state_dict": {**sd, "loss.logvar": torch.zeros(())}, "global_step": 0}, temporary)
    elif layout == "diffusers":
        write_safetensors(path, official_to_diffusers(sd), {})
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return path


#: Tiny DiTs: two 64-wide heads, 32-dim text embeddings (the real T5-XXL gives 4096).
TINY_STAGE1_CONFIG = DiTConfig(num_layers=2, hidden_size=128, text_hidden_size=32)
TINY_STAGE2_CONFIG = DiTConfig(num_layers=2, hidden_size=128, text_hidden_size=32, stage2_embeddings=True)
#: the official LoRA rank; scaling 1/rank (SAT alpha 1).
LORA_RANK = 128


def random_dit_state_dict(config: DiTConfig, seed: int = 0) -> dict:
    """Canonical-layout DiT weights."""
    return _random_weights(lambda: FlashVideoDiT(config), seed, bias_std=0.02)


def unmerge_lora(sat: dict, seed: int = 1, rank: int = LORA_RANK) -> dict:
    """Split each LoRA-adapted SAT linear (qkv in 3 partitions, dense, adaLN) into ``original`` + A/B
    such that merging at scale 1/rank gives back the input weights (up to fp32 rounding)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sat.items():
        parts = _lora_partitions(key)
        if not parts:
            out[key] = value
            continue
        base = key[: -len(".weight")]
        rows = value.shape[0] // parts
        deltas = []
        for k in range(parts):
            a = torch.randn(rank, value.shape[1], generator=gen) * 0.02
            b = torch.randn(rows, rank, generator=gen) * 0.02
            out[f"{base}.matrix_A.{k}"], out[f"{base}.matrix_B.{k}"] = a, b
            deltas.append(b @ a / rank)
        out[f"{base}.original.weight"] = value - torch.cat(deltas)
        out[f"{base}.original.bias"] = sat[f"{base}.bias"]
    return {k: v for k, v in out.items() if not (k.endswith(".bias") and _lora_partitions(k[:-5] + ".weight"))}


def _lora_partitions(key: str) -> int:
    if key.endswith("attention.query_key_value.weight"):
        return 3
    if key.endswith("attention.dense.weight") or (".adaLN_modulations." in key and key.endswith(".1.weight")):
        return 1
    return 0


def write_tiny_dit(path: str, stage: str = "stage1", lora: bool = True, seed: int = 0) -> str:
    """Write a tiny DiT in the official SAT container (``{'module': ...}``); stage I with unmerged LoRA."""
    config = TINY_STAGE1_CONFIG if stage == "stage1" else TINY_STAGE2_CONFIG
    sat = canonical_to_sat(random_dit_state_dict(config, seed))
    sat[SAT_PREFIX + "transformer.position_embeddings.weight"] = torch.zeros(64, config.hidden_size)  # unused, as upstream
    if stage == "stage1" and lora:
        sat = unmerge_lora(sat)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with output_file(path) as temporary:
        torch.save({"module": sat}, temporary)
    return path


#: Tiny T5-v1.1 encoder: the key layout of t5xxl_fp16.safetensors (ComfyUI's and Hugging Face's T5 encoder),
#: 32 wide so its states fit the tiny DiTs' ``text_hidden_size``; the real vocabulary, so the real tokenizer works.
TINY_T5_CONFIG = {"d_model": TINY_STAGE1_CONFIG.text_hidden_size, "num_heads": 2, "d_kv": 16, "d_ff": 64,
                  "num_layers": 2, "vocab_size": 32128, "relative_attention_num_buckets": 32}


def t5_encoder_shapes(config: dict) -> dict:
    """{key: shape} of a gated (v1.1) T5 encoder; the relative position bias lives in block 0 only."""
    d, inner, ff = config["d_model"], config["num_heads"] * config["d_kv"], config["d_ff"]
    shapes = {"shared.weight": (config["vocab_size"], d), "encoder.final_layer_norm.weight": (d,),
              "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
                  (config["relative_attention_num_buckets"], config["num_heads"])}
    for i in range(config["num_layers"]):
        attn, ffn = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1."
        shapes.update({attn + "SelfAttention.q.weight": (inner, d), attn + "SelfAttention.k.weight": (inner, d),
                       attn + "SelfAttention.v.weight": (inner, d), attn + "SelfAttention.o.weight": (d, inner),
                       attn + "layer_norm.weight": (d,), ffn + "DenseReluDense.wi_0.weight": (ff, d),
                       ffn + "DenseReluDense.wi_1.weight": (ff, d), ffn + "DenseReluDense.wo.weight": (d, ff),
                       ffn + "layer_norm.weight": (d,)})
    return shapes


def random_t5_state_dict(config: dict = TINY_T5_CONFIG, seed: int = 0) -> dict:
    """Random T5 encoder weights: unit-variance token embeddings (T5 does not scale them), fan-in scaled
    matrices, RMS-norm scales near 1, a small relative position bias."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in t5_encoder_shapes(config).items():
        if key == "shared.weight":
            out[key] = torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("relative_attention_bias.weight"):
            out[key] = 0.1 * torch.randn(shape, generator=gen)
        else:
            out[key] = torch.randn(shape, generator=gen) / shape[1] ** 0.5
    return out


TINY_T5_MARK = "tiny_t5"


def write_tiny_t5(path: str, config: dict = TINY_T5_CONFIG, seed: int = 0) -> str:
    """Write a tiny random T5 encoder as ``t5xxl_fp16.safetensors`` is stored (its key layout, fp16), marked in
    its metadata as make-tiny's."""
    from .checkpoints.metadata import MODEL_KEY

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tensors = {k: v.half() for k, v in random_t5_state_dict(config, seed).items()}
    write_safetensors(path, tensors, {MODEL_KEY: TINY_T5_MARK})
    return path
