"""The web extension (web/js): stage-II cost readout and the "Refine this preview" button.

Static checks always run: the files parse (``node --check``, when node is installed), they name only node ids,
widgets and combo options the pack really has, and the JS estimate (run in node) agrees with the Python core
on token counts, FLOPs and memory. The browser check needs a ComfyUI checkout (as test_comfyui_real) and
Playwright with a Chromium; it is skipped with one reason otherwise (ENABLE_BROWSER says how to enable it).
Its screenshots land in test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import fake_comfy
from support.comfyui_host import ComfyUIServer, locate_comfyui, make_base_dir

pack = fake_comfy.install()
from flashvideo_pack_under_test.nodes import NODES  # noqa: E402
from flashvideo_pack_under_test.nodes.stage2_nodes import ATTENTION_CHOICES, RESOLUTION_CHOICES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "web" / "js"
MAIN_JS, ESTIMATE_JS = WEB / "flashvideo.js", WEB / "estimate.js"
ARTIFACTS = REPO / "test-artifacts"
EXAMPLES = REPO / "example_workflows"
PACK_FOLDER = "ComfyUI-FlashVideo"
NODE = shutil.which("node")
SCHEMAS = {cls.define_schema().node_id: cls.define_schema() for cls in NODES}
SIZES = {"1080p": (1072, 1920), "2K": (1440, 2560)}
PAPER_STAGE2_S = {"1080p": 72.0, "2K": 209.8}  # the paper's stage-II time, 5 steps
PFLOP_PER_STEP = {"1080p": 5.61e15, "2K": 17.2e15}  # benchmarks/results/dit_cpu.md
BUTTON = "Refine this preview"
STAGE2_TYPES = {"FlashVideoStage2Upscale", "FlashVideoLatentDegrade", "FlashVideoStage2Refiner"}
ENABLE_BROWSER = (
    "to enable: python -m venv /tmp/pw-venv && PIP_CONSTRAINT=constraints.txt /tmp/pw-venv/bin/pip install playwright, "
    "then a Chromium: /tmp/pw-venv/bin/python -m playwright install chromium (needs Playwright's CDN) or "
    "apt-get install chromium-headless-shell (Debian/Ubuntu), and run with "
    "FLASHVIDEO_PLAYWRIGHT_PYTHON=/tmp/pw-venv/bin/python [FLASHVIDEO_CHROMIUM=/path/to/chromium]"
)
needs_node = pytest.mark.skipif(NODE is None, reason="node (Node.js) not installed: JS syntax and estimate checks skipped")


def expected_tokens(label: str, frames: int = 49) -> int:
    from flashvideo_core.dit.config import STAGE2_CONFIG
    from flashvideo_core.dit.memory import TEXT_TOKENS, video_tokens

    height, width = SIZES[label]
    return video_tokens(STAGE2_CONFIG, (frames - 1) // 4 + 1, height // 8, width // 8) + TEXT_TOKENS


# ---------------------------------------------------------------------------------------------- static


def test_extension_files_are_es_modules_for_the_frontend():
    main = MAIN_JS.read_text()
    assert re.search(r'^import \{ app \} from "\.\./\.\./scripts/app\.js";$', main, re.M)
    assert re.search(r'app\.registerExtension\(\{\s*name: "FlashVideo\.\w+"', main)
    assert 'from "./estimate.js"' in main
    # estimate.js is loaded by node in these tests: no imports, nothing but exports and constants.
    assert not re.search(r"^\s*import\b", ESTIMATE_JS.read_text(), re.M)
    # One loading mechanism only (COMFYUI.md section 4): WEB_DIRECTORY, no [tool.comfy] web.
    assert 'WEB_DIRECTORY = "./web/js"' in (REPO / "__init__.py").read_text()
    assert not re.search(r"^web\s*=", (REPO / "pyproject.toml").read_text(), re.M)


def test_js_names_only_existing_nodes_widgets_and_options():
    text = MAIN_JS.read_text() + ESTIMATE_JS.read_text()
    ids = set(re.findall(r'"(FlashVideo[A-Za-z0-9]+)"', text))
    assert ids and ids <= set(SCHEMAS), f"unknown node ids in web/js: {sorted(ids - set(SCHEMAS))}"

    widgets = set(re.findall(r'widgetValue\((?:\w+|\w+\([^()]*\)), "(\w+)"', text)) | set(re.findall(r'w\.name === "(\w+)"', text))
    inputs = {i.id for node_id in ("FlashVideoStage2Upscale", "FlashVideoStage2Refiner", "FlashVideoStage1Sampler")
              for i in SCHEMAS[node_id].inputs}
    assert widgets and widgets <= inputs, f"unknown widget names in web/js: {sorted(widgets - inputs)}"

    resolutions = re.search(r"RESOLUTIONS = \{(.*?)\};", text).group(1)
    assert re.findall(r'"([^"]+)": \[', resolutions) == RESOLUTION_CHOICES[:2]
    assert RESOLUTION_CHOICES[2] == "custom" and '"custom"' in text
    assert re.search(r'WINDOW_ATTENTION = "([^"]+)"', text).group(1) == ATTENTION_CHOICES[1]


@needs_node
def test_js_parses(tmp_path):
    for path in (MAIN_JS, ESTIMATE_JS):
        copy = tmp_path / (path.stem + ".mjs")  # parse as an ES module whatever node's default is
        copy.write_text(path.read_text())
        proc = subprocess.run([NODE, "--check", str(copy)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{path.name} does not parse:\n{proc.stderr}"


@pytest.fixture(scope="module")
def js_estimates(tmp_path_factory):
    """The pure functions of estimate.js, run in node for 1080p, 2K and a few variations."""
    if NODE is None:
        pytest.skip("node (Node.js) not installed: JS syntax and estimate checks skipped")
    module = tmp_path_factory.mktemp("js") / "estimate.mjs"
    module.write_text(ESTIMATE_JS.read_text())
    script = f"""
      import * as m from {json.dumps(module.as_uri())};
      const out = {{}};
      for (const [label, [height, width]] of Object.entries(m.RESOLUTIONS)) {{
        const key = label.split(" ")[0], tokens = m.stage2Tokens(height, width);
        out[key] = {{ tokens, flops: m.flopsPerStep(tokens), window_flops: m.flopsPerStep(tokens, true),
                      bytes: m.stage2Bytes(tokens), estimate: m.estimate({{height, width}}),
                      lines: m.describe({{label, height, width}}),
                      lines_10_window: m.describe({{label, height, width, steps: 10, windowed: true}}) }};
      }}
      out.custom = m.describe({{label: "custom", height: 512, width: 896, frames: 25, steps: 1}});
      console.log(JSON.stringify(out));
    """
    proc = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("label", ["1080p", "2K"])
def test_js_estimate_agrees_with_python(js_estimates, label):
    import torch

    from flashvideo_core.dit.config import STAGE2_CONFIG
    from flashvideo_core.dit.memory import forward_bytes
    from flashvideo_core.dit.model import FlashVideoDiT

    js = js_estimates[label]
    tokens = expected_tokens(label)
    assert js["tokens"] == tokens == {"1080p": 104_746, "2K": 187_426}[label]
    assert js["flops"] == pytest.approx(PFLOP_PER_STEP[label], rel=0.01)
    assert js["window_flops"] < 0.2 * js["flops"]

    with torch.device("meta"):
        params = sum(p.numel() for p in FlashVideoDiT(STAGE2_CONFIG).parameters())
    height, width = SIZES[label]
    python_bytes = 2 * params + forward_bytes(STAGE2_CONFIG, (1, 16, 13, height // 8, width // 8), torch.bfloat16)
    assert js["bytes"] - 2e9 == pytest.approx(python_bytes, rel=0.01)  # + the 2 GB allowance for the rest

    fastest, slowest = js["estimate"]["seconds"]
    assert fastest <= PAPER_STAGE2_S[label] <= slowest, "the paper's time should fall inside the readout's range"
    assert js["estimate"]["gpuClassGB"] >= js["bytes"] / 1e9


def test_js_readout_text(js_estimates):
    assert js_estimates["1080p"]["lines"] == ["1080p · 104,746 tokens", "~28-75 s on an H100 at 5 steps · needs ~16 GB+"]
    assert js_estimates["2K"]["lines"] == ["2K · 187,426 tokens", "~1.4-3.8 min on an H100 at 5 steps · needs ~24 GB+"]
    assert "at 10 steps (window attn" in js_estimates["2K"]["lines_10_window"][1]
    assert js_estimates["custom"][0] == f"custom 512x896 (25 frames) · {7 * 32 * 56 + 226:,} tokens"


# --------------------------------------------------------------------------------------------- browser


def _browser_setup():
    """(python with playwright, chromium path or None for Playwright's own build), or a skip reason."""
    python = os.environ.get("FLASHVIDEO_PLAYWRIGHT_PYTHON")
    if python:
        if not Path(python).is_file():
            return f"browser test skipped: FLASHVIDEO_PLAYWRIGHT_PYTHON={python} does not exist ({ENABLE_BROWSER})"
    elif importlib.util.find_spec("playwright") is not None:
        python = sys.executable
    else:
        return f"browser test skipped: Playwright is not installed for this Python ({ENABLE_BROWSER})"
    chromium = os.environ.get("FLASHVIDEO_CHROMIUM")
    if chromium and not Path(chromium).is_file():
        return f"browser test skipped: FLASHVIDEO_CHROMIUM={chromium} does not exist ({ENABLE_BROWSER})"
    if not chromium:
        names = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        chromium = next(filter(None, map(shutil.which, names)), None)
    return python, chromium


@pytest.fixture(scope="module")
def browser_setup():
    setup = _browser_setup()
    if isinstance(setup, str):
        print(setup, file=sys.stderr)
        pytest.skip(setup)
    location = locate_comfyui()
    if isinstance(location, str):
        pytest.skip(location)
    return setup, location


@pytest.fixture(scope="module")
def web_server(browser_setup, tmp_path_factory):
    _, location = browser_setup
    base = make_base_dir(tmp_path_factory.mktemp("comfyui-web"), REPO, PACK_FOLDER)
    settings = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False,
                "Comfy.Notification.ShowVersionUpdates": False}  # no first-run dialogs over the canvas
    (base / "user" / "default").mkdir(parents=True, exist_ok=True)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(settings))
    host = ComfyUIServer(location, base, base / "server.log").start()
    try:
        try:
            host.wait_ready(90)
        except RuntimeError as err:
            pytest.fail(f"ComfyUI server did not start: {err}", pytrace=False)
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="module")
def browser_run(browser_setup, web_server, tmp_path_factory):
    (python, chromium), _ = browser_setup
    workflows = {"1080p": "flashvideo_1080p.json", "2k": "flashvideo_2k.json", "270p": "flashvideo_270p_preview.json"}
    config = {"url": web_server.url, "chromium": chromium, "artifacts": str(ARTIFACTS),
              "workflows": {name: str(EXAMPLES / file) for name, file in workflows.items()}}
    config_path = tmp_path_factory.mktemp("web-driver") / "config.json"
    config_path.write_text(json.dumps(config))
    driver = Path(__file__).parent / "support" / "web_driver.py"
    proc = subprocess.run([python, str(driver), str(config_path)], capture_output=True, text=True, timeout=300)
    if proc.returncode == 3:
        reason = f"browser test skipped: {proc.stderr.strip()} ({ENABLE_BROWSER})"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    assert proc.returncode == 0, f"web driver failed ({proc.returncode}):\n{proc.stderr[-6000:]}\n{web_server.log_tail()}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _saved(file: str) -> dict:
    return {str(n["id"]): n for n in json.loads((EXAMPLES / file).read_text())["nodes"]}


