"""ONNX export of Qwen2-VL and Qwen2.5-VL (onnx_image_text.py with onnx_qwen2_vl.py's graphs) on checkpoints written
by transformers itself. The vision graph takes the processor's patches and grid_thw and gives the eager tower's rows
(which test_hf_qwen2_vl / test_hf_qwen2_5_vl hold equal to transformers') at grids it was not traced at: one image,
images of several shapes, two frames, Qwen2.5-VL's ragged windows. The three graphs with the host's M-RoPE positions
give forgegrad's logits on left-padded batches with one and two images of different sizes per prompt, then on a
decode step through the cache; greedy decoding on the graphs gives generate's tokens, with images and text alone;
bad input raises naming the argument."""
import numpy as np
import pytest

from forgegrad.autograd import no_grad
from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_image_text, export_with_past, generate, generate_image_text_onnx, generate_onnx
from forgegrad.models.hf.onnx_image_text import ImageTextSessions
from forgegrad.models.hf.onnx_qwen2_vl import MRopePositions
from hf_conformance import left_padded_positions

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
transformers.logging.set_verbosity_error()

IMG, VS, VE = 110, 111, 112
TEXT = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, intermediate_size=40,
            vocab_size=120, max_position_embeddings=256, initializer_range=0.2,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 2, 2]))
COMMON = dict(num_heads=4, patch_size=4, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
              initializer_range=0.2)
# Qwen2.5-VL: windows of 16 // 2 // 4 = 2 x 2 merged patches; block 1 attends to whole frames, 0 and 2 in windows
VISION = {"qwen2_vl": dict(COMMON, depth=2, embed_dim=32, hidden_size=48, mlp_ratio=2),
          "qwen2_5_vl": dict(COMMON, depth=3, hidden_size=32, out_hidden_size=48, intermediate_size=40, window_size=16,
                             fullatt_block_indexes=[1])}
PATCH = 3 * 2 * 4 * 4
# (grid, merged tokens): 6 x 10 patches (ragged 2 x 2 windows), 4 x 4, two frames of 2 x 4
GRIDS = [([1, 6, 10], 15), ([1, 4, 4], 4), ([2, 2, 4], 4)]


def _build(name):
    torch.manual_seed(0)
    if name == "qwen2_vl":
        cfg = transformers.Qwen2VLConfig(text_config=TEXT, vision_config=VISION[name], image_token_id=IMG,
                                         vision_start_token_id=VS, vision_end_token_id=VE)
        return transformers.Qwen2VLForConditionalGeneration(cfg).eval()
    cfg = transformers.Qwen2_5_VLConfig(text_config=TEXT, vision_config=VISION[name], image_token_id=IMG,
                                        vision_start_token_id=VS, vision_end_token_id=VE)
    return transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="module", params=list(VISION))
