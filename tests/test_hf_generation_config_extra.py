"""generate's further generation_config.json settings, as transformers' generate takes them: suppress_tokens,
begin_suppress_tokens, bad_words_ids, sequence_bias, min_new_tokens, exponential_decay_length_penalty,
encoder_repetition_penalty, encoder_no_repeat_ngram_size, remove_invalid_values and renormalize_logits (greedy and
beam outputs token for token against transformers on tiny GPT-2, Llama, T5 and BART, the settings in
generation_config.json on one side and keyword arguments on the other), the typical-p, epsilon and eta warpers (one
step's processed scores against transformers' warpers; a sampled run that keeps one token equal to transformers'),
stop_strings (with the tokenizer: byte-level, byte-fallback and word-level vocabularies, refused where transformers
refuses them) and max_time; bad values named; generation_config.json's unread settings named
in one warning."""
import json
import warnings

import numpy as np
import pytest

from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf.sampling import Sampler, cutoff_filter, typical_filter
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

VOCAB = 90
NEW = 10


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``get(name)``: (name, the transformers model, its checkpoint directory), made once per model."""
    made = {}

    def get(name):
        if name not in made:
            hf = hfc.tiny_generator(name, VOCAB).eval()
            path = tmp_path_factory.mktemp("genextra") / name
            hf.save_pretrained(path)
            made[name] = name, hf, path
        return made[name]
    return get


@pytest.fixture(params=["gpt2", "llama", "t5", "bart"])
def pair(request, checkpoints):
    return checkpoints(request.param)


def _prompts(seq2seq):
    """Two prompts: a decoder's second one left-padded, an encoder's right-padded."""
    ids = np.random.RandomState(1).randint(3, VOCAB, (2, 7))
    mask = np.ones((2, 7), np.int64)
    if seq2seq:
        mask[1, 5:] = 0
    else:
        mask[1, :2] = 0
    return ids, mask


def _with_config(path, tmp_path, **settings):
    """A forgegrad model of the checkpoint at ``path`` whose generation_config.json also sets ``settings``."""
    file = path / "generation_config.json"
    config = json.loads(file.read_text()) if file.exists() else {}
    config.update(settings)
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    return from_pretrained(tmp_path)


def _hf(hf, ids, mask, **kw):
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).numpy()


def _ends(name):
    """The end and pad tokens both sides take (the encoder-decoders: their checkpoint's)."""
    return {} if name in ("t5", "bart") else {"eos_token_id": VOCAB - 2, "pad_token_id": VOCAB - 1}


def _run(model, ids, mask, start, num_beams):
    """(generate's arguments, its tokens) for a run whose first row ends early: the end token is the third token
    row 0 makes without one."""
    common = dict(max_new_tokens=NEW, num_beams=num_beams, pad_token_id=VOCAB - 1)
    free = generate(model, ids, attention_mask=mask, eos_token_id=None, **common)
    common["eos_token_id"] = int(free[0, start + 2])
    return common, generate(model, ids, attention_mask=mask, **common)


def _settings(plain, start):
    """Settings that change ``plain``'s tokens (rows of prompt + new tokens from ``start``), each alone: its first
    new token of row 0 suppressed everywhere, row 1's at the start, a bigram of row 0 a bad word, a bias on a
    two-token sequence and a one-token one, no end token before 6 new tokens and the end tokens' scores growing
    after 1, the prompt's tokens favoured and banned (its 1-grams), the scores renormalized (beam search ranks
    them)."""
    a, b = plain[0, start:], plain[1, start:]
    return {"suppress_tokens": [int(a[0])], "begin_suppress_tokens": [int(b[0])],
            "bad_words_ids": [[int(a[0]), int(a[1])], [int(VOCAB - 3)]],
            "sequence_bias": [[[int(a[0]), 7], 2.5], [[11], 4.0]], "min_new_tokens": 6,
            "exponential_decay_length_penalty": [1, 3.0], "encoder_repetition_penalty": 1.5,
            "encoder_no_repeat_ngram_size": 1, "renormalize_logits": True}


def _as_kwargs(settings):
    kw = dict(settings)
    kw["exponential_decay_length_penalty"] = tuple(kw["exponential_decay_length_penalty"])
    return kw


@pytest.mark.parametrize("num_beams", [1, 3])
def test_processors_match_transformers(pair, tmp_path, num_beams):
    """generation_config.json's settings (forgegrad) and the same as keyword arguments (transformers, and forgegrad
    on the plain checkpoint) give transformers' tokens, greedy and beam search."""
    name, hf, path = pair
    seq2seq = name in ("t5", "bart")
    ids, mask = _prompts(seq2seq)
    start = 1 if seq2seq else ids.shape[1]
    plain_model = from_pretrained(path)
    common, plain = _run(plain_model, ids, mask, start, num_beams)
    settings = _settings(plain, start)
    model = _with_config(path, tmp_path, **settings)
    got = generate(model, ids, attention_mask=mask, **common)
    want = _hf(hf, ids, mask, do_sample=False, **common, **_as_kwargs(settings))
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, plain)  # the settings changed the tokens
    np.testing.assert_array_equal(generate(plain_model, ids, attention_mask=mask, **common, **_as_kwargs(settings)),
                                  want)
    # None given: the setting is off whatever generation_config.json says
    off = {k: None for k in settings}
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, **common, **off), plain)


