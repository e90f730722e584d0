"""FlashVideo inference in pure PyTorch (no ComfyUI imports).

Subpackages: ``vae`` (the CogVideoX 3D causal VAE and its memory-bounded slicing),
``checkpoints`` (safe reading, layouts, strict loading, conversion), ``io`` (video
files). ``python -m flashvideo_core --help`` lists the command-line tools.
"""

__version__ = "0.1.0"
