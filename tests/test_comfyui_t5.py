"""FlashVideo Text Encode on a real ComfyUI CLIP with the real T5 tokenizer (tiny random T5 weights),
checked token by token against the reference's tokenizer call, on every tested host (support/hosts.py;
skipped loudly without one)."""

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfyui
REPO = Path(__file__).resolve().parents[1]


def test_text_encode_matches_the_reference_tokenizer_on_real_comfyui(comfyui_host):
    script = REPO / "tests" / "support" / "t5_tokenizer_check.py"
    location = comfyui_host.location
    proc = subprocess.run([str(location.python), str(script), str(location.directory), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.stdout.count("OK ") == 2, proc.stdout
