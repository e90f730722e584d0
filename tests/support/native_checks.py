"""Run by tests/test_comfyui_native.py with a real ComfyUI's python (in-process, CPU): the native FlashVideo
models against the pack's core models on the same tiny weights.

usage: python native_checks.py COMFYUI_DIR PACK_DIR WORK_DIR  ->  one JSON object on the last stdout line

Checks: one forward of each stage (native diffusion model == core DiT, stage II negated), the loader's model
type/sampling/latent format, a partial load (only part of the weights "on the device", the rest cast per
layer by the host's lowvram path) giving the fully loaded result, and the memory modes.
"""

import json
import os
import sys

from in_host import import_pack, start_cpu_host  # noqa: E402  (tests/support, the script's folder)

comfy_dir, pack_dir, work_dir = sys.argv[1], sys.argv[2], sys.argv[3]
start_cpu_host(comfy_dir)

import torch  # noqa: E402

import comfy.model_management as mm  # noqa: E402

pack = import_pack(pack_dir)

from flashvideo_pack.flashvideo_core.dit.loader import load_dit  # noqa: E402
from flashvideo_pack.flashvideo_core.tiny import write_tiny_dit  # noqa: E402
from flashvideo_pack.nodes.native.loader import load_flashvideo_model  # noqa: E402

results = {}
gen = torch.Generator().manual_seed(0)
paths = {stage: os.path.join(work_dir, f"{stage}.pt") for stage in ("stage1", "stage2")}
write_tiny_dit(paths["stage1"], "stage1", lora=True)
write_tiny_dit(paths["stage2"], "stage2")


def max_diff(a, b):
    return float((a.float() - b.float()).abs().max())


