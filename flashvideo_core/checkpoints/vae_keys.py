"""Key mapping between the official VAE layout and diffusers' ``AutoencoderKLCogVideoX``.

The official (SAT) names are the pack's canonical names. The renames are the ones of
diffusers' conversion script (docs/CHECKPOINTS.md#vae-layout): ``block`` -> ``resnets``, ``down`` ->
``down_blocks``, ``downsample`` -> ``downsamplers.0``, ``upsample`` -> ``upsamplers.0``,
``nin_shortcut`` -> ``conv_shortcut``, ``mid.block_{1,2}`` -> ``mid_block.resnets.{0,1}``,
and decoder levels reversed (``up.L`` -> ``up_blocks.{n-1-L}``).
"""

from __future__ import annotations

import re


def _num_levels(keys, pattern: str) -> int:
    levels = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(levels) + 1 if levels else 0


def official_to_diffusers_key(key: str, num_levels: int) -> str:
    k = key.replace("nin_shortcut", "conv_shortcut")
    k = re.sub(r"^(encoder|decoder)\.mid\.block_([12])\.", lambda m: f"{m.group(1)}.mid_block.resnets.{int(m.group(2)) - 1}.", k)
    k = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", k)
    k = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", k)
    k = re.sub(r"^decoder\.up\.(\d+)\.block\.", lambda m: f"decoder.up_blocks.{num_levels - 1 - int(m.group(1))}.resnets.", k)
    k = re.sub(r"^decoder\.up\.(\d+)\.upsample\.", lambda m: f"decoder.up_blocks.{num_levels - 1 - int(m.group(1))}.upsamplers.0.", k)
    return k


def diffusers_to_official_key(key: str, num_levels: int) -> str:
    k = key.replace("conv_shortcut", "nin_shortcut")
    k = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.([01])\.", lambda m: f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.", k)
    k = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", k)
    k = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
    k = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{num_levels - 1 - int(m.group(1))}.block.", k)
    k = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{num_levels - 1 - int(m.group(1))}.upsample.", k)
    return k


def official_to_diffusers(state_dict: dict) -> dict:
    n = _num_levels(state_dict, r"encoder\.down\.(\d+)\.")
    return {official_to_diffusers_key(k, n): v for k, v in state_dict.items()}


def diffusers_to_official(state_dict: dict) -> dict:
    n = _num_levels(state_dict, r"encoder\.down_blocks\.(\d+)\.")
    return {diffusers_to_official_key(k, n): v for k, v in state_dict.items()}
