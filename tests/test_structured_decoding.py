"""Structured outputs in ``generate`` beyond greedy decoding of a decoder: beam search (each beam's grammar state
follows it as beams change places and split), encoder-decoders (T5; BART with its forced first and last tokens),
and a row whose grammar cannot go on (GrammarError), on tiny random checkpoints transformers wrote with a real
byte-level BPE tokenizer. Unconstrained, these models write no JSON, so each schema check can fail.

The beam-search reference is a processor with no state: every step it replays each row's whole output on a new
matcher. The processor under test keeps one matcher per distinct output and forks it as beams split, so the two
give the same sequences only if every row was given its own beam's state."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("llguidance")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

import forgegrad as fg  # noqa: E402
from forgegrad.models import from_pretrained, generate  # noqa: E402
from forgegrad.models.hf.constrained import (Grammar, GrammarError, GrammarLogitsProcessor, RowConstraint,  # noqa: E402
                                             grammar_tokenizer)
from forgegrad.models.hf.tokenizer import load_tokenizer  # noqa: E402

END = 1  # <|im_end|> of hf_conformance.chat_tokenizer
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 8}, "color": {"enum": ["red", "green", "blue"]},
    "age": {"type": "integer", "minimum": 0, "maximum": 120}, "member": {"type": "boolean"}},
    "required": ["name", "color", "age", "member"], "additionalProperties": False}


def valid_person(value) -> bool:
    return (isinstance(value, dict) and set(value) == set(PERSON["properties"]) and isinstance(value["name"], str)
            and len(value["name"]) <= 8 and value["color"] in ("red", "green", "blue")
            and type(value["age"]) is int and 0 <= value["age"] <= 120 and type(value["member"]) is bool)


def parses(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def _text(tok, row) -> str:
    """A generated row's text up to its first end token (special tokens dropped)."""
    row = [int(t) for t in row]
    return tok.decode(row[:row.index(END)] if END in row else row, skip_special_tokens=True)


class Replayed:
    """The reference: each row's whole output replayed on a new matcher at every step (no state kept), the row
    masked as GrammarLogitsProcessor masks it (after ``forced`` first tokens another processor forces); it also records
    every step's sequences."""

    def __init__(self, tok, grammar, vocab, forced=0):
        self.grammar, self.lltok, self.start, self.calls = grammar, grammar_tokenizer(tok, vocab, END), None, []
        self.forced = forced

    def __call__(self, sequences, scores):
        self.start = sequences.shape[1] if self.start is None else self.start
        self.calls.append(np.array(sequences))
        scores = np.array(scores, np.float32)
        for r, seq in enumerate(sequences):
            out = [int(t) for t in seq[self.start:]]
            if len(out) < self.forced:
                continue
            out = out[self.forced:]
            if END in out:
                kept, scores[r] = scores[r, END], -np.inf
                scores[r, END] = kept
                continue
            row = RowConstraint(self.grammar, self.lltok)
            if all(row.try_advance(t) for t in out):
                row.mask(scores[r])
            else:
                scores[r] = -np.inf
        return scores


def _moves(calls):
    """(steps where some row is not the same row's sequence of the step before plus one token, steps where two
    rows continue the same row of the step before): beams changing places, and beams splitting."""
    moved = split = 0
    for before, now in zip(calls, calls[1:]):
        parents = [next((i for i, b in enumerate(before) if np.array_equal(b, r[:-1])), None) for r in now]
        moved += any(p != i for i, p in enumerate(parents))
        split += len(set(parents)) < len(parents)
    return moved, split


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    from hf_conformance import tiny_chat_gpt2
    path = tiny_chat_gpt2(tmp_path_factory.mktemp("beams") / "gpt2", "")
    model = from_pretrained(path)
    return model, load_tokenizer(path, model.vocab_size, END)


def test_beam_search_under_a_schema(decoder):
    model, tok = decoder
    ids = [tok.encode("hello world, a tiny")]
    P = len(ids[0])
    beams = dict(max_new_tokens=70, num_beams=4, num_return_sequences=4, eos_token_id=END, do_sample=False)
    free = generate(model, ids, **beams)[:, P:]
    assert all(parses(_text(tok, r)) is None for r in free)  # the model alone writes no JSON
    grammar = Grammar.json_schema(PERSON)
    got = generate(model, ids, logits_processor=GrammarLogitsProcessor(tok, grammar, END, model.vocab_size),
                   **beams)[:, P:]
    texts = [_text(tok, r) for r in got]
    assert all(END in list(r) and valid_person(parses(t)) for r, t in zip(got, texts)), texts
    assert len(set(texts)) == 4  # four hypotheses, each valid
    reference = Replayed(tok, grammar, model.vocab_size)
    np.testing.assert_array_equal(got, generate(model, ids, logits_processor=reference, **beams)[:, P:])
    moved, split = _moves(reference.calls)
    assert moved > 0 and split > 0  # the beams did change places and split: a state bound to a place would differ
    greedy = generate(model, ids, max_new_tokens=70, eos_token_id=END,
                      logits_processor=GrammarLogitsProcessor(tok, grammar, END, model.vocab_size))[0, P:]
    assert valid_person(parses(_text(tok, greedy))) and _text(tok, greedy) != texts[0]


