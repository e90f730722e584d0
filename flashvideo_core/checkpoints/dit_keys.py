"""The official SAT layout of ``stage1.pt``/``stage2.pt`` <-> the pack's (diffusers-named) DiT layout.

SAT keys live under ``model.diffusion_model.`` (docs/CHECKPOINTS.md#dit-sat-layout). Converting them: merge any
unmerged LoRA (W' = W + concat_k(B_k A_k) / 128, in fp32, docs/CHECKPOINTS.md#lora-merge), split the fused
qkv into q, k, v, split the 12 adaLN chunks between ``norm1`` (video and text msa) and
``norm2`` (mlp), and rename the rest (docs/CHECKPOINTS.md#key-conversion). Keys the reference ignores are dropped;
anything else unknown is kept under its SAT name so the strict check reports it.
"""

from __future__ import annotations

import logging
import re

import torch

from ..errors import CheckpointError
from .weights import FLOAT_DTYPES

log = logging.getLogger("flashvideo")

SAT_PREFIX = "model.diffusion_model."
#: SAT LoRA scaling is alpha / rank with alpha left at 1: 1/128 at the official rank 128
#: (docs/CHECKPOINTS.md#lora-merge).
LORA_ALPHA = 1.0
#: present in SAT checkpoints, unused by the reference (it deletes or never reads them).
IGNORED_SAT_KEYS = (
    "mixins.pos_embed.freqs_sin",
    "mixins.pos_embed.freqs_cos",
    "transformer.position_embeddings.weight",
)
NORM1_CHUNKS = (0, 1, 2, 6, 7, 8)
NORM2_CHUNKS = (3, 4, 5, 9, 10, 11)

_RENAMES = [
    (r"^mixins\.patch_embed\.(proj|text_proj)\.", r"patch_embed.\1."),
    (r"^time_embed\.0\.", "time_embedding.linear_1."),
    (r"^time_embed\.2\.", "time_embedding.linear_2."),
    (r"^(ref_step_time_embedding|time_size_embedding)\.0\.", r"\1.linear_1."),
    (r"^(ref_step_time_embedding|time_size_embedding)\.2\.", r"\1.linear_2."),
    (r"^transformer\.layers\.(\d+)\.input_layernorm\.", r"transformer_blocks.\1.norm1.norm."),
    (r"^transformer\.layers\.(\d+)\.post_attention_layernorm\.", r"transformer_blocks.\1.norm2.norm."),
    (r"^transformer\.layers\.(\d+)\.attention\.dense\.", r"transformer_blocks.\1.attn1.to_out.0."),
    (r"^transformer\.layers\.(\d+)\.mlp\.dense_h_to_4h\.", r"transformer_blocks.\1.ff.net.0.proj."),
    (r"^transformer\.layers\.(\d+)\.mlp\.dense_4h_to_h\.", r"transformer_blocks.\1.ff.net.2."),
    (r"^mixins\.adaln_layer\.query_layernorm_list\.(\d+)\.", r"transformer_blocks.\1.attn1.norm_q."),
    (r"^mixins\.adaln_layer\.key_layernorm_list\.(\d+)\.", r"transformer_blocks.\1.attn1.norm_k."),
    (r"^transformer\.final_layernorm\.", "norm_final."),
    (r"^mixins\.final_layer\.norm_final\.", "norm_out.norm."),
    (r"^mixins\.final_layer\.linear\.", "proj_out."),
    (r"^mixins\.final_layer\.adaLN_modulation\.1\.", "norm_out.linear."),
]
_QKV = re.compile(r"^transformer\.layers\.(\d+)\.attention\.query_key_value\.(weight|bias)$")
_ADALN = re.compile(r"^mixins\.adaln_layer\.adaLN_modulations\.(\d+)\.1\.(weight|bias)$")


def is_sat_layout(keys) -> bool:
    return any(k.startswith(SAT_PREFIX) for k in keys)


def has_unmerged_lora(keys) -> bool:
    return any(".matrix_A." in k for k in keys)


