"""Qwen2-VL (Qwen2VLForConditionalGeneration) on checkpoints written by transformers itself: the logits of a prompt
with two images of different grids (one of two frames), of a left-padded batch with an image per prompt and of text
alone (M-RoPE positions checked to matter), greedy generate with images and text-only, gradients into the vision
tower, save_pretrained read back by transformers, the in-memory and the released (flat config) names, a tied head with
sliding-window layers, the image processor and prompts against transformers', the generate CLI, and clear errors."""
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import Qwen2VLForConditionalGeneration, generate, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

IMG, VS, VE = 110, 111, 112
TEXT = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, intermediate_size=40,
            vocab_size=120, max_position_embeddings=256, initializer_range=0.2,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 2, 2]))
VISION = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=4, mlp_ratio=2, patch_size=4, spatial_merge_size=2,
              temporal_patch_size=2, in_channels=3, initializer_range=0.2)
# image 0: 4 x 6 patches (6 merged tokens); image 1: two frames of 2 x 4 patches (2 x 2 tokens)
GRID = np.array([[1, 4, 6], [2, 2, 4]])
PIXELS = np.random.RandomState(0).randn(40, 3 * 2 * 4 * 4).astype(np.float32)
TWO = np.array([[5, VS] + [IMG] * 6 + [VE, 7, 8, VS] + [IMG] * 4 + [VE, 9, 3]])
# one image per row (the grids taken in order over the batch), the second row left-padded
BATCH = np.array([[5, VS] + [IMG] * 6 + [VE, 7, 8], [0, 0, 0, 4, VS] + [IMG] * 4 + [VE, 9]])
MASK = np.array([[1] * 11, [0] * 3 + [1] * 8])
TEXT_ONLY = np.array([[5, 6, 7, 8, 9, 10, 11]])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.Qwen2VLConfig(text_config=TEXT, vision_config=VISION, image_token_id=IMG,
                                     vision_start_token_id=VS, vision_end_token_id=VE)
    hf = transformers.Qwen2VLForConditionalGeneration(cfg).eval()
    path = tmp_path_factory.mktemp("qwen2_vl")
    hf.save_pretrained(path)
    return path, hf


def _image_kw(ids, pixels=PIXELS, grid=GRID):
    return dict(pixel_values=torch.tensor(pixels), image_grid_thw=torch.tensor(grid),
                mm_token_type_ids=torch.tensor((ids == IMG).astype(np.int64)))


def _hf_logits(hf, ids, mask=None, images=True):
    kw = _image_kw(ids) if images else {}
    if mask is not None:
        kw["attention_mask"] = torch.tensor(mask)
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), **kw).logits.numpy()


def test_logits_with_images_and_text_equal_transformers(checkpoint):
    path, hf = checkpoint
    model = from_pretrained(path)
    assert isinstance(model, Qwen2VLForConditionalGeneration)
    want = _hf_logits(hf, TWO)
    np.testing.assert_allclose(model(TWO, pixel_values=PIXELS, image_grid_thw=GRID).numpy(), want, rtol=1e-4,
                               atol=1e-4)
    real = MASK == 1
    got = model(BATCH, MASK, pixel_values=PIXELS, image_grid_thw=GRID).numpy()
    np.testing.assert_allclose(got[real], _hf_logits(hf, BATCH, MASK)[real], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model(TEXT_ONLY).numpy(), _hf_logits(hf, TEXT_ONLY, images=False), rtol=1e-4,
                               atol=1e-4)
    # the 3-D positions matter: the plain positions 0.. give other logits after the first image
    plain = model(TWO, position_ids=np.arange(TWO.shape[1])[None].repeat(3, 0)[:, None], pixel_values=PIXELS,
                  image_grid_thw=GRID).numpy()
    assert np.abs(plain[0, 3:] - want[0, 3:]).max() > 1e-2


