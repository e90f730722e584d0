"""FlashVideo's sampling parts for ``comfy.samplers``: SIGMAS builders, NOISE objects, GUIDERs and SAMPLER
functions that reproduce the reference (docs/SAMPLING.md) when used together, and stay usable with the
host's own parts.

Stage I: the reference's N-step schedule as sigmas (sigma_max for its a = 0 start), a GUIDER with DynamicCFG
that, for its run, swaps the model's sampling for the reference's denoiser (integer timesteps, snapped alphas),
and the SDE DPM-Solver++(2M) with the reference's RNG order. Stage II: sigmas 1 - t on the shifted
grid in the model's dtype, a NOISE that is the degraded latent (sampling starts at sigma 1, x = noise), a GUIDER
mixing CFG in the model's dtype with the degradation step as conditioning, and the reference's Euler updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import comfy.model_sampling
import comfy.samplers
import node_helpers

from ...flashvideo_core.constants import LATENT_SCALE_STAGE2
from ...flashvideo_core.errors import InputError
from ...flashvideo_core.schedules import full_sqrt_alpha_table
from ...flashvideo_core.stage1.sampler import log_snr_halves, sde_dpmpp_2m_update
from ...flashvideo_core.stage1.schedule import dynamic_cfg_scale, stage1_schedule
from ...flashvideo_core.stage2.schedule import time_grid
from .model_base import REF_STEP_KEY

SIGMA_MATCH_RTOL = 1e-4


def compute_dtype(model) -> torch.dtype:
    """The dtype a BaseModel computes in (manual cast or weights), fp32 for anything else."""
    return getattr(model, "compute_dtype", None) or torch.float32


def zero_conditioning(conditioning: list) -> list:
    """The reference's unconditional context: the same conditioning with every tensor zeroed."""
    return [[torch.zeros_like(c), {k: torch.zeros_like(v) if torch.is_tensor(v) else v for k, v in d.items()}]
            for c, d in conditioning]


# ------------------------------------------------------------------------------------------------ stage I

@dataclass(frozen=True)
class Stage1Steps:
    """Per step i of a stage-I run: sigma, network timestep t, sampler alpha, denoiser (snapped) alpha.
    ``alphas`` has N + 1 entries (1.0 last)."""

    sigmas: tuple
    timesteps: tuple
    alphas: tuple
    snapped_alphas: tuple

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def lookup(self, sigma) -> tuple:
        """(network timestep, denoiser alpha) at ``sigma``: the run's values at its own sigmas (they arrive as
        exact copies), the nearest 1000-step table entry elsewhere (samplers that evaluate between steps)."""
        value = float(sigma.flatten()[0]) if torch.is_tensor(sigma) else float(sigma)
        best = min(range(self.steps), key=lambda i: abs(math.log(self.sigmas[i]) - math.log(max(value, 1e-12))))
        if math.isclose(self.sigmas[best], value, rel_tol=SIGMA_MATCH_RTOL):
            return self.timesteps[best], self.snapped_alphas[best]
        table = full_sqrt_alpha_table()
        index = int((table - 1.0 / math.sqrt(1.0 + value * value)).abs().argmin())
        return index, float(table[index])

    @staticmethod
    def from_sigmas(sigmas: torch.Tensor) -> "Stage1Steps":
        """The reference's values when ``sigmas`` are its schedule (FlashVideo Stage I Sigmas), else the nearest
        equivalents: a = 1 / sqrt(1 + sigma^2), t and the denoiser alpha from the 1000-step table."""
        values = [float(s) for s in sigmas.flatten().cpu()]
        if len(values) < 3 or values[-1] != 0.0:
            raise InputError("FlashVideo stage I needs at least 2 steps ending at sigma 0")
        n = len(values) - 1
        ref = stage1_schedule(n)
        expected = stage1_sigmas_from_alphas(ref.alphas[:-1], values[0])
        if all(math.isclose(a, b, rel_tol=SIGMA_MATCH_RTOL) for a, b in zip(values[:-1], expected)):
            return Stage1Steps(tuple(values[:-1]), tuple(ref.timesteps), tuple(ref.alphas), tuple(ref.snapped_alphas))
        table = full_sqrt_alpha_table()
        alphas = [1.0 / math.sqrt(1.0 + s * s) for s in values]
        snapped = [int((table - a).abs().argmin()) for a in alphas[:-1]]
        return Stage1Steps(tuple(values[:-1]), tuple(snapped), tuple(alphas), tuple(float(table[i]) for i in snapped))


