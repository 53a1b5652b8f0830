"""The graph-free prefill of an image-text prompt (models/hf/_image_prefill.py: the text decoder's layers as kernel
calls, its Linears on packed weights) on checkpoints written by transformers itself, odd sizes (hidden 44, head_dim
10, intermediate 37): LLaVA (a Llama decoder; a Mistral one with a sliding window of 4, narrower than the prompt),
Gemma 3 (its image blocks both ways through token_type_ids, a sliding window of 3) and PaliGemma (Gemma 1 and 2
decoders, a prefix-LM, positions from 1). Each no_grad forward equals the one through the decoder's Tensor path (that
prefill switched off; the vision tower is computed alike in both) bit for bit and transformers' within 1e-4, on a
left-padded batch and on a prompt with two images; the KV cache it fills equals the Tensor path's; the packed copies
follow a change of the weights; a frozen model's packed weights are used as they are."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import _image_text

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

IMG = 110
TEXT = dict(num_hidden_layers=2, hidden_size=44, num_attention_heads=4, num_key_value_heads=2, head_dim=10,
            intermediate_size=37, vocab_size=120, max_position_embeddings=128, initializer_range=0.3)
CLIP = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, image_size=14, patch_size=7, projection_dim=16)
SIGLIP = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=14,
              patch_size=7)
PIXELS = np.random.RandomState(0).randn(2, 3, 14, 14).astype(np.float32)
# 4 image tokens per image; the second row left-padded; then a prompt with two images
IDS = np.array([[5, 6, 111, IMG, IMG, IMG, IMG, 112, 7, 8, 9], [0, 0, 0, 111, IMG, IMG, IMG, IMG, 112, 9, 3]])
MASK = np.array([[1] * 11, [0, 0, 0] + [1] * 8])
TWO = np.array([[111, IMG, IMG, IMG, IMG, 112, 4, 111, IMG, IMG, IMG, IMG, 112, 17]])
PREFIX = np.array([[IMG, IMG, IMG, IMG, 2, 5, 6, 7, 1, 8, 9], [0, 0, IMG, IMG, IMG, IMG, 2, 9, 3, 1, 4]])
PREFIX_MASK = np.array([[1] * 11, [0, 0] + [1] * 9])


def _make(name):
    """transformers' model of each kind, with (token_type_ids of a prompt) -> the kinds its prompts take."""
    if name in ("llava", "llava_mistral"):
        text = dict(TEXT, model_type="llama") if name == "llava" else dict(TEXT, model_type="mistral",
                                                                             sliding_window=4)
        return transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
            text_config=text, vision_config=CLIP, image_token_index=IMG))
    if name == "gemma3":
        text = dict(TEXT, sliding_window=3, layer_types=["sliding_attention", "full_attention"])
        hf = transformers.Gemma3ForConditionalGeneration(transformers.Gemma3Config(
            text_config=text, vision_config=dict(SIGLIP, vision_use_head=False), mm_tokens_per_image=4,
            image_token_id=IMG, boi_token_id=111, eoi_token_id=112))
        with torch.no_grad():  # the projector's weight and norm are zeros at init: make them count
            hf.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.3)
            hf.model.multi_modal_projector.mm_soft_emb_norm.weight.normal_(0, 0.3)
        return hf
    text = dict(TEXT, model_type="gemma") if name == "paligemma" else dict(TEXT, model_type="gemma2",
                                                                            sliding_window=3)
    return transformers.PaliGemmaForConditionalGeneration(transformers.PaliGemmaConfig(
        text_config=text, vision_config=dict(SIGLIP, projection_dim=44), image_token_index=IMG, projection_dim=44))


NAMES = ["llava", "llava_mistral", "gemma3", "paligemma", "paligemma2"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for name in NAMES:
        torch.manual_seed(0)
        hf = _make(name).eval()
        path = tmp_path_factory.mktemp(name)
        hf.save_pretrained(path)
        out[name] = path, hf
    return out


def _cases(name):
    """(ids, mask, pixels, token_type_ids) of the prompts each model is tested on."""
    if name.startswith("paligemma"):
        kinds = np.array([[0] * 9 + [1, 1]] * 2)
        return [(PREFIX, PREFIX_MASK, PIXELS, kinds), (PREFIX, PREFIX_MASK, PIXELS, None)]
    types = name == "gemma3"
    cases = [(IDS, MASK, PIXELS, (IDS == IMG).astype(np.int64) if types else None),
             (TWO, np.ones_like(TWO), PIXELS, (TWO == IMG).astype(np.int64) if types else None)]
    return cases + [(IDS, MASK, PIXELS, None)] if types else cases  # Gemma 3 without token types: causal


def _hf_logits(hf, ids, mask, pixels, kinds):
    kw = {"attention_mask": mask, "pixel_values": pixels, "token_type_ids": kinds}
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), **{k: torch.tensor(v) for k, v in kw.items() if v is not None}
                  ).logits.numpy()


def _kw(pixels, kinds):
    return {"pixel_values": pixels} if kinds is None else {"pixel_values": pixels, "token_type_ids": kinds}


def _tensor_path(monkeypatch, model, *args, **kw) -> np.ndarray:
    """model(*args, **kw) under no_grad with the graph-free image prefill switched off: the decoder's Tensor path."""
    with monkeypatch.context() as m, fg.no_grad():
        m.setattr(_image_text, "image_prefill_applies", lambda *a: False)
        return model(*args, **kw).numpy()


