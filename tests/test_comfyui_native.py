"""FlashVideo as native ComfyUI models, on every tested host (ids name the version).

In-process (support/native_checks.py, the host's python): one forward of each stage equals the core DiT, the
loader builds the host's model classes and sampling, and a partial load equals the full one. Through the real
executor (a server with make-tiny files, results saved with core SaveLatent): the convenience nodes equal the
pack's core samplers on the same weights and noise; a SamplerCustomAdvanced graph of FlashVideo's parts equals
the convenience nodes; core KSampler runs on the stage-I MODEL; core ModelSamplingSD3 changes stage II's shift;
core TorchCompileModel accepts the model.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import torch

from support.comfyui_host import history_messages, make_base_dir, running_server
from support.hosts import version_key
from support.workflow_runs import install_models

pytestmark = pytest.mark.comfyui
REPO = Path(__file__).resolve().parents[1]
PACK_FOLDER = "ComfyUI-FlashVideo"
PROMPT = "flashvideo_example_prompt.safetensors"
STAGE2_INPUT = "flashvideo_stage2_input.latent"
WIDTH, HEIGHT, FRAMES, STEPS1, CFG1, SEED1 = 48, 32, 9, 6, 8.0, 3
STEPS2, CFG2, NOISE_STEP, SEED2 = 5, 13.0, 675, 4
TIMEOUT_S = 120


def test_native_models_equal_the_core_models_in_process(comfyui_host, tmp_path):
    location = comfyui_host.location
    proc = subprocess.run([location.python, str(REPO / "tests" / "support" / "native_checks.py"),
                           str(location.directory), str(REPO), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    for stage, model_type, scale in (("stage1", "V_PREDICTION", 0.7), ("stage2", "FLOW", 1.15258426)):
        assert r[f"{stage}_forward_max_diff"] <= 1e-5 * max(1.0, r[f"{stage}_forward_scale"]), r
        # an odd latent side is padded by repetition and cropped back (no reshape error inside the model)
        assert r[f"{stage}_odd_latent_shape"][:1] + r[f"{stage}_odd_latent_shape"][2:] == [2, 3, 5, 7], r
        assert r[f"{stage}_odd_latent_max_diff"] <= 1e-5 * max(1.0, r[f"{stage}_forward_scale"]), r
        # open to the host: DIFFUSION_MODEL wrappers run, patches_replace["dit"] replaces the block it names
        assert r[f"{stage}_wrapper_calls"] == 1 and r[f"{stage}_wrapper_max_diff"] == 0.0, r
        assert r[f"{stage}_block_replace_indices"] == [1] and r[f"{stage}_block_replace_same_diff"] <= 1e-6, r
        assert r[f"{stage}_block_replace_changed_diff"] > 1e-4, r
        assert r[f"{stage}_model_class"] == f"FlashVideo{stage.capitalize()}Model"
        assert r[f"{stage}_model_type"] == model_type and r[f"{stage}_latent_scale"] == scale
        assert 0 < r[f"{stage}_partial_cast_modules"] < r[f"{stage}_partial_total_modules"], r
        assert r[f"{stage}_partial_max_diff"] <= 1e-6, r
        # under partial loading a block casts each streamed weight once, not once per token chunk
        assert 0 < r[f"{stage}_partial_casts_chunk_8"] == r[f"{stage}_partial_casts_chunk_None"], r
        assert r[f"{stage}_partial_chunked_max_diff"] <= 1e-5 * max(1.0, r[f"{stage}_forward_scale"]), r
        assert r[f"{stage}_preview_size"] == [10, 6], r  # core Latent2RGB preview of the first latent frame
    assert r["stage1_zsnr_sigma_max"] == pytest.approx(4518.76, rel=1e-4)  # zero terminal SNR, host's clamp
    # A scaled-fp8 file (convert --quantize scaled_fp8) through the host's fp8 layers vs the core's dequantised
    # model: 0.33's quantised ops reproduce it; 0.3.64's scaled-fp8 layers also store the Linear biases in fp8.
    scale = r["scaled_fp8_forward_scale"]
    if version_key(comfyui_host.version) < (0, 33):
        assert r["scaled_fp8_weight_dtype"] == "torch.float8_e4m3fn" and "scaled_fp8" in r["scaled_fp8_ops"]
        assert r["scaled_fp8_forward_max_diff"] <= 1e-2 * scale, r
    else:
        assert "MixedPrecisionOps" in r["scaled_fp8_ops"], r
        assert r["scaled_fp8_forward_max_diff"] <= 1e-5 * scale, r
    assert (r["stage2_shift"], r["stage2_multiplier"]) == (2.5, 1000.0)
    # memory modes: the host plans with the lean estimate (auto) or the whole-sequence one, and a forward with
    # little free memory runs in token chunks with the whole-sequence result
    assert r["memory_required_auto"] == r["memory_lean_estimate"] < r["memory_whole_estimate"]
    assert r["memory_required_sequential"] == r["memory_whole_estimate"]
    assert r["memory_chunk_when_plenty"] is None and r["memory_chunk_when_short"] == 1024, r
    assert r["memory_chunked_max_diff"] <= 1e-6, r
    assert r["graph_breaks_chunk_None"] == r["graph_breaks_chunk_256"] == 0, r  # torch.compile sees one graph
    # finite checks once per sampling run (each a device sync on a GPU), not once per step
    assert r["isfinite_calls_3_steps"] == r["isfinite_calls_6_steps"] <= 2, r
    # 0.33's MultiGPU CFG Split and Select Model Device take stage I, and its reload factory rebuilds it per GPU
    if version_key(comfyui_host.version) >= (0, 33):
        assert r["multigpu_rebuilt_is_new_model"] and r["multigpu_plain_scale"] > 0.1, r
        assert r["multigpu_split_max_diff"] == r["multigpu_select_cpu_max_diff"] == r["multigpu_rebuilt_max_diff"] == 0.0, r
    # bf16 models (GPUs): the reference's bf16 grid and network timesteps (docs/SAMPLING.md#stage-ii-grid)
    assert r["bf16_grid"] == [0.0, 0.09375, 0.21484375, 0.375, 0.6171875, 1.0]
    assert r["bf16_timesteps"] == [1000.0, 904.0, 784.0, 624.0, 384.0]


# --------------------------------------------------------------------------------------------- executor

@pytest.fixture(scope="module")
def server(comfyui_host, tmp_path_factory):
    from safetensors.torch import save_file

    base = make_base_dir(tmp_path_factory.mktemp("comfyui-native"), REPO, PACK_FOLDER)
    install_models(base)
    z = torch.randn(1, 16, 3, HEIGHT // 4, WIDTH // 4, generator=torch.Generator().manual_seed(7))
    save_file({"latent_tensor": z, "latent_format_version_0": torch.tensor([])}, str(base / "input" / STAGE2_INPUT))
    with running_server(comfyui_host.location, base) as host:
        yield host


def run_for_latents(server, graph: dict) -> dict:
    """Run ``graph`` (its SaveLatent nodes prefixed by node id) and return {SaveLatent node id: tensor}."""
    from safetensors.torch import load_file

    graph = copy.deepcopy(graph)
    tag = f"native_{abs(hash(json.dumps(graph, sort_keys=True)))}"
    for node_id, node in graph.items():
        if node["class_type"] == "SaveLatent":
            node["inputs"]["filename_prefix"] = f"{tag}/{node_id}"
    entry = server.run_prompt(graph, TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", history_messages(entry, "execution_error")
    out = {}
    for node_id, node_output in entry["outputs"].items():
        for item in node_output.get("latents", []):
            path = server.base / "output" / item.get("subfolder", "") / item["filename"]
            out[node_id] = load_file(str(path))["latent_tensor"]
    return out


def common(*, stage1_steps=STEPS1) -> dict:
    return {
        "emb": {"class_type": "FlashVideoLoadPromptEmbedding", "inputs": {"embedding": PROMPT}},
        "m1": {"class_type": "FlashVideoModelLoader", "inputs": {"model_name": "stage1.pt", "weight_dtype": "auto",
                                                                 "attention": "comfy"}},
        "m2": {"class_type": "FlashVideoModelLoader", "inputs": {"model_name": "stage2.pt", "weight_dtype": "auto",
                                                                 "attention": "comfy"}},
        "z2": {"class_type": "LoadLatent", "inputs": {"latent": STAGE2_INPUT}},
        "deg": {"class_type": "FlashVideoLatentDegrade", "inputs": {"samples": ["z2", 0], "noise_step": NOISE_STEP,
                                                                    "seed": SEED2}},
    }


STAGE1_CONVENIENCE = {"s1": {"class_type": "FlashVideoStage1Sampler", "inputs": {
    "model": ["m1", 0], "positive": ["emb", 0], "width": WIDTH, "height": HEIGHT, "frames": FRAMES, "steps": STEPS1,
    "cfg": CFG1, "seed": SEED1}}, "save_s1": {"class_type": "SaveLatent", "inputs": {"samples": ["s1", 0]}}}
STAGE1_PARTS = {
    "empty": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": WIDTH, "height": HEIGHT, "length": FRAMES,
                                                                 "batch_size": 1}},
    "n1": {"class_type": "FlashVideoStage1Noise", "inputs": {"seed": SEED1}},
    "g1": {"class_type": "FlashVideoDynamicCFGGuider", "inputs": {"model": ["m1", 0], "positive": ["emb", 0], "cfg": CFG1}},
    "k1": {"class_type": "FlashVideoStage1SamplerSelect", "inputs": {}},
    "sig1": {"class_type": "FlashVideoStage1Sigmas", "inputs": {"model": ["m1", 0], "steps": STEPS1}},
    "adv1": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["n1", 0], "guider": ["g1", 0],
                                                               "sampler": ["k1", 0], "sigmas": ["sig1", 0],
                                                               "latent_image": ["empty", 0]}},
    "save_adv1": {"class_type": "SaveLatent", "inputs": {"samples": ["adv1", 0]}},
}
STAGE2_CONVENIENCE = {"r2": {"class_type": "FlashVideoStage2Refiner", "inputs": {
    "model": ["m2", 0], "positive": ["emb", 0], "samples": ["deg", 0], "steps": STEPS2, "cfg": CFG2, "shift": 2.5,
    "attention": "full"}}, "save_r2": {"class_type": "SaveLatent", "inputs": {"samples": ["r2", 0]}}}


def stage2_parts(model=("m2", 0), tag="adv2") -> dict:
    model = list(model)
    return {
        f"n_{tag}": {"class_type": "FlashVideoStage2Noise", "inputs": {"samples": ["deg", 0]}},
        f"g_{tag}": {"class_type": "FlashVideoStage2Guider", "inputs": {"model": model, "positive": ["emb", 0],
                                                                        "samples": ["deg", 0], "cfg": CFG2}},
        f"k_{tag}": {"class_type": "FlashVideoStage2SamplerSelect", "inputs": {}},
        f"sig_{tag}": {"class_type": "FlashVideoStage2Sigmas", "inputs": {"model": model, "steps": STEPS2}},
        tag: {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": [f"n_{tag}", 0], "guider": [f"g_{tag}", 0],
                                                                "sampler": [f"k_{tag}", 0], "sigmas": [f"sig_{tag}", 0],
                                                                "latent_image": ["deg", 0]}},
        f"save_{tag}": {"class_type": "SaveLatent", "inputs": {"samples": [tag, 0]}},
    }


@pytest.fixture(scope="module")
def core():
    """The pack's core path on the same files and noise (what the native path must reproduce)."""
    from flashvideo_core.tiny_install import tiny_prompt_embedding

    return {"context": tiny_prompt_embedding()}


