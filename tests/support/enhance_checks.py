"""Run by tests/test_enhance_node.py with a real ComfyUI's python (in-process, CPU): FlashVideo Enhance Video against
the single-pass node chain on the same tiny weights, and an interrupt inside a window.

usage: python enhance_checks.py COMFYUI_DIR PACK_DIR WORK_DIR  ->  one JSON object on the last stdout line

Checks: a clip that fits one window, with colour fix none at a custom size that is a multiple of 16, gives exactly
the frames of Stage II Upscale (frame_rule pad) -> Latent Degrade (same seed) -> Stage II Refiner -> VAE Decode
(stage2), for a 4k+1 clip (17 frames) and one the chain pads (6 frames: its first 6 frames); a stop request set from
the host's progress hook in the middle of the first window raises the host's InterruptProcessingException, writes
no frame and leaves nothing (no .partial, no mp4) in the temp folder.
"""

import json
import os
import sys

from in_host import import_pack, start_cpu_host  # noqa: E402  (tests/support, the script's folder)

comfy_dir, pack_dir, work_dir = sys.argv[1], sys.argv[2], sys.argv[3]
start_cpu_host(comfy_dir)

import torch  # noqa: E402

import comfy.model_management as mm  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402

pack = import_pack(pack_dir)

from flashvideo_pack.flashvideo_core.enhance.enhancer import plan_enhance  # noqa: E402
from flashvideo_pack.flashvideo_core.io.video import VideoWriter  # noqa: E402
from flashvideo_pack.flashvideo_core.tiny import write_tiny_dit, write_tiny_vae  # noqa: E402
from flashvideo_pack.flashvideo_core.vae.loader import load_vae  # noqa: E402
from flashvideo_pack.nodes.enhance_node import FlashVideoEnhanceVideo, enhance_frames  # noqa: E402
from flashvideo_pack.nodes.host import VAEHolder  # noqa: E402
from flashvideo_pack.nodes.native.loader import load_flashvideo_model  # noqa: E402
from flashvideo_pack.nodes.pipeline_nodes import (  # noqa: E402
    FlashVideoLatentDegrade, FlashVideoStage2Refiner, FlashVideoStage2Upscale,
)
from flashvideo_pack.nodes.vae_helpers import slicing_options  # noqa: E402
from flashvideo_pack.nodes.vae_nodes import FlashVideoVAEDecode  # noqa: E402

temp = os.path.join(work_dir, "temp")
os.makedirs(temp, exist_ok=True)
folder_paths.set_temp_directory(temp)

vae_path, dit_path = os.path.join(work_dir, "vae.pt"), os.path.join(work_dir, "stage2.pt")
write_tiny_vae(vae_path)
write_tiny_dit(dit_path, "stage2")
vae = VAEHolder(load_vae(vae_path, device=mm.vae_offload_device(), dtype=torch.float32), mm.vae_device(),
                mm.vae_offload_device(), torch.float32, vae_path)
model = load_flashvideo_model(dit_path, "fp32")
context = torch.randn(1, 226, model.model.diffusion_model.config.text_hidden_size,
                      generator=torch.Generator().manual_seed(0))
positive = [[context, {}]]
NOISE_STEP, STEPS, CFG, SHIFT, SEED = 675, 3, 13.0, 2.5, 11
SLICING = ("reference", 0, 2, 0, 128)
HEIGHT, WIDTH = 32, 64  # the custom output size, multiples of 16


def clip(frames: int, height: int = 24, width: int = 40) -> torch.Tensor:
    """Smooth moving colours, (frames, H, W, 3) in [0, 1]."""
    t = torch.linspace(0, 1, frames)[:, None, None, None]
    y = torch.linspace(0, 1, height)[None, :, None, None]
    x = torch.linspace(0, 1, width)[None, None, :, None]
    return (0.5 + 0.4 * torch.sin(5 * x + 3 * y + 2 * t + torch.tensor([0.0, 1.5, 3.0]))).float()


def chain(frames: torch.Tensor) -> torch.Tensor:
    """The single pass, node by node, as a graph wires it."""
    latent = FlashVideoStage2Upscale.execute(vae, "custom", WIDTH, HEIGHT, SEED, "pad", *SLICING, images=frames).result[0]
    degraded = FlashVideoLatentDegrade.execute(latent, NOISE_STEP, SEED).result[0]
    refined = FlashVideoStage2Refiner.execute(model, positive, degraded, STEPS, CFG, SHIFT, "full").result[0]
    return FlashVideoVAEDecode.execute(vae, refined, "stage2", *SLICING).result[0]


def enhanced(frames: torch.Tensor) -> torch.Tensor:
    plan = plan_enhance(frames.shape[0], tuple(frames.shape[1:3]), (HEIGHT, WIDTH), 8, NOISE_STEP, SEED, "none")
    written = []
    enhance_frames(model, vae, positive, iter(frames), plan, STEPS, CFG, SHIFT, "full",
                   slicing_options(*SLICING, node="test"), written.append)
    return torch.cat(written)


results = {}
for count in (17, 6):
    frames = clip(count)
    single, windowed = chain(frames), enhanced(frames)
    results[f"frames{count}_shapes"] = [list(single.shape), list(windowed.shape)]
    single = single[:count]
    results[f"frames{count}_equal"] = single.shape == windowed.shape and torch.equal(single, windowed)
    results[f"frames{count}_max_diff"] = (float((single - windowed).abs().max())
                                         if single.shape == windowed.shape else None)

# Interrupt in the middle of the first window of a two-window clip: the host's flag is set from its progress hook
# after a few progress updates (VAE chunks, sampling steps); the next check raises.
from comfy_api.latest import InputImpl  # noqa: E402

source = os.path.join(work_dir, "clip.mp4")
with VideoWriter(source, 12) as writer:
    writer.write(clip(50))
updates = []


def hook(*args, **kwargs):
    updates.append(args[:2])
    if len(updates) == 3:
        mm.interrupt_current_processing(True)


comfy.utils.set_progress_bar_global_hook(hook)
written = []
import flashvideo_pack.nodes.enhance_node as enhance_node  # noqa: E402

host_writer = enhance_node.VideoWriter


class CountingWriter(host_writer):
    def write(self, frames):
        written.append(frames.shape[0])
        super().write(frames)


enhance_node.VideoWriter = CountingWriter
try:
    FlashVideoEnhanceVideo.execute(model, vae, positive, InputImpl.VideoFromFile(source), "input size",
                                   steps=STEPS, overlap=8, colour_fix="none")
    results["interrupt"] = "not raised"
except mm.InterruptProcessingException:
    results["interrupt"] = "InterruptProcessingException"
finally:
    comfy.utils.set_progress_bar_global_hook(None)
    enhance_node.VideoWriter = host_writer
    mm.interrupt_current_processing(False)
results["interrupt_progress_updates"] = len(updates)
results["interrupt_frames_written"] = sum(written)
results["temp_files_after_interrupt"] = sorted(os.listdir(temp))

# And the same node run to the end: an mp4 in the temp folder, returned as the host's VideoFromFile.
video = FlashVideoEnhanceVideo.execute(model, vae, positive, InputImpl.VideoFromFile(source), "input size",
                                       steps=STEPS, overlap=8, colour_fix="none").result[0]
results["output_type"] = type(video).__name__
results["output_in_temp"] = os.path.dirname(video.get_stream_source()) == temp
results["output_components"] = [int(video.get_components().images.shape[0]), list(video.get_dimensions())]
results["temp_files_after_run"] = sorted(os.listdir(temp))

print(json.dumps(results))