def test_greedy_generate_with_images_and_text_only_equal_transformers(checkpoint):
    path, hf = checkpoint
    model = from_pretrained(path)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(BATCH), attention_mask=torch.tensor(MASK), **_image_kw(BATCH),
                           max_new_tokens=8, min_new_tokens=8, do_sample=False).numpy()
        want_text = hf.generate(input_ids=torch.tensor(TEXT_ONLY), max_new_tokens=8, min_new_tokens=8,
                                do_sample=False).numpy()
    from forgegrad.models.hf._decode import lean_path_applies
    assert lean_path_applies(model)  # the decode steps (and a text-only prefill) run the lean kernels
    got = generate(model, BATCH, attention_mask=MASK, pixel_values=PIXELS, image_grid_thw=GRID, max_new_tokens=8,
                   min_length=BATCH.shape[1] + 8, do_sample=False)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(generate(model, TEXT_ONLY, max_new_tokens=8, min_length=TEXT_ONLY.shape[1] + 8,
                                           do_sample=False), want_text)


def test_gradients_reach_the_vision_tower(checkpoint):
    path, hf = checkpoint
    model = from_pretrained(path).train()
    w = np.random.RandomState(1).randn(*TWO.shape, TEXT["vocab_size"]).astype(np.float32)
    (model(TWO, pixel_values=PIXELS, image_grid_thw=GRID) * fg.tensor(w)).sum().backward()
    hf.train()
    try:
        logits = hf(input_ids=torch.tensor(TWO), **_image_kw(TWO)).logits
        (logits * torch.tensor(w)).sum().backward()
    finally:
        hf.eval()
    visual = hf.model.visual
    pairs = [(model.visual.patch_embed.proj.weight, visual.patch_embed.proj.weight),
             (model.visual.blocks[0].attn.qkv.weight, visual.blocks[0].attn.qkv.weight),
             (model.visual.merger.mlp[0].weight, visual.merger.mlp[0].weight),
             (model.model.layers[0].self_attn.q_proj.weight, hf.model.language_model.layers[0].self_attn.q_proj.weight)]
    for ours, theirs in pairs:
        g = theirs.grad.numpy()
        np.testing.assert_allclose(ours.grad.numpy(), g, rtol=1e-3, atol=1e-3 * np.abs(g).max())
    hf.zero_grad()


def test_save_pretrained_and_the_in_memory_and_released_names(checkpoint, tmp_path):
    from safetensors.numpy import load_file, save_file
    path, hf = checkpoint
    want = _hf_logits(hf, TWO)
    save_pretrained(from_pretrained(path), tmp_path / "ours")
    back = transformers.Qwen2VLForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    np.testing.assert_allclose(_hf_logits(back, TWO), want, rtol=1e-5, atol=1e-5)
    tensors = load_file(str(path / "model.safetensors"))
    cfg = json.loads((path / "config.json").read_text())
    # transformers' in-memory names (model.language_model.*, model.visual.*)
    memory = {("model.language_model." + k[6:] if k.startswith("model.") else
               "model." + k if k.startswith("visual.") else k): v for k, v in tensors.items()}
    # the released checkpoints' flat config: the text keys at the top, rope_scaling {"type": "mrope"}
    text = dict(cfg.pop("text_config"))
    params = text.pop("rope_parameters")
    flat = {**cfg, **{k: v for k, v in text.items() if k != "model_type"}, "rope_theta": params["rope_theta"],
            "rope_scaling": {"type": "mrope", "mrope_section": params["mrope_section"]}}
    for name, weights, config in (("memory", memory, json.loads((path / "config.json").read_text())),
                                  ("released", tensors, flat)):
        (tmp_path / name).mkdir()
        save_file(weights, str(tmp_path / name / "model.safetensors"), metadata={"format": "pt"})
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        got = from_pretrained(tmp_path / name)(TWO, pixel_values=PIXELS, image_grid_thw=GRID).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_bad_inputs_raise_clear_errors(checkpoint):
    path, _ = checkpoint
    model = from_pretrained(path)
    with pytest.raises(ValueError, match="pixel_values need image_grid_thw"):
        model(TWO, pixel_values=PIXELS)
    with pytest.raises(ValueError, match="image_grid_thw was given without pixel_values"):
        model(TWO, image_grid_thw=GRID)
    with pytest.raises(ValueError, match="image_grid_thw gives 32 patches but pixel_values has 40 rows"):
        model(TWO, pixel_values=PIXELS, image_grid_thw=np.array([[1, 4, 6], [1, 2, 4]]))
    with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
        model(TWO, pixel_values=PIXELS[:36], image_grid_thw=np.array([[1, 4, 6], [1, 3, 4]]))
    with pytest.raises(ValueError, match="pixel_values must be the processor's flattened patches"):
        model(TWO, pixel_values=PIXELS.reshape(40, 3, 32), image_grid_thw=GRID)
    with pytest.raises(ValueError, match="input_ids hold 9 image tokens .* give 10 rows"):
        model(np.delete(TWO, 3, axis=1), pixel_values=PIXELS, image_grid_thw=GRID)
    with pytest.raises(ValueError, match="image 0's run of image tokens has 10 tokens"):
        model(np.array([[5, VS] + [IMG] * 10 + [VE]]), pixel_values=PIXELS, image_grid_thw=GRID)
    with pytest.raises(ValueError, match="rope type 'yarn' is not supported"):
        Qwen2VLForConditionalGeneration(dict(text_config={**TEXT, "rope_parameters": {"rope_type": "yarn"}},
                                             vision_config=VISION))
    with pytest.raises(ValueError, match="mrope_section must be"):
        Qwen2VLForConditionalGeneration(dict(text_config={**TEXT, "rope_parameters": {"mrope_section": [2, 2]}},
                                             vision_config=VISION))


