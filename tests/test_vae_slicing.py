"""Temporal chunks, spatial tiles, the memory planner, progress and cancellation."""

import pytest
import torch

from flashvideo_core.errors import Cancelled, InputError
from support.progress import CallbackProgress
from flashvideo_core.tiny import TINY_VAE_CONFIG
from flashvideo_core.vae.config import OFFICIAL_VAE_CONFIG
from flashvideo_core.vae.slicing import (
    SlicingOptions,
    Tile,
    axis_tiles,
    axis_weights,
    causal_time_chunks,
    decode_sliced,
    encode_sliced,
    plan_slicing,
    reference_axis_tiles,
)
from support.vae_helpers import without_groupnorm_statistics

#: Tiled vs whole-clip decode with real GroupNorm (random tiny weights, overlap 8 latents):
#: statistics differ per tile, nothing else does. Documented in the README.
TILED_MEAN_REL_TOL = 0.03
TILED_MAX_REL_TOL = 0.25


def test_reference_boundaries_are_the_official_ones():
    assert causal_time_chunks(13, 2) == [(0, 3), (3, 5), (5, 7), (7, 9), (9, 11), (11, 13)]
    assert causal_time_chunks(49, 16) == [(0, 17), (17, 33), (33, 49)]
    plan = plan_slicing(OFFICIAL_VAE_CONFIG, "decode", (1, 16, 13, 32, 60), torch.bfloat16, SlicingOptions())
    assert plan.time_chunks == causal_time_chunks(13, 2)
    plan = plan_slicing(OFFICIAL_VAE_CONFIG, "encode", (1, 3, 49, 1072, 1920), torch.bfloat16, SlicingOptions())
    assert [e - s for s, e in plan.time_chunks] == [17, 16, 16]


def test_chunks_keep_frame_pairs_aligned():
    for frames in range(1, 40):
        for chunk in (2, 4, 6):
            chunks = causal_time_chunks(frames, chunk)
            assert chunks[0][0] == 0 and chunks[-1][1] == frames
            assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
            later = [e - s for s, e in chunks[1:]]
            assert all(n % 2 == 0 for n in later), (frames, chunk, chunks)
            assert (chunks[0][1] % 2 == 1) == (frames % 2 == 1) or len(chunks) == 1


def test_reference_decode_calls_the_vae_on_the_official_chunks(tiny_vae, monkeypatch, rng):
    seen = []
    original = tiny_vae.decode

    def spy(z, cache=None):
        seen.append(z.shape[2])
        return original(z, cache)

    monkeypatch.setattr(tiny_vae, "decode", spy)
    out = decode_sliced(tiny_vae, torch.randn(1, 16, 13, 1, 1, generator=rng), SlicingOptions("reference"))
    assert seen == [3, 2, 2, 2, 2, 2]
    assert out.shape[2] == 49


def test_temporal_chunks_are_exact_without_groupnorm_statistics(tiny_vae, rng):
    """The causal cache makes every convolution exact across chunk edges."""
    vae = without_groupnorm_statistics(tiny_vae)
    z = torch.randn(1, 16, 7, 2, 3, generator=rng)
    whole = decode_sliced(vae, z, SlicingOptions("whole"))
    for chunk in (2, 4):
        chunked = decode_sliced(vae, z, SlicingOptions("manual", chunk_latents=chunk))
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    video = torch.rand(1, 3, 17, 16, 16, generator=rng) * 2 - 1
    whole = encode_sliced(vae, video, SlicingOptions("whole"))
    chunked = encode_sliced(vae, video, SlicingOptions("manual", chunk_latents=2))
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("latents", [1, 2, 3, 4, 5, 6, 13])
def test_a_clip_of_any_latent_count_decodes_to_one_frame_then_four_per_latent(tiny_vae, rng, latents):
    """The first latent frame is one frame and every later one four, whatever the count's parity and the chunks
    (the reference's parity rule gave an even count T 4T frames, every frame after the first shifted by three),
    so 4k+1 frames come back as 4k+1; chunked still equals whole (GroupNorm statistics aside)."""
    vae = without_groupnorm_statistics(tiny_vae)
    z = torch.randn(1, 16, latents, 2, 3, generator=rng)
    whole = decode_sliced(vae, z, SlicingOptions("whole"))
    assert whole.shape[2] == 1 + 4 * (latents - 1)
    for options in (SlicingOptions(), SlicingOptions("manual", chunk_latents=2), SlicingOptions("manual", chunk_latents=4)):
        torch.testing.assert_close(decode_sliced(vae, z, options), whole, atol=1e-5, rtol=1e-5)
    frames = 1 + 4 * (latents - 1)
    video = torch.rand(1, 3, frames, 16, 16, generator=rng) * 2 - 1
    moments = encode_sliced(tiny_vae, video, SlicingOptions())
    assert decode_sliced(tiny_vae, moments[:, :16], SlicingOptions()).shape[2] == frames


