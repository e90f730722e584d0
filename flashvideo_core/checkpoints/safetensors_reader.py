"""A bounded safetensors reader that copies each tensor into memory the process owns.

The safetensors library memory-maps the file: a loaded model then depends on the file, and
overwriting or truncating it afterwards changes the weights or kills the process (SIGBUS). Here
the header is validated completely first (size, JSON, duplicate names, dtypes, shapes, extents
that tile the data exactly), then each tensor is read with ``readinto`` straight into its own
``torch.empty`` buffer: one copy, no second full copy at peak.
"""

from __future__ import annotations

import json
import math
import struct

import torch

from ..errors import CheckpointError
from .files import check_memory

#: the safetensors library's own limit on the header
MAX_HEADER_BYTES = 100_000_000
MAX_TENSORS = 200_000
MAX_NDIM = 16

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
    "C64": torch.complex64,
}


def _corrupt(path: str, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: the safetensors file is corrupt or truncated ({what}). Download it again.")


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


class _Duplicate(Exception):
    pass


def read_header(f, size: int, path: str) -> tuple[int, dict, dict]:
    """(data start, {name: (dtype, shape, begin, end)}, metadata) after checking every field."""
    head = f.read(8)
    if len(head) != 8:
        raise _corrupt(path, "shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES:
        raise _corrupt(path, f"declares a {n}-byte header; the format allows at most {MAX_HEADER_BYTES}")
    if n > size - 8:
        raise CheckpointError(f"{path}: the safetensors header ({n} bytes) is longer than the file ({size} bytes): "
                              "the file is truncated. Download it again.")
    raw = f.read(n)
    if len(raw) != n:
        raise _corrupt(path, "the header ends early")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _Duplicate as e:
        raise CheckpointError(f"{path}: the safetensors header names {e.args[0]!r} twice; a reader would pick one "
                              "silently. The file is corrupt or was tampered with: download it again.") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _corrupt(path, f"header is not valid JSON: {type(e).__name__}") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _corrupt(path, "__metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise _corrupt(path, f"{len(header)} tensors, more than the {MAX_TENSORS} any model here has")
    data_len = size - 8 - n
    entries = {}
    for name, info in header.items():
        entries[name] = _entry(path, name, info, data_len)
    spans = sorted((begin, end, name) for name, (_, _, begin, end) in entries.items())
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            what = "overlaps another tensor" if begin < pos else f"leaves a gap at byte {pos}"
            raise _corrupt(path, f"tensor {name!r} {what}")
        pos = end
    if pos != data_len:
        if pos > data_len:  # cannot happen after _entry's check, kept for clarity
            raise _corrupt(path, "tensors extend past the end of the file")
        raise _corrupt(path, f"{data_len - pos} bytes after the last tensor belong to no tensor")
    return 8 + n, entries, metadata


def _entry(path, name, info, data_len):
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise _corrupt(path, f"entry {name!r} must have exactly dtype, shape and data_offsets")
    dtype = DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {info['dtype']!r}, which this pack does not read "
                              f"(known: {', '.join(DTYPES)}). Re-save the file with a standard dtype.")
    shape, offsets = info["shape"], info["data_offsets"]
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(type(d) is int and d >= 0 for d in shape)):
        raise _corrupt(path, f"tensor {name!r} has an invalid shape {str(shape)[:80]}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise _corrupt(path, f"tensor {name!r} has invalid data_offsets {str(offsets)[:80]}")
    begin, end = offsets
    nbytes = math.prod(shape) * dtype.itemsize
    if end - begin != nbytes:
        raise _corrupt(path, f"tensor {name!r} of shape {shape} needs {nbytes} bytes but spans {end - begin}")
    if end > data_len:
        raise CheckpointError(f"{path}: tensor {name!r} ends at byte {end} of the data but the file holds only "
                              f"{data_len} data bytes: the file is truncated. Download it again.")
    return dtype, tuple(shape), begin, end


def read_safetensors(f, size: int, path: str) -> tuple[dict, dict]:
    """(tensors, metadata): every tensor in its own process-owned CPU buffer."""
    start, entries, metadata = read_header(f, size, path)
    check_memory(size - start, path)
    tensors = {}
    for name, (dtype, shape, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2]):
        buf = torch.empty(end - begin, dtype=torch.uint8)
        if end > begin:
            f.seek(start + begin)
            view, got = memoryview(buf.numpy()), 0
            while got < end - begin and (n := f.readinto(view[got:])):
                got += n
            if got != end - begin:
                raise CheckpointError(f"{path}: tensor {name!r} could be read only partly ({got} of {end - begin} "
                                      "bytes): the file was truncated while loading. Download it again.")
        tensors[name] = buf.view(dtype).reshape(shape)
    return tensors, metadata
