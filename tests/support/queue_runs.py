"""Running the batch client quietly in a test and reading what it wrote (test_flashvideo_queue.py,
test_queue_videos.py)."""

import io
import json
from pathlib import Path

from flashvideo_queue import Options, run


def run_quiet(opts: Options, **kwargs):
    """``run`` with its log in ``summary.log`` instead of the terminal."""
    log = io.StringIO()
    summary = run(opts, stream=log, tty=False, **kwargs)
    summary.log = log.getvalue()
    return summary


def manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "manifest.json").read_text("utf-8"))
