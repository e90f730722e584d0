"""benchmarks/gpu_check.py stays runnable without a GPU: its --cpu-smoke mode runs every row's code on tiny
configs and writes the table."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = ["stage I step, 270p", "stage II step, 1080p, sdpa", "stage II step, 1080p, window", "stage II step, 1080p, lean",
        "stage II step, 2K", "VAE decode, 49-frame 1080p latent, reference", "VAE decode, 49-frame 1080p latent, auto",
        "end to end, 1080p"]


def test_gpu_check_cpu_smoke_writes_every_row(tmp_path):
    out = tmp_path / "gpu_check.md"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = [line for line in out.read_text().splitlines() if line.startswith("| ") and not line.startswith("| row")]
    names = [line.split(" | ")[0][2:] for line in table]
    for row in ROWS:
        assert any(name.startswith(row) for name in names), (row, names)
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert re.fullmatch(r"[\d.]+ s", cells[1]) and cells[5] == "", line  # timed, no failure note


def test_gpu_check_refuses_to_run_without_a_gpu_unless_asked():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 2 and "--cpu-smoke" in proc.stderr
