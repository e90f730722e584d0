"""The example workflows: each UI file (what ComfyUI shows as a template) converted to API form here,
independently of scripts/build_example_workflows.py, must equal its API twin; file names must be the
README's and make-tiny's (so a make-tiny install runs every template as shipped); every workflow ends in
SaveVideo, fed by CreateVideo (8 fps) or by Enhance Video (the input's frame rate); each has a JPEG thumbnail beside
it. Runs without ComfyUI
(tests/test_comfyui_real.py runs every workflow in a real one)."""

import json
import re
import sys
from pathlib import Path

import pytest

from flashvideo_core.tiny_install import EXAMPLE_CLIP, TINY_FILES
from support.node_schemas import CONTROL, CORE_SOCKETS, CORE_WIDGETS, FROZEN_SOCKETS, FROZEN_WIDGETS

REPO = Path(__file__).resolve().parents[1]
UI_DIR = REPO / "example_workflows"
API_DIR = UI_DIR / "api"
NAMES = sorted(p.stem for p in UI_DIR.glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote"}
WIDGETS = {**FROZEN_WIDGETS, **CORE_WIDGETS}
SOCKETS = {**FROZEN_SOCKETS, **CORE_SOCKETS}


def ui_to_api(ui: dict) -> dict:
    """What the frontend's Export (API) does, for the node types our examples use."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        names = WIDGETS[node["type"]]
        values = node.get("widgets_values", [])
        assert len(values) >= len([n for n in names if n != CONTROL]) - 1, (node["type"], values)
        inputs = {name: value for name, value in zip(names, values) if name != CONTROL}
        socket_names = [name for name, _ in SOCKETS[node["type"]]]
        for socket in node.get("inputs", []):
            if socket.get("link") is None:
                continue
            assert socket["name"] in socket_names, (node["type"], socket["name"])
            _, src, slot, dst, dst_slot, _ = links[socket["link"]]
            assert dst == node["id"] and socket_names[dst_slot] == socket["name"]
            inputs[socket["name"]] = [str(src), slot]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def test_the_examples_exist_with_api_twins_outside_scanned_folders():
    assert NAMES == ["flashvideo_1080p", "flashvideo_1080p_advanced", "flashvideo_270p_preview", "flashvideo_2k",
                     "flashvideo_enhance_video"]
    assert sorted(p.stem for p in API_DIR.glob("*.json")) == NAMES
    # what the hosts list (every *.json here) and serve beside it: the templates, their thumbnails, the read-me
    assert sorted(p.name for p in UI_DIR.iterdir() if p.is_file()) == sorted(
        ["README.md", *(f"{n}.json" for n in NAMES), *(f"{n}.jpg" for n in NAMES)])
    for scanned in ("example", "examples", "workflow", "workflows"):  # ComfyUI would list API files there as templates
        assert not (REPO / scanned).exists()


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_converts_to_its_api_twin(name):
    ui = json.loads((UI_DIR / f"{name}.json").read_text())
    twin = json.loads((API_DIR / f"{name}.json").read_text())
    assert ui_to_api(ui) == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in twin.items()}
    ids = {n["id"] for n in ui["nodes"]}
    for link_id, src, _, dst, _, _ in ui["links"]:
        assert src in ids and dst in ids
        assert any(link_id in out["links"] for n in ui["nodes"] if n["id"] == src for out in n["outputs"])
    assert ui["last_node_id"] == max(ids) and ui["last_link_id"] == max(l[0] for l in ui["links"])


@pytest.mark.parametrize("name", NAMES)
def test_workflow_files_and_outputs_match_the_readme_and_make_tiny(name):
    api = json.loads((API_DIR / f"{name}.json").read_text())
    readme = (REPO / "README.md").read_text()
    tiny_names = {Path(p).name for p in TINY_FILES}
    for node in api.values():
        inputs = node["inputs"]
        for key in ("model_name", "vae_name", "clip_name", "embedding"):
            if key in inputs:
                assert f"`{inputs[key]}`" in readme, f"{inputs[key]} is not named in the README"
                assert inputs[key] in tiny_names, f"make-tiny does not write {inputs[key]}"
        if node["class_type"] == "LoadVideo":
            assert inputs["file"] == EXAMPLE_CLIP, "make-tiny's example clip is what the enhance template loads"
    saves = [k for k, n in api.items() if n["class_type"] == "SaveVideo"]
    assert saves
    for key in saves:
        video = api[api[key]["inputs"]["video"][0]]
        if video["class_type"] != "FlashVideoEnhanceVideo":  # which keeps the frame rate of the video it enhances
            assert video["class_type"] == "CreateVideo" and video["inputs"]["fps"] == 8.0
        assert api[key]["inputs"]["format"] == "mp4"
    seeds = [n["inputs"]["seed"] for n in api.values() if "seed" in n["inputs"]]
    assert seeds, "a seed to set per prompt"
    ui = json.loads((UI_DIR / f"{name}.json").read_text())
    for node in ui["nodes"]:
        if CONTROL in WIDGETS.get(node["type"], []):
            slot = WIDGETS[node["type"]].index(CONTROL)
            assert node["widgets_values"][slot] == "fixed", "seeds must stay fixed so stage I is reused from cache"


def test_workflow_builder_is_in_sync(tmp_path, monkeypatch):
    """Rebuilding from scripts/build_example_workflows.py reproduces the committed files."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("builder", REPO / "scripts" / "build_example_workflows.py")
    builder = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "builder", builder)  # dataclasses look their module up
    spec.loader.exec_module(builder)
    monkeypatch.setattr(builder, "OUT_DIR", str(tmp_path))
    builder.main()
    for name in NAMES:
        assert (tmp_path / f"{name}.json").read_text() == (UI_DIR / f"{name}.json").read_text()
        assert (tmp_path / "api" / f"{name}.json").read_text() == (API_DIR / f"{name}.json").read_text()
        # JPEG bytes may differ between Pillow versions: compare the pictures
        rebuilt, committed = (_pixels(folder / f"{name}.jpg") for folder in (tmp_path, UI_DIR))
        assert rebuilt.shape == committed.shape and abs(rebuilt - committed).mean() < 2.0, name
    assert list(builder.CARDS) == list(builder.workflows()), "every template has a card, in the suggested order"


