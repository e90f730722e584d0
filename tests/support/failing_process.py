"""``flashvideo_core`` as torchrun runs it, except that process 1's second DiT forward fails the way a GPU fault
would (an exception no check catches): tests/test_parallel_cli.py checks that only that process reports it."""

import os
import sys

from flashvideo_core.cli import main
from flashvideo_core.dit.model import FlashVideoDiT

if os.environ.get("RANK") == "1":
    forward, calls = FlashVideoDiT.forward, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated fault on this GPU")
        return forward(self, *args, **kwargs)

    FlashVideoDiT.forward = failing

sys.exit(main(sys.argv[1:]))
