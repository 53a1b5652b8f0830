"""Tokenizers for checkpoint directories: ``tokenizer.json`` through the ``tokenizers`` package (the
optional extra ``hf``), or bytes as tokens when a directory has none."""
from __future__ import annotations

import os
from typing import List, Optional, Set, Tuple

__all__ = ["load_tokenizer", "eos_token_ids", "ByteTokenizer", "HFTokenizer"]


class ByteTokenizer:
    """Each UTF-8 byte is a token (ids 0-255): the fallback for models without ``tokenizer.json``
    whose vocabulary has at least 256 entries (byte-level models such as forgegrad's ``gpt``)."""

    name = "bytes"
    eos_token_id: Optional[int] = None

    def encode(self, text: str, add_special_tokens: bool = False) -> List[int]:
        return list(text.encode("utf-8"))  # no special tokens to add

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def token_id(self, token: str) -> Optional[int]:
        return None  # byte tokens have no names

    def encode_source(self, text: str, language: int) -> List[int]:
        raise ValueError("byte tokens have no language tokens (the checkpoint has no tokenizer.json)")

    def encode_pair(self, first: str, second: str, max_length: int) -> Tuple[List[int], List[int]]:
        raise ValueError("byte tokens have no way to join a text pair (the checkpoint has no tokenizer.json)")


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` read from ``tokenizer.json``."""

    name = "tokenizer.json"

    def __init__(self, path: str, eos_token_id: Optional[int] = None):
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ImportError('reading tokenizer.json needs the tokenizers package: pip install "forgegrad[hf]"') from e
        try:
            self._tok = Tokenizer.from_file(path)
        except Exception as e:  # the package raises its own Exception type for a malformed file
            raise ValueError(f"load_tokenizer: {path!r} is not a valid tokenizer.json: {e}") from None
        self.eos_token_id = eos_token_id
        self.path = path
        self._pair = None  # (max_length, a copy of the tokenizer truncating pairs to it), made on first use
        # copies of the tokenizer for encode_pair_windows, made on first use and never changed after (a server's
        # threads share them): one that cuts nothing, and per (max_length, stride, cut) one cutting a text
        self._whole, self._windows = None, {}

    def encode(self, text: str, add_special_tokens: bool = False) -> List[int]:
        """Token ids of ``text``; ``add_special_tokens``: the tokenizer's post-processing too (the end-of-sequence
        token T5's encoder input ends with), which a decoder's prompt does not take."""
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; ``skip_special_tokens``: without the special tokens (an encoder-decoder's output, which
        begins with a forced start token), as transformers' pipelines decode it."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> Optional[int]:
        """The id of a token of the vocabulary by its name (a language code such as ``fra_Latn``), else None."""
        return self._tok.token_to_id(token)

    def special_ids(self) -> List[int]:
        """The ids of the tokenizer's special added tokens (transformers' ``all_special_ids`` of a tokenizer.json
        alone), sorted."""
        return sorted(i for i, t in self._tok.get_added_tokens_decoder().items() if t.special)

    def encode_pair(self, first: str, second: str, max_length: int) -> Tuple[List[int], List[int]]:
        """(token ids, token type ids) of a text pair joined by the tokenizer's post-processor ([CLS] first [SEP]
        second [SEP]; RoBERTa's <s> first </s></s> second </s>), cut longest-first to ``max_length`` tokens, as
        transformers' ``tokenizer(first, second, truncation=True, max_length=...)`` cuts it."""
        pair = self._pair
        if pair is None or pair[0] != max_length:
            from tokenizers import Tokenizer
            t = Tokenizer.from_str(self._tok.to_str())  # a copy: truncation is the tokenizer's state
            t.no_padding()
            t.enable_truncation(max_length, strategy="longest_first")
            pair = self._pair = (max_length, t)
        enc = pair[1].encode(first, second, add_special_tokens=True)
        return enc.ids, enc.type_ids

    def encode_pair_windows(self, first: str, second: str, max_length: int, stride: int,
                            cut: str = "only_second") -> list:
        """A text pair (a question, then its context) as windows of at most ``max_length`` tokens: only the second
        text is cut, each window after the first repeating the last ``stride`` second-text tokens of the one before,
        as transformers' ``tokenizer(first, second, truncation="only_second", max_length=..., stride=...,
        return_overflowing_tokens=True)`` makes them; ``cut="only_first"``: only the first text is cut (a context
        before its question, as for a tokenizer that pads on the left). Returns the ``tokenizers.Encoding`` of each
        window (ids, type_ids, offsets, sequence ids, words). Raises ValueError when the text kept whole leaves no
        room."""
        if cut not in ("only_first", "only_second"):
            raise ValueError(f"encode_pair_windows: cut must be 'only_first' or 'only_second', got {cut!r}")
        which, kept = (0, "second") if cut == "only_first" else (1, "first")
        from tokenizers import Tokenizer
        if self._whole is None:
            t = Tokenizer.from_str(self._tok.to_str())  # a copy: truncation and padding are the tokenizer's state
            t.no_padding()
            t.no_truncation()
            self._whole = t
        whole = self._whole.encode(first, second, add_special_tokens=True)
        if len(whole) > max_length:  # checked here: the tokenizers package panics (not an Exception) on a stride
            others = sum(s != which for s in whole.sequence_ids)  # the kept text's tokens and the special ones
            room = max_length - others
            cut_text = "second" if which else "first"
            if room <= 0:
                raise ValueError(f"encode_pair_windows: the {kept} text ({others} tokens with the special ones) does "
                                 f"not leave room for the {cut_text} in max_length {max_length} tokens")
            if stride >= room:
                raise ValueError(f"encode_pair_windows: stride {stride} must be less than the {room} tokens of the "
                                 f"{cut_text} text a window of max_length {max_length} holds")
        windows = self._windows.get((max_length, stride, cut))
        if windows is None:
            windows = Tokenizer.from_str(self._whole.to_str())
            windows.enable_truncation(max_length, stride=stride, strategy=cut)
            if len(self._windows) >= 8:
                self._windows = {}  # replaced, not cleared: another thread may be reading the old one
            self._windows[(max_length, stride, cut)] = windows
        enc = windows.encode(first, second, add_special_tokens=True)
        return [enc] + list(enc.overflowing)

    @property
    def cls_token_id(self) -> Optional[int]:
        """The classifier token's id (BERT's [CLS], RoBERTa's <s>): tokenizer_config.json's ``cls_token`` beside
        tokenizer.json where it names one, else the token a text pair's template starts with when it is a
        special token; None when neither says."""
        config = _json_object(os.path.join(os.path.dirname(self.path), "tokenizer_config.json"))
        if "cls_token" in config:
            token = config["cls_token"]
            token = token.get("content") if isinstance(token, dict) else token
            return self._tok.token_to_id(token) if isinstance(token, str) else None
        enc = self._tok.encode("a", "b", add_special_tokens=True)
        return enc.ids[0] if enc.special_tokens_mask and enc.special_tokens_mask[0] else None

    @property
    def padding_side(self) -> str:
        """Which side a batch is padded on, "left" or "right", as transformers' tokenizer reads it:
        tokenizer_config.json's ``padding_side`` beside tokenizer.json, else tokenizer.json's padding direction, else
        "right"."""
        side = _json_object(os.path.join(os.path.dirname(self.path), "tokenizer_config.json")).get("padding_side")
        if side in ("left", "right"):
            return side
        padding = self._tok.padding
        return "left" if padding and str(padding.get("direction", "")).lower() == "left" else "right"

    @property
    def model_max_length(self) -> Optional[int]:
        """tokenizer_config.json's ``model_max_length`` beside tokenizer.json (the longest input the checkpoint
        was trained on), or None."""
        n = _json_object(os.path.join(os.path.dirname(self.path), "tokenizer_config.json")).get("model_max_length")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None

    def encode_source(self, text: str, language: int) -> List[int]:
        """``encode(text, add_special_tokens=True)`` with the source-language token the post-processor adds
        (mBART-50's and NLLB's templates add the one they were saved with, e.g. ``eng_Latn $A </s>``) replaced by
        ``language``, as transformers' tokenizers do for ``src_lang``. Raises ValueError when the template adds no
        token besides the end token."""
        plain, full = self.encode(text), self.encode(text, add_special_tokens=True)
        start = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), None)
        if start is None:
            raise ValueError("encode_source: the tokenizer's post-processor changes the text's tokens")
        added = [i for i in range(len(full)) if not start <= i < start + len(plain) and full[i] != self.eos_token_id]
        if len(added) != 1:
            raise ValueError(f"encode_source: the tokenizer adds {len(added)} tokens besides the end token, not one "
                             "language token to replace")
        full[added[0]] = int(language)
        return full


def load_tokenizer(path, vocab_size: int, eos_token_id: Optional[int] = None):
    """The tokenizer of a checkpoint directory: ``tokenizer.json`` if present, else bytes (which needs
    ``vocab_size >= 256``)."""
    file = os.path.join(os.fspath(path), "tokenizer.json")
    if os.path.isfile(file):
        return HFTokenizer(file, eos_token_id)
    if vocab_size < 256:
        raise ValueError(f"load_tokenizer: {os.fspath(path)!r} has no tokenizer.json and its vocabulary "
                         f"({vocab_size}) is too small for byte tokens; pass token ids instead")
    return ByteTokenizer()


def eos_token_ids(path, config: dict, vocab_size: int) -> Set[int]:
    """The ids that end generation: ``eos_token_id`` of config.json (``config``) and of the directory's
    generation_config.json (chat models often list their end-of-turn token only there)."""
    ids = []
    for source in (config, _json_object(os.path.join(os.fspath(path), "generation_config.json"))):
        eos = source.get("eos_token_id")
        ids += [eos] if isinstance(eos, int) else (eos if isinstance(eos, list) else [])
    return {int(e) for e in ids if isinstance(e, int) and not isinstance(e, bool) and 0 <= e < vocab_size}


def _json_object(file: str) -> dict:
    """generation_config.json is optional: a missing or unreadable one adds nothing."""
    from ._files import read_json_object
    try:
        return read_json_object(file, "eos_token_ids")
    except (OSError, ValueError):
        return {}
