"""Run by tests/test_comfyui_t5.py with a real ComfyUI's python: FlashVideo Text Encode on a real
ComfyUI CLIP (CLIPLoader's sd3 type, T5-only) with the real T5 tokenizer and a tiny random T5
encoder (the 9.5 GB T5-XXL is not needed to check tokenisation), against the reference's
tokenizer call: HF T5TokenizerFast(text, max_length=226, padding="max_length", truncation=True).

usage: python t5_tokenizer_check.py COMFYUI_DIR PACK_DIR  -> prints "OK ..." or raises
"""

import json
import os
import sys
import tempfile

from in_host import import_pack, start_cpu_host  # noqa: E402  (tests/support, the script's folder)

comfy_dir, pack_dir = sys.argv[1], sys.argv[2]
start_cpu_host(comfy_dir)

import torch  # noqa: E402

import comfy.sd  # noqa: E402
import comfy.sd1_clip  # noqa: E402
import comfy.text_encoders.sd3_clip as sd3_clip  # noqa: E402
import comfy.text_encoders.t5  # noqa: E402

TINY_T5 = {"d_ff": 64, "d_kv": 16, "d_model": 32, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True,
           "layer_norm_epsilon": 1e-6, "model_type": "t5", "num_heads": 2, "num_layers": 2,
           "relative_attention_num_buckets": 32, "vocab_size": 32128, "eos_token_id": 1, "pad_token_id": 0}
config_path = os.path.join(tempfile.mkdtemp(), "tiny_t5.json")
json.dump(TINY_T5, open(config_path, "w"))


class TinyT5(comfy.sd1_clip.SDClipModel):
    """sd3_clip.T5XXLModel with a tiny config (same class, tokens, layer and no attention mask)."""

    def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, attention_mask=False, model_options={}):
        super().__init__(device=device, layer=layer, layer_idx=layer_idx, textmodel_json_config=config_path, dtype=dtype,
                         special_tokens={"end": 1, "pad": 0}, model_class=comfy.text_encoders.t5.T5,
                         enable_attention_masks=attention_mask, return_attention_masks=attention_mask,
                         model_options={**model_options, "model_name": "t5xxl"})


sd3_clip.T5XXLModel = TinyT5
target = type("Target", (), {})()
target.clip = sd3_clip.sd3_clip(clip_l=False, clip_g=False, t5=True)
target.tokenizer = sd3_clip.SD3Tokenizer
target.params = {}
clip = comfy.sd.CLIP(target=target)
gen = torch.Generator().manual_seed(0)
with torch.no_grad():  # ComfyUI's ops skip initialisation: give the tiny encoder finite random weights
    for name, param in clip.cond_stage_model.named_parameters():
        if param.ndim == 0:  # e.g. a logit scale
            continue
        if param.ndim == 1:
            param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
        else:
            param.copy_(torch.randn(param.shape, generator=gen) / param.shape[-1] ** 0.5)

pack = import_pack(pack_dir)
from flashvideo_pack.nodes.text_nodes import FlashVideoTextEncode  # noqa: E402

seen = []
original = comfy.sd.CLIP.encode_from_tokens_scheduled
comfy.sd.CLIP.encode_from_tokens_scheduled = lambda self, tokens, **kw: seen.append(tokens) or original(self, tokens, **kw)

hf = clip.tokenizer.t5xxl.tokenizer  # the T5TokenizerFast ComfyUI ships (same sentencepiece vocab as t5-v1_1-xxl)
prompts = {
    "short": "A red fox (curious:1.3) trots through fresh snow at dawn, camera tracking low.",
    "long": " ".join(["A slow aerial shot over misty pine forests and a winding silver river at sunrise;"] * 30),
}
for name, prompt in prompts.items():
    seen.clear()
    conditioning = FlashVideoTextEncode.execute(clip, prompt).result[0]
    got = [t[0] for t in seen[0]["t5xxl"][0]]
    want = hf(prompt, max_length=226, padding="max_length", truncation=True)["input_ids"]
    assert got == want, f"{name}: token ids differ from the reference tokenizer call\n got {got[:40]}...\nwant {want[:40]}..."
    context = conditioning[0][0]
    assert tuple(context.shape) == (1, 226, TINY_T5["d_model"]), context.shape
    assert torch.isfinite(context).all()
    print(f"OK {name}: {sum(1 for t in want if t != 0)} real tokens, shape {tuple(context.shape)}")
