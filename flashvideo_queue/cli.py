"""Command line of ``python -m flashvideo_queue``: parses arguments into runner.Options and maps the outcome to
an exit code a pipeline can branch on (0 all done, 1 some failed or left, 2 bad input, 130 interrupted)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Optional

from .errors import InputError
from .runner import DEFAULT_SERVER, Options, run

EPILOG = """\
Resuming: the manifest in --output-dir records every item; rerunning the same command skips done items,
collects prompts that were still running, and retries the rest. Ctrl-C saves the manifest and exits 130
without sending /interrupt (the servers finish what they are running; the rerun collects it); pass
--interrupt-on-exit to cancel those prompts instead.
Exit codes: 0 all done, 1 some items failed or were left (rerun to resume), 2 bad input or no server, 130 Ctrl-C.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flashvideo_queue", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Queue one FlashVideo render per prompt line on one or more ComfyUI servers, download the "
        "outputs with predictable names, and keep a resumable manifest.")
    p.add_argument("prompts", type=Path, help="text file, one prompt per line; blank lines and # comments skipped")
    p.add_argument("--workflow", type=Path, required=True,
                   help="API-format workflow JSON (example_workflows/api/*.json or Export (API) in ComfyUI)")
    p.add_argument("--server", action="append", dest="servers", metavar="URL",
                   help=f"ComfyUI server (repeat for several; one item in flight each; default {DEFAULT_SERVER})")
    p.add_argument("--output-dir", type=Path, default=Path("queue_out"), help="downloads and manifest.json")
    p.add_argument("--retries", type=int, default=2, help="extra attempts per failed item (default 2)")
    p.add_argument("--seed-base", type=int, default=0, help="prompt i gets seed SEED_BASE + i (default 0)")
    p.add_argument("--keep-seeds", action="store_true", help="leave the workflow's seed inputs as they are")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per attempt before it is cancelled")
    p.add_argument("--set", action="append", dest="sets", default=[], metavar="NODE_ID.INPUT=VALUE",
                   help="fixed override, VALUE parsed as JSON if it can be; in the shipped workflows e.g. 12.steps=4, "
                   "11.noise_step=700, '10.resolution=2K (1440x2560)' (README: node ids)")
    p.add_argument("--prompt-target", action="append", dest="prompt_targets", default=[], metavar="NODE_ID.INPUT",
                   help="where the prompt goes (repeatable); default: every FlashVideoTextEncode's prompt")
    p.add_argument("--restart", action="store_true", help="ignore an existing manifest and start the batch over")
    p.add_argument("--interrupt-on-exit", action="store_true",
                   help="on Ctrl-C also cancel our in-flight prompts on the servers")
    p.add_argument("--poll-interval", type=float, default=5.0, help="seconds between /history checks")
    p.add_argument("--server-grace", type=float, default=30.0,
                   help="seconds a server may stay unreachable before its work moves elsewhere")
    return p


def options(argv: Optional[list[str]] = None) -> Options:
    args = parser().parse_args(argv)
    return Options(prompts=args.prompts, workflow=args.workflow, servers=args.servers or [DEFAULT_SERVER],
                   output_dir=args.output_dir, retries=args.retries, seed_base=args.seed_base,
                   keep_seeds=args.keep_seeds, timeout=args.timeout, sets=args.sets,
                   prompt_targets=args.prompt_targets, restart=args.restart,
                   interrupt_on_exit=args.interrupt_on_exit, poll_interval=args.poll_interval,
                   server_grace=args.server_grace)


def _terminate(signum, frame):  # a scheduler's SIGTERM gets the same clean stop as Ctrl-C
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    opts = options(argv)
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, AttributeError):  # not the main thread (called from a tool), or no SIGTERM
        pass
    try:
        summary = run(opts)
    except InputError as e:
        print(f"flashvideo_queue: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flashvideo_queue: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(summary.report())
    return summary.exit_code
