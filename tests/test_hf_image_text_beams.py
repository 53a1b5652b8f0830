"""generate with images and beam search or several sequences per prompt: each prompt's images go with each of its
rows (_image_text.repeat_images). Against transformers' generate on checkpoints it wrote: Gemma 3 (token types),
LLaVA-NeXT (tiles of two sizes, both pixel layouts) and Qwen2-VL (a batch whose prompts hold two images and one:
transformers splits Qwen2-VL's patches per prompt); LLaVA with two images in one prompt and one in the other against
transformers' beam search on the merged embeddings (its own expansion repeats pixel_values image by image, which
pairs images with the wrong rows there); R samples per prompt; clear errors."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import generate

import test_hf_gemma3_vlm as G3
import test_hf_llava as LV
import test_hf_llava_next as LN
import test_hf_qwen2_vl as QV

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

BEAMS = [dict(num_beams=3), dict(num_beams=3, num_return_sequences=2, length_penalty=0.5)]


def _hf_generate(hf, ids, mask, **kw):
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                           **{k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}).numpy()


def _checkpoint(tmp_path, make):
    torch.manual_seed(0)
    hf = make().eval()
    hf.save_pretrained(tmp_path)
    return from_pretrained(tmp_path), hf


@pytest.mark.parametrize("kw", BEAMS, ids=["beams", "two_of_three_beams"])
def test_gemma3_beams_with_images_equal_transformers(tmp_path, kw):
    def make():
        cfg = transformers.Gemma3Config(text_config=G3.TEXT, vision_config=G3.VISION, mm_tokens_per_image=4,
                                        image_token_id=G3.IMG, boi_token_id=G3.BOI, eoi_token_id=G3.EOI)
        hf = transformers.Gemma3ForConditionalGeneration(cfg)
        with torch.no_grad():
            hf.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.3)
            hf.model.multi_modal_projector.mm_soft_emb_norm.weight.normal_(0, 0.3)
        return hf
    model, hf = _checkpoint(tmp_path, make)
    kinds = (G3.IDS == G3.IMG).astype(np.int64)
    want = _hf_generate(hf, G3.IDS, G3.MASK, pixel_values=G3.PIXELS, token_type_ids=kinds, max_new_tokens=6, **kw)
    got = generate(model, G3.IDS, attention_mask=G3.MASK, pixel_values=G3.PIXELS, token_type_ids=kinds,
                   max_new_tokens=6, do_sample=False, **kw)
    np.testing.assert_array_equal(got, want)


def test_llava_next_beams_with_tiles_of_two_sizes_equal_transformers(tmp_path):
    def make():
        return transformers.LlavaNextForConditionalGeneration(transformers.LlavaNextConfig(
            text_config=LN.TEXT, vision_config=LN.VISION, image_token_index=LN.IMG, image_grid_pinpoints=LN.PINPOINTS))
    model, hf = _checkpoint(tmp_path, make)
    ids, mask = LN._batch(LN._counts(model))
    kw = BEAMS[1]
    want = _hf_generate(hf, ids, mask, pixel_values=LN.PIXELS, image_sizes=LN.SIZES, max_new_tokens=6, **kw)
    got = generate(model, ids, attention_mask=mask, pixel_values=LN.PIXELS, image_sizes=LN.SIZES, max_new_tokens=6,
                   do_sample=False, **kw)
    np.testing.assert_array_equal(got, want)
    # the (total tiles, 3, S, S) layout: 3 and 5 tiles, the padding tiles dropped
    tiles = np.concatenate([LN.PIXELS[0, :3], LN.PIXELS[1]])
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, pixel_values=tiles, image_sizes=LN.SIZES,
                                           max_new_tokens=6, do_sample=False, **kw), want)


def test_qwen2_vl_beams_with_two_images_and_one_equal_transformers(tmp_path):
    def make():
        return transformers.Qwen2VLForConditionalGeneration(transformers.Qwen2VLConfig(
            text_config=QV.TEXT, vision_config=QV.VISION, image_token_id=QV.IMG, vision_start_token_id=QV.VS,
            vision_end_token_id=QV.VE))
    model, hf = _checkpoint(tmp_path, make)
    # prompt 0: the 4 x 6 image and the two-frame one (6 + 4 tokens); prompt 1: a 2 x 4 image (2 tokens), padded
    two = QV.TWO[0].tolist()
    one = [4, QV.VS] + [QV.IMG] * 2 + [QV.VE, 9]
    ids = np.array([two, [0] * (len(two) - len(one)) + one])
    mask = (np.arange(len(two))[None] >= np.array([[0], [len(two) - len(one)]])).astype(np.int64)
    grid = np.concatenate([QV.GRID, [[1, 2, 4]]])
    pixels = np.random.RandomState(1).randn(48, QV.PIXELS.shape[1]).astype(np.float32)
    kw = BEAMS[1]
    want = _hf_generate(hf, ids, mask, **QV._image_kw(ids, pixels, grid), max_new_tokens=6, **kw)
    got = generate(model, ids, attention_mask=mask, pixel_values=pixels, image_grid_thw=grid, max_new_tokens=6,
                   do_sample=False, **kw)
    np.testing.assert_array_equal(got, want)


def test_llava_beams_with_two_images_in_one_prompt_equal_transformers_on_embeddings(tmp_path):
    def make():
        return transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
            text_config=LV.TEXT, vision_config=LV.VISION, image_token_index=LV.IMG))
    model, hf = _checkpoint(tmp_path, make)
    two = LV.TWO[0].tolist()
    one = [3, LV.IMG, LV.IMG, LV.IMG, LV.IMG, 8]
    ids = np.array([[0] * (len(two) - len(one)) + one, two])  # the one-image prompt first, left-padded
    mask = (np.arange(len(two))[None] >= np.array([[len(two) - len(one)], [0]])).astype(np.int64)
    pixels = np.random.RandomState(2).randn(3, 3, 14, 14).astype(np.float32)  # image 0 to prompt 0, 1 and 2 to 1
    seen = {}

    def keep(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]
    hook = hf.model.language_model.register_forward_pre_hook(keep, with_kwargs=True)
    with torch.no_grad():
        hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), pixel_values=torch.tensor(pixels))
    hook.remove()
    kw = dict(BEAMS[1], max_new_tokens=6)
    with torch.no_grad():  # from embeddings, transformers returns the new tokens only
        want = hf.generate(inputs_embeds=seen["embeds"], attention_mask=torch.tensor(mask), do_sample=False,
                           **kw).numpy()
    got = generate(model, ids, attention_mask=mask, pixel_values=pixels, do_sample=False, **kw)
    np.testing.assert_array_equal(got[:, ids.shape[1]:], want)
    np.testing.assert_array_equal(got[:, :ids.shape[1]], np.repeat(ids, 2, axis=0))


def test_samples_per_prompt_take_their_prompts_images(tmp_path):
    """Three sequences per prompt, sampled with top_k=1 (each the greedy tokens): every row is its prompt's greedy
    answer, so each row read its own prompt's images."""
    def make():
        return transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
            text_config=LV.TEXT, vision_config=LV.VISION, image_token_index=LV.IMG))
    model, _ = _checkpoint(tmp_path, make)
    greedy = generate(model, LV.IDS, attention_mask=LV.MASK, pixel_values=LV.PIXELS, max_new_tokens=6,
                      do_sample=False)
    sampled = generate(model, LV.IDS, attention_mask=LV.MASK, pixel_values=LV.PIXELS, max_new_tokens=6,
                       do_sample=True, top_k=1, num_return_sequences=3)
    np.testing.assert_array_equal(sampled, np.repeat(greedy, 3, axis=0))
    swapped = generate(model, LV.IDS, attention_mask=LV.MASK, pixel_values=LV.PIXELS[::-1].copy(),
                       max_new_tokens=6, do_sample=False)
    assert not np.array_equal(swapped, greedy)  # the images matter to these answers


def test_images_that_do_not_fit_the_prompts_raise_clear_errors(tmp_path):
    def make():
        return transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
            text_config=LV.TEXT, vision_config=LV.VISION, image_token_index=LV.IMG))
    model, _ = _checkpoint(tmp_path, make)
    with pytest.raises(ValueError, match="the prompts hold 8 image tokens .* but the images give 12"):
        generate(model, LV.IDS, attention_mask=LV.MASK, pixel_values=np.zeros((3, 3, 14, 14), np.float32),
                 num_beams=2, max_new_tokens=2)
    ids = LV.IDS.copy()
    ids[0, 2], ids[1, 2] = 4, LV.IMG  # 3 image tokens in prompt 0, 5 in prompt 1: an image would span both
    with pytest.raises(ValueError, match="run past its prompt's image tokens"):
        generate(model, ids, attention_mask=np.ones_like(ids), pixel_values=LV.PIXELS, num_return_sequences=2,
                 do_sample=True, max_new_tokens=2)
