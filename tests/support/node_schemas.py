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
    "FlashVideoModelLoader": ["model_name", "weight_dtype", "attention", "memory"],
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
    "FlashVideoStage1Sigmas": ["steps"],
    "FlashVideoStage1Noise": ["seed", CONTROL],
    "FlashVideoDynamicCFGGuider": ["cfg"],
    "FlashVideoStage1SamplerSelect": [],
    "FlashVideoStage2Sigmas": ["steps"],
    "FlashVideoStage2Noise": [],
    "FlashVideoStage2Guider": ["cfg"],
    "FlashVideoStage2SamplerSelect": [],
    "FlashVideoT5Loader": ["clip_name", "device"],
    "FlashVideoEnhanceVideo": [
        "resolution", "width", "height", "noise_step", "steps", "cfg", "shift", "seed", CONTROL, "overlap",
        "colour_fix", "attention", "slicing", "memory_budget_mb", "chunk_latents", "tile_size", "tile_overlap",
    ],
}
FROZEN_SOCKETS = {  # link inputs (name, type), in order
    "FlashVideoVAELoader": [],
    "FlashVideoVAEEncode": [("vae", "FLASHVIDEO_VAE"), ("images", "IMAGE")],
    "FlashVideoVAEDecode": [("vae", "FLASHVIDEO_VAE"), ("samples", "LATENT")],
    "FlashVideoModelLoader": [],
    "FlashVideoStage1Sampler": [("model", "MODEL"), ("positive", "CONDITIONING")],
    "FlashVideoLoadPromptEmbedding": [],
    "FlashVideoTextEncode": [("clip", "CLIP")],
    "FlashVideoSavePromptEmbedding": [("conditioning", "CONDITIONING")],
    "FlashVideoStage2Upscale": [("vae", "FLASHVIDEO_VAE"), ("images", "IMAGE"), ("samples", "LATENT")],
    "FlashVideoLatentDegrade": [("samples", "LATENT")],
    "FlashVideoStage2Refiner": [("model", "MODEL"), ("positive", "CONDITIONING"), ("samples", "LATENT")],
    "FlashVideoStage1Sigmas": [("model", "MODEL")],
    "FlashVideoStage1Noise": [],
    "FlashVideoDynamicCFGGuider": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
    "FlashVideoStage1SamplerSelect": [],
    "FlashVideoStage2Sigmas": [("model", "MODEL")],
    "FlashVideoStage2Noise": [("samples", "LATENT")],
    "FlashVideoStage2Guider": [("model", "MODEL"), ("positive", "CONDITIONING"), ("samples", "LATENT"),
                               ("negative", "CONDITIONING")],
    "FlashVideoStage2SamplerSelect": [],
    "FlashVideoT5Loader": [],
    "FlashVideoEnhanceVideo": [("model", "MODEL"), ("vae", "FLASHVIDEO_VAE"), ("positive", "CONDITIONING"),
                               ("video", "VIDEO")],
}
FROZEN_OUTPUTS = {
    "FlashVideoVAELoader": ["FLASHVIDEO_VAE"],
    "FlashVideoVAEEncode": ["LATENT"],
    "FlashVideoVAEDecode": ["IMAGE"],
    "FlashVideoModelLoader": ["MODEL"],
    "FlashVideoStage1Sampler": ["LATENT"],
    "FlashVideoLoadPromptEmbedding": ["CONDITIONING"],
    "FlashVideoStage2Upscale": ["LATENT"],
    "FlashVideoLatentDegrade": ["LATENT"],
    "FlashVideoStage2Refiner": ["LATENT"],
    "FlashVideoTextEncode": ["CONDITIONING"],
    "FlashVideoSavePromptEmbedding": [],
    "FlashVideoStage1Sigmas": ["SIGMAS"],
    "FlashVideoStage1Noise": ["NOISE"],
    "FlashVideoDynamicCFGGuider": ["GUIDER"],
    "FlashVideoStage1SamplerSelect": ["SAMPLER"],
    "FlashVideoStage2Sigmas": ["SIGMAS"],
    "FlashVideoStage2Noise": ["NOISE"],
    "FlashVideoStage2Guider": ["GUIDER"],
    "FlashVideoStage2SamplerSelect": ["SAMPLER"],
    "FlashVideoT5Loader": ["CLIP"],
    "FlashVideoEnhanceVideo": ["VIDEO"],
}

