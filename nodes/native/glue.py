"""The glue between FlashVideo's nodes and the host's sampling: the native sampling module, imported when a node
runs (it needs the host's model code, so node modules stay importable without it), model and prompt checks, and
running a GUIDER as core SamplerCustomAdvanced does."""

from __future__ import annotations

import torch

from ..input_checks import prompt_width, refuse


def native():
    """The ComfyUI-bound sampling module, imported when a node runs (it needs the host's model code)."""
    from . import sampling

    return sampling


def require_stage(model, stage: int, node: str) -> None:
    from .model_base import FlashVideoStage1Model, FlashVideoStage2Model

    expected = FlashVideoStage1Model if stage == 1 else FlashVideoStage2Model
    inner = getattr(model, "model", None)
    if not isinstance(inner, expected):
        found = "a non-FlashVideo model" if "FlashVideo" not in type(inner).__name__ else "the other FlashVideo stage"
        raise refuse(node, "model", f"needs the FlashVideo stage-{'I' if stage == 1 else 'II'} model, got {found}",
                     f"connect {'stage1.pt' if stage == 1 else 'stage2.pt'} loaded by FlashVideo Model Loader")


def text_width(model):
    """The prompt width the loaded DiT was built for (T5-XXL: 4096), from its ComfyUI model config."""
    config = getattr(getattr(getattr(model, "model", None), "model_config", None), "unet_config", None)
    if isinstance(config, dict) and "text_hidden_size" in config:
        return int(config["text_hidden_size"])
    return None


def check_prompt(model, cond, node: str, name: str, tokens: bool = True) -> None:
    """A prompt embedding of the wrong width is refused here, naming the input, not as a matmul error later.
    ``tokens``: also require the reference's 226 tokens (the convenience nodes; the guiders take any length)."""
    prompt_width(cond, text_width(model), node, name, tokens)


def sample_with(guider, noise, sampler, sigmas, latent: dict, model) -> torch.Tensor:
    """Run a guider as core SamplerCustomAdvanced does: host progress bar, latent previews, interrupt."""
    import comfy.model_management as mm
    import comfy.utils
    import latent_preview

    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    samples = guider.sample(noise.generate_noise(latent), latent["samples"], sampler, sigmas, callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=noise.seed)
    return samples.to(mm.intermediate_device())
