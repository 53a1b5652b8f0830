"""Structured outputs: decoding constrained to a grammar (a JSON schema, any JSON object, a regex, a choice of
strings, a Lark or GBNF grammar) by llguidance, the grammar engine vLLM and Guidance use (the optional extra
``structured``: ``pip install "forgegrad[structured]"``).

At each step the row's matcher fills a bitmask of the tokens the grammar allows next; every other token's score
becomes -inf before the sampler sees it, and the token drawn is fed back to the matcher. The end-of-sequence
tokens are allowed only where the grammar is complete, and once it cannot go on (a JSON value closed) they are the
only ones, so the row ends there. One bitmask fill per constrained row per step (rows whose outputs are equal share
one); other rows are untouched. Greedy search, sampling and beam search (each beam's matcher forked as beams split),
for decoders and encoder-decoders (T5, BART, Marian: the grammar starts after the decoder's start token and after a
first token the checkpoint forces).

    from forgegrad.models.hf.constrained import Grammar, GrammarLogitsProcessor
    grammar = Grammar.json_schema({"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"]})
    out = generate(model, ids, logits_processor=GrammarLogitsProcessor(tokenizer, grammar, eos, model.vocab_size),
                   eos_token_id=eos)

JSON is written compactly with Python's separators (``", "`` and ``": "``, no other whitespace), as json.dumps
writes it, unless the schema's ``"x-guidance"`` says otherwise (llguidance's options).
"""
from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .beam_search import running

__all__ = ["Grammar", "GrammarError", "RowConstraint", "GrammarLogitsProcessor", "grammar_tokenizer", "MISSING"]

MISSING = 'structured outputs need the llguidance package: pip install "forgegrad[structured]"'
# json.dumps' separators, no free whitespace: a model cannot pad its answer with blanks until max_tokens
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _llguidance():
    try:
        import llguidance
        import llguidance.numpy  # noqa: F401  (the bitmask helpers)
    except ImportError as e:
        raise ImportError(MISSING) from e
    return llguidance


