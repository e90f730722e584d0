"""ComfyUI nodes of the FlashVideo pack (V3 schema). Node ids are frozen: never rename one."""

from comfy_api.latest import ComfyExtension, io

from .enhance_node import FlashVideoEnhanceVideo
from .loader_nodes import FlashVideoModelLoader, FlashVideoVAELoader
from .pipeline_nodes import FlashVideoLatentDegrade, FlashVideoStage1Sampler, FlashVideoStage2Refiner, FlashVideoStage2Upscale
from .sampling_nodes import SAMPLING_NODES
from .t5_loader import FlashVideoT5Loader
from .text_nodes import (
    FlashVideoLoadPromptEmbedding,
    FlashVideoSavePromptEmbedding,
    FlashVideoTextEncode,
    register_embeddings_folder,
)
from .vae_nodes import FlashVideoVAEDecode, FlashVideoVAEEncode

register_embeddings_folder()

NODES = [
    FlashVideoVAELoader,
    FlashVideoVAEEncode,
    FlashVideoVAEDecode,
    FlashVideoT5Loader,
    FlashVideoTextEncode,
    FlashVideoSavePromptEmbedding,
    FlashVideoLoadPromptEmbedding,
    FlashVideoModelLoader,
    FlashVideoStage1Sampler,
    FlashVideoStage2Upscale,
    FlashVideoLatentDegrade,
    FlashVideoStage2Refiner,
    *SAMPLING_NODES,
    FlashVideoEnhanceVideo,
]


class FlashVideoExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
