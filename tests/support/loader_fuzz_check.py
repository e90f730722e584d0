"""Run by tests/test_loader_fuzz.py with a real ComfyUI's python: every host loader of support/loader_fuzz.py on
every file of the shared manifest, in this one process (seconds, not a process per file).

Per load it prints a "start" line, then one JSON result: ok, refused (the pack's error and message), hang
(SIGALRM after the timeout) or foreign (any other exception, its type and message). A crash ends the process:
the test names the last case started.

usage: python loader_fuzz_check.py COMFYUI_DIR PACK_DIR MANIFEST TIMEOUT_S
"""

import json
import signal
import sys

from in_host import import_pack, start_cpu_host  # noqa: E402  (tests/support, the script's folder)

comfy_dir, pack_dir, manifest, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
start_cpu_host(comfy_dir)
import_pack(pack_dir)

from loader_fuzz import LOADERS, read_manifest, resolve  # noqa: E402

from flashvideo_pack.flashvideo_core.errors import FlashVideoError  # noqa: E402


class Hang(BaseException):
    pass


def alarm(*_):
    raise Hang()


signal.signal(signal.SIGALRM, alarm)
cases = read_manifest(manifest)
for name, (where, target, _kinds) in LOADERS.items():
    if where != "host":
        continue
    load = resolve(name, "flashvideo_pack")
    for case in cases:
        print(json.dumps({"start": [name, case.name]}), flush=True)
        signal.alarm(timeout)
        try:
            load(case.path)
            result = {"status": "ok"}
        except FlashVideoError as e:
            result = {"status": "refused", "message": str(e)}
        except Hang:
            result = {"status": "hang"}
        except BaseException as e:  # noqa: BLE001 - reported to the test as a failure of the pack
            result = {"status": "foreign", "type": type(e).__name__, "message": str(e)[:500]}
        finally:
            signal.alarm(0)
        print(json.dumps({"loader": name, "case": case.name, **result}), flush=True)
print(json.dumps({"done": True}), flush=True)
