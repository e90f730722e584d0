"""Which process this is and how the processes split one video, read from ``torchrun``'s environment.

``torchrun --nproc-per-node N`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in every process; without them (or
with one process) there is no layout and the pack runs exactly as a plain single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping, Optional

import torch

from ..errors import FlashVideoError

#: how long a collective waits for a peer before giving up (a peer that died is normally reaped by torchrun first)
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
ENGINE_HINT = "pip install yunchang (the sequence-parallel attention layer of xDiT; it needs only torch)"


class ThisProcessFailed(FlashVideoError):
    """An error of one process only (its GPU, say), unlike the checks every process fails alike: whichever
    process hits it reports it."""


@dataclass(frozen=True)
class ParallelLayout:
    """One process's place: ``rank`` of ``world_size``, its GPU (``local_rank``), and the sequence-parallel degrees.

    Every process is one Ulysses rank (the video tokens are split over all of them); ring attention is not used
    (docs/PARALLEL.md says why), so ``ring_degree`` is 1."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def ulysses_degree(self) -> int:
        return self.world_size

    @property
    def ring_degree(self) -> int:
        return 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints progress (rank 0)."""
        return self.rank == 0

    def describe(self) -> str:
        return (f"{self.world_size} processes, sequence-parallel: Ulysses degree {self.ulysses_degree}, "
                f"ring degree {self.ring_degree}")

    def device(self, device_type: str) -> torch.device:
        """This rank's device: its own GPU (``cuda:LOCAL_RANK``) or the CPU."""
        return torch.device("cuda", self.local_rank) if device_type == "cuda" else torch.device("cpu")


def layout_from_environment(environ: Mapping[str, str] = os.environ) -> Optional[ParallelLayout]:
    """The layout ``torchrun`` set up, or None for a single process."""
    try:
        world = int(environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        rank = int(environ["RANK"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as e:
        raise FlashVideoError(f"the torchrun environment is incomplete or not numbers ({e}); start several "
                              "processes with torchrun --nproc-per-node N -m flashvideo_core ...") from None
    if not 0 <= rank < world:
        raise FlashVideoError(f"RANK {rank} is outside WORLD_SIZE {world}; start the processes with torchrun")
    return ParallelLayout(rank, world, local_rank)


def start_parallel(layout: ParallelLayout, device_type: str):
    """Join the process group (NCCL on GPUs, gloo on the CPU) and build the sequence-parallel group with the
    engine. Returns a :class:`~.sequence.SequenceParallel`."""
    import torch.distributed as dist

    try:
        import yunchang
        from yunchang.globals import PROCESS_GROUP
    except ImportError:
        raise FlashVideoError(f"several processes need the sequence-parallel engine: {ENGINE_HINT}") from None
    from .sequence import SequenceParallel

    if device_type == "cuda":
        if torch.cuda.device_count() <= layout.local_rank:
            raise ThisProcessFailed(f"process {layout.rank} wants GPU {layout.local_rank}, but this machine has "
                                  f"{torch.cuda.device_count()}; give --nproc-per-node at most the GPU count")
        torch.cuda.set_device(layout.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=layout.rank,
                                world_size=layout.world_size, timeout=COLLECTIVE_TIMEOUT)
    yunchang.set_seq_parallel_pg(layout.ulysses_degree, layout.ring_degree, layout.rank, layout.world_size)
    return SequenceParallel(layout, PROCESS_GROUP.ULYSSES_PG)


def stop_parallel() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