def _took_the_packed_path(model) -> bool:
    """Whether the graph-free prefill ran: it keeps each decoder Linear's packed weight on the Linear."""
    return "_weight_cache" in model.model.layers[0].self_attn.q_proj.__dict__


@pytest.mark.parametrize("name", NAMES)
def test_no_grad_prefill_equals_the_tensor_path_and_transformers(checkpoints, name, monkeypatch):
    path, hf = checkpoints[name]
    model = from_pretrained(path)
    ids, mask, pixels, kinds = _cases(name)[0]
    model(ids, mask, **_kw(pixels, kinds))  # grad enabled: the Tensor path
    assert not _took_the_packed_path(model)
    for ids, mask, pixels, kinds in _cases(name):
        slow = _tensor_path(monkeypatch, model, ids, mask, **_kw(pixels, kinds))
        with fg.no_grad():
            fast = model(ids, mask, **_kw(pixels, kinds)).numpy()
        assert _took_the_packed_path(model)
        np.testing.assert_array_equal(fast, slow)
        want = _hf_logits(hf, ids, mask, pixels, kinds)
        real = mask == 1
        np.testing.assert_allclose(fast[real], want[real], rtol=1e-4, atol=2e-6 * np.abs(want).max())
        with fg.no_grad():  # generate's prefill: the last position only
            last = model(ids, mask, logits_to_keep=1, **_kw(pixels, kinds)).numpy()
        np.testing.assert_array_equal(last, _tensor_path(monkeypatch, model, ids, mask, logits_to_keep=1,
                                                         **_kw(pixels, kinds)))
        np.testing.assert_allclose(last, slow[:, -1:], rtol=1e-5, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("name", ["llava", "gemma3", "paligemma2"])
def test_prefill_fills_the_cache_as_the_tensor_path(checkpoints, name, monkeypatch):
    model = from_pretrained(checkpoints[name][0])
    ids, mask, pixels, kinds = _cases(name)[0]
    caches = [model.new_cache(ids.shape[0], ids.shape[1] + 3) for _ in range(2)]
    logits = [_tensor_path(monkeypatch, model, ids, mask, cache=caches[0], logits_to_keep=1, **_kw(pixels, kinds))]
    with fg.no_grad():
        logits.append(model(ids, mask, cache=caches[1], logits_to_keep=1, **_kw(pixels, kinds)).numpy())
    assert _took_the_packed_path(model)
    np.testing.assert_array_equal(logits[1], logits[0])
    assert caches[0].length == caches[1].length == ids.shape[1]
    for a, b in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_packed_weights_follow_a_change_of_the_weights(checkpoints, monkeypatch):
    model = from_pretrained(checkpoints["gemma3"][0])  # a tied LM head: the embedding's packed copy too
    ids, mask, pixels, kinds = _cases("gemma3")[0]
    kw = _kw(pixels, kinds)
    with fg.no_grad():
        before = model(ids, mask, **kw).numpy()
        for m in (model.model.layers[1].mlp.down_proj, model.model.embed_tokens):  # an in-place write each
            m.weight.mul_(1.5)
        after = model(ids, mask, **kw).numpy()
    np.testing.assert_array_equal(after, _tensor_path(monkeypatch, model, ids, mask, **kw))
    assert np.abs(after - before).max() > 1e-3
    model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})
    with fg.no_grad():
        loaded = model(ids, mask, **kw).numpy()
    np.testing.assert_array_equal(loaded, _tensor_path(monkeypatch, model, ids, mask, **kw))
    assert np.abs(loaded - after).max() > 1e-3


def test_a_frozen_model_uses_its_own_packed_weights(checkpoints, monkeypatch):
    model = from_pretrained(checkpoints["gemma3"][0])
    ids, mask, pixels, kinds = _cases("gemma3")[0]
    want = _tensor_path(monkeypatch, model, ids, mask, pixel_values=pixels, token_type_ids=kinds)
    frozen = fg.nn.utils.freeze(model)
    with fg.no_grad():
        got = frozen(ids, mask, pixel_values=pixels, token_type_ids=kinds).numpy()
    np.testing.assert_array_equal(got, want)
    assert not _took_the_packed_path(frozen)  # freeze's packed copies: nothing more kept


def test_a_decoder_past_the_packed_weights_budget_keeps_no_copies(checkpoints, monkeypatch):
    """FORGEGRAD_PACKED_WEIGHTS_MB bounds the decoder weights that keep packed copies (a multi-GB decoder must not
    double its memory on its first image prompt): past it, the graph-free prefill packs per call, the same bits."""
    model = from_pretrained(checkpoints["llava"][0])
    ids, mask, pixels, kinds = _cases("llava")[0]
    want = _tensor_path(monkeypatch, model, ids, mask, **_kw(pixels, kinds))
    monkeypatch.setenv("FORGEGRAD_PACKED_WEIGHTS_MB", "0.01")  # below this tiny decoder's weights
    with fg.no_grad():
        got = model(ids, mask, **_kw(pixels, kinds)).numpy()
    np.testing.assert_array_equal(got, want)
    assert not _took_the_packed_path(model)
    monkeypatch.setenv("FORGEGRAD_PACKED_WEIGHTS_MB", "a lot")
    with pytest.raises(ValueError, match="FORGEGRAD_PACKED_WEIGHTS_MB must be a number of megabytes"), fg.no_grad():
        model(ids, mask, **_kw(pixels, kinds))
