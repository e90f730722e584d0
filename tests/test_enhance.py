"""The enhancer's core (flashvideo_core/enhance): windows cover any length, neighbours share their noise, one
window is exactly the single pass of the stage-II parts, joins are smooth on clips with known motion, odd sizes
come back at their stated size, colour fixes do what their math says, and a stop lands inside a VAE chunk."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

from flashvideo_core.constants import LATENT_SCALE_STAGE2 as SCALE
from flashvideo_core.dit.model import FlashVideoDiT
from flashvideo_core.enhance import enhancer as enhancer_module
from flashvideo_core.enhance.colour import (
    adain_fix, apply_colour_fix, low_frequency_colour_difference, srgb_to_lab, wavelet_fix,
)
from flashvideo_core.enhance.enhancer import enhance_video, plan_enhance
from flashvideo_core.enhance.geometry import grid_size, output_size
from flashvideo_core.enhance.windows import WINDOW_FRAMES, plan_windows, window_noise
from flashvideo_core.errors import Cancelled, InputError
from flashvideo_core.stage2.bridge import encode_for_stage2, posterior_noise
from flashvideo_core.stage2.degrade import degrade_latent
from flashvideo_core.stage2.refiner import refine_stage2
from flashvideo_core.tiny import TINY_STAGE2_CONFIG, random_dit_state_dict
from flashvideo_core.vae.slicing import SlicingOptions, decode_sliced, encode_sliced
from support.progress import CallbackProgress

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the clips the benchmark measures
from clips import join_ratio, moving_clip  # noqa: E402


@pytest.fixture(autouse=True)
def quiet_logs():
    """Tiny sizes make the slicer and the size check warn on every window."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="module")
def dit():
    model = FlashVideoDiT(TINY_STAGE2_CONFIG)
    model.load_state_dict(random_dit_state_dict(TINY_STAGE2_CONFIG, 0))
    return model.eval().requires_grad_(False)


def core_refine(model, steps=3):
    context = torch.randn(1, 8, TINY_STAGE2_CONFIG.text_hidden_size, generator=torch.Generator().manual_seed(1))
    return lambda latent: refine_stage2(model, context, latent * SCALE, 675, steps, 13.0, 2.5) / SCALE


def run(vae, frames, plan, refine, **kwargs) -> torch.Tensor:
    written = []
    enhance_video(vae, iter(frames), plan, refine, written.append, **kwargs)
    return torch.cat(written)


# ------------------------------------------------------------------------------------------------ windows

@pytest.mark.parametrize("frames", [1, 2, 5, 48, 49, 50, 97, 500])
@pytest.mark.parametrize("overlap", [0, 8, 20])
def test_windows_cover_any_length_on_the_latent_grid(frames, overlap):
    windows = plan_windows(frames, overlap)
    assert windows[0].start == 0 and windows[-1].end == frames
    for previous, window in zip(windows, windows[1:]):
        assert window.start % 4 == 0 and window.end > previous.end
        assert window.shared == previous.end - window.start == overlap + 1
    for window in windows:
        assert 1 <= window.frames <= WINDOW_FRAMES and (window.padded_frames - 1) % 4 == 0
        assert window.padded_frames - window.frames < 4
    assert len(windows) == 1 if frames <= WINDOW_FRAMES else len(windows) > 1


@pytest.mark.parametrize("frames", range(1, 50))
def test_every_window_length_decodes_back_to_its_padded_frames(tiny_vae, frames):
    """A window's latents decode to exactly its padded frames, so its frames stay in place in time (an even
    latent count, e.g. a last window of 18 frames padded to 21, once came back as 24 frames shifted by three)."""
    (window,) = plan_windows(frames, 8)
    latent = torch.zeros(1, 16, window.latent_frames, 2, 2)
    assert decode_sliced(tiny_vae, latent, SlicingOptions(stage=2)).shape[2] == window.padded_frames >= frames


@pytest.mark.parametrize("overlap", [6, -4, 24, 8.5, True])
def test_overlap_off_the_grid_is_refused_naming_the_input(overlap):
    with pytest.raises(InputError, match="overlap"):
        plan_windows(97, overlap)


def test_neighbouring_windows_share_their_noise_and_the_first_is_todays_draw():
    windows = plan_windows(140, 8)
    shape = lambda w: (1, 2, w.latent_frames, 3, 4)  # noqa: E731
    assert torch.equal(window_noise(posterior_noise, 7, windows, 0, shape), posterior_noise(shape(windows[0]), 7))
    for k in range(1, len(windows)):
        before, after = (window_noise(posterior_noise, 7, windows, i, shape) for i in (k - 1, k))
        offset = (windows[k].start - windows[k - 1].start) // 4
        assert torch.equal(after[:, :, :3], before[:, :, offset:offset + 3])  # 9 shared frames = 3 latent frames
        assert not torch.equal(after[:, :, 3:4], before[:, :, offset + 3:offset + 4])  # the rest is its own draw


# ------------------------------------------------------------------------------------------------ sizes

@pytest.mark.parametrize("size, resolution, expected", [
    ((270, 480), "1080p", (1080, 1920)), ((1920, 1080), "1080p", (1920, 1080)), ((512, 512), "2K", (1440, 1440)),
    ((23, 37), "input", (24, 38)), ((240, 320), (96, 128), (96, 128)),
])
def test_output_size_keeps_the_aspect_and_even_sides(size, resolution, expected):
    assert output_size(size, resolution) == expected
    assert all(v % 16 == 0 and v - 16 < s <= v for v, s in zip(grid_size(expected), expected))


