"""Structural promises: the core never imports ComfyUI, the entry point is light, deps are runtime-only."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "execution", "latent_preview"}


def _imports(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_core_never_imports_comfyui():
    core = os.path.join(REPO, "flashvideo_core")
    for root, _, files in os.walk(core):
        for name in files:
            if name.endswith(".py"):
                bad = set(_imports(os.path.join(root, name))) & HOST_MODULES
                assert not bad, f"{name} imports ComfyUI modules {bad}"


def test_entry_point_import_is_light():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pack', {os.path.join(REPO, '__init__.py')!r}, "
        f"submodule_search_locations=[{REPO!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m)\n"
        "assert callable(m.comfy_entrypoint) and not hasattr(m, 'NODE_CLASS_MAPPINGS')\n"
        "heavy = [n for n in ('torch', 'numpy', 'av', 'safetensors') if n in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_requirements_are_runtime_only_and_never_torch():
    lines = [l.split("#")[0].strip() for l in open(os.path.join(REPO, "requirements.txt"))]
    names = {l.split(">")[0].split("=")[0].split("<")[0].strip().lower() for l in lines if l}
    assert names == {"einops", "safetensors", "numpy", "av"}
    pyproject = open(os.path.join(REPO, "pyproject.toml")).read()
    assert '"torch' not in pyproject.split("[tool.comfy]")[0].split("dependencies")[1].split("]")[0]


def test_requires_comfyui_names_the_oldest_tested_host():
    import re

    import pytest

    from support.hosts import host_specs

    specs = host_specs()
    if isinstance(specs, str):
        pytest.skip(specs)
    pyproject = open(os.path.join(REPO, "pyproject.toml")).read()
    declared = re.search(r'^requires-comfyui = ">=([\d.]+)"$', pyproject, re.M)
    assert declared and declared.group(1) == specs[0].version, "pyproject's requires-comfyui != the oldest tested host"
