"""One set of damaged and hostile model files through every loader entry point (support/loader_fuzz.py): the core
DiT, VAE, prompt-embedding and convert readers here, the native DiT and T5 loaders inside each tested ComfyUI
(one process per host). Per loader and file: a valid file of its kind loads, anything else is refused with the
file's name; never a crash, a hang, a raw exception or code run. A new reader of model files must be registered
in loader_fuzz.LOADERS (the last test finds unregistered ones)."""

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from support.hostile_files import GuardedLoader
from support.hosts import version_key
from support.loader_fuzz import LOADERS, build_cases, verdict, write_manifest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loader_fuzz")
    marker = str(folder / "PWNED")
    cases = build_cases(str(folder), marker)
    manifest = str(folder / "manifest.json")
    write_manifest(cases, manifest)
    return cases, manifest, marker


def _check_results(results: dict, cases, loaders, marker, unsupported=()) -> None:
    failures = [(loader, case.name, problem) for loader in loaders for case in cases
                if (problem := verdict(loader, case, results.get((loader, case.name), {"status": "no result"}),
                                       unsupported))]
    assert not failures, "\n".join(f"{loader} on {name}: {problem}" for loader, name, problem in failures[:15])
    assert not os.path.exists(marker), "a file ran code while loading"


def test_core_loaders_load_valid_files_and_refuse_every_damaged_one(fuzz):
    cases, _, marker = fuzz
    core = [name for name, (where, _, _) in LOADERS.items() if where == "core"]
    guard = GuardedLoader(timeout=TIMEOUT_S)
    try:
        results = {(loader, case.name): guard.load(case.path, loader) for loader in core for case in cases}
    finally:
        guard.close()
    _check_results(results, cases, core, marker)
    assert sum(r["status"] == "refused" for r in results.values()) > 0.8 * len(results)


@pytest.mark.comfyui
def test_host_loaders_load_valid_files_and_refuse_every_damaged_one(comfyui_host, fuzz):
    cases, manifest, marker = fuzz
    location = comfyui_host.location
    proc = subprocess.run([str(location.python), str(REPO / "tests" / "support" / "loader_fuzz_check.py"),
                           str(location.directory), str(REPO), manifest, str(TIMEOUT_S)],
                          capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = [line["start"] for line in lines if "start" in line]
    assert proc.returncode == 0 and lines and lines[-1] == {"done": True}, (
        f"the host process ended (rc {proc.returncode}) while loading {started[-1] if started else 'nothing'}: "
        + proc.stderr[-3000:])
    results = {(line["loader"], line["case"]): line for line in lines if "loader" in line}
    host = [name for name, (where, _, _) in LOADERS.items() if where == "host"]
    unsupported = {"t5_layer_fp8"} if version_key(comfyui_host.version) < (0, 33) else set()
    _check_results(results, cases, host, marker, unsupported)


#: functions that read files in ways other than read_checkpoint, each with why it is not a model-file reader
RAW_READERS_ALLOWED = {
    "flashvideo_core/checkpoints/io.py": "the one reader itself",
    "flashvideo_core/enhance/resume.py": "the enhance run's own resume frames in its output folder, not a model file",
}
RAW_READERS = {"load", "load_torch_file", "load_file", "safe_open"}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Call):
                    func = inner.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
                    yield node.name, name, owner


def test_every_model_file_reader_goes_through_read_checkpoint_and_is_registered():
    """Readers of model files: only through read_checkpoint, and every function calling it is a registered entry
    point (so it is fuzzed). Loading with torch.load, comfy.utils.load_torch_file or safetensors directly would
    go around the checks."""
    registered = {target for _, target, _ in LOADERS.values()}
    raw, unregistered = [], []
    for path in sorted(list(REPO.glob("flashvideo_core/**/*.py")) + list(REPO.glob("nodes/**/*.py"))):
        relative = path.relative_to(REPO).as_posix()
        module = relative[:-3].replace("/", ".")
        for function, name, owner in _calls(ast.parse(path.read_text())):
            if name in RAW_READERS and (owner in ("torch", "utils", "safetensors", "") or name != "load") \
                    and relative not in RAW_READERS_ALLOWED:
                raw.append(f"{relative}:{function} calls {owner + '.' if owner else ''}{name}")
            if name == "read_checkpoint" and f"{module}:{function}" not in registered:
                unregistered.append(f"{module}:{function}")
    assert not raw, f"model files read around read_checkpoint: {raw}"
    assert not unregistered, f"readers missing from support/loader_fuzz.LOADERS: {unregistered}"
