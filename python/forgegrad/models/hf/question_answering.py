"""Answer spans from a question-answering model's start / end logits, as transformers' ``question-answering``
pipeline finds them (its last release, 4.57: transformers 5 removed the pipeline; its span selection lives on in
``transformers.pipelines.document_question_answering.select_starts_ends``).

    >>> model = forgegrad.models.from_pretrained("path/to/bert-squad")
    >>> tok = forgegrad.models.hf.tokenizer.load_tokenizer("path/to/bert-squad", model.config["vocab_size"])
    >>> forgegrad.models.hf.answer_question(model, tok, "Where do I live?", "My name is Wolfgang and I live in Berlin")
    {'score': 0.91..., 'start': 34, 'end': 40, 'answer': 'Berlin'}

The question and the context are joined by the tokenizer's pair template (question first; context first for a
tokenizer that pads on the left, as the pipeline orders them), the context cut into
windows of ``max_seq_len`` tokens that overlap by ``doc_stride`` tokens; in each window the tokens that are not the
context's (the question's, the separators; the classifier token excepted) are kept out of the softmax of the start
and of the end logits; a span's score is P(start) * P(end) over spans of at most ``max_answer_len`` tokens that end
no earlier than they start; its characters are the words its first and last tokens belong to.
"""
from __future__ import annotations

import os
from typing import List, Union

import numpy as np

from ...autograd import no_grad
from .task_heads import QuestionAnswering

__all__ = ["answer_question", "select_spans"]


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"answer_question: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"answer_question: {name} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"answer_question: {name} must not be empty")
    return value


def select_spans(start: np.ndarray, end: np.ndarray, allowed: np.ndarray, top_k: int, max_answer_len: int):
    """The pipeline's span selection in one window (``select_starts_ends``): ``start`` / ``end`` the logits (T,),
    ``allowed`` where an answer may lie (T,) bool (the context's tokens, and the classifier token). Returns
    (starts, ends, scores, null score): the ``top_k`` best (start, end) token pairs by P(start) * P(end), the
    softmaxes over the allowed tokens, and P(start) * P(end) of token 0 (the "no answer" score)."""
    start = np.where(allowed, start, -10000.0)[None]  # (1, T) float32, as the pipeline's
    end = np.where(allowed, end, -10000.0)[None]
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    null = (start[0, 0] * end[0, 0]).item()
    start[0, 0] = end[0, 0] = 0.0  # token 0 (the classifier token) answers nothing
    # every (start, end) pair's score, pairs ending before they start or longer than max_answer_len zeroed
    candidates = np.tril(np.triu(np.matmul(start[..., None], end[:, None])), max_answer_len - 1)
    flat = candidates.flatten()
    # the same selection calls as the pipeline: ties (the zeroed pairs) are broken as it breaks them
    if top_k == 1:
        order = [np.argmax(flat)]
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        idx = np.argpartition(-flat, top_k)[0:top_k]
        order = idx[np.argsort(-flat[idx])]
    starts, ends = np.unravel_index(order, candidates.shape)[1:]
    # the pipeline tests membership in the (row, column) pair nonzero() gives for its (1, T) mask: the rows are
    # all 0, so token 0 always passes (with score 0); kept, so that the zero-scored tail of top_k is its
    places = allowed[None].nonzero()
    keep = np.isin(starts, places) & np.isin(ends, places)
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[0, starts, ends], null


def _characters(enc, s: int, e: int, align_to_words: bool, sequence: int = 1):
    """The context's characters of tokens s..e (the context the pair's text ``sequence``): from the start of s's
    word to the end of e's word (a token inside a word takes the whole word), or the tokens' own offsets where they
    have no word (or align_to_words is off)."""
    if align_to_words:
        try:
            return (enc.word_to_chars(enc.token_to_word(s), sequence_index=sequence)[0],
                    enc.word_to_chars(enc.token_to_word(e), sequence_index=sequence)[1])
        except Exception:  # no word (a special token) or a tokenizer without words: the offsets, as the pipeline
            pass
    return enc.offsets[s][0], enc.offsets[e][1]


