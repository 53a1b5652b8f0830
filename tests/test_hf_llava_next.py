"""LLaVA-NeXT (LlavaNextForConditionalGeneration) on checkpoints written by transformers itself: the logits of a
left-padded batch with two images of different sizes (so different tile grids, unpadding and token counts), of a
prompt with both images and of text alone (a Llama decoder; a Mistral one with two feature layers); greedy generate
with images; gradients into the projector, the tower and image_newline; save_pretrained read back by transformers
and the in-memory names; the image processor and the prompts' token counts against transformers' processor; the
generate CLI with two images; clear errors."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import LlavaNextForConditionalGeneration, generate, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

IMG = 110
TEXT = dict(model_type="llama", num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=40, vocab_size=120, max_position_embeddings=256, initializer_range=0.2)
VISION = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, image_size=28, patch_size=7, projection_dim=16)
PINPOINTS = [[28, 56], [56, 28], [56, 56]]
# 4 x 4 patches per tile. image 0: 20 x 90 -> the 28 x 56 pinpoint, 1 x 2 tiles, the 4 x 8 grid unpadded to its 2
# middle rows (20 / 90 * 8 = 1.8 -> 1 row, padding (4 - 1) // 2 = 1 each side): 16 + 2 * (8 + 1) = 34 tokens;
# image 1: 60 x 35 -> 56 x 56, 2 x 2 tiles, the 8 x 8 grid unpadded to columns 2..5 (35 / 60 * 8 -> 4): 16 + 8 * 5
SIZES = np.array([[20, 90], [60, 35]])
PIXELS = np.random.RandomState(0).randn(2, 5, 3, 28, 28).astype(np.float32)  # 3 and 5 tiles, padded to 5


def _counts(model):
    return model.image_token_counts(SIZES)


def _batch(counts):
    """Two prompts of one image each, the shorter left-padded."""
    rows = [[5, 6] + [IMG] * counts[0] + [7, 8, 9], [1] + [IMG] * counts[1] + [9, 3]]
    T = max(map(len, rows))
    ids = np.array([[0] * (T - len(r)) + r for r in rows])
    mask = np.array([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.LlavaNextConfig(text_config=TEXT, vision_config=VISION, image_token_index=IMG,
                                       image_grid_pinpoints=PINPOINTS)
    hf = transformers.LlavaNextForConditionalGeneration(cfg).eval()
    path = tmp_path_factory.mktemp("llava_next")
    hf.save_pretrained(path)
    return path, hf


def _hf_logits(hf, ids, mask=None, pixels=None, sizes=None):
    kw = {"attention_mask": mask, "pixel_values": pixels, "image_sizes": sizes}
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), **{k: torch.tensor(v) for k, v in kw.items() if v is not None}).logits


def test_token_counts_follow_the_image_sizes(checkpoint):
    model = from_pretrained(checkpoint[0])
    assert isinstance(model, LlavaNextForConditionalGeneration)
    assert _counts(model) == [34, 56]


def test_logits_with_images_and_text_equal_transformers(checkpoint):
    path, hf = checkpoint
    model = from_pretrained(path)
    ids, mask = _batch(_counts(model))
    want = _hf_logits(hf, ids, mask, PIXELS, SIZES).numpy()
    got = model(ids, mask, pixel_values=PIXELS, image_sizes=SIZES).numpy()
    np.testing.assert_allclose(got[mask == 1], want[mask == 1], rtol=1e-4, atol=1e-4)
    # both images in one prompt, given as (total tiles, 3, S, S)
    n0, n1 = _counts(model)
    two = np.array([[1] + [IMG] * n0 + [4, 5] + [IMG] * n1 + [17]])
    want = _hf_logits(hf, two, None, PIXELS, SIZES).numpy()
    np.testing.assert_allclose(model(two, pixel_values=PIXELS, image_sizes=SIZES).numpy(), want, rtol=1e-4,
                               atol=1e-4)
    tiles = np.concatenate([PIXELS[0, :3], PIXELS[1]])
    np.testing.assert_allclose(model(two, pixel_values=tiles, image_sizes=SIZES).numpy(), want, rtol=1e-4, atol=1e-4)
    text = np.array([[5, 6, 7, 8, 9, 10]])
    np.testing.assert_allclose(model(text).numpy(), _hf_logits(hf, text).numpy(), rtol=1e-4, atol=1e-4)



def test_mistral_decoder_with_two_feature_layers_equals_transformers(tmp_path):
    """A Mistral decoder with a window of 8 and vision_feature_layer [-3, -1] (their states concatenated)."""
    torch.manual_seed(1)
    cfg = transformers.LlavaNextConfig(text_config={**TEXT, "model_type": "mistral", "sliding_window": 8},
                                       vision_config=VISION, image_token_index=IMG, image_grid_pinpoints=PINPOINTS,
                                       vision_feature_layer=[-3, -1])
    hf = transformers.LlavaNextForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    ids, mask = _batch(_counts(model))
    want = _hf_logits(hf, ids, mask, PIXELS, SIZES).numpy()
    got = model(ids, mask, pixel_values=PIXELS, image_sizes=SIZES).numpy()
    np.testing.assert_allclose(got[mask == 1], want[mask == 1], rtol=1e-4, atol=1e-4)

def test_greedy_generate_with_images_equals_transformers(checkpoint):
    path, hf = checkpoint
    model = from_pretrained(path)
    ids, mask = _batch(_counts(model))
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                           pixel_values=torch.tensor(PIXELS), image_sizes=torch.tensor(SIZES), max_new_tokens=6,
                           do_sample=False).numpy()
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, pixel_values=PIXELS, image_sizes=SIZES,
                                           max_new_tokens=6, do_sample=False), want)


def test_gradients_reach_the_projector_the_tower_and_image_newline(checkpoint):
    path, hf = checkpoint
    model = from_pretrained(path).train()
    ids, mask = _batch(_counts(model))
    w = np.random.RandomState(1).randn(*ids.shape, TEXT["vocab_size"]).astype(np.float32) * mask[..., None]
    (model(ids, mask, pixel_values=PIXELS, image_sizes=SIZES) * fg.tensor(w)).sum().backward()
    hf.train()
    try:
        logits = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), pixel_values=torch.tensor(PIXELS),
                    image_sizes=torch.tensor(SIZES)).logits
        (logits * torch.tensor(w)).sum().backward()
    finally:
        hf.eval()
    tower = hf.model.vision_tower
    tower = getattr(tower, "vision_model", tower)
    pairs = [(model.image_newline, hf.model.image_newline),
             (model.multi_modal_projector.linear_1.weight, hf.model.multi_modal_projector.linear_1.weight),
             (model.vision_tower.embeddings.patch_embedding.weight, tower.embeddings.patch_embedding.weight)]
    for ours, theirs in pairs:
        g = theirs.grad.numpy()
        np.testing.assert_allclose(ours.grad.numpy(), g, rtol=1e-3, atol=1e-3 * np.abs(g).max())
    hf.zero_grad()


def test_save_pretrained_reads_back_in_transformers_and_the_in_memory_names_load(checkpoint, tmp_path):
    from safetensors.numpy import save_file
    path, hf = checkpoint
    model = from_pretrained(path)
    ids, mask = _batch(_counts(model))
    save_pretrained(model, tmp_path / "ours")
    back = transformers.LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    want = _hf_logits(hf, ids, mask, PIXELS, SIZES).numpy()
    np.testing.assert_allclose(_hf_logits(back, ids, mask, PIXELS, SIZES).numpy(), want, rtol=1e-5, atol=1e-5)
    (tmp_path / "memory").mkdir()  # transformers' in-memory names: model.image_newline, model.language_model.*
    save_file({k: v.detach().numpy().copy() for k, v in hf.state_dict().items()},
              str(tmp_path / "memory" / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "memory" / "config.json").write_text((path / "config.json").read_text())
    got = from_pretrained(tmp_path / "memory")(ids, mask, pixel_values=PIXELS, image_sizes=SIZES).numpy()
    np.testing.assert_allclose(got[mask == 1], want[mask == 1], rtol=1e-4, atol=1e-4)


def test_bad_inputs_and_configs_raise_clear_errors(checkpoint):
    model = from_pretrained(checkpoint[0])
    ids, mask = _batch(_counts(model))
    with pytest.raises(ValueError, match="need image_sizes"):
        model(ids, mask, pixel_values=PIXELS)
    with pytest.raises(ValueError, match="image_sizes must be .* \\(2, 2\\)"):
        model(ids, mask, pixel_values=PIXELS, image_sizes=SIZES[:1])
    with pytest.raises(ValueError, match="pixel_values .* at least 5 tiles"):
        model(ids, mask, pixel_values=PIXELS[:, :4], image_sizes=SIZES)
    with pytest.raises(ValueError, match="pixel_values must be .* the 8 tiles"):
        model(ids, mask, pixel_values=PIXELS[0], image_sizes=SIZES)
    with pytest.raises(ValueError, match="holds 90 image tokens .* give 112"):
        model(ids, mask, pixel_values=PIXELS, image_sizes=np.array([[60, 35], [60, 35]]))
    with pytest.raises(ValueError, match="image_sizes were given without pixel_values"):
        model(ids, mask, image_sizes=SIZES)
    with pytest.raises(ValueError, match="need image_sizes"):
        generate(model, ids, attention_mask=mask, pixel_values=PIXELS, max_new_tokens=2)
    base = dict(text_config=TEXT, vision_config=VISION, image_token_index=IMG)
    for extra, message in [(dict(image_grid_pinpoints=[[28]]), "image_grid_pinpoints must be"),
                           (dict(vision_feature_select_strategy="full"), "vision_feature_select_strategy")]:
        with pytest.raises(ValueError, match=message):
            LlavaNextForConditionalGeneration({**base, **extra})


IMAGE_SIZES = [(20, 90), (60, 35), (41, 41), (120, 37), (9, 13)]  # wide, tall, square, very tall, tiny


def _processor_pair(tmp_path):
    """(transformers' Pil-backend LlavaNextImageProcessor, ours loaded from what it saved), 28-pixel tiles."""
    from forgegrad.models.hf import load_image_processor
    ref = transformers.LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                  image_grid_pinpoints=PINPOINTS)
    ref.save_pretrained(tmp_path)
    return ref, load_image_processor(tmp_path)


