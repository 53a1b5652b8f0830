"""``generate``'s stopping settings beyond the end tokens and the length, as transformers' stopping criteria:
``max_time`` (MaxTimeCriteria: every row stops once the seconds since generate began exceed it) and
``stop_strings`` (StopStringCriteria: a row stops when one of the strings ends inside its newest token).

A stop string matches when it occurs in the text of the row's tokens (prompt included) and its occurrence ends
inside the last token, so "stop" matches the tokens ["st", "op"], ["sto", "pper"] and ["las", "topper"] but not
["stop", "at"]: a string seen earlier never stops a row later. Tokens are compared as the bytes they stand for, as
transformers compares them: a byte-level vocabulary's (GPT-2's) token bytes, a byte-fallback vocabulary's <0xNN>
tokens as their byte, any other token as its text after a fixed prefix (tokenizers' decoder strips a leading space
only at the start of a text).

Where transformers refuses stop strings, so does this, with a ValueError when the StopStrings is made (before any
token is generated): a tokenizer that does not spell the prefix (a word-level vocabulary without the word "abcdef":
transformers' ``str.index`` fails, "substring not found"), and stop strings no token can end: none holds a string's
last character (byte, for a byte-level or byte-fallback vocabulary) where its text up to there and the string end one
another (transformers: "unable to identify tokens matching").
"""
from __future__ import annotations

import json
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["Stopping", "StopStrings"]

_PREFIX = "abcdef"


def _backend(tokenizer):
    """The ``tokenizers.Tokenizer`` behind forgegrad's HFTokenizer or a transformers fast tokenizer, else None."""
    for name in ("_tok", "backend_tokenizer"):
        backend = getattr(tokenizer, name, None)
        if backend is not None and hasattr(backend, "id_to_token"):
            return backend
    return None


