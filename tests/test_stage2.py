"""Stage II: the time grid and DEG coefficients against the reference run's values, the stage-II DiT
against diffusers (plus the two embeddings, added here from diffusers' own pieces), the Euler
sampler against closed-form velocity fields, the bridge and the 2K shape."""

import json
import math
import os

import pytest
import torch

from flashvideo_core.constants import LATENT_SCALE_STAGE1, LATENT_SCALE_STAGE2
from flashvideo_core.dit.config import DiTConfig
from flashvideo_core.dit.model import FlashVideoDiT
from flashvideo_core.dit import rope as rope_module
from flashvideo_core.errors import Cancelled, InputError
from support.progress import CallbackProgress
from flashvideo_core.schedules import degradation_coefficients
from flashvideo_core.stage2 import degrade as degrade_module
from flashvideo_core.stage2.bridge import encode_for_stage2, resize_video, stage1_to_stage2
from flashvideo_core.stage2.degrade import degrade_latent
from flashvideo_core.stage2.refiner import refine_stage2
from flashvideo_core.stage2.schedule import embedded_noise_step, network_timesteps, time_grid
from flashvideo_core.vae.model import DiagonalGaussian
from flashvideo_core.vae.slicing import decode_sliced, encode_sliced

#: values printed by the reference run (docs/SAMPLING.md), kept with the tests
REFERENCE_DATA = os.path.join(os.path.dirname(__file__), "data", "reference_schedules.json")
# docs/SAMPLING.md#stage-ii-grid (printed by the reference run).
GRID_FP32 = [0.0, 0.0909091, 0.2105263, 0.375, 0.6153846, 1.0]
GRID_BF16 = [0.0, 0.09375, 0.21484375, 0.375, 0.6171875, 1.0]
TIMESTEPS_BF16 = [1000.0, 904.0, 784.0, 624.0, 384.0]
TIMESTEPS_FP32 = [1000.0, 909.0909, 789.4736, 625.0, 384.6154]
# docs/SAMPLING.md#degradation: (a, bf16-embedded step) per noise step.
DEG = {650: (0.29401860, 648.0), 675: (0.26395872, 676.0), 700: (0.23505220, 700.0), 750: (0.18110527, 752.0)}
STAGE2_TINY = DiTConfig(num_layers=2, hidden_size=128, text_hidden_size=32, stage2_embeddings=True)


def test_time_grid_and_network_timesteps_match_spec():
    torch.testing.assert_close(time_grid(5, 2.5, torch.float32), torch.tensor(GRID_FP32), atol=1e-6, rtol=0)
    assert time_grid(5, 2.5, torch.bfloat16).float().tolist() == GRID_BF16
    assert network_timesteps(time_grid(5, 2.5, torch.bfloat16)).float().tolist() == TIMESTEPS_BF16
    torch.testing.assert_close(network_timesteps(time_grid(5, 2.5)), torch.tensor(TIMESTEPS_FP32), atol=1e-3, rtol=0)
    # the shift formula itself, at another N and s
    u = torch.linspace(0, 1, 5, dtype=torch.float64)
    expected = 1 - 3.0 * (1 - u) / (1 + 2.0 * (1 - u))
    torch.testing.assert_close(time_grid(4, 3.0, torch.float64), expected)


def test_time_grid_equals_spec_data_exactly():
    data = json.load(open(REFERENCE_DATA))
    assert time_grid(5, 2.5, torch.bfloat16).float().tolist() == data["stage2_grid_torch.bfloat16"]
    assert time_grid(5, 2.5, torch.float32).tolist() == data["stage2_grid_torch.float32"]
    assert network_timesteps(time_grid(5, 2.5, torch.bfloat16)).tolist() == data["stage2_model_timesteps_torch.bfloat16"][:-1]


@pytest.mark.parametrize("step", sorted(DEG))
def test_degradation_coefficients_and_embedded_step(step):
    a, sigma = degradation_coefficients(step)
    assert math.isclose(a, DEG[step][0], abs_tol=2e-7)
    assert math.isclose(sigma, math.sqrt(1 - DEG[step][0] ** 2), abs_tol=2e-7)
    assert embedded_noise_step(step, torch.bfloat16) == DEG[step][1]
    assert embedded_noise_step(step, torch.float32) == step