def merge_lora(state_dict: dict, source: str = "state dict") -> dict:
    """Fold ``X.original.*`` + ``X.matrix_A.k``/``X.matrix_B.k`` into plain ``X.weight``/``X.bias``.

    Partition k of the output rows gets B_k @ A_k * alpha / rank (1/128 for stage1.pt);
    computed in fp32, stored in the original weight's dtype. Every fault (missing or extra
    partner, non-numeric or gapped index, ranks that disagree, a delta that does not match the
    weight) is a :class:`CheckpointError` naming ``source`` and the layer.
    """
    out = {}
    bases = {k[: -len(".original.weight")] for k in state_dict if k.endswith(".original.weight")}
    for key, value in state_dict.items():
        if (".matrix_A." in key or ".matrix_B." in key) and re.sub(r"\.matrix_[AB]\.[^.]*$", "", key) in bases:
            continue  # merged below; LoRA on a linear without ".original" stays, so strict loading reports it
        base = key.rsplit(".original.", 1)[0] if ".original." in key else None
        if base in bases:
            out[key.replace(".original.", ".")] = value
        else:
            out[key] = value
    for base in sorted(bases):
        a = _lora_parts(state_dict, base, "A", source)
        b = _lora_parts(state_dict, base, "B", source)
        if not a and not b:
            continue
        weight = state_dict[f"{base}.original.weight"]
        out[f"{base}.weight"] = _merged(weight, a, b, f"{source}: LoRA of {SAT_PREFIX}{base}")
    return out


def _merged(weight, a: list, b: list, where: str):
    fix = "the file is damaged or from an unknown training setup; download the official stage1.pt again"
    if len(a) != len(b):
        raise CheckpointError(f"{where}: {len(a)} matrix_A but {len(b)} matrix_B partitions; {fix}")
    tensors = [weight] + a + b
    if any(t.dtype not in FLOAT_DTYPES for t in tensors):
        raise CheckpointError(f"{where}: LoRA and base weights must be real floating point, got "
                              f"{sorted({str(t.dtype) for t in tensors})}; {fix}")
    if weight.ndim != 2 or any(t.ndim != 2 for t in a + b):
        raise CheckpointError(f"{where}: the base weight and every LoRA matrix must be 2-D; {fix}")
    rank = a[0].shape[0]
    if rank == 0 or any(ak.shape != (rank, weight.shape[1]) for ak in a) or any(bk.shape[1] != rank for bk in b):
        raise CheckpointError(
            f"{where}: LoRA shapes disagree (A {[tuple(t.shape) for t in a][:3]}, B {[tuple(t.shape) for t in b][:3]}, "
            f"weight {tuple(weight.shape)}): every A must be (rank, in) and every B (rows, rank); {fix}")
    if sum(bk.shape[0] for bk in b) != weight.shape[0]:
        raise CheckpointError(f"{where}: the B partitions cover {sum(bk.shape[0] for bk in b)} output rows, the weight "
                              f"has {weight.shape[0]}; {fix}")
    scale = LORA_ALPHA / rank
    delta = torch.cat([bk.float() @ ak.float() for ak, bk in zip(a, b)], dim=0) * scale
    return (weight.float() + delta).to(weight.dtype)


def _lora_parts(state_dict, base, which, source) -> list:
    """The partitions ``{base}.matrix_{which}.0 .. n-1`` in order."""
    prefix = f"{base}.matrix_{which}."
    parts = {}
    for key in state_dict:
        if key.startswith(prefix):
            index = key[len(prefix):]
            if not index.isdigit() or len(index) > 4:
                raise CheckpointError(f"{source}: LoRA key {SAT_PREFIX}{key} has a non-numeric partition index "
                                      f"{index[:20]!r}; the file is damaged: download the official stage1.pt again")
            parts[int(index)] = state_dict[key]
    if sorted(parts) != list(range(len(parts))):
        raise CheckpointError(f"{source}: LoRA partitions of {SAT_PREFIX}{base}.matrix_{which} are numbered "
                              f"{sorted(parts)[:8]}, not 0..{len(parts) - 1}; the file is damaged: download it again")
    return [parts[i] for i in range(len(parts))]


def sat_to_canonical(state_dict: dict, source: str = "state dict") -> tuple[dict, list]:
    """Convert a SAT state dict; returns (canonical state dict, names of ignored non-DiT keys)."""
    inner = {k[len(SAT_PREFIX):]: v for k, v in state_dict.items() if k.startswith(SAT_PREFIX)}
    outside = sorted(k for k in state_dict if not k.startswith(SAT_PREFIX))
    if outside:
        log.info("FlashVideo DiT: ignoring %d keys outside %s (e.g. %s)", len(outside), SAT_PREFIX, outside[0][:80])
    inner = {k: v for k, v in inner.items() if k not in IGNORED_SAT_KEYS}
    if has_unmerged_lora(inner):
        inner = merge_lora(inner, source)
    out = {}
    for key, value in inner.items():
        if m := _QKV.match(key):
            layer, kind = m.groups()
            _check_splittable(value, 3, key, source)
            for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                out[f"transformer_blocks.{layer}.attn1.{name}.{kind}"] = part.contiguous()
        elif m := _ADALN.match(key):
            layer, kind = m.groups()
            _check_splittable(value, 12, key, source)
            chunks = value.chunk(12, dim=0)
            out[f"transformer_blocks.{layer}.norm1.linear.{kind}"] = torch.cat([chunks[i] for i in NORM1_CHUNKS])
            out[f"transformer_blocks.{layer}.norm2.linear.{kind}"] = torch.cat([chunks[i] for i in NORM2_CHUNKS])
        else:
            out[_rename(key)] = value
    return out, outside


