"""Structured outputs on Whisper's decoder (``generate(..., logits_processor=GrammarLogitsProcessor(...))``) against
transformers' Whisper generate given a brute-force reference processor: at every step it replays each row's text
tokens (the ids below <|endoftext|>) since the window's prompt on a new matcher, masks the text the grammar does not
allow and the end token until the grammar is complete, and leaves Whisper's other special tokens (timestamps) alone.
The processor under test keeps one matcher per text and forks it as beams split, so the two agree only if every row
reads its own state. Greedy, beam search, timestamps, long-form windows with the fallback's thresholds (read under
the grammar), sampled fallback attempts, and a grammar that allows everything (no change).

The checkpoint: build_whisper's tiny random Whisper (timestamp layout) over a byte-level BPE of 100 text tokens (a
small alphabet: no capital letters) and Whisper's special tokens after them. The random model writes special tokens
mid-text; the "clean" copy suppresses every special token but the end, so that its windows are text only."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("llguidance")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from test_hf_whisper_timestamps import _same  # noqa: E402
from test_structured_decoding import _moves, parses  # noqa: E402
from whisper_helpers import EOS, MELS, SPECIAL, START, build_whisper  # noqa: E402

import forgegrad as fg  # noqa: E402
from forgegrad.models import from_pretrained  # noqa: E402
from forgegrad.models.hf.constrained import Grammar, GrammarError, GrammarLogitsProcessor, RowConstraint  # noqa: E402
from forgegrad.models.hf.tokenizer import load_tokenizer  # noqa: E402

CORPUS = ('the 12 cats sat on 345 mats, {"n": 67, "ok": true, "name": "bob"} yes no maybe 890 hello world a tiny '
          'corpus for a tiny tokenizer: numbers 2024 and 1999, [1, 2, 3] null false')
VOCAB = 100 + len(SPECIAL)  # 100 text tokens, then <|endoftext|> ... <|1.00|>
DIGITS = " ?[0-9]+( [0-9]+)*"
ANSWERS = [" yes", " no", " maybe"]
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["n"]}


def grammar_whisper(path):
    """build_whisper's checkpoint (64 decoder positions) with a byte-level BPE tokenizer.json: CORPUS's characters and
    merges as ids 0-99, Whisper's special tokens from 100."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.train_from_iterator([CORPUS] * 10, tokenizers.trainers.BpeTrainer(vocab_size=100, initial_alphabet=[]))
    assert tok.get_vocab_size() == 100
    tok.add_special_tokens(SPECIAL)
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    return build_whisper(path, vocab_size=VOCAB, max_target_positions=64)


def clean_copy(path, to):
    """``path`` copied to ``to`` with every special token but the end suppressed: the windows are text only."""
    shutil.copytree(path, to)
    file = to / "generation_config.json"
    settings = json.loads(file.read_text())
    settings["suppress_tokens"] = sorted(set(settings["suppress_tokens"]) | set(range(START, VOCAB)))
    file.write_text(json.dumps(settings))
    return to


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"raw": (forgegrad model, transformers model, tokenizer), "clean": the same for clean_copy}."""
    raw = grammar_whisper(tmp_path_factory.mktemp("grammar") / "raw")
    out = {}
    for name, path in (("raw", raw), ("clean", clean_copy(raw, raw.parent / "clean"))):
        model = from_pretrained(path)
        out[name] = (model, transformers.WhisperForConditionalGeneration.from_pretrained(path).eval(),
                     load_tokenizer(path, model.vocab_size, EOS))
    return out


class Replayed(transformers.LogitsProcessor):
    """The reference (see the module): stateless, each row's text replayed from the window's prompt at every step
    (a call that is not one token longer than the last starts a window or a fallback attempt); it records every
    step's sequences."""

    def __init__(self, tok, grammar):
        self.lltok = GrammarLogitsProcessor(tok, grammar, EOS, VOCAB).lltokenizer
        self.grammar, self.start, self.last, self.calls, self.seen = grammar, 0, None, [], {}

    def __call__(self, input_ids, scores):
        ids = input_ids.numpy()
        if self.last is None or ids.shape[1] != self.last + 1:
            self.start = ids.shape[1]
        self.last = ids.shape[1]
        self.calls.append(ids.copy())
        scores = scores.clone()
        for r, row in enumerate(ids[:, self.start:].tolist()):
            if EOS in row:
                continue
            allowed = self._allowed(tuple(t for t in row if t < EOS))
            if allowed is None:
                scores[r] = -float("inf")
            else:
                scores[r, :EOS + 1][~allowed] = -float("inf")
        return scores

    def _allowed(self, text):
        """The text and end tokens allowed after ``text`` (None: the grammar refuses it), a new matcher's; kept by
        text (a function of the text alone: the same answer, once)."""
        if text not in self.seen:
            state = RowConstraint(self.grammar, self.lltok)
            try:
                self.seen[text] = torch.tensor(state.allowed()[:EOS + 1]) if all(
                    state.try_advance(t) for t in text) else None
            except GrammarError:  # a dead end: every token banned, as transformers' beam search drops a beam
                self.seen[text] = None
        return self.seen[text]


