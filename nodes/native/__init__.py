"""FlashVideo as native ComfyUI models: the DiT built with the host's operations and attention inside a
``comfy.model_base.BaseModel``, model configs with FlashVideo's schedules and latent formats, the loader that
returns a core MODEL, and the sampling parts (SIGMAS, NOISE, GUIDER, SAMPLER) that reproduce the reference
through ``comfy.samplers``. Works on ComfyUI 0.3.64 and 0.33 (docs/HOST.md)."""