def answer_question(model, tokenizer, question: str, context: str, top_k: int = 1, max_answer_len: int = 15,
                    handle_impossible_answer: bool = False, doc_stride=None, max_seq_len=None,
                    align_to_words: bool = True) -> Union[dict, List[dict]]:
    """The answers to ``question`` in ``context`` by an extractive question-answering model, as transformers'
    ``pipeline("question-answering")`` gives them for the same model and tokenizer: each a dict ``{"score",
    "start", "end", "answer"}`` (``context[start:end] == answer``), best first.

    Args:
        model: a question-answering model (``BertForQuestionAnswering``, ``RobertaForQuestionAnswering``,
            ``XLMRobertaForQuestionAnswering``, ``DistilBertForQuestionAnswering``,
            ``ModernBertForQuestionAnswering``, ``DebertaV2ForQuestionAnswering``), in eval mode.
        tokenizer: its tokenizer (``load_tokenizer(DIR, vocab_size)``, a ``tokenizer.json``), or the directory
            holding its tokenizer.json.
        top_k: how many answers (fewer when the context has fewer spans). 1 returns the dict, more a list.
        max_answer_len: the most tokens an answer may have.
        handle_impossible_answer: also offer the empty answer ``{"start": 0, "end": 0, "answer": ""}``, scored by
            the lowest P(start) * P(end) of the classifier token over the windows.
        doc_stride: how many context tokens consecutive windows share; default ``min(max_seq_len // 2, 128)``.
        max_seq_len: the most tokens of a window (question, context and special tokens); default 384, or the
            tokenizer's ``model_max_length`` (tokenizer_config.json) where smaller.
        align_to_words: widen an answer to whole words (the pipeline's default).

    Answers of the same text (case-insensitive) found in several windows add their scores, as the pipeline's do.
    A tokenizer that pads on the left (``padding_side`` "left" in tokenizer_config.json, or tokenizer.json's padding)
    puts the context first and the question second, the context cut into the windows, as the pipeline and
    transformers' SQuAD script (run_qa.py) give such a model its input; answers are read in the context's tokens
    only, where the pipeline lets that order's answers fall in the question too (its mask, ``tok != 1 if
    question_first else 0``, keeps no token out there, and their characters are then read from the context by word
    number: a bug). Differences from the pipeline besides: windows run as one batch padded on the right (each row's
    positions from 0, as the pipeline's one window at a time); ``top_k=1`` always returns a dict and ``top_k > 1``
    always a list (the pipeline returns a lone answer as a dict).

    Raises:
        TypeError: a model without a question-answering head, a question or context that is not a str.
        ValueError: an empty question or context, top_k or max_answer_len < 1, a doc_stride larger than
            max_seq_len, a question that leaves no room for the context in max_seq_len tokens.
        RuntimeError: a model in training mode.
    """
    from .tokenizer import HFTokenizer, load_tokenizer
    if not isinstance(model, QuestionAnswering):
        raise TypeError(f"answer_question: model must be a question-answering model (e.g. BertForQuestionAnswering),"
                        f" got {type(model).__name__}")
    if model.training:
        raise RuntimeError("answer_question: inference only; call model.eval() first")
    if isinstance(tokenizer, (str, os.PathLike)):
        if not os.path.isfile(os.path.join(os.fspath(tokenizer), "tokenizer.json")):
            raise ValueError(f"answer_question: {os.fspath(tokenizer)!r} holds no tokenizer.json")
        tokenizer = load_tokenizer(tokenizer, 0)
    if not isinstance(tokenizer, HFTokenizer):
        raise TypeError(f"answer_question: tokenizer must be a tokenizer.json tokenizer (load_tokenizer), got "
                        f"{type(tokenizer).__name__}")
    question, context = _text(question, "question"), _text(context, "context")
    top_k = _positive_int(top_k, "top_k")
    max_answer_len = _positive_int(max_answer_len, "max_answer_len")
    if max_seq_len is None:
        max_seq_len = min(tokenizer.model_max_length or 384, 384)
    max_seq_len = _positive_int(max_seq_len, "max_seq_len")
    doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else _positive_int(doc_stride, "doc_stride", 0)
    if doc_stride > max_seq_len:
        raise ValueError(f"answer_question: doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})")

    context_first = tokenizer.padding_side == "left"  # the pipeline's and run_qa.py's order for such a tokenizer
    ctx = 0 if context_first else 1  # the context's sequence index in each window
    try:
        windows = (tokenizer.encode_pair_windows(context, question, max_seq_len, doc_stride, cut="only_first")
                   if context_first else tokenizer.encode_pair_windows(question, context, max_seq_len, doc_stride))
    except ValueError as e:  # the tokenizer's words (max_length, stride) named as this function's arguments
        raise ValueError(f"answer_question: max_seq_len {max_seq_len} and doc_stride {doc_stride} do not fit the "
                         f"question: {str(e).split(': ', 1)[-1]}") from None
    pad = model.config.get("pad_token_id")
    ids = np.full((len(windows), max(len(w.ids) for w in windows)), 0 if pad is None else pad, np.int64)
    types, mask = np.zeros_like(ids), np.zeros_like(ids)
    for i, w in enumerate(windows):
        n = len(w.ids)
        ids[i, :n], types[i, :n], mask[i, :n] = w.ids, w.type_ids, 1
    # token types only where the model has a table for a second text (BERT's; RoBERTa's has one row)
    with_types = int(model.config.get("type_vocab_size", 2)) > 1
    with no_grad():
        out = model(ids, mask, types if with_types else None)
    starts_all, ends_all = out.start_logits.numpy(), out.end_logits.numpy()

    cls = tokenizer.cls_token_id
    answers, null_score = [], 1000000.0
    for i, enc in enumerate(windows):
        n = len(enc.ids)
        # an answer lies in the context, or is the classifier token (some models mark "no answer")
        allowed = np.array([sid == ctx for sid in enc.sequence_ids], bool)
        if cls is not None:
            allowed |= np.asarray(enc.ids) == cls
        starts, ends, scores, null = select_spans(starts_all[i, :n], ends_all[i, :n], allowed,
                                                  top_k * 2 + 10 if align_to_words else top_k, max_answer_len)
        null_score = min(null_score, null)
        for s, e, score in zip(starts, ends, scores):
            a, b = _characters(enc, int(s), int(e), align_to_words, ctx)
            text = context[a:b]
            same = next((x for x in answers if x["answer"].lower() == text.lower()), None)
            if same is not None:
                same["score"] += score.item()
            else:
                answers.append({"score": score.item(), "start": a, "end": b, "answer": text})
    if handle_impossible_answer:
        answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
    return answers[0] if top_k == 1 else answers