def core_stage1(server, context) -> torch.Tensor:
    from flashvideo_core.dit.loader import load_dit
    from flashvideo_core.stage1.sampler import latent_shape, sample_stage1

    model = load_dit(str(server.base / "models" / "diffusion_models" / "stage1.pt"), dtype=torch.float32)
    shape = latent_shape(FRAMES, HEIGHT, WIDTH)
    return sample_stage1(model, context, shape, steps=STEPS1, cfg=CFG1, seed=SEED1).permute(0, 2, 1, 3, 4)


def core_stage2(server, context, shift=2.5) -> torch.Tensor:
    from safetensors.torch import load_file

    from flashvideo_core.constants import LATENT_SCALE_STAGE2
    from flashvideo_core.dit.loader import load_dit
    from flashvideo_core.stage2.degrade import degrade_latent
    from flashvideo_core.stage2.refiner import refine_stage2

    model = load_dit(str(server.base / "models" / "diffusion_models" / "stage2.pt"), dtype=torch.float32)
    z = load_file(str(server.base / "input" / STAGE2_INPUT))["latent_tensor"] * LATENT_SCALE_STAGE2
    x0 = degrade_latent(z, NOISE_STEP, SEED2)
    return refine_stage2(model, context, x0, NOISE_STEP, STEPS2, CFG2, shift)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> float:
    diff = float((a.float() - b.float()).abs().max())
    assert diff <= atol * max(1.0, float(b.abs().max())), f"max |diff| {diff}"
    return diff


