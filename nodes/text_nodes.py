"""Prompt conditioning: T5-XXL (FlashVideo T5 Loader or core Load CLIP) into 226 tokens, and prompt-embedding files.

Both FlashVideo stages read exactly 226 T5 tokens without an attention mask. Core
ComfyUI pads T5 to a type-dependent length and never truncates, so the text node
clones the CLIP, pads to 226 and truncates keeping the end-of-sequence token. It
works the same whether the T5 file came from FlashVideo T5 Loader or core Load CLIP (type sd3, cogvideox or
another).
"""

from __future__ import annotations

import os

from comfy_api.latest import io

import folder_paths

from ..flashvideo_core.errors import CheckpointError
from ..flashvideo_core.text_embeddings import TEXT_TOKENS, load_prompt_embedding, save_prompt_embedding
from .input_checks import conditioning_contexts, file_stem, model_file, refuse, text_widget

CATEGORY = "FlashVideo"
EMBEDDINGS_FOLDER = "flashvideo_embeddings"
T5_KEYS = ("t5xxl",)
ENCODE, SAVE, LOAD = "FlashVideo Text Encode", "FlashVideo Save Prompt Embedding", "FlashVideo Load Prompt Embedding"
T5_FIX = "load t5xxl_fp16.safetensors with FlashVideo T5 Loader (or core Load CLIP, type sd3) and connect it"


def register_embeddings_folder() -> None:
    """models/flashvideo_embeddings holds saved prompt embeddings (.safetensors)."""
    if EMBEDDINGS_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[EMBEDDINGS_FOLDER] = (
            [os.path.join(folder_paths.models_dir, EMBEDDINGS_FOLDER)], {".safetensors"})


def truncate_t5_tokens(tokens: dict, length: int = TEXT_TOKENS) -> dict:
    """Cut each T5 token batch to ``length``, keeping its final end-of-sequence token."""
    out = dict(tokens)
    for key in T5_KEYS:
        if key in out:
            out[key] = [batch if len(batch) <= length else list(batch[: length - 1]) + [batch[-1]] for batch in out[key]]
    return out


class FlashVideoTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoTextEncode",
            display_name="FlashVideo Text Encode",
            category=CATEGORY,
            description="Encodes a prompt with T5-v1.1-XXL (load t5xxl_*.safetensors with FlashVideo T5 Loader, or "
            "core Load CLIP with type sd3) "
            "into exactly 226 tokens, as both FlashVideo stages expect.",
            inputs=[
                io.Clip.Input("clip", tooltip="A T5-v1.1-XXL text encoder from FlashVideo T5 Loader (or core Load CLIP, "
                              "type sd3 or cogvideox)."),
                io.String.Input(
                    "prompt", multiline=True,
                    tooltip="Both stages were trained on long, detailed prompts (several sentences describing subject, "
                    "motion, camera and lighting); short prompts give weaker results. Text beyond 226 tokens is cut. "
                    "Taken literally, as the reference does: ComfyUI's (word:1.2) weighting is not applied.",
                ),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, clip, prompt: str) -> io.NodeOutput:
        prompt = text_widget(prompt, ENCODE, "prompt", fix="shorten it: T5 reads only its first 226 tokens (about "
                             "1,000 characters)")
        if not all(callable(getattr(clip, method, None)) for method in ("clone", "tokenize", "encode_from_tokens_scheduled")):
            raise refuse(ENCODE, "clip", f"got {type(clip).__name__}, not a CLIP text encoder", T5_FIX)
        clip = clip.clone()
        for key in T5_KEYS:
            clip.set_tokenizer_option(f"{key}_min_length", TEXT_TOKENS)
        # disable_weights: the reference feeds the raw text, so "(word:1.3)" stays literal text
        tokens = truncate_t5_tokens(clip.tokenize(prompt, disable_weights=True))
        if not any(key in tokens for key in T5_KEYS):
            raise refuse(ENCODE, "clip", "the connected CLIP has no T5-XXL tokenizer (a CLIP-L/G or other encoder)",
                         T5_FIX)
        conditioning = clip.encode_from_tokens_scheduled(tokens)
        conditioning_contexts(conditioning, ENCODE, "clip")  # what this CLIP gave: T5 states, finite
        return io.NodeOutput(conditioning)


class FlashVideoSavePromptEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoSavePromptEmbedding",
            display_name="FlashVideo Save Prompt Embedding",
            category=CATEGORY,
            description="Saves a prompt's T5 embedding to models/flashvideo_embeddings, so later runs (and batch "
            "queues) can skip loading the 9.5 GB T5-XXL.",
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="From FlashVideo Text Encode."),
                io.String.Input("name", default="flashvideo_prompt", tooltip="File name (without extension)."),
                io.String.Input("prompt", default="", optional=True, tooltip="Stored in the file's metadata for reference."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, conditioning, name: str, prompt: str = "") -> io.NodeOutput:
        context = conditioning_contexts(conditioning, SAVE, "conditioning")[0]
        stem = file_stem(name, SAVE, "name")
        prompt = text_widget(prompt, SAVE, "prompt")
        folder = folder_paths.folder_names_and_paths[EMBEDDINGS_FOLDER][0][0]
        save_prompt_embedding(os.path.join(folder, f"{stem}.safetensors"), context, prompt)
        return io.NodeOutput()


class FlashVideoLoadPromptEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoLoadPromptEmbedding",
            display_name="FlashVideo Load Prompt Embedding",
            category=CATEGORY,
            description="Loads a saved prompt embedding as CONDITIONING (no T5 needed).",
            inputs=[io.Combo.Input("embedding", options=folder_paths.get_filename_list(EMBEDDINGS_FOLDER),
                                   tooltip="A file in models/flashvideo_embeddings.")],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, embedding: str) -> io.NodeOutput:
        path = model_file(folder_paths, EMBEDDINGS_FOLDER, embedding, LOAD, "embedding")
        try:
            context, _ = load_prompt_embedding(path)
        except CheckpointError as e:
            raise refuse(LOAD, "embedding", str(e), "pick another file, or save this prompt again with FlashVideo "
                         "Save Prompt Embedding", CheckpointError) from None
        return io.NodeOutput([[context, {}]])