def test_degrade_latent_formula_seed_and_errors():
    z = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    x = degrade_latent(z, 675, seed=7)
    a, sigma = degradation_coefficients(675)
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(7 + degrade_module.NOISE_STREAM_OFFSET))
    torch.testing.assert_close(x, a * z + sigma * eps)
    torch.testing.assert_close(degrade_latent(z, 675, seed=7), x)
    # the same seed as the bridge's posterior draw must not reuse that noise
    posterior_eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(7))
    assert abs(torch.corrcoef(torch.stack([(x - a * z).flatten(), posterior_eps.flatten()]))[0, 1]) < 0.1
    with pytest.raises(InputError, match="noise_step must be in"):
        degrade_latent(z, 1000)
    with pytest.raises(InputError, match="NaN"):
        degrade_latent(torch.full_like(z, float("nan")))


@pytest.fixture(scope="module")
def stage2_pair():
    """Our stage-II DiT and diffusers' transformer with the two extra embeddings bolted on from diffusers parts."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding

    torch.manual_seed(0)
    ours = FlashVideoDiT(STAGE2_TINY).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.02 * torch.randn_like(p))
    theirs = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=512,
        text_embed_dim=32, num_layers=2, patch_size=2, use_rotary_positional_embeddings=True,
    ).eval()
    sd = ours.state_dict()
    extra = {name: TimestepEmbedding(128, 512) for name in ("time_size_embedding", "ref_step_time_embedding")}
    for name, module in extra.items():
        module.load_state_dict({k[len(name) + 1 :]: v for k, v in sd.items() if k.startswith(name + ".")})
    theirs.load_state_dict({k: v for k, v in sd.items() if k.split(".")[0] not in extra}, strict=True)
    theirs.norm_out.norm.eps = 1e-6  # the reference's final LayerNorm eps

    class WithStage2Terms(torch.nn.Module):
        """diffusers' time embedding + size + ref-step embeddings (docs/SAMPLING.md#the-dit order)."""

        def __init__(self, base):
            super().__init__()
            self.base, self.frames, self.ref = base, None, None

        def forward(self, t_emb, cond=None):
            sinus = lambda v: get_timestep_embedding(v, 128, flip_sin_to_cos=True, downscale_freq_shift=0)  # noqa: E731
            out = self.base(t_emb, cond)
            out = out + extra["time_size_embedding"](sinus(self.frames))
            return out + extra["ref_step_time_embedding"](sinus(self.ref))

    theirs.time_embedding = WithStage2Terms(theirs.time_embedding)
    return ours, theirs


