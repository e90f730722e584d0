"""Structural promises: the core never imports ComfyUI, the entry point is light, deps are runtime-only."""

import ast
import os
import re
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
#: optional attention kernels, used only when the user installed them (probed, never required), and the
#: sequence-parallel engine, imported only when torchrun starts several processes (docs/PARALLEL.md)
OPTIONAL = {"flash_attn", "sageattention", "yunchang"}
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


#: product files: what ships to users (tests, benchmarks and the docs themselves excluded)
PRODUCT = ("__init__.py", "nodes", "flashvideo_core", "flashvideo_queue", "web", "scripts", "pyproject.toml")
#: notes that live outside this repository; product text must point into docs/ instead
OUTSIDE_NOTES = re.compile(r"\bSPEC\b|spec-data|NATIVE\.md|COMFYUI\.md|ANCHORS\.md|\.\./shared")
DOC_LINK = re.compile(r"docs/([A-Z]+\.md)(?:#([a-z0-9-]+))?")
MD_LINK = re.compile(r"\]\(([A-Z]+\.md)(?:#([a-z0-9-]+))?\)")


def _product_files():
    for entry in PRODUCT:
        root = os.path.join(REPO, entry)
        if os.path.isfile(root):
            yield root
            continue
        for d, _, files in os.walk(root):
            yield from (os.path.join(d, f) for f in files if f.endswith((".py", ".js", ".sh")))


def _anchors(doc: str) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    with open(os.path.join(REPO, "docs", doc)) as f:
        heads = [line.lstrip("#").strip() for line in f if line.startswith("#")]
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in heads}


def test_product_points_into_docs_only():
    """Every comment that cites the reference's facts points at docs/ in this repository, and every such
    link names a page and heading that exist."""
    for path in _product_files():
        text = open(path, encoding="utf-8").read()
        where = os.path.relpath(path, REPO)
        assert not OUTSIDE_NOTES.search(text), f"{where} cites notes outside the repository"
        for doc, anchor in DOC_LINK.findall(text):
            assert os.path.exists(os.path.join(REPO, "docs", doc)), f"{where}: docs/{doc} does not exist"
            assert not anchor or anchor in _anchors(doc), f"{where}: docs/{doc} has no heading #{anchor}"
    for doc in os.listdir(os.path.join(REPO, "docs")):
        for target, anchor in MD_LINK.findall(open(os.path.join(REPO, "docs", doc)).read()):
            assert os.path.exists(os.path.join(REPO, "docs", target)), f"docs/{doc} links to missing {target}"
            assert not anchor or anchor in _anchors(target), f"docs/{doc}: {target} has no heading #{anchor}"


def test_product_never_imports_test_tools():
    """Test doubles and measuring tools stay out of what the product runs."""
    for path in _product_files():
        if path.endswith(".py"):
            bad = {"tests", "benchmarks", "support", "memory_probe"} & {
                part for name in _imports_all(path) for part in name.split(".")}
            assert not bad, f"{os.path.relpath(path, REPO)} imports {bad}"


def _imports_all(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or ""
            yield from (a.name for a in node.names)