def test_begin_suppress_after_forced_bos(checkpoints, tmp_path):
    """With a forced first token, an encoder-decoder's begin_suppress_tokens apply to the token after it (as
    transformers' begin index)."""
    name, hf, path = checkpoints("bart")
    ids, mask = _prompts(True)
    plain = generate(from_pretrained(path), ids, attention_mask=mask, max_new_tokens=NEW, forced_bos_token_id=5)
    settings = {"begin_suppress_tokens": [int(plain[0, 2]), int(plain[1, 2])], "forced_bos_token_id": 5}
    got = generate(_with_config(path, tmp_path, **settings), ids, attention_mask=mask, max_new_tokens=NEW)
    np.testing.assert_array_equal(got, _hf(hf, ids, mask, max_new_tokens=NEW, do_sample=False, **settings))
    assert not np.array_equal(got, plain)


def test_remove_invalid_values_matches_transformers():
    """remove_invalid_values: NaN to 0 and +-inf to the float32 extremes (transformers' InfNanRemoveLogitsProcessor),
    before the suppressed tokens go to -inf."""
    from transformers.generation import logits_process as lp
    from forgegrad.models.hf.logits_processors import LogitsProcessors
    scores = np.random.RandomState(0).randn(2, 12).astype(np.float32)
    scores[0, 3], scores[1, 4], scores[1, 7] = np.nan, np.inf, -np.inf
    seqs = np.zeros((2, 3), np.int64)
    got = LogitsProcessors(remove_invalid_values=True, suppress_tokens=[5])(seqs, scores)
    chain = lp.LogitsProcessorList([lp.InfNanRemoveLogitsProcessor(), lp.SuppressTokensLogitsProcessor([5])])
    np.testing.assert_array_equal(got, chain(torch.tensor(seqs), torch.tensor(scores)).numpy())