@pytest.mark.parametrize("sampled", [False, True])
def test_a_grammar_that_allows_every_token_changes_no_beam(decoder, sampled):
    """``<[*]>*`` allows every token at every step: beam search (and beam sampling, the same seed) under it gives
    the unconstrained hypotheses, all of them, over a run where the beams change places and split."""
    model, tok = decoder
    ids = [tok.encode("a tiny corpus"), tok.encode("hello")]
    mask = np.array([[1] * len(ids[0]), [0] * (len(ids[0]) - len(ids[1])) + [1] * len(ids[1])])
    ids[1] = [0] * (len(ids[0]) - len(ids[1])) + ids[1]
    beams = dict(attention_mask=mask, max_new_tokens=25, num_beams=3, num_return_sequences=3, eos_token_id=END,
                 do_sample=sampled)
    fg.manual_seed(5)
    free = generate(model, ids, **beams)
    process = GrammarLogitsProcessor(tok, Grammar.lark("start: <[*]>*"), END, model.vocab_size)
    seen = []
    fg.manual_seed(5)
    got = generate(model, ids, logits_processor=[lambda s, x: seen.append(np.array(s)) or x, process], **beams)
    np.testing.assert_array_equal(got, free)
    assert _moves(seen)[0] > 0 and _moves(seen)[1] > 0


def _seq2seq(kind, path):
    """A tiny random T5 or BART (forced first token 0 and forced end at the length limit, as bart-large-cnn) over
    hf_conformance's byte-level BPE tokenizer, its end token 1."""
    from hf_conformance import chat_tokenizer
    torch.manual_seed(0)
    if kind == "t5":
        hf = transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0,
            eos_token_id=END, pad_token_id=0, initializer_factor=2.0))
    else:
        hf = transformers.BartForConditionalGeneration(transformers.BartConfig(
            vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=512,
            dropout=0.0, init_std=0.3, eos_token_id=END, decoder_start_token_id=END, pad_token_id=2, bos_token_id=0))
        hf.generation_config.forced_bos_token_id, hf.generation_config.forced_eos_token_id = 0, END
    hf.save_pretrained(path)
    chat_tokenizer("").save_pretrained(path)
    model = from_pretrained(path)
    return model, load_tokenizer(path, model.vocab_size, END)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_encoder_decoder_under_a_schema(kind, tmp_path):
    model, tok = _seq2seq(kind, tmp_path / kind)
    ids = [tok.encode("hello world, a tiny")]
    start = model.decoder_start_token_id
    assert parses(_text(tok, generate(model, ids, max_new_tokens=60, eos_token_id=END)[0, 1:])) is None
    grammar = Grammar.json_schema(PERSON)
    for beams in (1, 3):
        got = generate(model, ids, max_new_tokens=70, num_beams=beams, eos_token_id=END,
                       logits_processor=GrammarLogitsProcessor(tok, grammar, END, model.vocab_size))[0]
        assert got[0] == start and (kind == "t5" or got[1] == 0)  # BART's forced first token, outside the grammar
        assert END in list(got) and valid_person(parses(_text(tok, got[1:]))), _text(tok, got[1:])
        if beams > 1:
            reference = Replayed(tok, grammar, model.vocab_size, forced=int(kind == "bart"))
            np.testing.assert_array_equal(got, generate(model, ids, max_new_tokens=70, num_beams=beams,
                                                        eos_token_id=END, logits_processor=reference)[0])
    if kind == "bart":  # the forced end at the length limit stands: the output stops there, incomplete
        full = generate(model, ids, max_new_tokens=70, eos_token_id=END,
                        logits_processor=GrammarLogitsProcessor(tok, grammar, END, model.vocab_size))[0]
        short = generate(model, ids, max_new_tokens=8, eos_token_id=END,
                         logits_processor=GrammarLogitsProcessor(tok, grammar, END, model.vocab_size))[0]
        assert list(short) == list(full[:8]) + [END] and END not in list(full[1:9])


