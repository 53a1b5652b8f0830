"""Gemma 3 with images (Gemma3ForConditionalGeneration) on checkpoints written by transformers itself: the logits of
left-padded batches with one and two images per prompt, with token_type_ids (the image tokens attend both ways,
within a sliding window of 3 narrower than an image block) and without; greedy generate with images; text-only
calls; gradients into the vision tower and the projector; save_pretrained read back by transformers; the released
checkpoints' tensor names; and clear errors."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import Gemma3ForCausalLM, Gemma3ForConditionalGeneration, generate, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

IMG, BOI, EOI = 110, 111, 112
TEXT = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
            intermediate_size=40, vocab_size=120, max_position_embeddings=128, sliding_window=3,
            layer_types=["sliding_attention", "full_attention"], initializer_range=0.3)
VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=28,
              patch_size=7, vision_use_head=False)
# one image (4 tokens between BOI and EOI) per row, the second row left-padded; then two images in one row
IDS = np.array([[5, 6, BOI, IMG, IMG, IMG, IMG, EOI, 7, 8, 9], [0, 0, 0, BOI, IMG, IMG, IMG, IMG, EOI, 9, 3]])
MASK = np.array([[1] * 11, [0, 0, 0] + [1] * 8])
TWO = np.array([[BOI, IMG, IMG, IMG, IMG, EOI, 4, BOI, IMG, IMG, IMG, IMG, EOI, 17]])
PIXELS = np.random.RandomState(0).randn(2, 3, 28, 28).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.Gemma3Config(text_config=TEXT, vision_config=VISION, mm_tokens_per_image=4,
                                    image_token_id=IMG, boi_token_id=BOI, eoi_token_id=EOI)
    hf = transformers.Gemma3ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # the projector's weight and norm are zeros at init: make them count
        hf.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.3)
        hf.model.multi_modal_projector.mm_soft_emb_norm.weight.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("gemma3_vlm")
    hf.save_pretrained(path)
    return path, hf


def _hf_logits(hf, ids, mask=None, pixels=None, kinds=None):
    kw = {"attention_mask": mask, "pixel_values": pixels, "token_type_ids": kinds}
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), **{k: torch.tensor(v) for k, v in kw.items() if v is not None}).logits


@pytest.mark.parametrize("kinds", [True, False], ids=["token_type_ids", "causal"])
@pytest.mark.parametrize("case", ["padded batch", "two images"])
def test_logits_with_images_equal_transformers(checkpoint, kinds, case):
    path, hf = checkpoint
    model = from_pretrained(path)
    assert isinstance(model, Gemma3ForConditionalGeneration)
    ids, mask, pixels = (IDS, MASK, PIXELS) if case == "padded batch" else (TWO, np.ones_like(TWO), PIXELS)
    types = (ids == IMG).astype(np.int64) if kinds else None
    want = _hf_logits(hf, ids, mask, pixels, types).numpy()
    got = model(ids, mask, pixel_values=pixels, token_type_ids=types).numpy()
    real = mask == 1
    np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-4)
    if kinds:  # the bidirectional image blocks change the logits (the test would see a causal-only mask)
        assert np.abs(want - _hf_logits(hf, ids, mask, pixels).numpy())[real].max() > 1e-2


def test_greedy_generate_with_images_and_text_only_equal_transformers(checkpoint):
    path, hf = checkpoint
    model = from_pretrained(path)
    types = (IDS == IMG).astype(np.int64)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                           pixel_values=torch.tensor(PIXELS), token_type_ids=torch.tensor(types), max_new_tokens=6,
                           do_sample=False).numpy()
        text = np.array([[5, 6, 7, 8, 9]])
        want_text = hf.generate(input_ids=torch.tensor(text), max_new_tokens=6, do_sample=False).numpy()
    got = generate(model, IDS, attention_mask=MASK, pixel_values=PIXELS, token_type_ids=types, max_new_tokens=6,
                   do_sample=False)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(generate(model, text, max_new_tokens=6, do_sample=False), want_text)
    np.testing.assert_allclose(model(text).numpy(), _hf_logits(hf, text).numpy(), rtol=1e-4, atol=1e-4)


def test_gradients_reach_the_vision_tower_and_projector(checkpoint):
    path, hf = checkpoint
    model = from_pretrained(path).train()
    types = (IDS == IMG).astype(np.int64)
    w = np.random.RandomState(1).randn(*IDS.shape, TEXT["vocab_size"]).astype(np.float32)
    w *= MASK[..., None]  # the padding places' logits are not compared (nor their gradients)
    (model(IDS, MASK, pixel_values=PIXELS, token_type_ids=types) * fg.tensor(w)).sum().backward()
    hf.train()
    try:
        logits = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), pixel_values=torch.tensor(PIXELS),
                    token_type_ids=torch.tensor(types)).logits
        (logits * torch.tensor(w)).sum().backward()
    finally:
        hf.eval()
    proj, tower = hf.model.multi_modal_projector, hf.model.vision_tower
    tower = getattr(tower, "vision_model", tower)
    pairs = [(model.multi_modal_projector.mm_input_projection_weight, proj.mm_input_projection_weight),
             (model.multi_modal_projector.mm_soft_emb_norm.weight, proj.mm_soft_emb_norm.weight),
             (model.vision_tower.embeddings.patch_embedding.weight, tower.embeddings.patch_embedding.weight),
             (model.model.layers[0].self_attn.q_proj.weight, hf.model.language_model.layers[0].self_attn.q_proj.weight)]
    for ours, theirs in pairs:
        g = theirs.grad.numpy()
        np.testing.assert_allclose(ours.grad.numpy(), g, rtol=1e-3, atol=1e-3 * np.abs(g).max())
    hf.zero_grad()


def test_save_pretrained_reads_back_in_transformers_and_the_released_names_load(checkpoint, tmp_path):
    from safetensors.numpy import load_file, save_file
    path, hf = checkpoint
    model = from_pretrained(path)
    save_pretrained(model, tmp_path / "ours")
    back = transformers.Gemma3ForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    types = (IDS == IMG).astype(np.int64)
    want = _hf_logits(hf, IDS, MASK, PIXELS, types).numpy()
    np.testing.assert_allclose(_hf_logits(back, IDS, MASK, PIXELS, types).numpy(), want, rtol=1e-5, atol=1e-5)
    # the released checkpoints (transformers 4.50): vision_tower.vision_model.*, language_model.model.*
    (tmp_path / "released").mkdir()
    tensors = load_file(str(path / "model.safetensors"))
    renamed = {("vision_tower.vision_model." + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v
               for k, v in tensors.items()}
    save_file(renamed, str(tmp_path / "released" / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "released" / "config.json").write_text((path / "config.json").read_text())
    got = from_pretrained(tmp_path / "released")(IDS, MASK, pixel_values=PIXELS, token_type_ids=types).numpy()
    np.testing.assert_allclose(got[MASK == 1], want[MASK == 1], rtol=1e-4, atol=1e-4)


def test_bad_image_inputs_raise_clear_errors(checkpoint):
    path, _ = checkpoint
    model = from_pretrained(path)
    with pytest.raises(ValueError, match="holds 8 image tokens .* but the 1 images give 4"):
        model(IDS, MASK, pixel_values=PIXELS[:1])
    with pytest.raises(TypeError, match="pixel_values must be a float array .* got str"):
        model(IDS, MASK, pixel_values="cat.png")
    with pytest.raises(ValueError, match="pixel_values must have shape \\(batch, 3, 28, 28\\)"):
        model(IDS, MASK, pixel_values=PIXELS[:, :, :20, :20])
    with pytest.raises(ValueError, match="token_type_ids must be integers .* of the input_ids' shape"):
        model(IDS, MASK, pixel_values=PIXELS, token_type_ids=np.ones((2, 3), np.int64))
    cache = model.new_cache(2, 20)
    model(IDS, MASK, cache=cache, pixel_values=PIXELS)
    with pytest.raises(ValueError, match="token_type_ids apply to a prompt from position 0"):
        model(IDS[:, :1], np.ones((2, 12)), cache=cache, token_type_ids=np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match="the prompts hold 8 image tokens .* but the images give 4"):
        generate(model, IDS, attention_mask=MASK, pixel_values=PIXELS[:1], num_beams=2, max_new_tokens=2)
    text_only = Gemma3ForCausalLM(TEXT)
    with pytest.raises(TypeError, match="Gemma3ForCausalLM takes text only"):
        generate(text_only, IDS[:, -3:], pixel_values=PIXELS, max_new_tokens=2)


def test_gemma3_image_processor_config_loads_with_pan_and_scan(tmp_path):
    import json
    from forgegrad.models.hf import load_image_processor
    cfg = {"image_processor_type": "Gemma3ImageProcessor", "size": {"height": 28, "width": 28}}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(cfg))
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    assert load_image_processor(tmp_path)(image)["pixel_values"].shape == (1, 3, 28, 28)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**cfg, "do_pan_and_scan": True,
                                                                   "pan_and_scan_min_crop_size": 10}))
    out = load_image_processor(tmp_path)(image)  # 40 / 30 >= 1.2: two crops of 20 rows (test_hf_gemma3_pan_and_scan)
    assert out["pixel_values"].shape == (3, 3, 28, 28) and out["num_crops"].tolist() == [2]
