"""The shared DiT against diffusers' CogVideoXTransformer3DModel (independent oracle) and the RoPE math."""

import math

import pytest
import torch

from flashvideo_core.dit.config import DiTConfig, infer_dit_config
from flashvideo_core.dit.model import FlashVideoDiT
from flashvideo_core.dit.rope import apply_rope, rope_table

TINY = DiTConfig(num_layers=2, hidden_size=128, text_hidden_size=32)


def _random_dit(config, seed=0):
    torch.manual_seed(seed)
    model = FlashVideoDiT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))  # zero-initialised adaLN/biases would hide errors
    return model


@pytest.fixture(scope="module")
def diffusers_dit():
    diffusers = pytest.importorskip("diffusers")
    ours = _random_dit(TINY)
    theirs = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=512,
        text_embed_dim=32, num_layers=2, patch_size=2, use_rotary_positional_embeddings=True,
    ).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    # The reference's final LayerNorm uses eps 1e-6; diffusers uses norm_eps (1e-5) there.
    theirs.norm_out.norm.eps = 1e-6
    return ours, theirs


@pytest.mark.parametrize("frames,height,width", [(1, 8, 12), (3, 8, 12), (2, 12, 8)])
def test_forward_matches_diffusers_with_integer_rope(diffusers_dit, frames, height, width):
    ours, theirs = diffusers_dit
    gen = torch.Generator().manual_seed(frames)
    x = torch.randn(2, frames, 16, height, width, generator=gen)
    t = torch.tensor([999.0, 19.0])
    ctx = torch.randn(2, 9, 32, generator=gen)
    with torch.no_grad():
        got = ours(x, t, ctx)
        rope = rope_table(frames, height // 2, width // 2, 64, "cpu")
        want = theirs(hidden_states=x, encoder_hidden_states=ctx, timestep=t, image_rotary_emb=rope, return_dict=False)[0]
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_rope_angles_follow_the_spec():
    frames, height, width = 3, 4, 5
    cos, sin = rope_table(frames, height, width, 64, "cpu")
    token = lambda t, h, w: (t * height + h) * width + w  # noqa: E731  (t, h, w) row-major
    for (t, h, w) in [(0, 0, 0), (2, 3, 4), (1, 0, 3)]:
        i = token(t, h, w)
        for dim, pos, base, size in [(0, t, 0, 16), (6, t, 0, 16), (16, h, 16, 24), (38, h, 16, 24), (40, w, 40, 24), (63, w, 40, 24)]:
            j = (dim - base) // 2
            angle = pos / 10000 ** (2 * j / size)
            assert math.isclose(cos[i, dim].item(), math.cos(angle), abs_tol=1e-6)
            assert math.isclose(sin[i, dim].item(), math.sin(angle), abs_tol=1e-6)
    # 2K stays on the integer grid (extrapolation): the last width index is 159.
    cos2k, _ = rope_table(1, 90, 160, 64, "cpu")
    assert math.isclose(cos2k[159, 40].item(), math.cos(159.0), abs_tol=1e-6)


def test_rope_rotates_interleaved_pairs():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    angle = torch.tensor([[0.5, 0.5, 1.5, 1.5]])
    out = apply_rope(x, angle.cos(), angle.sin())
    expected = torch.tensor([[1 * math.cos(0.5) - 2 * math.sin(0.5), 2 * math.cos(0.5) + 1 * math.sin(0.5),
                              3 * math.cos(1.5) - 4 * math.sin(1.5), 4 * math.cos(1.5) + 3 * math.sin(1.5)]])
    torch.testing.assert_close(out, expected)


def test_config_is_inferred_from_shapes():
    for config in (TINY, DiTConfig(num_layers=3, hidden_size=192, text_hidden_size=32, stage2_embeddings=True)):
        with torch.device("meta"):
            sd = FlashVideoDiT(config).state_dict()
        assert infer_dit_config(sd) == config


def test_stage2_time_embedding_adds_both_extra_terms_in_order():
    config = DiTConfig(num_layers=1, hidden_size=128, text_hidden_size=32, stage2_embeddings=True)
    model = _random_dit(config)
    t, frames, ref = torch.tensor([904.0]), torch.tensor([13.0]), torch.tensor([676.0])
    from flashvideo_core.dit.model import timestep_sinusoid

    with torch.no_grad():
        expected = (model.time_embedding(timestep_sinusoid(t, 128)) + model.time_size_embedding(timestep_sinusoid(frames, 128))
                    + model.ref_step_time_embedding(timestep_sinusoid(ref, 128)))
        torch.testing.assert_close(model.time_embed(t, frames, ref), expected)
    with pytest.raises(ValueError, match="latent_frames and ref_step"):
        model.time_embed(t)


def test_timestep_sinusoid_is_cos_then_sin():
    from flashvideo_core.dit.model import timestep_sinusoid

    emb = timestep_sinusoid(torch.tensor([3.0]), 8)
    freqs = [math.exp(-math.log(10000) * k / 4) for k in range(4)]
    torch.testing.assert_close(emb[0], torch.tensor([math.cos(3 * f) for f in freqs] + [math.sin(3 * f) for f in freqs]))


def test_attention_backends_fall_back_to_sdpa_and_chunk_long_cpu_sequences(monkeypatch):
    from flashvideo_core.dit import attention as attn

    model = _random_dit(TINY)
    monkeypatch.setattr(attn, "available_backends", lambda: ["sdpa"])
    assert model.set_attention_backend("sage") == "sdpa"
    with pytest.raises(ValueError, match="attention backend"):
        model.set_attention_backend("fastest")
    q, k, v = (torch.randn(1, 2, 300, 64, generator=torch.Generator().manual_seed(i)) for i in range(3))
    whole = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert not attn._cpu_math_kernel(q, k, v)  # fp32 CPU SDPA uses the memory-efficient flash kernel
    monkeypatch.setattr(attn, "_cpu_math_kernel", lambda *a: True)  # as if SDPA fell back to math
    monkeypatch.setattr(attn, "CPU_SCORE_ELEMENTS", 2 * 300 * 64)  # forces 64-row query chunks
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(attn.F, "scaled_dot_product_attention", lambda *a: calls.append(a[0].shape[2]) or real(*a))
    torch.testing.assert_close(attn.attention(q, k, v), whole)
    assert max(calls) == 64 and sum(calls) == 300


@pytest.mark.parametrize("height, width", [(5, 7), (4, 7), (1, 1)])
def test_odd_latent_sides_are_padded_and_cropped_back(height, width):
    """An odd latent side (a ComfyUI size such as 56 px) is padded to the 2x2 patches by repeating the last row or
    column, and the output is cropped back: the same values as the explicitly padded latent, cut to size (it once
    ended in a reshape error inside the model)."""
    torch.manual_seed(0)
    model = FlashVideoDiT(TINY).eval()
    x, t, context = torch.randn(1, 2, 16, height, width), torch.tensor([500.0]), torch.randn(1, 5, 32)
    padded = torch.nn.functional.pad(x.flatten(0, 1), (0, width % 2, 0, height % 2), mode="replicate").unflatten(0, (1, 2))
    with torch.no_grad():
        out, reference = model(x, t, context), model(padded, t, context)
    assert out.shape == x.shape
    torch.testing.assert_close(out, reference[..., :height, :width])
