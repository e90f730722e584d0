"""Loading the VAE from every accepted layout, the converter, and every promised error."""

import json
import os
import pickle

import pytest
import torch

from flashvideo_core.checkpoints.convert import convert_checkpoint
from flashvideo_core.checkpoints.io import read_checkpoint, sha256_of_file, write_safetensors
from flashvideo_core.checkpoints.metadata import config_from_metadata
from flashvideo_core.checkpoints.vae_keys import diffusers_to_official, official_to_diffusers
from flashvideo_core.cli import main as cli_main
from flashvideo_core.errors import CheckpointError
from flashvideo_core.tiny import TINY_VAE_CONFIG, write_tiny_vae
from flashvideo_core.vae.config import VAEConfig, infer_vae_config
from flashvideo_core.vae.loader import load_vae


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    official = write_tiny_vae(str(d / "3d-vae.pt"), "official")
    diffusers_st = write_tiny_vae(str(d / "diffusers_vae.safetensors"), "diffusers")
    sd = torch.load(official, weights_only=True)["state_dict"]
    diffusers_bin = str(d / "diffusion_pytorch_model.bin")
    torch.save(official_to_diffusers({k: v for k, v in sd.items() if not k.startswith("loss")}), diffusers_bin)
    converted = str(d / "converted.safetensors")
    convert_checkpoint(official, converted)
    return {"official": official, "diffusers_st": diffusers_st, "diffusers_bin": diffusers_bin, "converted": converted, "dir": d}


def _decode(vae):
    z = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return vae.decode(z), vae.encode_moments(torch.linspace(-1, 1, 3 * 5 * 16 * 16).reshape(1, 3, 5, 16, 16))


def test_all_layouts_load_to_identical_outputs(files):
    outputs = {name: _decode(load_vae(files[name])) for name in ("official", "diffusers_st", "diffusers_bin", "converted")}
    ref = outputs.pop("official")
    for name, (dec, enc) in outputs.items():
        assert torch.equal(dec, ref[0]), name
        assert torch.equal(enc, ref[1]), name


def test_config_is_inferred_from_shapes_and_recorded(files):
    vae = load_vae(files["official"])
    assert vae.config == TINY_VAE_CONFIG
    raw = read_checkpoint(files["converted"])
    assert config_from_metadata(raw, VAEConfig) == TINY_VAE_CONFIG
    assert raw.metadata["flashvideo.model"] == "vae"
    assert raw.metadata["flashvideo.source_layout"] == "official"
    assert raw.metadata["flashvideo.source_sha256"] == sha256_of_file(files["official"])
    assert not any(k.startswith("loss") for k in raw.tensors)


def test_official_shapes_give_official_config():
    with torch.device("meta"):
        from flashvideo_core.vae.model import CogVideoXVAE

        sd = CogVideoXVAE(VAEConfig()).state_dict()
    assert len(sd) == 436  # docs/CHECKPOINTS.md#files: 436 state-dict keys
    assert infer_vae_config(sd) == VAEConfig()
    assert sum(v.numel() for v in sd.values()) == 215_583_907  # docs/CHECKPOINTS.md#files parameter count


def test_key_lists_match_the_spec():
    spec = os.path.join(os.path.dirname(__file__), "data", "vae_keys.txt")  # the reference VAE's keys and shapes
    expected = {}
    for line in open(spec):
        key, shape = line.rstrip("\n").split("\t")
        expected[key] = tuple(json.loads(shape.replace("(", "[").replace(",)", "]").replace(")", "]")))
    with torch.device("meta"):
        from flashvideo_core.vae.model import CogVideoXVAE

        ours = {k: tuple(v.shape) for k, v in CogVideoXVAE(VAEConfig()).state_dict().items()}
    assert ours == expected


def test_key_mapping_round_trips(tiny_state_dict):
    assert diffusers_to_official(official_to_diffusers(tiny_state_dict)).keys() == tiny_state_dict.keys()


def test_cli_convert_from_diffusers_layout(files, capsys):
    out = str(files["dir"] / "from_diffusers.safetensors")
    assert cli_main(["convert", files["diffusers_st"], out, "--dtype", "bf16"]) == 0
    assert "layout diffusers" in capsys.readouterr().out
    vae = load_vae(out)
    assert next(vae.parameters()).dtype == torch.float32  # the loader picks the compute dtype
    assert read_checkpoint(out).tensors["decoder.conv_in.conv.weight"].dtype == torch.bfloat16


# ---------------------------------------------------------------------------- errors


def _save_modified(files, tmp_path, name, change):
    sd = torch.load(files["official"], weights_only=True)["state_dict"]
    change(sd)
    path = str(tmp_path / name)
    torch.save({"state_dict": sd}, path)
    return path


