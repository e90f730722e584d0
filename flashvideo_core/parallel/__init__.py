"""One video over several processes (GPUs): sequence-parallel DiT forwards on an existing engine (docs/PARALLEL.md).

The communication and the sharded attention's all-to-all come from ``yunchang`` (the USP layer of xDiT), installed
only by those who run several processes; the pack supplies the model-specific parts: where the joint
[text | video] sequence is cut, RoPE rows per shard, padding heads and tokens to the process count, and gathering
the output. A single process never imports any of it.
"""

from .layout import ParallelLayout, layout_from_environment, start_parallel, stop_parallel
from .sequence import SequenceParallel, Shards, ulysses_degrees

__all__ = ["ParallelLayout", "SequenceParallel", "Shards", "layout_from_environment", "start_parallel",
           "stop_parallel", "ulysses_degrees"]
