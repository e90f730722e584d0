"""One set of damaged and hostile model files, run through every loader entry point of the pack.

``LOADERS`` is the one list of entry points that read a model file: a new loader joins the fuzz (and the
registration test in tests/test_loader_fuzz.py) by being added here. ``build_cases`` writes the files: a valid
tiny file of each model the pack reads, then, from the same seeds, truncations, header damage, flipped data
bytes, non-float and NaN/Inf weights, bad scales of both fp8 formats, absurd T5 sizes, and paths that are no
file (folder, FIFO, symlink loop, device, empty file, pickles that run code). Each case names the loaders that
must load it; every other loader must refuse it with a message naming the file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass

#: name -> (runs "core" (this venv) or "host" (a ComfyUI's python), "module:function", the file kinds it loads)
LOADERS = {
    "core DiT": ("core", "flashvideo_core.dit.loader:load_dit", {"dit", "dit_fp8"}),
    "core VAE": ("core", "flashvideo_core.vae.loader:load_vae", {"vae"}),
    "prompt embedding": ("core", "flashvideo_core.text_embeddings:load_prompt_embedding", {"embedding"}),
    "convert": ("core", "flashvideo_core.checkpoints.convert:convert_checkpoint", {"dit", "dit_fp8", "vae"}),
    "native DiT": ("host", "nodes.native.loader:load_flashvideo_model", {"dit", "dit_fp8"}),
    "T5": ("host", "nodes.t5_loader:load_t5", {"t5", "t5_fp8", "t5_layer_fp8"}),
}


@dataclass
class Case:
    name: str
    path: str
    #: the kind of valid file this is ("" for a file every loader must refuse)
    kind: str = ""
    #: the kind of file it was made from: its loaders must refuse it for the cause ``expect`` ("": all loaders)
    base: str = ""
    #: a regular expression the refusal of those loaders must match (case-insensitive)
    expect: str = ""


def resolve(name: str, package: str = ""):
    """The entry point registered as ``name``, as a function of the file's path alone (``package``: the name the
    pack is imported under in a host)."""
    import importlib

    module, _, function = LOADERS[name][1].partition(":")
    fn = getattr(importlib.import_module(f"{package}.{module}" if package else module), function)
    if name != "convert":
        return fn

    def convert_to_scratch(path: str):  # convert writes instead of returning weights: into a scratch file
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            fn(path, os.path.join(scratch, "out.safetensors"))
        return True

    return convert_to_scratch


def _t5_scaled(tensors: dict) -> dict:
    """A tiny T5 in 0.3.64's scaled-fp8 format: every Linear quantised, embeddings and norms as they are."""
    import torch

    from flashvideo_core.checkpoints import scaled_fp8

    out = {}
    for key, value in tensors.items():
        if value.ndim == 2 and key.startswith("encoder.block.") and "relative_attention_bias" not in key:
            scale = value.float().abs().max() / scaled_fp8.FP8_MAX
            out[key] = (value.float() / scale).to(scaled_fp8.FP8)
            out[key[: -len(".weight")] + scaled_fp8.SCALE_SUFFIX] = scale.reshape(())
        else:
            out[key] = value
    out[scaled_fp8.MARKER] = torch.empty(0, dtype=scaled_fp8.FP8)
    return out


def _t5_layer_quant(scaled: dict) -> dict:
    """The same tiny T5 in 0.33's per-layer format (.comfy_quant + .weight_scale)."""
    import torch

    out = {}
    for key, value in scaled.items():
        if key == "scaled_fp8":
            continue
        if key.endswith(".scale_weight"):
            layer = key[: -len(".scale_weight")]
            out[f"{layer}.weight_scale"] = value
            out[f"{layer}.comfy_quant"] = torch.tensor(list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)
        else:
            out[key] = value
    return out