def test_tiles_are_exact_without_groupnorm_statistics(tiny_vae, rng):
    """With enough overlap the blended tiles reproduce the whole picture exactly."""
    vae = without_groupnorm_statistics(tiny_vae)
    z = torch.randn(1, 16, 1, 20, 30, generator=rng)
    whole = decode_sliced(vae, z, SlicingOptions("whole"))
    tiled = decode_sliced(vae, z, SlicingOptions("manual", tile_latents=10, tile_overlap=10))
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=1e-4)
    video = torch.rand(1, 3, 1, 160, 160, generator=rng) * 2 - 1
    whole = encode_sliced(vae, video, SlicingOptions("whole"))
    tiled = encode_sliced(vae, video, SlicingOptions("manual", tile_latents=10, tile_overlap=10))
    torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=1e-4)


def test_tiled_decode_with_groupnorm_is_close_and_seam_free(tiny_vae, rng):
    z = torch.randn(1, 16, 3, 8, 24, generator=rng)
    whole = decode_sliced(tiny_vae, z, SlicingOptions("whole"))
    options = dict(mode="manual", tile_latents=12, tile_overlap=8)
    blended = decode_sliced(tiny_vae, z, SlicingOptions(**options))
    hard = decode_sliced(tiny_vae, z, SlicingOptions(**options, hard_seams=True))
    assert blended.shape == whole.shape == (1, 3, 9, 64, 192)
    err = (blended - whole).abs()
    assert err.mean() < TILED_MEAN_REL_TOL * whole.std()
    assert err.max() < TILED_MAX_REL_TOL * whole.std()

    def step_at_boundary(out):  # jump of the error across the nominal boundary (pixel 96)
        e = out - whole
        return (e[..., 96] - e[..., 95]).abs().mean()

    assert step_at_boundary(blended) < 0.5 * step_at_boundary(hard)


def test_blend_weights_sum_to_one():
    length = 37
    for count in (2, 3, 5):
        tiles = axis_tiles(length, count, overlap=4)
        total = torch.zeros(length * 8)
        for t in tiles:
            total[t.read_start * 8 : t.read_end * 8] += axis_weights(t, length, 4, 8)
        torch.testing.assert_close(total, torch.ones_like(total))


def test_odd_sizes_decode_to_exact_size(tiny_vae, rng):
    z = torch.randn(1, 16, 5, 5, 7, generator=rng)
    out = decode_sliced(tiny_vae, z, SlicingOptions("manual", chunk_latents=2, tile_latents=4, tile_overlap=2))
    assert out.shape == (1, 3, 17, 40, 56)


def test_planner_respects_the_budget_and_tiles_when_needed():
    cfg, shape = OFFICIAL_VAE_CONFIG, (1, 16, 13, 134, 240)
    roomy = plan_slicing(cfg, "decode", shape, torch.bfloat16, SlicingOptions("auto"), budget_bytes=1 << 50)
    assert roomy.time_chunks == [(0, 13)] and len(roomy.tiles_w) == 1
    plan = plan_slicing(cfg, "decode", shape, torch.bfloat16, SlicingOptions(), budget_bytes=22 * 2**30)
    assert plan.estimated_bytes <= 22 * 2**30 and not plan.notes
    small = plan_slicing(cfg, "decode", shape, torch.bfloat16, SlicingOptions(memory_budget_mib=8192))
    assert small.estimated_bytes <= 8192 * 2**20 and not small.notes
    assert len(small.tiles_h) * len(small.tiles_w) > len(plan.tiles_h) * len(plan.tiles_w)
    assert "8192 MiB" in small.describe()
    hopeless = plan_slicing(cfg, "decode", shape, torch.bfloat16, SlicingOptions(memory_budget_mib=64))
    assert "no plan fits" in hopeless.describe()
    two_k = plan_slicing(cfg, "decode", (1, 16, 13, 180, 320), torch.bfloat16, SlicingOptions(), budget_bytes=22 * 2**30)
    assert two_k.estimated_bytes <= 22 * 2**30


def test_progress_reports_every_unit_and_cancel_stops(tiny_vae, rng):
    z = torch.randn(1, 16, 5, 4, 8, generator=rng)
    events = []
    options = SlicingOptions("manual", chunk_latents=2, tile_latents=4, tile_overlap=2)
    decode_sliced(tiny_vae, z, options, progress=CallbackProgress(on_progress=lambda d, t: events.append((d, t))))
    assert events[0] == (0, 4) and events[-1] == (4, 4) and len(events) == 5  # 2 chunks x 2 tiles
    calls = []
    cancel = CallbackProgress(should_cancel=lambda: len(calls) > 0, on_progress=lambda d, t: calls.append(d) if d else None)
    with pytest.raises(Cancelled):
        decode_sliced(tiny_vae, z, options, progress=cancel)
    assert calls == [1]


