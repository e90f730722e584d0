"""Reading model files safely: safetensors, and pickles through torch's weights-only unpickler.

The format is recognised from the file's first bytes, never from its name. Pickles
that need code execution are refused (a checkpoint is data; running its code is how
a downloaded file takes over a machine). Truncated and corrupt files raise a
:class:`CheckpointError` that says so instead of a traceback from deep inside torch.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import logging
import os
import pickle
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError
from . import metadata as md
from . import pickle_scan
from ..io.output_files import output_file
from .files import check_memory, describe, open_regular_file
from .safetensors_reader import read_safetensors

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
#: metadata entry of the pack's own safetensors files: CRC-32 of metadata and tensors (see content_crc32)
CHECKSUM_KEY = "flashvideo.crc32"
#: every metadata entry the pack writes; a near miss of one of them is a damaged name (which could hide the checksum)
PACK_METADATA_KEYS = (md.FORMAT_KEY, md.MODEL_KEY, md.CONFIG_KEY, md.SOURCE_SHA_KEY, md.SOURCE_LAYOUT_KEY,
                      md.SOURCE_NAME_KEY, md.PROMPT_KEY, CHECKSUM_KEY)
#: entries of a torch.save zip: one per storage plus a few
MAX_ZIP_ENTRIES = 300_000
#: data.pkl of the official stage1.pt is ~1 MB
MAX_PICKLE_BYTES = 512 * 1024 * 1024
#: the first pickle of a legacy (pre-zip) torch.save file
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


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


def _sniff(f, size: int, shown: str) -> str:
    head = f.read(16)
    f.seek(0)
    if head[:4] == b"PK\x03\x04":
        return "zip-pickle"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise CheckpointError(
        f"{shown}: not a model file this pack can read (expected safetensors, or a PyTorch .pt/.bin). "
        "If this is a download, check it finished; HTML error pages are a common cause."
    )


def read_checkpoint(path: str, trust_pickle: bool = False) -> RawCheckpoint:
    """Read every tensor of a model file into process-owned CPU memory (nothing stays mapped to the file,
    so replacing or truncating it later cannot change or crash a loaded model).

    ``trust_pickle`` allows arbitrary code in a pickle; only the converter exposes it,
    behind an explicit flag, for files the user vouches for.
    """
    path = os.fspath(path)
    shown = describe(path)
    f, size = open_regular_file(path)
    with f:
        fmt = _sniff(f, size, shown)
        if fmt == "safetensors":
            tensors, metadata = read_safetensors(f, size, shown)
            check_tensor_kinds(tensors, shown)
            _verify_checksum(shown, tensors, metadata)
            return RawCheckpoint(path, tensors, metadata, "safetensors")
        return _read_pickle(f, size, path, fmt, trust_pickle)


def check_tensor_kinds(tensors: dict, shown: str) -> None:
    """Only dense CPU tensors with data: meta, sparse, quantised, nested or subclassed tensors are refused."""
    for key, t in tensors.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{shown}: a tensor is stored under the non-text key {str(key)[:60]!r}; not a state dict")
        problem = None
        if t.is_meta:
            problem = "is a meta tensor (shape only, no data)"
        elif t.layout != torch.strided or t.is_nested:
            problem = f"has layout {t.layout} (sparse or nested)"
        elif t.is_quantized:
            problem = "is a quantized tensor"
        elif type(t) not in (torch.Tensor, torch.nn.Parameter):
            problem = f"is a {type(t).__name__}, a tensor subclass"
        elif t.device.type != "cpu":
            problem = f"is on {t.device}"
        if problem:
            raise CheckpointError(f"{shown}: tensor {key!r} {problem}; model weights must be plain dense tensors. "
                                  "The file is not a usable checkpoint: download the official one.")


def _allowed_globals() -> set:
    """torch's weights-only allowlist plus what the host registered (ComfyUI adds e.g. numpy scalars)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals, _get_user_allowed_globals

        return set(_get_allowed_globals()) | set(_get_user_allowed_globals())
    except (ImportError, AttributeError, TypeError, ValueError):  # private API moved: torch itself still refuses what it does not allow
        return set()


