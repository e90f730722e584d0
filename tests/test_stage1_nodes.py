"""Text, embedding-file, model-loader and stage-I sampler nodes over the real core (fake ComfyUI host)."""

import pytest
import torch

from support import fake_comfy
from support.fake_comfy import InterruptProcessingException, host

pack = fake_comfy.install()
from flashvideo_pack_under_test.flashvideo_core.errors import InputError  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.stage1.sampler import sample_stage1  # noqa: E402
from flashvideo_pack_under_test.flashvideo_core.tiny import write_tiny_dit  # noqa: E402
from flashvideo_pack_under_test.nodes import stage1_nodes, text_nodes  # noqa: E402


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


@pytest.fixture(scope="module")
def dit_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dit")
    return {"stage1.pt": write_tiny_dit(str(d / "stage1.pt"), "stage1"), "stage2.pt": write_tiny_dit(str(d / "stage2.pt"), "stage2")}


def test_text_encode_pads_and_truncates_to_226_keeping_eos():
    short = text_nodes.FlashVideoTextEncode.execute(FakeClip(10), "a cat").result[0]
    ids = short[0][0][0, :, 0]
    assert ids.shape[0] == 226 and ids[10] == 1 and (ids[11:] == 0).all()
    long = text_nodes.FlashVideoTextEncode.execute(FakeClip(400), "a long prompt").result[0]
    ids = long[0][0][0, :, 0]
    assert ids.shape[0] == 226 and ids[-1] == 1 and ids[-2] == 100 + 224


def test_prompt_embedding_round_trip():
    cond = [[torch.randn(1, 226, 32), {}]]
    text_nodes.FlashVideoSavePromptEmbedding.execute(cond, "my prompt/../x", "a cat")
    names = text_nodes.folder_paths.get_filename_list(text_nodes.EMBEDDINGS_FOLDER)
    assert names == ["myprompt..x.safetensors"]  # no path separators survive
    loaded = text_nodes.FlashVideoLoadPromptEmbedding.execute(names[0]).result[0]
    assert torch.equal(loaded[0][0], cond[0][0])
    with pytest.raises(InputError, match="226"):
        text_nodes.FlashVideoSavePromptEmbedding.execute([[torch.randn(1, 77, 32), {}]], "short")


def test_model_loader_detects_the_stage(dit_files):
    host.files["diffusion_models"].update(dit_files)
    m1 = stage1_nodes.FlashVideoModelLoader.execute("stage1.pt", "auto").result[0]
    m2 = stage1_nodes.FlashVideoModelLoader.execute("stage2.pt", "fp32").result[0]
    assert m1.model.config.stage == "stage1" and m2.model.config.stage == "stage2"
    fp16 = stage1_nodes.FlashVideoModelLoader.execute("stage1.pt", "fp16").result[0]
    assert fp16.dtype == torch.bfloat16 and next(fp16.model.parameters()).dtype == torch.bfloat16
    fp8 = stage1_nodes.FlashVideoModelLoader.execute("stage1.pt", "fp8_e4m3fn", "sage").result[0]
    assert fp8.model.transformer_blocks[0].attn1.to_q.weight_fp8.dtype == torch.float8_e4m3fn
    assert fp8.model.transformer_blocks[0].attn1.backend in ("sdpa", "sage")
    ctx = torch.randn(1, 226, 32)
    latent = stage1_nodes.FlashVideoStage1Sampler.execute(fp8, [[ctx, {}]], 32, 16, 5, 2, 8.0, 0).result[0]
    assert torch.isfinite(latent["samples"]).all()


def test_stage1_sampler_node_matches_the_core_and_reports_progress(dit_files):
    host.files["diffusion_models"].update(dit_files)
    model = stage1_nodes.FlashVideoModelLoader.execute("stage1.pt", "fp32").result[0]
    ctx = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(0))
    latent = stage1_nodes.FlashVideoStage1Sampler.execute(model, [[ctx, {}]], 32, 16, 5, 4, 7.0, 3).result[0]
    assert latent["samples"].shape == (1, 16, 2, 2, 4)
    expected = sample_stage1(model.model, ctx, (1, 2, 16, 2, 4), steps=4, cfg=7.0, seed=3)
    torch.testing.assert_close(latent["samples"], expected.permute(0, 2, 1, 3, 4))
    assert [p[0] for p in host.progress] == [1, 2, 3, 4] and all(p[2] for p in host.progress)
    assert host.loads  # the model was loaded through ComfyUI's model management


def test_stage1_sampler_snaps_sizes_and_refuses_wrong_inputs(dit_files):
    host.files["diffusion_models"].update(dit_files)
    model = stage1_nodes.FlashVideoModelLoader.execute("stage1.pt", "fp32").result[0]
    ctx = [[torch.randn(1, 226, 32), {}]]
    latent = stage1_nodes.FlashVideoStage1Sampler.execute(model, ctx, 40, 20, 6, 2, 8.0, 0).result[0]
    assert latent["samples"].shape == (1, 16, 2, 2, 4)  # 40x20 -> 32x16 (nearest multiples of 16), 6 -> 5 frames
    stage2 = stage1_nodes.FlashVideoModelLoader.execute("stage2.pt", "fp32").result[0]
    with pytest.raises(InputError, match="stage-II model"):
        stage1_nodes.FlashVideoStage1Sampler.execute(stage2, ctx, 32, 16, 5, 2, 8.0, 0)
    with pytest.raises(InputError, match="226"):
        stage1_nodes.FlashVideoStage1Sampler.execute(model, [[torch.randn(1, 77, 32), {}]], 32, 16, 5, 2, 8.0, 0)


def test_stage1_sampler_interrupt_stops_within_one_step(dit_files):
    host.files["diffusion_models"].update(dit_files)
    model = stage1_nodes.FlashVideoModelLoader.execute("stage1.pt", "fp32").result[0]
    host.interrupt_after_checks = 2
    with pytest.raises(InterruptProcessingException):
        stage1_nodes.FlashVideoStage1Sampler.execute(model, [[torch.randn(1, 226, 32), {}]], 32, 16, 5, 10, 8.0, 0)
    assert len(host.progress) == 2
