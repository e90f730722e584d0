"""FlashVideo Text Encode on a real ComfyUI CLIP with the real T5 tokenizer (tiny random T5 weights),
checked token by token against the reference's tokenizer call. Needs a ComfyUI checkout (see
tests/test_comfyui_real.py); skipped loudly otherwise."""

import subprocess
import sys
from pathlib import Path

import pytest

from support.comfyui_host import locate_comfyui

LOCATION = locate_comfyui()
if isinstance(LOCATION, str):
    print(LOCATION, file=sys.stderr)
    pytest.skip(LOCATION, allow_module_level=True)

pytestmark = pytest.mark.comfyui
REPO = Path(__file__).resolve().parents[1]


def test_text_encode_matches_the_reference_tokenizer_on_real_comfyui():
    script = REPO / "tests" / "support" / "t5_tokenizer_check.py"
    proc = subprocess.run([str(LOCATION.python), str(script), str(LOCATION.directory), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.stdout.count("OK ") == 2, proc.stdout