for stage, path in paths.items():
    patcher = load_flashvideo_model(path, "fp32")
    core = load_dit(path, dtype=torch.float32)
    model = patcher.model
    cfg = core.config
    x = torch.randn(2, cfg.in_channels, 3, 8, 12, generator=gen)  # (B, C, T, H, W)
    t = torch.tensor([999.0, 500.0])
    context = torch.randn(2, 226, cfg.text_hidden_size, generator=gen)
    extra = {}
    if stage == "stage2":
        extra = {"ref_step": torch.tensor([675.0, 675.0]), "latent_frames": torch.tensor([3.0, 3.0])}
    mm.load_models_gpu([patcher])
    with torch.no_grad():
        native = model.diffusion_model(x, t, context, transformer_options={}, **extra)
        reference = core(x.movedim(1, 2), t, context, **extra).movedim(2, 1)
        if stage == "stage2":
            reference = -reference  # the host's flow convention: out = -v
        results[f"{stage}_forward_max_diff"] = max_diff(native, reference)

        # An odd latent (5x7, e.g. a 40x56 frame) runs: the model pads it to its 2x2 patches by repeating the last
        # row and column and crops the output back, so it equals the forward of that padded latent, cropped.
        odd = x[..., :5, :7]
        padded = torch.cat([odd, odd[..., -1:, :]], dim=-2)
        padded = torch.cat([padded, padded[..., -1:]], dim=-1)
        odd_out = model.diffusion_model(odd, t, context, transformer_options={}, **extra)
        results[f"{stage}_odd_latent_shape"] = list(odd_out.shape)
        results[f"{stage}_odd_latent_max_diff"] = max_diff(
            odd_out, model.diffusion_model(padded, t, context, transformer_options={}, **extra)[..., :5, :7])

        # The host's extension points, as core models honour them: a DIFFUSION_MODEL wrapper sees every forward,
        # patches_replace["dit"] replaces a block (given text and video tokens, returning both).
        import comfy.patcher_extension as ext

        seen, options = [], {}
        ext.add_wrapper_with_key(ext.WrappersMP.DIFFUSION_MODEL, "check",
                                 lambda executor, *a, **k: seen.append(a[0].shape) or executor(*a, **k), options)
        wrapped = model.diffusion_model(x, t, context, transformer_options=options, **extra)
        results[f"{stage}_wrapper_calls"] = len(seen)
        results[f"{stage}_wrapper_max_diff"] = max_diff(wrapped, native)
        replaced = []

        def passthrough(args, wrap):
            replaced.append(args["transformer_options"]["block_index"])
            return wrap["original_block"](args)

        def no_video_update(args, wrap):
            return {"img": args["img"], "txt": wrap["original_block"](args)["txt"]}

        last = cfg.num_layers - 1
        for name, patch in (("same", passthrough), ("changed", no_video_update)):
            options = {"patches_replace": {"dit": {("double_block", last): patch}}}
            out = model.diffusion_model(x, t, context, transformer_options=options, **extra)
            results[f"{stage}_block_replace_{name}_diff"] = max_diff(out, native)
        results[f"{stage}_block_replace_indices"] = replaced
        results[f"{stage}_forward_scale"] = float(reference.abs().max())
        results[f"{stage}_model_class"] = type(model).__name__
        results[f"{stage}_model_type"] = model.model_type.name
        results[f"{stage}_latent_scale"] = float(model.latent_format.scale_factor)
        results[f"{stage}_patcher"] = type(patcher).__name__
        sampling = model.model_sampling
        results[f"{stage}_sampling"] = type(sampling).__name__
        if stage == "stage1":
            results["stage1_zsnr_sigma_max"] = float(sampling.sigma_max)
        else:
            results["stage2_shift"] = float(sampling.shift)
            results["stage2_multiplier"] = float(sampling.multiplier)

        # Partial loading: the host keeps only part of the weights loaded and casts the rest per layer.
        # On this CPU host "loaded" and "offloaded" are the same device; what is exercised is the lowvram path
        # (modules flagged comfy_cast_weights, weights fetched at each forward), which must not change results.
        full = model.diffusion_model(x, t, context, transformer_options={}, **extra)
        patcher.unpatch_model(device_to=torch.device("cpu"))
        budget = sum(p.numel() * p.element_size() for p in model.diffusion_model.parameters()) // 3
        patcher.load(torch.device("cpu"), lowvram_model_memory=budget)
        cast = [n for n, m in model.diffusion_model.named_modules() if getattr(m, "comfy_cast_weights", False)]
        results[f"{stage}_partial_cast_modules"] = len(cast)
        results[f"{stage}_partial_total_modules"] = sum(1 for m in model.diffusion_model.modules() if hasattr(m, "comfy_cast_weights"))
        partial = model.diffusion_model(x, t, context, transformer_options={}, **extra)
        results[f"{stage}_partial_max_diff"] = max_diff(partial, full)
        # the streamed layers' weights are cast once per block call, however many token chunks the block runs
        import comfy.ops

        host_cast, casts = comfy.ops.cast_bias_weight, []
        comfy.ops.cast_bias_weight = lambda *a, **k: casts.append(1) or host_cast(*a, **k)
        try:
            for chunk in (None, 8):  # 72 video tokens: 1 or 9 chunks
                casts.clear()
                chunked = model.diffusion_model(x, t, context, transformer_options={}, chunk_tokens=chunk, **extra)
                results[f"{stage}_partial_casts_chunk_{chunk}"] = len(casts)
        finally:
            comfy.ops.cast_bias_weight = host_cast
        results[f"{stage}_partial_chunked_max_diff"] = max_diff(chunked, full)
        patcher.unpatch_model(device_to=torch.device("cpu"))

# Memory modes (flashvideo_core.dit.memory): the estimate the host batches CFG and reserves memory by follows the
# mode, and when the host reports little free memory the forward runs in token chunks with the same result.
from flashvideo_pack.flashvideo_core.dit.memory import CHUNK_CANDIDATES, forward_bytes  # noqa: E402

model = load_flashvideo_model(paths["stage2"], "fp32").model
config = model.diffusion_model.config
x = torch.randn(1, 16, 3, 32, 48, generator=gen)  # 3 x 16 x 24 = 1152 video tokens: more than the smallest chunk
t, context = torch.tensor([500.0]), torch.randn(1, 226, config.text_hidden_size, generator=gen)
extra = {"ref_step": torch.tensor([675.0]), "latent_frames": torch.tensor([3.0])}
results["memory_required_auto"] = model.memory_required(tuple(x.shape))
results["memory_lean_estimate"] = forward_bytes(config, tuple(x.shape), torch.float32, 1, CHUNK_CANDIDATES[-1])
model.model_config.memory_mode = "sequential"
results["memory_required_sequential"] = model.memory_required(tuple(x.shape))
results["memory_whole_estimate"] = forward_bytes(config, tuple(x.shape), torch.float32, 1, None)
model.model_config.memory_mode = "auto"


