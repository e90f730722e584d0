#!/usr/bin/env python
"""One sequence-parallel guided stage-II step per process, for ``gpu_check.py``'s multi-GPU rows.

Run by ``gpu_check.py`` as ``torchrun --standalone --nproc-per-node N benchmarks/parallel_step.py --size 2K``
(on the CPU with ``--cpu-smoke``: tiny configs, gloo). Every process times the same step on its shard; process 0
prints one line ``RESULT {json}`` with the median seconds and the largest peak over the processes.
"""

from __future__ import annotations

import argparse
import json
import sys

import harness  # noqa: F401  (puts the repository on the path)
import torch.distributed as dist

import gpu_check
from flashvideo_core.dit.config import STAGE2_CONFIG
from flashvideo_core.dit.memory import ForwardPlan
from flashvideo_core.parallel import layout_from_environment, start_parallel, stop_parallel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2K", choices=sorted(gpu_check.REAL_SIZES))
    parser.add_argument("--cpu-smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    layout = layout_from_environment()
    if layout is None:
        print("run under torchrun --nproc-per-node N", file=sys.stderr)
        return 2
    dev = gpu_check.Device(args.cpu_smoke)
    parallel = start_parallel(layout, dev.device.type)  # also selects this process's GPU
    try:
        config = STAGE2_CONFIG if dev.cuda else gpu_check.SMOKE_DIT["stage2"]
        sizes = gpu_check.REAL_SIZES if dev.cuda else gpu_check.SMOKE_SIZES
        model = harness.random_dit(config, dev.device, dev.dtype)
        model.enable_sequence_parallel(parallel)
        call = gpu_check.dit_step(model, sizes[args.size], dev, ForwardPlan(True))
        seconds, peak, _ = dev.measure(call, max(1, args.repeats), count_flops=False)
        peaks = [None] * layout.world_size
        dist.all_gather_object(peaks, peak)
        if layout.is_main:
            print("RESULT " + json.dumps(dict(seconds=seconds, peak=max(peaks), processes=layout.world_size)))
    finally:
        stop_parallel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
