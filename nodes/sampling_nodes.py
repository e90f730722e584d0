"""FlashVideo's parts for core custom sampling (SamplerCustomAdvanced): SIGMAS, NOISE, GUIDER and SAMPLER per
stage. Together they reproduce the reference; each also works with the host's own parts (core schedulers,
RandomNoise, CFGGuider, KSampler samplers), approximately. Node ids are frozen.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..flashvideo_core.settings import SEED, Stage1Settings, Stage2Settings, setting
from .host import setting_input
from .input_checks import latent_tensor, widget
from .latents import SEED_KEY, degraded_step
from .native.glue import check_prompt, native, require_stage

CATEGORY = "FlashVideo/sampling"
STAGE1_STEPS, STAGE1_CFG = setting(Stage1Settings, "steps"), setting(Stage1Settings, "cfg")
STAGE2_STEPS, STAGE2_CFG = setting(Stage2Settings, "steps"), setting(Stage2Settings, "cfg")


class FlashVideoStage1Sigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage1Sigmas", display_name="FlashVideo Stage I Sigmas", category=CATEGORY,
            description="The reference's stage-I schedule: N timesteps linspace(999, 0, N) with zero-terminal-SNR "
            "alphas rescaled over them, as SIGMAS (the first is the model's sigma_max, where the reference has a = 0).",
            inputs=[io.Model.Input("model", tooltip="The stage-I model."),
                    setting_input("steps", STAGE1_STEPS)],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, steps: int = STAGE1_STEPS.default) -> io.NodeOutput:
        steps = widget(STAGE1_STEPS, steps, "FlashVideo Stage I Sigmas", "steps")
        require_stage(model, 1, "FlashVideo Stage I Sigmas")
        return io.NodeOutput(native().stage1_sigmas(model, steps))


class FlashVideoStage1Noise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage1Noise", display_name="FlashVideo Stage I Noise", category=CATEGORY,
            description="The reference's initial noise: drawn on the CPU in the reference's layout, so a seed gives "
            "the official preview on every device (core RandomNoise draws in another order).",
            inputs=[setting_input("seed", SEED, tooltip="The stage-I seed (FlashVideo's stage-I SAMPLER continues "
                                  "this stream).")],
            outputs=[io.Noise.Output()],
        )

    @classmethod
    def execute(cls, seed: int = 0) -> io.NodeOutput:
        seed = widget(SEED, seed, "FlashVideo Stage I Noise", "seed")
        return io.NodeOutput(native().Stage1ReferenceNoise(seed))


class FlashVideoDynamicCFGGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoDynamicCFGGuider", display_name="FlashVideo DynamicCFG Guider (stage I)",
            category=CATEGORY,
            description="Stage I's guidance: the reference's per-step DynamicCFG scale against an all-zero context, "
            "with the reference's denoiser (integer timesteps, snapped alphas) for this run.",
            inputs=[io.Model.Input("model", tooltip="The stage-I model."),
                    io.Conditioning.Input("positive", tooltip="The prompt (FlashVideo Text Encode or Load Prompt Embedding)."),
                    setting_input("cfg", STAGE1_CFG),
                    io.Conditioning.Input("negative", optional=True,
                                          tooltip="Leave empty for the reference (an all-zero context).")],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, positive, cfg: float = STAGE1_CFG.default, negative=None) -> io.NodeOutput:
        node = "FlashVideo DynamicCFG Guider"
        cfg = widget(STAGE1_CFG, cfg, node, "cfg")
        require_stage(model, 1, node)
        check_prompt(model, positive, node, "positive", tokens=False)
        if negative is not None:
            check_prompt(model, negative, node, "negative", tokens=False)
        sampling = native()
        guider = sampling.DynamicCFGGuider(model)
        guider.set_conds(positive, sampling.zero_conditioning(positive) if negative is None else negative)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)


class FlashVideoStage1SamplerSelect(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage1SamplerSelect", display_name="FlashVideo Stage I Sampler (SDE DPM++ 2M)",
            category=CATEGORY,
            description="The reference's stage-I sampler: SDE DPM-Solver++(2M) in VP form with its RNG order, "
            "returning the x0 prediction at the last step. Seeded by the NOISE's seed.",
            inputs=[], outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(native().stage1_sampler())


class FlashVideoStage2Sigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage2Sigmas", display_name="FlashVideo Stage II Sigmas", category=CATEGORY,
            description="sigma = 1 - t on the shifted flow-matching grid, built in the model's dtype as the "
            "reference (bf16 on GPUs). The shift is the model's (2.5; core ModelSamplingSD3 changes it).",
            inputs=[io.Model.Input("model", tooltip="The stage-II model."),
                    setting_input("steps", STAGE2_STEPS)],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, steps: int = STAGE2_STEPS.default) -> io.NodeOutput:
        steps = widget(STAGE2_STEPS, steps, "FlashVideo Stage II Sigmas", "steps")
        require_stage(model, 2, "FlashVideo Stage II Sigmas")
        return io.NodeOutput(native().stage2_sigmas(model, steps))


class FlashVideoStage2Noise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage2Noise", display_name="FlashVideo Stage II Noise (degraded latent)",
            category=CATEGORY,
            description="Stage II starts at sigma 1 from the degraded latent: use FlashVideo Latent Degrade's output "
            "here and as the sampler's latent.",
            inputs=[io.Latent.Input("samples", tooltip="FlashVideo Latent Degrade's output.")],
            outputs=[io.Noise.Output()],
        )

    @classmethod
    def execute(cls, samples: dict) -> io.NodeOutput:
        latent_tensor(samples, "FlashVideo Stage II Noise")  # its tags (the seed among them) included
        degraded_step(samples, "FlashVideo Stage II Noise")
        return io.NodeOutput(native().DegradedLatentNoise(samples, samples.get(SEED_KEY, 0)))


class FlashVideoStage2Guider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage2Guider", display_name="FlashVideo Stage II Guider", category=CATEGORY,
            description="Stage II's guidance: constant CFG against an all-zero context, mixed in the model's dtype "
            "as the reference, with the degradation step (from the degraded latent) as conditioning.",
            inputs=[io.Model.Input("model", tooltip="The stage-II model."),
                    io.Conditioning.Input("positive", tooltip="The prompt."),
                    io.Latent.Input("samples", tooltip="FlashVideo Latent Degrade's output (for its noise step)."),
                    setting_input("cfg", STAGE2_CFG),
                    io.Conditioning.Input("negative", optional=True,
                                          tooltip="Leave empty for the reference (an all-zero context).")],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, positive, samples: dict, cfg: float = STAGE2_CFG.default, negative=None) -> io.NodeOutput:
        node = "FlashVideo Stage II Guider"
        cfg = widget(STAGE2_CFG, cfg, node, "cfg")
        latent_tensor(samples, node)
        step = degraded_step(samples, node)
        require_stage(model, 2, node)
        check_prompt(model, positive, node, "positive", tokens=False)
        if negative is not None:
            check_prompt(model, negative, node, "negative", tokens=False)
        guider = native().Stage2Guider(model)
        guider.set_flashvideo_conds(positive, step, negative)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)


class FlashVideoStage2SamplerSelect(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoStage2SamplerSelect", display_name="FlashVideo Stage II Sampler (Euler)",
            category=CATEGORY,
            description="The reference's Euler steps of the flow ODE, in the model's dtype (bf16 on GPUs).",
            inputs=[], outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(native().stage2_sampler())


SAMPLING_NODES = [
    FlashVideoStage1Sigmas, FlashVideoStage1Noise, FlashVideoDynamicCFGGuider, FlashVideoStage1SamplerSelect,
    FlashVideoStage2Sigmas, FlashVideoStage2Noise, FlashVideoStage2Guider, FlashVideoStage2SamplerSelect,
]
