"""The pipeline's convenience nodes, one per step so ComfyUI caches each: the stage-I sampler (the cheap 270p
preview), the stage-II upscale into 1080p/2K, the latent degrader and the flow-matching refiner. Changing the
refiner's NFE, CFG or the noise step never recomputes stage I or the upscale. The samplers are thin wrappers over
FlashVideo's sampling parts (sampling_nodes.py) run through ``comfy.samplers``; they return standard LATENTs, so
core SaveLatent/LoadLatent can keep a preview and a failed decode never costs a resample. Widget orders and node
ids are frozen (append only).
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

import comfy.model_management as mm

from ..flashvideo_core.constants import LATENT_SCALE_STAGE1, LATENT_SCALE_STAGE2
from ..flashvideo_core.dit.window_attention import DEFAULT_WINDOW
from ..flashvideo_core.settings import Stage1Settings, Stage2Settings, setting
from ..flashvideo_core.stage1.sampler import TRAINED_FRAMES, TRAINED_SIZE, latent_shape
from ..flashvideo_core.stage2.bridge import RESOLUTIONS, encode_for_stage2, stage1_to_stage2
from ..flashvideo_core.stage2.degrade import degrade_latent
from .host import ComfyProgress, VAEHolder, setting_input
from .input_checks import combo_widget, image_batch, latent_tensor, refuse, widget
from .latents import NOISE_STEP_KEY, SEED_KEY, STAGE_KEY, degraded_step, latent_stage, untagged_cause
from .native.glue import check_prompt, native, require_stage, sample_with
from .vae_helpers import FRAME_RULES, FlashVideoVAE, check_vae, fit_frame_count, prepare, slicing_inputs, slicing_options

log = logging.getLogger("flashvideo")

CATEGORY = "FlashVideo"
STAGE1_SAMPLER = "FlashVideo Stage I Sampler"
STAGE1_WIDGETS = ("width", "height", "frames", "steps", "cfg", "seed")  # the saved order (not the dataclass's)
#: choice -> (height, width) of the stage-II video (None: the width and height widgets)
RESOLUTION_SIZES = {**{f"{name} ({height}x{width})": (height, width) for name, (height, width) in RESOLUTIONS.items()},
                    "custom": None}
RESOLUTION_CHOICES = list(RESOLUTION_SIZES)
ATTENTION_CHOICES = ["full", f"window {'x'.join(map(str, DEFAULT_WINDOW))} (experimental)"]
UPSCALE, DEGRADE, REFINER = "FlashVideo Stage II Upscale", "FlashVideo Latent Degrade", "FlashVideo Stage II Refiner"
WIDTH, HEIGHT, NOISE_STEP, STEPS, CFG, SHIFT, SEED, DEGRADE_SEED = (setting(Stage2Settings, name) for name in (
    "width", "height", "noise_step", "steps", "cfg", "shift", "seed", "degrade_seed"))


class FlashVideoStage1Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage1Sampler",
            display_name="FlashVideo Stage I Sampler (preview)",
            category=CATEGORY,
            description="Samples the cheap low-resolution preview (256x480, 49 frames) with the reference "
            "SDE DPM-Solver++(2M), DynamicCFG and a zero unconditional context. Decode it with FlashVideo VAE Decode "
            "(latent_scale stage1), or pass it to stage II.",
            inputs=[
                io.Model.Input("model", tooltip="A stage-I model from FlashVideo Model Loader."),
                io.Conditioning.Input("positive", tooltip="From FlashVideo Text Encode or Load Prompt Embedding. "
                                      "No negative: the reference's unconditional context is all zeros."),
                *(setting_input(name, setting(Stage1Settings, name)) for name in STAGE1_WIDGETS),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Stage-I latent [1, 16, T', H/8, W/8].")],
        )

    @classmethod
    def execute(cls, model, positive, **widgets) -> io.NodeOutput:
        # API clients skip the frontend's steps (and some hosts NaN): off-grid values are refused, never snapped
        values = {name: widget(setting(Stage1Settings, name), widgets.get(name, getattr(Stage1Settings, name)),
                               STAGE1_SAMPLER, name) for name in STAGE1_WIDGETS}
        width, height, frames, steps, cfg, seed = values.values()
        require_stage(model, 1, STAGE1_SAMPLER)
        check_prompt(model, positive, STAGE1_SAMPLER, "positive")
        context = positive[0][0]
        if (height, width) != TRAINED_SIZE or frames != TRAINED_FRAMES:
            log.warning("FlashVideo: stage I was trained at %dx%d, %d frames; %dx%d, %d frames is off-distribution",
                        TRAINED_SIZE[1], TRAINED_SIZE[0], TRAINED_FRAMES, width, height, frames)
        batch, latent_frames, channels, latent_h, latent_w = latent_shape(frames, height, width, batch=context.shape[0])
        latent = {"samples": torch.zeros((batch, channels, latent_frames, latent_h, latent_w))}
        sampling = native()
        guider = sampling.DynamicCFGGuider(model)
        guider.set_conds(positive, sampling.zero_conditioning(positive))
        guider.set_cfg(cfg)
        samples = sample_with(guider, sampling.Stage1ReferenceNoise(seed), sampling.stage1_sampler(),
                              sampling.stage1_sigmas(model, steps), latent, model)
        return io.NodeOutput({"samples": samples, STAGE_KEY: 1})


def _target_size(resolution: str, width: int, height: int) -> tuple[int, int]:
    """(height, width) of the stage-II video. width/height are checked even when unused: a bad value is refused
    the same way whatever the resolution."""
    size = widget(HEIGHT, height, UPSCALE, "height"), widget(WIDTH, width, UPSCALE, "width")
    return RESOLUTION_SIZES[combo_widget(resolution, UPSCALE, "resolution", RESOLUTION_CHOICES)] or size


class FlashVideoStage2Upscale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage2Upscale",
            display_name="FlashVideo Stage II Upscale (bridge)",
            category=CATEGORY,
            description="The bridge into stage II, in pixel space as the reference: decode the stage-I latent "
            "(or take video frames), resize bilinear with antialiasing to 1080p or 2K, encode and sample the "
            "posterior. Feed it the decoded preview frames (no second decode) or the stage-I latent. Other "
            "videos work too (experimental: stage II was trained on FlashVideo's own 270p previews).",
            inputs=[
                FlashVideoVAE.Input("vae", tooltip="From FlashVideo VAE Loader."),
                io.Combo.Input("resolution", options=RESOLUTION_CHOICES, default=RESOLUTION_CHOICES[0],
                               tooltip="1080p: the trained size (1080 rounded down to 16, as the reference). "
                               "2K: RoPE extrapolation, no retraining; sharper detail, ~3x the stage-II time and "
                               "~1.8x the tokens (187k). custom: width/height below (multiples of 16, off-distribution)."),
                setting_input("width", WIDTH),
                setting_input("height", HEIGHT),
                setting_input("seed", SEED),
                io.Combo.Input("frame_rule", options=FRAME_RULES, default="error",
                               tooltip="For external videos: the VAE needs 4k+1 frames. error, trim, or pad "
                               "(repeat the last frame)."),
                *slicing_inputs(),
                io.Image.Input("images", optional=True,
                               tooltip="Decoded stage-I frames (from FlashVideo VAE Decode), or any video's frames "
                               "(Load Video -> Get Video Components): the experimental 'enhance a video' path."),
                io.Latent.Input("samples", optional=True,
                                tooltip="Or the stage-I latent itself: decoded here with the stage-I scale."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Stage-II latent (x1.15258426). Degrade it next.")],
        )

    @classmethod
    def execute(cls, vae: VAEHolder, resolution: str = RESOLUTION_CHOICES[0], width: int = WIDTH.default,
                height: int = HEIGHT.default,
                seed: int = 0, frame_rule: str = "error", slicing: str = "reference", memory_budget_mb: int = 0,
                chunk_latents: int = 2, tile_size: int = 0, tile_overlap: int = 128, images=None, samples=None) -> io.NodeOutput:
        if images is not None and samples is not None:
            raise refuse(UPSCALE, "samples", "both images and samples are connected",
                         "disconnect one: the node upscales either frames (images) or a stage-I latent (samples)")
        if images is None and samples is None:
            raise refuse(UPSCALE, "images", "neither images nor samples is connected",
                         "connect decoded preview frames or a video's frames to images, or a stage-I latent to samples")
        vae = check_vae(vae, UPSCALE)
        size = _target_size(resolution, width, height)
        seed = widget(SEED, seed, UPSCALE, "seed")
        combo_widget(frame_rule, UPSCALE, "frame_rule", FRAME_RULES)
        options = slicing_options(slicing, memory_budget_mb, chunk_latents, tile_size, tile_overlap, node=UPSCALE)
        progress = ComfyProgress(preview=False)
        if samples is not None:
            z = latent_tensor(samples, UPSCALE, "samples", vae.model.config.latent_channels)
            stage, known = latent_stage(samples, z, UPSCALE)
            if known == "tagged" and stage != 1:
                raise refuse(UPSCALE, "samples", "this latent is already a stage-II latent",
                             "connect the stage-I sampler's latent (a stage-II latent goes to FlashVideo Latent "
                             "Degrade)")
            if known == "size" and stage != 1:
                raise refuse(UPSCALE, "samples", f"{untagged_cause(z, stage)}, not of a stage-I preview",
                             "connect a stage-II latent to FlashVideo Latent Degrade instead; if it really is a "
                             "stage-I latent, decode it (FlashVideo VAE Decode, latent_scale stage1) and connect "
                             "the frames to images")
            z1 = z * LATENT_SCALE_STAGE1  # LATENTs are unscaled; the core takes model space
            budget = prepare(vae, "decode", tuple(z1.shape), options, UPSCALE)
            z2, _ = stage1_to_stage2(vae.model, z1, size, seed, options, progress, budget)
        else:
            frames = fit_frame_count(image_batch(images, UPSCALE), frame_rule, UPSCALE)
            video = frames.movedim(-1, 0).unsqueeze(0).float() * 2 - 1  # [1, 3, T, H, W] in [-1, 1]
            budget = prepare(vae, "encode", (1, 3, video.shape[2], *size), options, UPSCALE)
            z2 = encode_for_stage2(vae.model, video, size, seed, options, progress, budget)
        return io.NodeOutput({"samples": (z2 / LATENT_SCALE_STAGE2).to(mm.intermediate_device()), STAGE_KEY: 2})


class FlashVideoLatentDegrade(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoLatentDegrade",
            display_name="FlashVideo Latent Degrade",
            category=CATEGORY,
            description="Adds the stage-II latent noise x = a z + sqrt(1 - a^2) noise, a = sqrt(alpha_bar) at the "
            "noise step of the zero-SNR schedule. The refiner starts from this point and embeds the same step.",
            inputs=[
                io.Latent.Input("samples", tooltip="The stage-II latent from FlashVideo Stage II Upscale."),
                setting_input("noise_step", NOISE_STEP),
                setting_input("seed", DEGRADE_SEED),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The degraded latent, carrying its noise step.")],
        )

    @classmethod
    def execute(cls, samples: dict, noise_step: int = NOISE_STEP.default, seed: int = 0) -> io.NodeOutput:
        z = latent_tensor(samples, DEGRADE)
        noise_step = widget(NOISE_STEP, noise_step, DEGRADE, "noise_step")
        seed = widget(DEGRADE_SEED, seed, DEGRADE, "seed")
        stage, known = latent_stage(samples, z, DEGRADE)
        if known == "tagged" and stage == 1:
            raise refuse(DEGRADE, "samples", "this is a stage-I latent",
                         "pass it through FlashVideo Stage II Upscale first")
        if known == "size" and stage == 1:
            raise refuse(DEGRADE, "samples", f"{untagged_cause(z, stage)} (this node takes stage-II latents)",
                         "pass it through FlashVideo Stage II Upscale first; for a stage-II latent this small, "
                         "connect the Upscale output directly (it carries its stage)")
        if NOISE_STEP_KEY in samples:
            raise refuse(DEGRADE, "samples", "this latent is already degraded",
                         "connect the upscaler's output instead")
        x0 = degrade_latent(z * LATENT_SCALE_STAGE2, noise_step, seed)
        return io.NodeOutput({"samples": x0 / LATENT_SCALE_STAGE2, STAGE_KEY: 2, NOISE_STEP_KEY: noise_step,
                              SEED_KEY: seed})


class FlashVideoStage2Refiner(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage2Refiner",
            display_name="FlashVideo Stage II Refiner (flow matching)",
            category=CATEGORY,
            description="Refines the degraded latent to 1080p/2K detail in a few Euler steps of the flow-matching "
            "ODE, with CFG against a zero context. Decode with FlashVideo VAE Decode, latent_scale stage2.",
            inputs=[
                io.Model.Input("model", tooltip="The stage-II model (stage2.pt) from FlashVideo Model Loader."),
                io.Conditioning.Input("positive", tooltip="T5 prompt embedding (FlashVideo Text Encode or Load Prompt "
                                      "Embedding); the reference script prefixes stage II's prompt with 'medium motion,'."),
                io.Latent.Input("samples", tooltip="The degraded latent from FlashVideo Latent Degrade."),
                setting_input("steps", STEPS),
                setting_input("cfg", CFG),
                setting_input("shift", SHIFT),
                io.Combo.Input("attention", options=ATTENTION_CHOICES, default=ATTENTION_CHOICES[0],
                               tooltip="full: the reference. window (experimental): each video token attends to a "
                               "7-frame, 11x11-patch neighbourhood (the paper's sparse option): much less work at "
                               "1080p/2K, fine for low motion, blurs fast motion."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Refined stage-II latent (x1.15258426).")],
        )

    @classmethod
    def execute(cls, model, positive, samples: dict, steps: int = STEPS.default, cfg: float = CFG.default,
                shift: float = SHIFT.default, attention: str = ATTENTION_CHOICES[0]) -> io.NodeOutput:
        steps, cfg, shift = (widget(s, v, REFINER, n) for s, v, n in ((STEPS, steps, "steps"), (CFG, cfg, "cfg"),
                                                                   (SHIFT, shift, "shift")))
        combo_widget(attention, REFINER, "attention", ATTENTION_CHOICES)
        latent_tensor(samples, REFINER)
        noise_step = degraded_step(samples, REFINER)
        require_stage(model, 2, REFINER)
        check_prompt(model, positive, REFINER, "positive")
        return io.NodeOutput({"samples": refine_latent(model, positive, samples, noise_step, steps, cfg, shift, attention),
                              STAGE_KEY: 2})


def refine_latent(model, positive, samples: dict, noise_step: int, steps: int, cfg: float, shift: float,
                  attention: str) -> torch.Tensor:
    """Stage II's sampling, shared by the Refiner and Enhance Video so both go one way: the host's guider and
    sampler on a clone of the model (its patches apply), shifted grid in the model's dtype. ``samples`` is a
    degraded LATENT; every value is already checked. Returns the refined latent, unscaled."""
    from .native.dit import WINDOW_OPTION
    from .native.model_base import FlashVideoFlowSampling

    sampling = native()
    model = model.clone()
    flow = FlashVideoFlowSampling(model.model.model_config)
    flow.set_parameters(shift=shift, multiplier=1000)
    flow.timestep_dtype = sampling.compute_dtype(model.model)
    model.add_object_patch("model_sampling", flow)
    if attention != ATTENTION_CHOICES[0]:
        options = dict(model.model_options.get("transformer_options", {}), **{WINDOW_OPTION: DEFAULT_WINDOW})
        model.model_options["transformer_options"] = options
    guider = sampling.Stage2Guider(model)
    guider.set_flashvideo_conds(positive, noise_step)
    guider.set_cfg(cfg)
    return sample_with(guider, sampling.DegradedLatentNoise(samples, samples.get(SEED_KEY, 0)),
                       sampling.stage2_sampler(), sampling.stage2_sigmas(model, steps), samples, model)
