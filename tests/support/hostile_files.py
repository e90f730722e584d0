"""Hostile model files made at test time (no binary fixtures), and a guarded worker that loads them.

``write_seeds`` writes one small valid file per format the pack reads; ``mutants`` derives seeded
byte-flip and truncation variants; ``GuardedLoader`` loads each in a long-lived child process and
reports, per file, "ok", a refusal message, or the crash (signal), hang (timeout) or foreign
exception that the suite must never see. Run as ``python hostile_files.py`` it is that child.
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Payload:
    """Unpickling this runs ``touch MARKER``: the file a code-executing load would leave behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_seeds(folder: str, marker: str) -> list[tuple[str, str]]:
    """[(path, loader kind)]: every format and layout the pack reads, tiny."""
    import argparse

    import torch

    from flashvideo_core.checkpoints.convert import convert_checkpoint
    from flashvideo_core.text_embeddings import save_prompt_embedding
    from flashvideo_core.tiny import TINY_STAGE1_CONFIG, random_vae_state_dict, write_tiny_dit, write_tiny_vae

    p = lambda name: os.path.join(folder, name)  # noqa: E731
    vae = random_vae_state_dict()
    lightning = {"state_dict": {**vae, "loss.logvar": torch.zeros(())}, "epoch": 3, "global_step": 1000,
                 "pytorch-lightning_version": "1.9.0", "optimizer_states": [], "lr_schedulers": [],
                 "hyper_parameters": {"lr": 1e-4, "args": argparse.Namespace(seed=1)}}
    torch.save(lightning, p("3d-vae.pt"))
    torch.save(lightning, p("3d-vae-legacy.pt"), _use_new_zipfile_serialization=False)
    write_tiny_vae(p("diffusers_vae.safetensors"), "diffusers")
    write_tiny_dit(p("stage1.pt"), "stage1", lora=True)
    sat = torch.load(p("stage1.pt"), weights_only=True)
    torch.save(sat, p("stage1-legacy.pt"), _use_new_zipfile_serialization=False)
    write_tiny_dit(p("stage1-merged.pt"), "stage1", lora=False)
    convert_checkpoint(p("stage1-merged.pt"), p("stage1-converted.safetensors"))
    gen = torch.Generator().manual_seed(0)
    save_prompt_embedding(p("prompt.safetensors"), torch.randn(1, 226, TINY_STAGE1_CONFIG.text_hidden_size,
                                                                generator=gen), "a cat")
    torch.save({"state_dict": {"x": torch.zeros(2)}, "evil": Payload(marker)}, p("evil.pt"))
    return [(p("3d-vae.pt"), "vae"), (p("3d-vae-legacy.pt"), "vae"), (p("diffusers_vae.safetensors"), "vae"),
            (p("stage1.pt"), "dit"), (p("stage1-legacy.pt"), "dit"), (p("stage1-converted.safetensors"), "dit"),
            (p("prompt.safetensors"), "embedding"), (p("evil.pt"), "vae")]


def mutants(seeds, folder: str, per_seed: int, seed: int = 0):
    """Seeded byte flips (in the structure-heavy head and tail, and anywhere) and truncations."""
    out = []
    for src, kind in seeds:
        # one stream per seed file: the mutants of one format do not shift when another's length changes (torch.save
        # writes a random id, legacy storage keys are memory addresses)
        rng = random.Random(f"{seed}-{os.path.basename(src)}")
        data = open(src, "rb").read()
        for i in range(per_seed):
            buf = bytearray(data)
            if i % 4 == 3:
                cut = rng.choice([rng.randrange(1, len(buf)), rng.randrange(1, min(len(buf), 4096)),
                                  len(buf) - rng.randrange(1, min(len(buf), 4096))])
                buf = buf[:cut]
                how = f"truncated to {cut}"
            else:
                spots = []
                for _ in range(rng.randint(1, 4)):
                    region = rng.random()
                    if region < 0.4:
                        pos = rng.randrange(min(len(buf), 4096))
                    elif region < 0.7:
                        pos = len(buf) - 1 - rng.randrange(min(len(buf), 4096))
                    else:
                        pos = rng.randrange(len(buf))
                    buf[pos] = rng.choice([buf[pos] ^ (1 << rng.randrange(8)), rng.randrange(256), 0xFF, 0])
                    spots.append(pos)
                how = f"bytes changed at {spots}"
            name = f"m{len(out):04d}_{os.path.basename(src)}"
            path = os.path.join(folder, name)
            with open(path, "wb") as f:
                f.write(buf)
            out.append((path, kind, how))
    return out


class GuardedLoader:
    """A child process that loads files on request; a segfault/SIGBUS or a hang costs one case, not the suite."""

    def __init__(self, timeout: float = 30.0):
        self.timeout = timeout
        self.proc = None

    def _start(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        answer = self._ask({"kind": "ping"}, 120)
        if answer.get("status") != "ok":
            raise RuntimeError(f"the guarded loader did not start: {answer}")

    def _ask(self, request, timeout):
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            return {"status": "hang"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return {"status": "crash", "returncode": code}
        return json.loads(line)

    def load(self, path: str, kind: str) -> dict:
        if self.proc is None:
            self._start()
        start = time.monotonic()
        result = self._ask({"path": path, "kind": kind}, self.timeout)
        result["seconds"] = time.monotonic() - start
        return result

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _load(path: str, kind: str):
    from flashvideo_core.checkpoints.io import read_checkpoint
    from flashvideo_core.dit.loader import load_dit
    from flashvideo_core.text_embeddings import load_prompt_embedding
    from flashvideo_core.vae.loader import load_vae

    from loader_fuzz import LOADERS, resolve

    if kind in LOADERS:  # the cross-loader fuzz's core entry points (support/loader_fuzz.py)
        return resolve(kind)(path)
    return {"vae": load_vae, "dit": load_dit, "embedding": load_prompt_embedding, "raw": read_checkpoint}[kind](path)


def _digest(loaded) -> str:
    """sha256 of what was loaded (a model's state dict, an embedding), to tell a faithful load from a silent change."""
    import hashlib

    import torch

    if loaded is True:  # an entry point that writes instead of returning weights (convert)
        return ""
    tensors = loaded.state_dict() if hasattr(loaded, "state_dict") else {"": loaded[0]} if isinstance(loaded, tuple) \
        else loaded.tensors
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tensors[name].shape}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _serve():
    import resource

    # a safety net for the test machine: a bug that allocates what a file declares fails instead of swapping
    resource.setrlimit(resource.RLIMIT_AS, (24 << 30, resource.RLIM_INFINITY))
    from flashvideo_core.errors import FlashVideoError

    for line in sys.stdin:
        request = json.loads(line)
        if request["kind"] == "ping":
            reply = {"status": "ok"}
        else:
            try:
                reply = {"status": "ok", "digest": _digest(_load(request["path"], request["kind"]))}
            except FlashVideoError as e:  # CheckpointError, InputError: the pack's deliberate refusals
                reply = {"status": "refused", "message": str(e)}
            except BaseException as e:  # noqa: BLE001 - reported to the parent as a failure of the pack
                reply = {"status": "foreign", "type": type(e).__name__, "message": str(e)[:500]}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
