"""The model loader's choices, importable without the host (node schemas are built from them)."""

import torch

from ...flashvideo_core.dit.attention import BACKENDS

#: "comfy": the host's attention dispatch; the others force the pack's own call
HOST_ATTENTION = "comfy"
ATTENTION_CHOICES = [HOST_ATTENTION, *BACKENDS]
WEIGHT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
                 "fp8_e4m3fn": torch.float8_e4m3fn}
WEIGHT_DTYPE_CHOICES = ["auto", *WEIGHT_DTYPES]
#: the loader's memory choice -> flashvideo_core.dit.memory mode of the model's forwards
MEMORY_MODES = {"auto": "auto", "whole": "sequential", "lean": "lean"}
MEMORY_CHOICES = list(MEMORY_MODES)
