"""FlashVideo Enhance Video: stage II as an enhancer for a whole video of any length, size and frame rate, in
49-frame windows with cross-faded overlaps (flashvideo_core/enhance). A VIDEO that is a file is read frame by frame
and the result is written to an mp4 in ComfyUI's temp folder as the windows finish, so memory holds one window,
never the clip. Node id and widget order are frozen (append only).
"""

from __future__ import annotations

import logging
import numbers
import os
import uuid
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Iterable, Optional

import torch
from comfy_api.latest import io

import folder_paths

from ..flashvideo_core.enhance.colour import COLOUR_FIXES
from ..flashvideo_core.enhance.enhancer import EnhancePlan, enhance_video, plan_enhance
from ..flashvideo_core.enhance.geometry import INPUT_SIZE
from ..flashvideo_core.errors import InputError
from ..flashvideo_core.io.video import VideoWriter, check_video_file, probe_video, read_frames
from ..flashvideo_core.settings import COLOUR_FIX_DEFAULT, COLOUR_FIX_HELP, ENHANCE_OVERLAP, Stage2Settings, setting
from ..flashvideo_core.vae.slicing import SlicingOptions
from .host import ComfyProgress, VAEHolder, setting_input
from .input_checks import combo_widget, image_batch, refuse, widget
from .latents import NOISE_STEP_KEY, SEED_KEY, STAGE_KEY
from .native.glue import check_prompt, require_stage
from .pipeline_nodes import ATTENTION_CHOICES, CFG, NOISE_STEP, SEED, SHIFT, STEPS, refine_latent
from .vae_helpers import FlashVideoVAE, check_tiles, check_vae, prepare, slicing_inputs, slicing_options

log = logging.getLogger("flashvideo")

NODE = "FlashVideo Enhance Video"
#: widget choice -> the core's resolution (None: the width and height widgets)
RESOLUTIONS = {"1080p (short side 1080)": "1080p", "2K (short side 1440)": "2K", "input size": INPUT_SIZE,
               "custom": None}
RESOLUTION_CHOICES = list(RESOLUTIONS)
#: the output is H.264 (even sides); the models run at the next multiple of 16 and the result is cropped
WIDTH = replace(setting(Stage2Settings, "width"), multiple=2, help="custom only: output width (even). The models "
                "run at the next multiple of 16 and the edge is cropped off again.")
HEIGHT = replace(setting(Stage2Settings, "height"), default=1080, multiple=2, help="custom only: output height "
                 "(even). The models run at the next multiple of 16 and the edge is cropped off again.")
SEED_HELP = ("Seed of the stage-II start: the VAE posterior sample and the degradation noise (each window draws its "
             "own, overlapping windows share it there). Drawn on the CPU: the same on every device.")
MAX_FPS = 1000  # beyond any camera; a larger host frame rate is a damaged file
CRF = 14  # H.264 quality of the written video (visually lossless; SaveVideo copies the stream as it is)


@dataclass
class VideoSource:
    """Where the frames come from: an iterator of (H, W, 3) frames, uint8 or float in [0, 1], and what the output
    keeps of the input (frame rate, audio)."""

    frames: Iterable
    total: int
    fps: Fraction
    size: tuple  # (height, width)
    audio_from: Optional[str] = None  # a file whose audio stream is copied
    audio: Optional[dict] = None  # or a ComfyUI AUDIO

    @property
    def how(self) -> str:
        return f"frames streamed from {self.audio_from}" if self.audio_from else "frames decoded by the host"


class FlashVideoEnhanceVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlashVideoEnhanceVideo",
            display_name="FlashVideo Enhance Video (stage II, any length)",
            category="FlashVideo",
            description="Runs a video of any length, size and frame rate through FlashVideo stage II: windows of 49 "
            "frames (the overlap cross-faded), each resized, encoded, degraded, refined in a few flow-matching steps "
            "and decoded, colours pulled back to the input's, audio kept. Stage II was trained on FlashVideo's own "
            "270p previews at 49 frames: other videos work, results vary. Only one window is in memory at a time.",
            inputs=[
                io.Model.Input("model", tooltip="The stage-II model (stage2.pt) from FlashVideo Model Loader."),
                FlashVideoVAE.Input("vae", tooltip="From FlashVideo VAE Loader."),
                io.Conditioning.Input("positive", tooltip="What the video shows, as T5 states (FlashVideo Text "
                                      "Encode or Load Prompt Embedding); a detailed description works best."),
                io.Video.Input("video", tooltip="The video to enhance (core Load Video). A file is read frame by "
                               "frame; its audio is copied to the result."),
                io.Combo.Input("resolution", options=RESOLUTION_CHOICES, default=RESOLUTION_CHOICES[0],
                               tooltip="Output size, aspect kept: short side 1080 (stage II's trained size for 16:9 "
                               "is 1072x1920) or 1440 (2K: RoPE extrapolation, ~1.8x the tokens), the input's own "
                               "size (rounded to even), or custom (width/height below)."),
                setting_input("width", WIDTH),
                setting_input("height", HEIGHT),
                setting_input("noise_step", NOISE_STEP),
                setting_input("steps", STEPS),
                setting_input("cfg", CFG),
                setting_input("shift", SHIFT),
                setting_input("seed", SEED, tooltip=SEED_HELP),
                setting_input("overlap", ENHANCE_OVERLAP),
                io.Combo.Input("colour_fix", options=list(COLOUR_FIXES), default=COLOUR_FIX_DEFAULT,
                               tooltip=COLOUR_FIX_HELP),
                io.Combo.Input("attention", options=ATTENTION_CHOICES, default=ATTENTION_CHOICES[0],
                               tooltip="full: the reference. window (experimental): each video token attends to a "
                               "7-frame, 11x11-patch neighbourhood: less work at 1080p/2K, blurs fast motion."),
                *slicing_inputs(),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The enhanced video (mp4 in ComfyUI's temp "
                                     "folder, the input's frame rate and audio): connect Save Video.")],
        )

    @classmethod
    def execute(cls, model, vae: VAEHolder, positive, video, resolution: str = RESOLUTION_CHOICES[0],
                width: int = WIDTH.default, height: int = HEIGHT.default, noise_step: int = NOISE_STEP.default,
                steps: int = STEPS.default, cfg: float = CFG.default, shift: float = SHIFT.default, seed: int = 0,
                overlap: int = ENHANCE_OVERLAP.default, colour_fix: str = COLOUR_FIX_DEFAULT,
                attention: str = ATTENTION_CHOICES[0], slicing: str = "reference", memory_budget_mb: int = 0,
                chunk_latents: int = 2, tile_size: int = 0, tile_overlap: int = 128) -> io.NodeOutput:
        # API clients skip the frontend (and 0.3.64 its combo check): every value is checked before any work
        vae = check_vae(vae, NODE)
        size = widget(HEIGHT, height, NODE, "height"), widget(WIDTH, width, NODE, "width")  # even when unused
        target = RESOLUTIONS[combo_widget(resolution, NODE, "resolution", RESOLUTION_CHOICES)] or size
        noise_step, steps, cfg, shift, seed, overlap = (widget(s, v, NODE, n) for s, v, n in (
            (NOISE_STEP, noise_step, "noise_step"), (STEPS, steps, "steps"), (CFG, cfg, "cfg"),
            (SHIFT, shift, "shift"), (SEED, seed, "seed"), (ENHANCE_OVERLAP, overlap, "overlap")))
        colour_fix = combo_widget(colour_fix, NODE, "colour_fix", COLOUR_FIXES)
        attention = combo_widget(attention, NODE, "attention", ATTENTION_CHOICES)
        options = slicing_options(slicing, memory_budget_mb, chunk_latents, tile_size, tile_overlap, node=NODE)
        require_stage(model, 2, NODE)
        check_prompt(model, positive, NODE, "positive")
        source = video_source(video)
        if target == INPUT_SIZE:  # odd sides rounded up, always (the core's round() goes to a multiple of 4: 37 -> 36)
            target = tuple(side + side % 2 for side in source.size)
        try:
            plan = plan_enhance(source.total, source.size, target, overlap, noise_step, seed, colour_fix)
        except InputError as e:
            raise refuse(NODE, "resolution", str(e), "pick another resolution, or custom with even sides in "
                         f"{WIDTH.lo}..{WIDTH.hi}") from None
        check_tiles(options, plan.grid[0] // 8, plan.grid[1] // 8, NODE)  # every window's size, before the first
        log.info("%s: %s at %s fps; %s", NODE, plan.describe(), source.fps, source.how)

        temp = folder_paths.get_temp_directory()
        os.makedirs(temp, exist_ok=True)
        path = os.path.join(temp, f"flashvideo_enhance_{uuid.uuid4().hex}.mp4")
        with VideoWriter(path, source.fps, crf=CRF, audio_from=source.audio_from, audio=source.audio,
                         folder=temp) as writer:
            enhance_frames(model, vae, positive, source.frames, plan, steps, cfg, shift, attention, options,
                           writer.write)
        from comfy_api.latest import InputImpl

        return io.NodeOutput(InputImpl.VideoFromFile(path))


def enhance_frames(model, vae: VAEHolder, positive, frames: Iterable, plan: EnhancePlan, steps: int, cfg: float,
                   shift: float, attention: str, options: SlicingOptions, write: Callable[[torch.Tensor], None],
                   progress=None) -> None:
    """The node's work without the files: ``frames`` through the plan's windows, each refined by the Refiner's own
    sampling (refine_latent) from the LATENT Latent Degrade would hand it; ``write`` gets the finished frames
    ((n, H, W, 3) in [0, 1]) in order. Values already checked."""

    def refine(degraded: torch.Tensor) -> torch.Tensor:
        samples = {"samples": degraded, STAGE_KEY: 2, NOISE_STEP_KEY: plan.noise_step, SEED_KEY: plan.seed}
        return refine_latent(model, positive, samples, plan.noise_step, steps, cfg, shift, attention)

    enhance_video(vae.model, frames, plan, refine, write, options, progress or ComfyProgress(),
                  budget=lambda direction, shape, opts: prepare(vae, direction, shape, opts, NODE))


def video_source(video) -> VideoSource:
    """Stream the frames from the file behind a core VideoFromFile (untrimmed, upright); anything else (a trimmed or
    in-memory video, one made by Create Video) through the host's own decode, ``get_components``."""
    from comfy_api.latest import InputImpl

    # only a VideoFromFile: the base class's get_stream_source() encodes any other VIDEO into memory first
    path = video.get_stream_source() if isinstance(video, InputImpl.VideoFromFile) else None
    if isinstance(path, str):  # deleted, a folder, a FIFO: never handed to a decoder
        try:
            check_video_file(path)
        except InputError as e:
            raise refuse(NODE, "video", str(e), "load the video again with core Load Video") from None
    trim = getattr(video, "get_active_trim_window", None)  # ComfyUI 0.33; 0.3.64 cannot trim
    if isinstance(path, str) and (trim is None or tuple(trim()) == (0, 0)):
        try:
            info = probe_video(path)
        except InputError as e:
            raise refuse(NODE, "video", str(e), "load an mp4, mov, mkv or webm file with at least one frame") from None
        if not _rotated(path):
            return VideoSource(read_frames(path), info.frames, info.fps, (info.height, info.width), audio_from=path)
    if not hasattr(video, "get_components"):
        raise refuse(NODE, "video", f"got {type(video).__name__}, not a VIDEO", "connect core Load Video (or "
                     "another node's VIDEO output)")
    components = video.get_components()
    images = components.images
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise refuse(NODE, "video", "the video has no frames", "load a video with at least one frame")
    images = image_batch(images, NODE, "video")
    return VideoSource(iter(images), images.shape[0], _frame_rate(components.frame_rate), tuple(images.shape[1:3]),
                       audio=components.audio)


def _frame_rate(rate) -> Fraction:
    """The host's frame rate of a VIDEO (None: 8 fps, FlashVideo's own), refused unless a positive finite number."""
    if rate is None:
        return Fraction(8)
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 < rate <= MAX_FPS:  # NaN too
        raise refuse(NODE, "video", f"its frame rate {rate!r} is not a number of frames per second in 0..{MAX_FPS}",
                     "set the frame rate where the video is made (Create Video's fps) or load the file again")
    return Fraction(rate)


def _rotated(path: str) -> bool:
    """Whether the file's frames carry a display rotation (phone videos): read_frames gives them as stored, the
    host's decode (0.33) turns them upright, so such files go through the host."""
    import av

    with av.open(path) as media:
        frame = next(media.decode(video=0), None)
    return bool(getattr(frame, "rotation", 0)) if frame is not None else False
