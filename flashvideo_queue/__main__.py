"""``python -m flashvideo_queue prompts.txt --workflow ... --server ...``"""

import sys

from .cli import main

sys.exit(main())
