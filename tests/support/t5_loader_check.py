"""Run by tests/test_comfyui_t5.py with a real ComfyUI's python: FlashVideo T5 Loader against the host's own T5.

1. XXL: the host's T5 class built from its own T5-XXL config on the meta device gives the state-dict shapes of
   t5xxl_fp16.safetensors (the host itself detects them as T5-XXL); the config the loader reads from those shapes
   is exactly the host's T5-XXL config, and the strict key check accepts them. No 9.5 GB file is needed.
2. Tiny: make-tiny's tiny T5 through the loader and FlashVideo Text Encode equals the host's T5 class built
   directly from a hand-written tiny config with the file's weights (strict load), fed the reference tokenizer
   call's ids (HF T5TokenizerFast, max_length=226, padding="max_length", truncation=True): same ids, same states.
3. Files that are not a gated T5 encoder (a missing weight, an original-T5 'wi' layer) are refused by name.

usage: python t5_loader_check.py COMFYUI_DIR PACK_DIR  -> prints "OK ..." lines or raises
"""

import atexit
import os
import shutil
import sys
import tempfile

from in_host import import_pack, start_cpu_host  # noqa: E402  (tests/support, the script's folder)

comfy_dir, pack_dir = sys.argv[1], sys.argv[2]
start_cpu_host(comfy_dir)

import torch  # noqa: E402

import comfy.ops  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.text_encoders.t5  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import T5TokenizerFast  # noqa: E402

pack = import_pack(pack_dir)
from flashvideo_pack.flashvideo_core.errors import CheckpointError  # noqa: E402
from flashvideo_pack.flashvideo_core.tiny import write_tiny_t5  # noqa: E402
from flashvideo_pack.nodes.t5_loader import (  # noqa: E402
    check_t5_keys,
    host_t5_xxl_config,
    load_t5,
    t5_config_from_shapes,
)
from flashvideo_pack.nodes.text_nodes import FlashVideoTextEncode  # noqa: E402

# 1. XXL shapes, from the host's own model
xxl = host_t5_xxl_config()
meta = comfy.text_encoders.t5.T5(xxl, torch.float16, "meta", comfy.ops.manual_cast).state_dict()
assert comfy.sd.detect_te_model(meta) == comfy.sd.TEModel.T5_XXL, "the host does not see these shapes as T5-XXL"
shaped = t5_config_from_shapes({k: tuple(v.shape) for k, v in meta.items()}, "xxl")
assert {k: xxl[k] for k in shaped} == shaped, (shaped, xxl)
assert {**xxl, **shaped} == xxl
check_t5_keys(meta, xxl, "xxl")
print(f"OK xxl: {shaped}")

# 2. tiny T5: loader + text encode against the host's class built by hand
tmp = tempfile.mkdtemp()
atexit.register(shutil.rmtree, tmp, True)
path = write_tiny_t5(os.path.join(tmp, "t5xxl_fp16.safetensors"))
clip = load_t5(path)
seen = []
original = comfy.sd.CLIP.encode_from_tokens_scheduled
comfy.sd.CLIP.encode_from_tokens_scheduled = (
    lambda self, tokens, **kw: seen.append(tokens) or original(self, tokens, **kw))
stored = clip.cond_stage_model.t5xxl.transformer.shared.weight.dtype  # the host's storage choice (fp16 on CPU)
hand = {**xxl, "d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_layers": 2}
oracle = comfy.text_encoders.t5.T5(hand, stored, "cpu", comfy.ops.manual_cast)
oracle.load_state_dict(load_file(path), strict=True)
tokenizer = T5TokenizerFast.from_pretrained(
    os.path.join(os.path.dirname(comfy.text_encoders.t5.__file__), "t5_tokenizer"))
prompts = {"short": "A red fox (curious:1.3) trots through fresh snow at dawn, camera tracking low.",
           "long": " ".join(["A slow aerial shot over misty pine forests and a winding silver river at sunrise;"] * 30)}
for name, prompt in prompts.items():
    seen.clear()
    context = FlashVideoTextEncode.execute(clip, prompt).result[0][0][0]
    got = [t[0] for t in seen[0]["t5xxl"][0]]
    want = tokenizer(prompt, max_length=226, padding="max_length", truncation=True)["input_ids"]
    assert got == want, f"{name}: token ids differ from the reference tokenizer call"
    with torch.no_grad():
        expected = oracle(torch.tensor([want]), None)[0].float()
    assert tuple(context.shape) == (1, 226, 32), context.shape
    torch.testing.assert_close(context.float(), expected, rtol=1e-5, atol=1e-5)
    assert expected.std() > 0.1
    print(f"OK tiny {name}: ids and states equal the host's T5 built by hand (stored {stored})")

# 3. refusals name the file and what is wrong
weights = load_file(path)
for label, edit, needle in [
        ("missing", lambda sd: sd.pop("encoder.block.1.layer.1.DenseReluDense.wo.weight"), "missing"),
        ("original T5", lambda sd: sd.update({"encoder.block.0.layer.1.DenseReluDense.wi.weight":
                                               sd.pop("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")}), "wi")]:
    broken = dict(weights)
    edit(broken)
    bad = os.path.join(tmp, f"broken_{label.replace(' ', '_')}.safetensors")
    save_file(broken, bad)
    try:
        load_t5(bad)
    except CheckpointError as err:
        assert os.path.basename(bad) in str(err) and needle in str(err), str(err)
        print(f"OK refused {label}: {str(err)[:90]}...")
    else:
        raise AssertionError(f"{label}: loaded without complaint")