@pytest.mark.parametrize("length", [1, 2, 5])
def test_processor_chain_matches_transformers(length):
    """One step of the processors in transformers' order on beam-like rows (2 prompts x 3 beams) whose sequences
    complete biased and banned sequences and repeat the prompts' n-grams, against transformers' processors."""
    from transformers.generation import logits_process as lp
    from forgegrad.models.hf.logits_processors import LogitsProcessors
    g = np.random.RandomState(length)
    V, eos = 30, [2, 4]
    prompts = g.randint(5, V, (2, 6))
    seqs = np.concatenate([np.repeat(prompts, 3, axis=0), g.randint(5, V, (6, length))], axis=1)
    seqs[0, -2:] = prompts[0, 2:4]  # row 0 repeats a bigram of its prompt
    seqs[4, -1] = 9  # rows 4 and 5 end with the prefixes of a biased and a banned sequence
    seqs[5, -2:] = [12, 13]
    scores = (g.randn(6, V) * 3).astype(np.float32)
    bias = {(9, 17): 3.0, (21,): -2.0, (5, 9, 18): 1.5}
    bad = [[12, 13, 14], [7], [4]]  # [4], an end token alone, is never banned
    L = seqs.shape[1]
    min_length = L + 1 if length == 1 else 0  # the end tokens banned, else growing (exponential decay)
    ours = LogitsProcessors(eos=eos, min_length=min_length, sequence_bias=bias, bad_words_ids=bad, encoder_ids=prompts,
                            encoder_repetition_penalty=1.7, encoder_no_repeat_ngram_size=3,
                            exponential_decay=(L - 2, 1.3), suppress_tokens=[3, V + 5], begin_suppress_tokens=[8],
                            begin_index=L)
    t_prompts = torch.tensor(prompts)
    theirs = lp.LogitsProcessorList([
        lp.SequenceBiasLogitsProcessor([[list(k), v] for k, v in bias.items()]),
        lp.EncoderRepetitionPenaltyLogitsProcessor(1.7, t_prompts),
        lp.EncoderNoRepeatNGramLogitsProcessor(3, t_prompts), lp.NoBadWordsLogitsProcessor(bad, eos),
        lp.MinLengthLogitsProcessor(min_length, eos), lp.ExponentialDecayLengthPenalty((0, 1.3), eos, L - 2),
        lp.SuppressTokensLogitsProcessor([3, V + 5]), lp.SuppressTokensAtBeginLogitsProcessor([8], L)])
    want = theirs(torch.tensor(seqs), torch.tensor(scores)).numpy()
    got = ours(seqs, scores)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (got != scores).any(axis=1).all()


def _warper_logits():
    g = np.random.RandomState(3)
    logits = (g.randn(4, 50) * 2).astype(np.float32)
    logits[1, :10] = -np.inf  # tokens already dropped
    logits[2] = logits[2] * 0.05  # a flat row (high entropy)
    return logits


@pytest.mark.parametrize("min_keep", [1, 3])
@pytest.mark.parametrize("which,value", [("typical", 0.5), ("typical", 0.95), ("epsilon", 0.02),
                                         ("epsilon", 0.3), ("eta", 0.02), ("eta", 0.3)])
def test_warpers_match_transformers(which, value, min_keep):
    from transformers.generation import logits_process as lp
    logits = _warper_logits()
    cls = {"typical": lp.TypicalLogitsWarper, "epsilon": lp.EpsilonLogitsWarper, "eta": lp.EtaLogitsWarper}[which]
    want = cls(value, min_tokens_to_keep=min_keep)(None, torch.tensor(logits)).numpy()
    got = (typical_filter(logits.astype(np.float64), value, min_keep) if which == "typical" else
           cutoff_filter(logits.astype(np.float64), value, which == "eta", min_keep))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    kept = ~np.isneginf(want)
    np.testing.assert_allclose(got[kept], want[kept], rtol=1e-6)
    assert (kept.sum(1) >= min_keep).all() and (kept.sum(1) < 50).any()
    # through the Sampler, after a temperature, as transformers' list of warpers
    sampler = Sampler(True, 0.7, **{"typical_p" if which == "typical" else f"{which}_cutoff": value})
    chain = lp.LogitsProcessorList([lp.TemperatureLogitsWarper(0.7), cls(value)])
    want = chain(None, torch.tensor(logits)).numpy()
    np.testing.assert_array_equal(np.isneginf(sampler.warp(logits)), np.isneginf(want))


@pytest.mark.parametrize("name", ["llama", "t5"])
@pytest.mark.parametrize("setting", [{"typical_p": 1e-9}, {"epsilon_cutoff": 0.999}])
def test_sampling_warpers_from_config(checkpoints, tmp_path, name, setting):
    """The config's warper when sampling: settings that keep one token a step make sampling deterministic, so the
    tokens equal transformers' token for token; greedy decoding ignores them."""
    name, hf, path = checkpoints(name)
    ids, mask = _prompts(name == "t5")
    model = _with_config(path, tmp_path, do_sample=True, **setting)
    got = generate(model, ids, attention_mask=mask, max_new_tokens=NEW, **_ends(name))
    want = _hf(hf, ids, mask, max_new_tokens=NEW, do_sample=True, **setting, **_ends(name))
    np.testing.assert_array_equal(got, want)
    greedy = generate(model, ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, **_ends(name))
    np.testing.assert_array_equal(greedy, _hf(hf, ids, mask, max_new_tokens=NEW, do_sample=False, **_ends(name)))


