"""Reranking over HTTP for a cross-encoder checkpoint (a one-label ``BertForSequenceClassification``,
``RobertaForSequenceClassification``, ``XLMRobertaForSequenceClassification``, ``ModernBertForSequenceClassification``,
``DistilBertForSequenceClassification``, ``DebertaV2ForSequenceClassification``, ``MPNetForSequenceClassification``,
``ElectraForSequenceClassification`` or ``AlbertForSequenceClassification``: the ms-marco cross-encoders,
bge-reranker, gte-reranker-modernbert, the DeBERTa-v3 cross-encoders), in the
rerank API's shape (Cohere's, Jina's and vLLM's).

    forgegrad serve RERANKER_DIR   (the app: encoder_app.py)

    POST /v1/rerank  (and /rerank)  {"query": "...", "documents": ["...", ...] or [{"text": "..."}, ...],
                                      "top_n": k, "return_documents": true, "model": ...}
    -> {"id": "rerank-...", "model": ..., "usage": {"total_tokens": ...},
        "results": [{"index": i, "relevance_score": s, "document": {"text": ...}}, ...]}   (best first)
    POST /v1/score  (and /score)  {"text_1": "..." or [...], "text_2": "..." or [...]}   (vLLM's)
    -> {"id": "score-...", "object": "list", "data": [{"index": i, "object": "score", "score": s}, ...], ...}

Each document is scored paired with the query as sentence-transformers' ``CrossEncoder.predict`` scores it: the
tokenizer joins the pair ([CLS] query [SEP] document [SEP], the document's tokens of type 1; RoBERTa's <s> query
</s></s> document </s>), a pair longer than the model takes is cut longest-first (the tokenizer's truncation, as
CrossEncoder's), and the logit goes through CrossEncoder's activation: the sigmoid for one label, unless config.json
names another (``sentence_transformers.activation_fn``, or the older ``sbert_ce_default_activation_function``).
"""
from __future__ import annotations

import time
import uuid
from typing import List, Optional, Tuple

import numpy as np

from .completion_request import bad, flag, is_int, request_object, served_model
from .embeddings import checkpoint_kind, context, length_batches, load_encoder, text_head

MAX_DOCUMENTS = 1000
_FIELDS = {"model", "query", "documents", "top_n", "return_documents", "user"}
_CLASSIFIERS = ("BertForSequenceClassification", "RobertaForSequenceClassification",
                "XLMRobertaForSequenceClassification", "ModernBertForSequenceClassification",
                "DistilBertForSequenceClassification", "DebertaV2ForSequenceClassification",
                "MPNetForSequenceClassification", "ElectraForSequenceClassification",
                "AlbertForSequenceClassification")


def is_reranker_checkpoint(path: str) -> bool:
    """Whether a checkpoint directory holds a sequence classifier that forgegrad serves (one label: as a reranker,
    several: at /v1/classify, classify.py)."""
    return checkpoint_kind(path)[0] in _CLASSIFIERS


def _activation(cfg: dict, labels: int) -> bool:
    """Whether scores go through the sigmoid (CrossEncoder's default for one label), from config.json."""
    named = (cfg.get("sentence_transformers") or {}).get("activation_fn") if isinstance(
        cfg.get("sentence_transformers"), dict) else None
    named = named or cfg.get("sbert_ce_default_activation_function")
    if named is None:
        return labels == 1
    last = str(named).rsplit(".", 1)[-1]
    if last in ("Sigmoid", "Identity"):
        return last == "Sigmoid"
    raise ValueError(f"config.json names the activation {named!r}; forgegrad applies Sigmoid or Identity")