def build_cases(folder: str, marker: str) -> list[Case]:
    import argparse

    import torch

    from flashvideo_core.checkpoints.convert import convert_checkpoint
    from flashvideo_core.checkpoints.io import read_checkpoint, write_safetensors
    from flashvideo_core.text_embeddings import save_prompt_embedding
    from flashvideo_core.tiny import (TINY_STAGE1_CONFIG, TINY_T5_CONFIG, random_t5_state_dict, write_tiny_dit,
                                      write_tiny_t5, write_tiny_vae)
    from support.hostile_files import Payload

    p = lambda name: os.path.join(folder, name)  # noqa: E731
    cases: list[Case] = []

    def save(name: str, tensors: dict, metadata: dict, kind: str = "", base: str = "", expect: str = "") -> None:
        write_safetensors(p(name), tensors, metadata)
        cases.append(Case(name, p(name), kind, base, expect))

    # valid seeds, one per model file the pack reads
    write_tiny_dit(p("seed_stage1.pt"), "stage1", lora=False)
    convert_checkpoint(p("seed_stage1.pt"), p("dit.safetensors"))
    convert_checkpoint(p("seed_stage1.pt"), p("dit_fp8.safetensors"), quantize="scaled_fp8")
    write_tiny_vae(p("vae.pt"))
    save_prompt_embedding(p("embedding.safetensors"), torch.randn(1, 226, TINY_STAGE1_CONFIG.text_hidden_size,
                                                                  generator=torch.Generator().manual_seed(0)), "a cat")
    write_tiny_t5(p("t5.safetensors"))
    cases += [Case("dit", p("dit.safetensors"), "dit"), Case("dit_fp8", p("dit_fp8.safetensors"), "dit_fp8"),
              Case("vae", p("vae.pt"), "vae"), Case("embedding", p("embedding.safetensors"), "embedding"),
              Case("t5", p("t5.safetensors"), "t5")]
    t5 = read_checkpoint(p("t5.safetensors"))
    t5_scaled = _t5_scaled({k: v.float() for k, v in t5.tensors.items()})
    save("t5_scaled_fp8.safetensors", t5_scaled, {}, "t5_fp8")
    save("t5_layer_fp8.safetensors", _t5_layer_quant(t5_scaled), {}, "t5_layer_fp8")
    save("t5_plain_fp8.safetensors", {k: v.to(torch.float8_e4m3fn) for k, v in t5.tensors.items()}, {}, "t5_fp8")

    # byte damage of every seed
    for case in list(cases):
        data = open(case.path, "rb").read()
        stem = os.path.basename(case.path)
        for how, damaged in (("half", data[: len(data) // 2]), ("head12", data[:12]),
                             ("header_length", b"\xff" * 8 + data[8:]), ("last_byte", data[:-1] + bytes([data[-1] ^ 1]))):
            if how == "last_byte" and not stem.endswith(".safetensors"):
                continue  # a zip's last byte is its directory's comment length; its data is checked by CRC elsewhere
            name = f"{how}_{stem}"
            with open(p(name), "wb") as f:
                f.write(damaged)
            cases.append(Case(name, p(name), "", case.kind, DAMAGED))

    # weights that are no finite real floats, in each kind of file (written with a valid checksum)
    def weight(tensors):
        return next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1 and v.ndim == 1)

    sources = {"dit": p("dit.safetensors"), "vae": p("vae.pt"), "embedding": p("embedding.safetensors"),
               "t5": p("t5.safetensors"), "dit_fp8": p("dit_fp8.safetensors")}
    for kind, path in sources.items():
        raw = read_checkpoint(path)
        key = "context" if kind == "embedding" else weight(raw.tensors)
        for how, make in (("nan", lambda t: t.float().index_fill(0, torch.tensor([0]), float("nan"))),
                          ("inf", lambda t: t.float().index_fill(0, torch.tensor([0]), float("inf"))),
                          ("int", lambda t: t.to(torch.int32)), ("bool", lambda t: t > 0),
                          ("fp8_unscaled", lambda t: t.to(torch.float8_e4m3fn))):
            if kind == "t5" and how == "fp8_unscaled":
                continue  # plain fp8 T5 files are valid (t5xxl_fp8_e4m3fn.safetensors)
            save(f"{how}_{kind}.safetensors", {**raw.tensors, key: make(raw.tensors[key])}, raw.metadata, base=kind,
                 expect=VALUE_CAUSES[how])

    # scales of both fp8 formats
    dit_fp8 = read_checkpoint(p("dit_fp8.safetensors"))
    t5_layer = _t5_layer_quant(t5_scaled)
    for label, base, tensors, metadata, scale in (
            ("dit", "dit_fp8", dit_fp8.tensors, dit_fp8.metadata, "transformer_blocks.0.attn1.to_q.scale_weight"),
            ("t5", "t5_fp8", t5_scaled, {}, "encoder.block.0.layer.0.SelfAttention.q.scale_weight"),
            ("t5_layer", "t5_layer_fp8", t5_layer, {}, "encoder.block.0.layer.0.SelfAttention.q.weight_scale")):
        def save_scaled(name, changed, how):  # noqa: E306 - one case of this format, refused for SCALE_CAUSES[how]
            save(name, changed, metadata, base=base, expect=SCALE_CAUSES[how])

        weight_key = scale.rsplit(".", 1)[0] + ".weight"
        for how, value in (("zero", torch.zeros(())), ("negative", -tensors[scale]), ("nan", torch.tensor(float("nan"))),
                           ("inf", torch.tensor(float("inf"))), ("int", torch.ones((), dtype=torch.int32)),
                           ("shape", tensors[scale].expand(2, 2).contiguous()), ("bool", torch.ones((), dtype=torch.bool))):
            save_scaled(f"scale_{how}_{label}.safetensors", {**tensors, scale: value}, how)
        save_scaled(f"scale_missing_{label}.safetensors", {k: v for k, v in tensors.items() if k != scale}, "missing")
        layer, suffix = scale.rsplit(".", 1)
        save_scaled(f"scale_orphan_{label}.safetensors", {**tensors, f"{layer}_gone.{suffix}": tensors[scale]},
                    "orphan")
        save_scaled(f"weight_e5m2_{label}.safetensors",
                    {**tensors, weight_key: tensors[weight_key].to(torch.float8_e5m2)}, "e5m2")
        save_scaled(f"weight_nan_{label}.safetensors",
                    {**tensors, weight_key: tensors[weight_key].float().index_fill(0, torch.tensor([0]), float("nan"))
                     .to(torch.float8_e4m3fn)}, "nan_weight")
        input_key = scale.replace("scale_weight", "scale_input").replace("weight_scale", "input_scale")
        save_scaled(f"input_scale_nan_{label}.safetensors", {**tensors, input_key: torch.tensor(float("nan"))}, "nan")
    save("marker_int_dit.safetensors", {**dit_fp8.tensors, "scaled_fp8": torch.zeros(0, dtype=torch.int8)},
         dit_fp8.metadata, base="dit_fp8", expect="marker")
    quant_entry = "encoder.block.0.layer.0.SelfAttention.q.comfy_quant"
    save("layer_format_nvfp4_t5.safetensors",
         {**t5_layer, quant_entry: torch.tensor(list(b'{"format": "nvfp4"}'), dtype=torch.uint8)}, {},
         base="t5_layer_fp8", expect="nvfp4")
    save("layer_json_t5.safetensors", {**t5_layer, quant_entry: torch.tensor(list(b"{["), dtype=torch.uint8)}, {},
         base="t5_layer_fp8", expect="not a quantisation entry")

    # T5 sizes beyond any T5 (small files all the same)
    save("t5_heads_300.safetensors", random_t5_state_dict({**TINY_T5_CONFIG, "num_heads": 300, "d_kv": 1}), {},
         base="t5", expect="num_heads 300, beyond the 256")
    save("t5_vocab_100.safetensors", random_t5_state_dict({**TINY_T5_CONFIG, "vocab_size": 100}), {},
         base="t5", expect="100 rows.*tokenizer needs")

    # paths that are no model file
    os.mkdir(p("folder.safetensors"))
    os.mkfifo(p("fifo.safetensors"))
    os.symlink(p("loop_b.safetensors"), p("loop_a.safetensors"))
    os.symlink(p("loop_a.safetensors"), p("loop_b.safetensors"))
    os.symlink(p("gone.safetensors"), p("dangling.safetensors"))
    open(p("empty.safetensors"), "wb").close()
    with open(p("html.safetensors"), "w") as f:
        f.write("<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    torch.save({"state_dict": {"x": torch.zeros(2)}, "evil": Payload(marker)}, p("evil.pt"))
    torch.save({"module": {"x": torch.zeros(2)}, "args": argparse.Namespace(x=Payload(marker))}, p("evil_legacy.pt"),
               _use_new_zipfile_serialization=False)
    for name, expect in (("folder.safetensors", "is a folder"), ("fifo.safetensors", "named pipe"),
                         ("loop_a.safetensors", "symlink loop"), ("dangling.safetensors", "does not exist"),
                         ("empty.safetensors", "empty"), ("html.safetensors", "not a model file"),
                         ("evil.pt", "code execution"), ("evil_legacy.pt", "refused")):
        cases.append(Case(name, p(name), "", "", expect))
    cases.append(Case("dev_null", "/dev/null", "", "", "character device|empty"))
    return cases


DAMAGED = "truncated|corrupt|CRC-32|not a model file|damaged"
VALUE_CAUSES = {"nan": "NaN/Inf", "inf": "NaN/Inf", "int": "not stored as real floating",
                "bool": "not stored as real floating", "fp8_unscaled": "fp8 without|not stored as real floating"}
SCALE_CAUSES = {"zero": "positive finite", "negative": "positive finite", "nan": "positive finite",
                "inf": "positive finite", "int": "one real floating-point number", "bool": "one real floating-point number",
                "shape": "one real floating-point number", "missing": r"without its \.scale_weight|has no \.weight_scale",
                "orphan": "does not hold|scales no quantised layer", "e5m2": "e5m2", "nan_weight": "NaN/Inf"}


def write_manifest(cases: list[Case], path: str) -> None:
    with open(path, "w") as f:
        json.dump([asdict(c) for c in cases], f)


def read_manifest(path: str) -> list[Case]:
    with open(path) as f:
        return [Case(**c) for c in json.load(f)]


def verdict(loader: str, case: Case, result: dict, unsupported=()) -> str:
    """"" when ``result`` is right for this loader and case, else what is wrong. ``unsupported``: kinds the host
    cannot read (ComfyUI 0.3.64: 0.33's per-layer fp8), which must be refused like damaged files."""
    accepts = LOADERS[loader][2] - set(unsupported)
    status = result.get("status")
    if case.kind in accepts:
        return "" if status == "ok" else f"a valid {case.kind} file was not loaded: {result}"
    if status != "refused":
        return f"expected a refusal, got {result}"
    if case.expect and (not case.base or case.base in accepts) and not re.search(case.expect, result["message"], re.I):
        return f"refused, but not for {case.expect!r}: {result['message'][:300]}"
    shown = os.path.basename(case.path)
    if shown not in result.get("message", ""):
        return f"the refusal does not name the file: {result['message'][:300]}"
    for raw in ("internal error", "Traceback"):
        if raw in result["message"]:
            return f"the refusal carries {raw!r}: {result['message'][:300]}"
    return ""
