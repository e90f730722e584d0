"""Named numbers shared by both stages (SPEC §2.1, §1.3.7, §1.7).

The two latent scale factors are easy to confuse and change every picture, so they
live here once, with the stage they belong to, and are never inferred.
"""

#: CogVideoX-5B convention, used by FlashVideo stage I (latent = z * 0.7).
LATENT_SCALE_STAGE1 = 0.7
#: CogVideoX-2B convention, used by FlashVideo stage II (latent = z * 1.15258426).
LATENT_SCALE_STAGE2 = 1.15258426

LATENT_SCALES = {"stage1": LATENT_SCALE_STAGE1, "stage2": LATENT_SCALE_STAGE2}

#: VAE compression: 8x in height and width, 4x in time (T_lat = 1 + (T - 1) / 4).
VAE_SPATIAL_COMPRESSION = 8
VAE_TEMPORAL_COMPRESSION = 4


def latent_scale(stage: str) -> float:
    """Return the latent scale factor of ``stage`` ("stage1" or "stage2")."""
    try:
        return LATENT_SCALES[stage]
    except KeyError:
        raise ValueError(f"unknown stage {stage!r}: expected one of {sorted(LATENT_SCALES)}") from None
