"""Loading the DiT from the official SAT layout (LoRA unmerged or merged), diffusers and converted files."""

import json

import pytest
import torch

from flashvideo_core.checkpoints.convert import convert_checkpoint
from flashvideo_core.checkpoints.dit_keys import SAT_PREFIX, merge_lora
from flashvideo_core.checkpoints.io import read_checkpoint, write_safetensors
from flashvideo_core.dit.config import DiTConfig
from flashvideo_core.dit.loader import load_dit
from flashvideo_core.errors import CheckpointError
from flashvideo_core.tiny import TINY_STAGE1_CONFIG, TINY_STAGE2_CONFIG, random_dit_state_dict, write_tiny_dit
from support.sat_reference import sat_forward


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dit")
    return {
        "stage1_lora": write_tiny_dit(str(d / "stage1.pt"), "stage1", lora=True),
        "stage1_merged": write_tiny_dit(str(d / "stage1_merged.pt"), "stage1", lora=False),
        "stage2": write_tiny_dit(str(d / "stage2.pt"), "stage2"),
        "dir": d,
    }


def _inputs(frames=2, size=8, text=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, frames, 16, size, size, generator=gen), torch.tensor([700.0]), torch.randn(1, text, 32, generator=gen)


def test_sat_layout_matches_a_from_spec_forward(files):
    """The SAT key mapping (qkv split, adaLN chunk order, renames) against an independent forward on SAT keys."""
    sat = torch.load(files["stage1_merged"], weights_only=True)["module"]
    x, t, ctx = _inputs()
    with torch.no_grad():
        got = load_dit(files["stage1_merged"])(x, t, ctx)
    want = sat_forward(sat, x, t, ctx, heads=2, layers=2)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_stage2_sat_layout_matches_a_from_spec_forward(files):
    sat = torch.load(files["stage2"], weights_only=True)["module"]
    x, t, ctx = _inputs(frames=3)
    frames, ref = torch.tensor([3.0]), torch.tensor([676.0])
    with torch.no_grad():
        got = load_dit(files["stage2"], expect_stage="stage2")(x, t, ctx, frames, ref)
    want = sat_forward(sat, x, t, ctx, heads=2, layers=2, latent_frames=frames, ref_step=ref)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_unmerged_lora_equals_merged(files):
    x, t, ctx = _inputs()
    with torch.no_grad():
        a = load_dit(files["stage1_lora"])(x, t, ctx)
        b = load_dit(files["stage1_merged"])(x, t, ctx)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lora_merge_formula():
    """W' = W + concat_k(B_k A_k) * (1/rank), computed independently in float64."""
    gen = torch.Generator().manual_seed(0)
    w, bias = torch.randn(6, 4, generator=gen), torch.randn(6, generator=gen)
    a = [torch.randn(128, 4, generator=gen) for _ in range(3)]
    b = [torch.randn(2, 128, generator=gen) for _ in range(3)]
    sd = {"x.original.weight": w, "x.original.bias": bias}
    for k in range(3):
        sd[f"x.matrix_A.{k}"], sd[f"x.matrix_B.{k}"] = a[k], b[k]
    merged = merge_lora(sd)
    expected = w.double() + torch.cat([b[k].double() @ a[k].double() for k in range(3)]) / 128
    assert set(merged) == {"x.weight", "x.bias"}
    torch.testing.assert_close(merged["x.weight"].double(), expected, atol=1e-5, rtol=1e-6)
    assert torch.equal(merged["x.bias"], bias)


def test_diffusers_and_converted_layouts_load_identically(files):
    diffusers_file = str(files["dir"] / "diffusion_pytorch_model.safetensors")
    write_safetensors(diffusers_file, random_dit_state_dict(TINY_STAGE1_CONFIG), {})
    converted = str(files["dir"] / "stage1.safetensors")
    meta = convert_checkpoint(files["stage1_lora"], converted)
    assert DiTConfig(**json.loads(meta["flashvideo.config"])) == TINY_STAGE1_CONFIG
    assert meta["flashvideo.source_layout"] == "sat"
    x, t, ctx = _inputs()
    with torch.no_grad():
        ref = load_dit(files["stage1_merged"])(x, t, ctx)
        torch.testing.assert_close(load_dit(diffusers_file)(x, t, ctx), ref)
        torch.testing.assert_close(load_dit(converted)(x, t, ctx), load_dit(files["stage1_lora"])(x, t, ctx))
    assert not any(".matrix_" in k for k in read_checkpoint(converted).tensors)


