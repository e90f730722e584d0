"""What a FlashVideo LATENT carries besides its tensor (its stage, the degradation step and its seed), read back
with a fix for when core Save/Load Latent dropped them."""

from __future__ import annotations

import torch

from ..flashvideo_core.errors import InputError
from .input_checks import (  # noqa: F401 - the tags' names, re-exported: nodes import them from here
    NOISE_STEP, NOISE_STEP_KEY, SEED_KEY, STAGE_KEY, latent_tags, shape_stage, widget,
)

SPATIAL = 8  # pixels per latent


def degraded_step(samples: dict, node: str) -> int:
    if not isinstance(samples, dict) or NOISE_STEP_KEY not in samples:
        raise InputError(f"{node}, input 'samples': the latent has not been degraded (or lost its noise step: core "
                         "Save/Load Latent keep only the tensor). Fix: connect FlashVideo Latent Degrade's output "
                         "directly (it carries the noise step the model embeds); to reuse a saved stage-II latent, "
                         "load the Stage II Upscale output and degrade it again")
    return widget(NOISE_STEP, samples[NOISE_STEP_KEY], node, "samples (its noise step)")


def carried_stage(samples: dict, node: str, name: str = "samples"):
    """The stage tag a LATENT carries (1 or 2), or None when it lost it (core Save/Load Latent)."""
    latent_tags(samples, node, name)
    return samples.get(STAGE_KEY)


def latent_stage(samples: dict, z: torch.Tensor, node: str, name: str = "samples"):
    """(stage, how known): the carried tag, else the stage the latent's size points to, else (None, None)."""
    carried = carried_stage(samples, node, name)
    if carried is not None:
        return carried, "tagged"
    guessed = shape_stage(z)
    return guessed, None if guessed is None else "size"


def untagged_cause(z: torch.Tensor, stage: int) -> str:
    return (f"this latent carries no stage tag (core Save/Load Latent keep only the tensor) and its "
            f"{z.shape[-1] * SPATIAL}x{z.shape[-2] * SPATIAL} px size is that of a stage-{stage} latent")
