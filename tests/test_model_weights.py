"""The one weight check (checkpoints/weights.py) and the T5 size bounds (checkpoints/t5_shapes.py), on CPU.

The core loader (dequantize) and the native loader (checked_weights with the DiT rules) refuse a damaged
scaled-fp8 file with the same message, because both run scaled_fp8.checked; the in-host side of the same faults
runs in tests/test_loader_fuzz.py."""

import pytest
import torch

from flashvideo_core.checkpoints import scaled_fp8
from flashvideo_core.checkpoints.t5_shapes import t5_config_from_shapes
from flashvideo_core.checkpoints.weights import DIT, PLAIN, WeightRules, checked_weights
from flashvideo_core.errors import CheckpointError
from flashvideo_core.tiny import TINY_T5_CONFIG, t5_encoder_shapes

KEY = "blocks.0.proj"


def _scaled():
    gen = torch.Generator().manual_seed(0)
    return scaled_fp8.quantize({f"{KEY}.weight": torch.randn(4, 4, generator=gen), f"{KEY}.bias": torch.zeros(4)},
                               None)


@pytest.mark.parametrize("name, change, expect", [
    ("zero", lambda sd: sd.update({f"{KEY}.scale_weight": torch.zeros(())}), "is 0.0; a scale must be a positive finite"),
    ("negative", lambda sd: sd.update({f"{KEY}.scale_weight": -sd[f"{KEY}.scale_weight"]}), "positive finite"),
    ("nan", lambda sd: sd.update({f"{KEY}.scale_weight": torch.tensor(float("nan"))}), "is nan"),
    ("inf", lambda sd: sd.update({f"{KEY}.scale_weight": torch.tensor(float("inf"))}), "is inf"),
    ("int", lambda sd: sd.update({f"{KEY}.scale_weight": torch.ones((), dtype=torch.int64)}), "torch.int64 of shape"),
    ("shape", lambda sd: sd.update({f"{KEY}.scale_weight": torch.ones(2, 2)}), r"shape \(2, 2\); a scale is one"),
    ("missing", lambda sd: sd.pop(f"{KEY}.scale_weight"), "stored in fp8 without its .scale_weight"),
    ("unquantised_linear", lambda sd: sd.update({f"{KEY}.weight": torch.ones(4, 4)}) or sd.pop(f"{KEY}.scale_weight"),
     "has no .scale_weight: in a scaled-fp8 file every Linear weight"),
    ("orphan", lambda sd: sd.update({"gone.scale_weight": torch.ones(())}), "scales a weight gone.weight"),
    ("float_weight", lambda sd: sd.update({f"{KEY}.weight": torch.ones(4, 4)}), "stored as torch.float32 beside"),
    ("input_scale", lambda sd: sd.update({f"{KEY}.scale_input": torch.tensor(-1.0)}), "scale_input is -1.0"),
    ("marker", lambda sd: sd.update({"scaled_fp8": torch.zeros(0, dtype=torch.int8)}), "marker is torch.int8"),
    ("bias_fp8", lambda sd: sd.update({f"{KEY}.bias": torch.zeros(4, dtype=torch.float8_e4m3fn)}), "fp8 without"),
])
def test_core_and_native_refuse_each_scale_fault_with_one_message(name, change, expect):
    tensors = _scaled()
    change(tensors)
    with pytest.raises(CheckpointError, match=f"f.safetensors: .*{expect}") as core:
        scaled_fp8.dequantize(tensors, "f.safetensors")
    with pytest.raises(CheckpointError) as native:
        checked_weights(tensors, "f.safetensors", DIT)
    assert str(core.value) == str(native.value)


def test_valid_scales_reach_the_host_as_float32_scalars():
    tensors = _scaled()
    tensors[f"{KEY}.scale_weight"] = tensors[f"{KEY}.scale_weight"].reshape(1).double()
    out = checked_weights(tensors, "f", DIT)
    assert out[f"{KEY}.scale_weight"].shape == () and out[f"{KEY}.scale_weight"].dtype == torch.float32
    assert out[f"{KEY}.weight"] is tensors[f"{KEY}.weight"]
    with pytest.raises(CheckpointError, match="f: a scaled-fp8 file, which this model is not read from"):
        checked_weights(tensors, "f", PLAIN)


@pytest.mark.parametrize("dtype_or_value, expect", [
    (torch.int32, "not stored as real floating"), (torch.bool, "not stored as real floating"),
    (torch.float8_e4m3fn, "not stored as real floating"), (float("nan"), "NaN/Inf"), (float("-inf"), "NaN/Inf"),
])
def test_plain_weights_must_be_finite_real_floats(dtype_or_value, expect):
    weight = torch.ones(3)
    weight = weight.to(dtype_or_value) if isinstance(dtype_or_value, torch.dtype) else weight * dtype_or_value
    with pytest.raises(CheckpointError, match=f"w.pt: 1 of its .*{expect}"):
        checked_weights({"a": torch.ones(2), "b": weight}, "w.pt")
    assert checked_weights({"b": weight}, "w.pt", WeightRules(auxiliary=lambda k: k == "b")) == {"b": weight}


def test_scales_without_a_quantised_format_are_refused():
    with pytest.raises(CheckpointError, match="quantisation entry a.scale_weight but no quantised format"):
        checked_weights({"a.weight": torch.ones(2, 2), "a.scale_weight": torch.ones(())}, "x", DIT)


def _t5(**changes):
    return {k: tuple(v) for k, v in t5_encoder_shapes({**TINY_T5_CONFIG, **changes}).items()}


def test_t5_sizes_are_bounded_before_anything_is_built():
    assert t5_config_from_shapes(_t5(), "t5")["num_heads"] == TINY_T5_CONFIG["num_heads"]
    shapes = _t5()  # a million heads of width 1: a few MB of weights, an allocator failure at encode time
    shapes["encoder.block.0.layer.0.SelfAttention.q.weight"] = (1_000_000, 32)
    shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (32, 1_000_000)
    with pytest.raises(CheckpointError, match="t5: its weights declare num_heads 1000000, beyond the 256 .*T5-XXL has 64"):
        t5_config_from_shapes(shapes, "t5")
    with pytest.raises(CheckpointError, match="num_layers 97, beyond the 96"):
        t5_config_from_shapes(_t5(num_layers=97), "t5")
    with pytest.raises(CheckpointError, match="d_ff 70000, beyond"):
        t5_config_from_shapes(_t5(d_ff=70000), "t5")
    with pytest.raises(CheckpointError, match="100 rows; the T5 tokenizer needs 32100 to 262144"):
        t5_config_from_shapes(_t5(vocab_size=100), "t5")
    shapes = _t5()
    shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (32, 0)  # zero heads
    with pytest.raises(CheckpointError, match="non-empty matrix"):
        t5_config_from_shapes(shapes, "t5")