def test_convenience_and_custom_sampling_equal_the_core_samplers(server, core):
    graph = {**common(), **STAGE1_CONVENIENCE, **STAGE1_PARTS, **STAGE2_CONVENIENCE, **stage2_parts()}
    latents = run_for_latents(server, graph)
    # LATENTs are unscaled (ComfyUI's convention); the core works in model space.
    close(latents["save_s1"] * 0.7, core_stage1(server, core["context"]))
    close(latents["save_adv1"], latents["save_s1"], atol=1e-6)
    close(latents["save_r2"] * 1.15258426, core_stage2(server, core["context"]))
    close(latents["save_adv2"], latents["save_r2"], atol=1e-6)


def test_core_model_sampling_sd3_changes_the_stage2_shift(server, core):
    graph = {**common(), **stage2_parts(),
             "sd3": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["m2", 0], "shift": 3.5}},
             **stage2_parts(model=("sd3", 0), tag="shifted")}
    latents = run_for_latents(server, graph)
    assert float((latents["save_shifted"] - latents["save_adv2"]).abs().max()) > 1e-3
    # the host's stock flow sampling (fp32 timesteps 1000 sigma) on the shifted grid: the core at shift 3.5
    close(latents["save_shifted"] * 1.15258426, core_stage2(server, core["context"], shift=3.5), atol=1e-4)