def _code_refusal(shown: str, name) -> CheckpointError:
    return CheckpointError(
        f"{shown}: refused to load: this pickle needs code execution to unpickle "
        f"({'it references ' + name if name else 'it calls an unknown function'}). Model files should hold only "
        f"tensors, and running a file's code is how malicious checkpoints take over a machine. If this should be "
        f"an official checkpoint, the name may be damaged: download it again. If you trust this file, rewrite it "
        f"once as safetensors with `{CONVERT_HINT} --trust-pickle`."
    )


def _corrupt(shown: str, detail: str) -> CheckpointError:
    return CheckpointError(f"{shown}: the file is truncated or corrupt ({detail}). Download it again.")


def _check_scan(shown: str, scan: pickle_scan.ScanResult, allowed: set, size: int) -> None:
    if allowed:
        for name in sorted(scan.globals):
            if name not in allowed and not SKIPPABLE_GLOBALS.match(name):
                raise _code_refusal(shown, name)
    if scan.constructor_ints > size + (1 << 20):  # e.g. bytearray(2**44): allocation beyond what the file holds
        raise _scan_error(shown, pickle_scan.ScanError("limit", "constructor arguments ask for more memory than "
                                                                "the file holds"))


def _scan_error(shown: str, e: pickle_scan.ScanError) -> CheckpointError:
    if e.kind == "unsupported":
        return CheckpointError(
            f"{shown}: refused to load: the pickle {e} (it was not written by torch.save, and such pickles can run "
            f"code). If you trust this file, rewrite it once as safetensors with `{CONVERT_HINT} --trust-pickle`."
        )
    if e.kind == "limit":
        return CheckpointError(f"{shown}: refused to load: the pickle's structure is pathological ({e}); no model "
                               "checkpoint looks like this. The file is corrupt or hostile: download the official one.")
    return _corrupt(shown, f"pickle: {e}")


def _scan_zip(f, size: int, shown: str, allowed: set) -> tuple[pickle_scan.ScanResult, dict]:
    """Scan data.pkl and check every storage it declares against its record. Returns (scan, records)."""
    _check_zip_directory(f, size, shown)
    try:
        z = zipfile.ZipFile(f)
        infos = z.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise _corrupt(shown, "the zip archive names an entry twice")
        prefix = names[0].split("/", 1)[0] if names else ""
        pkl = z.getinfo(f"{prefix}/data.pkl") if f"{prefix}/data.pkl" in names else None
        if pkl is None:
            raise _corrupt(shown, "a zip archive without data.pkl; not a torch.save file")
        if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
            raise _corrupt(shown, "compressed zip entries, which torch.save never writes")
        if pkl.file_size > MAX_PICKLE_BYTES:
            raise _corrupt(shown, f"data.pkl declares {pkl.file_size} bytes")
        data = z.read(pkl)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError, struct.error,
            UnicodeDecodeError, NotImplementedError, RuntimeError, OverflowError) as e:
        raise _corrupt(shown, f"zip archive: {type(e).__name__}: {_first_line(e)}") from None
    try:
        scan = pickle_scan.scan_pickle(io.BytesIO(data), len(data))
    except pickle_scan.ScanError as e:
        raise _scan_error(shown, e) from None
    _check_scan(shown, scan, allowed, size)
    records = {i.filename: i for i in infos}
    try:
        big_endian = f"{prefix}/byteorder" in records and z.read(f"{prefix}/byteorder").strip() != b"little"
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise _corrupt(shown, f"zip archive: {type(e).__name__}: {_first_line(e)}") from None
    for ref in scan.storages.values():
        info = records.get(f"{prefix}/data/{ref.key}")
        if info is None:
            raise _corrupt(shown, f"tensor data record data/{ref.key} is missing")
        want = ref.numel * _storage_itemsize(shown, ref.type_name)
        if info.file_size != want or info.header_offset + want > size:
            raise _corrupt(shown, f"tensor data record data/{ref.key} holds {info.file_size} bytes, {want} declared")
    check_memory(sum(records[f"{prefix}/data/{ref.key}"].file_size for ref in scan.storages.values()), shown)
    return scan, None if big_endian else records  # torch byte-swaps big-endian data: its CRCs no longer apply


