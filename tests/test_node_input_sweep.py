"""Every input of every FlashVideo node, read from the schemas the pack registers, fed hostile values (issue 20).

The nodes come from the pack's own registration (``comfy_entrypoint().get_node_list()``) and their inputs from
``define_schema()``, so a node or input added tomorrow is swept the day it is added. Each case sets one input to a
value from support/hostile_values.py (NaN, inf, huge, off the grid, the wrong type, path traversal, bad tensors,
wrong objects) over a baseline of valid values, and calls ``execute`` in-process over the fake host. A hostile value
must end in the pack's own error naming the input and the fix; a legal one (min, max, default, every option) must get
past the checks. The checks are over where the real work starts (a sampler, a VAE pass, a model load, a video
write): there ``WorkStarted`` is raised, so the sweep takes seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import sys
import time
import types
from fractions import Fraction

import pytest
import torch

from support import fake_comfy
from support.fake_comfy import host
from support.hostile_values import (
    ACCEPT, REFUSE, WIDGET_TYPES, Case, conditioning_cases, grid_of, image_cases, latent_cases, object_cases,
    option, widget_cases,
)

pack = fake_comfy.install()
import folder_paths  # noqa: E402  (the fake host's)

from flashvideo_pack_under_test.flashvideo_core.errors import FlashVideoError  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.text_embeddings import save_prompt_embedding  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.tiny import write_tiny_vae  # noqa: E402
from flashvideo_pack_under_test.nodes import (  # noqa: E402
    enhance_node, loader_nodes, pipeline_nodes, sampling_nodes, t5_loader, text_nodes,
)
from flashvideo_pack_under_test.nodes.host import VAEHolder  # noqa: E402
from flashvideo_pack_under_test.nodes.latents import NOISE_STEP_KEY, SEED_KEY, STAGE_KEY  # noqa: E402

PACKAGE = fake_comfy.PACK_NAME + ".nodes"
TEXT_WIDTH = 32
SLOW_S = 2.0  # a refusal (or a check that lets a value through) taking longer than this is a fault


def registered_nodes() -> list:
    """The node classes exactly as ComfyUI gets them from the pack."""
    extension = asyncio.run(pack.comfy_entrypoint())
    return asyncio.run(extension.get_node_list())


NODES = registered_nodes()


class WorkStarted(Exception):
    """Raised where a node's checks are over and its real work begins."""


def _work(*args, **kwargs):
    raise WorkStarted()


# ---- stand-ins for what the host would connect ---------------------------------------------------------------

class FakeStage1Model:
    model_config = types.SimpleNamespace(unet_config={"text_hidden_size": TEXT_WIDTH})


class FakeStage2Model:
    model_config = FakeStage1Model.model_config


FAKE_MODEL_BASE = types.ModuleType(f"{PACKAGE}.native.model_base")
FAKE_MODEL_BASE.FlashVideoStage1Model, FAKE_MODEL_BASE.FlashVideoStage2Model = FakeStage1Model, FakeStage2Model
VideoFromFile = sys.modules["comfy_api.latest"].InputImpl.VideoFromFile
FAKE_NATIVE_LOADER = types.ModuleType(f"{PACKAGE}.native.loader")
FAKE_NATIVE_LOADER.load_flashvideo_model = _work


def patcher(inner) -> types.SimpleNamespace:
    return types.SimpleNamespace(model=inner)


class FakeClip:
    """A CLIP as the host's: tokenizes (to ``keys``) and encodes to T5 states ``TEXT_WIDTH`` wide."""

    def __init__(self, keys=("t5xxl",)):
        self.keys = keys

    def clone(self):
        return FakeClip(self.keys)

    def set_tokenizer_option(self, key, value):
        pass

    def tokenize(self, text, disable_weights=False):
        return {key: [[(1, 1.0)] * 226] for key in self.keys}

    def encode_from_tokens_scheduled(self, tokens):
        return [[torch.zeros(1, 226, TEXT_WIDTH), {}]]


class FakeVideo:
    """A VIDEO that is not a file (Create Video's): the node asks the host for its frames."""

    def __init__(self, images, frame_rate=Fraction(8)):
        self.images, self.frame_rate = images, frame_rate

    def get_components(self):
        return types.SimpleNamespace(images=self.images, frame_rate=self.frame_rate, audio=None)


