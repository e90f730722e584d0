"""The model loader's choices, importable without the host (node schemas are built from them)."""

import torch

from ...flashvideo_core.dit.attention import BACKENDS
from ...flashvideo_core.dit.memory import MODES
from ...flashvideo_core.settings import DTYPES

#: "comfy": the host's attention dispatch; the others force the pack's own call
HOST_ATTENTION = "comfy"
ATTENTION_CHOICES = [HOST_ATTENTION, *BACKENDS]
WEIGHT_DTYPES = {**DTYPES, "fp8_e4m3fn": torch.float8_e4m3fn}
WEIGHT_DTYPE_CHOICES = ["auto", *WEIGHT_DTYPES]
#: flashvideo_core.dit.memory's modes (batched is the host's call: it batches cond and uncond itself)
MEMORY_CHOICES = [mode for mode in MODES if mode != "batched"]
