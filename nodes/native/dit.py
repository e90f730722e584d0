"""The FlashVideo DiT as ComfyUI calls a diffusion model (the role of ``comfy/ldm/<model>/model.py``).

ComfyUI builds it as ``DiT(**unet_config, device=, operations=)`` and calls
``forward(x[B, C, T, H, W], timestep, context, transformer_options=, **extra_conds)``. The core model computes
in (B, T, C, H, W); stage II's output is negated so the host's flow convention (denoised = x - sigma * out)
gives x + sigma * v, the reference's clean estimate.
"""

from __future__ import annotations

import dataclasses

import torch

import comfy.patcher_extension

from ...flashvideo_core.dit.config import DiTConfig
from ...flashvideo_core.dit.model import FlashVideoDiT
from .cast_once import call_casting_once

#: transformer_options key: the experimental local-attention window (frames, height, width) for this run
WINDOW_OPTION = "flashvideo_window"
CONFIG_FIELDS = {f.name for f in dataclasses.fields(DiTConfig)}


def host_attention(q, k, v, transformer_options=None, **_):
    """ComfyUI's attention dispatch (SDPA, sage, flash, xformers... as the host was started), looked up at
    call time so the host's command-line choice and its patches apply."""
    from comfy.ldm.modules import attention

    return attention.optimized_attention(q, k, v, heads=q.shape[1], skip_reshape=True, skip_output_reshape=True,
                                         transformer_options=transformer_options or {})


class ComfyFlashVideoDiT(FlashVideoDiT):
    def __init__(self, image_model=None, device=None, dtype=None, operations=None, **config):
        unknown = set(config) - CONFIG_FIELDS
        if unknown:
            raise ValueError(f"unknown FlashVideo DiT config fields {sorted(unknown)}")
        super().__init__(DiTConfig(**config), layers=operations or torch.nn, attention_fn=host_attention,
                         device=device, dtype=dtype)
        self.dtype = dtype  # ComfyUI reads the weight dtype here

    def forward(self, x, timestep, context, transformer_options={}, **kwargs):
        """Through the host's DIFFUSION_MODEL wrappers (EasyCache and the like), as core models run."""
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     transformer_options),
        ).execute(x, timestep, context, transformer_options, **kwargs)

    def _forward(self, x, timestep, context, transformer_options={}, ref_step=None, latent_frames=None,
                 chunk_tokens=None, **kwargs):
        if self.config.stage2_embeddings and ref_step is None:
            raise ValueError("the FlashVideo stage-II model needs the degradation step: sample it with FlashVideo "
                             "Stage II Guider (or the Stage II Refiner), which passes the noise step of FlashVideo "
                             "Latent Degrade as conditioning")
        if self.config.stage2_embeddings and latent_frames is None:
            latent_frames = torch.full((x.shape[0],), float(x.shape[2]), device=x.device)
        tokens = self.embed(x.movedim(1, 2), timestep, context, latent_frames, ref_step, dtype=x.dtype)
        window = transformer_options.get(WINDOW_OPTION)
        attention_options = {"transformer_options": transformer_options}
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        transformer_options["total_blocks"] = len(self.transformer_blocks)
        transformer_options["block_type"] = "double"
        for index, block in enumerate(self.transformer_blocks):
            transformer_options["block_index"] = index

            def run_block(args, block=block):
                hidden = torch.cat([args["txt"], args["img"]], dim=1)
                hidden = call_casting_once([block], hidden, lambda: block(
                    hidden, args["txt"].shape[1], args["vec"], args["pe"], tokens.grid, chunk_tokens, window,
                    {"transformer_options": args["transformer_options"]}))
                return {"img": hidden[:, args["txt"].shape[1]:], "txt": hidden[:, :args["txt"].shape[1]]}

            if ("double_block", index) in blocks_replace:  # text and video tokens in, both out, as Flux's blocks
                out = blocks_replace[("double_block", index)](
                    {"img": tokens.hidden[:, tokens.text_len:], "txt": tokens.hidden[:, :tokens.text_len],
                     "vec": tokens.temb, "pe": tokens.rope, "transformer_options": transformer_options},
                    {"original_block": run_block})
                tokens.hidden = torch.cat([out["txt"], out["img"]], dim=1)
            else:
                tokens.hidden = call_casting_once([block], tokens.hidden, lambda block=block: block(
                    tokens.hidden, tokens.text_len, tokens.temb, tokens.rope, tokens.grid, chunk_tokens, window,
                    attention_options))
        out = call_casting_once([self.norm_final, self.norm_out, self.proj_out], tokens.hidden,
                                lambda: self.unembed(tokens, chunk_tokens)).movedim(2, 1)
        return -out if self.config.stage2_embeddings else out