def test_missing_unexpected_and_misshaped_keys_are_named(files, tmp_path):
    missing = _save_modified(files, tmp_path, "missing.pt", lambda sd: sd.pop("decoder.conv_out.conv.bias"))
    with pytest.raises(CheckpointError, match=r"missing.pt \(detected layout: official\).*1 missing: decoder.conv_out.conv.bias"):
        load_vae(missing)
    extra = _save_modified(files, tmp_path, "extra.pt", lambda sd: sd.__setitem__("decoder.extra.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match="1 unexpected: decoder.extra.weight"):
        load_vae(extra)

    def shrink(sd):
        sd["encoder.norm_out.bias"] = torch.zeros(7)

    misshaped = _save_modified(files, tmp_path, "shape.pt", shrink)
    with pytest.raises(CheckpointError, match=r"wrong shape: encoder.norm_out.bias: file \(7,\) vs model \(64,\)"):
        load_vae(misshaped)


def test_nan_weights_are_refused(files, tmp_path):
    path = _save_modified(files, tmp_path, "nan.pt", lambda sd: sd["decoder.conv_out.conv.bias"].fill_(float("nan")))
    with pytest.raises(CheckpointError, match="NaN"):
        load_vae(path)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/flashvideo_pwned",))


def test_pickle_with_code_is_refused_and_points_to_the_converter(tmp_path):
    path = str(tmp_path / "evil.pt")
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": Payload()}}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"refused.*code execution.*convert.*--trust-pickle"):
        load_vae(path)
    assert not os.path.exists("/tmp/flashvideo_pwned")
    zipped = str(tmp_path / "evil_zip.pt")
    torch.save({"state_dict": {"x": Payload()}}, zipped)
    with pytest.raises(CheckpointError, match="code execution"):
        load_vae(zipped)


@pytest.mark.parametrize("name", ["official", "converted"])
def test_truncated_files_get_a_clear_error(files, tmp_path, name):
    data = open(files[name], "rb").read()
    path = str(tmp_path / f"truncated_{name}")
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_vae(path)


def test_other_bad_files(files, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_vae(str(tmp_path / "nope.pt"))
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_vae(str(empty))
    html = tmp_path / "page.safetensors"
    html.write_bytes(b"<!DOCTYPE html><html>rate limited</html>")
    with pytest.raises(CheckpointError, match="not a model file"):
        load_vae(str(html))
    with pytest.raises(CheckpointError, match="is a folder"):
        load_vae(str(tmp_path))
    dit = tmp_path / "stage2.safetensors"
    write_safetensors(str(dit), {"model.diffusion_model.time_embed.0.weight": torch.zeros(2, 2)}, {})
    with pytest.raises(CheckpointError, match="not a CogVideoX/FlashVideo VAE.*DiT checkpoint.*model loader"):
        load_vae(str(dit))
    odd = tmp_path / "narrow.pt"
    sd = torch.load(files["official"], weights_only=True)["state_dict"]
    torch.save({"state_dict": {k: v[:8] if k == "encoder.down.0.block.0.conv1.conv.weight" else v for k, v in sd.items()}}, odd)
    with pytest.raises(CheckpointError, match="multiples of 32"):
        load_vae(str(odd))


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert cli_main(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "out.safetensors")]) == 2
    assert "error:" in capsys.readouterr().err


def test_trusted_pickle_converts(files, tmp_path):
    """A legacy full pickle (here: tensors inside a custom object) converts only when trusted."""
    sd = torch.load(files["official"], weights_only=True)["state_dict"]
    path = str(tmp_path / "legacy.pt")
    torch.save({"state_dict": sd, "extra": Holder()}, path)
    with pytest.raises(CheckpointError, match="code execution"):
        convert_checkpoint(path, str(tmp_path / "a.safetensors"))
    convert_checkpoint(path, str(tmp_path / "b.safetensors"), trust_pickle=True)
    assert load_vae(str(tmp_path / "b.safetensors")).config == TINY_VAE_CONFIG


class Holder:
    pass


def test_training_leftovers_are_skipped_without_running_them(files, tmp_path):
    """Real checkpoints carry run arguments and numpy scalars beside the weights: load the weights,
    replace those objects by inert placeholders (nothing of theirs is imported or executed)."""
    import argparse

    import numpy as np

    sd = torch.load(files["official"], weights_only=True)["state_dict"]
    path = str(tmp_path / "with_args.pt")
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=1e-4), "best": np.float64(0.5),
                "hparams": {"shape": np.zeros(3)}}, path)
    assert load_vae(path).config == TINY_VAE_CONFIG
