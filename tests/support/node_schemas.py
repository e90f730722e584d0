"""What saved workflows depend on: each node's widget order (widgets_values are positional), its
link inputs and outputs. The pack's lists are frozen (append only); the core nodes' lists are what
the example workflows assume of ComfyUI. tests/test_comfyui_real.py checks both against a real
server's /object_info; tests/test_example_workflows.py converts UI workflows with them.
"""

CONTROL = "<control_after_generate>"  # the extra widgets_values slot the frontend adds after a seed

# Saved workflows store widget values by position: this order is frozen. Append new inputs (optional) only.
FROZEN_WIDGETS = {
    "FlashVideoVAELoader": ["vae_name", "dtype"],
    "FlashVideoVAEEncode": [
        "latent_scale", "posterior", "seed", CONTROL, "frame_rule",
        "slicing", "memory_budget_mb", "chunk_latents", "tile_size", "tile_overlap",
    ],
    "FlashVideoVAEDecode": [
        "latent_scale", "slicing", "memory_budget_mb", "chunk_latents", "tile_size", "tile_overlap",
    ],
    "FlashVideoModelLoader": ["model_name", "weight_dtype", "attention"],
    "FlashVideoStage1Sampler": ["width", "height", "frames", "steps", "cfg", "seed", CONTROL],
    "FlashVideoLoadPromptEmbedding": ["embedding"],
    "FlashVideoStage2Upscale": [
        "resolution", "width", "height", "seed", CONTROL, "frame_rule",
        "slicing", "memory_budget_mb", "chunk_latents", "tile_size", "tile_overlap",
    ],
    "FlashVideoLatentDegrade": ["noise_step", "seed", CONTROL],
    "FlashVideoStage2Refiner": ["steps", "cfg", "shift", "attention"],
    "FlashVideoTextEncode": ["prompt"],
    "FlashVideoSavePromptEmbedding": ["name", "prompt"],
}
FROZEN_SOCKETS = {  # link inputs (name, type), in order
    "FlashVideoVAELoader": [],
    "FlashVideoVAEEncode": [("vae", "FLASHVIDEO_VAE"), ("images", "IMAGE")],
    "FlashVideoVAEDecode": [("vae", "FLASHVIDEO_VAE"), ("samples", "LATENT")],
    "FlashVideoModelLoader": [],
    "FlashVideoStage1Sampler": [("model", "FLASHVIDEO_MODEL"), ("positive", "CONDITIONING")],
    "FlashVideoLoadPromptEmbedding": [],
    "FlashVideoTextEncode": [("clip", "CLIP")],
    "FlashVideoSavePromptEmbedding": [("conditioning", "CONDITIONING")],
    "FlashVideoStage2Upscale": [("vae", "FLASHVIDEO_VAE"), ("images", "IMAGE"), ("samples", "LATENT")],
    "FlashVideoLatentDegrade": [("samples", "LATENT")],
    "FlashVideoStage2Refiner": [("model", "FLASHVIDEO_MODEL"), ("positive", "CONDITIONING"), ("samples", "LATENT")],
}
FROZEN_OUTPUTS = {
    "FlashVideoVAELoader": ["FLASHVIDEO_VAE"],
    "FlashVideoVAEEncode": ["LATENT"],
    "FlashVideoVAEDecode": ["IMAGE"],
    "FlashVideoModelLoader": ["FLASHVIDEO_MODEL"],
    "FlashVideoStage1Sampler": ["LATENT"],
    "FlashVideoLoadPromptEmbedding": ["CONDITIONING"],
    "FlashVideoStage2Upscale": ["LATENT"],
    "FlashVideoLatentDegrade": ["LATENT"],
    "FlashVideoStage2Refiner": ["LATENT"],
    "FlashVideoTextEncode": ["CONDITIONING"],
    "FlashVideoSavePromptEmbedding": [],
}

#: core ComfyUI nodes used by the example workflows (0.3.64)
CORE_WIDGETS = {
    "CLIPLoader": ["clip_name", "type", "device"],
    "CreateVideo": ["fps"],
    "SaveVideo": ["filename_prefix", "format", "codec"],
    "LoadVideo": ["file"],
    "GetVideoComponents": [],
}
CORE_SOCKETS = {
    "CLIPLoader": [],
    "CreateVideo": [("images", "IMAGE"), ("audio", "AUDIO")],
    "SaveVideo": [("video", "VIDEO")],
    "LoadVideo": [],
    "GetVideoComponents": [("video", "VIDEO")],
}
