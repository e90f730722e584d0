// FlashVideo stage-II cost estimate: pure functions (no ComfyUI imports), so the tests run them in node.
// ComfyUI also loads this file as an extension; it only exports, so that is harmless.
//
// Stage-II DiT: 30 layers x 1920 wide, CFG batch 2. Per Euler step (2 FLOPs per multiply-add):
//   linear    = layers * 2 * batch * 12 * width^2 * tokens     (q, k, v, out + 4x MLP)
//   attention = layers * 4 * batch * width * tokens^2          (QK^T and PV)
// = 5.61 PFLOP at 1080p and 17.2 PFLOP at 2K (benchmarks/results/dit_cpu.md). The fastest time is that at
// 100 % of an H100's dense bf16 peak; the slowest assumes 38 % of it, about what the paper's stage-II
// times imply (~72 s at 1080p, ~210 s at 2K, 5 steps). Memory (flashvideo_core/dit/memory.py): bf16 weights
// + the peak activations of one forward + ~2 GB for the CUDA context, latents and VAE tiles; the fastest mode
// batches CFG (2 x 12 x width values per token), the lean mode runs the halves one after the other in token
// chunks (6 x width per token), which is what a smaller GPU gets. T5 is left out: ComfyUI unloads it first.
// tests/test_web_extension.py checks every model constant below against the core (config, memory model, settings).

export const TEXT_TOKENS = 226;
export const RESOLUTIONS = { "1080p (1072x1920)": [1072, 1920], "2K (1440x2560)": [1440, 2560] };
export const WINDOW_ATTENTION = "window 7x11x11 (experimental)";
// Window attention evaluates ~7 x 21 x 21 keys per query, not just the 847 of its window: the block-sparse
// kernel (flashvideo_core/dit/window_blocks.py) evaluates 2.9 % of full attention at 1080p, 1.6 % at 2K.
export const WINDOW_TOKENS = 7 * 21 * 21;
export const DEFAULT_FRAMES = 49;
export const DEFAULT_STEPS = 5;

const LAYERS = 30, WIDTH = 1920, CFG_BATCH = 2, TIME_DIM = 512, TEXT_DIM = 4096, HEAD_DIM = 64;
const WIDTHS_WHOLE = 12, WIDTHS_LEAN = 6; // values of the width per token held at a forward's peak
const PARAMS = LAYERS * (12 * WIDTH * WIDTH + 2 * TIME_DIM * 6 * WIDTH) + TEXT_DIM * WIDTH; // ~1.69 B
const H100_BF16_FLOPS = 989e12;
const SLOW_EFFICIENCY = 0.38;
const OVERHEAD_BYTES = 2e9;
const ROPE_BYTES_PER_TOKEN = 2 * HEAD_DIM * 4 * 2; // cos and sin tables, fp32, a CPU and a GPU copy
const GPU_CLASSES_GB = [8, 12, 16, 24, 32, 40, 48, 80, 141];

/** Latent frames of a 4k+1-frame video (49 -> 13). */
export function latentFrames(frames) {
  return Math.floor((frames - 1) / 4) + 1;
}

/** Stage-II sequence length: latent frames x (H/16) x (W/16) video tokens + 226 text tokens. */
export function stage2Tokens(height, width, frames = DEFAULT_FRAMES) {
  return latentFrames(frames) * Math.floor(height / 16) * Math.floor(width / 16) + TEXT_TOKENS;
}

/** FLOPs of one CFG-batched Euler step; window attention computes WINDOW_TOKENS keys per query. */
export function flopsPerStep(tokens, windowed = false) {
  const linear = LAYERS * 2 * CFG_BATCH * 12 * WIDTH * WIDTH * tokens;
  let attention = LAYERS * 4 * CFG_BATCH * WIDTH * tokens * tokens;
  if (windowed) attention *= Math.min(1, WINDOW_TOKENS / Math.max(1, tokens - TEXT_TOKENS));
  return linear + attention;
}

/** Bytes the GPU needs while stage II runs (weights + one forward's activations + overhead), fastest mode. */
export function stage2Bytes(tokens) {
  return PARAMS * 2 + CFG_BATCH * tokens * WIDTH * WIDTHS_WHOLE * 2 + tokens * ROPE_BYTES_PER_TOKEN + OVERHEAD_BYTES;
}

/** The same in the lean memory mode (CFG halves one after the other, token chunks). */
export function stage2LeanBytes(tokens) {
  return PARAMS * 2 + tokens * WIDTH * WIDTHS_LEAN * 2 + tokens * ROPE_BYTES_PER_TOKEN + OVERHEAD_BYTES;
}

const gpuClass = (bytes) => GPU_CLASSES_GB.find((c) => c >= bytes / 1e9) ?? Math.ceil(bytes / 1e9);

/** {tokens, seconds: [fastest, slowest], gpuClassGB, leanGpuClassGB} for one refiner run on an H100. */
export function estimate({ height, width, frames = DEFAULT_FRAMES, steps = DEFAULT_STEPS, windowed = false }) {
  const tokens = stage2Tokens(height, width, frames);
  const fastest = (flopsPerStep(tokens, windowed) * steps) / H100_BF16_FLOPS;
  return {
    tokens, seconds: [fastest, fastest / SLOW_EFFICIENCY],
    gpuClassGB: gpuClass(stage2Bytes(tokens)), leanGpuClassGB: gpuClass(stage2LeanBytes(tokens)),
  };
}

/** "~28-75 s", "~1.4-3.8 min"; a single value when the range rounds to one, "<1 s" below a second. */
export function formatDuration([lo, hi]) {
  if (hi < 1) return "<1 s";
  if (hi < 120) {
    const [a, b] = [Math.max(1, Math.round(lo)), Math.round(hi)];
    return a === b ? `~${a} s` : `~${a}-${b} s`;
  }
  const [a, b] = [(lo / 60).toFixed(1), (hi / 60).toFixed(1)];
  return a === b ? `~${a} min` : `~${a}-${b} min`;
}

/** The readout, as two lines: what is computed, and what it costs. */
export function describe({ label, height, width, frames = DEFAULT_FRAMES, steps = DEFAULT_STEPS, windowed = false }) {
  const e = estimate({ height, width, frames, steps, windowed });
  const size = label === "custom" ? `custom ${width}x${height}` : label.split(" ")[0]; // W x H, as the widgets
  const frameNote = frames === DEFAULT_FRAMES ? "" : ` (${frames} frames)`;
  return [
    `${size}${frameNote} · ${e.tokens.toLocaleString("en-US")} tokens`,
    `${formatDuration(e.seconds)} on an H100 at ${steps} step${steps === 1 ? "" : "s"}` +
      `${windowed ? " (window attn)" : ""} · ~${e.gpuClassGB} GB+ (lean: ${e.leanGpuClassGB} GB)`,
  ];
}
