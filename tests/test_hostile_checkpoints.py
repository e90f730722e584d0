"""Hostile and damaged model files: every one is refused with the file, the cause and the fix, within bounds of
time and memory, without running code, crashing or hanging; loaded weights never depend on the file afterwards.

All files are generated here. Anything that could crash or hang the interpreter (deep pickles, FIFOs, the fuzz)
is loaded in a guarded child process (``support.hostile_files.GuardedLoader``)."""

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest
import torch

from flashvideo_core.checkpoints import pickle_scan
from flashvideo_core.checkpoints.convert import convert_checkpoint
from flashvideo_core.checkpoints.dit_keys import SAT_PREFIX
from flashvideo_core.checkpoints.io import read_checkpoint, write_safetensors
from flashvideo_core.checkpoints.metadata import CONFIG_KEY
from flashvideo_core.cli import main as cli_main
from flashvideo_core.dit.loader import load_dit
from flashvideo_core.errors import CheckpointError
from flashvideo_core.text_embeddings import load_prompt_embedding
from flashvideo_core.tiny import write_tiny_dit, write_tiny_vae
from flashvideo_core.vae.loader import load_vae
from support.hostile_files import GuardedLoader, mutants, write_seeds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def guard():
    loader = GuardedLoader(timeout=60)
    yield loader
    loader.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    out = {
        "vae": write_tiny_vae(str(d / "3d-vae.pt")),
        "stage1_lora": write_tiny_dit(str(d / "stage1.pt"), "stage1", lora=True),
        "stage1": write_tiny_dit(str(d / "stage1_merged.pt"), "stage1", lora=False),
        "dir": d,
    }
    out["converted"] = str(d / "stage1.safetensors")
    convert_checkpoint(out["stage1"], out["converted"])
    return out


def _refused(guard, path, kind="vae", *patterns):
    result = guard.load(str(path), kind)
    assert result["status"] == "refused", result
    message = result["message"]
    assert os.path.basename(str(path)) in message, message
    for pattern in patterns:
        assert pattern.lower() in message.lower(), (pattern, message)
    return message


# ------------------------------------------------------------------------------------------ paths that are no file


def test_fifo_device_folder_loops_and_long_names_are_refused_without_blocking(guard, tmp_path):
    fifo = tmp_path / "stage1.pt"
    os.mkfifo(fifo)
    _refused(guard, fifo, "dit", "named pipe", "regular file")  # a blocked open would be the guard's "hang"
    _refused(guard, "/dev/zero", "vae", "character device")
    _refused(guard, tmp_path, "vae", "folder")
    os.symlink(tmp_path / "b.pt", tmp_path / "a.pt")
    os.symlink(tmp_path / "a.pt", tmp_path / "b.pt")
    _refused(guard, tmp_path / "a.pt", "vae", "symlink loop")
    os.symlink(tmp_path / "gone.pt", tmp_path / "dangling.pt")
    _refused(guard, tmp_path / "dangling.pt", "vae", "does not exist")
    long_name = tmp_path / ("x" * 300 + ".pt")
    with pytest.raises(CheckpointError, match="too long.*rename"):
        load_vae(str(long_name))
    with pytest.raises(CheckpointError, match="NUL byte"):
        load_vae(str(tmp_path / "a\0b.pt"))


# ------------------------------------------------------------------------------------------ pathological pickles

PROTO2 = b"\x80\x02"


def _pickle_file(path, body: bytes, zipped=False):
    data = PROTO2 + body + b"."
    if zipped:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", data)
            z.writestr("archive/version", "3\n")
    else:
        with open(path, "wb") as f:
            f.write(data)
    return path


def _deep_list(depth):
    return b"]" * depth + b"a" * (depth - 1)


def _deep_tuple_key(depth):
    return b"}" + b"N" + b"\x85" * depth + b"Ns"


