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


#: modules the host (ComfyUI and its Python environment) provides: never declared by the pack
HOST_PROVIDED = HOST_MODULES | {"torch", "PIL", "comfy_execution", "node_helpers", "utils"}
#: optional attention kernels, used only when the user installed them (probed, never required)
OPTIONAL = {"flash_attn", "sageattention"}
PACK_CODE = ("__init__.py", "nodes", "flashvideo_core", "flashvideo_queue")
#: distribution name -> the module it provides, where the two differ
IMPORT_NAME = {"websocket-client": "websocket"}


def _third_party_imports() -> set:
    local = {"flashvideo_core", "flashvideo_queue", "nodes"}
    found = set()
    for entry in PACK_CODE:
        root = os.path.join(REPO, entry)
        paths = [root] if entry.endswith(".py") else [os.path.join(d, f) for d, _, fs in os.walk(root)
                                                       for f in fs if f.endswith(".py")]
        for path in paths:
            found |= set(_imports(path))
    return {name for name in found
            if name not in sys.stdlib_module_names and name not in local | HOST_PROVIDED | OPTIONAL}


def test_requirements_are_exactly_what_the_pack_imports_and_never_torch():
    lines = [l.split("#")[0].strip() for l in open(os.path.join(REPO, "requirements.txt"))]
    names = {l.split(">")[0].split("=")[0].split("<")[0].strip().lower() for l in lines if l}
    assert {IMPORT_NAME.get(n, n) for n in names} == _third_party_imports() == {"safetensors", "numpy", "av",
                                                                                "websocket"}
    pyproject = open(os.path.join(REPO, "pyproject.toml")).read()
    dependencies = pyproject.split("[tool.comfy]")[0].split("dependencies = [")[1].split("]")[0]
    assert '"torch' not in dependencies
    assert {d.strip().strip('"').split(">")[0] for d in dependencies.split(",")} == names


def test_pip_builds_a_wheel_with_the_command_line_parts_only(tmp_path):
    """`pip install .` works (no flat-layout error) and installs the core and the batch client with their
    commands; the ComfyUI node pack itself is loaded from its folder, never from site-packages."""
    import zipfile

    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"flashvideo_core", "flashvideo_queue"}
    assert "flashvideo_core/stage1/sampler.py" in names and "flashvideo_queue/cli.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "flashvideo = flashvideo_core.cli:main" in text and "flashvideo-queue = flashvideo_queue.cli:main" in text


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