@pytest.mark.parametrize("frames,height,width", [(3, 8, 12), (2, 12, 16)])
def test_stage2_dit_matches_diffusers_plus_embeddings(stage2_pair, frames, height, width):
    ours, theirs = stage2_pair
    gen = torch.Generator().manual_seed(frames)
    x = torch.randn(2, frames, 16, height, width, generator=gen)
    t = torch.tensor([904.0, 904.0])
    ctx = torch.cat([torch.randn(1, 11, 32, generator=gen), torch.zeros(1, 11, 32)])
    lat, ref = torch.full((2,), float(frames)), torch.full((2,), 676.0)
    theirs.time_embedding.frames, theirs.time_embedding.ref = lat, ref
    with torch.no_grad():
        got = ours(x, t, ctx, latent_frames=lat, ref_step=ref)
        rope = rope_module.rope_table(frames, height // 2, width // 2, 64, "cpu")
        want = theirs(hidden_states=x, encoder_hidden_states=ctx, timestep=t, image_rotary_emb=rope, return_dict=False)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_2k_shaped_forward_rebuilds_the_rope_table_per_shape():
    """2K is 180x320 latents; at tiny width a 2K-proportioned latent (18x32) must run on
    an integer grid, and switching shapes must never reuse the previous table."""
    torch.manual_seed(0)
    model = FlashVideoDiT(STAGE2_TINY).eval()
    rope_module._rope_table_on.cache_clear()
    t, ctx = torch.tensor([1000.0]), torch.randn(1, 7, 32)
    lat = lambda n: torch.tensor([float(n)])  # noqa: E731
    ref = torch.tensor([676.0])
    x1080 = torch.randn(1, 2, 16, 14, 24)
    x2k = torch.randn(1, 2, 16, 18, 32)
    with torch.no_grad():
        first = model(x1080, t, ctx, lat(2), ref)
        out2k = model(x2k, t, ctx, lat(2), ref)
        again = model(x1080, t, ctx, lat(2), ref)
    assert out2k.shape == x2k.shape and torch.isfinite(out2k).all()
    torch.testing.assert_close(again, first)
    shapes = {key[:3] for key in _cached_keys()}
    assert {(2, 7, 12), (2, 9, 16)} <= shapes
    cos, _ = rope_module.rope_table(2, 9, 16, 64, "cpu")
    assert math.isclose(cos[15, 40].item(), math.cos(15.0), abs_tol=1e-6)  # width index 15: integer position


def _cached_keys():
    # lru_cache exposes no keys; rebuild them from calls recorded by a wrapper would be heavier: probe instead
    keys = []
    for shape in [(2, 7, 12), (2, 9, 16)]:
        before = rope_module._rope_table_on.cache_info().hits
        rope_module._rope_table_on(*shape, 64, "cpu", 10000.0)
        if rope_module._rope_table_on.cache_info().hits > before:
            keys.append(shape)
    return keys


class VelocityField(torch.nn.Module):
    """A stand-in DiT whose velocity is known in closed form; records what it was called with."""

    def __init__(self, stage="stage2", dtype=torch.float32):
        super().__init__()
        self.config = DiTConfig(num_layers=1, hidden_size=128, text_hidden_size=4, stage2_embeddings=stage == "stage2")
        self.proj_out = torch.nn.Linear(1, 1).to(dtype)
        self.calls = []

    def forward(self, x, t, ctx, latent_frames=None, ref_step=None):
        self.calls.append(dict(t=t.clone(), ctx=ctx.clone(), frames=latent_frames.clone(), ref=ref_step.clone(), batch=x.shape[0]))
        cond = (ctx.abs().sum(dim=(1, 2)) > 0).to(x.dtype).view(-1, 1, 1, 1, 1)
        return (cond * 2.0 + (1 - cond) * 0.5 + 0.1 * x).to(self.proj_out.weight.dtype)


def test_euler_cfg_and_network_inputs_follow_the_reference():
    model = VelocityField()
    x0 = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    context = torch.ones(1, 226, 4)
    out = refine_stage2(model, context, x0, noise_step=675, steps=5, cfg=13.0, shift=2.5)
    # v = v_u + 13 (v_c - v_u) = 0.5 + 13 * 1.5 + 0.1 x, so dx/dt = 20 + 0.1 x; Euler on the fp32 grid:
    grid = time_grid(5, 2.5).tolist()
    x = x0.clone()
    for k in range(5):
        x = x + (grid[k + 1] - grid[k]) * (20.0 + 0.1 * x)
    torch.testing.assert_close(out, x)
    assert len(model.calls) == 5
    for k, call in enumerate(model.calls):
        assert call["batch"] == 2
        assert call["ctx"][0].abs().sum() > 0 and call["ctx"][1].abs().sum() == 0  # [cond, uncond]
        torch.testing.assert_close(call["t"], torch.full((2,), 1000 * (1 - grid[k])))
        assert call["frames"].tolist() == [3.0, 3.0] and call["ref"].tolist() == [675.0, 675.0]


def test_bf16_reproduces_the_reference_grid_and_embedded_step():
    model = VelocityField(dtype=torch.bfloat16)
    x0 = torch.zeros(1, 16, 13, 2, 2)
    refine_stage2(model, torch.ones(1, 226, 4), x0, noise_step=675, steps=5, cfg=13.0)
    assert [c["t"][0].item() for c in model.calls] == TIMESTEPS_BF16
    assert model.calls[0]["ref"][0].item() == 676.0 and model.calls[0]["frames"][0].item() == 13.0


def test_refiner_progress_cancel_and_bad_inputs():
    model = VelocityField()
    x0 = torch.zeros(1, 16, 3, 4, 6)
    ticks = []
    refine_stage2(model, torch.ones(1, 226, 4), x0, steps=4, progress=CallbackProgress(lambda done, total: ticks.append((done, total))))
    assert ticks[-1] == (4, 4)
    model.calls.clear()
    stop = CallbackProgress(should_cancel=lambda: len(model.calls) >= 2)
    with pytest.raises(Cancelled):
        refine_stage2(model, torch.ones(1, 226, 4), x0, steps=5, progress=stop)
    assert len(model.calls) == 2  # stopped before the third network call
    with pytest.raises(InputError, match="1-10 Euler steps"):
        refine_stage2(model, torch.ones(1, 226, 4), x0, steps=11)
    with pytest.raises(InputError, match="stage-I model"):
        refine_stage2(VelocityField("stage1"), torch.ones(1, 226, 4), x0)
    with pytest.raises(InputError, match="multiples of 2"):
        refine_stage2(model, torch.ones(1, 226, 4), torch.zeros(1, 16, 3, 5, 6))
    with pytest.raises(InputError, match="stage-II latent"):
        refine_stage2(model, torch.ones(1, 226, 4), torch.zeros(1, 4, 3, 4, 6))


def test_resize_is_bilinear_antialiased():
    video = torch.randn(1, 3, 5, 16, 24, generator=torch.Generator().manual_seed(0))
    out = resize_video(video, (32, 48))
    frame = torch.nn.functional.interpolate(video[:, :, 4], size=(32, 48), mode="bilinear", antialias=True)
    torch.testing.assert_close(out[:, :, 4], frame)
    torch.testing.assert_close(resize_video(torch.full((1, 3, 5, 16, 24), 0.25), (40, 56)), torch.full((1, 3, 5, 40, 56), 0.25))


def test_bridge_decodes_resizes_and_samples_the_posterior(tiny_vae):
    gen = torch.Generator().manual_seed(3)
    z1 = torch.randn(1, 16, 5, 4, 6, generator=gen) * LATENT_SCALE_STAGE1
    z2, preview = stage1_to_stage2(tiny_vae, z1, (64, 96), seed=5)
    assert preview.shape == (1, 3, 17, 32, 48) and z2.shape == (1, 16, 5, 8, 12)
    expected_preview = decode_sliced(tiny_vae, z1 / LATENT_SCALE_STAGE1).clamp(-1, 1)
    torch.testing.assert_close(preview, expected_preview)
    moments = encode_sliced(tiny_vae, resize_video(expected_preview, (64, 96)))
    expected = DiagonalGaussian(moments).sample(torch.Generator().manual_seed(5)) * LATENT_SCALE_STAGE2
    torch.testing.assert_close(z2, expected)
    assert not torch.equal(stage1_to_stage2(tiny_vae, z1, (64, 96), seed=6)[0], z2)  # the posterior is sampled


def test_external_video_enters_the_bridge(tiny_vae):
    video = torch.rand(1, 3, 9, 40, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = encode_for_stage2(tiny_vae, video, (48, 64), seed=0)
    assert z.shape == (1, 16, 3, 6, 8)
    with pytest.raises(InputError, match="4k\\+1 frames"):
        encode_for_stage2(tiny_vae, video[:, :, :8], (48, 64))
    with pytest.raises(InputError, match="multiples of 16.*try 48x32"):
        encode_for_stage2(tiny_vae, video, (40, 56))


def _dense_window_reference(q, k, v, text_len, grid, window):
    """Full attention with an explicit (S x S) mask: the definition, for tiny sizes only."""
    frames, height, width = grid
    t, h, w = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    t, h, w = t.flatten(), h.flatten(), w.flatten()
    rt, rh, rw = (x // 2 for x in window)
    local = ((t[:, None] - t[None]).abs() <= rt) & ((h[:, None] - h[None]).abs() <= rh) & ((w[:, None] - w[None]).abs() <= rw)
    seq = text_len + t.numel()
    mask = torch.ones(seq, seq, dtype=torch.bool)
    mask[text_len:, text_len:] = local
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("grid,window", [((4, 6, 7), (3, 3, 5)), ((3, 5, 4), (7, 11, 11)), ((5, 9, 8), (1, 1, 1))])
def test_window_attention_equals_the_masked_definition(grid, window, monkeypatch):
    from flashvideo_core.dit import window_attention as wa

    monkeypatch.setattr(wa, "BLOCK_ELEMENTS", 4000)  # force small tiles (several per frame)
    gen = torch.Generator().manual_seed(sum(grid))
    seq = 5 + grid[0] * grid[1] * grid[2]
    q, k, v = (torch.randn(2, 2, seq, 16, generator=gen) for _ in range(3))
    got = wa.window_attention(q, k, v, 5, grid, window)
    torch.testing.assert_close(got, _dense_window_reference(q, k, v, 5, grid, window), atol=1e-5, rtol=1e-5)
    if window == (7, 11, 11):  # the window covers the whole clip: plain full attention
        torch.testing.assert_close(got, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_windowed_model_runs_and_differs_only_when_the_window_bites():
    torch.manual_seed(0)
    model = FlashVideoDiT(STAGE2_TINY).eval()
    x, t, ctx = torch.randn(1, 3, 16, 8, 12), torch.tensor([904.0]), torch.randn(1, 7, 32)
    extra = dict(latent_frames=torch.tensor([3.0]), ref_step=torch.tensor([676.0]))
    with torch.no_grad():
        full = model(x, t, ctx, **extra)
        covering = model(x, t, ctx, window=(7, 11, 11), **extra)  # covers 3 x 4 x 6 patches entirely
        torch.testing.assert_close(covering, full, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model(x, t, ctx, window=(1, 3, 3), **extra), full, atol=1e-3)
        torch.testing.assert_close(model(x, t, ctx, window=None, **extra), full)
        with pytest.raises(ValueError, match="three positive sizes"):
            model(x, t, ctx, window=(0, 11, 11), **extra)
