import re

import pytest
import torch

from flashvideo_core.checkpoints.vae_keys import official_to_diffusers
from flashvideo_core.tiny import TINY_VAE_CONFIG, random_vae_state_dict
from flashvideo_core.vae.model import CogVideoXVAE
from support.fake_comfy_server import FakeComfy


@pytest.fixture
def fakes():
    """Factory for fake ComfyUI servers (the batch client's tests), all stopped at the end."""
    started = []

    def make(**kwargs) -> FakeComfy:
        fake = FakeComfy(**kwargs).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture(scope="session")
def tiny_state_dict():
    return random_vae_state_dict(TINY_VAE_CONFIG, seed=0)


@pytest.fixture(scope="session")
def tiny_vae(tiny_state_dict):
    vae = CogVideoXVAE(TINY_VAE_CONFIG)
    vae.load_state_dict(tiny_state_dict)
    return vae.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def diffusers_vae(tiny_state_dict):
    """The independent oracle: diffusers' implementation at the identical tiny config."""
    diffusers = pytest.importorskip("diffusers")
    cfg = TINY_VAE_CONFIG
    model = diffusers.AutoencoderKLCogVideoX(
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
    )
    model.load_state_dict(official_to_diffusers(tiny_state_dict), strict=True)
    return model.eval().requires_grad_(False)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


# ------------------------------------------------------------------------------------ real ComfyUI hosts

from support.hosts import PREPARATIONS, HostSetupError, host_specs  # noqa: E402

HOST_SPECS = host_specs()


def pytest_generate_tests(metafunc):
    """Every test that takes ``comfyui_host`` runs once per tested host; its id names the version."""
    if "comfyui_host" not in metafunc.fixturenames:
        return
    if isinstance(HOST_SPECS, str):
        params = [pytest.param(None, id="no-host")]  # skipped in pytest_runtest_setup
    else:
        params = [pytest.param(spec, id=spec.test_id) for spec in HOST_SPECS]
    metafunc.parametrize("comfyui_host", params, indirect=True, scope="session")


def pytest_collection_finish(session):
    """Start laying out the hosts (and the browser) in the background while the CPU-only tests run."""
    needed = [item for item in session.items if "comfyui_host" in getattr(item, "fixturenames", ())]
    if not needed:
        return
    if isinstance(HOST_SPECS, str):
        session.config._flashvideo_host_skip = HOST_SPECS
        return
    PREPARATIONS.start(HOST_SPECS, browser=any("browser" in item.fixturenames for item in needed))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Without hosts, every real-host test skips from here: one location, so one line in the summary."""
    if isinstance(HOST_SPECS, str) and "comfyui_host" in getattr(item, "fixturenames", ()):
        raise pytest.skip.Exception(HOST_SPECS)


class ComfyUIHost:
    """A tested host, laid out and ready: its version, checkout and interpreter."""

    def __init__(self, spec, location):
        self.spec, self.location, self.version = spec, location, spec.version

    def __repr__(self):
        return f"ComfyUIHost({self.version} at {self.location.directory})"


@pytest.fixture(scope="session")
def comfyui_host(request):
    spec = request.param
    try:
        location = PREPARATIONS.host(spec).result()
    except HostSetupError as err:
        pytest.fail(str(err), pytrace=False)
    return ComfyUIHost(spec, location)


def pytest_report_header(config):
    if isinstance(HOST_SPECS, str):
        return HOST_SPECS
    return "real ComfyUI hosts: " + ", ".join(f"{s.version} ({s.directory})" for s in HOST_SPECS)


def pytest_terminal_summary(terminalreporter):
    """One line per host: how its real-host tests ended (or the one loud reason they could not run)."""
    reason = getattr(terminalreporter.config, "_flashvideo_host_skip", None)
    if reason:
        terminalreporter.write_line(f"REAL-HOST TESTS DID NOT RUN: {reason}", yellow=True, bold=True)
        return
    if isinstance(HOST_SPECS, str):
        return
    for spec in HOST_SPECS:
        mine = re.compile(rf"[\[-]{re.escape(spec.test_id)}[\]-]")
        counts = {}
        for outcome in ("passed", "failed", "error", "skipped"):
            ids = {r.nodeid for r in terminalreporter.stats.get(outcome, []) if mine.search(getattr(r, "nodeid", ""))}
            if ids:
                counts[outcome] = len(ids)
        if counts:
            terminalreporter.write_line(
                f"ComfyUI {spec.version} ({spec.directory}): " + ", ".join(f"{n} {k}" for k, n in counts.items()))