def _check_zip_directory(f, size: int, shown: str) -> None:
    """Read the entry count from the end-of-central-directory record before zipfile builds one object per
    entry (a crafted directory of millions of entries would cost gigabytes)."""
    tail_len = min(size, 65_557)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    f.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise _corrupt(shown, "the zip archive's directory is missing: truncated")
    (entries,) = struct.unpack("<H", tail[at + 10: at + 12])
    locator = tail.rfind(b"PK\x06\x07", 0, at)
    if entries == 0xFFFF and locator >= 0 and locator + 20 <= len(tail):  # zip64: the count is in its own record
        (offset,) = struct.unpack("<Q", tail[locator + 8: locator + 16])
        if offset + 40 > size:
            raise _corrupt(shown, "the zip64 directory points past the end of the file")
        f.seek(offset)
        record = f.read(40)
        f.seek(0)
        if record[:4] != b"PK\x06\x06":
            raise _corrupt(shown, "the zip64 directory record is damaged")
        (entries,) = struct.unpack("<Q", record[32:40])
    if entries > MAX_ZIP_ENTRIES:
        raise _scan_error(shown, pickle_scan.ScanError("limit", f"the zip archive lists {entries} entries"))


def _scan_legacy(f, size: int, shown: str, allowed: set) -> pickle_scan.ScanResult:
    """The legacy format: magic number, protocol, sys info, the object, storage keys; then raw storages."""
    scan = pickle_scan.ScanResult()
    try:
        for i in range(5):
            pickle_scan.scan_pickle(f, size - f.tell(), scan)
            _check_scan(shown, scan, allowed, size)
            if i == 0 and scan.value != LEGACY_MAGIC:
                raise CheckpointError(
                    f"{shown}: a plain pickle, not a file written by torch.save. If you trust it, rewrite it once "
                    f"as safetensors with `{CONVERT_HINT} --trust-pickle`."
                )
    except pickle_scan.ScanError as e:
        raise _scan_error(shown, e) from None
    declared = sum(ref.numel * _storage_itemsize(shown, ref.type_name) for ref in scan.storages.values())
    if declared > size - f.tell():
        raise _corrupt(shown, f"its tensors declare {declared} bytes but only {size - f.tell()} follow: truncated")
    check_memory(declared, shown)
    return scan


def _storage_itemsize(shown: str, type_name: str) -> int:
    size = _STORAGE_ITEMSIZES.get(type_name)
    if size is None:
        raise _corrupt(shown, f"unknown storage type {type_name[:80]!r}")
    return size


def _storage_itemsizes() -> dict:
    out = {"torch.UntypedStorage": 1, "torch.storage.UntypedStorage": 1}
    for dtype, name in torch.storage._dtype_to_storage_type_map().items():
        out[f"torch.{name}"] = dtype.itemsize
    return out


_STORAGE_ITEMSIZES = _storage_itemsizes()


def _read_pickle(f, size: int, path: str, fmt: str, trust_pickle: bool) -> RawCheckpoint:
    shown = describe(path)
    skipped: list = []
    records = None
    if not trust_pickle:
        allowed = _allowed_globals()
        if fmt == "zip-pickle":
            scan, records = _scan_zip(f, size, shown, allowed)
        else:
            scan = _scan_legacy(f, size, shown, allowed)
        skipped = sorted(g for g in scan.globals if g not in allowed and SKIPPABLE_GLOBALS.match(g))
    # the opened file itself (not the name, which may have been swapped since the checks)
    source = f"/proc/self/fd/{f.fileno()}" if os.path.exists(f"/proc/self/fd/{f.fileno()}") else path
    while True:
        try:
            if trust_pickle:
                obj = torch.load(source, map_location="cpu", weights_only=False, mmap=False)
            else:
                with torch.serialization.safe_globals([_placeholder(name) for name in skipped]):
                    obj = torch.load(source, map_location="cpu", weights_only=True, mmap=False)
            break
        except pickle.UnpicklingError as e:
            match = _UNSUPPORTED.search(str(e))
            name = match.group(1) if match else None
            if name and SKIPPABLE_GLOBALS.match(name) and name not in skipped and len(skipped) < MAX_SKIPPED_GLOBALS:
                skipped.append(name)
                continue
            if name:
                raise _code_refusal(shown, name) from None
            raise _corrupt(shown, _first_line(e)) from None
        except MemoryError:
            raise CheckpointError(f"{shown}: loading needs more memory than is free; close other programs or use "
                                  "a smaller (e.g. converted bf16/fp8) file") from None
        except Exception as e:  # noqa: BLE001 - whatever torch raises on a damaged file, the user gets one message
            raise _corrupt(shown, f"{type(e).__name__}: {_first_line(e)}") from None
    if skipped:
        log.info("%s: skipped non-tensor objects without running them: %s", shown, ", ".join(skipped))
    raw = _unwrap_container(path, obj)
    check_tensor_kinds(raw.tensors, shown)
    if records is not None:
        _verify_crcs(shown, raw.tensors, records)
    return raw


