"""Prompt embeddings as files, so a batch or a second stage runs without T5-XXL (~9.5 GB) loaded.

Both stages take the T5-v1.1-XXL last hidden state of the prompt, exactly 226 tokens
(padded with pad tokens, truncated keeping the end-of-sequence token, no attention
mask: the reference attends to padding). Files are safetensors holding one tensor
``context`` of shape (1, 226, 4096) plus the prompt in the metadata.

CLI users make them with ComfyUI (FlashVideo Text Encode -> FlashVideo Save Prompt
Embedding), or with any T5-v1.1-XXL encoder following the rule above.
"""

from __future__ import annotations

import os

import torch

from .checkpoints.files import describe
from .checkpoints.io import read_checkpoint, write_safetensors
from .checkpoints.weights import checked_weights
from .checkpoints.metadata import FORMAT_KEY, FORMAT_VERSION, MODEL_KEY, PROMPT_KEY
from .errors import CheckpointError, InputError

TEXT_TOKENS = 226
KIND = "prompt_embedding"


def check_context(context: torch.Tensor, what: str = "prompt embedding") -> torch.Tensor:
    if context.ndim != 3 or context.shape[1] != TEXT_TOKENS:
        raise InputError(
            f"{what} has shape {tuple(context.shape)}; FlashVideo needs (batch, {TEXT_TOKENS}, dim) T5-XXL states. "
            "Encode the prompt with FlashVideo Text Encode (it pads/truncates to 226 tokens)."
        )
    if not torch.isfinite(context).all():
        raise InputError(f"{what} holds NaN/Inf values (T5-XXL in fp16 can overflow; use bf16 or fp32)")
    return context


def save_prompt_embedding(path: str, context: torch.Tensor, prompt: str = "") -> str:
    check_context(context)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    write_safetensors(path, {"context": context.detach().to("cpu").contiguous()},
                      {FORMAT_KEY: FORMAT_VERSION, MODEL_KEY: KIND, PROMPT_KEY: prompt})
    return path


def load_prompt_embedding(path: str) -> tuple[torch.Tensor, str]:
    raw = read_checkpoint(path)
    shown = describe(path)
    if raw.metadata.get(MODEL_KEY) != KIND or "context" not in raw.tensors:
        raise CheckpointError(f"{shown}: not a FlashVideo prompt embedding (save one with FlashVideo Save Prompt Embedding)")
    context = checked_weights({"context": raw.tensors["context"]}, shown)["context"]
    try:
        return check_context(context, shown), raw.metadata.get(PROMPT_KEY, "")
    except InputError as e:
        raise CheckpointError(f"{shown}: {e}") from None