def test_a_grammar_that_cannot_go_on_raises(decoder, tmp_path):
    """After "yes" the grammar allows only the end token, which min_length rules out: GrammarError names the
    conflict. After "yes" a tokenizer whose alphabet lacks "!" can spell nothing the grammar allows (llguidance would
    offer only the end token there: an incomplete answer); one that cannot read a tokenizer says so."""
    from hf_conformance import chat_tokenizer
    model, tok = decoder
    ids = [tok.encode("hello")]
    with pytest.raises(GrammarError, match="rule out every token the grammar allows after 'yes'"):
        generate(model, ids, max_new_tokens=10, min_length=len(ids[0]) + 5, eos_token_id=END,
                 logits_processor=GrammarLogitsProcessor(tok, Grammar.choice(["yes"]), END, model.vocab_size))
    chat_tokenizer("", "yes no maybe", every_byte=False).save_pretrained(tmp_path)
    narrow = grammar_tokenizer(load_tokenizer(tmp_path, 300, END), 300, END)
    row = RowConstraint(Grammar.regex("yes!"), narrow)
    for t in narrow.tokenize_str("yes"):
        assert row.mask(np.zeros(300, np.float32))[t] == 0
        row.advance(t)
    with pytest.raises(GrammarError, match="after 'yes': the tokenizer cannot spell what it requires next"):
        row.mask(np.zeros(300, np.float32))
    tokenizers = pytest.importorskip("tokenizers")
    words = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<end>": 0, "yes": 1}, unk_token="<end>"))
    with pytest.raises(ValueError, match="structured outputs cannot read this tokenizer"):
        grammar_tokenizer(words, 2, 0)


def test_fork_keeps_two_independent_states(decoder):
    model, tok = decoder
    lltok = grammar_tokenizer(tok, model.vocab_size, END)
    a = RowConstraint(Grammar.choice(["ab", "ac"]), lltok)
    a.advance(lltok.tokenize_str("a")[0])
    b = a.fork()
    b_token, c_token = lltok.tokenize_str("b")[0], lltok.tokenize_str("c")[0]
    b.advance(b_token)
    assert a.allowed()[b_token] and a.allowed()[c_token]  # the original did not move
    assert b.done and not b.allowed()[c_token] and b.allowed()[END]
    a.advance(c_token)
    assert a.done and b.history == [lltok.tokenize_str("a")[0], b_token]


def test_one_processor_serves_generate_calls_one_after_another(decoder):
    """A GrammarLogitsProcessor passed to several generate calls in turn (as transformers' processors are reused)
    starts over at each call's prompt, whatever its length: each call's answer is what a new processor gives (a
    longer prompt's tail had been taken for the grammar's output, a shorter one refused), greedy and with beams."""
    model, tok = decoder
    grammar = Grammar.choice(["yes", "no", "maybe so"])
    shared = GrammarLogitsProcessor(tok, grammar, END, model.vocab_size)
    for text, beams in (("hello", 1), ("hello world, a tiny", 1), ("a", 2), ("hello", 2), ("a tiny corpus", 1)):
        kw = dict(max_new_tokens=8, num_beams=beams, eos_token_id=END)
        ids = [tok.encode(text)]
        fresh = generate(model, ids, logits_processor=GrammarLogitsProcessor(tok, grammar, END, model.vocab_size),
                         **kw)
        assert _text(tok, fresh[0, len(ids[0]):]) in ("yes", "no", "maybe so")
        np.testing.assert_array_equal(generate(model, ids, logits_processor=shared, **kw), fresh, err_msg=text)


NARROW_CORPUS = ('{"name": "red", "color": "green", "age": 12, "member": true, "note": false} hello world 0123456789 '
                 'blue yes no [1, 2]')


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """A tiny random GPT-2 (transformers' and forgegrad's) whose byte-level BPE spells only its corpus's characters:
    not "~", so a grammar's branch that requires one is a dead end once a beam has taken it."""
    from hf_conformance import chat_tokenizer
    path = tmp_path_factory.mktemp("narrow") / "gpt2"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=300, n_positions=512, initializer_range=0.3,
        eos_token_id=END)).save_pretrained(path)
    chat_tokenizer("", NARROW_CORPUS, every_byte=False).save_pretrained(path)
    model = from_pretrained(path)
    return model, load_tokenizer(path, model.vocab_size, END), transformers.GPT2LMHeadModel.from_pretrained(path)