def _decoder_types(decoder) -> set:
    """The decoder types a tokenizers decoder holds (a Sequence's too)."""
    if decoder is None:
        return set()
    found = {type(decoder).__name__}
    try:
        state = json.loads(decoder.__getstate__())
    except (AttributeError, TypeError, ValueError):
        return found

    def walk(node):
        if isinstance(node, dict):
            if "type" in node:
                found.add(node["type"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(state)
    return found


def _byte_decoder() -> Dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte."""
    chars = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes, n = chars[:], 0
    for b in range(256):
        if b not in chars:
            chars.append(b)
            codes.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(chars, codes)}


def _can_end(token: bytes, string: bytes, last: bytes) -> bool:
    """Whether ``token`` can end a match of ``string`` (``last``: its last character or byte): at an occurrence of
    ``last`` in the token, the token's text up to there ends with the string, or the string ends with it."""
    i = token.find(last) if last else -1
    while i >= 0:
        head = token[:i + len(last)]
        if head.endswith(string) or string.endswith(head):
            return True
        i = token.find(last, i + 1)
    return False


class StopStrings:
    """``__call__(sequences (rows, L)) -> (rows,) bool``: where a stop string ends inside the row's last token."""

    def __init__(self, strings: Sequence[str], tokenizer):
        if tokenizer is None:
            raise ValueError("generate: stop_strings needs the tokenizer: pass tokenizer= (load_tokenizer's, or a "
                             "transformers tokenizer) to generate")
        self.strings = [s.encode("utf-8") for s in strings]
        self.window = max(len(s) for s in self.strings)  # every token stands for at least one byte
        self._bytes: Dict[int, bytes] = {}
        self._backend = _backend(tokenizer)
        if self._backend is None and not (hasattr(tokenizer, "decode") and getattr(tokenizer, "name", "") == "bytes"):
            raise TypeError("generate: stop_strings needs a tokenizer from load_tokenizer or a transformers fast "
                            f"tokenizer, got {type(tokenizer).__name__}")
        if self._backend is not None:
            types = _decoder_types(self._backend.decoder)
            self._mode = "byte_level" if "ByteLevel" in types else "byte_fallback" if "ByteFallback" in types else None
            self._byte_level = _byte_decoder() if self._mode == "byte_level" else None
            base = self._backend.encode(_PREFIX, add_special_tokens=False).ids
            self._base = [self._backend.id_to_token(t) for t in base]
            self._check_vocabulary(strings)

    def _check_vocabulary(self, strings: Sequence[str]) -> None:
        """ValueError where transformers' StopStringCriteria refuses ``strings`` for this tokenizer: a token's text
        cannot be read (``_compute``), or no token can end any stop string, so that none could ever match. A token
        can end a string where it holds the string's last character (its last byte, for a byte-level or
        byte-fallback vocabulary) and the token's text up to it and the string end one another (transformers' "end
        overlaps": "the" ends "he" and "he" ends "the", but " the" ends neither "xe" nor "thee"). Reads the tokens
        in id order until one can (all of them, to refuse the strings)."""
        ends = [(s.encode("utf-8"), s.encode("utf-8")[-1:] if self._mode else s[-1:].encode("utf-8"))
                for s in strings]
        for token in range(self._backend.get_vocab_size(with_added_tokens=True)):
            got = self.token_bytes(token)
            if any(_can_end(got, s, last) for s, last in ends):
                return
        raise ValueError(f"generate: stop_strings {list(strings)!r}: no token of the tokenizer's vocabulary can end "
                         "any of them, so none could ever match (transformers' StopStringCriteria refuses them too: "
                         "\"unable to identify tokens matching one or more of the supplied stop string(s)\")")

    def token_bytes(self, token: int) -> bytes:
        """The bytes ``token`` stands for (cached)."""
        got = self._bytes.get(token)
        if got is None:
            got = self._bytes[token] = self._compute(token)
        return got

    def _compute(self, token: int) -> bytes:
        if self._backend is None:  # ByteTokenizer: ids 0-255 are the bytes
            return bytes([token]) if 0 <= token < 256 else b""
        name = self._backend.id_to_token(token)
        if name is None:
            return b""
        if self._mode == "byte_level" and all(c in self._byte_level for c in name):
            return bytes(self._byte_level[c] for c in name)
        if (self._mode == "byte_fallback" and len(name) == 6 and name.startswith("<0x") and name.endswith(">")
                and all(c in "0123456789abcdefABCDEF" for c in name[3:5])):
            return bytes([int(name[3:5], 16)])
        decoder = self._backend.decoder
        text = decoder.decode(self._base + [name]) if decoder is not None else " ".join(self._base + [name])
        if _PREFIX not in text:  # transformers' clean_tokenizer_vocab: str.index raises "substring not found"
            raise ValueError(f"generate: stop_strings cannot be matched with this tokenizer: a token's text is read "
                             f"after the text {_PREFIX!r} (as transformers' StopStringCriteria reads it), which this "
                             f"tokenizer does not spell ({self._base!r} + [{name!r}] decodes to {text!r}: a word-level "
                             f"vocabulary without the word {_PREFIX!r}); transformers' generate refuses them too "
                             "(ValueError: substring not found)")
        return text[text.index(_PREFIX) + len(_PREFIX):].encode("utf-8")

    def __call__(self, sequences: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(sequences), bool)
        for r, row in enumerate(sequences[:, -self.window:].tolist()):
            parts = [self.token_bytes(t) for t in row]
            text = b"".join(parts)
            last_start = len(text) - len(parts[-1])
            for s in self.strings:
                # an occurrence ending inside the last token: one starting in (last_start - len(s), len - len(s)]
                i = text.find(s, max(last_start - len(s) + 1, 0))
                if 0 <= i and i + len(s) > last_start:
                    hit[r] = True
                    break
        return hit


class Stopping:
    """transformers' stopping criteria other than the end tokens and the length: ``__call__(sequences)`` is the rows
    that stop after their newest token. ``max_time`` counts from the Stopping's creation (generate's start)."""

    def __init__(self, max_time: Optional[float] = None, stop_strings: Optional[List[str]] = None, tokenizer=None):
        self.max_time, self.start = max_time, time.time()
        self.strings = StopStrings(stop_strings, tokenizer) if stop_strings else None

    @property
    def active(self) -> bool:
        return self.max_time is not None or self.strings is not None

    def __call__(self, sequences: np.ndarray) -> np.ndarray:
        if self.max_time is not None and time.time() - self.start > self.max_time:
            return np.ones(len(sequences), bool)
        return self.strings(sequences) if self.strings is not None else np.zeros(len(sequences), bool)