def _verify_crcs(shown: str, tensors: dict, records: dict) -> None:
    """torch does not check the zip's CRC-32s: a flipped byte in the weights would load silently. Every storage
    behind a returned tensor must equal, byte for byte (CRC-32), a data record of the archive."""
    known = {(i.file_size, i.CRC) for name, i in records.items() if "/data/" in name}
    if any(crc == 0 and n > 0 for n, crc in known):  # written with CRCs off: nothing to check against
        return
    seen = set()
    for key, t in tensors.items():
        st = t.untyped_storage()
        if st.data_ptr() in seen or st.nbytes() == 0:
            continue
        seen.add(st.data_ptr())
        buf = torch.empty(0, dtype=torch.uint8).set_(st)
        if (st.nbytes(), zlib.crc32(memoryview(buf.numpy()))) not in known:
            raise _corrupt(shown, f"the data of tensor {key!r} fails its CRC-32 check")


def _unwrap_container(path: str, obj) -> RawCheckpoint:
    shown = describe(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{shown}: holds a {type(obj).__name__}, not a dict of tensors (a state dict)")
    entry = ""
    for name in CONTAINER_ENTRIES:
        if isinstance(obj.get(name), dict):
            obj, entry = obj[name], name
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        names = sorted(k[:40] for k in obj if isinstance(k, str))[:8]
        raise CheckpointError(
            f"{shown}: no tensors found (top-level entries: {names}). "
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
    """Write tensors (made contiguous, never shared) with string metadata and a CRC-32 of both, atomically."""
    from safetensors.torch import save_file

    seen, out = set(), {}
    for k, v in tensors.items():
        v = v.detach().contiguous()
        if v.data_ptr() in seen:  # safetensors refuses aliased tensors
            v = v.clone()
        seen.add(v.data_ptr())
        out[k] = v
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items() if k != CHECKSUM_KEY}
    meta[CHECKSUM_KEY] = f"{content_crc32(out, meta):08x}"
    with output_file(path) as temporary:
        save_file(out, temporary, metadata=meta)


def content_crc32(tensors: dict, metadata: dict) -> int:
    """CRC-32 over the metadata (but the checksum itself) and every tensor's name, dtype, shape and bytes.

    The safetensors format has no checksum: without one a flipped byte in a weight loads silently."""
    crc = zlib.crc32(json.dumps({k: v for k, v in metadata.items() if k != CHECKSUM_KEY}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name]
        crc = zlib.crc32(f"{name}|{t.dtype}|{tuple(t.shape)}".encode(), crc)
        if t.numel():
            crc = zlib.crc32(memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()), crc)
    return crc


def _verify_checksum(shown: str, tensors: dict, metadata: dict) -> None:
    for key in metadata:
        near = difflib.get_close_matches(key, PACK_METADATA_KEYS, n=1, cutoff=0.85)
        if near and key != near[0]:
            raise CheckpointError(f"{shown}: its metadata entry {key!r} is a damaged {near[0]!r} (a damaged copy or "
                                  "download). Convert or save it again from the original.")
    want = metadata.get(CHECKSUM_KEY)
    if want is None:  # written by another tool, or by an older pack: nothing to check against
        return
    if f"{content_crc32(tensors, metadata):08x}" != want:
        raise CheckpointError(f"{shown}: the file fails its CRC-32 check (it changed after this pack wrote it: a "
                              "damaged copy or download). Convert or save it again from the original.")
