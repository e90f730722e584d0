import pytest
import torch

from flashvideo_core.checkpoints.vae_keys import official_to_diffusers
from flashvideo_core.tiny import TINY_VAE_CONFIG, random_vae_state_dict
from flashvideo_core.vae.model import CogVideoXVAE


@pytest.fixture(scope="session")
def tiny_state_dict():
    return random_vae_state_dict(TINY_VAE_CONFIG, seed=0)


@pytest.fixture(scope="session")
def tiny_vae(tiny_state_dict):
    vae = CogVideoXVAE(TINY_VAE_CONFIG)
    vae.load_state_dict(tiny_state_dict)
    return vae.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def diffusers_vae(tiny_state_dict):
    """The independent oracle: diffusers' implementation at the identical tiny config."""
    diffusers = pytest.importorskip("diffusers")
    cfg = TINY_VAE_CONFIG
    model = diffusers.AutoencoderKLCogVideoX(
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
    )
    model.load_state_dict(official_to_diffusers(tiny_state_dict), strict=True)
    return model.eval().requires_grad_(False)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
