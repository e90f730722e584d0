"""The whole two-stage pipeline as one call: prompt embeddings -> 270p preview -> 1080p video.

The nodes wire the same pieces one by one; this module is what ``generate`` and
``demo`` run. Models not in use wait on the CPU (as the reference shuttles them), so a
GPU holds one DiT at a time.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from .constants import LATENT_SCALE_STAGE1, LATENT_SCALE_STAGE2
from .progress import Progress
from .settings import Stage1Settings, Stage2Settings, check_settings
from .stage1.sampler import latent_shape, sample_stage1
from .stage2.bridge import stage1_to_stage2
from .stage2.degrade import degrade_latent
from .stage2.refiner import refine_stage2
from .vae.slicing import SlicingOptions, decode_sliced


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