def test_core_ksampler_runs_on_the_stage1_model(server):
    graph = {**common(), "empty": STAGE1_PARTS["empty"],
             "neg": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["emb", 0]}},
             "ks": {"class_type": "KSampler", "inputs": {
                 "model": ["m1", 0], "seed": 1, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "simple",
                 "positive": ["emb", 0], "negative": ["neg", 0], "latent_image": ["empty", 0], "denoise": 1.0}},
             "save_ks": {"class_type": "SaveLatent", "inputs": {"samples": ["ks", 0]}}}
    latent = run_for_latents(server, graph)["save_ks"]
    assert latent.shape == (1, 16, 3, HEIGHT // 8, WIDTH // 8) and torch.isfinite(latent).all() and latent.abs().max() > 0


def test_flashvideo_guider_with_core_samplers(server):
    """The DynamicCFG guider keeps the host's VE conventions, so core samplers run with it, including ones that
    evaluate between the schedule's sigmas (dpm_2: midpoints, denoised with the nearest table entry)."""
    graph = {**common(), **{k: v for k, v in STAGE1_PARTS.items() if k not in ("k1",)}}
    outputs = {}
    for name in ("euler", "dpm_2"):
        g = copy.deepcopy(graph)
        g["k1"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": name}}
        outputs[name] = run_for_latents(server, g)["save_adv1"]
    for name, latent in outputs.items():
        assert torch.isfinite(latent).all() and latent.abs().max() > 0, name
    assert float((outputs["euler"] - outputs["dpm_2"]).abs().max()) > 0


def test_core_torch_compile_model_accepts_the_model(server):
    small = {**STAGE1_CONVENIENCE}
    small["s1"] = copy.deepcopy(small["s1"])
    small["s1"]["inputs"].update(steps=2)
    compiled = copy.deepcopy(small)
    compiled["s1"]["inputs"]["model"] = ["tc", 0]
    compiled["save_s1c"] = compiled.pop("save_s1")
    compiled["s1c"] = compiled.pop("s1")
    compiled["save_s1c"]["inputs"]["samples"] = ["s1c", 0]
    graph = {**common(), **small, **compiled,
             "tc": {"class_type": "TorchCompileModel", "inputs": {"model": ["m1", 0], "backend": "inductor"}}}
    latents = run_for_latents(server, graph)
    close(latents["save_s1c"], latents["save_s1"], atol=1e-4)


def test_fp8_weight_storage_runs_close_to_fp32(server):
    """weight_dtype fp8_e4m3fn: the host stores the weights in fp8 and casts per layer (dequantised on CPU)."""
    fp8 = copy.deepcopy(STAGE1_CONVENIENCE)
    fp8["s1"]["inputs"]["model"] = ["m1fp8", 0]
    fp8 = {"s1f": fp8["s1"], "save_s1f": {"class_type": "SaveLatent", "inputs": {"samples": ["s1f", 0]}}}
    graph = {**common(), **STAGE1_CONVENIENCE, **fp8,
             "m1fp8": {"class_type": "FlashVideoModelLoader", "inputs": {"model_name": "stage1.pt",
                                                                     "weight_dtype": "fp8_e4m3fn", "attention": "comfy"}}}
    latents = run_for_latents(server, graph)
    full, quant = latents["save_s1"], latents["save_s1f"]
    assert torch.isfinite(quant).all()
    assert 0 < float((quant - full).norm() / full.norm()) < 0.1  # e4m3 keeps ~3 mantissa bits per weight


def test_a_stage2_model_in_the_stage1_sampler_is_refused_with_the_fix(server):
    graph = {**common(), **copy.deepcopy(STAGE1_CONVENIENCE)}
    graph["s1"]["inputs"]["model"] = ["m2", 0]
    graph["save_s1"]["inputs"]["filename_prefix"] = "native_refused/s1"
    status, body = server.queue_prompt(graph)
    assert status == 200 and not body.get("node_errors"), body
    entry = server.wait_history(body["prompt_id"], TIMEOUT_S)
    errors = history_messages(entry, "execution_error")
    assert errors and "stage-I model" in errors[0]["exception_message"] and "stage1.pt" in errors[0]["exception_message"]


CACHE_STEPS = 51  # the reference's stage-I step count: many similar steps, where step caches pay
SKIPPED = r"{name} - skipped (\d+)/(\d+) steps"


def test_core_cfg_patches_and_step_caches_apply_to_stage1(server, comfyui_host):
    """Core nodes that patch CFG or wrap the model work on FlashVideo as on core models: RescaleCFG (a CFG
    function) changes the stage-I result; EasyCache (a DIFFUSION_MODEL wrapper) and LazyCache (a PREDICT_NOISE
    wrapper) skip steps of a 51-step stage I and stay close to the uncached result. The caches skip a step when
    the model's output is predicted to change less than ``reuse_threshold`` since the last computed step; random
    tiny weights change their output by 40-80 % a step (trained models far less), so the default 0.2 would skip
    nothing here and the test uses 0.5, on a 96x64 latent (the caches judge change on an 8x subsample).
    0.3.64's EasyCache adds every conditioning's cached difference to the whole batch when cond and uncond run as
    one batch (fixed by 0.33, which slices per conditioning), so there its result is not close, on core models too:
    only its skipping is checked there."""
    import re

    def sampler(tag, model):
        node = copy.deepcopy(STAGE1_CONVENIENCE["s1"])
        node["inputs"].update(model=model, steps=CACHE_STEPS, width=96, height=64)
        return {tag: node, f"save_{tag}": {"class_type": "SaveLatent", "inputs": {"samples": [tag, 0]}}}

    cache_inputs = {"reuse_threshold": 0.5, "start_percent": 0.15, "end_percent": 0.95, "verbose": False}
    graph = {**common(), **sampler("plain", ["m1", 0]),
             "rescale": {"class_type": "RescaleCFG", "inputs": {"model": ["m1", 0], "multiplier": 0.7}},
             **sampler("rescaled", ["rescale", 0])}
    latents = run_for_latents(server, graph)
    plain = latents["save_plain"]
    assert float((latents["save_rescaled"] - plain).abs().max()) > 1e-3 * float(plain.abs().max())
    for name in ("EasyCache", "LazyCache"):
        cached = {**common(), "cache": {"class_type": name, "inputs": {"model": ["m1", 0], **cache_inputs}},
                  **sampler("cached", ["cache", 0])}
        latent = run_for_latents(server, cached)["save_cached"]
        skipped, total = map(int, re.findall(SKIPPED.format(name=name), server.log())[-1])
        relative = float((latent - plain).norm() / plain.norm())
        print(f"{name}: skipped {skipped}/{total} steps, relative difference to uncached {relative:.4f}")
        assert total == CACHE_STEPS and skipped > 0, (name, skipped, total)
        if name == "LazyCache" or version_key(comfyui_host.version) >= (0, 33):
            assert relative < 0.3, (name, relative)
