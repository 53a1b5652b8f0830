"""PaliGemma (PaliGemmaForConditionalGeneration) with a Gemma decoder and with a Gemma 2 decoder (a sliding window of
3) on checkpoints written by transformers itself: logits of a left-padded batch with token_type_ids (the prefix
attends both ways) and without, positions counted from 1, greedy generate with images and text-only,
save_pretrained read back by transformers, and clear errors."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import PaliGemmaForConditionalGeneration, generate, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

IMG = 110
VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=14,
              patch_size=7, projection_dim=48)
TEXT = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
            intermediate_size=40, vocab_size=120, max_position_embeddings=128, initializer_range=0.3)
TEXTS = {"gemma": dict(TEXT, model_type="gemma"), "gemma2": dict(TEXT, model_type="gemma2", sliding_window=3)}
# image tokens, BOS (2), the prompt, "\n" (1): the prefix; then the suffix; the second row left-padded
IDS = np.array([[IMG, IMG, IMG, IMG, 2, 5, 6, 7, 1, 8, 9], [0, 0, IMG, IMG, IMG, IMG, 2, 9, 3, 1, 4]])
MASK = np.array([[1] * 11, [0, 0] + [1] * 9])
KINDS = np.array([[0] * 9 + [1, 1]] * 2)
PIXELS = np.random.RandomState(0).randn(2, 3, 14, 14).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for name, text in TEXTS.items():
        torch.manual_seed(0)
        cfg = transformers.PaliGemmaConfig(text_config=text, vision_config=VISION, image_token_index=IMG,
                                           projection_dim=48)
        hf = transformers.PaliGemmaForConditionalGeneration(cfg).eval()
        path = tmp_path_factory.mktemp("paligemma_" + name)
        hf.save_pretrained(path)
        out[name] = path, hf
    return out


def _hf_logits(hf, ids, mask=None, pixels=None, kinds=None):
    kw = {"attention_mask": mask, "pixel_values": pixels, "token_type_ids": kinds}
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), **{k: torch.tensor(v) for k, v in kw.items() if v is not None}).logits


@pytest.mark.parametrize("kinds", [True, False], ids=["prefix", "causal"])
@pytest.mark.parametrize("name", list(TEXTS))
def test_logits_with_images_equal_transformers(checkpoints, name, kinds):
    path, hf = checkpoints[name]
    model = from_pretrained(path)
    assert isinstance(model, PaliGemmaForConditionalGeneration)
    types = KINDS if kinds else None
    want = _hf_logits(hf, IDS, MASK, PIXELS, types).numpy()
    got = model(IDS, MASK, pixel_values=PIXELS, token_type_ids=types).numpy()
    scale = np.abs(want).max()
    np.testing.assert_allclose(got[MASK == 1], want[MASK == 1], rtol=1e-4, atol=2e-6 * scale)
    if kinds:  # the bidirectional prefix changes the logits
        assert np.abs(want - _hf_logits(hf, IDS, MASK, PIXELS).numpy())[MASK == 1].max() > 1e-2 * scale


@pytest.mark.parametrize("name", list(TEXTS))
def test_greedy_generate_with_images_and_text_only_equal_transformers(checkpoints, name):
    path, hf = checkpoints[name]
    model = from_pretrained(path)
    # a text prompt is a prefix too (token_type_ids 0): transformers' PaliGemma 1 decoder is marked bidirectional
    # and builds no mask for a prompt without padding, so it attends such a prompt both ways even without them
    text = np.array([[2, 5, 6, 7, 1]])
    zeros = np.zeros_like(text)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                           pixel_values=torch.tensor(PIXELS), token_type_ids=torch.tensor(KINDS), max_new_tokens=6,
                           do_sample=False).numpy()
        want_text = hf.generate(input_ids=torch.tensor(text), token_type_ids=torch.tensor(zeros), max_new_tokens=6,
                                do_sample=False).numpy()
    from forgegrad.models.hf._decode import lean_path_applies
    assert lean_path_applies(model)  # the decode steps are the lean step's, its rotary positions shifted by 1
    got = generate(model, IDS, attention_mask=MASK, pixel_values=PIXELS, token_type_ids=KINDS, max_new_tokens=6,
                   do_sample=False)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(generate(model, text, token_type_ids=zeros, max_new_tokens=6, do_sample=False),
                                  want_text)
    want_logits = _hf_logits(hf, text, kinds=zeros).numpy()  # (positions from 1 on the text path too)
    np.testing.assert_allclose(model(text, token_type_ids=zeros).numpy(), want_logits, rtol=1e-4,
                               atol=2e-6 * np.abs(want_logits).max())
    causal = _hf_logits(hf, text, mask=np.ones_like(text)).numpy() if name == "gemma2" else None
    if causal is not None:  # Gemma 2's decoder builds its masks: a prompt without token types is causal there
        np.testing.assert_allclose(model(text).numpy(), causal, rtol=1e-4, atol=2e-6 * np.abs(causal).max())


def test_save_pretrained_reads_back_in_transformers(checkpoints, tmp_path):
    path, hf = checkpoints["gemma2"]
    save_pretrained(from_pretrained(path), tmp_path)
    back = transformers.PaliGemmaForConditionalGeneration.from_pretrained(tmp_path).eval()
    want = _hf_logits(hf, IDS, MASK, PIXELS, KINDS).numpy()
    np.testing.assert_allclose(_hf_logits(back, IDS, MASK, PIXELS, KINDS).numpy(), want, rtol=1e-5, atol=1e-5)


def test_bad_inputs_and_configs_raise_clear_errors(checkpoints):
    path, _ = checkpoints["gemma"]
    model = from_pretrained(path)
    with pytest.raises(ValueError, match="token_type_ids must be integers .* of the input_ids' shape"):
        model(IDS, MASK, pixel_values=PIXELS, token_type_ids=KINDS[:, :3])
    with pytest.raises(ValueError, match="holds 8 image tokens .* but the 1 images give 4"):
        model(IDS, MASK, pixel_values=PIXELS[:1])
    base = dict(text_config=TEXTS["gemma"], vision_config=VISION, image_token_index=IMG, projection_dim=48)
    with pytest.raises(ValueError, match="a 'llama' text decoder is not supported"):
        PaliGemmaForConditionalGeneration({**base, "text_config": dict(TEXT, model_type="llama")})
    with pytest.raises(ValueError, match="projection_dim \\(40\\) must be the text decoder's hidden_size"):
        PaliGemmaForConditionalGeneration({**base, "projection_dim": 40})
