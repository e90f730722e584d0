"""Named numbers shared by both stages (docs/SAMPLING.md#constants).

The two latent scale factors are easy to confuse and change every picture, so they
live here once, with the stage they belong to, and are never inferred.
"""

#: CogVideoX-5B convention, used by FlashVideo stage I (latent = z * 0.7).
LATENT_SCALE_STAGE1 = 0.7
#: CogVideoX-2B convention, used by FlashVideo stage II (latent = z * 1.15258426).
LATENT_SCALE_STAGE2 = 1.15258426