@pytest.fixture(scope="module")
def with_tokenizer(tmp_path_factory):
    """A tiny GPT-2 over a byte-level BPE of 280 tokens, both saved in one directory."""
    fast = hfc.chat_tokenizer(None)
    hf = hfc.tiny_generator("gpt2", len(fast)).eval()
    path = tmp_path_factory.mktemp("stopstrings")
    hf.save_pretrained(path)
    fast.save_pretrained(path)
    return hf, fast, path


@pytest.mark.parametrize("num_beams", [1, 3])
def test_stop_strings_match_transformers(with_tokenizer, num_beams):
    """A stop string across two new tokens ends its row (the row after it padded), greedy and beam, as
    transformers'; with the transformers tokenizer or load_tokenizer's."""
    from forgegrad.models.hf.tokenizer import load_tokenizer
    hf, fast, path = with_tokenizer
    model = from_pretrained(path)
    prompts = [fast.encode("hello world"), fast.encode("a tiny corpus")]
    ids = np.array([p[:min(map(len, prompts))] for p in prompts])
    mask = np.ones_like(ids)
    common = dict(max_new_tokens=12, num_beams=num_beams, eos_token_id=1, pad_token_id=1)
    plain = generate(model, ids, attention_mask=mask, **common)
    T = ids.shape[1]
    # the last character of row 0's 4th new token and the first of its 5th
    stop = fast.decode(plain[0, T + 3:T + 4])[-1:] + fast.decode(plain[0, T + 4:T + 5])[:1]
    want = _hf(hf, ids, mask, do_sample=False, stop_strings=[stop], tokenizer=fast, **common)
    assert not np.array_equal(want, plain)
    for tok in (fast, load_tokenizer(path, len(fast))):
        np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, stop_strings=stop, tokenizer=tok,
                                               **common), want)
    with pytest.raises(ValueError, match="stop_strings needs the tokenizer"):
        generate(model, ids, stop_strings=stop, **common)


@pytest.mark.parametrize("stops", [["lo wo"], ["rld", "tiny c"], ["ld,"], ["hello"], ["pus"], [" a t", "o"],
                                   ["world, a tiny corpus"]])
def test_stop_string_matches_transformers_criteria(with_tokenizer, stops):
    """Every prefix of a tokenized text: where a stop string ends inside the last token (overhanging either end of
    a token), as transformers' StopStringCriteria."""
    from transformers.generation.stopping_criteria import StopStringCriteria
    from forgegrad.models.hf.stopping import StopStrings
    from forgegrad.models.hf.tokenizer import load_tokenizer
    _, fast, path = with_tokenizer
    text = fast.encode("hello world, a tiny corpus for hello worlds")
    rows = np.array([[0] * (len(text) - n) + text[:n] for n in range(1, len(text) + 1)])  # left-padded prefixes
    want = StopStringCriteria(fast, stops)(torch.tensor(rows), None).numpy()
    assert want.any() and not want.all()
    for tok in (fast, load_tokenizer(path, len(fast))):
        np.testing.assert_array_equal(StopStrings(stops, tok)(rows), want)


@pytest.fixture(scope="module")
def byte_fallback_tokenizer(tmp_path_factory):
    """A Llama-style tokenizer (BPE with byte fallback: <0xNN> tokens for the bytes its vocabulary lacks, "▁" for
    spaces) as a transformers fast tokenizer, and its tokenizer.json's directory."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(["hello world, a tiny corpus for a tiny tokenizer"] * 10,
                            trainers.BpeTrainer(vocab_size=320, special_tokens=specials))
    path = tmp_path_factory.mktemp("bytefallback")
    tok.save(str(path / "tokenizer.json"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>"), path


@pytest.mark.parametrize("stops", [["w\u00f6"], ["\u00f6"], ["\u2603,"], ["lo w"], ["tiny c", "rld"]])
def test_stop_string_byte_fallback_matches_transformers(byte_fallback_tokenizer, stops):
    """A byte-fallback vocabulary's <0xNN> tokens count as their bytes (a character split over several tokens
    ends at its last byte), as transformers' StopStringCriteria."""
    from transformers.generation.stopping_criteria import StopStringCriteria
    from forgegrad.models.hf.stopping import StopStrings
    from forgegrad.models.hf.tokenizer import load_tokenizer
    fast, path = byte_fallback_tokenizer
    text = fast.encode("hello w\u00f6rld \u2603, a tiny corpus", add_special_tokens=False)
    assert fast.convert_ids_to_tokens(text).count("<0xC3>") == 1  # the vocabulary lacks "\u00f6"
    rows = np.array([[0] * (len(text) - n) + text[:n] for n in range(1, len(text) + 1)])
    want = StopStringCriteria(fast, stops)(torch.tensor(rows), None).numpy()
    assert want.any() and not want.all()
    for tok in (fast, load_tokenizer(path, len(fast))):
        np.testing.assert_array_equal(StopStrings(stops, tok)(rows), want)


