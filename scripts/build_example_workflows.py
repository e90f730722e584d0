#!/usr/bin/env python
"""Writes the example workflows (UI format, shown by ComfyUI as templates), their API twins and thumbnails.

One description per workflow below produces both files, so they cannot drift; the tests convert
each UI file back to API form on their own and compare (tests/test_example_workflows.py).
Each template also gets ``<name>.jpg`` beside it, the thumbnail both tested frontends show in the
template browser: a titled card drawn here (title, one-line description, the stages it runs, its
place in the suggested order), since neither frontend reads a description or an order for a custom
node's templates (they show the file name and list the server's unsorted directory scan).
Run after changing a workflow: ``python scripts/build_example_workflows.py`` (needs Pillow).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "example_workflows")

#: file names as in the README's "Which file goes where"
T5_FILE, VAE_FILE, STAGE1_FILE, STAGE2_FILE = "t5xxl_fp16.safetensors", "3d-vae.pt", "stage1.pt", "stage2.pt"
INPUT_VIDEO = "flashvideo_input.mp4"  # make-tiny's example clip (flashvideo_core.tiny_install.EXAMPLE_CLIP)
PROMPT = (
    "A red fox trots through fresh powder snow in a quiet pine forest at dawn. Soft golden light filters "
    "between the trunks, breath steams from its muzzle, snowflakes drift slowly through the air. The camera "
    "tracks alongside at a low angle, shallow depth of field, the background softly blurred, cinematic, "
    "highly detailed fur and realistic motion."
)
#: where the frontend's missing-model dialog downloads each file from (properties.models on the loader nodes)
MODEL_SOURCES = {
    T5_FILE: ("https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
              "text_encoders"),
    VAE_FILE: ("https://huggingface.co/FoundationVision/FlashVideo/resolve/main/3d-vae.pt", "vae"),
    STAGE1_FILE: ("https://huggingface.co/FoundationVision/FlashVideo/resolve/main/stage1.pt", "diffusion_models"),
    STAGE2_FILE: ("https://huggingface.co/FoundationVision/FlashVideo/resolve/main/stage2.pt", "diffusion_models"),
}
#: loader widget naming its model file
LOADER_FILE_WIDGET = {"FlashVideoT5Loader": "clip_name", "FlashVideoVAELoader": "vae_name",
                      "FlashVideoModelLoader": "model_name"}
FIXED = "fixed"  # control_after_generate: keep seeds, so re-queuing with new stage-II settings reuses stage I

#: class -> (widget names in order, with "<control>" after a seed), (input sockets), (outputs: name, type)
NODE_TYPES = {
    "FlashVideoT5Loader": (["clip_name", "device"], [], [("clip", "CLIP")]),
    "FlashVideoTextEncode": (["prompt"], [("clip", "CLIP")], [("conditioning", "CONDITIONING")]),
    "FlashVideoModelLoader": (["model_name", "weight_dtype", "attention", "memory"], [], [("model", "MODEL")]),
    "FlashVideoStage1Sampler": (["width", "height", "frames", "steps", "cfg", "seed", "<control>"],
                                [("model", "MODEL"), ("positive", "CONDITIONING")], [("latent", "LATENT")]),
    "FlashVideoVAELoader": (["vae_name", "dtype"], [], [("vae", "FLASHVIDEO_VAE")]),
    "FlashVideoVAEDecode": (["latent_scale", "slicing", "memory_budget_mb", "chunk_latents", "tile_size", "tile_overlap"],
                            [("vae", "FLASHVIDEO_VAE"), ("samples", "LATENT")], [("frames", "IMAGE")]),
    "FlashVideoStage2Upscale": (["resolution", "width", "height", "seed", "<control>", "frame_rule", "slicing",
                                 "memory_budget_mb", "chunk_latents", "tile_size", "tile_overlap"],
                                [("vae", "FLASHVIDEO_VAE"), ("images", "IMAGE"), ("samples", "LATENT")],
                                [("latent", "LATENT")]),
    "FlashVideoLatentDegrade": (["noise_step", "seed", "<control>"], [("samples", "LATENT")], [("latent", "LATENT")]),
    "FlashVideoStage2Refiner": (["steps", "cfg", "shift", "attention"],
                                [("model", "MODEL"), ("positive", "CONDITIONING"), ("samples", "LATENT")],
                                [("latent", "LATENT")]),
    "FlashVideoStage2Noise": ([], [("samples", "LATENT")], [("NOISE", "NOISE")]),
    "FlashVideoStage2Guider": (["cfg"], [("model", "MODEL"), ("positive", "CONDITIONING"), ("samples", "LATENT"),
                                         ("negative", "CONDITIONING")], [("GUIDER", "GUIDER")]),
    "FlashVideoStage2SamplerSelect": ([], [], [("SAMPLER", "SAMPLER")]),
    "FlashVideoStage2Sigmas": (["steps"], [("model", "MODEL")], [("SIGMAS", "SIGMAS")]),
    "SamplerCustomAdvanced": ([], [("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"),
                                   ("sigmas", "SIGMAS"), ("latent_image", "LATENT")],
                              [("output", "LATENT"), ("denoised_output", "LATENT")]),
    "CreateVideo": (["fps"], [("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")]),
    "SaveVideo": (["filename_prefix", "format", "codec"], [("video", "VIDEO")], []),
    "LoadVideo": (["file"], [], [("VIDEO", "VIDEO")]),
    "FlashVideoEnhanceVideo": (["resolution", "width", "height", "noise_step", "steps", "cfg", "shift", "seed",
                                "<control>", "overlap", "colour_fix", "attention", "slicing", "memory_budget_mb",
                                "chunk_latents", "tile_size", "tile_overlap"],
                               [("model", "MODEL"), ("vae", "FLASHVIDEO_VAE"), ("positive", "CONDITIONING"),
                                ("video", "VIDEO")], [("video", "VIDEO")]),
    "Note": (["text"], [], []),
}
SLICING = {"slicing": "reference", "memory_budget_mb": 0, "chunk_latents": 2, "tile_size": 0, "tile_overlap": 128}


@dataclass
class Node:
    id: int
    type: str
    values: dict
    links: dict = field(default_factory=dict)  # input name -> (source node id, output slot)
    title: str = ""
    pos: tuple = (0, 0)
    size: tuple = (320, 130)


def clip_and_text(x: int, y: int) -> list:
    return [
        Node(1, "FlashVideoT5Loader", {"clip_name": T5_FILE, "device": "default"}, title="Load T5-XXL",
             pos=(x, y), size=(320, 110)),
        Node(2, "FlashVideoTextEncode", {"prompt": PROMPT}, {"clip": (1, 0)}, pos=(x, y + 150), size=(320, 220)),
    ]


#: Layout. Columns 380 px apart; vertical room for what nodes grow to after a run (decoders show their preview
#: frames, Save Video its player), so no node covers another (checked after a run in both frontends).
COLUMN = 380
ROOM = {"loader": 170, "sampler": 320, "decode": 480, "create": 150, "save": 400, "degrade": 150, "refiner": 230}


def stage1(x: int, y: int) -> list:
    decode_y = y + ROOM["loader"]
    return [
        Node(3, "FlashVideoModelLoader", {"model_name": STAGE1_FILE, "weight_dtype": "auto", "attention": "comfy", "memory": "auto"},
             title="Stage I model", pos=(x, y)),
        Node(4, "FlashVideoStage1Sampler", {"width": 480, "height": 256, "frames": 49, "steps": 51, "cfg": 8.0,
                                            "seed": 0, "<control>": FIXED}, {"model": (3, 0), "positive": (2, 0)},
             pos=(x, decode_y), size=(320, 240)),
        Node(5, "FlashVideoVAELoader", {"vae_name": VAE_FILE, "dtype": "auto"}, pos=(x + COLUMN, y)),
        Node(6, "FlashVideoVAEDecode", {"latent_scale": "stage1", **SLICING}, {"vae": (5, 0), "samples": (4, 0)},
             title="Decode preview", pos=(x + COLUMN, decode_y), size=(320, 220)),
        Node(7, "CreateVideo", {"fps": 8.0}, {"images": (6, 0)}, pos=(x + 2 * COLUMN, decode_y), size=(260, 80)),
        Node(8, "SaveVideo", {"filename_prefix": "flashvideo/preview", "format": "mp4", "codec": "h264"},
             {"video": (7, 0)}, title="Save preview (270p)", pos=(x + 2 * COLUMN, decode_y + ROOM["create"]),
             size=(300, 110)),
    ]


def stage2(x: int, y: int, resolution: str, frames_from: tuple, prefix: str, first_id: int = 9,
           middle_y: int = None) -> list:
    """Loader and bridge in column x; degrade, refiner and decoder in the next column from ``middle_y`` (below
    what stage I puts there); Create/Save Video beside the decoder."""
    i = first_id
    middle_y = y if middle_y is None else middle_y
    refiner_y = middle_y + ROOM["degrade"]
    decode_y = refiner_y + ROOM["refiner"]
    return [
        Node(i, "FlashVideoModelLoader", {"model_name": STAGE2_FILE, "weight_dtype": "auto", "attention": "comfy", "memory": "auto"},
             title="Stage II model", pos=(x, y)),
        Node(i + 1, "FlashVideoStage2Upscale", {"resolution": resolution, "width": 1920, "height": 1072, "seed": 0,
                                                "<control>": FIXED, "frame_rule": "trim", **SLICING},
             {"vae": (5, 0), "images": frames_from}, title="Stage II upscale (bridge)", pos=(x, y + ROOM["loader"]),
             size=(320, 300)),
        Node(i + 2, "FlashVideoLatentDegrade", {"noise_step": 675, "seed": 0, "<control>": FIXED}, {"samples": (i + 1, 0)},
             pos=(x + COLUMN, middle_y), size=(320, 110)),
        Node(i + 3, "FlashVideoStage2Refiner", {"steps": 5, "cfg": 13.0, "shift": 2.5, "attention": "full"},
             {"model": (i, 0), "positive": (2, 0), "samples": (i + 2, 0)}, pos=(x + COLUMN, refiner_y), size=(320, 170)),
        Node(i + 4, "FlashVideoVAEDecode", {"latent_scale": "stage2", **SLICING}, {"vae": (5, 0), "samples": (i + 3, 0)},
             title="Decode refined", pos=(x + COLUMN, decode_y), size=(320, 220)),
        Node(i + 5, "CreateVideo", {"fps": 8.0}, {"images": (i + 4, 0)}, pos=(x + 2 * COLUMN, decode_y), size=(260, 80)),
        Node(i + 6, "SaveVideo", {"filename_prefix": prefix, "format": "mp4", "codec": "h264"}, {"video": (i + 5, 0)},
             title="Save refined", pos=(x + 2 * COLUMN, decode_y + ROOM["create"]), size=(300, 110)),
    ]


def stage2_custom_sampling(nodes: list, first_id: int = 9) -> list:
    """``stage2``'s nodes with the refiner replaced by core SamplerCustomAdvanced and FlashVideo's parts
    (same node id, so the decoder's link and the batch client's node ids stay); the parts take the refiner's
    place and push the decoder and the video nodes down."""
    i = first_id
    refiner = next(n for n in nodes if n.id == i + 3)
    x, y = refiner.pos
    degraded, model, positive = refiner.links["samples"], refiner.links["model"], refiner.links["positive"]
    heights = {"noise": 110, "guider": 170, "sigmas": 140, "select": 110, "sampler": 200}
    ys = {}
    for name, height in heights.items():
        ys[name] = y
        y += height
    parts = [
        Node(i + 20, "FlashVideoStage2Noise", {}, {"samples": degraded}, pos=(x, ys["noise"]), size=(320, 50)),
        Node(i + 21, "FlashVideoStage2Guider", {"cfg": 13.0}, {"model": model, "positive": positive,
                                                               "samples": degraded}, pos=(x, ys["guider"]), size=(320, 120)),
        Node(i + 23, "FlashVideoStage2Sigmas", {"steps": 5}, {"model": model}, pos=(x, ys["sigmas"]), size=(320, 80)),
        Node(i + 22, "FlashVideoStage2SamplerSelect", {}, pos=(x, ys["select"]), size=(320, 50)),
        Node(i + 3, "SamplerCustomAdvanced", {}, {"noise": (i + 20, 0), "guider": (i + 21, 0), "sampler": (i + 22, 0),
                                                  "sigmas": (i + 23, 0), "latent_image": degraded},
             title="Stage II (SamplerCustomAdvanced)", pos=(x, ys["sampler"]), size=(320, 130)),
    ]
    shift = y - refiner.pos[1] - ROOM["refiner"]
    moved = [Node(n.id, n.type, n.values, n.links, n.title, (n.pos[0], n.pos[1] + shift), n.size)
             if n.id in (i + 4, i + 5, i + 6) else n for n in nodes if n.id != i + 3]
    return moved + parts


#: the notes' node id: above every real node's (stage II's custom-sampling parts reach 3x)
NOTE_ID = 90


def note(node_id: int, text: str, pos: tuple, size=(340, 260)) -> Node:
    return Node(node_id, "Note", {"text": text}, title="Read me", pos=pos, size=size)


FILES_NOTE = (
    "Models (README, 'Which file goes where'): models/text_encoders/t5xxl_fp16.safetensors (any T5-v1.1-XXL), "
    "models/vae/3d-vae.pt, models/diffusion_models/stage1.pt and stage2.pt from Hugging Face "
    "FoundationVision/FlashVideo (the loaders carry the download links). No weights yet? From the pack folder "
    "`python -m flashvideo_core make-tiny ../../models` writes tiny random ones under these names (a tiny T5 "
    "included, and an example clip in ComfyUI/input): every template then runs as it is (the videos are noise).\n\n"
    "To skip T5 (9.5 GB) on later runs: FlashVideo Save Prompt Embedding once, then FlashVideo Load Prompt Embedding."
)
REFINE_NOTE = (
    "Preview first: bypass (Ctrl+B) the stage-II nodes on the right, queue, look at the 270p preview. Then "
    "un-bypass them (or click 'Refine this preview' on the stage-I sampler) and queue again: seeds are 'fixed', "
    "so stage I comes from ComfyUI's cache and only stage II runs. Changing steps (NFE), cfg, shift or the noise "
    "step also reruns stage II only.\n\nOut of memory? Lower memory_budget_mb on the decoders or set a tile_size "
    "(512-768); load the models as fp8_e4m3fn."
)


def workflows() -> dict:
    preview = [*clip_and_text(0, 0), *stage1(380, 0),
               note(NOTE_ID, "FlashVideo stage I: a 256x480, 49-frame preview at 8 fps in 51 steps.\n\n" + FILES_NOTE, (0, 420))]
    middle = ROOM["loader"] + ROOM["decode"]  # stage II's middle column starts below the preview decoder
    full = [*clip_and_text(0, 0), *stage1(380, 0),
            *stage2(380, 480, "1080p (1072x1920)", (6, 0), "flashvideo/1080p", middle_y=middle),
            note(NOTE_ID, "FlashVideo text-to-video: 270p preview, then stage II to 1072x1920 in 5 flow-matching steps.\n\n"
                 + REFINE_NOTE + "\n\n" + FILES_NOTE, (0, 420), (360, 520))]
    two_k = [*clip_and_text(0, 0), *stage1(380, 0),
             *stage2(380, 480, "2K (1440x2560)", (6, 0), "flashvideo/2k", middle_y=middle),
             note(NOTE_ID, "FlashVideo 2K: stage II at 1440x2560 by RoPE extrapolation (no retraining): sharper, about 3x "
                  "the stage-II time of 1080p, and the VAE decode needs more tiles (automatic).\n\n" + REFINE_NOTE
                  + "\n\n" + FILES_NOTE, (0, 420), (360, 520))]
    enhance = [
        *clip_and_text(0, 0),
        Node(20, "LoadVideo", {"file": INPUT_VIDEO}, title="Video to enhance", pos=(380, 0), size=(320, 320)),
        Node(5, "FlashVideoVAELoader", {"vae_name": VAE_FILE, "dtype": "auto"}, pos=(740, 0)),
        Node(9, "FlashVideoModelLoader", {"model_name": STAGE2_FILE, "weight_dtype": "auto", "attention": "comfy",
                                          "memory": "auto"}, title="Stage II model", pos=(740, ROOM["loader"])),
        Node(22, "FlashVideoEnhanceVideo", {"resolution": "1080p (short side 1080)", "width": 1920, "height": 1080,
                                            "noise_step": 675, "steps": 5, "cfg": 13.0, "shift": 2.5, "seed": 0,
                                            "<control>": FIXED, "overlap": 8, "colour_fix": "wavelet",
                                            "attention": "full", **SLICING},
             {"model": (9, 0), "vae": (5, 0), "positive": (2, 0), "video": (20, 0)}, pos=(1120, 0), size=(340, 560)),
        Node(15, "SaveVideo", {"filename_prefix": "flashvideo/enhanced", "format": "mp4", "codec": "h264"},
             {"video": (22, 0)}, title="Save enhanced", pos=(1500, 0), size=(300, 110)),
        note(NOTE_ID, "Enhance an existing video with FlashVideo stage II. Put your clip in ComfyUI/input (or use "
             "Load Video's upload button) and pick it in Load Video; describe it in the prompt. flashvideo_input.mp4 "
             "is make-tiny's short synthetic example clip.\n\nAny length, size and frame rate: the clip runs in "
             "windows of 49 frames whose overlap is cross-faded, at the resolution you pick (aspect kept), and keeps "
             "its frame rate and audio; colour_fix pulls the colours back to the input's. Stage II was trained on "
             "FlashVideo's own 270p previews at 49 frames, so results on other videos vary. Raise noise_step (up to "
             "~750) for heavier clean-up, lower it to stay closer to the input.\n\n" + FILES_NOTE,
             (0, 420), (360, 520)),
    ]
    advanced = [*clip_and_text(0, 0), *stage1(380, 0),
                *stage2_custom_sampling(stage2(380, 480, "1080p (1072x1920)", (6, 0), "flashvideo/1080p_advanced",
                                               middle_y=middle)),
                note(NOTE_ID, "FlashVideo 1080p built from ComfyUI's own sampling: stage II is core SamplerCustomAdvanced "
                     "with FlashVideo's NOISE (the degraded latent), GUIDER (CFG against a zero context, the noise step "
                     "as conditioning), SAMPLER (the reference's Euler) and SIGMAS (the shifted grid). Same result as "
                     "the Stage II Refiner; swap in core parts to experiment (e.g. ModelSamplingSD3 for the shift, "
                     "another sampler).\n\n" + FILES_NOTE, (0, 420), (360, 520))]
    return {"flashvideo_270p_preview": preview, "flashvideo_1080p": full, "flashvideo_2k": two_k,
            "flashvideo_enhance_video": enhance, "flashvideo_1080p_advanced": advanced}


#: template -> (card title, one-line description, stages it runs); the dict's order is the suggested order
CARDS = {
    "flashvideo_270p_preview": ("270p preview", "Prompt to a 49-frame 256x480 preview in 51 steps. Start here.",
                                ["T5", "Stage I", "VAE"]),
    "flashvideo_1080p": ("1080p", "The preview, then stage II refines it to 1072x1920 in 5 steps; saves both.",
                         ["T5", "Stage I", "Stage II", "VAE"]),
    "flashvideo_2k": ("2K", "As 1080p, refined to 1440x2560 by RoPE extrapolation (about 3x the stage-II time).",
                      ["T5", "Stage I", "Stage II", "VAE"]),
    "flashvideo_enhance_video": ("Enhance a video", "Your clip from ComfyUI/input through stage II to 1080p: any "
                                 "length, audio kept.", ["Clip", "T5", "Stage II", "VAE"]),
    "flashvideo_1080p_advanced": ("1080p advanced", "1080p with stage II as core SamplerCustomAdvanced and "
                                  "FlashVideo's noise, guider, sampler and sigmas.",
                                  ["T5", "Stage I", "Sampler", "VAE"]),
}
THUMB_SIZE = 512
ACCENTS = [(230, 140, 60), (70, 160, 230), (150, 110, 230), (80, 190, 130), (220, 90, 120)]


def thumbnail(name: str):
    """The template's card as a PIL image: a titled card, not a rendering, so it never pretends to show output."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    order = list(CARDS).index(name)
    title, description, stages = CARDS[name]
    accent = ACCENTS[order % len(ACCENTS)]
    ramp = np.linspace(0, 1, THUMB_SIZE)[:, None, None]
    pixels = (np.array([30, 34, 44]) * (1 - ramp) + np.array([14, 16, 22]) * ramp) * np.ones((1, THUMB_SIZE, 1))
    card = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(card)
    font = lambda size: ImageFont.load_default(size=size)  # noqa: E731  (Pillow's bundled font: same everywhere)
    margin = 36
    draw.rectangle([0, 0, THUMB_SIZE, 14], fill=accent)
    draw.text((margin, 48), "FlashVideo", font=font(28), fill=(170, 176, 190))
    draw.text((THUMB_SIZE - margin, 48), f"{order + 1} of {len(CARDS)}", font=font(24), fill=accent, anchor="ra")
    size = 60
    while draw.textlength(title, font=font(size)) > THUMB_SIZE - 2 * margin:  # long titles: smaller type
        size -= 2
    draw.text((margin, 96 + (60 - size) // 2), title, font=font(size), fill=(245, 245, 250))
    lines, line = [], ""
    for word in description.split():
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font(26)) > THUMB_SIZE - 2 * margin:
            lines, line = lines + [line], word
        else:
            line = candidate
    assert len(lines) < 5, f"{name}: description too long for the card"
    for i, text in enumerate(lines + [line]):
        draw.text((margin, 190 + 36 * i), text, font=font(26), fill=(205, 210, 222))
    box_w, gap, y = 92, 24, 390
    x = (THUMB_SIZE - len(stages) * box_w - (len(stages) - 1) * gap) // 2
    for i, stage in enumerate(stages):
        left = x + i * (box_w + gap)
        draw.rounded_rectangle([left, y, left + box_w, y + 56], radius=10, outline=accent, width=3, fill=(38, 43, 56))
        draw.text((left + box_w / 2, y + 28), stage, font=font(20), fill=(235, 235, 240), anchor="mm")
        if i:
            draw.line([left - gap + 4, y + 28, left - 6, y + 28], fill=accent, width=3)
    draw.text((margin, THUMB_SIZE - 40), "ComfyUI-FlashVideo template", font=font(20), fill=(120, 126, 140))
    return card


def write_thumbnail(name: str, path: str) -> None:
    thumbnail(name).save(path, "JPEG", quality=88, optimize=True)


def to_api(nodes: list) -> dict:
    api = {}
    for node in sorted(nodes, key=lambda n: n.id):
        if node.type == "Note":
            continue
        inputs = {k: v for k, v in node.values.items() if k != "<control>"}
        inputs.update({name: [str(src), slot] for name, (src, slot) in node.links.items()})
        api[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title or node.type}}
    return api