class Reranker:
    """A cross-encoder and its tokenizer; ``embed`` runs on one thread at a time (the server's worker)."""

    def __init__(self, path: str, weights: str = "float32", max_batch: int = 32):
        from .classify import labels_of
        self.model, self.tokenizer = load_encoder(path, weights)
        labels = labels_of(self.model.config)
        if labels != 1:
            raise ValueError(f"a reranker scores with one label; this classifier has {labels}")
        self.sigmoid = _activation(self.model.config, labels)
        self.context = context(path, self.model.encoder.max_tokens)
        self.max_batch = max_batch

    def describe(self) -> str:
        return f"pairs of up to {self.context} tokens, {'sigmoid' if self.sigmoid else 'raw'} scores"

    def embed(self, pairs: List[Tuple[List[int], List[int]]]) -> np.ndarray:
        """The scores (len(pairs),) of (token ids, token type ids) pairs; similar lengths run together."""
        out = np.empty(len(pairs), np.float32)
        for rows in length_batches([len(p[0]) for p in pairs], self.max_batch):
            logits = self.model.score_packed([pairs[i][0] for i in rows], [pairs[i][1] for i in rows])[:, 0]
            out[rows] = 1.0 / (1.0 + np.exp(-logits.astype(np.float64))) if self.sigmoid else logits
        return out

    def head(self, text: str) -> str:
        """``text``, or a beginning of it whose tokens are the whole text's first ones and more than the pair may keep
        (embeddings.text_head), so that the pair is cut the same without tokenizing the megabytes the cut drops."""
        return text_head(text, self.context, self._count)

    def _count(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def pair(self, first: str, second: str):
        """(token ids, token type ids) of the pair, cut longest-first to the context (the tokenizer's truncation).
        Where both texts are past the context, the longer keeps one token more (an odd room): a text is cut first
        only where it stays the longer of the two (both cut: tokenized whole, as their order is not known)."""
        heads = [self.head(first), self.head(second)]
        cut = [h is not t for h, t in zip(heads, (first, second))]
        if all(cut):
            heads = [first, second]
        elif any(cut):
            i = cut.index(True)
            if self._count(heads[i]) <= self._count(heads[1 - i]):
                heads[i] = (first, second)[i]
        return self.tokenizer.encode_pair(heads[0], heads[1], self.context)

    async def score(self, body: bytes, name: str, run) -> Tuple[dict, int]:
        """The score API's answer (vLLM's ``/v1/score``): each text pair's score, in the request's order."""
        pairs = [self.pair(a, b) for a, b in parse_score(body, name)]
        return score_response(name, await run(pairs), sum(len(p[0]) for p in pairs))

    async def answer(self, body: bytes, name: str, run) -> Tuple[dict, int]:
        query, documents, top_n, return_documents = parse(body, name)
        pairs = [self.pair(query, d) for d in documents]
        scores = await run(pairs)
        order = sorted(range(len(documents)), key=lambda i: -float(scores[i]))[:top_n]
        results = []
        for i in order:
            item = {"index": i, "relevance_score": float(scores[i])}
            if return_documents:
                item["document"] = {"text": documents[i]}
            results.append(item)
        tokens = sum(len(p[0]) for p in pairs)
        return {"id": "rerank-" + uuid.uuid4().hex, "model": name, "results": results,
                "usage": {"total_tokens": tokens}}, tokens


def score_response(name: str, scores, tokens: int) -> Tuple[dict, int]:
    """The score API's answer (vLLM's shape) for ``scores`` in the request's order, and the tokens counted."""
    return {"id": "score-" + uuid.uuid4().hex, "object": "list", "created": int(time.time()), "model": name,
            "data": [{"index": i, "object": "score", "score": float(s)} for i, s in enumerate(scores)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, tokens


def _texts(obj: dict, key: str) -> List[str]:
    v = obj.get(key)
    texts = [v] if isinstance(v, str) else v
    if not isinstance(texts, list) or not texts or len(texts) > MAX_DOCUMENTS or not all(
            isinstance(t, str) and t for t in texts):
        raise bad(key, f"a non-empty string or a list of up to {MAX_DOCUMENTS} of them", v)
    return texts


def parse_score(body: bytes, served_name: str) -> List[Tuple[str, str]]:
    """The (text_1, text_2) pairs of a score request (vLLM's): one text against each of a list, or two lists of
    the same length pair by pair."""
    obj = request_object(body, {"model", "text_1", "text_2", "user"}, {})
    served_model(obj, served_name)
    first, second = _texts(obj, "text_1"), _texts(obj, "text_2")
    if len(first) == 1:
        first = first * len(second)
    if len(first) != len(second):
        raise bad("text_2", f"one text, or as many texts as text_1 ({len(first)})", obj.get("text_2"))
    return list(zip(first, second))


def parse(body: bytes, served_name: str) -> Tuple[str, List[str], int, bool]:
    """(query, documents, top_n, return_documents) of a rerank request, or CompletionError naming the field."""
    obj = request_object(body, _FIELDS, {})
    query = obj.get("query")
    if not isinstance(query, str) or not query:
        raise bad("query", "a non-empty string", query)
    docs = obj.get("documents")
    expected = f'a non-empty list of up to {MAX_DOCUMENTS} strings or {{"text": ...}} objects'
    if not isinstance(docs, list) or not docs or len(docs) > MAX_DOCUMENTS:
        raise bad("documents", expected, docs)
    texts = []
    for d in docs:
        text = d.get("text") if isinstance(d, dict) else d
        if not isinstance(text, str) or not text:
            raise bad("documents", expected, d)
        texts.append(text)
    top_n: Optional[int] = obj.get("top_n")
    if top_n is not None and (not is_int(top_n) or top_n < 1):
        raise bad("top_n", "an integer >= 1", top_n)
    served_model(obj, served_name)
    keep = obj.get("return_documents")
    return query, texts, len(texts) if top_n is None else int(top_n), True if keep is None else flag(
        obj, "return_documents")