def test_max_time_stops_every_row(checkpoints):
    """max_time: every row ends at the first step past it (transformers' MaxTimeCriteria), greedy and beam."""
    name, hf, path = checkpoints("gpt2")
    model = from_pretrained(path)
    ids, mask = _prompts(False)
    for beams in (1, 3):
        out = generate(model, ids, attention_mask=mask, max_new_tokens=NEW, num_beams=beams, max_time=1e-9)
        assert out.shape == (2, ids.shape[1] + 1)
        np.testing.assert_array_equal(out, _hf(hf, ids, mask, max_new_tokens=NEW, num_beams=beams, do_sample=False,
                                               max_time=1e-9, pad_token_id=0))


@pytest.mark.parametrize("name,value", [
    ("suppress_tokens", [1, -2]), ("suppress_tokens", "12"), ("begin_suppress_tokens", [1.5]),
    ("bad_words_ids", [[1], []]), ("bad_words_ids", [[VOCAB + 4]]), ("bad_words_ids", [3]),
    ("sequence_bias", [[[1, 2]]]), ("sequence_bias", {(1,): "x"}), ("sequence_bias", [[[VOCAB], 1.0]]),
    ("typical_p", 0.0), ("typical_p", 1.5), ("epsilon_cutoff", 1.0), ("eta_cutoff", -0.1),
    ("renormalize_logits", 1), ("remove_invalid_values", "yes"), ("exponential_decay_length_penalty", (3,)),
    ("exponential_decay_length_penalty", (-1, 1.5)), ("exponential_decay_length_penalty", (2, 0.0)),
    ("encoder_repetition_penalty", 0.0), ("encoder_no_repeat_ngram_size", -1), ("min_new_tokens", 2.5),
    ("stop_strings", ""), ("stop_strings", ["a", 3]), ("max_time", 0), ("max_time", "1")])
def test_bad_values_are_named(checkpoints, tmp_path, name, value):
    _, _, path = checkpoints("gpt2")
    ids = np.array([[5, 6, 7]])
    kw = {"do_sample": True} if name in ("typical_p", "epsilon_cutoff", "eta_cutoff") else {}
    with pytest.raises((ValueError, TypeError), match=f"generate: {name}"):
        generate(from_pretrained(path), ids, max_new_tokens=2, **kw, **{name: value})
    if isinstance(value, (list, int, float, str)):  # the same from generation_config.json
        with pytest.raises((ValueError, TypeError), match=f"generate: {name}"):
            generate(_with_config(path, tmp_path, **{name: value}), ids, max_new_tokens=2, **kw)