#: The host the example workflows are written for: its core-node forms run on every tested host
#: (docs/HOST.md#templates), the newer forms do not run on 0.3.64.
TEMPLATE_HOST = "0.3.64"

#: Core ComfyUI nodes used by the example workflows, as each tested host defines them. ``widgets``: the host's
#: widget order; ``sockets``: its link inputs; ``template_paths``: where each value a template stores (in the
#: 0.3.64 order) lands on that host (dotted = inside a dynamic combo); ``added``: widgets_values the host's frontend
#: appends when it loads a template (its defaults for widgets the template does not set).
CORE_NODES = {
    "0.3.64": {
        "CLIPLoader": {"widgets": ["clip_name", "type", "device"], "sockets": []},
        "CreateVideo": {"widgets": ["fps"], "sockets": [("images", "IMAGE"), ("audio", "AUDIO")]},
        "SaveVideo": {"widgets": ["filename_prefix", "format", "codec"], "sockets": [("video", "VIDEO")]},
        # the frontend appends its upload button's value
        "LoadVideo": {"widgets": ["file"], "sockets": [], "added": ["image"]},
        "SamplerCustomAdvanced": {"widgets": [], "sockets": [("noise", "NOISE"), ("guider", "GUIDER"),
                                                            ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                                                            ("latent_image", "LATENT")]},
    },
    "0.33.0": {
        "CLIPLoader": {"widgets": ["clip_name", "type", "device"], "sockets": []},
        # bit_depth (8 or 10, default 8) is new and optional: 0.3.64 ignores it in a prompt
        "CreateVideo": {"widgets": ["fps", "bit_depth"], "sockets": [("images", "IMAGE"), ("audio", "AUDIO")],
                        "added": [8]},
        # format became a dynamic combo holding codec (and codec an 'encoding' choice); a hidden top-level codec
        # keeps 0.3.64-form prompts valid. Its frontend appends encoding and the hidden codec ("auto" both).
        "SaveVideo": {"widgets": ["filename_prefix", "format"], "sockets": [("video", "VIDEO")],
                      "template_paths": ["filename_prefix", "format", "format.codec"], "added": ["auto", "auto"]},
        "LoadVideo": {"widgets": ["file"], "sockets": [], "added": ["image"]},
        "SamplerCustomAdvanced": {"widgets": [], "sockets": [("noise", "NOISE"), ("guider", "GUIDER"),
                                                            ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                                                            ("latent_image", "LATENT")]},
    },
}

#: core widgets whose options are the user's files (models, inputs): not checked against a host's listing
CORE_FILE_WIDGETS = {"clip_name", "file"}


def core_nodes_for(version: str) -> dict:
    """The core-node forms of the newest known host not newer than ``version`` (unknown newer hosts are
    compared with the newest form we know, and a change shows up as a failing check)."""
    key = lambda v: tuple(int(p) for p in v.split(".") if p.isdigit())  # noqa: E731
    known = sorted(CORE_NODES, key=key)
    older = [v for v in known if key(v) <= key(version)]
    return CORE_NODES[(older or known)[-1]]


#: what the UI -> API conversion of the shipped templates assumes (the template host's forms)
CORE_WIDGETS = {name: node["widgets"] for name, node in CORE_NODES[TEMPLATE_HOST].items()}
CORE_SOCKETS = {name: node["sockets"] for name, node in CORE_NODES[TEMPLATE_HOST].items()}