def _texts(tok, rows):
    return [tok.decode([int(t) for t in row if t < EOS]) for row in rows]


def _features(batch, frames, seed):
    return np.random.default_rng(seed).standard_normal((batch, MELS, frames)).astype(np.float32)


def _matches(kind, text) -> bool:
    if kind == "regex":
        return re.fullmatch(DIGITS, text) is not None
    if kind == "choice":
        return text in ANSWERS
    value = parses(text)
    return isinstance(value, dict) and set(value) == {"n"} and type(value["n"]) is int and 0 <= value["n"] <= 99


GRAMMARS = {"regex": lambda: Grammar.regex(DIGITS), "choice": lambda: Grammar.choice(ANSWERS),
            "json": lambda: Grammar.json_schema(SCHEMA)}


@pytest.mark.parametrize("kind,checkpoint,kwargs", [
    ("regex", "clean", dict(max_new_tokens=20)),
    ("choice", "clean", dict(max_new_tokens=20, num_beams=3)),
    ("json", "clean", dict(max_new_tokens=30, num_beams=2)),
    ("json", "raw", dict(max_new_tokens=30, return_timestamps=True)),
    ("choice", "raw", dict(max_new_tokens=30, num_beams=3, return_timestamps=True)),
    ("regex", "raw", dict(max_new_tokens=30, num_beams=2)),  # timestamps the model writes cut the windows
], ids=["regex-greedy", "choice-beams", "json-beams", "json-timestamps", "choice-beams-timestamps", "regex-raw-beams"])
def test_grammar_is_transformers_under_the_brute_force_reference(checkpoints, kind, checkpoint, kwargs):
    model, hf, tok = checkpoints[checkpoint]
    x = _features(2, 100, seed=1)
    grammar = GRAMMARS[kind]()
    free = model.generate(x, language="en", **kwargs)
    ours = model.generate(x, language="en", logits_processor=GrammarLogitsProcessor(tok, grammar, EOS, VOCAB),
                          **kwargs)
    reference = Replayed(tok, grammar)
    theirs = hf.generate(torch.tensor(x), language="en", logits_processor=transformers.LogitsProcessorList([reference]),
                         **kwargs).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert not any(_matches(kind, t) for t in _texts(tok, free))  # unconstrained, the model writes none of these
    if checkpoint == "clean":  # one window of text, ended where the grammar is complete
        assert all(_matches(kind, t) for t in _texts(tok, ours)), _texts(tok, ours)
    if kwargs.get("return_timestamps"):
        assert (ours > EOS).any()  # the timestamps, outside the grammar
    if kwargs.get("num_beams", 1) > 1:
        moved, split = _moves(reference.calls)
        assert moved > 0 and split > 0  # the beams changed places and split: a state bound to a place would differ


@pytest.mark.parametrize("num_beams", [1, 2])
def test_long_form_fallback_thresholds_read_the_constrained_scores(checkpoints, num_beams):
    """Long-form windows, decoded again or skipped as silence on their mean log-probability, which transformers reads
    from the scores after the grammar: some windows skipped, others not, and not those of the unconstrained run."""
    model, hf, tok = checkpoints["raw"]
    x = _features(2, 350, seed=0)
    mask = np.ones((2, 350), np.int64)
    mask[1, 230:] = 0
    kwargs = dict(language="en", max_new_tokens=16, num_beams=num_beams, return_segments=True,
                  temperature=(0.0, 0.0), logprob_threshold=-0.8, no_speech_threshold=0.0001)
    grammar = Grammar.regex(DIGITS)
    ours = model.generate(x, attention_mask=mask, logits_processor=GrammarLogitsProcessor(tok, grammar, EOS, VOCAB),
                          **kwargs)
    theirs = hf.generate(torch.tensor(x), attention_mask=torch.tensor(mask), return_timestamps=True,
                         logits_processor=transformers.LogitsProcessorList([Replayed(tok, grammar)]), **kwargs)
    _same(ours, theirs)
    free = model.generate(x, attention_mask=mask, **kwargs)
    assert 0 < sum(map(len, ours["segments"])) and [len(s) for s in ours["segments"]] != \
        [len(s) for s in free["segments"]]
    for row in ours["segments"]:
        for segment in row:
            text = tok.decode([int(t) for t in segment["tokens"] if t < EOS])
            assert re.fullmatch(f"({DIGITS})?", text), text  # each window's text so far (a cut one: its start)


