"""The web extension (web/js): stage-II cost readout and the "Refine this preview" button.

Static checks always run: the files parse (``node --check``, when node is installed), they name only node ids,
widgets and combo options the pack really has, and the JS estimate (run in node) agrees with the Python core
on token counts, FLOPs and memory. The browser check needs a ComfyUI checkout (as test_comfyui_real) and
Playwright with a Chromium, both from the team's shared set-up scripts (support/hosts.py); without them it is
skipped with one reason. It runs once per tested host; its screenshots land in test-artifacts/comfyui-VERSION/
(git-ignored).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import fake_comfy
from support.comfyui_host import ComfyUIServer, history_messages, make_base_dir
from support.hosts import PREPARATIONS, HostSetupError, host_specs
from support.node_schemas import core_nodes_for
from support.workflow_runs import check_smoke_run, install_models, smoke_variant

pack = fake_comfy.install()
from flashvideo_pack_under_test.nodes import NODES  # noqa: E402
from flashvideo_pack_under_test.nodes.pipeline_nodes import ATTENTION_CHOICES, RESOLUTION_CHOICES  # noqa: E402

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
    # One loading mechanism only (docs/HOST.md#registration): WEB_DIRECTORY, no [tool.comfy] web.
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


def test_js_constants_are_the_cores():
    """estimate.js copies the stage-II model, the memory model and the defaults: each copy equals the core's."""
    from flashvideo_core.dit import memory
    from flashvideo_core.dit.config import STAGE2_CONFIG as config
    from flashvideo_core.settings import Stage1Settings, Stage2Settings

    js = {name: float(value) for name, value in re.findall(r"\b([A-Z][A-Z0-9_]*) = (\d[\d.e]*)[,;]", ESTIMATE_JS.read_text())}
    core = {"TEXT_TOKENS": memory.TEXT_TOKENS, "LAYERS": config.num_layers, "WIDTH": config.hidden_size, "CFG_BATCH": 2,
            "TIME_DIM": config.time_embed_dim, "TEXT_DIM": config.text_hidden_size, "HEAD_DIM": config.head_dim,
            "WIDTHS_WHOLE": memory.WIDTHS_WHOLE, "WIDTHS_LEAN": memory.WIDTHS_CHUNKED_ATTENTION,
            "DEFAULT_FRAMES": Stage1Settings.frames, "DEFAULT_STEPS": Stage2Settings.steps}
    assert {name: js.get(name) for name in core} == core


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
                      bytes: m.stage2Bytes(tokens), lean_bytes: m.stage2LeanBytes(tokens),
                      estimate: m.estimate({{height, width}}),
                      lines: m.describe({{label, height, width}}),
                      lines_10_window: m.describe({{label, height, width, steps: 10, windowed: true}}) }};
      }}
      out.custom = m.describe({{label: "custom", height: 512, width: 896, frames: 25, steps: 1}});
      out.durations = [[0.2, 0.6], [0.6, 1.4], [3.1, 8.2], [28.4, 74.7], [118, 121], [84, 228]].map(m.formatDuration);
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
    latent = (1, 16, 13, height // 8, width // 8)
    python_bytes = 2 * params + forward_bytes(STAGE2_CONFIG, latent, torch.bfloat16)
    assert js["bytes"] - 2e9 == pytest.approx(python_bytes, rel=0.01)  # + the 2 GB allowance for the rest
    lean_python = 2 * params + forward_bytes(STAGE2_CONFIG, latent, torch.bfloat16, cfg_batch=1, chunk_tokens=1024)
    assert js["lean_bytes"] - 2e9 == pytest.approx(lean_python, rel=0.01)

    fastest, slowest = js["estimate"]["seconds"]
    assert fastest <= PAPER_STAGE2_S[label] <= slowest, "the paper's time should fall inside the readout's range"
    assert js["estimate"]["gpuClassGB"] >= js["bytes"] / 1e9


def test_js_readout_text(js_estimates):
    assert js_estimates["1080p"]["lines"] == ["1080p · 104,746 tokens",
                                              "~28-75 s on an H100 at 5 steps · ~16 GB+ (lean: 8 GB)"]
    assert js_estimates["2K"]["lines"] == ["2K · 187,426 tokens", "~1.4-3.8 min on an H100 at 5 steps · ~24 GB+ (lean: 12 GB)"]
    assert "at 10 steps (window attn" in js_estimates["2K"]["lines_10_window"][1]
    assert js_estimates["custom"][0] == f"custom 896x512 (25 frames) · {7 * 32 * 56 + 226:,} tokens"  # W x H
    assert js_estimates["durations"] == ["<1 s", "~1 s", "~3-8 s", "~28-75 s", "~2.0 min", "~1.4-3.8 min"]


# --------------------------------------------------------------------------------------------- browser
# Per tested host (support/hosts.py): a server with every file the templates name, the frontend driven by
# support/web_driver.py in headless Chromium (support/hosts.py sets it up from the shared script).

TEMPLATES = sorted(path.stem for path in EXAMPLES.glob("*.json"))
FRONTEND_RUNS: dict = {}  # host version -> the driver's report on the templates (what that frontend saved)


@pytest.fixture(scope="session")
def browser():
    try:
        setup = PREPARATIONS.browser().result()
    except HostSetupError as err:
        pytest.fail(str(err), pytrace=False)
    if isinstance(setup, str):
        print(setup, file=sys.stderr)
        pytest.skip(setup)
    return setup


def start_frontend_server(location, base: Path) -> ComfyUIServer:
    """A server whose model folders hold every file the templates name, with no first-run dialogs."""
    make_base_dir(base, REPO, PACK_FOLDER)
    install_models(base)  # the README's make-tiny step: nothing else
    settings = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False,
                "Comfy.Notification.ShowVersionUpdates": False}
    (base / "user" / "default").mkdir(parents=True, exist_ok=True)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(settings))
    server = ComfyUIServer(location, base, base / "server.log").start()
    try:
        server.wait_ready(90)
    except RuntimeError as err:
        server.stop()
        pytest.fail(f"ComfyUI server did not start: {err}", pytrace=False)
    return server