def exported(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    _build(request.param).save_pretrained(path)
    model = from_pretrained(path)
    reports = export_image_text(model, path / "onnx")
    assert all(r.ok for r in reports.values())
    return model, ImageTextSessions(path / "onnx"), path / "onnx"


def _block(tokens):
    return [VS] + [IMG] * tokens + [VE]


def _prompts():
    """[(ids, mask, pixel_values, image_grid_thw)]: a left-padded batch with one image per prompt (of different
    sizes), and one with two per prompt; the images' grids in order over the batch."""
    out = []
    for per_prompt in (1, 2):
        images = [GRIDS[:per_prompt], GRIDS[1:1 + per_prompt]] if per_prompt == 2 else [GRIDS[:1], GRIDS[2:]]
        rows = []
        for mine in images:
            row = [5, 6]
            for _, tokens in mine:
                row += _block(tokens) + [7]
            rows.append(row + [8, 9])
        width = max(len(r) for r in rows) + 2  # both rows left-padded, the second more
        ids = np.array([[0] * (width - len(r)) + r for r in rows])
        mask = (ids != 0).astype(np.int64)
        grid = np.array([g for mine in images for g, _ in mine], np.int64)
        pixels = np.random.RandomState(per_prompt).randn(int(grid.prod(axis=1).sum()), PATCH).astype(np.float32)
        out.append((ids, mask, pixels, grid))
    return out


def test_the_vision_graph_gives_the_eager_towers_rows_at_other_grids(exported):
    model, s, _ = exported
    rng = np.random.default_rng(3)
    for grid in ([[1, 2, 2]], [[1, 6, 10], [2, 4, 4], [1, 2, 6]], [[3, 4, 2]], [[1, 10, 6], [1, 8, 8]]):
        g = np.array(grid, np.int64)
        pixels = rng.standard_normal((int(g.prod(axis=1).sum()), PATCH)).astype(np.float32)
        with no_grad():
            want = model.image_features(pixels, g).numpy()
        np.testing.assert_allclose(s.image_rows(pixels, g), want, rtol=1e-4, atol=1e-4)


def test_graphs_give_forgegrads_logits_on_padded_batches_and_a_decode_step(exported):
    model, s, _ = exported
    for ids, mask, pixels, grid in _prompts():
        rope = MRopePositions(ids, mask, IMG, grid, model.merge, "test")
        embeds = s.embeds(ids, s.image_rows(pixels, grid))
        logits, *present = s.decoder.run(None, s.decoder_feed(embeds, mask, None, s.empty_past(2), rope.prompt))
        cache = model.new_cache(2, ids.shape[1] + 1)
        with no_grad():
            want = model(ids, mask, left_padded_positions(mask), cache=cache, pixel_values=pixels,
                         image_grid_thw=grid).numpy()
        real = mask == 1
        np.testing.assert_allclose(logits[real], want[real], rtol=1e-4, atol=1e-4)
        # one token through the cache: its text position plus the row's rope delta (the model adds the cache's)
        nxt = want[:, -1].argmax(-1)[:, None]
        mask2 = np.concatenate([mask, np.ones((2, 1), np.int64)], 1)
        step = s.embed.run(None, {"input_ids": nxt})[0]
        got, *_ = s.decoder.run(None, s.decoder_feed(step, mask2, None, dict(zip(s.past_names, present)),
                                                     rope.step()))
        with no_grad():
            want2 = model(nxt, mask2, left_padded_positions(mask2)[:, -1:], cache=cache).numpy()
        np.testing.assert_allclose(got, want2, rtol=1e-4, atol=1e-4)
    # the 3-D positions matter: the text positions on all three components give other logits after an image
    text = np.broadcast_to(left_padded_positions(mask), (3, *mask.shape)).astype(np.int64)
    plain = s.decoder.run(None, s.decoder_feed(embeds, mask, None, s.empty_past(2), text))[0]
    assert np.abs(plain - logits)[real].max() > 1e-2


def test_greedy_decoding_on_the_graphs_gives_generates_tokens(exported):
    model, s, folder = exported
    for ids, mask, pixels, grid in _prompts():
        want = generate(model, ids, attention_mask=mask, pixel_values=pixels, image_grid_thw=grid, max_new_tokens=6,
                        do_sample=False, eos_token_id=None)
        got = generate_image_text_onnx(s, ids, mask, pixel_values=pixels, image_grid_thw=grid, max_new_tokens=6,
                                       do_sample=False, eos_token_id=None)
        np.testing.assert_array_equal(got, want)
    # generate_onnx given the folder: the same loop, the generation config read beside the graphs
    np.testing.assert_array_equal(generate_onnx(folder, ids, mask, max_new_tokens=6, do_sample=False,
                                                eos_token_id=None, pixel_values=pixels, image_grid_thw=grid), want)
    text = np.array([[0, 0, 5, 6, 7], [5, 6, 7, 8, 9]])
    text_mask = (text != 0).astype(np.int64)
    np.testing.assert_array_equal(
        generate_image_text_onnx(s, text, text_mask, max_new_tokens=4, do_sample=False, eos_token_id=None),
        generate(model, text, attention_mask=text_mask, max_new_tokens=4, do_sample=False, eos_token_id=None))


def test_beam_search_on_the_graphs_gives_generates_tokens(exported):
    """3 beams, the 2 best, per prompt: its rows from one prefill (the images once), generate's tokens."""
    model, s, _ = exported
    for ids, mask, pixels, grid in _prompts():
        kw = dict(pixel_values=pixels, image_grid_thw=grid, max_new_tokens=5, do_sample=False, eos_token_id=None,
                  num_beams=3, num_return_sequences=2, length_penalty=0.5)
        np.testing.assert_array_equal(generate_image_text_onnx(s, ids, mask, **kw),
                                      generate(model, ids, attention_mask=mask, **kw))


def test_bad_input_raises_naming_the_argument(exported):
    model, s, _ = exported
    ids, mask, pixels, grid = _prompts()[0]
    with pytest.raises(TypeError, match="export_with_past: model is a .*image-text"):
        export_with_past(model, "unused.onnx")
    with pytest.raises(ValueError, match="image_grid_thw: Qwen2-VL's pixel_values need their grids"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels, max_new_tokens=2)
    with pytest.raises(ValueError, match="image_grid_thw was given without pixel_values"):
        generate_image_text_onnx(s, ids, mask, image_grid_thw=grid, max_new_tokens=2)
    with pytest.raises(ValueError, match="image_grid_thw gives 76 patches but pixel_values has 60 rows"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels[:60], image_grid_thw=grid, max_new_tokens=2)
    with pytest.raises(ValueError, match="image_grid_thw must be positive integers"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels, image_grid_thw=grid[:, :2], max_new_tokens=2)
    with pytest.raises(ValueError, match="pixel_values must be the processor's flattened patches"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels[:, :-1], image_grid_thw=grid, max_new_tokens=2)
    with pytest.raises(ValueError, match="image 0's run of image tokens has 15 tokens but its image_grid_thw"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels, image_grid_thw=grid[::-1].copy(),
                                 max_new_tokens=2)
    with pytest.raises(TypeError, match="image_sizes goes with LLaVA-NeXT's graphs"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels, image_grid_thw=grid, image_sizes=[[20, 30]],
                                 max_new_tokens=2)
    with pytest.raises(ValueError, match="decoder_feed: Qwen2-VL's decoder graph needs"):
        s.decoder_feed(s.embeds(ids[:, :2], None), mask[:, :2], None, s.empty_past(2))
    with pytest.raises(TypeError, match="token_type_ids"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels, image_grid_thw=grid,
                                 token_type_ids=np.zeros_like(ids))


def test_image_grid_thw_is_refused_by_the_other_graphs(tmp_path):
    from forgegrad.models.hf import LlamaForCausalLM
    text = dict(TEXT, model_type="llama")
    text.pop("rope_parameters")
    export_with_past(LlamaForCausalLM(text), tmp_path / "decoder.onnx", verify=False)
    with pytest.raises(TypeError, match="generate_onnx: pixel_values / .*image_grid_thw.* go with"):
        generate_onnx(tmp_path / "decoder.onnx", [[1, 2]], image_grid_thw=np.array([[1, 2, 2]]))


def test_cli_exports_a_qwen2_vl_checkpoint_to_a_folder(tmp_path):
    from forgegrad.cli import main
    _build("qwen2_vl").save_pretrained(tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "onnx")]) == 0
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [
        "decoder_model_merged.onnx", "embed_tokens.onnx", "generation_config.json", "vision_encoder.onnx"]
    model = from_pretrained(tmp_path / "ckpt")
    ids, mask, pixels, grid = _prompts()[1]
    np.testing.assert_array_equal(
        generate_onnx(tmp_path / "onnx", ids, mask, max_new_tokens=5, pixel_values=pixels, image_grid_thw=grid),
        generate(model, ids, attention_mask=mask, max_new_tokens=5, pixel_values=pixels, image_grid_thw=grid))