@pytest.mark.parametrize("zipped", [False, True])
@pytest.mark.parametrize("name, body, expect", [
    ("deep_list", _deep_list(200_000), "nested more than"),
    ("deep_tuple_key", _deep_tuple_key(200_000), "nested more than"),
    # t = (t, t) through the memo, 80 times: 2**80 items to hash
    ("tuple_dag_key", b"N\x85q\x00" + b"h\x00h\x00\x86q\x00" * 80 + b"}h\x00Ns", "expands to more than"),
    ("big_int_keys", b"}(" + b"".join(b"\x8a\x09" + i.to_bytes(9, "little") + b"N" for i in range(10_001)) + b"u",
     "hash flooding"),
    ("bytearray_bomb", b"cbuiltins\nbytearray\n\x8a\x06" + (1 << 44).to_bytes(6, "little") + b"\x85R",
     "more memory"),
])
def test_pathological_pickles_are_refused_before_building(guard, tmp_path, zipped, name, body, expect):
    path = _pickle_file(str(tmp_path / f"{name}.pt"), body, zipped)
    _refused(guard, path, "vae", expect, "download")  # the guard reports a hang or a crash as such


def test_memo_and_op_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(pickle_scan, "MAX_MEMO", 1000)
    path = _pickle_file(str(tmp_path / "memo.pt"), b"N" + b"".join(b"r" + struct.pack("<I", i) for i in range(1001)))
    with pytest.raises(CheckpointError, match="memo.pt.*pathological.*memo entries"):
        read_checkpoint(path)
    monkeypatch.setattr(pickle_scan, "MAX_OPS", 5000)
    path = _pickle_file(str(tmp_path / "ops.pt"), b"]" + b"Na" * 5000)
    with pytest.raises(CheckpointError, match="ops.pt.*pathological.*operations"):
        read_checkpoint(path)


def test_corrupt_pickles_get_one_clear_message(tmp_path):
    cases = {
        "memo_miss.pt": (b"h\x07", "memo entry 7"),
        "underflow.pt": (b"a", "stack underflow"),
        "bad_utf8.pt": (b"X\x02\x00\x00\x00\xff\xfe", "UTF-8"),
        "long_string.pt": (b"X\xff\xff\xff\xff", "declares 4294967295 bytes"),
        "odd_setitems.pt": (b"}(Nu", "odd number"),
        "not_opcode.pt": (b"\xff", "not a pickle opcode"),
    }
    for name, (body, expect) in cases.items():
        path = _pickle_file(str(tmp_path / name), body)
        with pytest.raises(CheckpointError, match=f"{name}: the file is truncated or corrupt.*{expect}.*Download"):
            read_checkpoint(path)