def planned_chunk():
    """The chunk the model puts into a sampling run's conditioning (decided once per run, outside the forward)."""
    return model.extra_conds(noise=x, device=x.device)["chunk_tokens"].cond


with torch.no_grad():
    results["memory_chunk_when_plenty"] = planned_chunk()
    whole = model.diffusion_model(x, t, context, transformer_options={}, chunk_tokens=planned_chunk(), **extra)
    host_free = mm.get_free_memory
    short = 2 * results["memory_lean_estimate"]  # the plan is for cond and uncond as one batch
    mm.get_free_memory = lambda dev=None, torch_free_too=False: (short, short) if torch_free_too else short
    try:
        results["memory_chunk_when_short"] = planned_chunk()
    finally:
        mm.get_free_memory = host_free
    chunked = model.diffusion_model(x, t, context, transformer_options={},
                                    chunk_tokens=results["memory_chunk_when_short"], **extra)
results["memory_chunked_max_diff"] = max_diff(chunked, whole) / float(whole.abs().max())

# torch.compile: the native forward (the host's layers and, as on GPUs, its PyTorch attention; this CPU host would
# use its sub-quadratic attention, which asks psutil for free memory) traces without graph breaks, whole and chunked
import torch._dynamo as dynamo  # noqa: E402
from comfy.ldm.modules import attention as host_attention  # noqa: E402

host_default = host_attention.optimized_attention
host_attention.optimized_attention = host_attention.attention_pytorch
try:
    with torch.no_grad():
        for chunk in (None, 256):
            dynamo.reset()
            explained = dynamo.explain(model.diffusion_model)(x, t, context, transformer_options={}, chunk_tokens=chunk,
                                                              **extra)
            results[f"graph_breaks_chunk_{chunk}"] = explained.graph_break_count
finally:
    host_attention.optimized_attention = host_default
    dynamo.reset()

# A scaled-fp8 file (python -m flashvideo_core convert --quantize scaled_fp8) through the host's own fp8 path
# equals the core's dequantised model.
from flashvideo_pack.flashvideo_core.checkpoints.convert import convert_checkpoint  # noqa: E402

quantized = os.path.join(work_dir, "stage2_scaled_fp8.safetensors")
convert_checkpoint(paths["stage2"], quantized, quantize="scaled_fp8")
patcher = load_flashvideo_model(quantized, "auto")
mm.load_models_gpu([patcher])
core = load_dit(quantized, dtype=torch.float32)
x = torch.randn(2, 16, 3, 8, 12, generator=gen)
t, context = torch.tensor([999.0, 500.0]), torch.randn(2, 226, core.config.text_hidden_size, generator=gen)
extra = {"ref_step": torch.tensor([675.0, 675.0]), "latent_frames": torch.tensor([3.0, 3.0])}
with torch.no_grad():
    native = patcher.model.diffusion_model(x, t, context, transformer_options={}, **extra)
    reference = -core(x.movedim(1, 2), t, context, **extra).movedim(2, 1)
results["scaled_fp8_forward_max_diff"] = max_diff(native, reference)
results["scaled_fp8_forward_scale"] = float(reference.abs().max())
q_linear = patcher.model.diffusion_model.transformer_blocks[0].attn1.to_q
results["scaled_fp8_weight_dtype"] = str(q_linear.weight.dtype)
results["scaled_fp8_ops"] = type(q_linear).__module__ + "." + type(q_linear).__qualname__

# Stage II on a bf16 model (a GPU; this CPU host computes in fp32): the sigmas come from the grid built in bf16 and
# the network timesteps are rounded as the reference's (docs/SAMPLING.md#stage-ii-grid), checked without running the network.
from flashvideo_pack.nodes.native import sampling as native_sampling  # noqa: E402
from flashvideo_pack.nodes.native.model_base import FlashVideoFlowSampling  # noqa: E402

