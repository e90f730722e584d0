"""What every check script run with a real ComfyUI's python does first (tests/support/*_check*.py).

``start_cpu_host``: the host's folder on the path and as working directory, its arguments parsed as main.py does
with ``--cpu``. ``import_pack``: the pack imported as the package ``flashvideo_pack``, as ComfyUI imports a custom
node folder (relative imports work, nothing is installed).
"""

import importlib.util
import os
import sys


def start_cpu_host(comfy_dir: str) -> None:
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, comfy_dir)
    os.chdir(comfy_dir)
    import comfy.options

    comfy.options.enable_args_parsing()  # as main.py does, so --cpu is read: no CUDA here


def import_pack(pack_dir: str):
    spec = importlib.util.spec_from_file_location("flashvideo_pack", os.path.join(pack_dir, "__init__.py"),
                                                  submodule_search_locations=[pack_dir])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["flashvideo_pack"] = pack
    spec.loader.exec_module(pack)
    return pack
