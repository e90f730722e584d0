"""Which real ComfyUI hosts the tests run against, and making them runnable.

Hosts come from the team's shared snapshots (``../shared/hosts/comfyui-VERSION.tar.gz`` beside the checkout, or
``$FLASHVIDEO_SHARED_HOSTS``): each is laid out once by the shared ``setup-comfyui.sh`` under
``${XDG_CACHE_HOME:-~/.cache}/flashvideo-comfy/comfyui-VERSION`` (its own ``.venv``; a second run reuses it), and
the browser (Chromium + a Playwright venv) by ``setup-browser.sh``. ``COMFYUI_DIR`` instead names one checkout to
test (its version is read from ``comfyui_version.py``). With neither, every real-host test skips with one reason.

Set-up is started in the background as soon as the session knows it will need a host (see conftest.py), so the
minutes of ``pip install`` overlap the CPU-only tests; fixtures wait for it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .comfyui_host import ComfyUILocation, tail

REPO = Path(__file__).resolve().parents[2]
README_HINT = "see README 'Testing against real ComfyUI hosts'"
SNAPSHOT = re.compile(r"^comfyui-(\d+(?:\.\d+)*)\.tar\.gz$")
SETUP_TIMEOUT_S = 900


def version_key(version: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def shared_hosts_dir(environ=None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("FLASHVIDEO_SHARED_HOSTS") or REPO.parent / "shared" / "hosts")


def cache_dir(environ=None) -> Path:
    environ = os.environ if environ is None else environ
    root = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "flashvideo-comfy"


@dataclass(frozen=True)
class HostSpec:
    """One ComfyUI host to test against: a shared snapshot to lay out, or an existing checkout."""

    version: str
    directory: Path
    setup_script: Optional[Path] = None  # None: an existing checkout (COMFYUI_DIR), used as it is

    @property
    def test_id(self) -> str:
        return f"comfyui-{self.version}"


def checkout_version(directory: Path) -> str:
    text = (directory / "comfyui_version.py").read_text() if (directory / "comfyui_version.py").is_file() else ""
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return found.group(1) if found else "unknown"


def host_specs(environ=None) -> Union[list, str]:
    """The hosts to test, oldest first, or the one-line reason why there are none."""
    environ = os.environ if environ is None else environ
    configured = environ.get("COMFYUI_DIR")
    if configured:
        directory = Path(configured).expanduser()
        if not (directory / "main.py").is_file():
            return (f"real-ComfyUI tests skipped: COMFYUI_DIR={configured} is not a ComfyUI checkout (no main.py "
                    f"there); fix or unset it ({README_HINT})")
        return [HostSpec(checkout_version(directory), directory.resolve())]
    shared = shared_hosts_dir(environ)
    script = shared / "setup-comfyui.sh"
    versions = sorted((m.group(1) for p in (shared.iterdir() if shared.is_dir() else ())
                       if (m := SNAPSHOT.match(p.name))), key=version_key)
    if not script.is_file() or not versions:
        return (f"real-ComfyUI tests skipped: no host snapshots in {shared} (the team's shared/hosts beside the "
                f"checkout, or FLASHVIDEO_SHARED_HOSTS), and COMFYUI_DIR is not set ({README_HINT})")
    return [HostSpec(v, cache_dir(environ) / f"comfyui-{v}", script) for v in versions]


class HostSetupError(RuntimeError):
    pass


def _run_setup(command: list, log_path: Path, what: str) -> str:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                              timeout=SETUP_TIMEOUT_S)
    if proc.returncode != 0:
        raise HostSetupError(f"{what} failed (exit {proc.returncode}): {' '.join(command)}\n"
                             f"--- {log_path} ---\n{tail(log_path.read_text(errors='replace'), 40)}")
    return proc.stdout


def _location(directory: Path) -> ComfyUILocation:
    for candidate in (directory / ".venv" / "bin" / "python", directory / ".venv" / "Scripts" / "python.exe"):
        if candidate.is_file():
            return ComfyUILocation(directory.resolve(), str(candidate))
    return ComfyUILocation(directory.resolve(), sys.executable)


def prepare_host(spec: HostSpec) -> ComfyUILocation:
    """Lay out the host with the shared script (idempotent: a finished host returns at once)."""
    if spec.setup_script is not None:
        _run_setup(["bash", str(spec.setup_script), spec.version, str(spec.directory)],
                   spec.directory.parent / f"setup-comfyui-{spec.version}.log", f"setting up ComfyUI {spec.version}")
    return _location(spec.directory)


@dataclass(frozen=True)
class BrowserSetup:
    python: str
    chromium: Optional[str]


def prepare_browser(environ=None) -> Union[BrowserSetup, str]:
    """Playwright's Python and a Chromium: from the environment if given, else from the shared
    ``setup-browser.sh``; a one-line reason when neither is available."""
    environ = os.environ if environ is None else environ
    python, chromium = environ.get("FLASHVIDEO_PLAYWRIGHT_PYTHON"), environ.get("FLASHVIDEO_CHROMIUM")
    if not python:
        script = shared_hosts_dir(environ) / "setup-browser.sh"
        if not script.is_file():
            return (f"browser test skipped: no FLASHVIDEO_PLAYWRIGHT_PYTHON and no {script} to set one up "
                    f"({README_HINT})")
        venv = cache_dir(environ) / "browser-venv"
        exports = _run_setup(["bash", str(script), str(venv)], cache_dir(environ) / "setup-browser.log",
                             "setting up the browser")
        found = dict(re.findall(r"(FLASHVIDEO_\w+)=(\S+)", exports))
        python, chromium = found.get("FLASHVIDEO_PLAYWRIGHT_PYTHON"), chromium or found.get("FLASHVIDEO_CHROMIUM")
        if not python:
            raise HostSetupError(f"{script} printed no FLASHVIDEO_PLAYWRIGHT_PYTHON: {exports!r}")
    if not Path(python).is_file():
        return f"browser test skipped: FLASHVIDEO_PLAYWRIGHT_PYTHON={python} does not exist ({README_HINT})"
    if chromium and not Path(chromium).is_file():
        return f"browser test skipped: FLASHVIDEO_CHROMIUM={chromium} does not exist ({README_HINT})"
    return BrowserSetup(python, chromium)


class _Preparations:
    """Background set-up, started once per session, awaited by the fixtures."""

    def __init__(self):
        self._lock = threading.Lock()
        self._futures: dict = {}
        self._pool: Optional[ThreadPoolExecutor] = None

    def _submit(self, key, fn, *args) -> Future:
        with self._lock:
            if key not in self._futures:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="comfyui-setup")
                self._futures[key] = self._pool.submit(fn, *args)
            return self._futures[key]

    def start(self, specs: list, browser: bool) -> None:
        for spec in specs:
            self.host(spec)
        if browser:
            self.browser()

    def host(self, spec: HostSpec) -> Future:
        return self._submit(("host", spec), prepare_host, spec)

    def browser(self) -> Future:
        return self._submit(("browser",), prepare_browser)


PREPARATIONS = _Preparations()
