/**
 * FlashVideo web extension: two small helpers for the two-stage workflow.
 *
 * 1. Cost readout under FlashVideoStage2Upscale and FlashVideoStage2Refiner. Stage II is the expensive part
 *    (attention grows with tokens², 2K costs ~3x 1080p), so the artist sees the token count, a rough H100
 *    time and the GPU memory class before queueing. The Refiner finds the resolution on the Upscale node
 *    upstream of its `samples`; the Upscale uses the steps/attention of a Refiner downstream (else 5, full).
 *    The frame count comes from a Stage1Sampler upstream (else 49). Drawn in onDrawForeground under the
 *    node (right of it when another node sits there), so it follows every widget change and adds no
 *    widget: saved `widgets_values` stay exactly as they were.
 *
 * 2. Upscale's width/height matter only for resolution "custom": they are hidden otherwise (still saved, so
 *    widgets_values keep their positions) and shown again when "custom" is picked.
 *
 * 3. "Refine this preview" button on FlashVideoStage1Sampler. Artists preview with the stage-II nodes
 *    bypassed or muted; the button re-enables the stage-II branch fed by this sampler (Upscale, Degrade,
 *    Refiner, what they feed and the muted/bypassed nodes they need) and queues the graph. Stage I comes
 *    from ComfyUI's cache because its inputs did not change. The button is not serialized
 *    (widget.serialize = false keeps it out of widgets_values, options.serialize = false out of the prompt)
 *    and is the node's last widget, so saved workflows load and save unchanged.
 */
import { app } from "../../scripts/app.js";
import { DEFAULT_FRAMES, DEFAULT_STEPS, RESOLUTIONS, WINDOW_ATTENTION, describe } from "./estimate.js";

const UPSCALE = "FlashVideoStage2Upscale";
const DEGRADE = "FlashVideoLatentDegrade";
const REFINER = "FlashVideoStage2Refiner";
const SAMPLER = "FlashVideoStage1Sampler";
const STAGE2 = [UPSCALE, DEGRADE, REFINER];
const MUTED = 2, BYPASSED = 4, ALWAYS = 0;
export const BUTTON_LABEL = "Refine this preview";

const widgetValue = (node, name, fallback) => node?.widgets?.find((w) => w.name === name)?.value ?? fallback;

/** Nodes reachable from `node` through its inputs ("up") or outputs ("down"), nearest first. */
export function linked(node, direction) {
  const seen = new Set([node]);
  const queue = [node];
  for (let i = 0; i < queue.length; i++) {
    const n = queue[i];
    const next = direction === "up"
      ? (n.inputs ?? []).map((_, slot) => n.getInputNode(slot))
      : (n.outputs ?? []).flatMap((_, slot) => n.getOutputNodes(slot) ?? []);
    for (const m of next) if (m && !seen.has(m)) { seen.add(m); queue.push(m); }
  }
  return queue.slice(1);
}

const find = (node, direction, type) => linked(node, direction).find((n) => n.comfyClass === type);

/** The readout lines for an Upscale or Refiner node (one line saying why when there is no Upscale). */
export function readout(node) {
  const upscale = node.comfyClass === UPSCALE ? node : find(node, "up", UPSCALE);
  const refiner = node.comfyClass === REFINER ? node : find(node, "down", REFINER);
  if (!upscale) return ["resolution unknown: no FlashVideo Stage II Upscale upstream"];
  const label = widgetValue(upscale, "resolution", "custom");
  const [height, width] = RESOLUTIONS[label] ?? [widgetValue(upscale, "height", 1072), widgetValue(upscale, "width", 1920)];
  return describe({
    label, height, width,
    frames: widgetValue(find(upscale, "up", SAMPLER), "frames", DEFAULT_FRAMES),
    steps: widgetValue(refiner, "steps", DEFAULT_STEPS),
    windowed: widgetValue(refiner, "attention", "full") === WINDOW_ATTENTION,
  });
}

const overlaps = (a, b) => a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3];

/** Under the node, or to its right when another node sits under it (node-local [x, y] of the box). */
function readoutSpot(node, width, height) {
  const spots = [[0, node.size[1] + 4], [node.size[0] + 8, 0]];
  const box = ([dx, dy]) => [node.pos[0] + dx, node.pos[1] + dy, width, height];
  const others = (node.graph?.nodes ?? []).filter((n) => n !== node);
  return spots.find((s) => !others.some((n) => overlaps(n.boundingRect, box(s)))) ?? spots[0];
}

