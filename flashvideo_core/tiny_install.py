"""``make-tiny``: tiny random-weight checkpoints under the official names, in a ComfyUI models tree.

With them a fresh install (or CI) runs every node and example workflow as shipped, without the real
25 GB of weights: a tiny T5 encoder sits under the T5-XXL name the templates load, and a short
synthetic clip goes into ComfyUI's ``input`` folder for the enhance-a-video template. Random weights
make noise, never pictures.
"""

from __future__ import annotations

import os

import torch

from .errors import InputError
from .text_embeddings import TEXT_TOKENS, save_prompt_embedding
from .tiny import TINY_STAGE1_CONFIG, write_tiny_dit, write_tiny_t5, write_tiny_vae

#: relative path in a ComfyUI ``models`` folder -> what goes there (names as in the README and workflows)
TINY_FILES = {
    "vae/3d-vae.pt": "vae",
    "diffusion_models/stage1.pt": "stage1",
    "diffusion_models/stage2.pt": "stage2",
    "text_encoders/t5xxl_fp16.safetensors": "t5",
    "flashvideo_embeddings/flashvideo_example_prompt.safetensors": "embedding",
}
#: the enhance template's clip, written to ComfyUI's ``input`` folder (beside ``models``)
EXAMPLE_CLIP = "flashvideo_input.mp4"
EXAMPLE_CLIP_FRAMES, EXAMPLE_CLIP_SIZE = 17, (96, 160)  # 4k+1 frames at 8 fps, (height, width)
TINY_PROMPT = "tiny random prompt embedding (no T5 needed); the tiny models turn it into noise"
#: make-tiny's files are a few MB; anything this big is real weights and is never overwritten, even with --force
REAL_WEIGHTS_BYTES = 64 << 20


def tiny_prompt_embedding(seed: int = 0) -> torch.Tensor:
    """A (1, 226, 32) stand-in for T5-XXL states that fits the tiny DiTs."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, TEXT_TOKENS, TINY_STAGE1_CONFIG.text_hidden_size, generator=gen)


def example_clip() -> torch.Tensor:
    """(3, T, H, W) in [-1, 1]: smooth colour waves drifting across the frame, so every frame differs."""
    frames, (height, width) = EXAMPLE_CLIP_FRAMES, EXAMPLE_CLIP_SIZE
    t = torch.linspace(0, 1, frames)[:, None, None]
    y = torch.linspace(-1, 1, height)[None, :, None]
    x = torch.linspace(-1, 1, width)[None, None, :]
    return torch.stack([torch.sin(3 * x + 2 * y + 4 * t), torch.cos(2 * x - 3 * y - 2 * t),
                        0.6 * torch.sin(5 * t - x * y)])


def comfyui_input_dir(models_dir: str):
    """ComfyUI's ``input`` folder for a ``models`` folder: its existing sibling, else None (not a ComfyUI tree)."""
    target = os.path.abspath(models_dir)  # the folder as given: a linked models folder keeps its ComfyUI's input
    candidate = os.path.join(os.path.dirname(target), "input")
    return candidate if os.path.basename(target) == "models" and os.path.isdir(candidate) else None


PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _refuse_existing(path: str, force: bool) -> None:
    if os.path.getsize(path) >= REAL_WEIGHTS_BYTES:
        raise InputError(
            f"{path} already exists and is {os.path.getsize(path) >> 20} MiB: real weights, which make-tiny never "
            "overwrites (not even with --force). The tiny models need their own tiny files under these names (e.g. "
            "the tiny T5 gives 32-wide text states, the real T5-XXL 4096): write them into a separate ComfyUI base "
            "folder (python main.py --base-directory DIR; make-tiny DIR/models) instead")
    if not force:
        raise InputError(f"{path} already exists (maybe real weights); choose an empty folder or pass --force")


def make_tiny(models_dir: str, force: bool = False) -> dict:
    """Write the tiny files under ``models_dir``, and the example clip into ComfyUI's ``input`` folder when
    ``models_dir`` is a ComfyUI ``models`` folder with one beside it; returns {kind: path} of what was written
    ("input_clip" for the clip). Refuses to overwrite existing files (they may be the real weights) unless
    ``force``, never overwrites real-sized ones, and refuses a folder inside the pack (ComfyUI would never find
    the files there). Everything is checked before anything is written."""
    target = os.path.realpath(models_dir)
    if target == PACK_DIR or target.startswith(PACK_DIR + os.sep):
        raise InputError(
            f"{models_dir} is inside the FlashVideo pack folder ({PACK_DIR}), where ComfyUI never looks for models. "
            "Pass ComfyUI's models folder: from custom_nodes/<this pack> that is ../../models")
    paths = {kind: os.path.join(models_dir, rel) for rel, kind in TINY_FILES.items()}
    input_dir = comfyui_input_dir(models_dir)
    if input_dir is not None and not os.path.exists(os.path.join(input_dir, EXAMPLE_CLIP)):  # never replace a clip
        paths["input_clip"] = os.path.join(input_dir, EXAMPLE_CLIP)
    for path in paths.values():
        if os.path.exists(path):
            _refuse_existing(path, force)
    for kind, path in paths.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "vae":
            write_tiny_vae(path)
        elif kind == "embedding":
            save_prompt_embedding(path, tiny_prompt_embedding(), TINY_PROMPT)
        elif kind == "t5":
            write_tiny_t5(path)
        elif kind == "input_clip":
            from .io.video import write_video

            write_video(path, example_clip(), fps=8)
        else:
            write_tiny_dit(path, stage=kind, lora=kind == "stage1")
    return paths