def test_ignored_and_foreign_keys(files, tmp_path):
    sat = torch.load(files["stage2"], weights_only=True)["module"]
    sat[SAT_PREFIX + "mixins.pos_embed.freqs_sin"] = torch.zeros(3, 3)
    sat["first_stage_model.encoder.conv_in.conv.weight"] = torch.zeros(1)
    path = str(tmp_path / "with_extras.pt")
    torch.save({"module": sat}, path)
    assert load_dit(path).config == TINY_STAGE2_CONFIG


def test_bad_dit_files(files, tmp_path):
    with pytest.raises(CheckpointError, match="is a stage1 DiT, expected stage2.*ref_step_time_embedding"):
        load_dit(files["stage1_lora"], expect_stage="stage2")
    with pytest.raises(CheckpointError, match="stage-II refiner"):
        load_dit(files["stage2"], expect_stage="stage1")
    sat = torch.load(files["stage1_merged"], weights_only=True)["module"]
    sat[SAT_PREFIX + "transformer.layers.0.mlp.dense_h_to_4h.matrix_A.0"] = torch.zeros(128, 128)
    mlp_lora = str(tmp_path / "mlp_lora.pt")
    torch.save({"module": sat}, mlp_lora)
    with pytest.raises(CheckpointError, match="detected layout: sat.*unexpected"):
        load_dit(mlp_lora)
    sat = torch.load(files["stage1_merged"], weights_only=True)["module"]
    del sat[SAT_PREFIX + "mixins.final_layer.linear.bias"]
    missing = str(tmp_path / "missing.pt")
    torch.save({"module": sat}, missing)
    with pytest.raises(CheckpointError, match="1 missing: proj_out.bias"):
        load_dit(missing)
    with pytest.raises(CheckpointError, match="not a FlashVideo DiT.*VAE|not a FlashVideo DiT"):
        from flashvideo_core.tiny import write_tiny_vae

        load_dit(write_tiny_vae(str(tmp_path / "vae.pt")))


def test_scaled_fp8_conversion_halves_the_blocks_and_stays_close(files):
    """`convert --quantize scaled_fp8`: Linear weights as e4m3 W/s with s = absmax/448 per tensor (the format
    ComfyUI reads natively); the pack's own loader dequantises it to W ~ fp8 * s."""
    from flashvideo_core.checkpoints.scaled_fp8 import FP8, FP8_MAX, MARKER

    plain, quant = str(files["dir"] / "plain.safetensors"), str(files["dir"] / "fp8.safetensors")
    convert_checkpoint(files["stage2"], plain)
    convert_checkpoint(files["stage2"], quant, quantize="scaled_fp8")
    full, q = read_checkpoint(plain).tensors, read_checkpoint(quant).tensors
    key = "transformer_blocks.0.attn1.to_q.weight"
    assert q[key].dtype == FP8 and q[MARKER].dtype == FP8
    scale = q["transformer_blocks.0.attn1.to_q.scale_weight"]
    assert float(scale) == pytest.approx(float(full[key].abs().max()) / FP8_MAX, rel=1e-6)
    assert q["patch_embed.text_proj.weight"].dtype == FP8 and q["proj_out.weight"].dtype == FP8  # every Linear
    assert q["patch_embed.proj.weight"].dtype == full["patch_embed.proj.weight"].dtype  # the Conv2d stays
    assert q["transformer_blocks.0.norm1.norm.weight"].dtype == torch.float32  # norms and biases stay
    block_bytes = lambda sd: sum(v.numel() * v.element_size() for k, v in sd.items() if k.startswith("transformer_blocks."))  # noqa: E731
    assert block_bytes(q) < 0.3 * block_bytes(full)
    x, t, ctx = _inputs()
    extra = {"latent_frames": torch.tensor([2.0]), "ref_step": torch.tensor([675.0])}
    with torch.no_grad():
        ref, got = load_dit(plain)(x, t, ctx, **extra), load_dit(quant)(x, t, ctx, **extra)
    assert 0 < float((got - ref).norm() / ref.norm()) < 0.05  # e4m3 keeps ~3 mantissa bits per weight
    with pytest.raises(CheckpointError, match="scaled_fp8"):
        convert_checkpoint(files["stage2"], str(files["dir"] / "x.safetensors"), quantize="int4")
