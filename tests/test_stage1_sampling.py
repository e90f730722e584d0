"""Stage-I schedule against the reference run's values (tests/data), and the sampler's math and determinism."""

import json
import math
import os

import pytest
import torch

from flashvideo_core.errors import InputError
from support.progress import CallbackProgress
from flashvideo_core.schedules import degradation_coefficients, full_sqrt_alpha_table
from flashvideo_core.stage1 import sampler as sampler_module
from flashvideo_core.stage1.sampler import latent_shape, sample_stage1
from flashvideo_core.stage1.schedule import stage1_schedule

#: values printed by the reference run (docs/SAMPLING.md), kept with the tests
REFERENCE_DATA = os.path.join(os.path.dirname(__file__), "data", "reference_schedules.json")

# Full zero-SNR table values printed by the reference run (docs/SAMPLING.md#noise-schedule).
APPENDIX_B = {0: 0.9995749, 19: 0.9904597, 250: 0.8077481, 500: 0.4909367, 650: 0.2940186, 675: 0.2639587,
              700: 0.2350522, 750: 0.1811053, 999: 0.0}
# First and last rows of the reference run's 51-step table: (i, t, a_i, snapped index, CFG scale).
APPENDIX_A = [(0, 999, 0.000000, 999, 8.2870), (1, 979, 0.009268, 979, 4.0041), (2, 959, 0.019381, 959, 2.4043),
              (3, 940, 0.029802, 940, 5.0462), (48, 58, 0.969628, 57, 1.0000), (49, 39, 0.980547, 38, 1.0000),
              (50, 19, 0.991082, 18, 1.1852)]


def test_zero_snr_table_matches_appendix_b():
    table = full_sqrt_alpha_table()
    for t, a in APPENDIX_B.items():
        assert math.isclose(table[t].item(), a, abs_tol=1e-6), t
    assert math.isclose(full_sqrt_alpha_table(3.0)[675].item(), 0.1543075, abs_tol=1e-6)
    a, s = degradation_coefficients(675)
    assert math.isclose(a, 0.26395872, abs_tol=1e-7) and math.isclose(s, 0.96453398, abs_tol=1e-7)


def snapped_indices(schedule) -> list:
    """The index of the full 1000-entry table each snapped alpha was taken from."""
    table = full_sqrt_alpha_table()
    return [int((table - a).abs().argmin()) for a in schedule.snapped_alphas]


def test_stage1_schedule_matches_appendix_a():
    s = stage1_schedule()
    indices = snapped_indices(s)
    assert s.timesteps[:4] == [999, 979, 959, 940] and s.timesteps[-1] == 19 and len(s.timesteps) == 51
    for i, t, a, idx, cfg in APPENDIX_A:
        assert s.timesteps[i] == t
        assert math.isclose(s.alphas[i], a, abs_tol=1e-6)
        assert indices[i] == idx
        assert math.isclose(s.cfg_scales[i], cfg, abs_tol=1e-4)
    assert s.alphas[-1] == 1.0 and math.isclose(s.snapped_alphas[-1], 0.990961, abs_tol=1e-6)
    # the last 11 steps snap to t - 1, the others to t (docs/SAMPLING.md#stage-i-schedule)
    assert [t - i for t, i in zip(s.timesteps, indices)] == [0] * 40 + [1] * 11


def test_stage1_schedule_matches_spec_data_exactly():
    data = json.load(open(REFERENCE_DATA))
    s = stage1_schedule()
    assert s.timesteps == data["stage1_timesteps_ascending"][::-1]
    torch.testing.assert_close(torch.tensor(s.alphas, dtype=torch.float64), torch.tensor(data["stage1_alpha_sqrt_sampler_order"], dtype=torch.float64), atol=3e-7, rtol=0)
    assert snapped_indices(s) == [i for i, _ in data["stage1_alpha_quantized_idx_val"]]
    assert s.cfg_scales == pytest.approx(data["stage1_dynamic_cfg_scale_per_step(scale=8)"], abs=1e-12)


@pytest.mark.parametrize("steps", [51, 50, 6, 4])
def test_dynamic_cfg_uses_the_runs_step_count(steps):
    """docs/SAMPLING.md#dynamiccfg: at N steps the reference configures sampler and guider with N, so each scale is
    1 + s (1 - cos(pi ((N - t) / N)^5)) / 2 over the N-step timesteps; written out here from the formula."""
    import numpy as np

    cfg = 7.0
    ts = np.linspace(999, 0, steps, endpoint=False).astype(int).tolist()  # sampling order: 999 first
    want = [1.0 + cfg * (1.0 - math.cos(math.pi * (((steps - t) / steps) ** 5))) / 2.0 for t in ts]
    got = stage1_schedule(steps, cfg).cfg_scales
    assert got == want  # exact: the same float64 operations
    if steps != 51:
        hard_coded_51 = [1.0 + cfg * (1.0 - math.cos(math.pi * (((51 - t) / 51) ** 5))) / 2.0 for t in ts]
        assert max(abs(a - b) for a, b in zip(got, hard_coded_51)) > 0.1  # the old behaviour differs visibly