def _latent(**tags) -> dict:
    return {"samples": torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(0)) * 0.5, **tags}


def _frames() -> torch.Tensor:
    return torch.rand(5, 16, 16, 3, generator=torch.Generator().manual_seed(0))


def _conditioning() -> list:
    return [[torch.randn(1, 226, TEXT_WIDTH, generator=torch.Generator().manual_seed(0)), {}]]


# ---- the world a node runs in: files in the host's folders, the work boundaries ------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Model files in the fake host's folders, and every place real work starts replaced by WorkStarted."""
    models = tmp_path_factory.mktemp("sweep-models")
    with pytest.MonkeyPatch.context() as mp:
        host.reset()
        host.files["vae"]["tiny-vae.pt"] = write_tiny_vae(str(models / "tiny-vae.pt"))
        for folder, name in (("diffusion_models", "stage1.pt"), ("text_encoders", "t5xxl.safetensors")):
            (models / name).write_bytes(b"not read: its loader is replaced")
            host.files.setdefault(folder, {})[name] = str(models / name)
        embeddings = str(tmp_path_factory.mktemp("sweep-embeddings"))  # the sweep's own: other tests list theirs
        mp.setitem(folder_paths.folder_names_and_paths, text_nodes.EMBEDDINGS_FOLDER, ([embeddings], {".safetensors"}))
        save_prompt_embedding(os.path.join(embeddings, "prompt.safetensors"), _conditioning()[0][0], "a prompt")
        vae = loader_nodes.FlashVideoVAELoader.execute("tiny-vae.pt", "fp32").result[0]

        mp.setitem(sys.modules, FAKE_MODEL_BASE.__name__, FAKE_MODEL_BASE)
        mp.setitem(sys.modules, FAKE_NATIVE_LOADER.__name__, FAKE_NATIVE_LOADER)
        for module in (pipeline_nodes, sampling_nodes):
            mp.setattr(module, "native", _work)  # samplers, sigmas, noise, guiders
        mp.setattr(pipeline_nodes, "refine_latent", _work)  # stage II's sampling (it imports the host's DiT first)
        mp.setattr(VAEHolder, "load", _work)  # every VAE pass, after its slicing plan
        mp.setattr(enhance_node, "VideoWriter", _work)
        mp.setattr(t5_loader, "load_t5", _work)
        written = []
        real_save = text_nodes.save_prompt_embedding
        mp.setattr(text_nodes, "save_prompt_embedding", lambda path, *a: written.append(path) or real_save(path, *a))
        (models / "notes.mp4").write_text("not a video")
        os.mkfifo(models / "pipe.mp4")
        video_files = {"not a video": str(models / "notes.mp4"), "missing": str(models / "gone.mp4"),
                       "a folder": str(models), "a FIFO": str(models / "pipe.mp4")}
        yield types.SimpleNamespace(vae=vae, embeddings=embeddings, written=written, video_files=video_files)


def valid_links(io_type: str, world) -> list:
    """Values a node may legally get on a socket of ``io_type`` (the baseline picks the ones the node takes)."""
    return {
        "MODEL": lambda: [patcher(FakeStage1Model()), patcher(FakeStage2Model())],
        "LATENT": lambda: [_latent(**{STAGE_KEY: 1}), _latent(**{STAGE_KEY: 2}),
                           _latent(**{STAGE_KEY: 2, NOISE_STEP_KEY: 675, SEED_KEY: 0})],
        "IMAGE": lambda: [_frames()],
        "CONDITIONING": lambda: [_conditioning()],
        "FLASHVIDEO_VAE": lambda: [world.vae],
        "CLIP": lambda: [FakeClip()],
        "VIDEO": lambda: [FakeVideo(_frames())],
    }[io_type]()