def test_image_processor_equals_transformers(tmp_path):
    ref, ours = _processor_pair(tmp_path)
    rs = np.random.RandomState(0)
    images = [rs.randint(0, 256, (h, w, 3), dtype=np.uint8) for h, w in IMAGE_SIZES]
    want, got = ref(images, return_tensors="np"), ours(images)
    np.testing.assert_array_equal(got["image_sizes"], want["image_sizes"])
    assert got["pixel_values"].shape == want["pixel_values"].shape == (5, 5, 3, 28, 28)
    np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])
    # without Pillow: the numpy resize (Pillow 13's passes); do_pad off with different tile counts: back to back
    from forgegrad.models.hf import load_image_processor
    np.testing.assert_array_equal(load_image_processor(tmp_path, use_pillow=False)(images)["pixel_values"],
                                  want["pixel_values"])
    from forgegrad.models.hf.llava_next_processing import LlavaNextImageProcessor
    loose = LlavaNextImageProcessor(do_pad=False, size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                    image_grid_pinpoints=PINPOINTS)(images[:2])["pixel_values"]
    np.testing.assert_array_equal(loose, np.concatenate([want["pixel_values"][0, :3], want["pixel_values"][1]]))


def test_image_prompt_expands_image_marks_as_the_transformers_processor(checkpoint, tmp_path):
    from hf_conformance import chat_tokenizer

    from forgegrad.models.hf.image_prompts import image_inputs, image_prompt
    tok = chat_tokenizer(None)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image = tok.convert_tokens_to_ids("<image>")
    ref, ours = _processor_pair(tmp_path)
    processor = transformers.LlavaNextProcessor(image_processor=ref, tokenizer=tok, patch_size=7,
                                                vision_feature_select_strategy="default", image_token="<image>",
                                                num_additional_image_tokens=1)
    model = LlavaNextForConditionalGeneration(dict(text_config={**TEXT, "vocab_size": len(tok)}, vision_config=VISION,
                                                   image_token_index=image, image_grid_pinpoints=PINPOINTS))
    rs = np.random.RandomState(1)
    images = [rs.randint(0, 256, (h, w, 3), dtype=np.uint8) for h, w in IMAGE_SIZES[:4]]
    text = "USER: <image>\nhello <image> and<image><image> world ASSISTANT:"
    want = processor(text=[text], images=images, return_tensors="np")
    ids, extra = image_inputs(model, tok, text, images, ours)
    assert ids == want["input_ids"][0].tolist()
    one_each = [processor(text=["<image>"], images=[im])["input_ids"][0].count(image) for im in images]
    assert model.image_token_counts(want["image_sizes"]) == one_each and len(set(one_each)) == 4
    np.testing.assert_array_equal(extra["pixel_values"], want["pixel_values"])
    np.testing.assert_array_equal(extra["image_sizes"], want["image_sizes"])
    with pytest.raises(ValueError, match="needs image_sizes"):
        image_prompt(model, tok, text, 4)
    with pytest.raises(ValueError, match="marks 4 images"):
        image_prompt(model, tok, text, 2, image_sizes=want["image_sizes"][:2])