def test_unread_settings_warn_once(checkpoints, tmp_path):
    """generation_config.json's settings that change transformers' tokens and that generate does not read are
    named in one warning; their neutral values (older transformers wrote every default) and settings that do not
    change the tokens are not."""
    _, _, path = checkpoints("llama")
    ids = np.array([[5, 6, 7]])
    (tmp_path / "n").mkdir()
    neutral = _with_config(path, tmp_path / "n", num_beam_groups=1,
                           diversity_penalty=0.0, penalty_alpha=None, typical_p=1.0, epsilon_cutoff=0.0,
                           eta_cutoff=0.0, use_cache=True, output_scores=False, cache_implementation="static")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(neutral, ids, max_new_tokens=2)
    (tmp_path / "w").mkdir()
    model = _with_config(path, tmp_path / "w", num_beam_groups=2, diversity_penalty=0.5, penalty_alpha=0.6)
    with pytest.warns(UserWarning, match="diversity_penalty, num_beam_groups, penalty_alpha"):
        generate(model, ids, max_new_tokens=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(model, ids, max_new_tokens=2)  # once
    # an encoder-decoder's start token is config.json's: another one in generation_config.json is named
    _, _, t5_path = checkpoints("t5")
    (tmp_path / "t").mkdir()
    with pytest.warns(UserWarning, match="sets decoder_start_token_id, which"):
        generate(_with_config(t5_path, tmp_path / "t", decoder_start_token_id=3), ids, max_new_tokens=2)


def test_cli_honours_stop_strings_of_generation_config(with_tokenizer, tmp_path, capsys):
    """forgegrad generate passes its tokenizer: generation_config.json's stop_strings end the text (stop string
    included), and its suppress_tokens apply, as transformers' generate with the tokenizer gives them."""
    from forgegrad.cli import main
    hf, fast, path = with_tokenizer
    ids = fast.encode("hello world")
    plain = generate(from_pretrained(path), [ids], max_new_tokens=12, eos_token_id=1)[0, len(ids):]
    stop = fast.decode(plain[3:4])[-1:] + fast.decode(plain[4:5])[:1]
    settings = {"stop_strings": [stop], "suppress_tokens": [int(plain[0])], "eos_token_id": 1}
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    _with_config(path, ckpt, **settings)
    assert main(["generate", str(ckpt), "--prompt", "hello world", "--max-new-tokens", "12"]) == 0
    want = _hf(hf, np.array([ids]), np.ones((1, len(ids)), np.int64), max_new_tokens=12, do_sample=False,
               tokenizer=fast, stop_strings=[stop], suppress_tokens=[int(plain[0])], eos_token_id=1, pad_token_id=1)
    assert len(want[0]) < len(ids) + 12 and stop in fast.decode(want[0, len(ids):])  # the string ended it
    assert capsys.readouterr().out == "hello world" + fast.decode(want[0, len(ids):]) + "\n"


WORDS = "the a of to and in is it you that he was for on are with stop here go now".split()


def _word_level(path, *, spelled: bool):
    """A WordLevel tokenizer.json (whitespace-split words, no decoder) in the new directory ``path``, with the word
    "abcdef" (``spelled``: what transformers' StopStringCriteria reads each token's text after) or without it; and
    the same tokenizer as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {w: i for i, w in enumerate(WORDS + ["<unk>", "<eos>"] + (["abcdef"] if spelled else []))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    return path, transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), unk_token="<unk>",
                                                      eos_token="<eos>")


@pytest.mark.parametrize("stops", [["stop here"], ["here"], ["op he"], ["e", "zz"], ["now the"], ["he"],
                                   ["go now the a"]])
def test_stop_string_word_level_matches_transformers_criteria(tmp_path, stops):
    """A word-level vocabulary (each token's text " word", read after "abcdef" as transformers reads it): every
    prefix of a text stops where transformers' StopStringCriteria stops it, with the transformers tokenizer or
    load_tokenizer's."""
    from transformers.generation.stopping_criteria import StopStringCriteria
    from forgegrad.models.hf.stopping import StopStrings
    from forgegrad.models.hf.tokenizer import load_tokenizer
    path, fast = _word_level(tmp_path / "words", spelled=True)
    text = fast.encode("the stop here go now the a he stop there here", add_special_tokens=False)
    assert fast.unk_token_id in text  # "there": an unknown word, its token's text " <unk>"
    rows = np.array([[0] * (len(text) - n) + text[:n] for n in range(1, len(text) + 1)])
    want = StopStringCriteria(fast, stops)(torch.tensor(rows), None).numpy()
    assert want.any() and not want.all()
    for tok in (fast, load_tokenizer(path, len(fast))):
        np.testing.assert_array_equal(StopStrings(stops, tok)(rows), want)


def test_word_level_stop_strings_end_generation_as_transformers(tmp_path):
    """generate with a word-level tokenizer's stop string across two new tokens: the tokens transformers' generate
    gives (the row ends at the string)."""
    from forgegrad.models.hf.tokenizer import load_tokenizer
    path, fast = _word_level(tmp_path / "words", spelled=True)
    hf = hfc.tiny_generator("gpt2", len(fast)).eval()
    hf.save_pretrained(path)
    model = from_pretrained(path)
    ids = np.array([fast.encode("the stop here go", add_special_tokens=False)])
    mask = np.ones_like(ids)
    # no word twice (this tiny model repeats one otherwise), "abcdef" (never picked) as the end token
    end = fast.convert_tokens_to_ids("abcdef")
    common = dict(max_new_tokens=12, eos_token_id=end, pad_token_id=end, no_repeat_ngram_size=1)
    plain = generate(model, ids, attention_mask=mask, **common)
    T = ids.shape[1]
    stop = fast.decode(plain[0, T + 3:T + 5])  # the 4th and 5th new words, with the space between
    want = _hf(hf, ids, mask, do_sample=False, stop_strings=[stop], tokenizer=fast, **common)
    assert want.shape[1] == T + 5 < plain.shape[1]
    for tok in (fast, load_tokenizer(path, len(fast))):
        np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, stop_strings=stop, tokenizer=tok,
                                               **common), want)


