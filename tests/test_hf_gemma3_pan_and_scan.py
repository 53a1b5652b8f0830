"""Gemma 3's pan-and-scan crops against transformers 5.24: the image processor's pixel values and num_crops equal
transformers' Gemma3ImageProcessor (its PIL backend: transformers' default where torchvision is not installed) on
wide, tall, square and at-threshold images, from preprocessor_config.json and per call; image_inputs' ids and token
types equal transformers' Gemma3Processor's (a byte-level BPE tokenizer with Gemma 3's image marks); and the logits
and greedy generate of a tiny Gemma 3 written by transformers on those crops equal transformers'. Bad settings raise
ValueErrors naming them."""
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import generate, load_image_processor
from forgegrad.models.hf.gemma3_processing import Gemma3ImageProcessor
from forgegrad.models.hf.image_prompts import image_inputs, image_prompt
from forgegrad.models.hf.tokenizer import load_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")
transformers.logging.set_verbosity_error()

PAD, EOS, BOI, IMG, EOI = 0, 1, 2, 3, 4  # the tokenizer's special tokens, in its vocabulary's order
SETTINGS = dict(pan_and_scan_min_crop_size=8, pan_and_scan_max_num_crops=4, pan_and_scan_min_ratio_to_activate=1.2)
# (height, width): wide (3 crops, the last narrower), tall (capped at 4), square and just under 1.2 (no crops),
# exactly 1.2 both ways (2 crops), and crops that would be narrower than 8 px (none)
SHAPES = [(30, 80), (31, 100), (90, 12), (40, 40), (50, 59), (50, 60), (60, 50), (9, 14)]


def _image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _transformers_processor(tmp_path, cfg):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(cfg))
    hf = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    assert type(hf).__name__ == "Gemma3ImageProcessorPil"  # no torchvision here: the PIL backend is the default
    return hf


@pytest.mark.parametrize("use_pillow", [None, False], ids=["pillow", "numpy-resize"])
def test_crops_equal_transformers_from_the_config_and_per_call(tmp_path, use_pillow):
    base = {"image_processor_type": "Gemma3ImageProcessor", "size": {"height": 28, "width": 28}}
    on = {**base, "do_pan_and_scan": True, **SETTINGS}
    hf = _transformers_processor(tmp_path, on)
    ours = load_image_processor(tmp_path, use_pillow=use_pillow)
    images = [_image(s, i) for i, s in enumerate(SHAPES)]
    want = hf(images, return_tensors="np")
    got = ours(images)
    assert got["num_crops"].tolist() == list(want["num_crops"]) == [3, 3, 4, 0, 0, 2, 2, 0]
    np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])
    # the same settings given per call to a processor whose config leaves them null (the released checkpoints')
    off = {**base, **{k: None for k in SETTINGS}, "do_pan_and_scan": None}
    plain = _transformers_processor(tmp_path, off)
    ours_plain = load_image_processor(tmp_path, use_pillow=use_pillow)
    got = ours_plain(images, do_pan_and_scan=True, pan_and_scan_min_crop_size=8)
    want = plain(images, do_pan_and_scan=True, return_tensors="np", **SETTINGS)
    assert got["num_crops"].tolist() == list(want["num_crops"])
    np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])
    # left off, each image is one row; the per-call settings override the config's
    assert ours_plain(images)["num_crops"].tolist() == [0] * len(images)
    assert ours(images, pan_and_scan_max_num_crops=2)["num_crops"].tolist() == [2, 2, 2, 0, 0, 2, 2, 0]
    np.testing.assert_array_equal(ours(images, do_pan_and_scan=False)["pixel_values"],
                                  hf(images, do_pan_and_scan=False, return_tensors="np")["pixel_values"])


def test_the_checkpoint_defaults_are_gemma3_processors():
    """Settings left null take transformers' Gemma3Processor defaults: 256 px crops, at most 4, from ratio 1.2."""
    ours = Gemma3ImageProcessor(size={"height": 28, "width": 28}, do_pan_and_scan=True)
    assert ours.pan_and_scan == {"do_pan_and_scan": True, "pan_and_scan_min_crop_size": 256,
                                 "pan_and_scan_max_num_crops": 4, "pan_and_scan_min_ratio_to_activate": 1.2}
    hf = transformers.Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
    for shape in [(300, 1100), (300, 500), (1000, 256)]:  # 4 crops; 300 / 2 = 150 < 256: none; 4 crops of 250: none
        image = _image(shape)
        want = hf(image, do_pan_and_scan=True, pan_and_scan_min_crop_size=256, pan_and_scan_max_num_crops=4,
                  pan_and_scan_min_ratio_to_activate=1.2, return_tensors="np")
        got = ours(image)
        assert got["num_crops"].tolist() == list(want["num_crops"])
        np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])


def test_an_int_size_is_a_square_as_transformers_reads_it(tmp_path):
    cfg = {"image_processor_type": "Gemma3ImageProcessor", "size": 28, "do_pan_and_scan": True, **SETTINGS}
    hf = _transformers_processor(tmp_path, cfg)
    images = [_image((30, 80)), _image((40, 40), 1)]
    got, want = load_image_processor(tmp_path)(images), hf(images, return_tensors="np")
    assert got["pixel_values"].shape == (5, 3, 28, 28) and got["num_crops"].tolist() == list(want["num_crops"])
    np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])


