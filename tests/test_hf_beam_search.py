"""generate(..., num_beams=K): the same sequences as transformers' beam search on checkpoints it wrote, for
decoders (GPT-2, Llama; left-padded batches, hypotheses that end early at an end-of-sequence token) and
encoder-decoders (T5; BART with its forced end token), over length penalties and the early-stopping modes."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained, generate
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 90
SETTINGS = [(3, 1.0, False), (4, 2.0, True), (2, 0.5, "never"), (5, -1.0, False)]


def _make(name):
    return hfc.tiny_generator(name, VOCAB)


@pytest.fixture(scope="module", params=["gpt2", "llama", "t5", "bart"])
def pair(request, tmp_path_factory):
    hf = _make(request.param).eval()
    path = tmp_path_factory.mktemp("beams") / request.param
    hf.save_pretrained(path)
    return request.param, hf, from_pretrained(path)


def _prompts():
    rng = np.random.RandomState(0)
    ids = rng.randint(3, VOCAB, (3, 7))
    mask = np.ones((3, 7), np.int64)
    return ids, mask


def test_beam_search_is_transformers(pair):
    name, hf, model = pair
    ids, mask = _prompts()
    seq2seq = name in ("t5", "bart")
    if seq2seq:
        mask[1, 4:], mask[2, 2:] = 0, 0  # encoders take right padding
        eos_choices = [None]  # the config's
    else:
        mask[1, :3], mask[2, :5] = 0, 0  # decoders take left padding
        greedy = generate(model, ids, max_new_tokens=15, attention_mask=mask)
        eos_choices = [None, int(greedy[0, 10]), int(greedy[1, 9])]  # some hypotheses end early
    ended_early = False
    for eos in eos_choices:
        for K, penalty, stopping in SETTINGS:
            kw = {} if seq2seq else {"eos_token_id": eos, "pad_token_id": VOCAB - 1}
            with torch.no_grad():
                want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=15,
                                   do_sample=False, num_beams=K, length_penalty=penalty, early_stopping=stopping,
                                   **kw).numpy()
            got = generate(model, ids, max_new_tokens=15, attention_mask=mask, num_beams=K, length_penalty=penalty,
                           early_stopping=stopping, **kw)
            np.testing.assert_array_equal(got, want, err_msg=f"eos {eos}, beams {K}, {penalty}, {stopping}")
            ended_early |= got.shape[1] < ids.shape[1] + 15
    if name == "gpt2":
        assert ended_early, "no setting ended before max_new_tokens: the test does not cover finished hypotheses"


def test_beam_search_arguments_are_checked(pair):
    _, _, model = pair
    ids, _ = _prompts()
    with pytest.raises(ValueError, match="streamer needs num_beams=1"):
        generate(model, ids, num_beams=2, streamer=lambda t: None)
    with pytest.raises(ValueError, match="early_stopping"):
        generate(model, ids, num_beams=2, early_stopping="sometimes")
    with pytest.raises(ValueError, match="num_beams must be a positive int"):
        generate(model, ids, num_beams=0)
    with pytest.raises(ValueError, match="length_penalty"):
        generate(model, ids, num_beams=2, length_penalty=float("nan"))


def test_beam_sampling(pair):
    """do_sample with num_beams (transformers' beam sampling): near temperature 0 the draws without replacement are
    the best continuations in order, so the sequences equal beam search's (transformers' torch.multinomial cannot
    show this: past the first draw every probability underflows to 0 and its later picks are arbitrary); at
    temperature 1 a seed repeats its sequences and other seeds explore others; top-k / top-p / min-p apply."""
    import forgegrad as fg
    _, _, model = pair
    ids, mask = _prompts()
    cold = dict(num_beams=3, do_sample=True, temperature=1e-6, top_k=None)
    got = generate(model, ids, max_new_tokens=10, attention_mask=mask, **cold)
    np.testing.assert_array_equal(got, generate(model, ids, max_new_tokens=10, attention_mask=mask, num_beams=3))
    warm = dict(num_beams=3, do_sample=True, top_k=20, top_p=0.9, min_p=0.05, num_return_sequences=2)
    fg.manual_seed(7)
    first = generate(model, ids, max_new_tokens=10, attention_mask=mask, **warm)
    fg.manual_seed(7)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=10, attention_mask=mask, **warm), first)
    assert first.shape[0] == 2 * ids.shape[0]
    others = [generate(model, ids, max_new_tokens=10, attention_mask=mask, **warm) for _ in range(3)]
    assert any(o.shape != first.shape or not np.array_equal(o, first) for o in others)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_no_repeat_ngrams_and_min_length_are_transformers(pair, num_beams):
    name, hf, model = pair
    ids, mask = _prompts()
    kw = {} if name in ("t5", "bart") else {"eos_token_id": int(generate(model, ids[:1], max_new_tokens=3)[0, -1]),
                                              "pad_token_id": VOCAB - 1}
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=14,
                           do_sample=False, num_beams=num_beams, no_repeat_ngram_size=2, min_length=12, **kw).numpy()
    got = generate(model, ids, max_new_tokens=14, attention_mask=mask, num_beams=num_beams, no_repeat_ngram_size=2,
                   min_length=12, **kw)
    np.testing.assert_array_equal(got, want)


def test_generation_config_json_sets_the_defaults_as_in_transformers(tmp_path):
    """A summarisation checkpoint's generation_config.json (bart-large-cnn's settings, scaled down) drives
    generate() without arguments, as it drives transformers' generate(); arguments still win."""
    import json
    hf = _make("bart").eval()
    hf.save_pretrained(tmp_path)
    settings = {"num_beams": 4, "length_penalty": 2.0, "early_stopping": True, "no_repeat_ngram_size": 3,
                "min_length": 8, "max_length": 16, "forced_bos_token_id": 0, "forced_eos_token_id": 2,
                "decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1, "bos_token_id": 0}
    (tmp_path / "generation_config.json").write_text(json.dumps(settings))
    hf = transformers.BartForConditionalGeneration.from_pretrained(tmp_path).eval()
    model = from_pretrained(tmp_path)
    ids, mask = _prompts()
    mask[1, 4:] = 0
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).numpy()
        greedy = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), num_beams=1,
                             max_new_tokens=10).numpy()
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask), want)
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, num_beams=1, max_new_tokens=10), greedy)
    assert want.shape[1] <= 16 and (want[:, 1] == 0).all()  # max_length and the forced first token