@pytest.mark.parametrize("resolution", [(97, 128), "720p", (8, 8)])
def test_output_sizes_that_cannot_work_are_refused(resolution):
    with pytest.raises(InputError, match="even|resolution|outside"):
        output_size((64, 64), resolution)


# ------------------------------------------------------------------------------------------------ the pass

def test_one_window_is_exactly_the_single_pass_of_the_stage2_parts(tiny_vae, dit):
    clip = moving_clip(17, 32, 48)
    refine = core_refine(dit)
    plan = plan_enhance(17, (32, 48), (48, 64), 8, 675, 11, "none")
    enhanced = run(tiny_vae, clip, plan, refine)
    # the template's chain: Stage II Upscale -> Latent Degrade -> Refiner -> VAE Decode (LATENTs unscaled)
    video = clip.movedim(-1, 0).unsqueeze(0).float() * 2 - 1
    latent = encode_for_stage2(tiny_vae, video, (48, 64), 11) / SCALE
    degraded = degrade_latent(latent * SCALE, 675, 11) / SCALE
    decoded = decode_sliced(tiny_vae, refine(degraded), SlicingOptions(stage=2))
    expected = ((decoded.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).flatten(0, 1)
    assert torch.equal(enhanced, expected)


@pytest.mark.parametrize("frames, height, width", [(1, 23, 37), (2, 23, 37), (50, 16, 24), (97, 16, 24)])
def test_any_length_and_odd_size_comes_back_frame_for_frame_at_the_stated_size(tiny_vae, dit, frames, height, width):
    plan = plan_enhance(frames, (height, width), "input", 8, 675, 0, "wavelet")
    out = run(tiny_vae, moving_clip(frames, height, width), plan, core_refine(dit, steps=1))
    assert out.shape == (frames, height + height % 2, width + width % 2, 3) == (frames, *plan.size, 3)
    assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    assert "run at" in plan.describe()


@pytest.mark.slow
def test_a_500_frame_clip_streams_through_in_13_windows(tiny_vae, dit):
    plan = plan_enhance(500, (16, 16), "input", 8, 675, 0, "none")
    frames = (moving_clip(1, 16, 16)[0] for _ in range(500))  # a generator: never a whole clip in memory
    sizes = []
    enhance_video(tiny_vae, frames, plan, core_refine(dit, steps=1), lambda f: sizes.append(f.shape[0]))
    assert len(plan.windows) == len(sizes) == 13 and sum(sizes) == 500


@pytest.mark.parametrize("kind", ["pattern", "pan", "cut"])
def test_joins_change_no_more_than_the_frames_inside_windows(tiny_vae, kind, monkeypatch):
    """Stage II's contribution is per window anyway; a zero-velocity refiner isolates what the windows do (the
    causal VAE starts each window afresh), on clips with known motion. Without the cross-fade the joins jump."""
    plan = plan_enhance(97, (32, 48), "input", 8, 0, 0, "none")
    clip = moving_clip(97, kind=kind)
    assert join_ratio(run(tiny_vae, clip, plan, lambda x: x), plan.windows) <= 1.2
    monkeypatch.setattr(enhancer_module, "crossfade_weights", lambda n: torch.zeros(n))  # hard cut
    hard = join_ratio(run(tiny_vae, clip, plan, lambda x: x), plan.windows)
    assert hard > 1.2


# ------------------------------------------------------------------------------------------------ colour

def test_lab_conversion_matches_the_cie_values():
    lab = srgb_to_lab(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    expected = torch.tensor([[100.0, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]],
                            dtype=torch.float64)
    assert torch.allclose(lab, expected, atol=0.02)


def test_colour_fixes_undo_the_colour_changes_they_are_built_for():
    reference = moving_clip(3, 40, 56)
    shifted = (reference + torch.tensor([0.08, -0.05, 0.03])).clamp(0, 1)  # a colour cast, detail untouched
    assert low_frequency_colour_difference(shifted, reference) > 3
    assert torch.allclose(wavelet_fix(shifted, reference), reference, atol=2e-3)
    scaled = reference * torch.tensor([0.8, 1.0, 0.9]) + 0.05  # a per-channel contrast and level change
    assert torch.allclose(adain_fix(scaled, reference), reference, atol=1e-3)
    assert low_frequency_colour_difference(adain_fix(scaled, reference), reference) < 0.1
    assert apply_colour_fix("none", shifted, reference) is shifted
    detail = reference + 0.05 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(0))
    kept = wavelet_fix(detail.clamp(0, 1), reference) - reference  # the high band (the detail) survives
    assert (kept - (detail.clamp(0, 1) - reference)).abs().mean() < 0.02


# ------------------------------------------------------------------------------------------------ stopping

def test_a_stop_lands_inside_a_vae_chunk_and_between_windows(tiny_vae, dit):
    checks = []
    progress = CallbackProgress(should_cancel=lambda: checks.append(1) and False)
    video = torch.zeros(1, 3, 17, 32, 48)
    encode_sliced(tiny_vae, video, SlicingOptions(mode="manual", chunk_latents=2), progress)
    units = progress.total
    assert len(checks) > 3 * units  # checks inside every chunk, not only one per chunk
    written, calls = [], []
    plan = plan_enhance(97, (16, 24), "input", 8, 675, 0, "none")
    stop = CallbackProgress(should_cancel=lambda: len(written) == 1 and calls.append(1) is None and len(calls) > 5)
    with pytest.raises(Cancelled):
        enhance_video(tiny_vae, iter(moving_clip(97, 16, 24)), plan, core_refine(dit, 1), written.append,
                      progress=stop)
    assert len(written) == 1  # the first window's frames went out; the second stopped mid-way
