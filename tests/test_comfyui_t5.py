"""T5 on every tested host (support/hosts.py; skipped loudly without one): FlashVideo Text Encode on a real
ComfyUI CLIP with the real T5 tokenizer, token by token against the reference's tokenizer call; and FlashVideo
T5 Loader against the host's own T5 (the config it reads from T5-XXL shapes is the host's T5-XXL config;
make-tiny's tiny T5 through it equals the host's T5 class built by hand; non-T5 files are refused)."""

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfyui
REPO = Path(__file__).resolve().parents[1]


def run_check(comfyui_host, script: str) -> str:
    location = comfyui_host.location
    proc = subprocess.run([str(location.python), str(REPO / "tests" / "support" / script), str(location.directory),
                           str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout


def test_text_encode_matches_the_reference_tokenizer_on_real_comfyui(comfyui_host):
    assert run_check(comfyui_host, "t5_tokenizer_check.py").count("OK ") == 2


def test_t5_loader_builds_the_hosts_t5_from_the_file_shapes(comfyui_host):
    out = run_check(comfyui_host, "t5_loader_check.py")
    assert out.count("OK xxl") == 1 and out.count("OK tiny") == 2 and out.count("OK refused") == 2, out