class ExactModel(torch.nn.Module):
    """Predicts the exact v for a fixed clean latent, using the schedule's snapped alphas."""

    def __init__(self, target):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.target = target
        s = stage1_schedule()
        self.alpha_for_t = dict(zip(s.timesteps, s.snapped_alphas))
        self.calls = []

    def forward(self, x, t, ctx):
        self.calls.append((x.shape[0], float(t[0]), bool((ctx[: x.shape[0] // 2] == 0).all())))
        a = self.alpha_for_t[int(t[0])]
        return (a * x - self.target) / math.sqrt(1 - a * a) if a > 0 else -self.target.expand_as(x)


def test_sampler_recovers_the_clean_latent_with_an_exact_model():
    shape = latent_shape(9, 32, 48)
    target = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    model = ExactModel(target)
    ctx = torch.randn(1, 6, 32)
    out = sample_stage1(model, ctx, shape, steps=51, cfg=8.0, seed=0)
    torch.testing.assert_close(out, target, atol=1e-4, rtol=1e-4)
    assert len(model.calls) == 51 and all(c[0] == 2 and c[2] for c in model.calls)  # [uncond=zeros, cond]
    assert [c[1] for c in model.calls] == [float(t) for t in stage1_schedule().timesteps]


def test_rng_draw_order_and_determinism(monkeypatch):
    shape = latent_shape(5, 16, 16)
    model = torch.nn.Linear(1, 1)
    fake = lambda x, t, ctx: 0.1 * x  # noqa: E731
    model.forward = fake
    draws = []
    real = torch.randn

    def counting(*args, **kwargs):
        draws.append(1)
        return real(*args, **kwargs)

    ctx = torch.randn(1, 4, 8)
    monkeypatch.setattr(sampler_module.torch, "randn", counting)
    a = sample_stage1(model, ctx, shape, steps=51, seed=5)
    assert len(draws) == 1 + 1 + 2 * 49  # initial noise, 1 at step 0, 2 at steps 1..49, none at the last
    b = sample_stage1(model, ctx, shape, steps=51, seed=5)
    c = sample_stage1(model, ctx, shape, steps=51, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_progress_cancel_and_bad_inputs():
    shape = latent_shape(5, 16, 16)
    model = torch.nn.Linear(1, 1)
    model.forward = lambda x, t, ctx: 0.1 * x
    seen = []
    sample_stage1(model, torch.randn(1, 4, 8), shape, steps=5, progress=CallbackProgress(on_progress=lambda d, t: seen.append((d, t))))
    assert seen[-1] == (5, 5)
    from flashvideo_core.errors import Cancelled

    with pytest.raises(Cancelled):
        sample_stage1(model, torch.randn(1, 4, 8), shape, steps=5, progress=CallbackProgress(should_cancel=lambda: True))
    with pytest.raises(InputError, match="NaN"):
        sample_stage1(model, torch.full((1, 4, 8), float("nan")), shape, steps=5)
    model.forward = lambda x, t, ctx: x * float("inf")
    with pytest.raises(InputError, match="bf16 or fp32"):
        sample_stage1(model, torch.randn(1, 4, 8), shape, steps=5)
    with pytest.raises(InputError, match="4k\\+1"):
        latent_shape(48, 256, 480)


class GaussianDataModel(torch.nn.Module):
    """The exact denoiser for data ~ N(mu, s^2): D(x) = mu + a s^2 / (a^2 s^2 + sigma^2) (x - a mu)."""

    def __init__(self, mu, s):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.mu, self.s = mu, s
        sched = stage1_schedule()
        self.alpha_for_t = dict(zip(sched.timesteps, sched.snapped_alphas))

    def forward(self, x, t, ctx):
        a = self.alpha_for_t[int(t[0])]
        sigma2 = 1 - a * a
        d = self.mu + a * self.s**2 / (a * a * self.s**2 + sigma2) * (x - a * self.mu)
        return (a * x - d) / math.sqrt(sigma2)


def test_sde_solver_samples_the_data_distribution():
    """With the exact denoiser of Gaussian data, the SDE DPM-Solver++(2M) must produce that distribution:
    a wrong update rule, noise scale or draw order shows up as a wrong mean or spread."""
    mu, s = 0.3, 0.5
    shape = (1, 8, 16, 16, 16)  # 32k independent samples
    out = sample_stage1(GaussianDataModel(mu, s), torch.zeros(1, 2, 4), shape, steps=51, cfg=8.0, seed=1)
    assert abs(out.mean().item() - mu) < 0.02
    assert abs(out.std().item() - s) < 0.02
