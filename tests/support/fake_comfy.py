"""A small stand-in for the ComfyUI symbols the nodes touch, so node logic runs without ComfyUI.

It records what the nodes ask of the host (progress updates, model loads, interrupt
checks). The real host is exercised by tests/test_comfyui_real.py where available.
"""

from __future__ import annotations

import enum
import importlib.util
import os
import sys
import tempfile
import types

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACK_NAME = "flashvideo_pack_under_test"


class Recorder:
    def __init__(self):
        self.reset()

    def reset(self):
        self.progress = []  # (value, total, has_preview)
        self.loads = []  # memory_required per load_models_gpu call
        self.interrupt_after_checks = None
        self.checks = 0
        self.files = {"vae": {}, "diffusion_models": {}}


host = Recorder()


class InterruptProcessingException(Exception):
    pass


def _io_module():
    io = types.ModuleType("comfy_api.latest.io")

    class Input:
        def __init__(self, id, **options):
            self.id, self.options = id, options
            self.io_type = self.Parent.io_type

    class Output:
        def __init__(self, id=None, **options):
            self.id, self.options = id, options
            self.io_type = self.Parent.io_type

    def comfy_type(io_type):
        cls = type(io_type, (), {"io_type": io_type})
        cls.Input = type("Input", (Input,), {"Parent": cls})
        cls.Output = type("Output", (Output,), {"Parent": cls})
        return cls

    for name, io_type in [("Int", "INT"), ("Float", "FLOAT"), ("String", "STRING"), ("Boolean", "BOOLEAN"),
                          ("Combo", "COMBO"), ("Image", "IMAGE"), ("Latent", "LATENT"), ("Conditioning", "CONDITIONING"),
                          ("Clip", "CLIP"), ("Video", "VIDEO"), ("Mask", "MASK"), ("Model", "MODEL"),
                          ("Sigmas", "SIGMAS"), ("Sampler", "SAMPLER"), ("Noise", "NOISE"), ("Guider", "GUIDER")]:
        setattr(io, name, comfy_type(io_type))
    io.Custom = comfy_type

    class Schema:
        def __init__(self, node_id, inputs=(), outputs=(), **kwargs):
            self.node_id, self.inputs, self.outputs = node_id, list(inputs), list(outputs)
            self.__dict__.update(kwargs)

    class NodeOutput:
        def __init__(self, *values, ui=None, **kwargs):
            self.result, self.ui = values, ui

    class ComfyNode:
        pass

    class Hidden(str, enum.Enum):
        unique_id = "UNIQUE_ID"
        prompt = "PROMPT"

    io.Schema, io.NodeOutput, io.ComfyNode, io.Hidden = Schema, NodeOutput, ComfyNode, Hidden
    return io


def install():
    """Put the fake modules in sys.modules and import the pack under a fixed package name."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    latest = types.ModuleType("comfy_api.latest")
    latest.io = _io_module()
    latest.ui = types.ModuleType("comfy_api.latest.ui")

    class ComfyExtension:
        async def on_load(self):
            pass

    latest.ComfyExtension = ComfyExtension

    class VideoFromFile:  # only its type is asked about (Enhance Video streams such files itself)
        def __init__(self, path):
            self.path = path

        def get_stream_source(self):
            return self.path

    latest.InputImpl = types.SimpleNamespace(VideoFromFile=VideoFromFile)
    comfy_api = types.ModuleType("comfy_api")
    comfy_api.latest = latest

    mm = types.ModuleType("comfy.model_management")
    cpu = torch.device("cpu")
    mm.vae_device = mm.vae_offload_device = mm.intermediate_device = mm.get_torch_device = lambda: cpu
    mm.unet_offload_device = lambda: cpu
    mm.get_free_memory = lambda dev=None, torch_free_too=False: 8 * 2**30
    mm.get_total_memory = lambda dev=None, torch_total_too=False: 16 * 2**30
    mm.InterruptProcessingException = InterruptProcessingException

    def load_models_gpu(models, memory_required=0, force_full_load=False, **kwargs):
        host.loads.append(memory_required)
        for m in models:
            m.model.to(m.load_device)

    def throw_exception_if_processing_interrupted():
        host.checks += 1
        if host.interrupt_after_checks is not None and host.checks > host.interrupt_after_checks:
            raise InterruptProcessingException()

    mm.load_models_gpu = load_models_gpu
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

    patcher = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

    patcher.ModelPatcher = ModelPatcher

    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0

        def update_absolute(self, value, total=None, preview=None):
            self.current = value
            host.progress.append((value, total or self.total, preview is not None))

        def update(self, value):
            self.update_absolute(self.current + value)

    utils.ProgressBar = ProgressBar

    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.model_patcher, comfy.utils = mm, patcher, utils

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = tempfile.mkdtemp(prefix="fake_comfy_models_")
    folder_paths.folder_names_and_paths = {}
    temp_dir = tempfile.mkdtemp(prefix="fake_comfy_temp_")
    folder_paths.get_temp_directory = lambda: temp_dir

    def _registered(key):
        found = {}
        for folder in folder_paths.folder_names_and_paths.get(key, ([], set()))[0]:
            if os.path.isdir(folder):
                found.update({name: os.path.join(folder, name) for name in os.listdir(folder)})
        return found

    folder_paths.get_filename_list = lambda key: sorted({**host.files.get(key, {}), **_registered(key)})

    def get_full_path_or_raise(key, name):
        try:
            return {**host.files.get(key, {}), **_registered(key)}[name]
        except KeyError:
            raise FileNotFoundError(f"Model in folder '{key}' with filename '{name}' not found.") from None

    folder_paths.get_full_path_or_raise = get_full_path_or_raise

    sys.modules.update({
        "comfy_api": comfy_api, "comfy_api.latest": latest, "comfy": comfy, "comfy.model_management": mm,
        "comfy.model_patcher": patcher, "comfy.utils": utils, "folder_paths": folder_paths,
    })
    spec = importlib.util.spec_from_file_location(PACK_NAME, os.path.join(REPO, "__init__.py"), submodule_search_locations=[REPO])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = pack
    spec.loader.exec_module(pack)
    return pack
