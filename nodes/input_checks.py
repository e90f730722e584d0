"""Checks of node inputs as they arrive from any client, not only the frontend.

The HTTP API skips the frontend's min/max/step, ComfyUI 0.3.64 does not check V3 combo values, NaN passes
the server's float range check, and IMAGE/LATENT sockets accept any tensor. Every refusal names the node,
the input, the cause and the fix (a ComfyUI user only sees the message). Pure: no ComfyUI import.
"""

from __future__ import annotations

import logging
import torch

from ..flashvideo_core.errors import InputError
from ..flashvideo_core.settings import SEED, Stage2Settings, setting
from ..flashvideo_core.text_embeddings import TEXT_TOKENS

log = logging.getLogger("flashvideo")

#: float IMAGE values this far outside 0..1 are clamped with a warning (resampling overshoot); further: refused
IMAGE_TOLERANCE = 0.02
LATENT_CHANNELS = 16
STAGE1_AREA, STAGE2_AREA = 256 * 480, 1072 * 1920
VIDEO_LATENT = "a video latent [batch, 16, frames, height/8, width/8]"
#: no VAE latent or T5 state comes near this magnitude; beyond it a tensor is garbage that overflows bf16 maths
MAX_MAGNITUDE = 1e4
#: text widgets: T5 reads 226 tokens (about 1,000 characters), so this only stops pasted files and broken clients
MAX_TEXT = 100_000
#: metadata riding on LATENT dicts: the stage whose latent it is, the degradation step and its seed
STAGE_KEY, NOISE_STEP_KEY, SEED_KEY = "flashvideo_stage", "flashvideo_noise_step", "flashvideo_seed"
NOISE_STEP = setting(Stage2Settings, "noise_step")


class MissingFileError(InputError, FileNotFoundError):
    """A model file named by a combo is not in its ComfyUI folder (still a FileNotFoundError for callers)."""


def refuse(node: str, name: str, cause: str, fix: str, error=InputError) -> Exception:
    return error(f"{node}, input '{name}': {cause}. Fix: {fix}")


def widget(setting, value, node: str, name: str):
    """A widget value checked against its declaration (flashvideo_core.settings): range and grid."""
    return setting.check(value, f"{node}, input '{name}'")


def combo_widget(value, node: str, name: str, options, aliases: dict = {}) -> str:
    """``value`` if it is one of ``options``, or the option an old name in ``aliases`` stands for."""
    options = list(options)
    value = aliases.get(value, value) if isinstance(value, str) else value
    if not isinstance(value, str) or value not in options:
        raise refuse(node, name, f"{value!r} is not one of its choices", f"pick one of {options}")
    return value


def text_widget(value, node: str, name: str, limit: int = MAX_TEXT, fix: str = "shorten it") -> str:
    """A STRING widget's value: text without NUL characters, at most ``limit`` characters."""
    if not isinstance(value, str):
        raise refuse(node, name, f"got {type(value).__name__}, not text", "send a string")
    if "\x00" in value:
        raise refuse(node, name, "holds a NUL character", "remove it (a broken client or a pasted binary put it there)")
    if len(value) > limit:
        raise refuse(node, name, f"is {len(value):,} characters long, over the limit of {limit:,}", fix)
    return value


def file_stem(value, node: str, name: str) -> str:
    """A name for a file the node writes into its own folder: text without folders, kept to letters, digits and
    ``-_.`` (other characters dropped, as before), never empty and short enough for any file system."""
    value = text_widget(value, node, name, 200, "use a name of at most 200 characters")
    if "/" in value or "\\" in value:
        raise refuse(node, name, f"{value[:80]!r} is a path", "give a plain file name (without folders): the node "
                     "always saves into its own models folder")
    stem = "".join(c for c in value if c.isalnum() or c in "-_.").strip(".")
    if not stem:
        raise refuse(node, name, f"{value!r} keeps no letters or digits", "give a name such as my_prompt")
    if len(stem.encode()) > 200:
        raise refuse(node, name, "is too long for a file name", "use a shorter name")
    return stem


def model_file(folder_paths, folder: str, name, node: str, input_name: str) -> str:
    """Resolve a model combo value, refusing a missing file with the folder to put it in."""
    if not isinstance(name, str) or not name:
        raise refuse(node, input_name, f"{name!r} is not a file name", f"pick a file from models/{folder}")
    try:
        return folder_paths.get_full_path_or_raise(folder, name)
    except FileNotFoundError:
        raise refuse(node, input_name, f"{name!r} is not in ComfyUI's models/{folder} folder",
                     f"put the file in models/{folder} (or a path from extra_model_paths.yaml), then refresh "
                     "the browser (R) and pick it", MissingFileError) from None