def _check_splittable(value, parts: int, key: str, source: str) -> None:
    if value.ndim == 0 or value.shape[0] == 0 or value.shape[0] % parts:
        raise CheckpointError(f"{source}: {SAT_PREFIX}{key} has shape {tuple(value.shape)}, but its rows must split "
                              f"into {parts} equal parts; the file is damaged or not a FlashVideo DiT")


def _rename(key: str) -> str:
    for pattern, replacement in _RENAMES:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    return SAT_PREFIX + key  # unknown: keep recognisable in the strict error


def canonical_to_sat(state_dict: dict) -> dict:
    """The inverse (merged LoRA), used to write official-layout test and tiny checkpoints."""
    out = {}
    layers = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"transformer_blocks\.(\d+)\.", k))})
    for key, value in state_dict.items():
        sat = _to_sat_name(key)
        if sat is not None:
            out[SAT_PREFIX + sat] = value
    for i in layers:
        blk = f"transformer_blocks.{i}"
        for kind in ("weight", "bias"):
            out[f"{SAT_PREFIX}transformer.layers.{i}.attention.query_key_value.{kind}"] = torch.cat(
                [state_dict[f"{blk}.attn1.{n}.{kind}"] for n in ("to_q", "to_k", "to_v")]
            )
            n1 = state_dict[f"{blk}.norm1.linear.{kind}"].chunk(6, dim=0)
            n2 = state_dict[f"{blk}.norm2.linear.{kind}"].chunk(6, dim=0)
            chunks = [None] * 12
            for src, idx in ((n1, NORM1_CHUNKS), (n2, NORM2_CHUNKS)):
                for c, i_chunk in zip(src, idx):
                    chunks[i_chunk] = c
            out[f"{SAT_PREFIX}mixins.adaln_layer.adaLN_modulations.{i}.1.{kind}"] = torch.cat(chunks)
    return out


_TO_SAT = [
    (r"^patch_embed\.(proj|text_proj)\.", r"mixins.patch_embed.\1."),
    (r"^time_embedding\.linear_1\.", "time_embed.0."),
    (r"^time_embedding\.linear_2\.", "time_embed.2."),
    (r"^(ref_step_time_embedding|time_size_embedding)\.linear_1\.", r"\1.0."),
    (r"^(ref_step_time_embedding|time_size_embedding)\.linear_2\.", r"\1.2."),
    (r"^transformer_blocks\.(\d+)\.norm1\.norm\.", r"transformer.layers.\1.input_layernorm."),
    (r"^transformer_blocks\.(\d+)\.norm2\.norm\.", r"transformer.layers.\1.post_attention_layernorm."),
    (r"^transformer_blocks\.(\d+)\.attn1\.to_out\.0\.", r"transformer.layers.\1.attention.dense."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.0\.proj\.", r"transformer.layers.\1.mlp.dense_h_to_4h."),
    (r"^transformer_blocks\.(\d+)\.ff\.net\.2\.", r"transformer.layers.\1.mlp.dense_4h_to_h."),
    (r"^transformer_blocks\.(\d+)\.attn1\.norm_q\.", r"mixins.adaln_layer.query_layernorm_list.\1."),
    (r"^transformer_blocks\.(\d+)\.attn1\.norm_k\.", r"mixins.adaln_layer.key_layernorm_list.\1."),
    (r"^norm_final\.", "transformer.final_layernorm."),
    (r"^norm_out\.norm\.", "mixins.final_layer.norm_final."),
    (r"^proj_out\.", "mixins.final_layer.linear."),
    (r"^norm_out\.linear\.", "mixins.final_layer.adaLN_modulation.1."),
]


def _to_sat_name(key: str):
    for pattern, replacement in _TO_SAT:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    return None  # q/k/v and adaLN linears are fused separately