def test_word_level_stop_strings_transformers_refuses_are_refused(tmp_path):
    """Where transformers' StopStringCriteria raises ValueError for a word-level tokenizer, so does forgegrad, before
    any token is generated: a vocabulary without the word "abcdef" (transformers: "substring not found"), stop
    strings no token can end."""
    from transformers.generation.stopping_criteria import StopStringCriteria
    from forgegrad.models.hf.stopping import StopStrings
    from forgegrad.models.hf.tokenizer import load_tokenizer
    unspelled, fast = _word_level(tmp_path / "unspelled", spelled=False)
    with pytest.raises(ValueError, match="substring not found"):
        StopStringCriteria(fast, ["stop here"])
    hfc.tiny_generator("gpt2", len(fast)).save_pretrained(unspelled)
    model = from_pretrained(unspelled)
    for tok in (fast, load_tokenizer(unspelled, len(fast))):
        with pytest.raises(ValueError, match="does not spell.*substring not found"):
            StopStrings(["stop here"], tok)
        steps = []
        with pytest.raises(ValueError, match="does not spell"):
            generate(model, [[0, 1]], max_new_tokens=4, stop_strings=["stop here"], tokenizer=tok,
                     streamer=steps.append)
        assert steps == []
    spelled, fast = _word_level(tmp_path / "spelled", spelled=True)
    with pytest.raises(ValueError, match="unable to identify tokens"):
        StopStringCriteria(fast, ["zz", "x!"])
    for tok in (fast, load_tokenizer(spelled, len(fast))):
        with pytest.raises(ValueError, match="no token of the tokenizer's vocabulary can end"):
            StopStrings(["zz", "x!"], tok)
        assert StopStrings(["zz", "now"], tok).strings  # one string that can match is enough, as transformers
    StopStringCriteria(fast, ["zz", "now"])


@pytest.mark.parametrize("stops,refused", [(["xe"], True), (["thee"], True), (["oe", "zz"], True), (["the"], False),
                                           (["he"], False), (["now the"], False), (["xe", "he"], False)])
def test_stop_strings_no_token_can_end_are_refused_as_transformers(tmp_path, stops, refused):
    """transformers refuses stop strings that no token can end: a token must hold the string's last character where
    the text before it in the token and the string agree ("xe" and "thee" with words " the", " he": the "e" is there,
    but after "th" / " t"), not merely hold the character; so does forgegrad, before any token."""
    from transformers.generation.stopping_criteria import StopStringCriteria
    from forgegrad.models.hf.stopping import StopStrings
    from forgegrad.models.hf.tokenizer import load_tokenizer
    path, fast = _word_level(tmp_path / "words", spelled=True)
    for tok in (fast, load_tokenizer(path, len(fast))):
        if refused:
            with pytest.raises(ValueError, match="unable to identify tokens"):
                StopStringCriteria(fast, stops)
            with pytest.raises(ValueError, match="no token of the tokenizer's vocabulary"):
                StopStrings(stops, tok)
        else:
            StopStringCriteria(fast, stops)
            assert StopStrings(stops, tok).strings