def finite_values(tensor: torch.Tensor, node: str, name: str, fix: str, limit=None) -> None:
    """Refuse NaN/Inf (and, with ``limit``, magnitudes beyond it) before any maths sees them."""
    if not torch.isfinite(tensor).all():
        raise refuse(node, name, "holds NaN/Inf values", fix)
    if limit is None or not tensor.numel():
        return
    peak = float(tensor.abs().max())
    if peak > limit:
        raise refuse(node, name, f"holds values up to {peak:.3g}, far beyond the +-{limit:g} any real one reaches",
                     fix)


def image_batch(images, node: str, name: str = "images") -> torch.Tensor:
    """A ComfyUI IMAGE [frames, H, W, 3] as float32 in 0..1.

    Integer images (uint8 0..255 from some loaders) are rescaled with a warning rather than wrapping around;
    small float overshoot (resamplers) is clamped with a warning; NaN/Inf and other ranges are refused.
    """
    expected = "an IMAGE batch [frames, height, width, 3] with values in 0..1"
    if not isinstance(images, torch.Tensor):
        raise refuse(node, name, f"got {type(images).__name__}, not an image tensor",
                     f"connect an IMAGE output ({expected})")
    if images.ndim != 4:
        raise refuse(node, name, f"has shape {tuple(images.shape)} ({images.ndim}-D)",
                     f"connect {expected}; a single frame [height, width, 3] needs its batch dimension")
    frames, height, width, channels = images.shape
    if channels != 3:
        what = {1: "grey", 4: "RGBA"}.get(channels, f"{channels}-channel")
        raise refuse(node, name, f"holds {what} images (shape {tuple(images.shape)})",
                     f"convert the frames to RGB first ({expected})")
    if frames == 0 or height == 0 or width == 0:
        raise refuse(node, name, f"is empty (shape {tuple(images.shape)})",
                     "connect a video with at least one frame (the VAE needs 4k+1: 1, 5, 9, ...)")
    if images.dtype == torch.bool or images.is_complex():
        raise refuse(node, name, f"has dtype {images.dtype}", f"connect {expected}")
    if not images.is_floating_point():
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise refuse(node, name, f"integer values {low}..{high} are not 8-bit colours",
                         f"convert to float values in 0..1 ({expected})")
        log.warning("FlashVideo %s: input '%s' is %s 0..255; converting to 0..1", node, name, images.dtype)
        return images.float() / 255
    images = images.float()
    finite_values(images, node, name, "fix the node that made these frames (an fp16 VAE decode overflows: use bf16 "
                  "or fp32)")
    low, high = float(images.min()), float(images.max())
    if low < -IMAGE_TOLERANCE or high > 1 + IMAGE_TOLERANCE:
        if low >= -IMAGE_TOLERANCE and high <= 255 + IMAGE_TOLERANCE:
            fix = "these look like 0..255 values: divide by 255"
        elif low >= -1 - IMAGE_TOLERANCE and high <= 1 + IMAGE_TOLERANCE:
            fix = "these look like -1..1 values: map them with (x + 1) / 2"
        else:
            fix = "rescale the frames to 0..1"
        raise refuse(node, name, f"values span {low:.4g}..{high:.4g}, outside 0..1", fix)
    if low < 0 or high > 1:
        log.warning("FlashVideo %s: input '%s' spans %.4g..%.4g; clamping to 0..1", node, name, low, high)
        images = images.clamp(0, 1)
    return images


def latent_tensor(samples, node: str, name: str = "samples", channels: int = LATENT_CHANNELS) -> torch.Tensor:
    """The tensor of a LATENT dict, refused unless it is a finite 5-D video latent with ``channels`` channels."""
    fix = f"connect {VIDEO_LATENT} from FlashVideo VAE Encode, Stage I Sampler or Stage II Upscale"
    if not isinstance(samples, dict) or "samples" not in samples:
        raise refuse(node, name, f"got {type(samples).__name__}, not a LATENT (a dict with 'samples')", fix)
    z = samples["samples"]
    if not isinstance(z, torch.Tensor):
        raise refuse(node, name, f"its 'samples' is {type(z).__name__}, not a tensor", fix)
    if z.ndim != 5:
        kind = (" (an image latent [batch, channels, height, width], e.g. from Empty Latent Image or a core VAE "
                "Encode)") if z.ndim == 4 else ""
        raise refuse(node, name, f"has shape {tuple(z.shape)}{kind}", fix)
    if z.shape[1] != channels:
        raise refuse(node, name, f"has {z.shape[1]} channels (shape {tuple(z.shape)}); the FlashVideo "
                     f"(CogVideoX) VAE latent has {channels}", fix)
    if z.numel() == 0:
        raise refuse(node, name, f"is empty (shape {tuple(z.shape)})", fix)
    if not z.is_floating_point():
        raise refuse(node, name, f"has dtype {z.dtype}, not floating point", fix)
    finite_values(z, node, name, "re-run the node that made it (fp16 overflows in CogVideoX models: use bf16 or "
                  "fp32)", MAX_MAGNITUDE)
    latent_tags(samples, node, name)
    return z.float()


