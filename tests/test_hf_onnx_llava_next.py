"""ONNX export of LLaVA-NeXT (onnx_image_text.py with onnx_llava_next.py's host packing) on a checkpoint written by
transformers itself. The vision graph runs any number of tiles; the host packs its rows by image_sizes into the eager
model's rows (which test_hf_llava_next holds equal to transformers') for images of several sizes (other pinpoints,
other crops), 5-D and 4-D pixel_values. The three graphs give forgegrad's logits on left-padded batches with one and
two images of different sizes per prompt, then on a decode step through the cache; greedy decoding on the graphs gives
generate's tokens; bad input raises naming the argument."""
import numpy as np
import pytest

from forgegrad.autograd import no_grad
from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_image_text, generate, generate_image_text_onnx, generate_onnx
from forgegrad.models.hf.llava_next import image_tiles
from forgegrad.models.hf.onnx_image_text import ImageTextSessions
from hf_conformance import left_padded_positions

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
transformers.logging.set_verbosity_error()

IMG = 110
TEXT = dict(model_type="llama", num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=40, vocab_size=120, max_position_embeddings=256, initializer_range=0.2)
VISION = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, image_size=28, patch_size=7, projection_dim=16)
PINPOINTS = [[28, 56], [56, 28], [56, 56]]
# 20 x 90: 1 x 2 tiles, 2 of the grid's 4 rows kept (34 tokens); 60 x 35: 2 x 2 tiles, 4 of 8 columns (56 tokens)
SIZES = np.array([[20, 90], [60, 35]])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.LlavaNextConfig(text_config=TEXT, vision_config=VISION, image_token_index=IMG,
                                       image_grid_pinpoints=PINPOINTS)
    path = tmp_path_factory.mktemp("llava_next")
    transformers.LlavaNextForConditionalGeneration(cfg).eval().save_pretrained(path)
    model = from_pretrained(path)
    reports = export_image_text(model, path / "onnx")
    assert all(r.ok for r in reports.values())
    return model, ImageTextSessions(path / "onnx"), path / "onnx"


def _pixels(n_images, seed):
    return np.random.RandomState(seed).randn(n_images, 5, 3, 28, 28).astype(np.float32)  # padded to 5 tiles


def _prompts(model):
    """[(ids, mask, pixel_values, image_sizes)]: a left-padded batch with one image of a different size per prompt,
    and one with two per prompt (the images in order over the batch)."""
    out = []
    for sizes_per_row in ([SIZES[:1], SIZES[1:]], [SIZES, SIZES[::-1]]):
        rows = []
        for sizes in sizes_per_row:
            row = [1, 5]
            for n in model.image_token_counts(sizes):
                row += [IMG] * n + [7]
            rows.append(row + [8, 9])
        width = max(map(len, rows)) + 2
        ids = np.array([[0] * (width - len(r)) + r for r in rows])
        sizes = np.concatenate(sizes_per_row)
        out.append((ids, (ids != 0).astype(np.int64), _pixels(len(sizes), len(sizes)), sizes))
    return out


def test_the_host_packs_the_vision_graphs_tiles_as_the_model(exported):
    model, s, _ = exported
    # wide, tall and square images: other pinpoints, crops of rows or of columns, none
    sizes = np.array([[20, 90], [60, 35], [90, 20], [56, 56], [33, 40]])
    pixels = _pixels(len(sizes), 3)
    with no_grad():
        want = model.packed_features(pixels, sizes).numpy()
    np.testing.assert_allclose(s.image_rows(pixels, image_sizes=sizes), want, rtol=1e-4, atol=1e-4)
    counts = [r * c + 1 for r, c in (image_tiles(size, PINPOINTS, 28) for size in sizes)]
    tiles = np.concatenate([pixels[i, :n] for i, n in enumerate(counts)])  # (total tiles, 3, S, S)
    np.testing.assert_allclose(s.image_rows(tiles, image_sizes=sizes), want, rtol=1e-4, atol=1e-4)