def stage1_sigmas_from_alphas(alphas, sigma_max: float) -> list:
    """VE sigmas sqrt(1 - a^2) / a of the sampler alphas; the a = 0 start becomes ``sigma_max``."""
    return [sigma_max if a <= 0 else math.sqrt(1 - a * a) / a for a in alphas]


def stage1_sigmas(model_patcher, steps: int) -> torch.Tensor:
    """The reference's stage-I schedule for ``steps`` steps, as the SIGMAS a ComfyUI sampler takes."""
    if steps < 2:
        raise InputError(f"stage I needs at least 2 steps, got {steps}")
    sigma_max = float(model_patcher.get_model_object("model_sampling").sigma_max)
    schedule = stage1_schedule(steps)
    return torch.tensor(stage1_sigmas_from_alphas(schedule.alphas[:-1], sigma_max) + [0.0], dtype=torch.float32)


class ReferenceStage1Sampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION):
    """The reference's stage-I denoiser for one run, in the host's VE conventions (so any sampler stays
    consistent): the network gets the step's integer timestep and D = a_q x_VP - sqrt(1 - a_q^2) v with the
    alpha snapped to the 1000-step table, where x_VP = x / sqrt(1 + sigma^2) is what the network sees."""

    def __init__(self, model_config, steps: Stage1Steps):
        super().__init__(model_config)
        self.run = steps

    def timestep(self, sigma):
        return torch.full_like(sigma, float(self.run.lookup(sigma)[0]))

    def calculate_denoised(self, sigma, model_output, model_input):
        a = self.run.lookup(sigma)[1]
        vp_input = self.calculate_input(sigma, model_input)
        return a * vp_input - math.sqrt(1.0 - a * a) * model_output


class DynamicCFGGuider(comfy.samplers.CFGGuider):
    """CFG with the reference's per-step DynamicCFG scale against an all-zero context (default negative).
    For its run the model samples with :class:`ReferenceStage1Sampling`, so any SAMPLER sees the reference's
    denoiser; FlashVideo's stage-I SAMPLER then reproduces the reference exactly."""

    def __init__(self, model_patcher):
        super().__init__(model_patcher)
        self.base_patcher = model_patcher
        self.run = None

    def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        self.run = Stage1Steps.from_sigmas(sigmas)
        patched = self.base_patcher.clone()
        patched.add_object_patch("model_sampling", ReferenceStage1Sampling(self.base_patcher.model.model_config, self.run))
        self.model_patcher, self.model_options = patched, patched.model_options
        return super().sample(noise, latent_image, sampler, sigmas, *args, **kwargs)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        cond, uncond = comfy.samplers.calc_cond_batch(
            self.inner_model, [self.conds.get("positive"), self.conds.get("negative")], x, timestep, model_options)
        t = self.run.lookup(timestep)[0]
        return uncond + dynamic_cfg_scale(t, self.cfg, self.run.steps) * (cond - uncond)


