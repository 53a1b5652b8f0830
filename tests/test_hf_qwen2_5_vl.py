"""Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration) on checkpoints written by transformers itself: the window order
equals transformers' get_vision_window_index; the logits of a prompt with two images whose merged grids leave ragged
windows (one of two frames) and of a left-padded batch; greedy generate with images; gradients into the windowed
vision tower; save_pretrained read back by transformers."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import Qwen2_5_VLForConditionalGeneration, generate, save_pretrained
from forgegrad.models.hf.qwen2_vl_vision import window_index

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

IMG, VS, VE = 110, 111, 112
TEXT = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, intermediate_size=40,
            vocab_size=120, max_position_embeddings=256, initializer_range=0.2,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 2, 2]))
# windows of 16 // 2 // 4 = 2 x 2 merged patches; block 1 attends to whole frames, blocks 0 and 2 within windows
VISION = dict(depth=3, hidden_size=32, out_hidden_size=48, intermediate_size=40, num_heads=4, patch_size=4,
              spatial_merge_size=2, temporal_patch_size=2, in_channels=3, window_size=16, fullatt_block_indexes=[1],
              initializer_range=0.2)
# image 0: 6 x 10 patches = 3 x 5 merged (windows 2x2, 2x1, 1x2, 1x1 at the edges); image 1: two frames of 4 x 4
GRID = np.array([[1, 6, 10], [2, 4, 4]])
PIXELS = np.random.RandomState(0).randn(92, 3 * 2 * 4 * 4).astype(np.float32)
TWO = np.array([[5, VS] + [IMG] * 15 + [VE, 7, 8, VS] + [IMG] * 8 + [VE, 9, 3]])
BATCH = np.array([[5, VS] + [IMG] * 15 + [VE, 7, 8], [0] * 8 + [4, VS] + [IMG] * 8 + [VE, 9]])
MASK = (np.arange(BATCH.shape[1]) >= np.array([[0], [8]])).astype(np.int64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.Qwen2_5_VLConfig(text_config=TEXT, vision_config=VISION, image_token_id=IMG,
                                        vision_start_token_id=VS, vision_end_token_id=VE)
    hf = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    path = tmp_path_factory.mktemp("qwen2_5_vl")
    hf.save_pretrained(path)
    return path, hf


def _image_kw(ids):
    return dict(pixel_values=torch.tensor(PIXELS), image_grid_thw=torch.tensor(GRID),
                mm_token_type_ids=torch.tensor((ids == IMG).astype(np.int64)))


def _hf_logits(hf, ids, mask=None):
    kw = _image_kw(ids)
    if mask is not None:
        kw["attention_mask"] = torch.tensor(mask)
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), **kw).logits.numpy()


@pytest.mark.parametrize("grid", [[[1, 6, 10], [2, 4, 4]], [[1, 8, 8]], [[3, 2, 14]]])
def test_window_order_equals_transformers(grid):
    from transformers.vision_utils import get_vision_window_index
    want_index, want_cu = get_vision_window_index(torch.tensor(grid), spatial_merge_size=2, window_size=16,
                                                  patch_size=4)
    units, lengths = window_index(np.array(grid), 2, 16, 4)
    np.testing.assert_array_equal(units, want_index.numpy())
    np.testing.assert_array_equal(np.concatenate([[0], np.cumsum(lengths)]), want_cu.numpy())


def test_logits_and_greedy_generate_equal_transformers(checkpoint):
    path, hf = checkpoint
    model = from_pretrained(path)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    np.testing.assert_allclose(model(TWO, pixel_values=PIXELS, image_grid_thw=GRID).numpy(), _hf_logits(hf, TWO),
                               rtol=1e-4, atol=1e-4)
    real = MASK == 1
    got = model(BATCH, MASK, pixel_values=PIXELS, image_grid_thw=GRID).numpy()
    np.testing.assert_allclose(got[real], _hf_logits(hf, BATCH, MASK)[real], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(BATCH), attention_mask=torch.tensor(MASK), **_image_kw(BATCH),
                           max_new_tokens=8, min_new_tokens=8, do_sample=False).numpy()
    np.testing.assert_array_equal(generate(model, BATCH, attention_mask=MASK, pixel_values=PIXELS,
                                           image_grid_thw=GRID, max_new_tokens=8,
                                           min_length=BATCH.shape[1] + 8), want)


def test_gradients_reach_the_windowed_vision_tower_and_save_pretrained(checkpoint, tmp_path):
    path, hf = checkpoint
    model = from_pretrained(path).train()
    w = np.random.RandomState(1).randn(*TWO.shape, TEXT["vocab_size"]).astype(np.float32)
    (model(TWO, pixel_values=PIXELS, image_grid_thw=GRID) * fg.tensor(w)).sum().backward()
    hf.train()
    try:
        (hf(input_ids=torch.tensor(TWO), **_image_kw(TWO)).logits * torch.tensor(w)).sum().backward()
    finally:
        hf.eval()
    visual = hf.model.visual
    pairs = [(model.visual.patch_embed.proj.weight, visual.patch_embed.proj.weight),
             (model.visual.blocks[0].mlp.gate_proj.weight, visual.blocks[0].mlp.gate_proj.weight),
             (model.visual.blocks[2].attn.qkv.weight, visual.blocks[2].attn.qkv.weight),
             (model.visual.merger.ln_q.weight, visual.merger.ln_q.weight)]
    for ours, theirs in pairs:
        g = theirs.grad.numpy()
        np.testing.assert_allclose(ours.grad.numpy(), g, rtol=1e-3, atol=1e-3 * np.abs(g).max())
    hf.zero_grad()
    save_pretrained(model.eval(), tmp_path)
    back = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path).eval()
    np.testing.assert_allclose(_hf_logits(back, TWO), _hf_logits(hf, TWO), rtol=1e-5, atol=1e-5)