def drive_frontend(browser, server: ComfyUIServer, workflows: dict, artifacts: Path, interact: bool = False,
                   run: bool = False) -> dict:
    """Run support/web_driver.py against ``server`` on ``workflows`` ({name: file}); its JSON report. With
    ``run``, each workflow is also run from the frontend as shipped, CPU-sized (sizes, frames, steps)."""
    config = {"url": server.url, "chromium": browser.chromium, "artifacts": str(artifacts), "interact": interact,
              "run": run,
              "workflows": {name: str(path) for name, path in workflows.items()}}
    config_path = artifacts / "driver-config.json"
    artifacts.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config))
    driver = Path(__file__).parent / "support" / "web_driver.py"
    proc = subprocess.run([browser.python, str(driver), str(config_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"web driver failed ({proc.returncode}):\n{proc.stderr[-6000:]}\n{server.log_tail()}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    (artifacts / "driver-report.json").write_text(json.dumps(report, indent=1))  # kept for a look
    return report


@pytest.fixture(scope="module")
def web_server(comfyui_host, browser, tmp_path_factory):
    server = start_frontend_server(comfyui_host.location, tmp_path_factory.mktemp("comfyui-web"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser_run(comfyui_host, browser, web_server):
    report = drive_frontend(browser, web_server, {name: EXAMPLES / f"{name}.json" for name in TEMPLATES},
                            ARTIFACTS / comfyui_host.spec.test_id, interact=True, run=True)
    FRONTEND_RUNS[comfyui_host.version] = report
    return report


def expected_widgets_values(template: str, version: str) -> dict:
    """{node id: widgets_values} a host's frontend should save for a template: the template's own values, plus
    the host's defaults for core widgets the template does not set (support/node_schemas.py). No widgets: None
    (0.33 saves a widget-less node without the empty list)."""
    core = core_nodes_for(version)
    return {str(node["id"]): ((node.get("widgets_values") or []) + core.get(node["type"], {}).get("added", [])) or None
            for node in json.loads((EXAMPLES / f"{template}.json").read_text())["nodes"]}


def check_loaded_cleanly(loaded: dict, template: str, version: str) -> None:
    assert not loaded["missing"], f"{template}: missing node types {loaded['missing']}"
    assert not loaded["errors"], f"{template}: nodes outlined as errors {loaded['errors']}"
    assert "alert" not in (loaded["run_icon"] or ""), f"{template}: the Run button shows a warning"
    got = {str(k): v or None for k, v in loaded["widgets_values"].items()}
    assert got == expected_widgets_values(template, version), f"{template}: widgets_values changed on load/save"
    models = {str(n["id"]): n["properties"]["models"] for n in json.loads((EXAMPLES / f"{template}.json").read_text())["nodes"]
              if "models" in n.get("properties", {})}
    saved = {str(n["id"]): n.get("properties", {}).get("models") for n in loaded["saved"]["nodes"]}
    assert models and all(saved[i] == m for i, m in models.items()), f"{template}: properties.models lost on load/save"


@pytest.mark.comfyui
@pytest.mark.parametrize("template", TEMPLATES)
def test_template_loads_cleanly_and_round_trips(comfyui_host, browser_run, template):
    """No missing nodes, no error outlines, no warning on Run; saving gives back the template's values."""
    check_loaded_cleanly(browser_run["loaded"][template], template, comfyui_host.version)
    shot = ARTIFACTS / comfyui_host.spec.test_id / f"{template}.png"
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert not browser_run["dialogs"], browser_run["dialogs"]
    assert not browser_run["load_toasts"], browser_run["load_toasts"]


def overlapping(boxes: list) -> list:
    """Pairs of nodes whose bounding boxes [x, y, w, h] intersect."""
    def meet(a, b):
        return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
    return [(p["type"], q["type"]) for i, p in enumerate(boxes) for q in boxes[i + 1:] if meet(p["box"], q["box"])]


@pytest.mark.comfyui
@pytest.mark.parametrize("template", TEMPLATES)
def test_nodes_do_not_overlap_after_a_run_from_the_frontend(comfyui_host, browser_run, template):
    """Run from the frontend as shipped on make-tiny's files (CPU-sized: sizes, frames, steps): it succeeds, and
    though previews and video players make nodes grow, no node covers another (the layout is saved into the
    videos)."""
    run = browser_run["runs"][template]
    assert run["status"] == "success", run["status"]
    assert not overlapping(run["boxes"]), f"{template} on {comfyui_host.version}: {overlapping(run['boxes'])}"


@pytest.mark.comfyui
@pytest.mark.parametrize("template", TEMPLATES)
def test_the_prompt_this_frontend_queues_for_a_template_runs(comfyui_host, browser_run, web_server, template):
    """What Run sends (the host's own UI -> API conversion, e.g. 0.33's dotted SaveVideo keys) runs at CPU size."""
    prompt = smoke_variant(browser_run["loaded"][template]["prompt"], output_folder="frontend")
    entry = web_server.run_prompt(prompt, 60)
    assert entry["status"]["status_str"] == "success", history_messages(entry, "execution_error")
    check_smoke_run(entry, web_server.base, template)


@pytest.mark.comfyui
def test_workflows_saved_on_the_other_hosts_load_and_run_here(comfyui_host, browser, browser_run, web_server,
                                                             tmp_path_factory):
    """Each template as another tested host's frontend saved it (e.g. 0.33's extra CreateVideo/SaveVideo values)
    loads cleanly in this host's frontend, keeps the template's values, and what Run sends here runs."""
    others = [spec for spec in host_specs() if spec.version != comfyui_host.version]
    if not others:
        pytest.skip(f"only one host is tested ({comfyui_host.version})")
    for other in others:
        report = FRONTEND_RUNS.get(other.version)
        if report is None:  # that host's browser test has not run in this session: drive its frontend now
            server = start_frontend_server(PREPARATIONS.host(other).result(), tmp_path_factory.mktemp("comfyui-web"))
            try:
                report = drive_frontend(browser, server, {n: EXAMPLES / f"{n}.json" for n in TEMPLATES},
                                        ARTIFACTS / other.test_id)
            finally:
                server.stop()
            FRONTEND_RUNS[other.version] = report
        folder = ARTIFACTS / other.test_id / "saved"  # as that frontend saved them (kept for a look)
        folder.mkdir(parents=True, exist_ok=True)
        saved = {}
        for name in TEMPLATES:
            saved[name] = folder / f"{name}.json"
            saved[name].write_text(json.dumps(report["loaded"][name]["saved"]))
        here = drive_frontend(browser, web_server, saved, ARTIFACTS / comfyui_host.spec.test_id / f"saved-on-{other.version}")
        assert not here["dialogs"], here["dialogs"]
        assert not here["load_toasts"], here["load_toasts"]
        for name in TEMPLATES:
            check_loaded_cleanly(here["loaded"][name], name, comfyui_host.version)
            prompt = smoke_variant(here["loaded"][name]["prompt"], output_folder=f"saved-on-{other.version}")
            entry = web_server.run_prompt(prompt, 60)
            assert entry["status"]["status_str"] == "success", (name, history_messages(entry, "execution_error"))
            check_smoke_run(entry, web_server.base, name)


def _saved(file: str) -> dict:
    return {str(n["id"]): n for n in json.loads((EXAMPLES / file).read_text())["nodes"]}


@pytest.mark.comfyui
def test_browser_extension_in_real_comfyui(browser_run):
    run = browser_run
    assert run["extension_loaded"]
    ours = [e for e in run["page_errors"] if "FlashVideo" in e]
    assert not ours, "the extension threw in the page:\n" + "\n".join(ours)

    for name, label in (("flashvideo_1080p", "1080p"), ("flashvideo_2k", "2K")):
        loaded = run["loaded"][name]  # (its widgets_values round trip: test_template_loads_cleanly_and_round_trips)
        head = f"{label} · {expected_tokens(label):,} tokens"
        for node_id, lines in loaded["readouts"].items():
            assert lines[0] == head and "on an H100 at 5 steps" in lines[1] and "GB+" in lines[1], lines
            assert loaded["drawn"][node_id] == " · ".join(lines), "the readout was not drawn on the canvas"
        assert len(loaded["readouts"]) == 2
        button = loaded["sampler_widgets"][-1]
        assert button == {"name": BUTTON, "type": "button", "serialize": False, "options_serialize": False}
        assert BUTTON not in loaded["sampler_prompt_inputs"]

    changed = run["changed"]
    # Upscale's width/height show only for "custom" (they stay in widgets_values: the round-trip test)
    assert changed.pop("hidden_at_2k") == ["width", "height"] and changed.pop("hidden_at_custom") == []
    assert changed.pop("custom_readout").startswith("custom 1920x1072 · "), "custom size as W x H"
    for loaded in run["loaded"].values():
        assert all(names == ["width", "height"] for names in loaded["hidden_widgets"].values()), loaded["hidden_widgets"]
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