class Stage1ReferenceNoise:
    """The reference's initial noise: one (B, T, C, H, W) draw from a CPU generator seeded with ``seed``;
    FlashVideo's stage-I SAMPLER continues the same stream for its per-step noise."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        return _reference_draw(torch.Generator().manual_seed(self.seed), input_latent["samples"].shape)


def _reference_draw(generator: torch.Generator, shape) -> torch.Tensor:
    batch, channels, frames, height, width = shape
    return torch.randn((batch, frames, channels, height, width), generator=generator).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def sample_stage1_reference(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """SDE DPM-Solver++(2M) as the reference runs it (docs/SAMPLING.md#sde-dpm2m): VP updates with the sampler alphas, noise
    from one CPU generator seeded like the NOISE (the initial draw replayed, then one draw at step 0 and two
    at each later step, the first thrown away), the x0 prediction returned at the last step, rounded through
    the model's dtype. Works on the VP state (x_VE = x_VP sqrt(1 + sigma^2) in and out of the model)."""
    extra_args = extra_args or {}
    run = Stage1Steps.from_sigmas(sigmas)
    base_model = getattr(model.inner_model, "inner_model", None)
    gen = torch.Generator().manual_seed(int(extra_args.get("seed") or 0))
    shape = x.shape
    _reference_draw(gen, shape)  # the initial noise, drawn by the NOISE: keep the stream in step
    randn = lambda: _reference_draw(gen, shape).to(x)  # noqa: E731
    ve_alpha = lambda s: 1.0 / math.sqrt(1.0 + float(s) ** 2)  # noqa: E731
    x = x * ve_alpha(sigmas[0])
    s_in = x.new_ones([shape[0]])
    lambdas = log_snr_halves(run.alphas)
    denoised_prev = denoised = None
    for i in range(run.steps):
        sigma = sigmas[i]
        model_x = x / ve_alpha(sigma)
        denoised = model(model_x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": model_x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if i == run.steps - 1:
            break
        x = sde_dpmpp_2m_update(x, denoised, denoised_prev, i, run.alphas, lambdas, randn)
        denoised_prev = denoised
    return denoised.to(compute_dtype(base_model)).float()


# ----------------------------------------------------------------------------------------------- stage II

def stage2_sigmas(model_patcher, steps: int) -> torch.Tensor:
    """sigma = 1 - t on the shifted grid (the model's shift; core ModelSamplingSD3 changes it), the grid
    built in the model's compute dtype as the reference builds it in bf16."""
    sampling = model_patcher.get_model_object("model_sampling")
    shift = float(getattr(sampling, "shift", 2.5))
    dtype = compute_dtype(model_patcher.model)
    return 1.0 - time_grid(steps, shift, dtype).float()


class DegradedLatentNoise:
    """Stage II starts at sigma 1, where x = noise: the noise *is* the degraded latent (FlashVideo Latent
    Degrade's output, scaled into the model's space)."""

    def __init__(self, degraded: dict, seed: int = 0):
        self.latent = degraded["samples"]
        self.seed = int(seed)

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        shape = tuple(input_latent["samples"].shape)
        if tuple(self.latent.shape) != shape:
            raise InputError(f"the degraded latent {tuple(self.latent.shape)} and the latent being sampled {shape} "
                             "differ: connect the same FlashVideo Latent Degrade output to both")
        return self.latent.float().cpu() * LATENT_SCALE_STAGE2


class Stage2Guider(comfy.samplers.CFGGuider):
    """Constant CFG against an all-zero context, mixed on the velocity in the model's dtype as the reference
    (bf16 on GPUs), with the degradation step on both conditionings (the model embeds it)."""

    def set_flashvideo_conds(self, positive: list, noise_step: int, negative: list = None) -> None:
        negative = zero_conditioning(positive) if negative is None else negative
        step = {REF_STEP_KEY: float(noise_step)}
        self.set_conds(node_helpers.conditioning_set_values(positive, step),
                       node_helpers.conditioning_set_values(negative, step))

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        cond, uncond = comfy.samplers.calc_cond_batch(
            self.inner_model, [self.conds.get("positive"), self.conds.get("negative")], x, timestep, model_options)
        dtype = compute_dtype(self.inner_model)
        sigma = timestep.reshape(-1, *([1] * (x.ndim - 1)))
        v_cond, v_uncond = ((cond - x) / sigma).to(dtype), ((uncond - x) / sigma).to(dtype)
        velocity = v_uncond + self.cfg * (v_cond - v_uncond)
        return x + sigma * velocity.float()


@torch.no_grad()
def sample_stage2_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """The reference's Euler steps of the flow ODE: grid t = 1 - sigma, velocity v = (D - x) / sigma, and
    x <- x + (t_next - t) v, all in the model's compute dtype (bf16 on GPUs, as the reference)."""
    extra_args = extra_args or {}
    dtype = compute_dtype(getattr(model.inner_model, "inner_model", None))
    grid = (1.0 - sigmas.float()).to(dtype)
    x = x.to(dtype)
    s_in = x.new_ones([x.shape[0]], dtype=torch.float32)
    for k in range(len(sigmas) - 1):
        sigma = sigmas[k]
        if float(sigma) <= 0:
            raise InputError("FlashVideo's stage-II Euler sampler needs sigmas above 0 before the last")
        denoised = model(x.float(), sigma * s_in, **extra_args)
        velocity = ((denoised - x.float()) / sigma).to(dtype)
        x = x + (grid[k + 1] - grid[k]) * velocity
        if callback is not None:
            clean = (x + (1 - grid[k + 1]) * velocity).float()
            callback({"x": x.float(), "i": k, "sigma": sigma, "sigma_hat": sigma, "denoised": clean})
    return x.float()


def stage1_sampler():
    return comfy.samplers.KSAMPLER(sample_stage1_reference)


def stage2_sampler():
    return comfy.samplers.KSAMPLER(sample_stage2_euler)
