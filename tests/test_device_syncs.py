"""No per-step device synchronisation in the core samplers: every read of a tensor's value on the host (a
finite check, ``.item()``, ``bool``/``float``/``int`` of a tensor, ``.tolist()``) waits for the device on a GPU, so
a sampling run makes the same few reads whatever its step count (inputs checked before, the result once after)."""

from collections import Counter

import pytest
import torch
from torch.overrides import TorchFunctionMode

from flashvideo_core.dit.config import DiTConfig
from flashvideo_core.dit.model import FlashVideoDiT
from flashvideo_core.errors import InputError
from flashvideo_core.stage1.sampler import sample_stage1
from flashvideo_core.stage2.refiner import refine_stage2

HOST_READS = {"isfinite", "item", "tolist", "__bool__", "__float__", "__int__", "__index__"}
TEXT = 7


class HostReads(TorchFunctionMode):
    """Counts the tensor calls that bring a value to the host."""

    def __init__(self):
        super().__init__()
        self.reads = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.reads[name] += 1
        return func(*args, **(kwargs or {}))


def _model(stage2: bool) -> FlashVideoDiT:
    torch.manual_seed(0)
    config = DiTConfig(num_layers=2, hidden_size=64, text_hidden_size=32, stage2_embeddings=stage2)
    return FlashVideoDiT(config).eval()


def _reads(run) -> Counter:
    with HostReads() as counter:
        run()
    return counter.reads


def test_stage1_reads_the_device_a_fixed_number_of_times():
    model, ctx = _model(False), torch.randn(1, TEXT, 32)
    reads = {steps: _reads(lambda: sample_stage1(model, ctx, (1, 2, 16, 4, 6), steps=steps, seed=1))
             for steps in (2, 6)}
    assert reads[2] == reads[6], reads
    assert reads[2]["isfinite"] == 2, reads  # the prompt embedding in, the sample out


def test_stage2_reads_the_device_a_fixed_number_of_times():
    model, ctx = _model(True), torch.randn(1, TEXT, 32)
    x0 = torch.randn(1, 16, 2, 4, 6)
    reads = {steps: _reads(lambda: refine_stage2(model, ctx, x0, steps=steps)) for steps in (1, 5)}
    assert reads[1] == reads[5], reads
    assert reads[1]["isfinite"] == 2, reads  # the degraded latent in, the refined latent out


def test_a_nan_result_is_still_refused_once_at_the_end():
    model = _model(False)
    with torch.no_grad():
        model.proj_out.bias.fill_(float("nan"))
    with pytest.raises(InputError, match="stage I produced NaN/Inf"):
        sample_stage1(model, torch.randn(1, TEXT, 32), (1, 2, 16, 4, 6), steps=3)