def test_generate_cli_with_two_images_equals_transformers(tmp_path, capsys):
    """forgegrad generate DIR --prompt ... --image A --image B: the checkpoint's tokenizer and
    preprocessor_config.json, each <image> expanded to its image's count, the greedy continuation equal to
    transformers' generate on its processor's inputs."""
    from hf_conformance import chat_tokenizer
    from PIL import Image

    from forgegrad.cli import main
    tok = chat_tokenizer(None)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image = tok.convert_tokens_to_ids("<image>")
    torch.manual_seed(0)
    cfg = transformers.LlavaNextConfig(text_config={**TEXT, "vocab_size": len(tok)}, vision_config=VISION,
                                       image_token_index=image, image_grid_pinpoints=PINPOINTS)
    hf = transformers.LlavaNextForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    ref, _ = _processor_pair(tmp_path)
    rs = np.random.RandomState(2)
    pictures = [rs.randint(0, 256, (h, w, 3), dtype=np.uint8) for h, w in IMAGE_SIZES[:2]]
    for i, p in enumerate(pictures):
        Image.fromarray(p).save(tmp_path / f"{i}.png")
    prompt = "look <image> and <image> here"
    assert main(["generate", str(tmp_path), "--prompt", prompt, "--image", str(tmp_path / "0.png"), "--image",
                 str(tmp_path / "1.png"), "--max-new-tokens", "6"]) == 0
    got = capsys.readouterr().out
    processor = transformers.LlavaNextProcessor(image_processor=ref, tokenizer=tok, patch_size=7,
                                                vision_feature_select_strategy="default", image_token="<image>",
                                                num_additional_image_tokens=1)
    inputs = processor(text=[prompt], images=pictures, return_tensors="pt")
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert got.startswith(prompt + tok.decode(out[0, inputs["input_ids"].shape[1]:]) + "\n")
