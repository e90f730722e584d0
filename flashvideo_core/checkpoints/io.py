"""Reading model files safely: safetensors, and pickles through torch's weights-only unpickler.

The format is recognised from the file's first bytes, never from its name. Pickles
that need code execution are refused (a checkpoint is data; running its code is how
a downloaded file takes over a machine). Truncated and corrupt files raise a
:class:`CheckpointError` that says so instead of a traceback from deep inside torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError

#: Top-level entries under which known containers keep their tensors.
#: ``state_dict``: the official ``3d-vae.pt`` (Lightning style); ``module``: SAT/DeepSpeed
#: ``stage1.pt``/``stage2.pt``.
CONTAINER_ENTRIES = ("state_dict", "module")

CONVERT_HINT = "python -m flashvideo_core convert IN.pt OUT.safetensors"

log = logging.getLogger("flashvideo")

#: Classes that training checkpoints carry beside their weights (run arguments, configs,
#: numpy scalars). They are replaced by inert placeholders: nothing of theirs is imported
#: or run, and their contents are dropped. Any other global refuses the file.
SKIPPABLE_GLOBALS = re.compile(
    r"^(argparse\.Namespace|omegaconf\..+|numpy\.(_?core\.multiarray\.(_reconstruct|scalar)|ndarray|dtype|dtypes\.\w+)"
    r"|pathlib\.\w*Path|collections\.defaultdict|datetime\.\w+"
    r"|typing\.\w+|enum\.\w+|deepspeed\.\w+(\.\w+)*Config\w*|deepspeed\.utils\.\w+(\.\w+)*)$"
)
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
MAX_SKIPPED_GLOBALS = 32


class SkippedObject:
    """Stands in for a non-tensor object of a checkpoint; accepts and discards anything."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return self


def _placeholder(qualified_name: str):
    module, _, name = qualified_name.rpartition(".")
    stub = type(name, (SkippedObject,), {"__module__": module})
    return (stub, qualified_name)


@dataclass
class RawCheckpoint:
    """Tensors read from one file, before any layout is applied."""

    path: str
    tensors: dict
    metadata: dict = field(default_factory=dict)
    #: "safetensors" or "pickle"
    container: str = "safetensors"
    #: the top-level entry the tensors came from ("state_dict", "module" or "" for a flat dict)
    entry: str = ""


def sniff_format(path: str) -> str:
    """Return "safetensors", "zip-pickle" or "pickle" from the file's first bytes."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CheckpointError(
            f"{path}: is a folder. Point to a single model file (.safetensors, .pt, .bin); "
            f"for a diffusers folder use its diffusion_pytorch_model.safetensors"
        ) from None
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?)")
    if head[:4] == b"PK\x03\x04":
        return "zip-pickle"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "pickle"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len <= size - 8:
            return "safetensors"
        if head[8:9] == b"{":
            raise CheckpointError(f"{path}: safetensors header is longer than the file: the file is truncated")
    raise CheckpointError(
        f"{path}: not a model file this pack can read (expected safetensors, or a PyTorch .pt/.bin). "
        "If this is a download, check it finished; HTML error pages are a common cause."
    )


def read_checkpoint(path: str, trust_pickle: bool = False) -> RawCheckpoint:
    """Read every tensor of a model file onto the CPU.

    ``trust_pickle`` allows arbitrary code in a pickle; only the converter exposes it,
    behind an explicit flag, for files the user vouches for.
    """
    path = os.fspath(path)
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return _read_safetensors(path)
    return _read_pickle(path, fmt, trust_pickle)


def _read_safetensors(path: str) -> RawCheckpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the safetensors file is truncated or corrupt ({e}). Download it again.") from None
    return RawCheckpoint(path, tensors, metadata, "safetensors")


def _read_pickle(path: str, fmt: str, trust_pickle: bool) -> RawCheckpoint:
    skipped: list = []
    while True:
        try:
            if trust_pickle:
                obj = torch.load(path, map_location="cpu", weights_only=False, mmap=fmt == "zip-pickle")
            else:
                with torch.serialization.safe_globals([_placeholder(name) for name in skipped]):
                    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "zip-pickle")
            break
        except pickle.UnpicklingError as e:
            match = _UNSUPPORTED.search(str(e))
            name = match.group(1) if match else None
            if name and SKIPPABLE_GLOBALS.match(name) and name not in skipped and len(skipped) < MAX_SKIPPED_GLOBALS:
                skipped.append(name)
                continue
            raise CheckpointError(
                f"{path}: refused to load: this pickle needs code execution to unpickle "
                f"({'it references ' + name if name else _first_line(e)}). Model files should hold only tensors, "
                f"and running a file's code is how malicious checkpoints take over a machine. If you trust this "
                f"file, rewrite it once as safetensors with `{CONVERT_HINT} --trust-pickle`."
            ) from None
        except (EOFError, zipfile.BadZipFile, struct.error) as e:
            raise CheckpointError(f"{path}: the file is truncated or corrupt ({type(e).__name__}: {e}). Download it again.") from None
        except RuntimeError as e:
            msg = str(e)
            if "zip" in msg.lower() or "stream" in msg.lower() or "corrupt" in msg.lower() or "EOF" in msg:
                raise CheckpointError(f"{path}: the file is truncated or corrupt ({_first_line(e)}). Download it again.") from None
            raise CheckpointError(f"{path}: could not be read by torch.load ({_first_line(e)})") from None
    if skipped:
        log.info("%s: skipped non-tensor objects without running them: %s", path, ", ".join(skipped))
    return _unwrap_container(path, obj)


def _unwrap_container(path: str, obj) -> RawCheckpoint:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors (a state dict)")
    entry = ""
    for name in CONTAINER_ENTRIES:
        if isinstance(obj.get(name), dict):
            obj, entry = obj[name], name
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"{path}: no tensors found (top-level entries: {sorted(map(str, obj))[:8]}). "
            "Expected a state dict, or a container with 'state_dict' or 'module'."
        )
    return RawCheckpoint(path, tensors, {}, "pickle", entry)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def sha256_of_file(path: str, chunk_size: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def write_safetensors(path: str, tensors: dict, metadata: dict) -> None:
    """Write tensors (made contiguous, never shared) with string metadata, atomically."""
    from safetensors.torch import save_file

    seen, out = set(), {}
    for k, v in tensors.items():
        v = v.detach().contiguous()
        if v.data_ptr() in seen:  # safetensors refuses aliased tensors
            v = v.clone()
        seen.add(v.data_ptr())
        out[k] = v
    tmp = f"{path}.partial"
    save_file(out, tmp, metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    os.replace(tmp, path)
