"""flashvideo_queue: batch-queue FlashVideo prompts on one or more ComfyUI servers.

Pipeline engineers render hundreds of prompts unattended; this turns a prompts file and a workflow (UI or API
format) into one ComfyUI prompt per line (or per video of a ``--videos`` folder, each uploaded to the server
that renders it), follows them over ComfyUI's HTTP/websocket API, downloads the
videos with predictable names and keeps a manifest so a crash, a dead server or Ctrl-C costs nothing on the
rerun. One dependency besides the standard library: websocket-client, for the event stream.

In process: ``flashvideo_queue.run(Options(...))`` returns a ``Summary`` (raises ``InputError`` for bad input).
"""

from .errors import InputError
from .runner import Options, Summary, run

__all__ = ["InputError", "Options", "Summary", "run"]
