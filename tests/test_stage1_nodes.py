"""Text and embedding-file nodes over the real core (fake ComfyUI host)."""

import pytest
import torch

from support import fake_comfy
from support.fake_comfy import host

pack = fake_comfy.install()
from flashvideo_pack_under_test.flashvideo_core.errors import InputError  # noqa: E402
from flashvideo_pack_under_test.nodes import text_nodes  # noqa: E402


class FakeClip:
    """Records tokenizer options; tokens are (id, weight) pairs like ComfyUI's T5 tokenizer (EOS = 1, pad = 0)."""

    def __init__(self, words, dim=32):
        self.words, self.dim, self.options = words, dim, {}

    def clone(self):
        c = FakeClip(self.words, self.dim)
        c.options = dict(self.options)
        return c

    def set_tokenizer_option(self, name, value):
        self.options[name] = value

    def tokenize(self, text, **kwargs):
        assert kwargs.get("disable_weights") is True  # prompts are literal text, as in the reference
        ids = [(100 + i, 1.0) for i in range(self.words)] + [(1, 1.0)]
        ids += [(0, 1.0)] * max(0, self.options.get("t5xxl_min_length", 0) - len(ids))
        return {"t5xxl": [ids]}

    def encode_from_tokens_scheduled(self, tokens):
        batch = tokens["t5xxl"][0]
        ids = torch.tensor([float(t) for t, _ in batch])
        return [[ids[None, :, None].expand(1, len(batch), self.dim).clone(), {"pooled_output": None}]]


@pytest.fixture(autouse=True)
def clean_host():
    host.reset()


def test_text_encode_pads_and_truncates_to_226_keeping_eos():
    short = text_nodes.FlashVideoTextEncode.execute(FakeClip(10), "a cat").result[0]
    ids = short[0][0][0, :, 0]
    assert ids.shape[0] == 226 and ids[10] == 1 and (ids[11:] == 0).all()
    long = text_nodes.FlashVideoTextEncode.execute(FakeClip(400), "a long prompt").result[0]
    ids = long[0][0][0, :, 0]
    assert ids.shape[0] == 226 and ids[-1] == 1 and ids[-2] == 100 + 224


def test_prompt_embedding_round_trip():
    cond = [[torch.randn(1, 226, 32), {}]]
    with pytest.raises(InputError, match="input 'name'.*is a path"):  # refused, not rewritten to another name
        text_nodes.FlashVideoSavePromptEmbedding.execute(cond, "my prompt/../x", "a cat")
    text_nodes.FlashVideoSavePromptEmbedding.execute(cond, "my prompt!..x", "a cat")
    names = text_nodes.folder_paths.get_filename_list(text_nodes.EMBEDDINGS_FOLDER)
    assert names == ["myprompt..x.safetensors"]  # only letters, digits and -_. are kept
    loaded = text_nodes.FlashVideoLoadPromptEmbedding.execute(names[0]).result[0]
    assert torch.equal(loaded[0][0], cond[0][0])
    with pytest.raises(InputError, match="226"):
        text_nodes.FlashVideoSavePromptEmbedding.execute([[torch.randn(1, 77, 32), {}]], "short")


# The model loader and the stage-I sampler build native ComfyUI models: they are tested in the real
# hosts (tests/test_comfyui_native.py), not against this fake.