def test_truncated_legacy_pickles_say_truncated_not_malicious(files, tmp_path):
    sd = torch.load(files["vae"], weights_only=True)
    legacy = str(tmp_path / "legacy.pt")
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    data = open(legacy, "rb").read()
    for cut in (20, 300, len(data) // 3, len(data) - 10):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as err:
            load_vae(str(path))
        assert f"cut{cut}.pt" in str(err.value) and "truncated" in str(err.value), str(err.value)
        assert "code execution" not in str(err.value) and "malicious" not in str(err.value)


def test_protocol4_pickle_and_code_are_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    from support.hostile_files import Payload

    plain = tmp_path / "protocol4.pt"
    plain.write_bytes(pickle.dumps({"state_dict": {"a": 1}}, protocol=4))
    with pytest.raises(CheckpointError, match="protocol4.pt: refused.*FRAME.*--trust-pickle"):
        load_vae(str(plain))
    evil = tmp_path / "evil4.pt"
    evil.write_bytes(pickle.dumps({"x": Payload(str(marker))}, protocol=4))
    with pytest.raises(CheckpointError, match="evil4.pt: refused"):
        load_vae(str(evil))
    evil2 = tmp_path / "evil2.pt"
    evil2.write_bytes(pickle.dumps({"x": Payload(str(marker))}, protocol=2))
    with pytest.raises(CheckpointError, match="evil2.pt: refused.*code execution.*posix.system"):
        load_vae(str(evil2))
    assert not marker.exists()


def test_harmless_python_objects_beside_the_weights_still_load(files, tmp_path):
    """torch.save writes protocol 2 with Python-2 names (__builtin__.set): the scan maps them as torch does."""
    sd = torch.load(files["vae"], weights_only=True)["state_dict"]
    path = str(tmp_path / "extras.pt")
    torch.save({"state_dict": sd, "tags": {"a", "b"}, "blob": bytearray(b"xy"), "z": complex(1, 2),
                "shape": torch.Size([2, 3]), "step": 10**30}, path)
    torch.save({"state_dict": sd, "tags": {"a"}}, str(tmp_path / "legacy_extras.pt"), _use_new_zipfile_serialization=False)
    assert load_vae(path).config == load_vae(str(tmp_path / "legacy_extras.pt")).config


def test_storage_declarations_are_checked_against_the_file(files, tmp_path):
    """A storage claiming more bytes than its record would be read out of bounds by torch."""
    src = zipfile.ZipFile(files["vae"])
    prefix = src.namelist()[0].split("/")[0]
    path = str(tmp_path / "short_record.pt")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == f"{prefix}/data/0":
                data = data[: len(data) // 2]
            z.writestr(info.filename, data)
    with pytest.raises(CheckpointError, match="short_record.pt: the file is truncated or corrupt.*data/0 holds"):
        load_vae(path)


def test_zip_directory_size_and_memory_are_checked_before_reading(files, tmp_path, monkeypatch):
    from flashvideo_core.checkpoints import files as files_module
    from flashvideo_core.checkpoints import io as io_module

    monkeypatch.setattr(io_module, "MAX_ZIP_ENTRIES", 5)
    with pytest.raises(CheckpointError, match="3d-vae.pt: refused.*zip archive lists [0-9]+ entries"):
        load_vae(files["vae"])
    monkeypatch.setattr(io_module, "MAX_ZIP_ENTRIES", 300_000)
    monkeypatch.setattr(files_module, "available_memory", lambda: 1000)
    for name in ("vae", "converted"):
        with pytest.raises(CheckpointError, match=r"needs 0.0 GiB of memory but only 0.0 GiB is available.*close"):
            read_checkpoint(files[name])
    legacy = str(tmp_path / "legacy.pt")
    torch.save({"a": torch.zeros(1000)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy.pt: loading needs"):
        read_checkpoint(legacy)
    cut = tmp_path / "no_directory.pt"
    cut.write_bytes(open(files["vae"], "rb").read()[:-30])
    monkeypatch.setattr(files_module, "available_memory", lambda: None)
    with pytest.raises(CheckpointError, match="no_directory.pt: the file is truncated or corrupt.*directory"):
        read_checkpoint(str(cut))


def test_flipped_weight_bytes_in_a_zip_fail_the_crc(files, tmp_path):
    data = bytearray(open(files["vae"], "rb").read())
    record = [i for i in zipfile.ZipFile(files["vae"]).infolist() if "/data/" in i.filename and i.file_size > 64][0]
    name_len, extra_len = struct.unpack("<HH", data[record.header_offset + 26: record.header_offset + 30])
    data[record.header_offset + 30 + name_len + extra_len + 5] ^= 0x40
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="flipped.pt.*CRC-32"):
        load_vae(str(path))


def test_a_damaged_checksum_name_does_not_hide_a_changed_weight(tmp_path):
    """Found by the fuzz: one byte in the name "flashvideo.crc32" made the file look foreign (no checksum), so a
    second flipped byte in the data loaded silently."""
    from flashvideo_core.text_embeddings import load_prompt_embedding, save_prompt_embedding

    path = tmp_path / "prompt.safetensors"
    save_prompt_embedding(str(path), torch.ones(1, 226, 8), "a cat")
    data = bytearray(path.read_bytes())
    data[data.index(b"flashvideo.crc32") + 3] = ord("X")
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"prompt.safetensors: its metadata entry 'flaXhvideo.crc32' is a damaged "
                                              r"'flashvideo.crc32'"):
        load_prompt_embedding(str(path))


# ------------------------------------------------------------------------------------------ safetensors headers


def _safetensors(path, header, data=b"", length=None):
    raw = json.dumps(header).encode() if isinstance(header, dict) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return str(path)


def test_hostile_safetensors_headers(tmp_path):
    t = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    cases = [
        ("huge_header", _safetensors(tmp_path / "huge_header.safetensors", {"a": t}, b"\0" * 8, 1 << 60),
         "at most"),
        ("header_past_end", _safetensors(tmp_path / "header_past_end.safetensors", {"a": t}, b"", 5000),
         "truncated"),
        ("past_end", _safetensors(tmp_path / "past_end.safetensors", {"a": {**t, "shape": [4], "data_offsets": [0, 16]}},
                                  b"\0" * 8), "truncated"),
        ("extent", _safetensors(tmp_path / "extent.safetensors", {"a": {**t, "shape": [1 << 40]}}, b"\0" * 8),
         "needs"),
        ("overlap", _safetensors(tmp_path / "overlap.safetensors", {"a": t, "b": t}, b"\0" * 8), "overlaps"),
        ("duplicate", _safetensors(tmp_path / "duplicate.safetensors",
                                   b'{"a": ' + json.dumps(t).encode() + b', "a": ' + json.dumps(t).encode() + b"}",
                                   b"\0" * 8), "twice"),
        ("dtype", _safetensors(tmp_path / "dtype.safetensors", {"a": {**t, "dtype": "F4"}}, b"\0" * 8), "dtype"),
        ("nested", _safetensors(tmp_path / "nested.safetensors", b"{" + b'"a":[' * 100_000 + b"]" * 100_000 + b"}"),
         "not valid JSON"),
        ("meta", _safetensors(tmp_path / "meta.safetensors", {"__metadata__": {"x": 1}, "a": t}, b"\0" * 8),
         "__metadata__"),
        ("gap", _safetensors(tmp_path / "gap.safetensors", {"a": {**t, "data_offsets": [8, 16]}}, b"\0" * 16), "gap"),
        ("trailing", _safetensors(tmp_path / "trailing.safetensors", {"a": t}, b"\0" * 12), "belong to no tensor"),
    ]
    for name, path, expect in cases:
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        assert f"{name}.safetensors" in str(err.value) and expect in str(err.value), str(err.value)
    many = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(200_001)}
    with pytest.raises(CheckpointError, match="many.safetensors.*200001 tensors"):
        read_checkpoint(_safetensors(tmp_path / "many.safetensors", many))


# ------------------------------------------------------------------------------------------ converted files' metadata


@pytest.mark.parametrize("config, expect", [
    ({"num_layers": 10**9}, "absurd model size.*num_layers"),
    ({"hidden_size": 1 << 40}, "absurd model size.*hidden_size"),
    ({"num_layers": "many"}, "field 'num_layers'"),
    ({"head_dim": 0}, "absurd|impossible"),
    ({"colour": 1}, "unknown fields"),
    ("[1, 2", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
])
def test_converted_metadata_is_checked_before_any_model_is_built(files, tmp_path, config, expect):
    raw = read_checkpoint(files["converted"])
    if isinstance(config, dict):
        text = json.dumps({**json.loads(raw.metadata[CONFIG_KEY]), **config})
    else:
        text = config
    path = str(tmp_path / "bad_meta.safetensors")
    write_safetensors(path, raw.tensors, {**raw.metadata, CONFIG_KEY: text})
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=f"bad_meta.safetensors.*({expect})"):
        load_dit(path)
    assert time.monotonic() - start < 60  # refused before building (the declared model would take far longer)


# ------------------------------------------------------------------------------------------ LoRA, dtypes, values


def _sat(files):
    return torch.load(files["stage1_lora"], weights_only=True)["module"]


LORA = SAT_PREFIX + "transformer.layers.0.attention.dense"


@pytest.mark.parametrize("name, change, expect", [
    ("rank", lambda sd: sd.__setitem__(f"{LORA}.matrix_B.0", torch.zeros(sd[f"{LORA}.matrix_B.0"].shape[0], 3)),
     "LoRA shapes disagree"),
    ("missing_b", lambda sd: sd.pop(f"{LORA}.matrix_B.0"), "matrix_A but 0 matrix_B"),
    ("index", lambda sd: sd.__setitem__(f"{LORA}.matrix_A.x", sd.pop(f"{LORA}.matrix_A.0")), "non-numeric"),
    ("gap", lambda sd: sd.__setitem__(f"{LORA}.matrix_A.2", sd.pop(f"{LORA}.matrix_A.0")), "numbered"),
    ("int_lora", lambda sd: sd.__setitem__(f"{LORA}.matrix_A.0", sd[f"{LORA}.matrix_A.0"].to(torch.int32)),
     "real floating point"),
])
def test_lora_faults_name_the_file(files, tmp_path, name, change, expect):
    sd = _sat(files)
    change(sd)
    path = str(tmp_path / f"lora_{name}.pt")
    torch.save({"module": sd}, path)
    with pytest.raises(CheckpointError, match=f"lora_{name}.pt.*{expect}"):
        load_dit(path)


@pytest.mark.parametrize("name, make", [
    ("int", lambda t: t.to(torch.int32)),
    ("bool", lambda t: t > 0),
    ("fp8", lambda t: t.to(torch.float8_e4m3fn)),
    ("complex", lambda t: torch.complex(t, torch.full_like(t, float("nan")))),
    ("float64_inf", lambda t: t.double().index_fill(0, torch.tensor([0]), float("inf"))),
    ("bf16_nan", lambda t: t.bfloat16().index_fill(0, torch.tensor([0]), float("nan"))),
])
def test_weights_that_are_not_finite_real_floats_are_refused(files, tmp_path, name, make):
    sd = torch.load(files["vae"], weights_only=True)["state_dict"]
    key = "decoder.conv_out.conv.bias"
    sd[key] = make(sd[key])
    path = str(tmp_path / f"w_{name}.pt")
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError, match=f"w_{name}.pt.*(not stored as real floating|NaN/Inf)"):
        load_vae(path)


