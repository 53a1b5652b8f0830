"""Log-probabilities of generated tokens in OpenAI's shapes, for the completions server.

A token's entry (``TokenLogprob``) is the log-softmax of the model's own logits at the place it was drawn
(before penalties and temperature, as transformers and vLLM report them by default): the chosen token's
value and the ``top`` most likely tokens. Answers, streamed or not, get the entries from each decode step's
logits (those the token was drawn from, as transformers' ``compute_transition_scores`` reads generate's raw
logits), computed only for the rows that ask (and, for ``best_of``'s ranking, each generated token's value:
``token_logprob``); only ``echo`` (the prompt's tokens have no decode step) and beam search score the text in one
forward over the whole sequence (``TextGenerator.score``). Both are formatted here, so the streamed chunks' logprobs
put together are the non-streamed answer's, the same numbers:

* completions: ``{"tokens", "token_logprobs", "top_logprobs" ({token text: logprob} of the top ones and
  the chosen one), "text_offset"}``, offsets into prompt + completion text;
* chat: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}],
  "refusal": None}``.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np


class TokenLogprob(NamedTuple):
    token: int
    logprob: float
    top: List[Tuple[int, float]]  # the most likely tokens, most likely first (ties: lower id first)


def log_softmax(logits) -> np.ndarray:
    """float64 log-softmax over the last axis."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def token_logprob(logits, token: int) -> float:
    """``log_softmax(logits)[token]`` for one row of raw logits (V,) or (1, V), the same float64 arithmetic without
    the vocabulary-sized result (best_of's per-token values)."""
    x = np.asarray(logits, np.float64).reshape(-1)
    x = x - x.max()
    return float(x[int(token)] - np.log(np.exp(x).sum()))


def top_ids(logp: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(-logp, kind="stable")[:k]`` (ties: lower id first) without sorting the whole vocabulary:
    the k-th largest of every 32nd value bounds the candidates from below (at least k values reach it)."""
    V = logp.shape[-1]
    if k <= 0:
        return np.zeros(0, np.int64)
    cand = np.arange(V)
    if k * 64 < V:
        sub = logp[::32]
        cand = np.flatnonzero(logp >= np.partition(sub, sub.shape[0] - k)[sub.shape[0] - k])
    vals = logp[cand]
    if cand.shape[0] > k:  # every tie with the k-th largest stays a candidate
        keep = vals >= np.partition(vals, vals.shape[0] - k)[vals.shape[0] - k]
        cand, vals = cand[keep], vals[keep]
    return cand[np.lexsort((cand, -vals))][:k]


def entry(logp: np.ndarray, token: int, top: int) -> TokenLogprob:
    """The entry of ``token`` drawn from the distribution ``logp`` (V,) (log-probabilities)."""
    return TokenLogprob(int(token), float(logp[token]), [(int(b), float(logp[b])) for b in top_ids(logp, top)])


def step_entry(logits, token: int, top: int) -> TokenLogprob:
    """The entry of ``token`` drawn after one decode step's raw ``logits`` (V,) or (1, V)."""
    return entry(log_softmax(np.asarray(logits).reshape(-1)), token, top)


def completion_logprobs(tokenizer, entries: Sequence[Optional[TokenLogprob]], offset: int,
                        shown: Optional[Sequence[int]] = None) -> Tuple[Dict, int]:
    """Completions' logprobs object for ``entries`` whose text starts at character ``offset``, and the offset
    after them. ``shown``: the tokens listed (default the entries'); an entry None (echo's first prompt token)
    lists the token with null log-probabilities."""
    shown = [e.token for e in entries] if shown is None else shown
    strings = [tokenizer.decode([int(t)]) for t in shown]
    offsets = []
    for piece in strings:
        offsets.append(offset)
        offset += len(piece)
    token_lp, tops = [], []
    for e in entries:
        if e is None:
            token_lp.append(None)
            tops.append(None)
            continue
        token_lp.append(e.logprob)
        top = {tokenizer.decode([b]): v for b, v in e.top}
        top[tokenizer.decode([e.token])] = e.logprob
        tops.append(top)
    return {"tokens": strings, "token_logprobs": token_lp, "top_logprobs": tops, "text_offset": offsets}, offset


def chat_logprobs(tokenizer, entries: Sequence[TokenLogprob]) -> Dict:
    """Chat's logprobs object for ``entries``."""
    def one(t, v):
        s = tokenizer.decode([int(t)])
        return {"token": s, "logprob": v, "bytes": list(s.encode("utf-8"))}

    return {"content": [dict(one(e.token, e.logprob), top_logprobs=[one(b, v) for b, v in e.top]) for e in entries],
            "refusal": None}


class StreamLogprobs:
    """Formats each streamed piece's entries, the completions' text offsets continuing from piece to piece
    (each choice's from the end of its prompt's text)."""

    def __init__(self, tokenizer, chat: bool, prompt_chars: Sequence[int]):
        self.tokenizer, self.chat = tokenizer, chat
        self.offsets = list(prompt_chars)  # per choice: where its next token's text starts

    def piece(self, index: int, entries: Optional[Sequence[TokenLogprob]]) -> Optional[Dict]:
        if entries is None:
            return None
        if self.chat:
            return chat_logprobs(self.tokenizer, entries)
        out, self.offsets[index] = completion_logprobs(self.tokenizer, entries, self.offsets[index])
        return out
