"""FlashVideo's sampling parts for ``comfy.samplers`` (SIGMAS, NOISE, GUIDER and SAMPLER per stage): together they
reproduce the reference (docs/SAMPLING.md), and each stays usable with the host's own parts. The per-step math is
the core's (``stage1/sampler.py``, ``stage2/refiner.py``); cond and uncond are mixed by the host's CFG."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

import comfy.model_sampling
import comfy.samplers
import node_helpers

from ...flashvideo_core.constants import LATENT_SCALE_STAGE2
from ...flashvideo_core.errors import InputError
from ...flashvideo_core.schedules import full_sqrt_alpha_table
from ...flashvideo_core.stage1.sampler import check_finite, reference_denoised, sample_reference_sde
from ...flashvideo_core.stage1.schedule import dynamic_cfg_scale, stage1_schedule
from ...flashvideo_core.stage2.refiner import euler_flow, guided_velocity
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

    def lookup(self, sigma: torch.Tensor) -> tuple:
        """(network timestep, denoiser alpha, sqrt(1 - alpha^2)) per element of ``sigma``, as tensors on its
        device (no host-device synchronisation): the run's values at its own sigmas (they arrive as exact copies),
        the nearest 1000-step table entry elsewhere (samplers that evaluate between steps)."""
        run_sigmas, run_t, run_alpha, run_keep, table, table_keep = self._tables(sigma.device)
        s = sigma.reshape(-1).double()
        best = (run_sigmas.log()[None] - s.clamp_min(1e-12).log()[:, None]).abs().argmin(dim=1)
        on_run = torch.isclose(run_sigmas[best], s, rtol=SIGMA_MATCH_RTOL, atol=0.0)
        nearest = (table[None] - (1.0 / (1.0 + s * s).sqrt())[:, None]).abs().argmin(dim=1)
        pick = lambda run, fallback: torch.where(on_run, run[best], fallback).float()  # noqa: E731
        return pick(run_t, nearest.double()), pick(run_alpha, table[nearest]), pick(run_keep, table_keep[nearest])

    def cfg_scale(self, sigma, cfg: float) -> float:
        """The DynamicCFG scale at ``sigma``: a Python number, as the host's CFG takes it (one read of the step's
        sigma; the host's own samplers read each sigma too)."""
        timestep = float(self.lookup(sigma.reshape(-1)[:1])[0])
        return dynamic_cfg_scale(timestep, cfg, self.steps)

    @functools.lru_cache(maxsize=4)
    def _tables(self, device) -> tuple:
        """The run's and the 1000-step table's values on ``device``; alphas and their complements computed in
        float64 as the core's Python floats, so the native denoiser equals the core's."""
        table = full_sqrt_alpha_table().double()
        as_tensor = lambda values: torch.tensor(values, dtype=torch.float64, device=device)  # noqa: E731
        return (as_tensor(self.sigmas), as_tensor(self.timesteps), as_tensor(self.snapped_alphas),
                as_tensor([math.sqrt(1.0 - a * a) for a in self.snapped_alphas]), table.to(device),
                (1.0 - table * table).clamp_min(0).sqrt().to(device))

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
        return self.run.lookup(sigma)[0].reshape(sigma.shape).to(sigma.dtype)

    def calculate_denoised(self, sigma, model_output, model_input):
        _, alpha, keep = self.run.lookup(sigma)
        per_element = (-1,) + (1,) * (model_output.ndim - 1)
        vp_input = self.calculate_input(sigma, model_input)
        return reference_denoised(vp_input, model_output, alpha.reshape(per_element), keep.reshape(per_element))


