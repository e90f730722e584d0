"""benchmarks/gpu_check.py stays runnable without a GPU: its --cpu-smoke mode runs every row's code on tiny
configs and writes the table."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = ["window attention: block-sparse kernel vs tile loop", "stage I step, 270p", "stage II step, 1080p, sdpa",
        "stage II step, 1080p, window", "stage II step, 1080p, lean", "stage II step, 2K",
        "VAE decode, 49-frame 1080p latent, reference", "VAE decode, 49-frame 1080p latent, auto",
        "VAE encode, 49-frame 1080p video", "attention 1080p", "attention 2K", "VAE decode, first reference chunk",
        "stage II step, 2K, sequence-parallel over 2 CPU processes", "stage I step, 270p, cond and uncond on 2",
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
        if cells[0].startswith("window attention"):  # a correctness check: differences, no timing
            diffs = [float(d) for d in re.findall(r"max abs diff ([\d.e+-]+)", cells[5])]
            assert cells[1] == "-" and len(diffs) == 2 and diffs[0] < 1e-4 and diffs[1] < 5e-2, line
            continue
        assert re.fullmatch(r"[\d.]+ s", cells[1]) and not cells[5].startswith(("failed", "skipped")), line  # timed


def test_gpu_check_refuses_to_run_without_a_gpu_unless_asked():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 2 and "--cpu-smoke" in proc.stderr
