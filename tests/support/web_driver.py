"""Drive the ComfyUI frontend in headless Chromium (Playwright) and report what the FlashVideo web extension did.

Run by tests/test_web_extension.py in a Python that has ``playwright`` (not necessarily the test venv):

    python tests/support/web_driver.py CONFIG.json   ->   one JSON object on stdout

CONFIG: ``url`` (a running ComfyUI), ``chromium`` (executable path, or null for Playwright's own build),
``workflows`` ({name: UI-format workflow file}), ``artifacts`` (folder for screenshots), ``interact`` (also
exercise the extension's readouts and button; needs the 1080p and 270p templates), ``run`` (true: also run each
workflow from the frontend at CPU size, as shipped but for sizes, and report the node boxes afterwards). Each workflow is loaded,
inspected (missing node types, nodes flagged with errors, the Run button's icon, widgets_values and the whole
graph as the frontend saves it, the prompt it would queue) and photographed. The test makes the assertions; this
script only acts and observes. Exit code 3 (message on stderr): no browser could be launched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXTENSION = "FlashVideo.Stage2Helpers"
MODULE = "/extensions/ComfyUI-FlashVideo/flashvideo.js"
STAGE2_TYPES = ("FlashVideoStage2Upscale", "FlashVideoLatentDegrade", "FlashVideoStage2Refiner")
TEXT_TO_VIDEO, PREVIEW_ONLY = "flashvideo_1080p", "flashvideo_270p_preview"  # the templates interact() uses

# Widgets values as saved, readouts (computed and as last drawn), and the sampler's widgets.
SNAPSHOT_JS = """async () => {
  const m = await import('%s');
  app.canvas.draw(true, true);
  // through JSON, as a saved file or a queued prompt is (undefined fields vanish, as they do on disk)
  const saved = JSON.parse(JSON.stringify(app.graph.serialize()));
  const prompt = JSON.parse(JSON.stringify((await app.graphToPrompt()).output));
  const nodes = app.graph.nodes;
  const readoutNodes = nodes.filter((n) => ['FlashVideoStage2Upscale', 'FlashVideoStage2Refiner'].includes(n.comfyClass));
  const sampler = nodes.find((n) => n.comfyClass === 'FlashVideoStage1Sampler');
  const icon = document.querySelector('[data-testid="queue-button-icon"]');
  return {
    saved,
    prompt,
    missing: nodes.filter((n) => !LiteGraph.registered_node_types[n.type]).map((n) => n.type),
    errors: nodes.filter((n) => n.has_errors).map((n) => `${n.id} ${n.type}`),
    run_icon: icon ? icon.className : null,
    widgets_values: Object.fromEntries(saved.nodes.map((n) => [n.id, n.widgets_values ?? null])),
    readouts: Object.fromEntries(readoutNodes.map((n) => [n.id, m.readout(n)])),
    hidden_widgets: Object.fromEntries(nodes.filter((n) => n.comfyClass === 'FlashVideoStage2Upscale')
                                       .map((n) => [n.id, n.widgets.filter((w) => w.hidden).map((w) => w.name)])),
    drawn: Object.fromEntries(readoutNodes.map((n) => [n.id, n.flashvideoReadout ?? null])),
    sampler_widgets: sampler?.widgets.map((w) => ({name: w.name, type: w.type, serialize: w.serialize ?? null,
                                                   options_serialize: w.options?.serialize ?? null})) ?? null,
    sampler_prompt_inputs: sampler ? Object.keys(prompt[String(sampler.id)]?.inputs ?? {}) : null,
  };
}""" % MODULE


class Page:
    """The ComfyUI page: load a workflow, photograph it, read toasts; queued prompts are captured, not run."""

    def __init__(self, page, workflows: dict, artifacts: Path, result: dict):
        self.page, self.workflows, self.artifacts, self.result = page, workflows, artifacts, result

    def load(self, name: str) -> None:
        self.page.evaluate("async (wf) => { await app.loadGraphData(wf) }", self.workflows[name])
        self.page.wait_for_timeout(300)

    def screenshot(self, name: str) -> None:
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path))
        self.result["screenshots"].append(str(path))

    def toasts(self) -> list:
        return self.page.locator(".p-toast-message").all_inner_texts()


def main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    artifacts = Path(config["artifacts"])
    artifacts.mkdir(parents=True, exist_ok=True)
    workflows = {name: json.loads(Path(path).read_text()) for name, path in config["workflows"].items()}

    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    result = {"page_errors": [], "prompts": [], "screenshots": []}
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=config.get("chromium") or None)
        except PlaywrightError as err:
            print(f"cannot launch Chromium ({config.get('chromium') or 'Playwright build'}): "
                  f"{str(err).splitlines()[0]}", file=sys.stderr)
            return 3
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("pageerror", lambda e: result["page_errors"].append(f"{e}\n{e.stack or ''}"))

            def on_prompt(route):  # capture queued prompts instead of running them
                if route.request.method != "POST":
                    return route.continue_()
                result["prompts"].append(route.request.post_data_json)
                route.fulfill(json={"prompt_id": f"web-test-{len(result['prompts'])}", "number": 0,
                                    "node_errors": {}})

            page.route("**/prompt", on_prompt)
            page.goto(config["url"])
            page.wait_for_function(
                f"() => window.app?.graph && app.extensions?.some((e) => e.name === '{EXTENSION}')", timeout=90_000)
            result["extension_loaded"] = True
            comfy = Page(page, workflows, artifacts, result)

            # 1. Each workflow as loaded: what the frontend flags, saves and would queue; a screenshot.
            result["loaded"] = {}
            for name in workflows:
                comfy.load(name)
                result["loaded"][name] = page.evaluate(SNAPSHOT_JS)
                comfy.screenshot(name)
            result["dialogs"] = page.locator(".p-dialog").all_inner_texts()
            result["load_toasts"] = comfy.toasts()  # e.g. schema alerts for a workflow the frontend rejects
            if config.get("interact"):
                interact(page, comfy, result, workflows)
            if config.get("run"):
                page.unroute("**/prompt")  # from here on prompts really run on the server
                result["runs"] = {name: run_in_the_frontend(page, comfy, name) for name in workflows}
            result["prompts_total"] = len(result["prompts"])
        finally:
            browser.close()
    print(json.dumps(result))
    return 0


# CPU-size settings, applied in the graph as an artist would: sizes, frames and steps only (the templates run
# as shipped on make-tiny's files, tiny T5 included).
SMOKE_JS = """async () => {
  const set = (n, name, v) => { const w = n.widgets?.find((w) => w.name === name); if (w) { w.value = v; w.callback?.(v); } };
  for (const n of app.graph.nodes) {
    if (n.comfyClass === 'FlashVideoStage1Sampler') { set(n, 'width', 48); set(n, 'height', 32); set(n, 'frames', 9); set(n, 'steps', 4); }
    if (n.comfyClass === 'FlashVideoStage2Upscale') { set(n, 'resolution', 'custom'); set(n, 'width', 96); set(n, 'height', 64); }
    if (['FlashVideoStage2Refiner', 'FlashVideoStage2Sigmas'].includes(n.comfyClass)) set(n, 'steps', 3);
    if (n.comfyClass === 'FlashVideoEnhanceVideo') { set(n, 'resolution', 'custom'); set(n, 'width', 96); set(n, 'height', 64); set(n, 'steps', 3); }
  }
}"""

BOXES_JS = """() => { app.canvas.draw(true, true);
  return app.graph.nodes.map((n) => ({id: n.id, type: n.comfyClass ?? n.type, box: [...n.boundingRect]})); }"""


def run_in_the_frontend(page, comfy: Page, name: str) -> dict:
    """Load ``name``, shrink it to CPU size, queue it for real, wait for the server, and report where every node
    ended up (previews and videos make nodes grow after a run) and how the prompt ended."""
    import time
    import urllib.request

    comfy.load(name)
    page.evaluate(SMOKE_JS)
    page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    base = page.url.split("#")[0].rstrip("/")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        queue = json.loads(urllib.request.urlopen(f"{base}/queue", timeout=10).read())
        if not queue["queue_running"] and not queue["queue_pending"]:
            break
        page.wait_for_timeout(500)
    history = json.loads(urllib.request.urlopen(f"{base}/history?max_items=1", timeout=10).read())
    status = next(iter(history.values()), {}).get("status", {}).get("status_str") if history else None
    page.wait_for_timeout(1000)  # let previews and video players settle into the nodes
    boxes = page.evaluate(BOXES_JS)
    comfy.screenshot(f"{name}_after_run")
    return {"status": status, "boxes": boxes}


def interact(page, comfy: Page, result: dict, workflows: dict) -> None:
    """The extension at work on the text-to-video templates: readouts follow widget changes, and the
    'Refine this preview' button (clicked for real) un-bypasses stage II and queues, or explains why not."""
    load, screenshot, toasts = comfy.load, comfy.screenshot, comfy.toasts
    # 2. The readouts follow widget changes (Upscale -> 2K, Refiner -> 10 steps, window attention).
    load(TEXT_TO_VIDEO)
    result["changed"] = page.evaluate("""async () => {
      const byClass = (c) => app.graph.nodes.find((n) => n.comfyClass === c);
      const set = (node, name, value) => { const w = node.widgets.find((w) => w.name === name);
                                           w.value = value; w.callback?.(value); };
      const upscale = byClass('FlashVideoStage2Upscale'), refiner = byClass('FlashVideoStage2Refiner');
      set(upscale, 'resolution', '2K (1440x2560)');
      set(refiner, 'steps', 10);
      set(refiner, 'attention', 'window 7x11x11 (experimental)');
      app.canvas.draw(true, true);
      const hidden = () => upscale.widgets.filter((w) => w.hidden).map((w) => w.name);
      const at2k = hidden();
      set(upscale, 'resolution', 'custom');
      const atCustom = hidden();
      const customReadout = (app.canvas.draw(true, true), upscale.flashvideoReadout);
      set(upscale, 'resolution', '2K (1440x2560)');
      app.canvas.draw(true, true);
      return {upscale: upscale.flashvideoReadout, refiner: refiner.flashvideoReadout,
              hidden_at_2k: at2k, hidden_at_custom: atCustom, custom_readout: customReadout};
    }""")

    # 3. The artist previews with stage II bypassed (loader muted); one click on the real button.
    load(TEXT_TO_VIDEO)
    result["preview_modes"] = page.evaluate("""async (types) => {
      const m = await import('%s');
      const core = app.graph.nodes.filter((n) => types.includes(n.comfyClass));
      for (const n of core) for (const d of [n, ...m.linked(n, 'down')]) d.mode = 4;
      for (const n of core) for (const u of m.linked(n, 'up'))
        if (u.comfyClass === 'FlashVideoModelLoader' && u.widgets[0].value.includes('stage2')) u.mode = 2;
      app.canvas.draw(true, true);
      return Object.fromEntries(app.graph.nodes.map((n) => [n.id, n.mode]));
    }""" % MODULE, list(STAGE2_TYPES))
    screenshot("flashvideo_web_preview_mode")
    x, y = page.evaluate("""() => {
      const n = app.graph.nodes.find((n) => n.comfyClass === 'FlashVideoStage1Sampler');
      const w = n.widgets.find((w) => w.type === 'button');
      const [x, y] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0] / 2, n.pos[1] + w.y + 10]);
      const r = app.canvas.canvas.getBoundingClientRect();
      return [r.left + x, r.top + y];
    }""")
    prompts_before = len(result["prompts"])
    page.mouse.click(x, y)
    for _ in range(50):
        if len(result["prompts"]) > prompts_before:
            break
        page.wait_for_timeout(100)
    result["click_queued"] = len(result["prompts"]) - prompts_before
    result["modes_after_click"] = page.evaluate(
        "() => Object.fromEntries(app.graph.nodes.map((n) => [n.id, n.mode]))")
    page.wait_for_timeout(300)
    screenshot("flashvideo_web_extension")

    # 4. A randomized stage-I seed would not refine *this* preview: refused with a message.
    result["randomize"] = page.evaluate("""async () => {
      const m = await import('%s');
      const sampler = app.graph.nodes.find((n) => n.comfyClass === 'FlashVideoStage1Sampler');
      sampler.widgets.find((w) => w.name === 'control_after_generate').value = 'randomize';
      app.graph.nodes.find((n) => n.comfyClass === 'FlashVideoStage2Refiner').mode = 4;
      return (await m.refinePreview(sampler)).length;
    }""" % MODULE)
    page.wait_for_timeout(500)
    result["randomize_toasts"] = toasts()

    # 5. A preview-only graph: the button explains that there is no stage II.
    if PREVIEW_ONLY in workflows:
        load(PREVIEW_ONLY)
        result["no_stage2"] = page.evaluate("""async () => {
          const m = await import('%s');
          const sampler = app.graph.nodes.find((n) => n.comfyClass === 'FlashVideoStage1Sampler');
          return (await m.refinePreview(sampler)).length;
        }""" % MODULE)
        page.wait_for_timeout(500)
        result["no_stage2_toasts"] = toasts()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