stage2_patcher = load_flashvideo_model(paths["stage2"], "fp32")
stage2_patcher.model.manual_cast_dtype = torch.bfloat16  # as on a GPU: bf16 compute
bf16_sigmas = native_sampling.stage2_sigmas(stage2_patcher, 5)
flow = FlashVideoFlowSampling(stage2_patcher.model.model_config)
flow.timestep_dtype = torch.bfloat16
results["bf16_grid"] = (1 - bf16_sigmas).tolist()
results["bf16_timesteps"] = [float(flow.timestep(s.reshape(1))) for s in bf16_sigmas[:-1]]

# Finite checks once per run, not per step: FlashVideo's guider and SAMPLER at two step counts.
from collections import Counter  # noqa: E402

from torch.overrides import TorchFunctionMode  # noqa: E402


class FiniteChecks(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.count = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count[getattr(func, "__name__", "")] += 1
        return func(*args, **(kwargs or {}))


stage1_patcher = load_flashvideo_model(paths["stage1"], "fp32")
latent = torch.zeros(1, 16, 2, 4, 6)
context = torch.randn(1, 226, stage1_patcher.model.diffusion_model.config.text_hidden_size, generator=gen)
for steps in (3, 6):
    guider = native_sampling.DynamicCFGGuider(stage1_patcher)
    guider.set_conds([[context, {}]], native_sampling.zero_conditioning([[context, {}]]))
    guider.set_cfg(6.0)
    noise = native_sampling.Stage1ReferenceNoise(1).generate_noise({"samples": latent})
    with FiniteChecks() as counted:
        guider.sample(noise, latent, native_sampling.stage1_sampler(),
                      native_sampling.stage1_sigmas(stage1_patcher, steps), seed=1)
    results[f"isfinite_calls_{steps}_steps"] = counted.count["isfinite"]

# 0.33's multi-GPU nodes on FlashVideo's stage I: MultiGPU CFG Split and Select Model Device take the model, the
# reload factory they clone it with per GPU (deepclone_multigpu) rebuilds it, and stage I sampled through each
# gives the plain result. One device here, so the split itself has nowhere to go (docs/PARALLEL.md).
try:
    import comfy_extras.nodes_multigpu as multigpu_nodes  # noqa: E402
except ImportError:
    multigpu_nodes = None
if multigpu_nodes is not None:
    def sample_stage1(patcher):
        guider = native_sampling.DynamicCFGGuider(patcher)
        guider.set_conds([[context, {}]], native_sampling.zero_conditioning([[context, {}]]))
        guider.set_cfg(6.0)
        noise = native_sampling.Stage1ReferenceNoise(1).generate_noise({"samples": latent})
        return guider.sample(noise, latent, native_sampling.stage1_sampler(),
                             native_sampling.stage1_sigmas(patcher, 3), seed=1)

    plain = sample_stage1(stage1_patcher)
    split = multigpu_nodes.MultiGPUCFGSplitNode.execute(stage1_patcher, 2).result[0]
    selected = multigpu_nodes.SelectModelDeviceNode.execute(stage1_patcher, "cpu").result[0]
    rebuilt = stage1_patcher.deepclone_multigpu(new_load_device=torch.device("cpu"))
    results["multigpu_rebuilt_is_new_model"] = rebuilt.model is not stage1_patcher.model
    results["multigpu_plain_scale"] = float(plain.abs().max())
    for name, patcher in (("split", split), ("select_cpu", selected), ("rebuilt", rebuilt)):
        results[f"multigpu_{name}_max_diff"] = max_diff(sample_stage1(patcher), plain)

# Core latent previews (Latent2RGB) from the model's latent format, on a 5-D video latent as the samplers pass it.
import latent_preview  # noqa: E402
from comfy.cli_args import LatentPreviewMethod, args  # noqa: E402

args.preview_method = LatentPreviewMethod.Latent2RGB
for stage, path in paths.items():
    model = load_flashvideo_model(path, "fp32").model
    previewer = latent_preview.get_previewer(torch.device("cpu"), model.latent_format)
    image = previewer.decode_latent_to_preview_image("JPEG", torch.randn(1, 16, 3, 6, 10, generator=gen))[1]
    results[f"{stage}_preview_size"] = list(image.size)

print(json.dumps(results))