def test_tied_head_and_sliding_window_layers(tmp_path):
    """A tied LM head; the second layer sliding (a window of 5, narrower than the first image's tokens)."""
    torch.manual_seed(1)
    text = {**TEXT, "use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1}
    cfg = transformers.Qwen2VLConfig(text_config=text, vision_config=VISION, image_token_id=IMG,
                                     vision_start_token_id=VS, vision_end_token_id=VE, tie_word_embeddings=True)
    hf = transformers.Qwen2VLForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    assert model.tied and not hasattr(model, "lm_head") and model.sliding_windows == [None, 5]
    np.testing.assert_allclose(model(TWO, pixel_values=PIXELS, image_grid_thw=GRID).numpy(), _hf_logits(hf, TWO),
                               rtol=1e-4, atol=1e-4)
    real = MASK == 1
    got = model(BATCH, MASK, pixel_values=PIXELS, image_grid_thw=GRID).numpy()
    np.testing.assert_allclose(got[real], _hf_logits(hf, BATCH, MASK)[real], rtol=1e-4, atol=1e-4)


def _processor_pair(tmp_path):
    """(transformers' Pil-backend Qwen2VLImageProcessor, ours loaded from what it saved), 4 to 20 merged patches."""
    from forgegrad.models.hf import load_image_processor
    ref = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 20)
    ref.save_pretrained(tmp_path)
    return ref, load_image_processor(tmp_path)


IMAGE_SIZES = [(50, 70), (300, 123), (20, 30), (97, 97), (14, 400)]  # kept, shrunk (max_pixels), grown (min_pixels)


def test_image_processor_equals_transformers(tmp_path):
    ref, ours = _processor_pair(tmp_path)
    rs = np.random.RandomState(0)
    images = [rs.randint(0, 256, (h, w, 3), dtype=np.uint8) for h, w in IMAGE_SIZES]
    want, got = ref(images, return_tensors="np"), ours(images)
    np.testing.assert_array_equal(got["image_grid_thw"], want["image_grid_thw"])
    np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])
    assert len({tuple(g) for g in got["image_grid_thw"].tolist()}) > 3  # the sizes differ
    from forgegrad.models.hf.qwen2_vl_processing import Qwen2VLImageProcessor
    from forgegrad.serve.image_embeddings import _check_resized
    # the server's resized-area check: the default max_pixels bounds a 12:1 image (min_pixels is no shortest edge)
    _check_resized(12000, 1000, Qwen2VLImageProcessor(), 0)


