"""The pack's VAE against diffusers' AutoencoderKLCogVideoX (independent oracle), same weights.

Weights are generated in the official layout and handed to diffusers through the
pack's own key mapping, so a mapping error fails here too.
"""

import pytest
import torch

from flashvideo_core.vae.model import DiagonalGaussian
from flashvideo_core.vae.slicing import SlicingOptions, decode_sliced, encode_sliced

ATOL = 5e-5  # float32, O(1) activations


@pytest.mark.parametrize("frames", [1, 5, 8, 9])
def test_encoder_moments_match_diffusers(tiny_vae, diffusers_vae, rng, frames):
    video = torch.rand(1, 3, frames, 32, 48, generator=rng) * 2 - 1
    with torch.no_grad():
        ours = tiny_vae.encode_moments(video)
        theirs, _ = diffusers_vae.encoder(video)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("latent_frames", [1, 3, 5])
def test_decoder_matches_diffusers(tiny_vae, diffusers_vae, rng, latent_frames):
    z = torch.randn(1, 16, latent_frames, 4, 6, generator=rng)
    with torch.no_grad():
        ours = tiny_vae.decode(z)
        theirs, _ = diffusers_vae.decoder(z)
    assert ours.shape == theirs.shape == (1, 3, theirs.shape[2], 32, 48)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("latent_frames", [2, 4])
def test_even_latent_counts_differ_from_diffusers_on_purpose(tiny_vae, diffusers_vae, rng, latent_frames):
    """diffusers (as the reference) decodes an even latent count T into 4T frames, its first latent frame four
    times over; the pack gives the 1 + 4 (T - 1) frames of the clip that was encoded (test_vae_slicing.py)."""
    z = torch.randn(1, 16, latent_frames, 4, 6, generator=rng)
    with torch.no_grad():
        ours, (theirs, _) = tiny_vae.decode(z), diffusers_vae.decoder(z)
    assert (ours.shape[2], theirs.shape[2]) == (1 + 4 * (latent_frames - 1), 4 * latent_frames)


def test_reference_decode_matches_diffusers_framewise_decode(tiny_vae, diffusers_vae, rng):
    """diffusers' framewise decode uses the official boundaries [0:3] + pairs for 13 latents."""
    z = torch.randn(1, 16, 13, 4, 6, generator=rng)
    ours = decode_sliced(tiny_vae, z, SlicingOptions("reference"))
    with torch.no_grad():
        theirs = diffusers_vae.decode(z).sample
    assert ours.shape == (1, 3, 49, 32, 48)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-4)


def test_reference_encode_matches_diffusers_encoder_run_on_official_chunks(tiny_vae, diffusers_vae, rng):
    """Official stage-II encode: frames [17, 16, 16] with the conv cache carried between them."""
    video = torch.rand(1, 3, 49, 16, 24, generator=rng) * 2 - 1
    ours = encode_sliced(tiny_vae, video, SlicingOptions("reference"))
    cache, parts = None, []
    with torch.no_grad():
        for start, end in [(0, 17), (17, 33), (33, 49)]:
            out, cache = diffusers_vae.encoder(video[:, :, start:end], conv_cache=cache)
            parts.append(out)
    theirs = torch.cat(parts, dim=2)
    assert ours.shape == (1, 32, 13, 2, 3)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-4)


def test_posterior_sample_and_mode_follow_the_formula(tiny_vae, rng):
    video = torch.rand(1, 3, 5, 16, 16, generator=rng) * 2 - 1
    with torch.no_grad():
        moments = tiny_vae.encode_moments(video)
    posterior = DiagonalGaussian(moments)
    mean, logvar = moments[:, :16], moments[:, 16:].clamp(-30, 20)
    torch.testing.assert_close(posterior.mode(), mean)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
    sample = posterior.sample(torch.Generator().manual_seed(7))
    torch.testing.assert_close(sample, mean + torch.exp(0.5 * logvar) * eps)
    assert not torch.equal(sample, posterior.sample(torch.Generator().manual_seed(8)))
