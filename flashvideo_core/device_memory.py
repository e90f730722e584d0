"""Free memory of a device, as the CLI and the core's planners see it (ComfyUI nodes ask the host instead)."""

from __future__ import annotations

import torch

#: what to assume when the system does not say (no /proc/meminfo)
UNKNOWN_FREE_BYTES = 8 * 2**30


def free_memory_bytes(device: torch.device) -> int:
    """CUDA's free memory for a GPU, the system's available RAM for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # plus what PyTorch holds cached but unused (ready for reuse, invisible to the driver)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return UNKNOWN_FREE_BYTES
