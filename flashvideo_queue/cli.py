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
from .videos import VIDEO_EXTENSIONS

EPILOG = """\
Examples (from the pack folder; prompts.txt has one prompt per line):
  python -m flashvideo_queue prompts.txt --workflow example_workflows/flashvideo_270p_preview.json
  python -m flashvideo_queue prompts.txt --workflow example_workflows/flashvideo_1080p.json \\
      --server 127.0.0.1:8188 --server 10.0.0.7:8188 --seed-base 1000 --set 12.steps=4 \\
      --set "Stage II upscale (bridge).resolution=2K (1440x2560)"
  python -m flashvideo_queue prompts.txt --workflow example_workflows/api/flashvideo_1080p.json \\
      --set "Stage I model.attention=sdpa" --set FlashVideoStage2Refiner.steps=5
  python -m flashvideo_queue prompt.txt --videos clips/ --workflow example_workflows/flashvideo_enhance_video.json
Folders of videos (--videos DIR): one item per video file directly in DIR (.mp4 .mov .mkv .webm .avi .m4v .gif,
in name order), each uploaded to the server that renders it (input/flashvideo_batch/, named after its content)
and put in every LoadVideo node (--video-target to choose). The prompts file holds one prompt for every video or
one per video (paired in name order); --prompt TEXT gives one on the command line. Outputs are named after the
video: 0003_<video stem>_<node>_<file>; an edited or replaced video counts as a changed input (--restart).
Workflows: a UI workflow (what ComfyUI saves; converted with the server's /object_info, and sent along so each
video opens in ComfyUI with its own prompt and seed) or an API one (Save (API)). Nodes in --set, --prompt-target
and --video-target: an id, a title or a class_type; a name that fits several nodes is refused with the candidates.
Resuming: the manifest in --output-dir records every item; rerunning the same command skips done items,
collects prompts that were still running, and retries the rest. Ctrl-C saves the manifest and exits 130
without sending /interrupt (the servers finish what they are running; the rerun collects it); pass
--interrupt-on-exit to cancel those prompts instead. --restart starts over after changing the inputs but keeps
finished and still-running prompts whose graph did not change; --restart --rerender renders everything again.
Exit codes: 0 all done, 1 some items failed or were left (rerun to resume), 2 bad input or no server,
3 internal error, 130 Ctrl-C.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other refusal (not usage + message)
        self.exit(2, f"flashvideo_queue: error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m flashvideo_queue", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Queue one FlashVideo render per prompt line (or per video of a folder) on one or more "
        "ComfyUI servers, download the outputs with predictable names, and keep a resumable manifest.")
    p.add_argument("prompts", type=Path, nargs="?",
                   help="text file, one prompt per line; blank lines and # comments skipped (with --videos: one "
                   "prompt for every video, or one per video; optional if the workflow takes no prompt)")
    p.add_argument("--prompt", metavar="TEXT", help="one prompt given here instead of a prompts file")
    p.add_argument("--videos", type=Path, metavar="DIR",
                   help="one item per video file directly in DIR (" + " ".join(VIDEO_EXTENSIONS) + ", any case; "
                   "name order), uploaded to the server that renders it")
    p.add_argument("--video-target", action="append", dest="video_targets", default=[], metavar="NODE.INPUT",
                   help="with --videos: where the uploaded video goes (repeatable); default: every LoadVideo's file")
    p.add_argument("--workflow", type=Path, required=True,
                   help="workflow JSON: a UI workflow (example_workflows/*.json, Save in ComfyUI) or an API one "
                   "(example_workflows/api/*.json, Save (API))")
    p.add_argument("--server", action="append", dest="servers", metavar="URL",
                   help=f"ComfyUI server (repeat for several; one item in flight each; default {DEFAULT_SERVER})")
    p.add_argument("--output-dir", type=Path, default=Path("queue_out"), help="downloads and manifest.json")
    p.add_argument("--retries", type=int, default=2, help="extra attempts per failed item (default 2)")
    p.add_argument("--seed-base", type=int, default=0,
                   help="item i (prompt line or video i, 0-based) gets seed SEED_BASE + i (default 0)")
    p.add_argument("--keep-seeds", action="store_true", help="leave the workflow's seed inputs as they are")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per attempt before it is cancelled")
    p.add_argument("--set", action="append", dest="sets", default=[], metavar="NODE.INPUT=VALUE",
                   help="fixed override, VALUE parsed as JSON if it can be; NODE is a node id, title or class_type: "
                   "in the shipped workflows e.g. 12.steps=4, 11.noise_step=700, "
                   "'Stage II upscale (bridge).resolution=2K (1440x2560)' (README: node ids)")
    p.add_argument("--prompt-target", action="append", dest="prompt_targets", default=[], metavar="NODE.INPUT",
                   help="where the prompt goes (repeatable); default: every FlashVideoTextEncode's prompt")
    p.add_argument("--restart", action="store_true",
                   help="start the batch over with changed inputs (keeps finished/running prompts of unchanged graphs)")
    p.add_argument("--rerender", action="store_true", help="with --restart: render every item again")
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
                   prompt_targets=args.prompt_targets, restart=args.restart, rerender=args.rerender,
                   interrupt_on_exit=args.interrupt_on_exit, poll_interval=args.poll_interval,
                   server_grace=args.server_grace, prompt=args.prompt, videos=args.videos,
                   video_targets=args.video_targets)


def _terminate(signum, frame):  # a scheduler's SIGTERM gets the same clean stop as Ctrl-C
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    try:
        opts = options(argv)
    except SystemExit as e:  # --help or a usage error, already printed
        return e.code if isinstance(e.code, int) else 2
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
    except Exception as e:  # a bug: one line, not a traceback; the manifest on disk is still the last good state
        print(f"flashvideo_queue: internal error: {type(e).__name__}: {e} (please report it; the manifest is "
              "intact, rerun to resume)", file=sys.stderr)
        return 3
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(summary.report())
    return summary.exit_code