def test_processors_equal_transformers_processors_at_every_length():
    """Each processor against transformers' own on the same sequences and scores, at lengths around every
    boundary (min_length, the n-gram size, the forced first and last places)."""
    from transformers.generation import logits_process as lp

    from forgegrad.models.hf.logits_processors import LogitsProcessors
    rng = np.random.RandomState(0)
    for L in range(1, 12):
        seqs = rng.randint(0, 6, (4, L))  # a small alphabet: repeated n-grams
        scores = rng.standard_normal((4, 6)).astype(np.float32)
        theirs = [lp.NoRepeatNGramLogitsProcessor(3), lp.MinLengthLogitsProcessor(7, [2, 5]),
                  lp.ForcedBOSTokenLogitsProcessor(4), lp.ForcedEOSTokenLogitsProcessor(9, 2)]
        want = torch.tensor(scores)
        for proc in theirs:
            want = proc(torch.tensor(seqs), want)
        got = LogitsProcessors(3, 7, [2, 5], forced_bos=4, forced_eos=2, max_length=9)(seqs, scores)
        np.testing.assert_array_equal(got, want.numpy(), err_msg=f"length {L}")


def test_top_continuations_in_torch_topk_order():
    """The top-k of beam search's rows gives torch.topk's indices (transformers' beam search chooses with it), long
    rows (partial sort) and short ones (selection then sort), with ties (rounded values, -inf suppressed tokens,
    rows with fewer finite values than k, +inf end tokens), NaN first."""
    from forgegrad.models.hf.beam_search import _top
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(4096, 20000)) if trial % 2 else int(rng.integers(4, 400))
        k, rows = int(rng.integers(1, min(30, n) + 1)), int(rng.integers(1, 4))
        v = rng.standard_normal((rows, n)).astype(np.float32)
        if trial % 3 == 0:
            v = np.round(v, 1)  # many ties
        if trial % 5 == 0:
            v[:, rng.integers(0, n, n // 2)] = -np.inf
        if trial % 7 == 0:
            v[:, 3:] = -np.inf
        if trial % 4 == 1:
            v[:, rng.integers(0, n, 4)] = np.inf
        if trial % 11 == 0:
            v[:, rng.integers(0, n, 3)] = np.nan
        np.testing.assert_array_equal(_top(v, k), torch.topk(torch.from_numpy(v), k).indices.numpy())
