"""``make-tiny``: tiny random-weight checkpoints under the official names, in a ComfyUI models tree.

With them a fresh install (or CI) runs every node and example workflow without the
real 25 GB of weights. Random weights make noise, never pictures.
"""

from __future__ import annotations

import os

import torch

from .errors import InputError
from .text_embeddings import TEXT_TOKENS, save_prompt_embedding
from .tiny import TINY_STAGE1_CONFIG, write_tiny_dit, write_tiny_vae

#: relative path in a ComfyUI ``models`` folder -> what goes there (names as in the README and workflows)
TINY_FILES = {
    "vae/3d-vae.pt": "vae",
    "diffusion_models/stage1.pt": "stage1",
    "diffusion_models/stage2.pt": "stage2",
    "flashvideo_embeddings/flashvideo_example_prompt.safetensors": "embedding",
}
TINY_PROMPT = "tiny random prompt embedding (no T5 needed); the tiny models turn it into noise"


def tiny_prompt_embedding(seed: int = 0) -> torch.Tensor:
    """A (1, 226, 32) stand-in for T5-XXL states that fits the tiny DiTs."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, TEXT_TOKENS, TINY_STAGE1_CONFIG.text_hidden_size, generator=gen)


PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_tiny(models_dir: str, force: bool = False) -> dict:
    """Write the tiny files under ``models_dir``; returns {kind: path}. Refuses to overwrite
    existing files (they may be the real weights) unless ``force``, and refuses a folder inside the pack
    (ComfyUI would never find the files there)."""
    target = os.path.realpath(models_dir)
    if target == PACK_DIR or target.startswith(PACK_DIR + os.sep):
        raise InputError(
            f"{models_dir} is inside the FlashVideo pack folder ({PACK_DIR}), where ComfyUI never looks for models. "
            "Pass ComfyUI's models folder: from custom_nodes/<this pack> that is ../../models")
    paths = {kind: os.path.join(models_dir, rel) for rel, kind in TINY_FILES.items()}
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not force:
        raise InputError(f"{existing[0]} already exists (maybe real weights); choose an empty folder or pass --force")
    for kind, path in paths.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "vae":
            write_tiny_vae(path)
        elif kind == "embedding":
            save_prompt_embedding(path, tiny_prompt_embedding(), TINY_PROMPT)
        else:
            write_tiny_dit(path, stage=kind, lora=kind == "stage1")
    return paths