def test_bad_settings_raise_value_errors_naming_them(tmp_path):
    for key, bad in [("pan_and_scan_max_num_crops", -1), ("pan_and_scan_max_num_crops", 0),
                     ("pan_and_scan_min_crop_size", 0), ("pan_and_scan_min_crop_size", 2.5),
                     ("pan_and_scan_min_ratio_to_activate", -1.0), ("do_pan_and_scan", "yes")]:
        with pytest.raises(ValueError, match=f"Gemma3ImageProcessor: {key} must be"):
            Gemma3ImageProcessor(**{key: bad})
        with pytest.raises(ValueError, match=f"{key} must be"):
            Gemma3ImageProcessor()(_image((20, 50)), **{key: bad})
        (tmp_path / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "Gemma3ImageProcessor", "do_pan_and_scan": True, key: bad}))
        with pytest.raises(ValueError, match=f"load_image_processor: .*preprocessor_config.json.*{key} must be"):
            load_image_processor(tmp_path)


# --- the prompt, the logits and generate, against transformers' Gemma3Processor and model ---
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    path = tmp_path_factory.mktemp("gemma3_pas")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(["Here is the original image and here are some crops to help you see better"] * 10,
                            trainers.BpeTrainer(vocab_size=290, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                special_tokens=["<pad>", "<eos>", "<start_of_image>",
                                                                "<image_soft_token>", "<end_of_image>"]))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"})
    fast.save_pretrained(path)
    torch.manual_seed(0)
    text = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                intermediate_size=40, vocab_size=300, max_position_embeddings=512, sliding_window=16,
                layer_types=["sliding_attention", "full_attention"], initializer_range=0.3, eos_token_id=EOS)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=28,
                  patch_size=7, vision_use_head=False)
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                    image_token_id=IMG, boi_token_id=BOI, eoi_token_id=EOI, eos_token_id=EOS)
    hf = transformers.Gemma3ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # the projector's weight is zeros at init: make the images count
        hf.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.3)
    hf.save_pretrained(path)
    improc = transformers.Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
    processor = transformers.Gemma3Processor(image_processor=improc, tokenizer=fast, image_seq_length=4)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Gemma3ImageProcessor", "size": {"height": 28, "width": 28}}))
    return path, hf, processor


def _prompt_cases():
    wide, tall, square = _image((30, 80), 1), _image((90, 25), 2), _image((40, 40), 3)
    return [("Look at <start_of_image> please", [wide]),  # 3 crops
            ("<start_of_image> and <start_of_image> then <start_of_image>.", [tall, square, wide]),  # 4, 0, 3
            ("", [square, wide])]  # no text: transformers' images-first layout


@pytest.mark.parametrize("case", range(3), ids=["one wide", "three images", "no text"])
def test_ids_logits_and_generate_equal_transformers_processor_and_model(checkpoint, case):
    path, hf, processor = checkpoint
    text, images = _prompt_cases()[case]
    model = from_pretrained(path)
    tok = load_tokenizer(path, model.vocab_size)
    ours_proc = load_image_processor(path)
    want = processor(images=[PIL.fromarray(im) for im in images], text=[text] if text else None, do_pan_and_scan=True,
                     return_tensors="np", **SETTINGS)
    ids, extra = image_inputs(model, tok, text, images, ours_proc, do_pan_and_scan=True, **SETTINGS)
    assert ids == want["input_ids"][0].tolist()
    np.testing.assert_array_equal(extra["token_type_ids"], want["token_type_ids"])
    np.testing.assert_array_equal(extra["pixel_values"], want["pixel_values"])
    crops = ours_proc(images, do_pan_and_scan=True, **SETTINGS)["num_crops"].tolist()
    assert len(extra["pixel_values"]) == len(images) + sum(crops) > len(images)
    assert ids.count(BOI) == len(extra["pixel_values"])  # one image block per original and per crop
    # the model: crops are more images, nothing else changes
    x = np.array([ids])
    with torch.no_grad():
        kw = dict(input_ids=torch.tensor(x), pixel_values=torch.tensor(want["pixel_values"]),
                  token_type_ids=torch.tensor(want["token_type_ids"]))
        logits = hf(**kw).logits.numpy()
        want_gen = hf.generate(**kw, max_new_tokens=6, do_sample=False).numpy()
    got = model(x, pixel_values=extra["pixel_values"], token_type_ids=extra["token_type_ids"]).numpy()
    np.testing.assert_allclose(got, logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(generate(model, x, max_new_tokens=6, do_sample=False, **extra), want_gen)


def test_image_prompt_num_crops_errors(checkpoint):
    path, _, _ = checkpoint
    model = from_pretrained(path)
    tok = load_tokenizer(path, model.vocab_size)
    for bad in ([1], [1, -1], [1.5, 0], "ab"):
        with pytest.raises(ValueError, match="num_crops must give each of the 2 images' crop count"):
            image_prompt(model, tok, "a", 2, num_crops=bad)
    assert image_prompt(model, tok, "a", 2, num_crops=[0, 0]) == image_prompt(model, tok, "a", 2)