def test_meta_and_sparse_tensors_are_refused(files, tmp_path):
    sd = torch.load(files["vae"], weights_only=True)["state_dict"]
    for name, tensor in (("meta", torch.empty(64, device="meta")), ("sparse", torch.zeros(64).to_sparse())):
        path = str(tmp_path / f"{name}.pt")
        torch.save({"state_dict": {**sd, "decoder.conv_out.conv.bias": tensor}}, path)
        with pytest.raises(CheckpointError, match=f"{name}.pt: tensor 'decoder.conv_out.conv.bias' (is a meta|has layout)"):
            load_vae(path)


def test_prompt_embedding_dtype_and_values(tmp_path):
    meta = {"flashvideo.format": "1", "flashvideo.model": "prompt_embedding"}
    for name, ctx in (("complex", torch.zeros(1, 226, 8, dtype=torch.complex64)),
                      ("ints", torch.zeros(1, 226, 8, dtype=torch.int64)),
                      ("nan", torch.full((1, 226, 8), float("nan")))):
        path = str(tmp_path / f"emb_{name}.safetensors")
        write_safetensors(path, {"context": ctx}, meta)
        with pytest.raises(CheckpointError, match=f"emb_{name}.safetensors.*(not stored as real floating|NaN)"):
            load_prompt_embedding(path)


