"""The whole two-stage pipeline as one call: prompt embeddings -> 270p preview -> 1080p video.

The nodes wire the same pieces one by one; this module is what ``generate`` and
``demo`` run. Models not in use wait on the CPU (as the reference shuttles them), so a
GPU holds one DiT at a time.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from .constants import LATENT_SCALE_STAGE1, LATENT_SCALE_STAGE2
from .errors import InputError
from .progress import Progress
from .stage1.sampler import TRAINED_FRAMES, TRAINED_SIZE, latent_shape, sample_stage1
from .stage1.schedule import DEFAULT_CFG as STAGE1_CFG, DEFAULT_STEPS as STAGE1_STEPS
from .stage2.bridge import TRAINED_RESOLUTION, stage1_to_stage2
from .stage2.degrade import degrade_latent
from .stage2.refiner import refine_stage2
from .stage2.schedule import DEFAULT_CFG, DEFAULT_NOISE_STEP, DEFAULT_SHIFT, DEFAULT_STEPS, MAX_STEPS
from .vae.slicing import SlicingOptions, decode_sliced


@dataclass
class Stage1Settings:
    height: int = TRAINED_SIZE[0]
    width: int = TRAINED_SIZE[1]
    frames: int = TRAINED_FRAMES
    steps: int = STAGE1_STEPS
    cfg: float = STAGE1_CFG
    seed: int = 0


@dataclass
class Stage2Settings:
    height: int = TRAINED_RESOLUTION[0]
    width: int = TRAINED_RESOLUTION[1]
    noise_step: int = DEFAULT_NOISE_STEP
    steps: int = DEFAULT_STEPS
    cfg: float = DEFAULT_CFG
    shift: float = DEFAULT_SHIFT
    seed: int = 0  # posterior sample of the bridge (and the degradation noise unless degrade_seed is set)
    degrade_seed: Optional[int] = None  # the degradation noise's own seed, as FlashVideo Latent Degrade's widget
    window: Optional[tuple] = None  # experimental local attention (frames, height, width) in latent patches


SEED_MAX = 2**64 - 1
#: (lo, hi, multiple, offset) per setting: the nodes' widget ranges, so the CLI and the nodes accept the same
STAGE1_LIMITS = {"height": (16, 2048, 16, 0), "width": (16, 2048, 16, 0), "frames": (1, 201, 4, 1),
                 "steps": (2, 200, 1, 0), "cfg": (1.0, 15.0, None, 0), "seed": (0, SEED_MAX, 1, 0)}
STAGE2_LIMITS = {"height": (16, 4096, 16, 0), "width": (16, 4096, 16, 0), "noise_step": (0, 999, 1, 0),
                 "steps": (1, MAX_STEPS, 1, 0), "cfg": (1.0, 20.0, None, 0), "shift": (1.0, 5.0, None, 0),
                 "seed": (0, SEED_MAX, 1, 0), "degrade_seed": (0, SEED_MAX, 1, 0)}


def _check_value(value, label: str, lo, hi, multiple, offset) -> None:
    if multiple is None:  # a float setting
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not lo <= value <= hi:
            raise InputError(f"{label} is {value!r}; it must be a finite number in {lo}..{hi}")
        return
    grid = "" if multiple == 1 else (f", multiples of {multiple}" if not offset else f", {multiple}k+{offset}")
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi or (value - offset) % multiple:
        raise InputError(f"{label} is {value!r}; it must be a whole number in {lo}..{hi}{grid}")


def check_settings(stage1: Stage1Settings, stage2: Optional[Stage2Settings] = None,
                   names: Optional[dict] = None) -> None:
    """Refuse settings off their valid grid before any model runs (not after minutes of sampling).

    ``names`` maps ``"stage1.frames"`` etc. to what the caller calls them (the CLI's flags).
    """
    names = names or {}
    for prefix, settings, limits in (("stage1", stage1, STAGE1_LIMITS), ("stage2", stage2, STAGE2_LIMITS)):
        if settings is None:
            continue
        for key, (lo, hi, multiple, offset) in limits.items():
            value = getattr(settings, key)
            if value is None and key == "degrade_seed":
                continue
            _check_value(value, names.get(f"{prefix}.{key}", f"{prefix}.{key}"), lo, hi, multiple, offset)


@dataclass
class PipelineResult:
    preview: torch.Tensor  # (B, 3, T, H, W) in [-1, 1], stage I decoded
    refined: Optional[torch.Tensor]  # (B, 3, T, H', W') in [-1, 1], stage II decoded
    stage1_latent: torch.Tensor  # (B, 16, T', h, w), scaled by 0.7 (a ComfyUI LATENT's layout)
    stage2_latent: Optional[torch.Tensor]  # refined, scaled by 1.15258426
    timings: dict = field(default_factory=dict)


@contextmanager
def resident(module: torch.nn.Module, device: torch.device):
    """Move ``module`` to ``device`` for the block, then back where it was."""
    home = next(module.parameters()).device
    module.to(device)
    try:
        yield module
    finally:
        module.to(home)
        if device.type == "cuda":
            torch.cuda.empty_cache()


@contextmanager
def _phase(timings: dict, name: str, progress: Optional[Progress] = None):
    if progress is not None:
        progress.begin_phase(name)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def generate_two_stage(
    stage1_model: torch.nn.Module,
    stage2_model: Optional[torch.nn.Module],
    vae: torch.nn.Module,
    context1: torch.Tensor,
    context2: Optional[torch.Tensor] = None,
    stage1: Stage1Settings = Stage1Settings(),
    stage2: Stage2Settings = Stage2Settings(),
    slicing: SlicingOptions = SlicingOptions(),
    device: Optional[torch.device] = None,
    progress: Optional[Progress] = None,
    memory: str = "auto",
) -> PipelineResult:
    """Run stage I, and stage II unless ``stage2_model`` is None.

    ``context2`` is the stage-II prompt embedding (the reference script prefixes the prompt
    with "medium motion,"); it defaults to ``context1``. ``slicing.stage`` is set per pass
    (1 for the preview and the bridge, 2 for the final decode). ``memory``: how each guided DiT step runs
    (:mod:`flashvideo_core.dit.memory`). Outputs are on the CPU.
    """
    check_settings(stage1, stage2 if stage2_model is not None else None)
    device = torch.device(device or next(stage1_model.parameters()).device)
    # the stage is data for the slicer: reference mode decodes stage-II latents in the official 1x2 tiles
    slicing1, slicing2 = replace(slicing, stage=1), replace(slicing, stage=2)
    timings: dict = {}
    cpu = torch.device("cpu")
    shape = latent_shape(stage1.frames, stage1.height, stage1.width, batch=context1.shape[0],
                         channels=stage1_model.config.in_channels)
    with _phase(timings, "stage I", progress), resident(stage1_model, device):
        z1 = sample_stage1(stage1_model, context1, shape, stage1.steps, stage1.cfg, stage1.seed, progress, memory)
    z1 = z1.permute(0, 2, 1, 3, 4).to(cpu) * LATENT_SCALE_STAGE1
    if stage2_model is None:
        with _phase(timings, "decode preview", progress), resident(vae, device):
            preview = decode_sliced(vae, z1 / LATENT_SCALE_STAGE1, slicing1, progress, output_device=cpu).clamp(-1, 1)
        return PipelineResult(preview, None, z1, None, timings)
    with _phase(timings, "bridge", progress), resident(vae, device):
        z2, preview = stage1_to_stage2(vae, z1, (stage2.height, stage2.width), stage2.seed, slicing1, progress)
    with _phase(timings, "degrade", progress):
        x0 = degrade_latent(z2, stage2.noise_step, stage2.seed if stage2.degrade_seed is None else stage2.degrade_seed)
    context2 = context1 if context2 is None else context2
    with _phase(timings, "stage II", progress), resident(stage2_model, device):
        z2_refined = refine_stage2(stage2_model, context2, x0, stage2.noise_step, stage2.steps, stage2.cfg,
                                   stage2.shift, progress, memory=memory, window=stage2.window).to(cpu)
    with _phase(timings, "decode", progress), resident(vae, device):
        refined = decode_sliced(vae, z2_refined / LATENT_SCALE_STAGE2, slicing2, progress, output_device=cpu)
    return PipelineResult(preview.to(cpu), refined.clamp(-1, 1), z1, z2_refined, timings)
