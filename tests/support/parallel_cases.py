"""The sequence-parallel checks, run the same way by one process (the oracle) and by every process of a gloo
group (tests/test_parallel.py): tiny DiTs with seeded random weights, shapes whose token and head counts do not
split evenly, one forward of each stage, a 5-step stage-II refinement and a 6-step stage-I sample."""

from __future__ import annotations

import os

import torch

from flashvideo_core.dit.config import DiTConfig
from flashvideo_core.dit.model import FlashVideoDiT
from flashvideo_core.stage1.sampler import sample_stage1
from flashvideo_core.stage2.refiner import refine_stage2

#: 6 heads (even over 2 and 3 processes) and 5 heads (padded over both)
STAGE1 = DiTConfig(num_layers=2, hidden_size=96, head_dim=16, text_hidden_size=24)
STAGE2 = DiTConfig(num_layers=2, hidden_size=80, head_dim=16, text_hidden_size=24, stage2_embeddings=True)
#: (B, T, C, H, W): 3 frames of 3x5 patches = 45 video tokens (uneven over 2 processes, even over 3)
LATENT = (1, 3, 16, 6, 10)
TEXT_TOKENS = 7


def build(config: DiTConfig, seed: int) -> FlashVideoDiT:
    torch.manual_seed(seed)
    model = FlashVideoDiT(config).eval()
    with torch.no_grad():  # non-zero everywhere (zero-initialised gates would hide the attention)
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


def run_cases(parallel=None) -> dict:
    """Every check's output on this process (the same on all of them when ``parallel`` is given)."""
    stage1, stage2 = build(STAGE1, 1), build(STAGE2, 2)
    if parallel is not None:
        stage1.enable_sequence_parallel(parallel)
        stage2.enable_sequence_parallel(parallel)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(LATENT, generator=g)
    context = torch.randn(1, TEXT_TOKENS, 24, generator=g)
    t = torch.tensor([500.0])
    out = {}
    with torch.no_grad():
        out["stage1 forward"] = stage1(torch.cat([x, x]), t.repeat(2), torch.cat([context, -context]))
        out["stage2 forward"] = stage2(x, t, context, latent_frames=torch.tensor([3.0]), ref_step=torch.tensor([675.0]))
    x0 = x.permute(0, 2, 1, 3, 4)
    out["stage2 5 steps"] = refine_stage2(stage2, context, x0, 675, 5, 13.0, 2.5)
    out["stage1 6 steps"] = sample_stage1(stage1, context, LATENT, steps=6, cfg=6.0, seed=4)
    return out


def run_rank(rank: int, world: int, port: int, result_path: str) -> None:
    """One process of ``world`` (a torch.multiprocessing.spawn target): the torchrun environment, the engine's
    process groups, the checks; rank 0 saves its outputs."""
    from flashvideo_core.parallel import layout_from_environment, start_parallel, stop_parallel

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    parallel = start_parallel(layout_from_environment(), "cpu")
    try:
        out = run_cases(parallel)
        if rank == 0:
            torch.save(out, result_path)
    finally:
        stop_parallel()
