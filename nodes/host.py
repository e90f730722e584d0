"""The host side of the core: settings as widgets, progress, interrupt, previews, the VAE under model management."""

from __future__ import annotations

import torch
from comfy_api.latest import io

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils

from ..flashvideo_core.progress import Progress
from ..flashvideo_core.settings import DTYPES, SEED_MAX, Setting

DTYPE_CHOICES = ["auto", *DTYPES]


def setting_input(name: str, setting: Setting, **extra):
    """The widget of a declared setting: its default, range, step and help (``tooltip`` overrides the help);
    a seed gets the frontend's control_after_generate."""
    step = setting.step or (setting.multiple if setting.multiple > 1 else None)
    common = dict(default=setting.default, min=setting.lo, max=setting.hi, tooltip=extra.pop("tooltip", setting.help))
    if setting.hi == SEED_MAX:
        common["control_after_generate"] = True
    made = (io.Float.Input(name, step=step, round=0.01, **common, **extra) if setting.is_float
            else io.Int.Input(name, step=step, **common, **extra))
    made.flashvideo_setting = setting  # the declaration (grid included) behind the widget, for tests and checks
    return made


class ComfyProgress(Progress):
    """Drives ComfyUI's progress bar (with a frame preview) and honours its interrupt.

    The core's preview payload is one (3, H, W) frame in [-1, 1] (the VAE passes show their frames).
    """

    def __init__(self, preview: bool = True):
        self.preview = preview
        self.bar = None
        self.done = 0

    def start(self, total: int) -> None:
        self.bar = comfy.utils.ProgressBar(total)
        self.done = 0

    def advance(self, n: int = 1, preview=None) -> None:
        self.done += n
        image = _preview_image(preview) if self.preview and preview is not None else None
        self.bar.update_absolute(self.done, preview=("JPEG", image, 512) if image is not None else None)

    def check(self) -> None:
        mm.throw_exception_if_processing_interrupted()


def _preview_image(frame: torch.Tensor):
    """(3, H, W) in [-1, 1] -> PIL image, or None without PIL."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL ships with ComfyUI
        return None
    array = ((frame.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


class VAEHolder:
    """The pack's VAE (a core nn.Module) under ComfyUI's model management, moved to the GPU only while it
    encodes or decodes; its dtype and the file it came from ride along."""

    def __init__(self, model: torch.nn.Module, load_device, offload_device, dtype: torch.dtype, source: str):
        self.patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
        self.dtype = dtype
        self.source = source

    @property
    def model(self) -> torch.nn.Module:
        return self.patcher.model

    @property
    def load_device(self) -> torch.device:
        return torch.device(self.patcher.load_device)

    def load(self, memory_required: int = 0) -> torch.nn.Module:
        """Ask ComfyUI for room (it evicts idle models such as a DiT) and move the model in."""
        mm.load_models_gpu([self.patcher], memory_required=memory_required, force_full_load=True)
        return self.patcher.model

    def free_memory_bytes(self) -> int:
        return int(mm.get_free_memory(self.load_device))

    def total_memory_bytes(self) -> int:
        return int(mm.get_total_memory(self.load_device))
