"""Word timestamps of the audio API (``timestamp_granularities[]=word``: verbose_json's ``words: [{word, start,
end}]``, as OpenAI's API returns them): a transcript's text tokens grouped into words as transformers' Whisper
tokenizer groups them (``_combine_tokens_into_words``: at every complete unicode character for Chinese, Japanese,
Thai, Lao, Burmese and Cantonese, else at tokens that start with a space or are punctuation; then leading
punctuation joined to the next word and closing punctuation to the one before), each word from the time of the
token before its first (0.0 for the first) to its last token's time, as transformers' ASR pipeline times a word
from the token times of ``generate(..., return_token_timestamps=True)``.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

_NO_SPACES = {"chinese", "japanese", "thai", "lao", "myanmar", "cantonese"}
_PREPEND = "\"'“¡¿([{-"
_APPEND = "\"'.。,，!！?？:：”)]}、"
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

Group = Tuple[List[str], List[List[int]], List[List[int]]]  # words, each word's tokens, each word's token places


def split_on_unicode(decode, tokens: Sequence[int]) -> Group:
    """Tokens cut wherever the ones so far decode to whole characters (no U+FFFD that the full text lacks)."""
    full = decode(list(tokens))
    words, word_tokens, places = [], [], []
    current, at, offset = [], [], 0
    for i, token in enumerate(tokens):
        current.append(token)
        at.append(i)
        text = decode(current)
        bad = text.find("\ufffd")
        if bad < 0 or offset + bad >= len(full) or full[offset + bad] == "\ufffd":
            words.append(text)
            word_tokens.append(current)
            places.append(at)
            current, at = [], []
            offset += len(text)
    return words, word_tokens, places


def split_on_spaces(decode, tokens: Sequence[int], first_special: int) -> Group:
    """The unicode pieces joined into words: a new word at a piece that starts with a space, is punctuation or a
    special token (``first_special`` and above)."""
    words, word_tokens, places = [], [], []
    for text, toks, at in zip(*split_on_unicode(decode, tokens)):
        if toks[0] >= first_special or text.startswith(" ") or text.strip() in _PUNCTUATION or not words:
            words.append(text)
            word_tokens.append(toks)
            places.append(at)
        else:
            words[-1] += text
            word_tokens[-1].extend(toks)
            places[-1].extend(at)
    return words, word_tokens, places


def merge_punctuation(words: List[str], tokens: List[List[int]], places: List[List[int]]) -> Group:
    """Opening punctuation (after a space) joined to the word after it, closing punctuation to the word before it."""
    i, j = len(words) - 2, len(words) - 1
    while i >= 0:
        if words[i].startswith(" ") and words[i].strip() in _PREPEND:
            words[j], tokens[j], places[j] = words[i] + words[j], tokens[i] + tokens[j], places[i] + places[j]
            words[i], tokens[i], places[i] = "", [], []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(words):
        if not words[i].endswith(" ") and words[j] in _APPEND:
            words[i], tokens[i], places[i] = words[i] + words[j], tokens[i] + tokens[j], places[i] + places[j]
            words[j], tokens[j], places[j] = "", [], []
        else:
            i = j
        j += 1
    return [w for w in words if w], [t for t in tokens if t], [p for p in places if p]


def combine_tokens_into_words(decode, tokens: Sequence[int], language: str, first_special: int) -> Group:
    """transformers' ``_combine_tokens_into_words`` for a language name ("english", "japanese", ...)."""
    if language in _NO_SPACES:
        group = split_on_unicode(decode, tokens)
    else:
        group = split_on_spaces(decode, tokens, first_special)
    return merge_punctuation(*group)


def word_timestamps(decode, tokens: Sequence[int], times: Sequence[float], language: str,
                    first_special: int) -> List[dict]:
    """``[{"word", "start", "end"}]`` of a transcript's tokens and their times (seconds, one per token): the text
    tokens (below ``first_special``: no timestamp or special token) grouped into words, each from the time of the
    token before its first one (0.0 at the start) to its last one's, rounded to 10 ms."""
    keep = [i for i, t in enumerate(tokens) if t < first_special]
    words, _, places = combine_tokens_into_words(decode, [tokens[i] for i in keep], language, first_special)
    out = []
    for word, at in zip(words, places):
        first, last = keep[at[0]], keep[at[-1]]
        start = float(times[first - 1]) if first > 0 else 0.0
        out.append({"word": word.strip(), "start": round(start, 2), "end": round(float(times[last]), 2)})
    return out