def test_image_prompt_expands_image_pads_as_the_transformers_processor(tmp_path):
    from hf_conformance import chat_tokenizer

    from forgegrad.models.hf.image_prompts import image_inputs, image_prompt

    class Processor(transformers.Qwen2VLProcessor):  # its video processor needs torchvision: none here
        def check_argument_for_proper_class(self, name, arg):
            return None if name == "video_processor" else super().check_argument_for_proper_class(name, arg)

    tok = chat_tokenizer(None)
    marks = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]
    tok.add_special_tokens({"additional_special_tokens": marks})
    start, pad, end = tok.convert_tokens_to_ids(marks)
    ref, ours = _processor_pair(tmp_path)
    processor = Processor(image_processor=ref, tokenizer=tok, video_processor=None, chat_template="")
    model = Qwen2VLForConditionalGeneration(dict(
        text_config={**TEXT, "vocab_size": len(tok)}, vision_config=VISION, image_token_id=pad,
        vision_start_token_id=start, vision_end_token_id=end))
    rs = np.random.RandomState(1)
    images = [rs.randint(0, 256, (h, w, 3), dtype=np.uint8) for h, w in IMAGE_SIZES[:2]]
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    text = f"<|im_start|>user\n{image}hello{image} world<|im_end|>\n"
    want = processor(text=[text], images=images, return_tensors="np")
    ids, extra = image_inputs(model, tok, text, images, ours)
    assert ids == want["input_ids"][0].tolist()
    assert [int(i == pad) for i in ids] == want["mm_token_type_ids"][0].tolist()
    np.testing.assert_array_equal(extra["pixel_values"], want["pixel_values"])
    np.testing.assert_array_equal(extra["image_grid_thw"], want["image_grid_thw"])
    # no marks: each image's start, tokens and end first (forgegrad's; transformers' processor refuses it)
    first, _ = image_prompt(model, tok, "hello", 2, image_grid_thw=want["image_grid_thw"])
    counts = want["image_grid_thw"].prod(1) // 4
    assert first == ([start] + [pad] * counts[0] + [end] + [start] + [pad] * counts[1] + [end] +
                     tok.encode("hello"))
    with pytest.raises(ValueError, match="needs image_grid_thw"):
        image_prompt(model, tok, text, 2)
    with pytest.raises(ValueError, match="marks 2 images"):
        image_prompt(model, tok, text, 1, image_grid_thw=want["image_grid_thw"][:1])


def test_generate_cli_with_an_image_equals_transformers(tmp_path, capsys):
    """forgegrad generate DIR --prompt ... --image FILE: the checkpoint's tokenizer and preprocessor_config.json, the
    image pad expanded, the greedy continuation equal to transformers' generate."""
    from hf_conformance import chat_tokenizer
    from PIL import Image

    from forgegrad.cli import main
    tok = chat_tokenizer(None)
    tok.add_special_tokens({"additional_special_tokens": ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]})
    start, pad, end = tok.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"])
    torch.manual_seed(0)
    cfg = transformers.Qwen2VLConfig(text_config={**TEXT, "vocab_size": 300},
                                     vision_config={**VISION, "patch_size": 14}, image_token_id=pad,
                                     vision_start_token_id=start, vision_end_token_id=end)
    hf = transformers.Qwen2VLForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    improc = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    improc.save_pretrained(tmp_path)
    image = np.random.RandomState(0).randint(0, 256, (60, 90, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    prompt = "hello <|vision_start|><|image_pad|><|vision_end|> world"
    assert main(["generate", str(tmp_path), "--prompt", prompt, "--image", str(tmp_path / "x.png"),
                 "--max-new-tokens", "6"]) == 0
    got = capsys.readouterr().out
    pixels = improc([image], return_tensors="pt")
    n = int(pixels["image_grid_thw"].prod()) // 4
    ids = torch.tensor([tok.encode("hello ") + [start] + [pad] * n + [end] + tok.encode(" world")])
    with torch.no_grad():
        out = hf.generate(input_ids=ids, **pixels, mm_token_type_ids=(ids == pad).long(), max_new_tokens=6,
                          min_new_tokens=6, do_sample=False)[0, ids.shape[1]:]
    assert got.startswith(prompt + tok.decode(out) + "\n")
