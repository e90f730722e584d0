"""Every user-facing number, declared once: default, range, grid and help text.

The ComfyUI node schemas (``nodes/``), the nodes' execute-time checks, the pipeline's checks and the CLI's flags
and defaults are all built from these declarations; ``check`` is the one validator they call. Pure: no ComfyUI.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import Optional

import torch

from .errors import InputError
from .stage1.sampler import TRAINED_FRAMES, TRAINED_SIZE
from .stage1.schedule import DEFAULT_CFG as STAGE1_CFG, DEFAULT_STEPS as STAGE1_STEPS
from .stage2.bridge import TRAINED_RESOLUTION
from .stage2.schedule import DEFAULT_CFG, DEFAULT_NOISE_STEP, DEFAULT_SHIFT, DEFAULT_STEPS, MAX_STEPS

SEED_MAX = 2**64 - 1
#: the compute/storage dtypes a user may name (the loaders add the host's fp8)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_dtype(name: str, device) -> torch.dtype:
    """A DTYPES name, or auto: bf16 on a GPU that supports it, else fp32 (fp16 overflows in CogVideoX models)."""
    if name != "auto":
        return DTYPES[name]
    return torch.bfloat16 if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


@dataclass(frozen=True)
class Setting:
    """An INT knob (``default`` an int: lo..hi on the grid ``offset + k * multiple``) or a FLOAT knob (a float
    default: finite, in lo..hi). ``step``: the widget's step where it is not the grid's."""

    default: float
    lo: float
    hi: float
    multiple: int = 1
    offset: int = 0
    step: Optional[float] = None
    help: str = ""

    @property
    def is_float(self) -> bool:
        return isinstance(self.default, float)

    @property
    def grid(self) -> str:
        if self.multiple == 1:
            return ""
        if self.offset:
            return f", of the form {self.multiple}k+{self.offset}"
        return ", even" if self.multiple == 2 else f", multiples of {self.multiple}"

    def check(self, value, where: str) -> float:
        """``value`` as this knob's type, or an InputError naming ``where`` (a flag, or a node and its input),
        the value and the fix. Integral floats pass as ints (JSON clients send 49.0)."""
        valid = f"{self.lo}..{self.hi}{self.grid}"
        if not self.is_float and isinstance(value, float) and value.is_integer():
            value = int(value)
        kind = numbers.Real if self.is_float else numbers.Integral
        # ints are finite (math.isfinite would overflow on 10**400, which the range check below refuses)
        finite = isinstance(value, numbers.Integral) or not isinstance(value, numbers.Real) or math.isfinite(value)
        if isinstance(value, bool) or not isinstance(value, kind) or not finite:
            cause, fix = ("a finite number", "a number") if self.is_float else ("a whole number", "an integer")
            raise _refused(where, value, f"not {cause}", f"give {fix} in {valid}")
        if not self.lo <= value <= self.hi:
            raise _refused(where, value, "out of range", f"give a value in {valid}")
        if not self.is_float and (value - self.offset) % self.multiple:
            below = value - (value - self.offset) % self.multiple
            near = " or ".join(str(v) for v in (below, below + self.multiple) if self.lo <= v <= self.hi)
            raise _refused(where, value, f"off the grid{self.grid}", f"use {near} (valid: {valid})")
        return float(value) if self.is_float else int(value)


def _refused(where: str, value, cause: str, fix: str) -> InputError:
    shown = repr(value)
    return InputError(f"{where} is {shown[:60] + '...' if len(shown) > 60 else shown}: {cause}. Fix: {fix}")


SEED = Setting(0, 0, SEED_MAX, help="Drawn on the CPU, so a seed gives the same result on every device.")
SIZE = Setting(0, 16, 2048, 16)


def knob(setting: Setting, optional: bool = False, **changes):
    """A dataclass field declared by ``setting`` with ``changes``; ``optional``: None by default (unset)."""
    setting = replace(setting, **changes)
    return field(default=None if optional else setting.default, metadata={"setting": setting})


def setting(cls, name: str) -> Setting:
    """The declaration of field ``name`` of a settings dataclass."""
    return next(f.metadata["setting"] for f in fields(cls) if f.name == name)


@dataclass
class Stage1Settings:
    height: int = knob(SIZE, default=TRAINED_SIZE[0],
                       help="Multiple of 16. Trained at 256 (the reference's 270 rounded down to 16).")
    width: int = knob(SIZE, default=TRAINED_SIZE[1],
                      help="Multiple of 16. Trained at 480; other sizes are off-distribution.")
    frames: int = knob(Setting(TRAINED_FRAMES, 1, 201, 4, 1, help="4k+1 frames at 8 fps. Trained at 49 (about 6 s)."))
    steps: int = knob(Setting(STAGE1_STEPS, 2, 200, help="Network calls (x2 for CFG). The reference uses 51."))
    cfg: float = knob(Setting(STAGE1_CFG, 1.0, 15.0, step=0.1,
                              help="DynamicCFG base scale; 6-8 recommended (the reference uses 8)."))
    seed: int = knob(SEED, help="Noise is drawn on the CPU, so a seed gives the same preview on every device.")


@dataclass
class Stage2Settings:
    height: int = knob(SIZE, default=TRAINED_RESOLUTION[0], hi=4096, help="custom only: stage-II height.")
    width: int = knob(SIZE, default=TRAINED_RESOLUTION[1], hi=4096, help="custom only: stage-II width.")
    noise_step: int = knob(Setting(DEFAULT_NOISE_STEP, 0, 999, help=(
        "650-750 recommended (reference 675): higher lets stage II repaint more (fixes more preview artefacts, "
        "drifts further from it); lower keeps the preview.")))
    steps: int = knob(Setting(DEFAULT_STEPS, 1, MAX_STEPS, help=(
        "Euler steps = network calls (NFE, x2 batch for CFG). 4-6 recommended: the released code uses 5, the paper "
        "4; 1 is blurry, above 6 rarely helps.")))
    cfg: float = knob(Setting(DEFAULT_CFG, 1.0, 20.0, step=0.5,
                              help="Constant CFG scale; 10-13 recommended (reference 13). Above 13 over-sharpens."))
    shift: float = knob(Setting(DEFAULT_SHIFT, 1.0, 5.0, step=0.1, help=(
        "Time-grid shift s (reference 2.5, useful 2-3.5): larger spends more steps near the noisy start.")))
    #: the posterior sample of the bridge (and the degradation noise unless degrade_seed is set)
    seed: int = knob(SEED, help="Seed of the VAE posterior sample (drawn on the CPU: same on every device).")
    #: the degradation noise's own seed, as FlashVideo Latent Degrade's widget
    degrade_seed: Optional[int] = knob(SEED, True, help="Seed of the degradation noise (CPU-drawn; independent of "
                                       "the bridge's seed).")
    window: Optional[tuple] = None  # experimental local attention (frames, height, width) in latent patches


#: VAE slicing, in pixels as the widgets and flags show it (SlicingOptions counts latents: 8 pixels each)
SLICING = {
    "memory_budget_mb": Setting(0, 0, 1 << 20, step=256, help=(
        "Memory cap for this VAE pass in MiB; 0 = the free memory of the device. Lower it if you run out of "
        "memory (more tiles are used, same result up to tile blending).")),
    "chunk_latents": Setting(2, 2, 64, 2, help=(
        "manual only: latent frames per temporal chunk (4 video frames each; the official value is 2). "
        "Larger = faster and more memory.")),
    "tile_size": Setting(0, 0, 8192, 8, step=64, help=(
        "manual only: spatial tile edge in pixels; 0 = no spatial tiles. 512-768 keeps 1080p decodes small on "
        "12-16 GB GPUs.")),
    "tile_overlap": Setting(128, 0, 512, 8, help=(
        "Pixels of context each tile decodes beyond its edge, blended across the boundary so no seam shows (the "
        "official code used 128 with a hard cut).")),
}
FPS = Setting(8, 1, 240)
#: the enhancer's window overlap in frames (flashvideo_core/enhance/windows.py: multiples of 4 up to 20)
ENHANCE_OVERLAP = Setting(8, 0, 20, 4, help=(
    "Frames by which neighbouring 49-frame windows overlap (they also share their boundary frame); the overlap is "
    "cross-faded and starts from shared noise. More overlap: smoother joins, (48 / (48 - overlap))x the work."))
#: the enhancer's colour fix (flashvideo_core/enhance/colour.py), default chosen by measurement (docs/ENHANCE.md)
COLOUR_FIX_DEFAULT = "wavelet"
COLOUR_FIX_HELP = ("Pull the colours back to the input's: wavelet keeps stage II's detail and takes the input's low "
                   "frequencies (shading and colour); adain matches each frame's mean and contrast per channel; "
                   "none keeps stage II's colours.")
#: the CLI's VAE memory cap (unset: the free memory)
VAE_MEMORY_MB = Setting(0, 1, 1 << 24)


def check_settings(stage1: Stage1Settings, stage2: Optional[Stage2Settings] = None,
                   names: Optional[dict] = None) -> None:
    """Refuse settings off their valid grid before any model runs (not after minutes of sampling).

    ``names`` maps ``"stage1.frames"`` etc. to what the caller calls them (the CLI's flags).
    """
    names = names or {}
    for prefix, settings in (("stage1", stage1), ("stage2", stage2)):
        for f in fields(settings) if settings is not None else ():
            value = getattr(settings, f.name)
            if "setting" in f.metadata and value is not None:
                f.metadata["setting"].check(value, names.get(f"{prefix}.{f.name}", f"{prefix}.{f.name}"))
