"""One completion's text as its tokens arrive: where it ends (end of sequence, a stop string,
max_tokens, a cancelled request) and which text is final enough to stream.

Text is passed on only once no later token can change it: a trailing incomplete UTF-8 character (the
tokenizer decodes it to U+FFFD until its other bytes arrive) and a tail that could still grow into one
of the stop strings are held back, so the streamed pieces always add up to the final text and never
contain a stop string."""
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


class TextStream:
    def __init__(self, tokenizer, eos: Collection[int], stops: List[str], max_tokens: int, prompt_tokens: int,
                 on_text: Optional[Callable[[str], None]] = None, skip_special_tokens: bool = False):
        self.tokenizer, self.eos, self.stops, self.max_tokens = tokenizer, eos, stops, max_tokens
        self.skip_special_tokens = skip_special_tokens  # encoder-decoders: not their forced start token
        self.prompt_tokens, self.on_text = prompt_tokens, on_text
        self.tokens: List[int] = []
        self.finish: Optional[str] = None  # set once the completion has ended
        self._text: Optional[str] = None  # the final text when a stop string cut it
        self._sent = 0

    def _send(self, upto: str) -> None:
        if self.on_text is not None and len(upto) > self._sent:
            self.on_text(upto[self._sent:])
        self._sent = max(self._sent, len(upto))

    def push(self, token: int) -> bool:
        """Take the next generated token; True when the completion has ended (then ignore the rest)."""
        if token in self.eos:
            self.finish = "stop"
            return True
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=self.skip_special_tokens)
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.finish, self._text = "stop", text[:min(hits)]
            return True
        if len(self.tokens) >= self.max_tokens:
            self.finish = "length"
            return True
        final = text.rstrip("\ufffd")  # an incomplete UTF-8 character: wait for its other bytes
        held = max((k for s in self.stops for k in range(1, len(s)) if final.endswith(s[:k])), default=0)
        self._send(final[:len(final) - held])
        return False

    def cancel(self) -> None:
        if self.finish is None:
            self.finish = "cancelled"

    def result(self) -> Completion:
        """The completion (sending what was held back)."""
        text = self._text if self._text is not None else self.tokenizer.decode(
            self.tokens, skip_special_tokens=self.skip_special_tokens)
        self._send(text)
        return Completion(text, self.finish or "length", self.prompt_tokens, len(self.tokens), list(self.tokens))