def test_a_sampled_fallback_attempt_samples_under_the_grammar(checkpoints):
    """Every window fails the compression threshold (any ratio is above 0), so the second attempt samples (at
    temperature 1.0) under the grammar: each text matches, the seed repeats it, and it is not the greedy one."""
    model, _, tok = checkpoints["clean"]
    x = _features(4, 100, seed=3)
    kwargs = dict(language="en", max_new_tokens=20, temperature=(0.0, 1.0), compression_ratio_threshold=0.0)

    def run(**more):
        fg.manual_seed(7)
        return model.generate(x, logits_processor=GrammarLogitsProcessor(tok, Grammar.regex(DIGITS), EOS, VOCAB),
                              **dict(kwargs, **more))

    sampled = run()
    assert all(_matches("regex", t) for t in _texts(tok, sampled)), _texts(tok, sampled)
    np.testing.assert_array_equal(run(), sampled)
    greedy = run(temperature=0.0, compression_ratio_threshold=None)
    assert _texts(tok, greedy) != _texts(tok, sampled)


@pytest.mark.parametrize("kwargs", [
    dict(max_new_tokens=30),
    dict(max_new_tokens=30, return_timestamps=True),
    dict(max_new_tokens=30, num_beams=3, return_timestamps=True),
    dict(max_new_tokens=20, temperature=(0.0, 0.7), logprob_threshold=-0.5),  # sampled attempts, seeded
], ids=["greedy", "timestamps", "beams-timestamps", "sampled-fallback"])
def test_a_grammar_that_allows_every_token_changes_nothing(checkpoints, kwargs):
    model, _, tok = checkpoints["raw"]
    x = _features(2, 100, seed=1)
    fg.manual_seed(11)
    free = model.generate(x, language="en", **kwargs)
    fg.manual_seed(11)
    every = GrammarLogitsProcessor(tok, Grammar.lark("start: <[*]>*"), EOS, VOCAB)
    np.testing.assert_array_equal(model.generate(x, language="en", logits_processor=every, **kwargs), free)


def test_errors(checkpoints):
    model, _, tok = checkpoints["clean"]
    x = _features(1, 100, seed=1)
    with pytest.raises(TypeError, match="logits_processor must be a GrammarLogitsProcessor"):
        model.generate(x, logits_processor=lambda ids, scores: scores)
    with pytest.raises(ValueError, match="make the GrammarLogitsProcessor with eos_token_id=100"):
        model.generate(x, logits_processor=GrammarLogitsProcessor(tok, Grammar.regex(DIGITS), 3, VOCAB))
    # "4" is spelt, then "Z" (no capital letter in the alphabet) cannot be: the window's second step
    with pytest.raises(GrammarError, match="after '4': the tokenizer cannot spell what it requires next"):
        model.generate(x, language="en", max_new_tokens=10,
                       logits_processor=GrammarLogitsProcessor(tok, Grammar.regex("4Z"), EOS, VOCAB))


def test_beam_search_drops_a_beam_at_a_dead_end(checkpoints):
    """"4Z|5": the model's first choice, "4", leads to a "Z" no token spells. Greedy search fails; beam search drops
    that beam (as transformers' beam search drops one whose every continuation is banned) and returns "5", as
    transformers' under the reference; where every beam dies ("[0-9]Z|44" after other digits) it fails."""
    model, hf, tok = checkpoints["clean"]
    x = _features(1, 100, seed=0)
    kwargs = dict(language="en", max_new_tokens=10)
    with pytest.raises(GrammarError, match="after '4': the tokenizer cannot spell"):
        model.generate(x, logits_processor=GrammarLogitsProcessor(tok, Grammar.regex("4Z|5"), EOS, VOCAB), **kwargs)
    got = model.generate(x, num_beams=2, logits_processor=GrammarLogitsProcessor(tok, Grammar.regex("4Z|5"), EOS,
                                                                                 VOCAB), **kwargs)
    assert _texts(tok, got) == ["5"]
    np.testing.assert_array_equal(got, hf.generate(torch.tensor(x), num_beams=2, logits_processor=(
        transformers.LogitsProcessorList([Replayed(tok, Grammar.regex("4Z|5"))])), **kwargs).numpy())
    with pytest.raises(GrammarError, match="the tokenizer cannot spell"):
        model.generate(x, num_beams=2, logits_processor=GrammarLogitsProcessor(tok, Grammar.regex("[0-9]Z|44"), EOS,
                                                                               VOCAB), **kwargs)


def test_a_window_whose_last_pair_is_at_the_start_moves_on(checkpoints):
    """The raw model under a grammar writes <|0.00|><|0.24|> then text that never ends: the window's last timestamp
    pair is at <|0.00|>, so transformers' seek moves by nothing and it decodes the same window again forever; here
    that window is used whole (as one without a pair) and generate returns."""
    model, _, tok = checkpoints["raw"]
    x = _features(2, 100, seed=1)
    out = model.generate(x, language="en", task="translate", max_new_tokens=20,
                         logits_processor=GrammarLogitsProcessor(tok, Grammar.regex(DIGITS), EOS, VOCAB),
                         return_segments=True)
    [segment] = out["segments"][1]  # the one window, its pair at the start (the text after it is not a segment)
    assert segment["tokens"].tolist() == [111, 123] and float(segment["start"]) == 0.0  # <|0.00|> <|0.24|>