class DynamicCFGGuider(comfy.samplers.CFGGuider):
    """The host's CFG (so its pre- and post-CFG patches apply) with the reference's per-step DynamicCFG scale,
    against an all-zero context (the default negative). Stage I's denoiser depends on the run's step count, so
    for its run the guider gives the model :class:`ReferenceStage1Sampling` (a patched clone; the loaded model is
    untouched): any SAMPLER sees the reference's denoiser, and FlashVideo's stage-I SAMPLER reproduces the
    reference exactly."""

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
        return comfy.samplers.sampling_function(self.inner_model, x, timestep, self.conds.get("negative"),
                                                self.conds.get("positive"), self.run.cfg_scale(timestep, self.cfg),
                                                model_options=model_options, seed=seed)


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
    """The reference's stage-I loop (:func:`sample_reference_sde`, the CLI's too; docs/SAMPLING.md#sde-dpm2m) on
    the VP state x_VE = x_VP sqrt(1 + sigma^2), with noise from one CPU generator seeded like the NOISE (the initial draw
    replayed, then the reference's draws), the last x0 prediction returned rounded through the model's dtype."""
    extra_args = extra_args or {}
    run = Stage1Steps.from_sigmas(sigmas)
    base_model = getattr(model.inner_model, "inner_model", None)
    gen = torch.Generator().manual_seed(int(extra_args.get("seed") or 0))
    shape = x.shape
    _reference_draw(gen, shape)  # the initial noise, drawn by the NOISE: keep the stream in step
    randn = lambda: _reference_draw(gen, shape).to(x)  # noqa: E731
    ve_alpha = [1.0 / math.sqrt(1.0 + s * s) for s in run.sigmas]  # x_VP / x_VE per step (the run's Python floats)
    step_sigmas = sigmas[:-1]
    s_in = x.new_ones([shape[0]])

    def denoise(x_vp, i):
        return model(x_vp / ve_alpha[i], step_sigmas[i] * s_in, **extra_args)

    def on_step(i, x_vp, denoised):
        if callback is not None:
            callback({"x": x_vp / ve_alpha[i], "i": i, "sigma": step_sigmas[i], "sigma_hat": step_sigmas[i],
                      "denoised": denoised})

    denoised = sample_reference_sde(denoise, x * ve_alpha[0], run.alphas, randn, on_step)
    dtype = compute_dtype(base_model)
    return check_finite(denoised.to(dtype).float(), "stage I", dtype)


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
    """The host's CFG (its pre- and post-CFG patches apply) with constant scale against an all-zero context, mixed
    as the reference on the velocity in the model's dtype (bf16 on GPUs) unless a patch brings its own CFG
    function; the degradation step rides on both conditionings (the model embeds it)."""

    def set_flashvideo_conds(self, positive: list, noise_step: int, negative: list = None) -> None:
        negative = zero_conditioning(positive) if negative is None else negative
        step = {REF_STEP_KEY: float(noise_step)}
        self.set_conds(node_helpers.conditioning_set_values(positive, step),
                       node_helpers.conditioning_set_values(negative, step))

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        if "sampler_cfg_function" not in model_options:
            model_options = {**model_options, "sampler_cfg_function": self.velocity_cfg}
        return super().predict_noise(x, timestep, model_options=model_options, seed=seed)

    @staticmethod
    def velocity_cfg(args: dict) -> torch.Tensor:
        """A ``sampler_cfg_function``: the reference's velocity mix. The host takes ``input - result`` as the
        guided clean estimate, x + sigma v."""
        x = args["input"]
        sigma = args["sigma"].reshape(-1, *([1] * (x.ndim - 1)))
        v_cond, v_uncond = (args["cond_denoised"] - x) / sigma, (args["uncond_denoised"] - x) / sigma
        velocity = guided_velocity(v_cond, v_uncond, args["cond_scale"], compute_dtype(args["model"]))
        return -(sigma * velocity.float())


@torch.no_grad()
def sample_stage2_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """The reference's Euler steps (:func:`euler_flow`, the CLI's too) on the grid t = 1 - sigma with velocity
    v = (D - x) / sigma, in the model's compute dtype (bf16 on GPUs, as the reference)."""
    extra_args = extra_args or {}
    if bool((sigmas[:-1] <= 0).any()):  # one check per run
        raise InputError("FlashVideo's stage-II Euler sampler needs sigmas above 0 before the last")
    dtype = compute_dtype(getattr(model.inner_model, "inner_model", None))
    grid = (1.0 - sigmas.float()).to(dtype)
    s_in = x.new_ones([x.shape[0]], dtype=torch.float32)

    def velocity(x, k):
        denoised = model(x.float(), sigmas[k] * s_in, **extra_args)
        return ((denoised - x.float()) / sigmas[k]).to(dtype)

    def on_step(k, x, clean):
        if callback is not None:
            callback({"x": x.float(), "i": k, "sigma": sigmas[k], "sigma_hat": sigmas[k], "denoised": clean.float()})

    x = euler_flow(velocity, x.to(dtype), grid, on_step)
    return check_finite(x.float(), "stage II", dtype)


def stage1_sampler():
    return comfy.samplers.KSAMPLER(sample_stage1_reference)


def stage2_sampler():
    return comfy.samplers.KSAMPLER(sample_stage2_euler)
