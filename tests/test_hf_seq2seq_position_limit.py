"""An encoder-decoder with a position table (BART's family: learned, or Pegasus' sinusoidal rows) generates up to
max_position_embeddings new tokens, as transformers does: the decoder reads the start token and every new token but
the last, so the last needs no position; one more is refused up front, naming the limit. The completions server
checks the source and the answer each against its own stack's positions. ProphetNet (its predicting streams read one
row further) raises naming the decoder length and the limit where transformers reads past its table."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained, generate

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

POSITIONS = 16
_COMMON = dict(vocab_size=120, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
               decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=POSITIONS,
               dropout=0.0, init_std=0.3, eos_token_id=119, forced_eos_token_id=None)


@pytest.mark.parametrize("name", ["Pegasus", "BlenderbotSmall"])
def test_generates_max_position_embeddings_new_tokens_as_transformers(name, tmp_path):
    torch.manual_seed(0)
    hf = getattr(transformers, f"{name}ForConditionalGeneration")(getattr(transformers, f"{name}Config")(**_COMMON))
    hf.eval().save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    ids = np.arange(3, 3 + POSITIONS)[None].repeat(2, 0)  # the source fills the encoder's positions too
    for beams in (1, 3):
        with torch.no_grad():
            want = hf.generate(torch.tensor(ids), max_new_tokens=POSITIONS, num_beams=beams, eos_token_id=None).numpy()
        got = generate(model, ids, max_new_tokens=POSITIONS, num_beams=beams, eos_token_id=None)
        np.testing.assert_array_equal(got, want, err_msg=f"{beams} beams")
    assert want.shape == (2, 1 + POSITIONS)
    with pytest.raises(ValueError, match=f"exceed the model's {POSITIONS} positions"):
        generate(model, ids, max_new_tokens=POSITIONS + 1)
    with pytest.raises(ValueError, match=f"{hf.config.architectures[0]}: 17 tokens exceed max_position_embeddings"):
        model.encode(np.arange(3, 4 + POSITIONS)[None])


def test_completions_server_limits_the_source_and_the_answer_each_to_the_positions(tmp_path):
    """The completions server (paged engine, default pool) checks the source against the encoder's positions and
    max_tokens against the decoder's, apart (was their sum against one table: a full-length source could not be
    answered): a 16-token source with 16 new tokens is generate's answer; 17 of either is a 400 naming it."""
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    import httpx
    from serve_helpers import running_app
    from tokenizers import Tokenizer, models, pre_tokenizers

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    torch.manual_seed(0)
    hf = transformers.PegasusForConditionalGeneration(transformers.PegasusConfig(**_COMMON))
    hf.eval().save_pretrained(tmp_path)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(120)}, unk_token="w119"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    source = list(range(3, 3 + POSITIONS))
    want = [int(t) for t in generate(from_pretrained(tmp_path), [source], max_new_tokens=POSITIONS)[0, 1:]]
    want = " ".join(f"w{t}" for t in (want[:want.index(1)] if 1 in want else want))  # (the end token, 1, unshown)
    with running_app(create_completions_app(GenerationServeConfig(str(tmp_path), model_name="m"))) as url:
        def post(prompt, max_tokens):
            return httpx.post(url + "/v1/completions", timeout=60, json={
                "prompt": " ".join(f"w{t}" for t in prompt), "max_tokens": max_tokens, "temperature": 0})
        ok, long_source, long_answer = post(source, POSITIONS), post(source + [20], 4), post([5, 6], POSITIONS + 1)
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["text"].strip() == want
    for r, param in ((long_source, "prompt"), (long_answer, "max_tokens")):
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        assert r.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("pad", [0, 3])
def test_prophetnet_decoder_past_its_position_table_raises_naming_the_length_and_the_limit(pad, tmp_path):
    """ProphetNet's decoder place p reads position row pad_token_id + p + 1 and its predicting streams the next row, so
    a table of 16 rows holds 16 - pad_token_id - 2 places: at that length the logits are transformers', one more is
    transformers' IndexError and forgegrad's ValueError naming the length and the limit, in the forward, in cached
    steps and in generate (greedy, beam search, sampling)."""
    torch.manual_seed(0)
    hf = transformers.ProphetNetForConditionalGeneration(transformers.ProphetNetConfig(
        vocab_size=50, hidden_size=16, encoder_ffn_dim=20, decoder_ffn_dim=24, num_encoder_layers=1,
        num_decoder_layers=1, num_encoder_attention_heads=2, num_decoder_attention_heads=4,
        max_position_embeddings=POSITIONS, ngram=2, num_buckets=4, relative_max_distance=6, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, pad_token_id=pad, eos_token_id=1, decoder_start_token_id=0))
    hf.eval().save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    limit = POSITIONS - pad - 2
    ids = np.arange(5, 12)[None]
    dec = np.random.RandomState(0).randint(5, 50, (1, limit + 1))
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(ids), decoder_input_ids=torch.tensor(dec[:, :limit])).logits.numpy()
        with pytest.raises(IndexError):  # transformers reads past its table
            hf(input_ids=torch.tensor(ids), decoder_input_ids=torch.tensor(dec))
    np.testing.assert_allclose(model(ids, None, dec[:, :limit]).numpy(), want, rtol=1e-4, atol=1e-4)
    message = (f"{limit + 1} decoder tokens \\(0 cached \\+ {limit + 1} given\\) exceed the {limit} decoder places "
               f"max_position_embeddings {POSITIONS} holds with pad_token_id {pad}")
    for run in (lambda: model(ids, None, dec), lambda: model.ngram_logits(ids, None, dec),
                lambda: model.loss(ids, None, labels=dec)):
        with pytest.raises(ValueError, match=message):
            run()
    states, cache = model.encode(ids), model.new_cache(1, limit + 1)
    model.decode(dec[:, :limit], states, cache=cache)
    with pytest.raises(ValueError, match=f"{limit + 1} decoder tokens \\({limit} cached \\+ 1 given\\) exceed the "
                                         f"{limit} decoder places"):
        model.decode(dec[:, limit:], states, cache=cache)
    assert generate(model, ids, max_new_tokens=limit, min_new_tokens=limit).shape == (1, 1 + limit)
    for kw in (dict(num_beams=1), dict(num_beams=2), dict(do_sample=True)):
        with pytest.raises(ValueError, match=f"max_new_tokens \\({limit + 1}\\) exceed the model's {limit} positions"):
            generate(model, ids, max_new_tokens=limit + 1, **kw)