def link_cases(inp, good, baseline_model, world) -> list:
    name, io_type = inp.id, inp.io_type
    if io_type == "LATENT":
        cases = latent_cases(name, good)
    elif io_type == "IMAGE":
        cases = image_cases(name, good)
    elif io_type == "CONDITIONING":
        cases = conditioning_cases(name, good, model_width=baseline_model is not None)
    else:
        other_stage = FakeStage1Model if isinstance(getattr(baseline_model, "model", None), FakeStage2Model) \
            else FakeStage2Model
        frames = _frames()
        nan_frames = frames.clone()
        nan_frames[0, 0, 0, 0] = float("nan")
        cases = object_cases(name, {
            "MODEL": [("other FlashVideo stage", patcher(other_stage())), ("not FlashVideo", patcher(object())),
                      ("bare module", torch.nn.Linear(1, 1))],
            "FLASHVIDEO_VAE": [("bare VAE module", world.vae.model)],
            "CLIP": [("CLIP-L only", FakeClip(keys=("l",)))],
            "VIDEO": [*((f"file {what}", VideoFromFile(path)) for what, path in world.video_files.items()),
                      ("NaN frames", FakeVideo(nan_frames)), ("no frames", FakeVideo(frames[:0])),
                      ("RGBA frames", FakeVideo(torch.rand(5, 16, 16, 4))),
                      ("NaN frame rate", FakeVideo(frames, float("nan"))), ("inf frame rate", FakeVideo(frames, math.inf)),
                      ("negative frame rate", FakeVideo(frames, -8)), ("frame rate a string", FakeVideo(frames, "8"))],
        }[io_type])
    if option(inp, "optional", False):  # None on an optional socket means "not connected"
        cases = [c for c in cases if c.value is not None]
    return cases


# ---- running one case -------------------------------------------------------------------------------------------

def run(node, inputs: dict) -> tuple:
    """(outcome, detail): accepted (work started or an output), refused (a pack error) or crashed."""
    try:
        check = getattr(node, "validate_inputs", None)
        if check is not None:
            import inspect

            accepted = inspect.signature(check).parameters
            verdict = check(**{k: v for k, v in inputs.items() if k in accepted})
            if verdict is not True:
                return "refused", str(verdict)
        output = node.execute(**inputs)
    except WorkStarted:
        return "accepted", None
    except FlashVideoError as e:
        return "refused", str(e)
    except Exception as e:  # noqa: BLE001 - what the sweep looks for
        return "crashed", f"{type(e).__name__}: {str(e)[:300]}"
    return "accepted", output


def non_finite_output(output) -> bool:
    values = list(getattr(output, "result", ()) or ())
    while values:
        value = values.pop()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            return True
        if isinstance(value, dict):
            values.extend(value.values())
        elif isinstance(value, (list, tuple)):
            values.extend(value)
    return False


def names_the_input(message: str, name: str) -> bool:
    """A refusal names the input as ``input 'name'`` (or ``'name (what of it)'``) and carries its fix."""
    return re.search(rf"'{re.escape(name)}[' (]", message) is not None and "Fix:" in message


def fault_of(case: Case, outcome: str, detail, seconds: float, world) -> str | None:
    escaped = [p for p in world.written if not os.path.realpath(p).startswith(os.path.realpath(world.embeddings) + os.sep)]
    if escaped:
        return f"wrote outside its folder: {escaped}"
    if seconds > SLOW_S:
        return f"took {seconds:.1f} s"
    if outcome == "crashed":
        return f"raw exception {detail}"
    if outcome == "accepted":
        if case.expect == REFUSE:
            return "accepted a hostile value"
        return "NaN/Inf output" if non_finite_output(detail) else None
    if case.expect == ACCEPT:
        return f"refused a valid value: {detail[:200]}"
    if not names_the_input(detail, case.input):
        return f"refusal does not name input '{case.input}' with a Fix: {detail[:200]}"
    return None


# ---- the sweep ------------------------------------------------------------------------------------------------

def find_baseline(node, schema, world, required: str | None = None, fixed: dict | None = None) -> dict | None:
    """Default widgets (``fixed`` ones aside) and the first combination of valid link values the node accepts
    (``required``: an optional socket that must be connected); None if there is none."""
    fallback = {"STRING": "", "COMBO": None}  # what the frontend sends for a widget without a default
    widgets = {i.id: option(i, "default", fallback.get(i.io_type)) for i in schema.inputs if i.io_type in WIDGET_TYPES}
    widgets.update({i.id: option(i, "options")[0] for i in schema.inputs if i.io_type == "COMBO" and widgets[i.id] is None})
    widgets.update(fixed or {})
    links = [i for i in schema.inputs if i.io_type not in WIDGET_TYPES]
    choices = [[(i.id, v) for v in valid_links(i.io_type, world)]
               + ([None] if option(i, "optional", False) and i.id != required else []) for i in links]
    for combo in itertools.product(*choices):
        inputs = {**widgets, **dict(c for c in combo if c is not None)}
        outcome, detail = run(node, inputs)
        if outcome == "accepted":
            return inputs
    if fixed:
        return None
    raise AssertionError(f"{schema.node_id}: no combination of valid link values is accepted with default widgets "
                         f"(last: {outcome} {detail}); add the value its sockets need to valid_links")


