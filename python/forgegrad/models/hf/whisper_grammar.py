"""Structured outputs on Whisper's decoder: each window's transcript text must match a grammar (constrained.py's
``Grammar``: a regex, a choice of strings, a JSON schema, a Lark or GBNF grammar), given to Whisper's generate as
the decoder-only and encoder-decoder paths take it, ``logits_processor=GrammarLogitsProcessor(tokenizer, grammar,
eos, vocab_size)``.

Whisper's special tokens stand outside the grammar, as BART's forced first token does: the decoder prompt (start,
language, task, <|notimestamps|>, a text prompt, previous tokens) comes before it, and in the output the grammar
reads the text tokens only (the ids below <|endoftext|>: Whisper puts every special token after the text). The
end token is allowed only where the grammar is complete; the timestamps and the other special tokens are left to
Whisper's own processors (suppressed tokens, the timestamp rules), which run first, as transformers runs a
``logits_processor`` after Whisper's. So the text of a window's tokens (special tokens skipped) matches the
grammar once the window ends with its end token; a window cut off by its length limit stops incomplete.

The grammar starts over at every window and every fallback attempt (transformers calls a processor afresh at each;
short audio is one window unless timestamps move it on). A row's grammar state is found by its text so far, not
its place, so that greedy rows, sampled rows and beams (which change places and split) each read their own: rows
of one text share a matcher, a text one token longer than a known one continues it (a copy where two rows go on
from it), and any other text is replayed on a new matcher.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .beam_search import running
from .constrained import GrammarError, GrammarLogitsProcessor, RowConstraint

__all__ = ["WhisperGrammar", "whisper_grammar"]


def whisper_grammar(logits_processor, eos, vocab_size: int) -> Optional["WhisperGrammar"]:
    """``logits_processor`` of Whisper's generate checked: None, or a GrammarLogitsProcessor (alone, or the one
    item of a list) whose end token is Whisper's and whose vocabulary is the model's."""
    if logits_processor is None:
        return None
    given = logits_processor
    if isinstance(given, (list, tuple)) and len(given) == 1:
        given = given[0]
    if not isinstance(given, GrammarLogitsProcessor):
        raise TypeError("generate: Whisper's logits_processor must be a GrammarLogitsProcessor (structured outputs: "
                        f"constrained.py), got {type(logits_processor).__name__}; other processors are not taken")
    if not isinstance(eos, int):
        raise ValueError(f"generate: a grammar needs one end token (eos_token_id an int), got {eos!r}")
    if eos not in given._ends:
        raise ValueError(f"generate: the grammar's end tokens {sorted(given._ends)} do not hold Whisper's end token "
                         f"{eos}: make the GrammarLogitsProcessor with eos_token_id={eos}")
    if int(given.lltokenizer.vocab_size) != int(vocab_size):
        raise ValueError(f"generate: the grammar's vocabulary ({given.lltokenizer.vocab_size} tokens) is not the "
                         f"model's ({vocab_size}): make the GrammarLogitsProcessor with vocab_size={vocab_size}")
    return WhisperGrammar(given, eos)


class WhisperGrammar:
    """A grammar on Whisper's text tokens (ids below ``eos``), ``window()`` its state for one window's decoding."""

    def __init__(self, processor: GrammarLogitsProcessor, eos: int):
        self.grammar, self.lltokenizer, self.eos = processor.grammar, processor.lltokenizer, int(eos)

    def window(self) -> "_Window":
        """The grammar from its start, for the tokens after one window's decoder prompt."""
        return _Window(self)


class _Window:
    """``window(generated, scores)``: each row's scores (rows, V), in place, where ``generated`` (rows, n) holds its
    tokens after the window's prompt: text the grammar does not allow next, and the end token until the grammar is
    complete, set to -inf. A row that has ended (an end token among its tokens) is left as it is, and so is a row
    whose text the grammar refused (a beam that ran on a token scored -inf: its scores become -inf). Where the
    grammar leaves a row that had a token to take none (a dead end), GrammarError in greedy search and sampling; in
    beam search the beam is dropped, as GrammarLogitsProcessor drops one (beam_search.BeamRun: the error is raised
    only when a prompt is left with no hypothesis)."""

    def __init__(self, of: WhisperGrammar):
        self.of = of
        self.states: Dict[tuple, Optional[RowConstraint]] = {}  # by text so far; None: the grammar refused it

    def __call__(self, generated: np.ndarray, scores: np.ndarray) -> np.ndarray:
        eos = self.of.eos
        texts = [None if eos in row else tuple(t for t in row if t < eos) for row in np.asarray(generated).tolist()]
        states = self._states({t for t in texts if t is not None})
        beams = running()
        for r, text in enumerate(texts):
            if text is None:
                continue
            row = scores[r]
            state = states[text]
            if state is None:
                row[:] = -np.inf
                continue
            try:
                allowed = state.allowed()
                had = bool(np.isfinite(row).any())
                row[:eos][~allowed[:eos]] = -np.inf
                if not allowed[eos]:
                    row[eos] = -np.inf
                if had and not np.isfinite(row).any():
                    raise GrammarError(state._dead_end(bool(allowed[:eos + 1].any())))
            except GrammarError as e:
                if beams is None:  # greedy search, sampling: the row cannot go on
                    raise
                row[:] = -np.inf  # beam search: the beam is dropped, as constrained.py drops one
                beams.drop(r, e)
        self.states = states
        return scores

    def _states(self, texts: set) -> Dict[tuple, Optional[RowConstraint]]:
        """The matcher of each text (the states no text continues dropped). A matcher advances in place only where
        nothing else needs it: not its own text again (a row that took a special token) nor a second continuation."""
        known = self.states
        children: Dict[tuple, int] = {}
        for t in texts:
            if t not in known and t and t[:-1] in known:
                children[t[:-1]] = children.get(t[:-1], 0) + 1
        out: Dict[tuple, Optional[RowConstraint]] = {t: known[t] for t in texts if t in known}
        for t in texts:
            if t in out:
                continue
            parent = known.get(t[:-1]) if t else None
            if t and t[:-1] in known:
                if parent is None:
                    out[t] = None
                    continue
                state = parent.fork() if t[:-1] in texts or children[t[:-1]] > 1 else parent
                out[t] = state if state.try_advance(t[-1]) else None
                continue
            state = RowConstraint(self.of.grammar, self.of.lltokenizer)  # replayed whole
            out[t] = state if all(state.try_advance(x) for x in t) else None
        return out
