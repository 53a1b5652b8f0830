"""LLaVA (LlavaForConditionalGeneration) on checkpoints written by transformers itself: the logits of a left-padded
batch with an image per prompt and of a prompt with two images (the second-to-last CLIP layer without its class
token; a list of feature layers with the class token kept), greedy generate with images and text-only, gradients
into the projector and the vision tower, save_pretrained read back by transformers, the released checkpoints'
tensor names, and clear errors."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import LlavaForConditionalGeneration, generate, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

IMG = 110
TEXT = dict(model_type="llama", num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=40, vocab_size=120, max_position_embeddings=128, initializer_range=0.2)
VISION = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, image_size=14, patch_size=7, projection_dim=16)
# 4 patches per image: 4 image tokens ("default": the class token dropped), 5 with "full"
IDS = np.array([[5, 6, IMG, IMG, IMG, IMG, 7, 8, 9], [0, 0, 1, IMG, IMG, IMG, IMG, 9, 3]])
MASK = np.array([[1] * 9, [0, 0] + [1] * 7])
TWO = np.array([[1, IMG, IMG, IMG, IMG, 4, IMG, IMG, IMG, IMG, 17]])
PIXELS = np.random.RandomState(0).randn(2, 3, 14, 14).astype(np.float32)
CONFIGS = {"default": dict(), "mistral_full_layers": dict(vision_feature_layer=[-3, -1],
                                                          vision_feature_select_strategy="full")}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for name, extra in CONFIGS.items():
        torch.manual_seed(0)
        text = TEXT if name == "default" else {**TEXT, "model_type": "mistral", "sliding_window": 4}
        cfg = transformers.LlavaConfig(text_config=text, vision_config=VISION, image_token_index=IMG, **extra)
        hf = transformers.LlavaForConditionalGeneration(cfg).eval()
        path = tmp_path_factory.mktemp("llava_" + name)
        hf.save_pretrained(path)
        out[name] = path, hf
    return out


def _hf_logits(hf, ids, mask=None, pixels=None):
    kw = {"attention_mask": mask, "pixel_values": pixels}
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), **{k: torch.tensor(v) for k, v in kw.items() if v is not None}).logits


def _prompts(name):
    if name == "default":
        return IDS, MASK, TWO
    widen = np.insert(IDS, 2, IMG, axis=1)  # 5 image tokens per image
    return widen, np.insert(MASK, 2, 1, axis=1), np.insert(np.insert(TWO, 1, IMG), 7, IMG)[None]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_with_images_equal_transformers(checkpoints, name):
    path, hf = checkpoints[name]
    model = from_pretrained(path)
    assert isinstance(model, LlavaForConditionalGeneration)
    ids, mask, two = _prompts(name)
    want = _hf_logits(hf, ids, mask, PIXELS).numpy()
    got = model(ids, mask, pixel_values=PIXELS).numpy()
    np.testing.assert_allclose(got[mask == 1], want[mask == 1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model(two, pixel_values=PIXELS).numpy(), _hf_logits(hf, two, None, PIXELS).numpy(),
                               rtol=1e-4, atol=1e-4)


def test_greedy_generate_with_images_and_text_only_equal_transformers(checkpoints):
    path, hf = checkpoints["default"]
    model = from_pretrained(path)
    text = np.array([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                           pixel_values=torch.tensor(PIXELS), max_new_tokens=6, do_sample=False).numpy()
        want_text = hf.generate(input_ids=torch.tensor(text), max_new_tokens=6, do_sample=False).numpy()
    np.testing.assert_array_equal(generate(model, IDS, attention_mask=MASK, pixel_values=PIXELS, max_new_tokens=6,
                                           do_sample=False), want)
    np.testing.assert_array_equal(generate(model, text, max_new_tokens=6, do_sample=False), want_text)


def test_gradients_reach_the_projector_and_the_vision_tower(checkpoints):
    path, hf = checkpoints["default"]
    model = from_pretrained(path).train()
    w = np.random.RandomState(1).randn(*IDS.shape, TEXT["vocab_size"]).astype(np.float32) * MASK[..., None]
    (model(IDS, MASK, pixel_values=PIXELS) * fg.tensor(w)).sum().backward()
    hf.train()
    try:
        logits = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                    pixel_values=torch.tensor(PIXELS)).logits
        (logits * torch.tensor(w)).sum().backward()
    finally:
        hf.eval()
    tower = hf.model.vision_tower
    tower = getattr(tower, "vision_model", tower)
    pairs = [(model.multi_modal_projector.linear_1.weight, hf.model.multi_modal_projector.linear_1.weight),
             (model.vision_tower.embeddings.patch_embedding.weight, tower.embeddings.patch_embedding.weight),
             (model.vision_tower.encoder.layers[0].mlp.fc1.weight, tower.encoder.layers[0].mlp.fc1.weight)]
    for ours, theirs in pairs:
        g = theirs.grad.numpy()
        np.testing.assert_allclose(ours.grad.numpy(), g, rtol=1e-3, atol=1e-3 * np.abs(g).max())
    assert model.vision_tower.encoder.layers[2].mlp.fc1.weight.grad is None  # the last layer is not used
    hf.zero_grad()


def test_save_pretrained_reads_back_in_transformers_and_the_released_names_load(checkpoints, tmp_path):
    from safetensors.numpy import load_file, save_file
    path, hf = checkpoints["default"]
    save_pretrained(from_pretrained(path), tmp_path / "ours")
    back = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    want = _hf_logits(hf, IDS, MASK, PIXELS).numpy()
    np.testing.assert_allclose(_hf_logits(back, IDS, MASK, PIXELS).numpy(), want, rtol=1e-5, atol=1e-5)
    (tmp_path / "released").mkdir()  # llava-hf's: vision_tower.vision_model.*
    tensors = load_file(str(path / "model.safetensors"))
    released = {("vision_tower.vision_model." + k[13:] if k.startswith("vision_tower.") else k): v
                for k, v in tensors.items()}
    save_file(released, str(tmp_path / "released" / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "released" / "config.json").write_text((path / "config.json").read_text())
    got = from_pretrained(tmp_path / "released")(IDS, MASK, pixel_values=PIXELS).numpy()
    np.testing.assert_allclose(got[MASK == 1], want[MASK == 1], rtol=1e-4, atol=1e-4)


def test_bad_inputs_and_configs_raise_clear_errors(checkpoints):
    path, _ = checkpoints["default"]
    model = from_pretrained(path)
    with pytest.raises(ValueError, match="holds 8 image tokens .* but the 1 images give 4"):
        model(IDS, MASK, pixel_values=PIXELS[:1])
    with pytest.raises(TypeError, match="takes no token_type_ids"):
        model(IDS, MASK, pixel_values=PIXELS, token_type_ids=np.zeros_like(IDS))
    base = dict(text_config=TEXT, vision_config=VISION, image_token_index=IMG)
    for extra, message in [(dict(text_config={**TEXT, "model_type": "qwen2"}), "a 'qwen2' text decoder"),
                           (dict(vision_config={**VISION, "model_type": "siglip_vision_model"}), "vision tower"),
                           (dict(vision_feature_layer=7), "vision_feature_layer must be"),
                           (dict(vision_feature_select_strategy="cls"), "vision_feature_select_strategy")]:
        with pytest.raises(ValueError, match=message):
            LlavaForConditionalGeneration({**base, **extra})
