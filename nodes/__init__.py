"""ComfyUI nodes of the FlashVideo pack (V3 schema). Node ids are frozen: never rename one."""

from comfy_api.latest import ComfyExtension, io

from .vae_nodes import FlashVideoVAEDecode, FlashVideoVAEEncode, FlashVideoVAELoader

NODES = [FlashVideoVAELoader, FlashVideoVAEEncode, FlashVideoVAEDecode]


class FlashVideoExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