def to_ui(nodes: list) -> dict:
    links, ui_nodes = [], []
    by_id = {n.id: n for n in nodes}
    outgoing: dict = {}
    for node in sorted(nodes, key=lambda n: n.id):
        sockets = NODE_TYPES[node.type][1]
        for slot, (name, kind) in enumerate(sockets):
            if name in node.links:
                src, src_slot = node.links[name]
                link_id = len(links) + 1
                links.append([link_id, src, src_slot, node.id, slot, kind])
                outgoing.setdefault((src, src_slot), []).append(link_id)
    for order, node in enumerate(sorted(nodes, key=lambda n: n.id)):
        widgets, sockets, outputs = NODE_TYPES[node.type]
        link_of = {(l[3], l[4]): l[0] for l in links}
        entry = {
            "id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size), "flags": {},
            "order": order, "mode": 0,
            "inputs": [{"name": name, "type": kind, "link": link_of.get((node.id, slot))}
                       for slot, (name, kind) in enumerate(sockets)],
            "outputs": [{"name": name, "type": kind, "links": outgoing.get((node.id, slot), []), "slot_index": slot}
                        for slot, (name, kind) in enumerate(outputs)],
            "properties": properties(node),
            "widgets_values": [node.values[w] for w in widgets if w in node.values],
        }
        if node.title:
            entry["title"] = node.title
        if node.type == "Note":
            entry["color"], entry["bgcolor"] = "#432", "#653"
        ui_nodes.append(entry)
    assert all(l[1] in by_id for l in links)
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": ui_nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}}, "version": 0.4}


def properties(node: Node) -> dict:
    """The node's UI properties; loaders list the model they load with its download URL and folder."""
    props = {"Node name for S&R": node.type}
    if node.type in LOADER_FILE_WIDGET:
        name = node.values[LOADER_FILE_WIDGET[node.type]]
        url, directory = MODEL_SOURCES[name]
        props["models"] = [{"name": name, "url": url, "directory": directory}]
    return props


def main() -> None:
    os.makedirs(os.path.join(OUT_DIR, "api"), exist_ok=True)
    for name, nodes in workflows().items():
        with open(os.path.join(OUT_DIR, f"{name}.json"), "w") as f:
            json.dump(to_ui(nodes), f, indent=1)
            f.write("\n")
        with open(os.path.join(OUT_DIR, "api", f"{name}.json"), "w") as f:
            json.dump(to_api(nodes), f, indent=1)
            f.write("\n")
        write_thumbnail(name, os.path.join(OUT_DIR, f"{name}.jpg"))
        print(f"wrote example_workflows/{name}.json, .jpg and example_workflows/api/{name}.json")


if __name__ == "__main__":
    main()