# ------------------------------------------------------------------------------------------ convert's output


def test_convert_refuses_existing_outputs_before_any_work(files, tmp_path, capsys):
    existing = tmp_path / "out.safetensors"
    existing.write_bytes(b"keep me")
    fifo = str(tmp_path / "never_read.pt")
    os.mkfifo(fifo)  # reading this would block: the refusal must come first
    with pytest.raises(CheckpointError, match="out.safetensors already exists.*--force"):
        convert_checkpoint(fifo, str(existing))
    with pytest.raises(CheckpointError, match="is a folder"):
        convert_checkpoint(fifo, str(tmp_path), overwrite=True)
    assert existing.read_bytes() == b"keep me"
    assert cli_main(["convert", files["vae"], str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    assert cli_main(["convert", files["vae"], str(existing), "--force"]) == 0
    assert load_vae(str(existing)).config == load_vae(files["vae"]).config


# ------------------------------------------------------------------------------------------ weights owned by the process


OWNED_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from flashvideo_core.dit.loader import load_dit
    path = sys.argv[1]
    model = load_dit(path)
    gen = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(1, 2, 16, 8, 8, generator=gen), torch.tensor([700.0]), torch.randn(1, 5, 32, generator=gen)
    with torch.no_grad():
        before = model(x, t, ctx)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # overwrite in place (same inode), then truncate
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
        f.truncate(size // 7)
    with torch.no_grad():
        after = model(x, t, ctx)
    assert torch.equal(before, after), "the loaded weights changed with the file"
    print("OWNED")
""")


@pytest.mark.parametrize("which", ["converted", "stage1_lora", "legacy"])
def test_loaded_weights_survive_overwriting_and_truncating_the_file(files, tmp_path, which):
    """Run in a child: a weight still mapped to the file would SIGBUS on truncation (rc -7), failing the test."""
    path = str(tmp_path / f"victim_{which}")
    if which == "legacy":
        torch.save(torch.load(files["stage1_lora"], weights_only=True), path, _use_new_zipfile_serialization=False)
    else:
        with open(files[which], "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", OWNED_SCRIPT, path], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT)
    assert proc.returncode == 0 and "OWNED" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


# ------------------------------------------------------------------------------------------ seeded fuzz

FUZZ_PER_SEED = 40


def test_seeded_fuzz_of_every_reader(guard, tmp_path):
    """Byte flips and truncations of each format; per mutant: no crash, no hang, no code run, and either a load or a
    CheckpointError naming the file. Counts are printed (pytest -s) for the README."""
    marker = str(tmp_path / "PWNED")
    seeds = write_seeds(str(tmp_path), marker)
    digests = {}
    for path, kind in seeds:
        result = guard.load(path, kind)
        assert result["status"] == ("refused" if "evil" in path else "ok"), (path, result)
        digests[os.path.basename(path)] = result.get("digest")
    cases = mutants(seeds, str(tmp_path), FUZZ_PER_SEED, seed=1234)
    counts = {"ok": 0, "refused": 0, "changed": 0}
    failures = []
    for path, kind, how in cases:
        result = guard.load(path, kind)
        status = result["status"]
        seed_name = os.path.basename(path).split("_", 1)[1]
        if status == "refused" and os.path.basename(path) not in result["message"]:
            status = "refused without the file name"
        if status == "ok" and result["digest"] != digests[seed_name]:
            # only the legacy (pre-2020) pickle format has no checksum to catch a flipped weight byte
            status = "changed" if "legacy" in seed_name else "loaded different weights silently"
        if status in counts:
            counts[status] += 1
        else:
            failures.append((os.path.basename(path), how, result))
    print(f"\nfuzz: {len(cases)} mutants, {counts['ok']} loaded identical weights, {counts['refused']} refused, "
          f"{counts['changed']} legacy-format loads with changed weights, {len(failures)} failures")
    assert not failures, failures[:5]
    assert not os.path.exists(marker), "a mutant ran code"
    assert counts["refused"] > len(cases) // 3  # the mutations do damage: most files must be refused
