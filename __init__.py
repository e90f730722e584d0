"""FlashVideo for ComfyUI: the pack's entry point (V3 ``comfy_entrypoint``).

Nothing heavy happens at import: the node classes (and torch work) load only when
ComfyUI asks for the node list. The model code lives in ``flashvideo_core`` (pure
PyTorch); ``nodes`` are thin ComfyUI nodes over it.
"""

WEB_DIRECTORY = "./web/js"


async def comfy_entrypoint():
    from .nodes import FlashVideoExtension

    return FlashVideoExtension()
