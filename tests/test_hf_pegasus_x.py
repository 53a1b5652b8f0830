"""PEGASUS-X (models/hf/pegasus_x.py) from checkpoints transformers wrote: a staggered encoder (even blocks, 3 layers)
and an unstaggered one (odd blocks, relu), odd head counts and widths, lengths that are not multiples of the block,
padding on the right, on the left and in the middle: encoder states at every position and logits, greedy / beam /
seeded sampling generation, float64 gradients of every parameter, save_pretrained, the sinusoidal positions at any
place, inputs shorter than a block and a long one, bfloat16 and int8 weights, the lean step and the paged server,
dropout and LayerDrop in training, and the errors of a bad config (the ONNX export: test_hf_onnx_block_local.py)."""
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

from hf_conformance import (check_lean_seq2seq_step, check_seq2seq_generation,  # noqa: E402
                            check_seq2seq_gradients, check_seq2seq_paged_server, seq2seq_logits, weight_variant)

VOCAB = 120
# d_model 30: 5 encoder heads of 6, 3 decoder heads of 10 (transformers' sinusoids need an even width)
_COMMON = dict(vocab_size=VOCAB, d_model=30, encoder_layers=3, decoder_layers=2, encoder_attention_heads=5,
               decoder_attention_heads=3, encoder_ffn_dim=37, decoder_ffn_dim=29, max_position_embeddings=300,
               dropout=0.0, init_std=0.3, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
CONFIGS = {"staggered": dict(block_size=4, num_global_tokens=3, stagger_local_blocks=True),
           "plain": dict(block_size=3, num_global_tokens=2, stagger_local_blocks=False, encoder_layers=2,
                         activation_function="relu")}


def _hf(kind, **extra):
    """A transformers model with every LayerNorm random (a misplaced or missing one is seen)."""
    torch.manual_seed(0)
    hf = transformers.PegasusXForConditionalGeneration(
        transformers.PegasusXConfig(**{**_COMMON, **CONFIGS[kind], **extra})).eval()
    with torch.no_grad():
        for m in hf.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    return hf


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(transformers model, forgegrad's from_pretrained of its checkpoint, the directory)."""
    hf = _hf(request.param)
    path = tmp_path_factory.mktemp("pegasus_x") / request.param
    hf.save_pretrained(path)
    return hf, from_pretrained(path), path


def _inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(2, VOCAB, (4, 11))  # 11: not a multiple of the blocks (4, 3)
    mask = np.ones((4, 11), np.int64)
    mask[1, 7:] = 0  # right padding
    mask[2, :4] = 0  # left padding
    mask[3, 3:5] = 0  # a hole
    dec = rng.randint(2, VOCAB, (4, 6))
    dec[:, 0] = 0
    return ids, mask, dec


def _encoder_states(hf, ids, mask):
    with torch.no_grad():
        return hf.model.encoder(input_ids=torch.tensor(ids),
                                attention_mask=torch.tensor(mask)).last_hidden_state.numpy()


def _check_encoder_and_logits(hf, model, ids, mask, dec):
    enc = _encoder_states(hf, ids, mask)  # every position, padding too (its rows are transformers' as well)
    np.testing.assert_allclose(model.encode(ids, mask).numpy(), enc, rtol=1e-4, atol=1e-4 * np.abs(enc).max())
    want = seq2seq_logits(hf, ids, mask, dec)
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    return want


def test_encoder_states_logits_and_save_pretrained_are_transformers(pair, tmp_path):
    hf, model, path = pair
    assert type(model).__name__ == "PegasusXForConditionalGeneration"
    ids, mask, dec = _inputs()
    want = _check_encoder_and_logits(hf, model, ids, mask, dec)
    save_pretrained(model, tmp_path / "saved")
    cfg = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert cfg["architectures"] == ["PegasusXForConditionalGeneration"] and cfg["model_type"] == "pegasus_x"
    back = transformers.PegasusXForConditionalGeneration.from_pretrained(tmp_path / "saved").eval()
    np.testing.assert_allclose(seq2seq_logits(back, ids, mask, dec), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    del cfg["architectures"]  # a config naming only its model_type
    (tmp_path / "saved" / "config.json").write_text(json.dumps(cfg))
    assert type(from_pretrained(tmp_path / "saved")).__name__ == "PegasusXForConditionalGeneration"


def test_greedy_beam_sampled_generation_and_lean_step_are_transformers(pair):
    from forgegrad.models.hf._decode_seq2seq import BartLeanStep
    hf, model, _ = pair
    ids, mask, _ = _inputs()
    check_seq2seq_generation(hf, model, ids, mask)
    check_lean_seq2seq_step(model, BartLeanStep, ids, mask, model.decoder.layers[0], steps=8, new_tokens=8)


def test_completions_server_on_the_paged_pool_gives_generates_tokens(pair, tmp_path):
    """(The decoder's positions computed per row on the paged kernel; sources up to 30 tokens, many blocks.)"""
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    _, model, path = pair
    check_seq2seq_paged_server(model, path, tmp_path, VOCAB, new_tokens=12)


def test_gradients_of_every_parameter_are_transformers_in_float64(pair):
    """(The global-token table, both encoder LayerNorms of every layer, the unbiased decoder projections.)"""
    hf, _, path = pair
    check_seq2seq_gradients(hf, from_pretrained(path), *_inputs(), prefix="model.")


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("length", [1, 2, 5, 67])
def test_short_and_long_inputs(kind, length, tmp_path):
    """Less than a block (the staggered layers' half blocks of padding around it), and 67 tokens: many blocks."""
    hf = _hf(kind)
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    rng = np.random.RandomState(length)
    ids, dec = rng.randint(2, VOCAB, (2, length)), _inputs()[2][:2]
    mask = np.ones((2, length), np.int64)
    if length > 1:
        mask[1, max(1, length // 3):] = 0
    _check_encoder_and_logits(hf, model, ids, mask, dec)


def test_sinusoidal_positions_are_transformers():
    """Equal up to float32 rounding (mostly bit for bit): where torch's float32 exp is an ulp off the correctly rounded
    frequency, far positions' angles differ by about the position times that ulp."""
    from transformers.models.pegasus_x import modeling_pegasus_x as ref

    from forgegrad.models.hf.pegasus_x import pegasus_x_positions
    for dim, start, length in [(30, 0, 11), (4, 7, 3), (64, 1000, 5), (768, 0, 4096)]:
        embeds = torch.zeros(1, length, dim)
        want = ref.PegasusXSinusoidalPositionalEmbedding(dim)(embeds, start)[0].numpy()
        got = pegasus_x_positions(start, length, dim)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 + 2e-8 * (start + length))


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_bfloat16_and_int8_weights_run_the_block_local_encoder_and_lean_step(pair, tmp_path, weights):
    """A bfloat16 checkpoint loaded as stored and an int8 weight-only model: the encoder's projections are their layers
    (states close to transformers' float32 ones), the lean step gives their Tensor decode's logits."""
    from forgegrad.models.hf._decode_seq2seq import BartLeanStep
    hf, _, path = pair
    model = weight_variant(hf, path, weights, tmp_path)
    ids, mask, _ = _inputs()
    projection = type(model.encoder.layers[0].self_attn.q_proj).__name__
    assert projection in ("WeightOnlyBF16Linear", "WeightOnlyInt8Linear")
    enc = _encoder_states(hf, ids, mask)
    np.testing.assert_allclose(model.encode(ids, mask).numpy(), enc, rtol=0, atol=0.05 * np.abs(enc).max())
    check_lean_seq2seq_step(model, BartLeanStep, ids, mask, model.decoder.layers[0], steps=6, new_tokens=6)


def test_bad_config_raises_naming_the_problem(pair, tmp_path):
    from forgegrad.models.hf import PegasusXForConditionalGeneration
    cfg = {**_COMMON, **CONFIGS["staggered"]}
    for key, value, message in [("block_size", 0, "block_size must be a positive integer"),
                                ("block_size", 3, "block_size must be even when stagger_local_blocks"),
                                ("num_global_tokens", -1, "num_global_tokens must be a positive integer"),
                                ("stagger_local_blocks", "yes", "stagger_local_blocks must be true or false"),
                                ("d_model", 31, "d_model must be an even integer"),
                                ("encoder_attention_heads", 4, "30 must be divisible by encoder_attention_heads 4")]:
        with pytest.raises(ValueError, match=message):
            PegasusXForConditionalGeneration({**cfg, key: value})
    PegasusXForConditionalGeneration({**cfg, "block_size": 3, "stagger_local_blocks": False})  # odd, unstaggered: fine
    _, _, path = pair
    saved = json.loads((path / "config.json").read_text())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({**saved, "num_global_tokens": 0}))
    (tmp_path / "bad" / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="num_global_tokens"):
        from_pretrained(tmp_path / "bad")


@pytest.mark.parametrize("key", ["attention_dropout", "dropout", "encoder_layerdrop"])
def test_training_applies_the_configs_dropout_and_layerdrop_to_the_encoder(key):
    """Training: the encoder's attention-weight dropout, dropout and LayerDrop draw from forgegrad's generator (a seed
    repeats the states, another seed changes them); eval mode leaves them out."""
    import forgegrad as fg
    from forgegrad.models.hf import PegasusXForConditionalGeneration
    model = PegasusXForConditionalGeneration({**_COMMON, **CONFIGS["staggered"], key: 0.5})
    ids, mask, _ = _inputs()
    model.eval()
    plain = model.encode(ids, mask).numpy()
    np.testing.assert_array_equal(model.encode(ids, mask).numpy(), plain)
    model.train()
    states = []
    for seed in (3, 3, 4):
        fg.manual_seed(seed)
        states.append(model.encode(ids, mask).numpy())
    np.testing.assert_array_equal(states[0], states[1])
    assert np.abs(states[0] - states[2]).max() > 1e-3 and np.abs(states[0] - plain).max() > 1e-3
