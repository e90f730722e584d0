"""Sequence parallelism (flashvideo_core.parallel) proven on the CPU: 2 and 3 gloo processes, through yunchang's
all-to-all, give the single-process forwards and samples of both stages (fp32, <= 1e-5), with token and head
counts that do not split evenly."""

from __future__ import annotations

import socket

import pytest
import torch

from flashvideo_core.errors import FlashVideoError
from flashvideo_core.parallel import ParallelLayout, layout_from_environment, ulysses_degrees
from flashvideo_core.parallel.sequence import SequenceParallel, _padded_rows
from support.parallel_cases import STAGE2, run_cases, run_rank

pytest.importorskip("yunchang", reason="the sequence-parallel engine (requirements-dev.txt)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single():
    torch.set_num_threads(1)
    return run_cases()


@pytest.mark.parametrize("world", [2, 3])
def test_processes_give_the_single_process_result(tmp_path, single, world):
    result = tmp_path / "rank0.pt"
    torch.multiprocessing.spawn(run_rank, args=(world, free_port(), str(result)), nprocs=world, join=True)
    sharded = torch.load(result)
    assert sharded.keys() == single.keys()
    for name, expected in single.items():
        assert sharded[name].shape == expected.shape, name
        assert torch.isfinite(expected).all() and expected.abs().max() > 0.1, name  # a real signal, not zeros
        assert (sharded[name] - expected).abs().max() <= 1e-5, (name, float((sharded[name] - expected).abs().max()))


def test_single_process_has_no_layout():
    assert layout_from_environment({}) is None
    assert layout_from_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None
    layout = layout_from_environment({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "2"})
    assert layout == ParallelLayout(2, 4, 2) and not layout.is_main and layout.ulysses_degree == 4
    assert layout.describe() == "4 processes, sequence-parallel: Ulysses degree 4, ring degree 1"


@pytest.mark.parametrize("environ, message", [
    ({"WORLD_SIZE": "2"}, "the torchrun environment is incomplete"),
    ({"WORLD_SIZE": "two", "RANK": "0"}, "the torchrun environment is incomplete or not numbers"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK 5 is outside WORLD_SIZE 2"),
])
def test_broken_environment_is_refused(environ, message):
    with pytest.raises(FlashVideoError, match=message):
        layout_from_environment(environ)


def test_more_processes_than_heads_is_refused_with_the_even_splits():
    parallel = SequenceParallel(ParallelLayout(0, 6, 0), group=None)
    with pytest.raises(FlashVideoError, match=r"6 processes but the stage2 DiT has 5 attention heads; run at most 5 "
                                              r"processes \(even splits: \[1, 5\]\)"):
        parallel.check_model(STAGE2)
    assert ulysses_degrees(30) == [1, 2, 3, 5, 6, 10, 15, 30] and ulysses_degrees(48)[:6] == [1, 2, 3, 4, 6, 8]


def test_shards_pad_past_the_end():
    rows = torch.arange(10.0).view(1, 5, 2)
    assert _padded_rows(rows, 3, 3, dim=1).tolist() == [[[6, 7], [8, 9], [0, 0]]]
    assert _padded_rows(rows, 6, 3, dim=1).tolist() == [[[0, 0]] * 3]