def latent_tags(samples: dict, node: str, name: str = "samples") -> None:
    """The FlashVideo tags a LATENT carries, checked wherever it enters (whether or not the node reads them), so a
    damaged tag never reaches a sampler."""
    fix = "connect the latent straight from a FlashVideo node"
    stage = samples.get(STAGE_KEY)
    if stage is not None and (type(stage) is not int or stage not in (1, 2)):  # not True, not 1.0
        raise refuse(node, name, f"its stage tag {stage!r} is not 1 or 2", fix)
    if NOISE_STEP_KEY in samples:
        widget(NOISE_STEP, samples[NOISE_STEP_KEY], node, f"{name} (its noise step)")
    if SEED_KEY in samples:
        widget(SEED, samples[SEED_KEY], node, f"{name} (its seed)")


def shape_stage(z: torch.Tensor):
    """The FlashVideo stage a latent's size points to, or None where sizes overlap.

    Stage I samples about 256x480 (latent 32x60), stage II about 1072x1920 (134x240): a pixel area within
    1/4..2x of stage I's reads as stage I, at least half of stage II's as stage II. Used only for latents that
    lost their stage tag (core Save/Load Latent keep only the tensor).
    """
    area = z.shape[-2] * z.shape[-1] * 64
    if STAGE1_AREA // 4 <= area <= 2 * STAGE1_AREA:
        return 1
    if area >= STAGE2_AREA // 2:
        return 2
    return None


def conditioning_contexts(cond, node: str, name: str, tokens: bool = True) -> list:
    """The prompt tensors of a CONDITIONING ([[tensor, dict], ...]), each checked as T5 states (226 tokens
    unless ``tokens`` is False: the custom-sampling guiders also take other lengths, approximately)."""
    fix = "connect FlashVideo Text Encode (T5-XXL) or FlashVideo Load Prompt Embedding"
    if not isinstance(cond, (list, tuple)):
        raise refuse(node, name, f"got {type(cond).__name__}, not a CONDITIONING", fix)
    if not cond:
        raise refuse(node, name, "holds no prompt tensor", fix)
    for entry in cond:
        if not (isinstance(entry, (list, tuple)) and len(entry) >= 2 and isinstance(entry[0], torch.Tensor)
                and isinstance(entry[1], dict)):
            shown = type(entry[0]).__name__ if isinstance(entry, (list, tuple)) and entry else repr(entry)[:40]
            raise refuse(node, name, f"holds {shown} where a CONDITIONING has [prompt tensor, options dict]", fix)
    contexts = [entry[0] for entry in cond]
    for c in contexts:
        if c.ndim != 3 or (tokens and c.shape[1] != TEXT_TOKENS) or 0 in c.shape:
            raise refuse(node, name, f"the prompt embedding has shape {tuple(c.shape)}, not (batch, {TEXT_TOKENS}, "
                         "width) T5-XXL states", f"{fix} (it pads/truncates to {TEXT_TOKENS} tokens)")
        if not c.is_floating_point():
            raise refuse(node, name, f"the prompt embedding has dtype {c.dtype}, not floating point", fix)
        finite_values(c, node, name, "encode it again with T5-XXL in bf16 or fp32 (fp16 overflows)", MAX_MAGNITUDE)
    return contexts


def prompt_width(cond, width, node: str, name: str, tokens: bool = True) -> None:
    """Refuse a prompt embedding whose width is not the model's text width (before any matmul)."""
    for context in conditioning_contexts(cond, node, name, tokens):
        if width is not None and context.shape[-1] != width:
            raise refuse(node, name, f"the prompt embedding is {context.shape[-1]} wide but this model expects "
                         f"{width} (T5-v1.1-XXL states)",
                         "encode the prompt with the T5-XXL text encoder via FlashVideo Text Encode (or load an "
                         "embedding saved from it); CLIP and other encoders give other widths")