class TorchReplayed:
    """transformers' side of the reference: every row's output replayed on a new matcher each step, a row the grammar
    refused or that has no allowed token left (a dead end) all -inf, as a banned continuation."""

    def __init__(self, grammar, lltok):
        self.grammar, self.lltok, self.start = grammar, lltok, None

    def __call__(self, input_ids, scores):
        self.start = input_ids.shape[1] if self.start is None else self.start
        scores = scores.numpy().copy()
        for r, seq in enumerate(input_ids.tolist()):
            out = seq[self.start:]
            if END in out:
                kept, scores[r] = scores[r, END], -np.inf
                scores[r, END] = kept
                continue
            row = RowConstraint(self.grammar, self.lltok)
            try:
                if not all(row.try_advance(t) for t in out):
                    raise GrammarError("refused")
                row.mask(scores[r])
            except GrammarError:
                scores[r] = -np.inf
        return torch.from_numpy(scores)


def test_a_beam_whose_grammar_dies_is_dropped(narrow):
    """"red~" or "blue": a beam that took "red" cannot go on (the tokenizer cannot spell "~"). Beam search drops it
    (its scores -inf, as transformers' beam search treats a beam whose every continuation is banned) and returns the
    surviving beams' hypotheses: transformers' own beam search under the stateless reference gives the same tokens.
    Beam sampling drops it too. Greedy search, one row, still fails on the dead end."""
    from forgegrad.models.hf import beam_search
    model, tok, hf = narrow
    ids = [tok.encode("hello world")]
    P = len(ids[0])
    grammar = Grammar.choice(["red~", "blue"])
    lltok = grammar_tokenizer(tok, model.vocab_size, END)
    for beams in (3, 4):
        kw = dict(max_new_tokens=12, num_beams=beams, num_return_sequences=beams, eos_token_id=END, do_sample=False)
        with beam_search.recorded() as runs:
            got = generate(model, ids, logits_processor=GrammarLogitsProcessor(tok, grammar, END, model.vocab_size),
                           **kw)[:, P:]
        assert list(runs[0].dead) == [0] and "after 'red'" in str(runs[0].dead[0])  # a beam did die
        assert [_text(tok, r) for r in got] == ["blue"] * beams and list(runs[0].found) == [beams]
        want = hf.generate(torch.tensor(ids), attention_mask=torch.ones(1, P, dtype=torch.long), pad_token_id=END,
                           logits_processor=transformers.LogitsProcessorList([TorchReplayed(grammar, lltok)]), **kw)
        np.testing.assert_array_equal(got, want.numpy()[:, P:])
    fg.manual_seed(0)  # beam sampling drops the dead beam alike
    with beam_search.recorded() as runs:
        got = generate(model, ids, max_new_tokens=12, num_beams=4, num_return_sequences=4, eos_token_id=END,
                       do_sample=True, top_k=5, logits_processor=GrammarLogitsProcessor(tok, grammar, END,
                                                                                        model.vocab_size))[:, P:]
    assert list(runs[0].dead) == [0] and [_text(tok, r) for r in got] == ["blue"] * 4
    with pytest.raises(GrammarError, match="after 'red': the tokenizer cannot spell what it requires next"):
        generate(model, ids, max_new_tokens=12, eos_token_id=END,
                 logits_processor=GrammarLogitsProcessor(tok, Grammar.choice(["red~"]), END, model.vocab_size))


def test_beam_search_fails_only_when_every_beam_died(narrow):
    """With two beams both take "red" and die: the call fails with the dead end's GrammarError, as before; so does a
    grammar whose every branch dies. A hypothesis that ended before its sibling beams died stands: "red" of "red" or
    "red~" (which dies after "red")."""
    model, tok, _ = narrow
    ids = [tok.encode("hello world")]
    P = len(ids[0])

    def run(grammar, beams, prompts=ids):
        return generate(model, prompts, max_new_tokens=12, num_beams=beams, num_return_sequences=beams,
                        eos_token_id=END, logits_processor=GrammarLogitsProcessor(tok, grammar, END, model.vocab_size))

    with pytest.raises(GrammarError, match="after 'red': the tokenizer cannot spell what it requires next"):
        run(Grammar.choice(["red~", "blue"]), 2)
    for beams in (2, 4):
        with pytest.raises(GrammarError, match="after '(red|green)': the tokenizer cannot spell"):
            run(Grammar.choice(["red~", "green~"]), beams)
    got = run(Grammar.choice(["red", "red~"]), 3)[:, P:]
    assert _text(tok, got[0]) == "red" and END in list(got[0])