def sweep(node, world) -> tuple:
    """(number of cases, faults) of one node."""
    schema = node.define_schema()
    baseline = find_baseline(node, schema, world)
    cases_run, faults = 0, []
    for inp in schema.inputs:
        optional_link = inp.io_type not in WIDGET_TYPES and option(inp, "optional", False)
        inputs = find_baseline(node, schema, world, inp.id) if optional_link and inp.id not in baseline else baseline
        if inp.io_type in WIDGET_TYPES:
            cases = widget_cases(inp)
        else:
            cases = link_cases(inp, inputs[inp.id], inputs.get("model"), world)
        kinds = {c.expect for c in cases}
        assert REFUSE in kinds, f"{schema.node_id}.{inp.id}: no hostile value was made for type {inp.io_type}"
        for case in cases:
            world.written.clear()
            started = time.perf_counter()
            outcome, detail = run(node, {**inputs, case.input: case.value, **case.also})
            fault = fault_of(case, outcome, detail, time.perf_counter() - started, world)
            if fault and fault.startswith("refused a valid value") and inp.io_type in WIDGET_TYPES and \
                    find_baseline(node, schema, world, fixed={inp.id: case.value}) is not None:
                fault = None  # legal with other (valid) links, e.g. latent_scale stage2 with a stage-II latent
            cases_run += 1
            if fault:
                faults.append(f"{schema.node_id}.{inp.id} = {case.label} ({case.expect}): {fault}")
    return cases_run, faults


@pytest.mark.parametrize("node", NODES, ids=lambda n: n.__name__)
def test_every_input_refuses_hostile_values_and_takes_legal_ones(node, world):
    cases, faults = sweep(node, world)
    print(f"{node.__name__}: {cases} cases, {len(faults)} faults")
    assert not faults, f"{len(faults)} of {cases} cases:\n" + "\n".join(faults)


def test_the_sweep_sees_every_registered_node():
    """The sweep reads the registration: every node the pack registers is swept, none is listed by hand."""
    from flashvideo_pack_under_test.nodes import NODES as LISTED

    assert NODES == list(LISTED) and len({n.define_schema().node_id for n in NODES}) == len(NODES)


def mode_sweep(node, world) -> tuple:
    """(cases, faults) of every legal widget value under every other choice of each combo (slicing manual, resolution
    custom, ...: the modes that make other widgets matter). A pair may conflict, but then the refusal names an input
    and its fix: never a raw exception, never a bare message."""
    schema = node.define_schema()
    baseline = find_baseline(node, schema, world)
    widgets = [i for i in schema.inputs if i.io_type in WIDGET_TYPES]
    names = [i.id for i in schema.inputs]
    cases_run, faults = 0, []
    for mode in (i for i in widgets if i.io_type == "COMBO"):
        for choice in option(mode, "options"):
            if choice == baseline[mode.id]:
                continue
            for inp in widgets:
                for case in (c for c in widget_cases(inp) if c.expect == ACCEPT and inp is not mode):
                    started = time.perf_counter()
                    outcome, detail = run(node, {**baseline, mode.id: choice, inp.id: case.value})
                    seconds, cases_run = time.perf_counter() - started, cases_run + 1
                    where = f"{schema.node_id}.{inp.id} = {case.label} with {mode.id} {choice!r}"
                    if outcome == "crashed" or seconds > SLOW_S:
                        faults.append(f"{where}: {detail if outcome == 'crashed' else f'took {seconds:.1f} s'}")
                    elif outcome == "refused" and not any(names_the_input(detail, name) for name in names):
                        faults.append(f"{where}: refusal names no input with a Fix: {detail[:200]}")
                    elif outcome == "accepted" and non_finite_output(detail):
                        faults.append(f"{where}: NaN/Inf output")
    return cases_run, faults


@pytest.mark.parametrize("node", NODES, ids=lambda n: n.__name__)
def test_legal_values_under_every_mode_end_cleanly(node, world):
    cases, faults = mode_sweep(node, world)
    print(f"{node.__name__}: {cases} mode cases, {len(faults)} faults")
    assert not faults, f"{len(faults)} of {cases} cases:\n" + "\n".join(faults[:40])