class Grammar:
    """A grammar in llguidance's form, checked when made (ValueError naming what is wrong).

    Make one with ``Grammar.json_schema(schema)``, ``Grammar.json_object()``, ``Grammar.lark(text)`` (Lark, with
    llguidance's ``%json {schema}`` for embedded JSON), ``Grammar.ebnf(text)`` (Lark or GBNF),
    ``Grammar.regex(pattern)`` or ``Grammar.choice(strings)``; ``text`` is what llguidance's ``LLMatcher`` takes."""

    def __init__(self, text: str, kind: str):
        llg = _llguidance()
        failed, messages = llg.LLMatcher.validate_grammar_with_warnings(text)
        if failed:
            raise ValueError(f"invalid {kind}: {messages[0] if messages else 'llguidance refused it'}")
        self.text, self.kind = text, kind

    @classmethod
    def json_schema(cls, schema: Union[dict, str]) -> "Grammar":
        """Any JSON value the schema accepts (types, properties and required keys, enums, const, anyOf, patterns,
        lengths, bounds: llguidance's subset of JSON Schema; an unsupported keyword is an error, not ignored)."""
        llg = _llguidance()
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as e:
                raise ValueError(f"invalid JSON schema: not JSON ({e})") from None
        if not isinstance(schema, (dict, bool)):
            raise ValueError(f"invalid JSON schema: expected an object, got {type(schema).__name__}")
        try:
            text = llg.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_STYLE)
        except ValueError as e:
            raise ValueError(f"invalid JSON schema: {e}") from None
        return cls(text, "JSON schema")

    @classmethod
    def json_object(cls) -> "Grammar":
        """Any JSON object (OpenAI's ``response_format: {"type": "json_object"}``)."""
        return cls.json_schema({"type": "object"})

    @classmethod
    def lark(cls, text: str) -> "Grammar":
        """A Lark grammar (llguidance's dialect: ``start`` is the root; ``%json {...}`` embeds a JSON schema;
        ``<[id]>`` is a token by its id)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("invalid Lark grammar: expected a non-empty string")
        return cls(_llguidance().LLMatcher.grammar_from_lark(text), "Lark grammar")

    @classmethod
    def ebnf(cls, text: str) -> "Grammar":
        """A Lark grammar, or a GBNF one (llama.cpp's: ``root ::= ...``), as vLLM's ``guided_grammar`` takes them."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("invalid grammar: expected a non-empty string")
        try:
            made = _llguidance().grammar_from("grammar", text)
        except ValueError as e:
            raise ValueError(f"invalid grammar: {e}") from None
        return cls(made, "grammar")

    @classmethod
    def regex(cls, pattern: str) -> "Grammar":
        """Text that matches ``pattern`` whole (Rust's regex syntax: no lookaround or backreferences)."""
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("invalid regex: expected a non-empty string")
        return cls(_llguidance().LLMatcher.grammar_from_regex(pattern), "regex")

    @classmethod
    def choice(cls, options: Sequence[str]) -> "Grammar":
        """Exactly one of ``options`` (strings)."""
        if isinstance(options, str) or not isinstance(options, (list, tuple)) or not options or not all(
                isinstance(o, str) and o for o in options):
            raise ValueError("invalid choice: expected a non-empty list of non-empty strings")
        return cls(_llguidance().grammar_from("choice", list(options)), "choice")

    def __repr__(self):
        return f"Grammar({self.kind})"


def _tokenizer_json(tokenizer) -> Optional[str]:
    """The tokenizer.json text of forgegrad's HFTokenizer or a ``tokenizers.Tokenizer``, a prefix space turned off:
    generated tokens continue a text, they never start one (with it on, llguidance would want each forced piece
    of text to start with a space token)."""
    tok = getattr(tokenizer, "_tok", tokenizer)
    if not hasattr(tok, "to_str"):
        return None
    spec = json.loads(tok.to_str())
    for part in ("pre_tokenizer", "decoder", "post_processor"):
        p = spec.get(part) or {}
        for q in ([p] + list(p.get("pretokenizers") or p.get("decoders") or p.get("processors") or [])):
            if isinstance(q, dict) and "add_prefix_space" in q:
                q["add_prefix_space"] = False
            if isinstance(q, dict) and q.get("type") == "Metaspace" and q.get("prepend_scheme") == "always":
                q["prepend_scheme"] = "never"
    return json.dumps(spec)


class _ByteTokens:
    """forgegrad's ByteTokenizer (ids 0-255 are the bytes) as llguidance's TokenizerWrapper takes a tokenizer."""

    def __init__(self, vocab_size: int, eos: int):
        self.eos_token_id, self.bos_token_id = eos, None
        self.tokens = [bytes([i]) if i < 256 else b"" for i in range(vocab_size)]
        self.special_token_ids = [eos] if eos >= 256 else []

    def __call__(self, text) -> List[int]:
        return list(text.encode("utf-8") if isinstance(text, str) else text)


def grammar_tokenizer(tokenizer, vocab_size: int, eos_token_id: Union[int, Sequence[int]]):
    """llguidance's ``LLTokenizer`` for forgegrad's tokenizer (HFTokenizer, ByteTokenizer) or a
    ``tokenizers.Tokenizer``, over the model's ``vocab_size`` (ids past the tokenizer's are never allowed), ending
    on ``eos_token_id``. Made once per tokenizer and settings (about a second for a 150k vocabulary), then cached
    on the tokenizer."""
    llg = _llguidance()
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ValueError(f"grammar_tokenizer: vocab_size must be a positive integer, got {vocab_size!r}")
    eos = [eos_token_id] if isinstance(eos_token_id, (int, np.integer)) else list(eos_token_id)
    if not eos:
        raise ValueError("grammar_tokenizer: a constrained row needs an end-of-sequence token (eos_token_id)")
    for t in eos:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < vocab_size:
            raise ValueError(f"grammar_tokenizer: eos_token_id must be token ids in [0, {int(vocab_size)}), "
                             f"got {eos_token_id!r}")
    eos = [int(t) for t in eos]
    key = (int(vocab_size), tuple(eos))
    cache = getattr(tokenizer, "_grammar_tokenizers", None)
    if cache is not None and key in cache:
        return cache[key]
    spec = _tokenizer_json(tokenizer)
    if spec is not None:
        try:
            made = llg.LLTokenizer(spec, n_vocab=int(vocab_size), eos_token=eos)
        except ValueError as e:
            raise ValueError(f"structured outputs cannot read this tokenizer (llguidance: {e})") from None
    elif getattr(tokenizer, "name", None) == "bytes":
        made = llg.LLTokenizer(llg.TokenizerWrapper(_ByteTokens(int(vocab_size), eos[0])), n_vocab=int(vocab_size),
                               eos_token=eos)
    else:
        raise TypeError(f"grammar_tokenizer: expected forgegrad's tokenizer or a tokenizers.Tokenizer, got "
                        f"{type(tokenizer).__name__}")
    try:
        if cache is None:
            cache = {}
            tokenizer._grammar_tokenizers = cache
        cache[key] = made
    except AttributeError:  # a tokenizers.Tokenizer takes no attributes: made again next time
        pass
    return made


_SPELLINGS: "OrderedDict[int, tuple]" = OrderedDict()  # the last few LLTokenizers' token bytes, as looked up
_SPELLINGS_LOCK = threading.Lock()


def _spellings(lltokenizer):
    """``spelling(id) -> bytes`` of a token as llguidance's forced bytes write it (a special token: 0xFF "[id]"), or
    None where the tokenizer spells every byte (byte-level BPE, byte fallback: nothing forced can be unspellable);
    remembered for the last 8 grammar tokenizers. (0xFF is llguidance's own marker, never text in forced bytes.)"""
    with _SPELLINGS_LOCK:  # (the server makes row constraints on its engine thread and its request threads)
        return _spellings_locked(lltokenizer)


def _spellings_locked(lltokenizer):
    key = id(lltokenizer)
    if key not in _SPELLINGS or _SPELLINGS[key][0] is not lltokenizer:
        known: Dict[int, bytes] = {}

        def spelling(i: int) -> bytes:
            if i not in known:
                known[i] = (b"\xff[%d]" % i if lltokenizer.is_special_token(i) else lltokenizer.decode_bytes([i]))
            return known[i]

        every = all(lltokenizer.decode_bytes(lltokenizer.tokenize_bytes(bytes([x]))) == bytes([x])
                    for x in range(255))
        _SPELLINGS[key] = (lltokenizer, None if every else spelling)
        while len(_SPELLINGS) > 8:
            _SPELLINGS.popitem(last=False)
    _SPELLINGS.move_to_end(key)
    return _SPELLINGS[key][1]


class GrammarError(RuntimeError):
    """A row's grammar cannot go on: it allows no token of the vocabulary (a character the tokenizer cannot
    spell), the other processors rule out every token it allows, or its matcher failed. Only that row's
    generation is at fault: the completions server fails its request alone."""


class RowConstraint:
    """One row's matcher: ``mask(scores)`` sets the scores of the tokens the grammar does not allow next to -inf
    (in place; ``scores`` (V,) or (1, V) float32), ``advance(token)`` feeds it the token chosen. ``done``: the
    grammar is complete and allows nothing but the end of the sequence; ``fork()``: an independent copy (a beam
    that continues this one in two ways).

    A token that another processor forces (every other score already -inf) and the grammar does not allow stands
    outside the grammar when it is the first token (BART's and mBART's forced first token: the grammar starts after
    it) or an end token (a forced end at the length limit: the output stops there, incomplete); anywhere else a
    row with no allowed token raises GrammarError."""

    def __init__(self, grammar: Grammar, lltokenizer):
        llg = _llguidance()
        self._matcher = llg.LLMatcher(lltokenizer, grammar.text, log_level=0)
        if self._matcher.is_error():
            raise ValueError(f"invalid {grammar.kind}: {self._matcher.get_error()}")
        self.lltokenizer, self.vocab_size = lltokenizer, int(lltokenizer.vocab_size)
        self._ends = frozenset(int(t) for t in lltokenizer.eos_tokens)
        self._spelling_of = _spellings(lltokenizer)
        self._bits = llg.numpy.allocate_token_bitmask(1, self.vocab_size)
        self._fill = llg.numpy.fill_next_token_bitmask
        self._allowed: Optional[np.ndarray] = None  # the next token's allowed set, until the matcher advances
        self._outside: Optional[int] = None  # a forced token the last mask let through outside the grammar
        self.history: List[int] = []  # the tokens taken so far (the grammar's, and forced ones outside it)
        self._consumed: List[int] = []  # the grammar's

    @property
    def done(self) -> bool:
        return self._matcher.is_stopped()

    def fork(self) -> "RowConstraint":
        other = object.__new__(RowConstraint)
        other.__dict__.update(self.__dict__)
        other._matcher = self._matcher.deep_copy()
        other._bits = _llguidance().numpy.allocate_token_bitmask(1, self.vocab_size)
        other.history, other._consumed = list(self.history), list(self._consumed)
        return other

    def allowed(self) -> np.ndarray:
        """(vocab_size,) bool: the tokens the grammar allows next."""
        if self._allowed is None:
            m = self._matcher
            if m.is_error():
                raise GrammarError(f"the grammar's matcher failed: {m.get_error().splitlines()[0][:200]}")
            self._fill(m, self._bits, 0)
            if m.is_stopped() and not m.is_accepting():  # the fill found no token to go on: it allows only the end
                raise GrammarError(self._dead_end(False))
            allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little", count=self.vocab_size).view(bool)
            forced = m.compute_ff_bytes() if self._spelling_of is not None else b""
            if forced:
                self._spelling(allowed, forced)
            self._allowed = allowed
        return self._allowed

    def _spelling(self, allowed: np.ndarray, forced: bytes) -> None:
        """Where the grammar forces bytes no token spells (a character missing from the vocabulary), llguidance's
        mask holds the tokens that would follow them, which its matcher then refuses: a dead end. Checked on the
        allowed tokens until one spells the forced bytes or begins them (the first one, but at a dead end)."""
        spelling = self._spelling_of
        for i in np.flatnonzero(allowed).tolist():
            b = spelling(i)
            if b and (b.startswith(forced) or forced.startswith(b)):
                return
        raise GrammarError(self._dead_end(False))

    def mask(self, scores: np.ndarray) -> np.ndarray:
        if not scores.flags["C_CONTIGUOUS"] or not scores.flags["WRITEABLE"]:
            raise ValueError("RowConstraint.mask: scores must be a writable contiguous array (it is masked in place)")
        if not np.issubdtype(scores.dtype, np.floating):
            raise ValueError(f"RowConstraint.mask: scores must be floating point (-inf marks a refused token), got "
                             f"{scores.dtype}")
        if scores.ndim not in (1, 2) or scores.size != scores.shape[-1] or scores.shape[-1] < self.vocab_size:
            raise ValueError(f"RowConstraint.mask: scores must be one row, (V,) or (1, V), at least "
                             f"{self.vocab_size} wide (the grammar's vocabulary), got shape {scores.shape}")
        allowed, row, V = self.allowed(), scores.reshape(-1), self.vocab_size
        given = row.copy()
        row[:V][~allowed] = -np.inf
        row[V:] = -np.inf
        self._outside = None
        if not row[:V].max() > -np.inf:  # every token the grammar allows was already ruled out
            row[:] = given
            forced = np.flatnonzero(given > -np.inf)
            if len(forced) == 1 and (int(forced[0]) in self._ends or not self.history):
                self._outside = int(forced[0])
                return scores
            raise GrammarError(self._dead_end(allowed.any()))
        return scores

    def _dead_end(self, any_allowed: bool) -> str:
        after = repr(self.lltokenizer.decode_str(self._consumed)[-40:]) if self._consumed else "the start"
        if not any_allowed:
            return (f"the grammar allows no token of this model's vocabulary after {after}: the tokenizer cannot "
                    "spell what it requires next")
        return (f"the other settings (min_length, forced tokens, ...) rule out every token the grammar allows after "
                f"{after}")

    def advance(self, token: int) -> None:
        token = int(token)
        if token == self._outside:  # a forced token outside the grammar (see the class)
            self._outside = None
        elif not self._matcher.consume_token(token):
            raise GrammarError(f"the grammar refused token {token}: {self._matcher.get_error().splitlines()[0][:200]}")
        else:
            self._consumed.append(token)
        self._allowed = None
        self.history.append(token)

    def try_advance(self, token: int) -> bool:
        """advance, False (the row then unusable) where the grammar refuses the token."""
        try:
            self.advance(token)
        except GrammarError:
            return False
        return True


class GrammarLogitsProcessor:
    """A logits processor for ``generate(..., logits_processor=...)``: each row's output (the tokens after the
    ones it was first called with: a decoder's prompt, an encoder-decoder's start token) must match ``grammar``; the
    row ends (with ``eos_token_id``, which must be among generate's end tokens) when the grammar is complete. Greedy
    search, sampling (``num_return_sequences`` rows each constrained alike), beam search and beam sampling, for
    decoders and encoder-decoders (T5, BART, Marian).

    One processor may serve several generate calls in turn: a call whose sequences do not continue the last call's
    (other rows, another prompt, a jump in length) starts over. Rows are matched to their grammar state by their
    output so far, not by their place: a row whose output is a row of the last call's plus one token continues that
    row's matcher (forked, a deep copy, when beam search continues one beam in several ways), rows with the same
    output share one matcher and one mask, and the states no row continues are dropped. A row that ended (an end
    token in its output) may only repeat an end token; a beam that ran on a token the grammar refused (beam search
    keeps K beams even when fewer continuations are allowed; its score is already -inf) gets -inf everywhere. A row
    the grammar allows no token (a dead end: a character the tokenizer cannot spell, or every allowed token ruled
    out by the other processors) raises GrammarError in greedy search and sampling; in beam search the beam is
    dropped instead, as transformers' beam search treats a beam whose every continuation is banned: its scores -inf,
    it is never chosen while another beam can run on (beam_search.BeamRun), and the GrammarError is raised only when
    a prompt is left with no hypothesis at all (the surviving beams' hypotheses are returned otherwise).

    Args:
        tokenizer: forgegrad's tokenizer of the checkpoint (``load_tokenizer``) or a ``tokenizers.Tokenizer``.
        grammar: a ``Grammar``.
        eos_token_id: the end-of-sequence id (or ids) the row may end with, once the grammar is complete.
        vocab_size: the model's vocabulary (its logits' width).
    """

    def __init__(self, tokenizer, grammar: Grammar, eos_token_id: Union[int, Sequence[int]], vocab_size: int):
        if not isinstance(grammar, Grammar):
            raise TypeError(f"GrammarLogitsProcessor: grammar must be a Grammar, got {type(grammar).__name__}")
        self.grammar, self.eos = grammar, eos_token_id
        self.lltokenizer = grammar_tokenizer(tokenizer, vocab_size, eos_token_id)
        self.start = 0  # the length of the sequences at a generate call's first call: the output begins there
        self._ends = frozenset(int(t) for t in self.lltokenizer.eos_tokens)
        self._states: Optional[Dict[tuple, Optional[RowConstraint]]] = None  # by output; None: the grammar refused it
        self._prompts: Optional[np.ndarray] = None  # the sequences at that first call
        self._length = 0  # the length of the sequences at the last call

    def __call__(self, sequences: np.ndarray, scores: np.ndarray) -> np.ndarray:
        sequences = np.asarray(sequences)
        if sequences.ndim != 2:
            raise ValueError(f"GrammarLogitsProcessor: sequences must be (rows, L), got shape {sequences.shape}")
        if not self._continues(sequences):  # the first call of a generate call: the output begins after it
            self._states, self.start = {(): RowConstraint(self.grammar, self.lltokenizer)}, sequences.shape[1]
            self._prompts = sequences.copy()
        self._length = sequences.shape[1]
        scores = np.array(scores, dtype=np.float32)
        outs = [tuple(seq) for seq in sequences[:, self.start:].tolist()]
        forks = Counter(o[:-1] for o in set(outs) if o and o not in self._states)
        states: Dict[tuple, Optional[RowConstraint]] = {}
        dead: Dict[tuple, GrammarError] = {}  # this call's dead ends, by output
        ends = list(self._ends)
        beams = running()
        for r, out in enumerate(outs):
            if not self._ends.isdisjoint(out):  # ended: generate pads it (a beam runs on only where nothing else can)
                kept = scores[r, ends].copy()
                scores[r] = -np.inf
                scores[r, ends] = kept
                continue
            if out not in states:
                states[out] = self._state(out, forks)
            if states[out] is not None:
                try:
                    states[out].mask(scores[r])
                except GrammarError as e:
                    if beams is None:  # greedy search, sampling: the row cannot go on
                        raise
                    states[out], dead[out] = None, e  # beam search: this beam is dropped (see the class)
            if states[out] is None:
                scores[r] = -np.inf
                if out in dead:
                    beams.drop(r, dead[out])
        self._states = states
        return scores

    def _continues(self, sequences: np.ndarray) -> bool:
        """Whether ``sequences`` are a step of the generate call the last call was: the same rows, each starting
        with the same prompt, at most one token longer. Else a new generate call (the processor reused) starts over.
        """
        return (self._states is not None and sequences.shape[0] == len(self._prompts)
                and self._length <= sequences.shape[1] <= self._length + 1
                and np.array_equal(sequences[:, :self.start], self._prompts))

    def _state(self, out: tuple, forks: Counter) -> Optional[RowConstraint]:
        """The matcher of a row whose output is ``out`` (None where the grammar refuses it)."""
        if out in self._states:  # no new token since the last call
            return self._states[out]
        if out and out[:-1] in self._states:
            parent = self._states[out[:-1]]
            if parent is None:
                return None
            row = parent.fork() if forks[out[:-1]] > 1 else parent
            return row if row.try_advance(out[-1]) else None
        # not one token after a row of the last call: the whole output replayed on a new matcher
        row = RowConstraint(self.grammar, self.lltokenizer)
        return row if all(row.try_advance(t) for t in out) else None