def test_graphs_give_forgegrads_logits_on_padded_batches_and_a_decode_step(exported):
    model, s, _ = exported
    for ids, mask, pixels, sizes in _prompts(model):
        embeds = s.embeds(ids, s.image_rows(pixels, image_sizes=sizes))
        logits, *present = s.decoder.run(None, s.decoder_feed(embeds, mask, None, s.empty_past(2)))
        cache = model.new_cache(2, ids.shape[1] + 1)
        with no_grad():
            want = model(ids, mask, left_padded_positions(mask), cache=cache, pixel_values=pixels,
                         image_sizes=sizes).numpy()
        real = mask == 1
        np.testing.assert_allclose(logits[real], want[real], rtol=1e-4, atol=1e-4)
        nxt = want[:, -1].argmax(-1)[:, None]
        mask2 = np.concatenate([mask, np.ones((2, 1), np.int64)], 1)
        step = s.embed.run(None, {"input_ids": nxt})[0]
        got, *_ = s.decoder.run(None, s.decoder_feed(step, mask2, None, dict(zip(s.past_names, present))))
        with no_grad():
            want2 = model(nxt, mask2, left_padded_positions(mask2)[:, -1:], cache=cache).numpy()
        np.testing.assert_allclose(got, want2, rtol=1e-4, atol=1e-4)


def test_greedy_decoding_on_the_graphs_gives_generates_tokens(exported):
    model, s, folder = exported
    for ids, mask, pixels, sizes in _prompts(model):
        want = generate(model, ids, attention_mask=mask, pixel_values=pixels, image_sizes=sizes, max_new_tokens=6,
                        do_sample=False, eos_token_id=None)
        got = generate_image_text_onnx(s, ids, mask, pixel_values=pixels, image_sizes=sizes, max_new_tokens=6,
                                       do_sample=False, eos_token_id=None)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(generate_onnx(folder, ids, mask, max_new_tokens=6, do_sample=False,
                                                eos_token_id=None, pixel_values=pixels, image_sizes=sizes), want)


def test_beam_search_on_the_graphs_gives_generates_tokens(exported):
    """3 beams, the 2 best, per prompt: its rows from one prefill (the images once), generate's tokens."""
    model, s, _ = exported
    for ids, mask, pixels, sizes in _prompts(model):
        kw = dict(pixel_values=pixels, image_sizes=sizes, max_new_tokens=5, do_sample=False, eos_token_id=None,
                  num_beams=3, num_return_sequences=2, length_penalty=0.5)
        np.testing.assert_array_equal(generate_image_text_onnx(s, ids, mask, **kw),
                                      generate(model, ids, attention_mask=mask, **kw))


def test_bad_input_raises_naming_the_argument(exported):
    model, s, _ = exported
    ids, mask, pixels, sizes = _prompts(model)[0]
    with pytest.raises(ValueError, match="image_sizes: LLaVA-NeXT's pixel_values need"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels, max_new_tokens=2)
    with pytest.raises(ValueError, match="image_sizes were given without pixel_values"):
        generate_image_text_onnx(s, ids, mask, image_sizes=sizes, max_new_tokens=2)
    with pytest.raises(ValueError, match="image_sizes must be positive integer"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels, image_sizes=sizes[:1], max_new_tokens=2)
    with pytest.raises(ValueError, match="must hold 2 images of at least 5 tiles"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels[:, :4], image_sizes=sizes, max_new_tokens=2)
    with pytest.raises(ValueError, match="pixel_values must be LLaVA-NeXT's tiles"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels[..., :-1], image_sizes=sizes, max_new_tokens=2)
    with pytest.raises(ValueError, match="pixel_values: the prompt holds 90 image tokens .* give 112"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels, image_sizes=sizes[[1, 1]], max_new_tokens=2)
    with pytest.raises(TypeError, match="image_grid_thw goes with Qwen2-VL's graphs"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels, image_sizes=sizes,
                                 image_grid_thw=np.array([[1, 2, 2]]), max_new_tokens=2)