# ---- the same sweep through a real host's HTTP API: the values its own validation lets through ------------------

#: the example workflows that hold every FlashVideo node with widgets (their smoke variants run in seconds)
HOST_WORKFLOWS = ("flashvideo_1080p_advanced", "flashvideo_1080p", "flashvideo_enhance_video")
PACK_ERRORS = ("InputError", "CheckpointError", "MissingFileError")


def server_passes(inp_info: list, pack_input) -> list:
    """(label, value) a server's /object_info checks would let through for one widget: NaN for a FLOAT (it passes
    the min/max comparison), a value off the pack's grid for an INT (no host checks step), a value not among a
    combo's options (0.3.64 does not check V3 combos; a newer host may refuse it itself) and a NUL in text."""
    kind, spec = inp_info[0], (inp_info[1] if len(inp_info) > 1 else {}) or {}
    if isinstance(kind, list) or kind == "COMBO":
        return [("not an option", "not-an-option")]
    if kind == "FLOAT":
        return [("NaN", float("nan"))]
    if kind == "INT" and pack_input is not None and grid_of(pack_input) > 1:
        return [("off grid", spec.get("min", 0) + 1)]
    if kind == "STRING":
        return [("NUL", "a\x00b")]
    return []


@pytest.fixture(scope="module")
def sweep_server(comfyui_host, tmp_path_factory):
    from support.workflow_runs import served_with_models

    with served_with_models(comfyui_host.location, tmp_path_factory.mktemp("comfyui-sweep")) as server:
        yield server


def host_cases(object_info: dict) -> list:
    """(workflow, node id, class, widget, label, value): each FlashVideo widget of the workflows once."""
    import json
    from pathlib import Path

    pack_inputs = {n.define_schema().node_id: {i.id: i for i in n.define_schema().inputs} for n in NODES}
    seen, cases = set(), []
    for name in HOST_WORKFLOWS:
        api = json.loads((Path(__file__).resolve().parents[1] / "example_workflows" / "api" / f"{name}.json").read_text())
        for node_id, node in api.items():
            kind = node["class_type"]
            if not kind.startswith("FlashVideo"):
                continue
            info = object_info[kind]["input"]
            for widget, spec in {**info.get("required", {}), **info.get("optional", {})}.items():
                if (kind, widget) in seen:
                    continue
                seen.add((kind, widget))
                for label, value in server_passes(spec, pack_inputs[kind].get(widget)):
                    cases.append((name, node_id, kind, widget, label, value))
    return cases


@pytest.mark.comfyui
def test_values_a_real_server_lets_through_are_refused_by_the_nodes(sweep_server):
    import json
    from pathlib import Path

    from support.comfyui_host import history_messages
    from support.workflow_runs import smoke_variant

    cases = host_cases(sweep_server.get("/object_info"))
    assert len(cases) > 20, cases  # every FlashVideo widget of the workflows that a server lets something through
    faults = []
    for name, node_id, kind, widget, label, value in cases:
        api = json.loads((Path(__file__).resolve().parents[1] / "example_workflows" / "api" / f"{name}.json").read_text())
        graph = smoke_variant(api, "sweep")
        graph[node_id]["inputs"][widget] = value
        where = f"{kind}.{widget} = {label}"
        status, body = sweep_server.queue_prompt(graph)
        if status != 200 or body.get("node_errors"):  # this host refused it itself: fine, if it names the input
            if widget not in json.dumps(body):
                faults.append(f"{where}: the server's refusal does not name it: {str(body)[:300]}")
            continue
        entry = sweep_server.wait_history(body["prompt_id"], 120)
        errors = history_messages(entry, "execution_error")
        if not errors:
            faults.append(f"{where}: ran to {entry['status']['status_str']} without a refusal")
            continue
        error = errors[0]
        if error.get("node_type") != kind or not error["exception_type"].endswith(PACK_ERRORS) or \
                not names_the_input(error["exception_message"], widget):
            faults.append(f"{where}: {error.get('node_type')} raised {error['exception_type']}: "
                          f"{error['exception_message'][:300]}")
    print(f"{len(cases)} prompts, {len(faults)} faults")
    assert not faults, "\n".join(faults)