function drawReadout(node, ctx) {
  if (node.flags?.collapsed) return;
  const lines = readout(node);
  node.flashvideoReadout = lines.join(" · "); // for tests and other extensions; not serialized
  ctx.save();
  ctx.font = "12px sans-serif";
  const width = Math.max(...lines.map((l) => ctx.measureText(l).width)) + 12, height = 15 * lines.length + 6;
  const [x, y] = readoutSpot(node, width, height);
  ctx.fillStyle = "rgba(20, 24, 32, 0.85)";
  ctx.fillRect(x, y, width, height);
  ctx.fillStyle = "#8fb3d9";
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  lines.forEach((line, i) => ctx.fillText(line, x + 6, y + 4 + 15 * i));
  ctx.restore();
}

/** Show Upscale's width/height only for resolution "custom"; the node shrinks or grows to fit. */
export function showCustomSize(node) {
  const hidden = widgetValue(node, "resolution", "custom") !== "custom";
  const sizes = (node.widgets ?? []).filter((w) => w.name === "width" || w.name === "height");
  if (sizes.every((w) => Boolean(w.hidden) === hidden)) return;
  for (const w of sizes) {
    w.hidden = hidden; // newer frontends skip hidden widgets; older ones also need a zero height
    if (hidden && !("flashvideoComputeSize" in w)) {
      w.flashvideoComputeSize = w.computeSize;
      w.computeSize = () => [0, -4];
    } else if (!hidden && "flashvideoComputeSize" in w) {
      w.computeSize = w.flashvideoComputeSize;
      delete w.flashvideoComputeSize;
    }
  }
  node.setSize?.([node.size[0], node.computeSize()[1]]);
  node.graph?.setDirtyCanvas(true, true);
}

/** Run `after(node)` after a node method (callbacks, onConfigure) without replacing what it did. */
function chain(target, method, after, node) {
  const original = target[method];
  target[method] = function (...args) {
    const result = original?.apply(this, args);
    after(node ?? this);
    return result;
  };
}

function notify(detail, severity = "warn") {
  const toast = app.extensionManager?.toast;
  if (toast?.add) toast.add({ severity, summary: "FlashVideo", detail, life: 8000 });
  else alert(`FlashVideo: ${detail}`);
}

/** Re-enable the stage-II branch fed by `sampler` and queue; returns the nodes switched back on. */
export async function refinePreview(sampler) {
  const core = linked(sampler, "down").filter((n) => STAGE2.includes(n.comfyClass));
  if (!core.length) {
    notify("No FlashVideo stage-II nodes (Stage II Upscale -> Latent Degrade -> Stage II Refiner) are fed by this sampler.");
    return [];
  }
  const control = sampler.widgets?.find((w) => w.name === "seed")?.linkedWidgets?.[0]?.value;
  if (control && control !== "fixed") {
    notify(`The sampler's seed control is "${control}": the seed is not (or will not stay) the preview's, so ` +
      `stage I would make a new video. Set control_after_generate to "fixed" and the preview's seed, then click again.`);
    return [];
  }
  const branch = new Set(core.flatMap((n) => [n, ...linked(n, "up"), ...linked(n, "down")]));
  const enabled = [...branch].filter((n) => n.mode === MUTED || n.mode === BYPASSED);
  for (const n of enabled) n.mode = ALWAYS;
  sampler.graph?.setDirtyCanvas(true, true);
  await app.queuePrompt(0, 1);
  return enabled;
}

app.registerExtension({
  name: "FlashVideo.Stage2Helpers",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === UPSCALE || nodeData.name === REFINER) {
      const draw = nodeType.prototype.onDrawForeground;
      nodeType.prototype.onDrawForeground = function (ctx, ...rest) {
        const result = draw?.call(this, ctx, ...rest);
        drawReadout(this, ctx);
        return result;
      };
    }
  },
  nodeCreated(node) {
    if (node.comfyClass === UPSCALE) {
      const resolution = node.widgets?.find((w) => w.name === "resolution");
      if (resolution) chain(resolution, "callback", showCustomSize, node);
      chain(node, "onConfigure", showCustomSize); // a loaded workflow sets values without callbacks
      showCustomSize(node);
    }
    if (node.comfyClass !== SAMPLER) return;
    const button = node.addWidget("button", BUTTON_LABEL, null, () => refinePreview(node), { serialize: false });
    button.serialize = false;
  },
});