@pytest.mark.comfyui
def test_browser_extension_in_real_comfyui(browser_run):
    run = browser_run
    assert run["extension_loaded"]
    ours = [e for e in run["page_errors"] if "FlashVideo" in e]
    assert not ours, "the extension threw in the page:\n" + "\n".join(ours)

    for name, file, label in (("1080p", "flashvideo_1080p.json", "1080p"), ("2k", "flashvideo_2k.json", "2K")):
        loaded, saved = run["loaded"][name], _saved(file)
        # Saved workflows load and save back with the very same widgets_values (the button is not serialized).
        for node_id, node in saved.items():
            assert loaded["widgets_values"][node_id] == node.get("widgets_values"), f"{file} node {node_id}"
        head = f"{label} · {expected_tokens(label):,} tokens"
        for node_id, lines in loaded["readouts"].items():
            assert lines[0] == head and "on an H100 at 5 steps" in lines[1] and "GB+" in lines[1], lines
            assert loaded["drawn"][node_id] == " · ".join(lines), "the readout was not drawn on the canvas"
        assert len(loaded["readouts"]) == 2
        button = loaded["sampler_widgets"][-1]
        assert button == {"name": BUTTON, "type": "button", "serialize": False, "options_serialize": False}
        assert BUTTON not in loaded["sampler_prompt_inputs"]

    changed = run["changed"]
    for text in changed.values():
        assert text.startswith(f"2K · {expected_tokens('2K'):,} tokens") and "at 10 steps (window attn" in text, text

    saved = _saved("flashvideo_1080p.json")
    disabled = {i for i, mode in run["preview_modes"].items() if mode in (2, 4)}
    assert {i for i, n in saved.items() if n["type"] in STAGE2_TYPES} <= disabled
    assert run["click_queued"] == 1, "clicking the button queued no prompt"
    prompt = run["prompts"][0]["prompt"]
    types = [node["class_type"] for node in prompt.values()]
    assert STAGE2_TYPES <= set(types) and types.count("SaveVideo") == 2, sorted(types)
    assert all(run["modes_after_click"][i] == 0 for i in disabled)

    assert run["randomize"] == 0 and any("randomize" in t for t in run["randomize_toasts"]), run["randomize_toasts"]
    assert run["no_stage2"] == 0 and any("No FlashVideo stage-II nodes" in t for t in run["no_stage2_toasts"])
    assert run["prompts_total"] == 1, "a refused click must not queue"
    for path in run["screenshots"]:
        assert Path(path).is_file() and Path(path).stat().st_size > 10_000
