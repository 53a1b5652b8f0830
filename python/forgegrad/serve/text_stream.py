"""One completion's text as its tokens arrive: where it ends (end of sequence, a stop string,
max_tokens, a cancelled request) and which text is final enough to stream.

Text is passed on only once no later token can change it: a trailing incomplete UTF-8 character (the
tokenizer decodes it to U+FFFD until its other bytes arrive) and a tail that could still grow into one
of the stop strings are held back, so the streamed pieces always add up to the final text and never
contain a stop string.

With log-probabilities asked for, each piece carries the entries of the tokens whose text it completes
(a token held back goes with the piece that finally sends its text; a token whose text straddles a stop
string with the last piece). Tokens whose whole text lies in or after the stop string that ended the
completion are not reported, streamed or not (``Completion.text_tokens``). The completion keeps the reported
tokens' entries (``Completion.entries``): a non-streamed answer reports the same numbers a stream would.

For ``best_of``, a stream that ranks (``ranked``) takes each token's log-probability too (``push``'s ``logprob``) and
its completion carries their sum over the reported tokens (``Completion.cumulative_logprob``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, List, Optional


@dataclass
class Completion:
    text: str
    finish_reason: str  # "length", "stop" or "cancelled"
    prompt_tokens: int
    completion_tokens: int
    token_ids: List[int] = field(default_factory=list)  # the generated tokens (the end token not included)
    logprobs: Optional[dict] = None  # OpenAI's completions logprobs object, when asked for
    text_tokens: Optional[int] = None  # how many of token_ids spell ``text`` (the rest only a cut stop string)
    cumulative_logprob: Optional[float] = None  # best_of: the sum of the reported tokens' log-probabilities
    cached_tokens: int = 0  # prompt tokens whose keys and values came from the prefix cache (prefix_cache.py)
    entries: Optional[list] = None  # the reported tokens' log-probability entries (TokenLogprob), when collected

    @property
    def reported_ids(self) -> List[int]:
        """The tokens whose log-probabilities are reported: those with text in ``text``."""
        return self.token_ids if self.text_tokens is None else self.token_ids[:self.text_tokens]


class TextStream:
    def __init__(self, tokenizer, eos: Collection[int], stops: List[str], max_tokens: int, prompt_tokens: int,
                 on_text: Optional[Callable[[str, Optional[list]], None]] = None, skip_special_tokens: bool = False,
                 top: Optional[int] = None, ranked: bool = False, include_stop: bool = False, min_tokens: int = 0):
        """``on_text(text, entries)`` gets each final piece; ``entries`` is None unless ``top`` is given (stream
        log-probabilities: ``push`` then takes each token's entry and pieces carry theirs, maybe with no text).
        ``ranked``: ``push`` takes each token's log-probability, summed into the completion's
        ``cumulative_logprob``. ``include_stop`` (vLLM's include_stop_str_in_output): the text ends after the stop
        string that ended it, not before. ``min_tokens`` (vLLM's): no stop string ends the completion within its
        first that many tokens; after them, as vLLM searches only the newer text (and len(stop) - 1 characters
        before it), a stop string counts where it ends past them."""
        self.include_stop, self.min_tokens = include_stop, min_tokens
        self._stop_from = 0  # where a stop string may start, plus its length - 1 (the text of the first min_tokens)
        self.tokenizer, self.eos, self.stops, self.max_tokens = tokenizer, eos, stops, max_tokens
        self.skip_special_tokens = skip_special_tokens  # encoder-decoders: not their forced start token
        self.prompt_tokens, self.on_text, self.top = prompt_tokens, on_text, top
        self.cached_tokens = 0  # of the prompt's, read from the prefix cache (the batched engine sets it)
        self.tokens: List[int] = []
        self.finish: Optional[str] = None  # set once the completion has ended
        self._text: Optional[str] = None  # the final text when a stop string cut it
        self._sent = 0
        # per token: the length of the text decoded up to it, and whether that text ends on a whole character
        self._ends: List[int] = []
        self._whole: List[bool] = []
        self._entries: list = []  # the tokens' log-probability entries (top given)
        self._reported = 0  # tokens whose entries went out
        self.ranked = ranked
        self._logprobs: List[float] = []  # the tokens' log-probabilities (ranked)

    def _covered(self, chars: int) -> int:
        """The most tokens whose text lies within the first ``chars`` characters."""
        m = self._reported
        for j in range(self._reported, len(self.tokens)):  # the held-back ones: a few (a partial character's
            if self._whole[j] and self._ends[j] <= chars:   # replacement marks can make the lengths dip)
                m = j + 1
        return m

    def _send(self, upto: str, tokens: Optional[int] = None) -> None:
        """Pass on the text up to ``upto`` (and the entries of the tokens it completes, or of the first
        ``tokens``)."""
        entries = None
        if self.top is not None:
            m = self._covered(len(upto)) if tokens is None else tokens
            entries, self._reported = self._entries[self._reported:m], max(m, self._reported)
        if self.on_text is not None and (len(upto) > self._sent or entries):
            self.on_text(upto[self._sent:], entries)
        self._sent = max(self._sent, len(upto))

    def push(self, token: int, entry=None, logprob: Optional[float] = None) -> bool:
        """Take the next generated token (and its log-probability entry, when streaming them; its log-probability
        when ranked); True when the completion has ended (then ignore the rest)."""
        if token in self.eos:
            self.finish = "stop"
            return True
        self.tokens.append(token)
        if self.top is not None:
            self._entries.append(entry)
        if self.ranked:
            self._logprobs.append(float(logprob))
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=self.skip_special_tokens)
        self._ends.append(len(text))
        self._whole.append(not text.endswith("\ufffd"))
        if len(self.tokens) <= self.min_tokens:
            hits, self._stop_from = [], len(text.rstrip("\ufffd"))
        else:
            hits = [(i, i + len(s)) for i, s in ((text.find(s, max(0, self._stop_from - len(s) + 1)), s)
                                                 for s in self.stops) if i >= 0]
        if hits:
            cut = min(hits)
            self.finish, self._text = "stop", text[:cut[1] if self.include_stop else cut[0]]
            return True
        if len(self.tokens) >= self.max_tokens:
            self.finish = "length"
            return True
        final = text.rstrip("\ufffd")  # an incomplete UTF-8 character: wait for its other bytes
        held = 0  # the longest end of the text that begins a stop string: at most the text's length (a stop string
        # of 3 MB tried its 3 million beginnings after every token, a hang)
        for s in self.stops:
            held = next((k for k in range(min(len(s) - 1, len(final)), held, -1) if final.endswith(s[:k])), held)
        self._send(final[:len(final) - held])
        return False

    def end(self, reason: str) -> None:
        """End the completion after its last token (the checkpoint's stop strings or time limit: row_settings.py)."""
        if self.finish is None:
            self.finish = reason

    def cancel(self) -> None:
        if self.finish is None:
            self.finish = "cancelled"

    def _text_tokens(self) -> int:
        """How many tokens spell the text: all of them, or, when a stop string cut it, the fewest whose text
        starts with the text before the stop string (a token straddling the cut counts; those wholly in the
        stop string do not)."""
        if self._text is None:
            return len(self.tokens)
        m = len(self.tokens)  # from the end: the stop string is a few tokens
        while m > 0 and self.tokenizer.decode(self.tokens[:m - 1], skip_special_tokens=self.skip_special_tokens
                                              ).startswith(self._text):
            m -= 1
        return m

    def result(self) -> Completion:
        """The completion (sending what was held back)."""
        text = self._text if self._text is not None else self.tokenizer.decode(
            self.tokens, skip_special_tokens=self.skip_special_tokens)
        kept = self._text_tokens()
        self._send(text, kept)
        return Completion(text, self.finish or "length", self.prompt_tokens, len(self.tokens), list(self.tokens),
                          text_tokens=kept, cumulative_logprob=float(sum(self._logprobs[:kept])) if self.ranked
                          else None, cached_tokens=self.cached_tokens,
                          entries=list(self._entries[:kept]) if self.top is not None else None)
