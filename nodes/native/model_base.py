"""FlashVideo's BaseModel subclasses and model configs (the roles of ``comfy/model_base.py`` and
``comfy/supported_models.py``).

Stage I is zero-terminal-SNR v-prediction on the scaled-linear DDPM schedule; stage II is a flow model
(shift 2.5, timestep multiplier 1000) with two extra embeddings that arrive as conditioning. LATENTs between
nodes are unscaled, as everywhere in ComfyUI; the latent formats scale them by 0.7 (stage I, the 5B
convention) and 1.15258426 (stage II, the 2B convention) on the way in and out of sampling.
"""

from __future__ import annotations

import dataclasses

import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_sampling
import comfy.supported_models_base

from ...flashvideo_core.constants import LATENT_SCALE_STAGE1, LATENT_SCALE_STAGE2
from ...flashvideo_core.dit.config import DiTConfig
from ...flashvideo_core.dit.memory import plan_bytes, plan_for
from .dit import ComfyFlashVideoDiT

#: conditioning key (on positive and negative) carrying the stage-II degradation step
REF_STEP_KEY = "flashvideo_ref_step"


#: 16 x 3 linear map from a CogVideoX-VAE latent to a rough RGB preview (core Latent2RGB previews). Not fitted
#: here (the real 3d-vae.pt is needed): the published values of kijai/ComfyUI-CogVideoXWrapper's previewer for the
#: same VAE, rounded to 4 digits.
COGVIDEOX_LATENT_RGB_FACTORS = [
    [0.1195, 0.0992, -0.0048], [-0.0012, 0.0550, 0.0213], [-0.0141, -0.0087, -0.0210], [0.0306, 0.1219, 0.0140],
    [0.0927, 0.0303, 0.0508], [0.0379, 0.0494, 0.0586], [0.0177, 0.0088, 0.0360], [0.1061, 0.0234, 0.0572],
    [0.1274, -0.0110, 0.0433], [-0.0187, 0.0822, 0.1061], [0.0084, 0.0762, 0.0930], [0.1294, 0.1236, 0.0448],
    [0.0457, 0.0411, -0.0177], [0.0002, -0.0140, 0.0533], [0.0808, 0.1155, -0.0215], [-0.0152, -0.0058, 0.0722],
]


class FlashVideoStage1Latent(comfy.latent_formats.LatentFormat):
    latent_channels = 16
    latent_dimensions = 3
    temporal_downscale_ratio = 4
    scale_factor = LATENT_SCALE_STAGE1
    latent_rgb_factors = COGVIDEOX_LATENT_RGB_FACTORS
    latent_rgb_factors_bias = None


class FlashVideoStage2Latent(FlashVideoStage1Latent):
    scale_factor = LATENT_SCALE_STAGE2


class FlashVideoFlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """The host's flow sampling, with the network timestep computed as the reference does: 1000 - 1000 t in
    the model's compute dtype (bf16 on GPUs: 1000, 904, 784, 624, 384 at 5 steps, where fp32 gives
    1000, 909.1, 789.5, 625, 384.6)."""

    timestep_dtype = torch.float32

    def timestep(self, sigma):
        t = (1.0 - sigma.float()).to(self.timestep_dtype)
        return (self.multiplier - self.multiplier * t).float()


class FlashVideoModel(comfy.model_base.BaseModel):
    def __init__(self, model_config, model_type, device=None):
        super().__init__(model_config, model_type, device=device, unet_model=ComfyFlashVideoDiT)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.manual_cast_dtype or self.get_dtype()

    def plan(self, shape: tuple, free_bytes: int):
        """How the forwards of ``shape`` run in ``free_bytes``, in the loader's memory mode (model_config's:
        flashvideo_core.dit.memory; auto: whole-sequence when that fits, token chunks otherwise)."""
        return plan_for(self.diffusion_model, tuple(int(n) for n in shape), self.compute_dtype,
                        mode=self.model_config.memory_mode, free_bytes=free_bytes, host=True)

    def extra_conds(self, **kwargs):
        """The token chunk of this run's forwards (None = whole sequence), planned for cond and uncond in one
        batch against the free memory after the host has loaded the model. Decided once per sampling run (as
        conditioning), so no forward asks the host anything: that would break a torch.compile graph."""
        out = super().extra_conds(**kwargs)
        noise = kwargs["noise"]
        device = kwargs.get("device") or noise.device  # the sampling device (the host passes it)
        plan = self.plan((2 * noise.shape[0], *noise.shape[1:]), comfy.model_management.get_free_memory(device))
        out["chunk_tokens"] = comfy.conds.CONDConstant(plan.chunk_tokens)
        return out

    def memory_required(self, input_shape, cond_shapes={}):
        """Working memory of one forward of ``input_shape`` as this model will run it when memory is short
        (the host batches cond and uncond, and reserves memory before partial loading, by this figure)."""
        plan = self.plan(input_shape, 0)
        return plan_bytes(self.diffusion_model.config, tuple(int(n) for n in input_shape), self.compute_dtype, plan)


class FlashVideoStage1Model(FlashVideoModel):
    def __init__(self, model_config, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.V_PREDICTION, device=device)


class FlashVideoStage2Model(FlashVideoModel):
    def __init__(self, model_config, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.FLOW, device=device)
        sampling = FlashVideoFlowSampling(model_config)
        sampling.timestep_dtype = self.compute_dtype
        self.model_sampling = sampling

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        noise = kwargs["noise"]
        batch = noise.shape[0]
        step = kwargs.get(REF_STEP_KEY)
        if step is not None:  # float: the host rounds it to the compute dtype (bf16: 675 -> 676, the reference)
            out["ref_step"] = comfy.conds.CONDRegular(torch.full((batch,), float(step)))
        out["latent_frames"] = comfy.conds.CONDRegular(torch.full((batch,), float(noise.shape[2])))
        return out


class FlashVideoConfig(comfy.supported_models_base.BASE):
    unet_extra_config = {}
    supported_inference_dtypes = [torch.bfloat16, torch.float32]  # fp16 overflows (NaN) in CogVideoX DiTs
    model_class = None

    def __init__(self, dit_config: DiTConfig):
        super().__init__(dataclasses.asdict(dit_config))
        self.memory_mode = "auto"  # the loader's choice (flashvideo_core.dit.memory); the model plans by it

    def get_model(self, state_dict, prefix="", device=None):
        return self.model_class(self, device=device)


class FlashVideoStage1Config(FlashVideoConfig):
    sampling_settings = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.012, "zsnr": True}
    latent_format = FlashVideoStage1Latent
    model_class = FlashVideoStage1Model


class FlashVideoStage2Config(FlashVideoConfig):
    sampling_settings = {"shift": 2.5, "multiplier": 1000}
    latent_format = FlashVideoStage2Latent
    model_class = FlashVideoStage2Model


def model_config_for(dit_config: DiTConfig) -> FlashVideoConfig:
    return (FlashVideoStage2Config if dit_config.stage2_embeddings else FlashVideoStage1Config)(dit_config)