def _pixels(path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_node_ids_are_unique_in_every_template(name):
    """The frontend configures nodes by id: two nodes with one id (a note and a real node) mix their settings."""
    ui = json.loads((UI_DIR / f"{name}.json").read_text())
    ids = [node["id"] for node in ui["nodes"]]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert ui["last_node_id"] >= max(ids)


@pytest.mark.parametrize("name", NAMES)
def test_each_template_has_a_small_jpeg_thumbnail(name):
    """Both tested frontends show <name>.jpg from the template's folder (custom-node templates are listed with
    mediaSubtype "jpg"); under 100 KB each."""
    from PIL import Image

    path = UI_DIR / f"{name}.jpg"
    assert path.stat().st_size < 100_000
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == (512, 512)
    pixels = _pixels(path)
    assert pixels.std() > 10, "a card with text on it, not a flat colour"


def test_readme_lists_the_templates_in_the_suggested_order():
    """Neither host lets a pack order its templates (the server lists an unsorted directory scan): the README's
    table and the cards' "n of 5" give the order instead."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("builder_cards", REPO / "scripts" / "build_example_workflows.py")
    builder = importlib.util.module_from_spec(spec)
    sys.modules["builder_cards"] = builder
    try:
        spec.loader.exec_module(builder)
    finally:
        del sys.modules["builder_cards"]
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| template | what it does | needs |"):]
    table = table[: table.index("\n\n")]
    assert re.findall(r"^\| `(\w+)`", table, re.M) == list(builder.CARDS)


def test_readme_names_each_template():
    readme = (REPO / "README.md").read_text()
    for name in NAMES:
        assert re.search(rf"`{name}`", readme), f"README does not mention the {name} template"


@pytest.mark.parametrize("name", NAMES)
def test_loaders_tell_the_frontend_where_to_download_their_models(name):
    """properties.models on every loader: the file it loads, an official download URL and the ComfyUI folder
    (README 'Which file goes where'), so the frontend's missing-model dialog can fetch it."""
    folders = {"FlashVideoT5Loader": "text_encoders", "FlashVideoVAELoader": "vae",
               "FlashVideoModelLoader": "diffusion_models"}
    loaders = [n for n in json.loads((UI_DIR / f"{name}.json").read_text())["nodes"] if n["type"] in folders]
    assert loaders
    for node in loaders:
        (model,) = node["properties"]["models"]
        assert model["name"] == node["widgets_values"][0] and model["directory"] == folders[node["type"]]
        assert model["url"].startswith("https://huggingface.co/") and model["url"].endswith("/resolve/main/" + model["name"])
        repo = "comfyanonymous/flux_text_encoders" if node["type"] == "FlashVideoT5Loader" else "FoundationVision/FlashVideo"
        assert f"/{repo}/" in model["url"]


def test_readme_node_id_map_matches_the_api_workflows():
    """The batch client's README table: every node id of every shipped API workflow is listed with its
    class_type and, where the node has its own title (the client addresses nodes by title too), that title."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| id | node (`class_type`) | useful inputs |"):]
    table = table[: table.index("\n\n")]
    classes, rows = {}, {}
    for line in table.splitlines()[2:]:
        ids, node = line.split("|")[1:3]
        names = set(re.findall(r"`(\w+)`", node))
        for part in ids.split(","):
            lo, _, hi = part.strip().partition("-")
            for node_id in range(int(lo), int(hi or lo) + 1):
                classes[str(node_id)], rows[str(node_id)] = names, node
    for path in API_DIR.glob("*.json"):
        for node_id, node in json.loads(path.read_text()).items():
            assert node["class_type"] in classes.get(node_id, set()), (path.name, node_id, node["class_type"])
            title = node.get("_meta", {}).get("title", node["class_type"])
            assert title == node["class_type"] or title in rows[node_id], (path.name, node_id, title)


FOLDER_OF = {"model_name": "diffusion_models", "vae_name": "vae", "clip_name": "text_encoders",
             "embedding": "flashvideo_embeddings", "file": "../input"}


def test_make_tiny_writes_every_file_the_templates_name(tmp_path):
    """The README's make-tiny step in a ComfyUI layout (models/ with input/ beside it) gives every file each
    template names, in the folder its loader lists: the tiny T5 under the T5-XXL name and the example clip too."""
    from flashvideo_core.tiny_install import make_tiny

    (tmp_path / "input").mkdir()
    written = make_tiny(str(tmp_path / "models"))
    assert written["input_clip"] == str(tmp_path / "input" / EXAMPLE_CLIP)
    for name in NAMES:
        for node in json.loads((API_DIR / f"{name}.json").read_text()).values():
            for key, folder in FOLDER_OF.items():
                value = node["inputs"].get(key)
                if isinstance(value, str):
                    assert (tmp_path / "models" / folder / value).is_file(), (name, key, value)


def test_make_tiny_never_overwrites_real_weights_and_places_no_clip_outside_comfyui(tmp_path):
    from flashvideo_core.errors import InputError
    from flashvideo_core.tiny_install import REAL_WEIGHTS_BYTES, make_tiny

    models = tmp_path / "models"
    (tmp_path / "input").mkdir()
    real = models / "text_encoders" / "t5xxl_fp16.safetensors"
    real.parent.mkdir(parents=True)
    with open(real, "wb") as f:
        f.truncate(REAL_WEIGHTS_BYTES)  # sparse: the size of real weights, no disk
    with pytest.raises(InputError, match="real weights.*--base-directory"):
        make_tiny(str(models), force=True)
    assert real.stat().st_size == REAL_WEIGHTS_BYTES and not (models / "vae").exists()  # checked before writing
    assert not (tmp_path / "input" / EXAMPLE_CLIP).exists()
    elsewhere = make_tiny(str(tmp_path / "not-a-comfyui-tree"))  # e.g. the demo's temporary folder
    assert "input_clip" not in elsewhere and set(elsewhere) == set(TINY_FILES.values())