def test_bad_inputs_raise_clear_errors(tiny_vae):
    z = torch.zeros(1, 16, 3, 4, 4)
    z[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN.*bf16"):
        decode_sliced(tiny_vae, z)
    with pytest.raises(InputError, match="video latent"):
        decode_sliced(tiny_vae, torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match="multiples of 8"):
        encode_sliced(tiny_vae, torch.zeros(1, 3, 5, 30, 32))
    with pytest.raises(InputError, match="even"):
        decode_sliced(tiny_vae, torch.zeros(1, 16, 5, 4, 4), SlicingOptions("manual", chunk_latents=3))
    with pytest.raises(InputError, match="slicing mode"):
        SlicingOptions("fast")
    with pytest.raises(InputError, match="stage"):
        SlicingOptions(stage=3)


# ----------------------------------------------------------------------------- stage-II reference tiles (docs/VAE.md)

#: The smallest handy stage-II width: W // 2 = 18 >= 16, so both official tiles get the full
#: 16-latent overlap (A reads [0, 34), B reads [2, 36)) and the two tiles read different columns.
STAGE2_SHAPE = (1, 16, 5, 2, 36)  # 5 latent frames: time chunks [0:3], [3:5] in every tile
OFFICIAL_OVERLAP = 16


def _official_stage2_decode(vae, z):
    """Written from docs/VAE.md#reference-slicing, not from the pack's planner: two width tiles with nominal boundary
    W // 2, each read 16 latents past the boundary where that many exist, each decoded alone with
    the official time chunks, the 128 px margins cropped, the rest pasted side by side."""
    width = z.shape[-1]
    mid = width // 2
    a_end = mid + OFFICIAL_OVERLAP if mid + OFFICIAL_OVERLAP <= width else mid
    b_start = mid - OFFICIAL_OVERLAP if mid - OFFICIAL_OVERLAP >= 0 else mid
    # per tile: the pack's whole-width reference decode (time chunks [0:3] then pairs, checked against diffusers)
    left = decode_sliced(vae, z[..., :a_end].contiguous(), SlicingOptions("reference", stage=1))
    right = decode_sliced(vae, z[..., b_start:].contiguous(), SlicingOptions("reference", stage=1))
    return torch.cat([left[..., : mid * 8], right[..., (mid - b_start) * 8 :]], dim=-1)


@pytest.fixture(scope="module")
def stage2_decodes(tiny_vae):
    z = torch.randn(*STAGE2_SHAPE, generator=torch.Generator().manual_seed(21))
    return {
        "z": z,
        "hard": decode_sliced(tiny_vae, z, SlicingOptions("reference", stage=2, hard_seams=True)),
        "blended": decode_sliced(tiny_vae, z, SlicingOptions("reference", stage=2)),
        "stage1": decode_sliced(tiny_vae, z, SlicingOptions("reference")),
    }


def test_stage2_reference_plan_is_the_official_1x2_split():
    # docs/VAE.md#reference-slicing, 1080p: tile A reads [0, 136) and keeps [0, 120); tile B reads [104, 240) and keeps [120, 240)
    shape = (1, 16, 13, 134, 240)
    spec_tiles = [Tile(0, 136, 0, 120), Tile(104, 240, 120, 240)]
    assert axis_tiles(240, 2, 16) == reference_axis_tiles(240, 2, 16) == spec_tiles
    for budget in (None, 1 << 50):  # unbounded, or roomy: never fewer tiles than the official ones
        plan = plan_slicing(OFFICIAL_VAE_CONFIG, "decode", shape, torch.bfloat16, SlicingOptions(stage=2), budget)
        assert plan.tiles_w == spec_tiles and plan.tiles_h == [Tile(0, 134, 0, 134)]  # height not split
        assert plan.time_chunks == causal_time_chunks(13, 2)
        assert plan.blend_band == 16 and not plan.notes
        assert "1x2 tile(s)" in plan.describe()
    hard = plan_slicing(OFFICIAL_VAE_CONFIG, "decode", shape, torch.bfloat16, SlicingOptions(stage=2, hard_seams=True))
    assert hard.tiles_w == spec_tiles and hard.blend_band == 0
    # the tiny test size
    tiny = plan_slicing(TINY_VAE_CONFIG, "decode", STAGE2_SHAPE, torch.float32, SlicingOptions(stage=2))
    assert tiny.tiles_w == [Tile(0, 34, 0, 18), Tile(2, 36, 18, 36)] and len(tiny.tiles_h) == 1
    assert tiny.time_chunks == [(0, 3), (3, 5)]


def test_stage2_reference_plan_adds_tiles_only_for_memory_and_keeps_the_official_rule():
    shape = (1, 16, 13, 134, 240)
    plan = plan_slicing(OFFICIAL_VAE_CONFIG, "decode", shape, torch.bfloat16, SlicingOptions(stage=2),
                        budget_bytes=22 * 2**30)
    assert plan.estimated_bytes <= 22 * 2**30
    assert len(plan.tiles_w) >= 2 and len(plan.tiles_h) * len(plan.tiles_w) > 2
    assert "instead of the official stage-II 1x2" in plan.describe()  # logged (as a warning) by the decode
    for tiles, length in ((plan.tiles_h, 134), (plan.tiles_w, 240)):
        assert tiles == reference_axis_tiles(length, len(tiles), 16)
        assert all(t.start - t.read_start == 16 for t in tiles[1:])
        assert all(t.read_end - t.end == 16 for t in tiles[:-1])
    # the official extents: floor bounds, overlap only where all of it exists (no clamping)
    assert reference_axis_tiles(35, 2, 16) == [Tile(0, 33, 0, 17), Tile(1, 35, 17, 35)]
    assert reference_axis_tiles(12, 2, 16) == [Tile(0, 6, 0, 6), Tile(6, 12, 6, 12)]
    narrow = plan_slicing(TINY_VAE_CONFIG, "decode", (1, 16, 5, 8, 12), torch.float32, SlicingOptions(stage=2))
    assert narrow.blend_band == 0 and "cut hard" in narrow.describe()  # no context to blend over


def test_stage1_decodes_and_encodes_get_no_stage2_tiles():
    for stage in (1, 2):
        enc = plan_slicing(OFFICIAL_VAE_CONFIG, "encode", (1, 3, 49, 1072, 1920), torch.bfloat16,
                           SlicingOptions(stage=stage))
        assert len(enc.tiles_h) == len(enc.tiles_w) == 1 and [e - s for s, e in enc.time_chunks] == [17, 16, 16]
    stage1 = plan_slicing(OFFICIAL_VAE_CONFIG, "decode", (1, 16, 13, 32, 60), torch.bfloat16, SlicingOptions(stage=1))
    assert len(stage1.tiles_h) == len(stage1.tiles_w) == 1
    for mode in ("auto", "whole"):  # only reference mode follows the official split
        plan = plan_slicing(OFFICIAL_VAE_CONFIG, "decode", (1, 16, 13, 134, 240), torch.bfloat16,
                            SlicingOptions(mode, stage=2), budget_bytes=1 << 50)
        assert len(plan.tiles_h) == len(plan.tiles_w) == 1


def test_stage2_reference_hard_seams_equal_the_official_crop_and_cut(tiny_vae, stage2_decodes):
    official = _official_stage2_decode(tiny_vae, stage2_decodes["z"])
    assert stage2_decodes["hard"].shape == official.shape == (1, 3, 17, 16, 288)
    torch.testing.assert_close(stage2_decodes["hard"], official, atol=1e-5, rtol=0)
    # per-tile GroupNorm statistics do change the picture: the tiles are not a no-op
    assert (stage2_decodes["hard"] - stage2_decodes["stage1"]).abs().max() > 1e-3


def test_stage2_blending_changes_only_the_band_around_the_seam(stage2_decodes):
    hard, blended = stage2_decodes["hard"], stage2_decodes["blended"]
    seam, half_band = 18 * 8, OFFICIAL_OVERLAP // 2 * 8  # blended over 16 latents centred on the boundary
    outside = torch.ones(hard.shape[-1], dtype=torch.bool)
    outside[seam - half_band : seam + half_band] = False
    assert torch.equal(blended[..., outside], hard[..., outside])
    band = blended[..., ~outside] - hard[..., ~outside]
    assert band.abs().max() > 1e-4  # the blend does something there

    def step_at_seam(out):  # jump across the boundary relative to the untiled decode
        e = out - stage2_decodes["stage1"]
        return (e[..., seam] - e[..., seam - 1]).abs().mean()

    assert step_at_seam(blended) < step_at_seam(hard)


def test_stage1_reference_decode_is_untiled(tiny_vae, stage2_decodes):
    untiled = decode_sliced(tiny_vae, stage2_decodes["z"], SlicingOptions("manual", chunk_latents=2))
    assert torch.equal(stage2_decodes["stage1"], untiled)
