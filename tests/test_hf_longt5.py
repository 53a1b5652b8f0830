"""LongT5 (models/hf/longt5.py) from checkpoints transformers wrote, both encoder attention types: the local encoder
(relu feed-forward) and the transient-global one (gated-gelu), odd widths, lengths that are not multiples of the
block or the global block, padding on the right, on the left and in the middle: encoder states at every position and
logits, greedy / beam / seeded sampling generation and the lean decode step (bfloat16 and int8 weights too), the
completions server on the paged pool, float64 gradients of every parameter,
save_pretrained, the block layout against transformers' own helpers (a long sequence whose global block ids turn on
float32 rounding), inputs shorter than a block or a global block and a long one, and the errors of a bad config
and of the ONNX export of a config it cannot trace (its export: test_hf_onnx_block_local.py)."""
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

from hf_conformance import (check_lean_seq2seq_step, check_seq2seq_generation,  # noqa: E402
                            check_seq2seq_gradients, check_seq2seq_paged_server, seq2seq_logits,
                            weight_variant)

VOCAB = 120
# 8 buckets up to distance 12: the local blocks' distances (up to 2L - 1) and the global ones reach the logarithmic
# buckets; d_model 21 and 3 heads of 5: nothing a power of two (transformers' generate needs as many decoder layers as
# encoder layers: num_decoder_layers is not varied)
_COMMON = dict(vocab_size=VOCAB, d_model=21, d_kv=5, d_ff=30, num_layers=2, num_heads=3,
               relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.0,
               decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
CONFIGS = {"local": dict(encoder_attention_type="local", local_radius=2, feed_forward_proj="relu"),
           "transient-global": dict(encoder_attention_type="transient-global", local_radius=1, global_block_size=3,
                                    feed_forward_proj="gated-gelu", num_layers=3)}


def _hf(kind, **extra):
    torch.manual_seed(0)
    cfg = transformers.LongT5Config(**{**_COMMON, **CONFIGS[kind], **extra})
    return transformers.LongT5ForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(transformers model, forgegrad's from_pretrained of its checkpoint, the directory)."""
    hf = _hf(request.param)
    path = tmp_path_factory.mktemp("longt5") / request.param
    hf.save_pretrained(path)
    return hf, from_pretrained(path), path


def _inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(2, VOCAB, (4, 11))  # 11: neither a multiple of the blocks (3, 2) nor of the global block (3)
    mask = np.ones((4, 11), np.int64)
    mask[1, 7:] = 0  # right padding
    mask[2, :4] = 0  # left padding: the global blocks' ids stay by position
    mask[3, 3:5] = 0  # a hole
    dec = rng.randint(2, VOCAB, (4, 6))
    dec[:, 0] = 0
    return ids, mask, dec


def _encoder_states(hf, ids, mask):
    with torch.no_grad():
        return hf.encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()


def test_encoder_states_logits_and_save_pretrained_are_transformers(pair, tmp_path):
    hf, model, path = pair
    assert type(model).__name__ == "LongT5ForConditionalGeneration"
    ids, mask, dec = _inputs()
    enc = _encoder_states(hf, ids, mask)  # every position, padding too (its rows are transformers' as well)
    np.testing.assert_allclose(model.encode(ids, mask).numpy(), enc, rtol=1e-4, atol=1e-4 * np.abs(enc).max())
    want = seq2seq_logits(hf, ids, mask, dec)
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    save_pretrained(model, tmp_path / "saved")
    cfg = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert cfg["architectures"] == ["LongT5ForConditionalGeneration"] and cfg["model_type"] == "longt5"
    back = transformers.LongT5ForConditionalGeneration.from_pretrained(tmp_path / "saved").eval()
    np.testing.assert_allclose(seq2seq_logits(back, ids, mask, dec), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    del cfg["architectures"]  # a config naming only its model_type
    (tmp_path / "saved" / "config.json").write_text(json.dumps(cfg))
    assert type(from_pretrained(tmp_path / "saved")).__name__ == "LongT5ForConditionalGeneration"


def test_greedy_beam_sampled_generation_and_lean_step_are_transformers(pair):
    from forgegrad.models.hf._decode_seq2seq import T5LeanStep
    hf, model, _ = pair
    ids, mask, _ = _inputs()
    check_seq2seq_generation(hf, model, ids, mask)
    check_lean_seq2seq_step(model, T5LeanStep, ids, mask, model.decoder.block[0], steps=8, new_tokens=8)


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_bfloat16_and_int8_weights_run_the_block_local_encoder_and_lean_step(pair, tmp_path, weights):
    """A bfloat16 checkpoint loaded as stored and an int8 weight-only model: the encoder's projections are their layers
    (states close to transformers' float32 ones), the lean step gives their Tensor decode's logits."""
    from forgegrad.models.hf._decode_seq2seq import T5LeanStep
    hf, _, path = pair
    model = weight_variant(hf, path, weights, tmp_path)
    ids, mask, _ = _inputs()
    enc = _encoder_states(hf, ids, mask)
    projection = type(model.encoder.block[0].layer[0].attention.q).__name__
    assert projection in ("WeightOnlyBF16Linear", "WeightOnlyInt8Linear")
    np.testing.assert_allclose(model.encode(ids, mask).numpy(), enc, rtol=0, atol=0.05 * np.abs(enc).max())
    check_lean_seq2seq_step(model, T5LeanStep, ids, mask, model.decoder.block[0], steps=6, new_tokens=6)


def test_gradients_of_every_parameter_are_transformers_in_float64(pair):
    """(transient-global: the global bias table and every layer's global_input_layer_norm.)"""
    hf, _, path = pair
    check_seq2seq_gradients(hf, from_pretrained(path), *_inputs())


def test_completions_server_on_the_paged_pool_gives_generates_tokens(pair, tmp_path):
    """(The decoder is T5's on the paged kernel; the sources, up to 30 tokens, through the block-local encoder.)"""
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    _, model, path = pair
    check_seq2seq_paged_server(model, path, tmp_path, VOCAB, new_tokens=12)


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("length", [1, 2, 4, 257])
def test_short_and_long_inputs(kind, length, tmp_path):
    """One block (or none whole), no global token (length < 3) or one; and 257 tokens: many blocks and 85 global
    tokens, whose distances pass the last bucket: transformers' encoder states and logits."""
    hf = _hf(kind)
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    rng = np.random.RandomState(length)
    ids, dec = rng.randint(2, VOCAB, (2, length)), _inputs()[2][:2]
    mask = np.ones((2, length), np.int64)
    if length > 1:
        mask[1, max(1, length // 3):] = 0
    enc = _encoder_states(hf, ids, mask)
    np.testing.assert_allclose(model.encode(ids, mask).numpy(), enc, rtol=1e-4, atol=1e-4 * np.abs(enc).max())
    want = seq2seq_logits(hf, ids, mask, dec)
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_block_layout_is_transformers():
    """The local mask and the global block ids and holdings equal transformers' helpers; a 1303-token sequence with
    global blocks of 100 gets ids where transformers' float32 sums round away from position // 100."""
    from transformers.models.longt5 import modeling_longt5 as ref

    from forgegrad.models.hf.longt5 import local_block_mask, transient_global_blocks
    rng = np.random.RandomState(3)
    for T, L, block in [(11, 3, 3), (7, 1, 2), (1303, 5, 100), (40, 8, 7)]:
        mask = (rng.rand(3, T) > 0.2).astype(np.int64)
        mask[0] = 1
        mask[1, T // 2:] = 0
        want = ref._get_local_attention_mask(torch.tensor(mask), L, "cpu").numpy()  # (B, 1, nb, L, 3L) bool
        got = local_block_mask(mask.astype(bool), L)  # (B, nb, 1, L, 3L) additive
        np.testing.assert_array_equal(got.transpose(0, 2, 1, 3, 4) == 0, want)
        want_ids, want_holds = (t.numpy() for t in ref._make_global_fixed_block_ids(torch.tensor(mask), block))
        ids, holds = transient_global_blocks(mask.astype(bool), block)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(holds, want_holds.astype(bool))
        if block == 100:
            assert (ids[0] != np.minimum(np.arange(T) // 100, 12)).any()  # the rounding matters here


def test_bad_config_and_onnx_export_raise_naming_the_problem(pair, tmp_path):
    from forgegrad.models.hf import LongT5ForConditionalGeneration, export_seq2seq
    cfg = {**_COMMON, "encoder_attention_type": "global"}
    with pytest.raises(ValueError, match="encoder_attention_type.*'local', 'transient-global'.*'global'"):
        LongT5ForConditionalGeneration(cfg)
    with pytest.raises(ValueError, match="local_radius"):
        LongT5ForConditionalGeneration({**_COMMON, "local_radius": -1})
    with pytest.raises(ValueError, match="global_block_size"):
        LongT5ForConditionalGeneration({**_COMMON, "encoder_attention_type": "transient-global",
                                        "global_block_size": 0})
    _, model, path = pair
    saved = json.loads((path / "config.json").read_text())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({**saved, "encoder_attention_type": "globe"}))
    (tmp_path / "bad" / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="encoder_attention_type"):
        from_pretrained(tmp_path / "bad")
    # the global blocks as long as the local ones: floor(T / L) and ceil(T / L) - 1 agree at every traced length
    same = LongT5ForConditionalGeneration({**_COMMON, **CONFIGS["transient-global"], "local_radius": 2,
                                           "global_block_size": 3})
    with pytest.raises(NotImplementedError, match="global_block_size equal to local_radius \\+ 1 \\(3\\)"):
        export_seq2seq(same, tmp_path / "onnx")
