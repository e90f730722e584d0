"""Memory per GPU of a sequence-parallel DiT step at true size: the planner's per-process figure covers what one
rank holds (measured under fake tensors with the real configs and sequence lengths) and is at most 25 % above it;
the fake-tensor count equals the real-tensor count; the peak is per block, so few layers stand for all."""

import dataclasses
import sys
import types
from pathlib import Path

import pytest
import torch

from flashvideo_core.dit.config import STAGE1_CONFIG, STAGE2_CONFIG, DiTConfig
from flashvideo_core.dit.memory import ForwardPlan, plan_bytes, plan_for

pytest.importorskip("yunchang", reason="the sequence-parallel engine (requirements-dev.txt)")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the measuring tools live there
from simulated_rank import SimulatedRank, rank_bytes, ranks_to_measure, step_peak  # noqa: E402

LATENTS = {"1080p": (1, 16, 13, 134, 240), "2K": (1, 16, 13, 180, 320), "270p": (1, 16, 13, 32, 60)}
MODES = {"batched": ForwardPlan(True), "sequential": ForwardPlan(False), "lean 16384": ForwardPlan(False, 16384),
         "lean 4096": ForwardPlan(False, 4096), "lean 2048": ForwardPlan(False, 2048)}


def _cases() -> list:
    """Stage II in every mode; stage I (the same rules, width 3072 and 48 heads) batched, sequential, lean. Lean
    2048 stands for the leanest, 1024 (the same rule; half the chunks to run): the benchmark measures 1024 too."""
    cases = []
    for stage, modes in (("II", list(MODES)), ("I", ["batched", "sequential", "lean 2048"])):
        for size in LATENTS if stage == "I" else ("1080p", "2K"):  # 270p: stage I's preview
            for processes in (1, 2, 4, 8):
                for mode in modes:
                    cases.append(pytest.param(stage, size, processes, mode, id=f"{stage}-{size}-N{processes}-{mode}"))
    return cases


@pytest.mark.parametrize("stage, size, processes, mode", _cases())
def test_planner_covers_each_rank_at_true_size_within_25_percent(stage, size, processes, mode):
    config = {"I": STAGE1_CONFIG, "II": STAGE2_CONFIG}[stage]
    measured, _ = rank_bytes(dataclasses.replace(config, num_layers=1), LATENTS[size], MODES[mode], processes)
    planner = plan_bytes(config, LATENTS[size], torch.bfloat16, MODES[mode], processes)
    assert measured <= planner <= 1.25 * measured, f"planner / measured = {planner / measured:.3f}"


def test_peak_is_per_block():
    config = STAGE2_CONFIG
    for processes, plan in ((1, ForwardPlan(True)), (4, ForwardPlan(False, 4096))):
        peaks = {layers: step_peak(dataclasses.replace(config, num_layers=layers), LATENTS["1080p"], plan,
                                   processes)["peak"] for layers in (1, 3)}
        assert peaks[1] == peaks[3]


TINY = DiTConfig(num_layers=2, hidden_size=256, text_hidden_size=64, stage2_embeddings=True)  # 4 heads


@pytest.mark.parametrize("processes", [1, 2, 3])  # 3: padded heads (4 -> 6) and a padded last shard
@pytest.mark.parametrize("plan", [ForwardPlan(True), ForwardPlan(False, 16)], ids=["batched", "lean"])
def test_fake_tensor_count_equals_real_tensor_count(processes, plan):
    latent = (1, 16, 3, 6, 14)  # 63 video tokens: shards of 21 on 3 processes, 32 + 31 on 2
    for rank in ranks_to_measure(TINY, latent, processes):
        fake = step_peak(TINY, latent, plan, processes, rank, torch.float32, fake=True)
        real = step_peak(TINY, latent, plan, processes, rank, torch.float32, fake=False)
        assert fake == real and fake["peak"] > 0


def test_sharded_step_holds_less_and_counts_the_all_to_all():
    """The simulated collectives allocate: a rank of 2 holds less than one process, but more than half of it."""
    latent, plan = LATENTS["1080p"], ForwardPlan(False)
    config = dataclasses.replace(STAGE2_CONFIG, num_layers=1)
    one, two = (step_peak(config, latent, plan, n)["peak"] for n in (1, 2))
    assert 0.5 * one < two < one


def test_planner_reads_the_process_count_off_a_sharded_model():
    model = types.SimpleNamespace(config=STAGE2_CONFIG, sequence_parallel=SimulatedRank(4, 0))  # a DiT on 4
    shape = LATENTS["1080p"]
    fits_four = plan_bytes(STAGE2_CONFIG, shape, torch.bfloat16, ForwardPlan(True), 4)
    assert fits_four < plan_bytes(STAGE2_CONFIG, shape, torch.bfloat16, ForwardPlan(True))
    assert plan_for(model, shape, torch.bfloat16, free_bytes=int(fits_four / 0.85) + 1) == ForwardPlan(True)
    assert plan_for(STAGE2_CONFIG, shape, torch.bfloat16, free_bytes=int(fits_four / 0.85) + 1) != ForwardPlan(True)
