"""What a FlashVideo LATENT carries besides its tensor (its stage, the degradation step and its seed), read back
with a fix for when core Save/Load Latent dropped them."""

from __future__ import annotations

import torch

from ..flashvideo_core.errors import InputError
from ..flashvideo_core.settings import Stage2Settings, setting
from .input_checks import refuse, shape_stage, widget

SPATIAL = 8  # pixels per latent
NOISE_STEP = setting(Stage2Settings, "noise_step")

#: metadata riding on LATENT dicts: the stage whose latent it is, the degradation step and its seed
STAGE_KEY, NOISE_STEP_KEY, SEED_KEY = "flashvideo_stage", "flashvideo_noise_step", "flashvideo_seed"


def degraded_step(samples: dict, node: str) -> int:
    if not isinstance(samples, dict) or NOISE_STEP_KEY not in samples:
        raise InputError(f"{node}, input 'samples': the latent has not been degraded (or lost its noise step: core "
                         "Save/Load Latent keep only the tensor). Fix: connect FlashVideo Latent Degrade's output "
                         "directly (it carries the noise step the model embeds); to reuse a saved stage-II latent, "
                         "load the Stage II Upscale output and degrade it again")
    return widget(NOISE_STEP, samples[NOISE_STEP_KEY], node, "samples (its noise step)")


def carried_stage(samples: dict, node: str, name: str = "samples"):
    """The stage tag a LATENT carries (1 or 2), or None when it lost it (core Save/Load Latent)."""
    carried = samples.get(STAGE_KEY)
    if carried is not None and (type(carried) is not int or carried not in (1, 2)):  # not True, not 1.0
        raise refuse(node, name, f"its stage tag {carried!r} is not 1 or 2",
                     "connect the latent straight from a FlashVideo node")
    return carried


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
