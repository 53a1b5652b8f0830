"""Text classification over HTTP for a sequence classifier with several labels (``BertForSequenceClassification``,
``RobertaForSequenceClassification``, ``XLMRobertaForSequenceClassification``, ``ModernBertForSequenceClassification``,
``DebertaV2ForSequenceClassification``, ``MPNetForSequenceClassification``, ``ElectraForSequenceClassification``,
``AlbertForSequenceClassification``: sentiment, topic, NLI models), in vLLM's classify API's shape.

    forgegrad serve CLASSIFIER_DIR   (the app: encoder_app.py)

    POST /v1/classify  (and /classify)  {"input": "text" | ["text", ...], "model": ...}
    -> {"id": "classify-...", "object": "list", "created": ..., "model": ...,
        "data": [{"index": i, "label": ..., "probs": [...], "num_classes": n}, ...], "usage": {...}}

The probabilities are what transformers' text-classification pipeline gives for the model: the softmax of the
logits, or each logit's sigmoid when config.json's ``problem_type`` is "multi_label_classification"; ``label`` is
config.json's ``id2label`` name of the most likely class. Each text is tokenized with its special tokens; a text
longer than the model takes is refused with a 400 naming ``input``.
"""
from __future__ import annotations

import time
import uuid
from typing import List, Tuple

import numpy as np

from .completion_request import bad, request_object, served_model
from .embeddings import checked_length, context, encode_checked, length_batches, load_encoder

MAX_INPUTS = 2048
_FIELDS = {"model", "input", "user"}


def labels_of(cfg: dict) -> int:
    return int(cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2)


class Classifier:
    """A sequence classifier and its tokenizer; ``embed`` runs on one thread at a time (the server's worker)."""

    def __init__(self, path: str, weights: str = "float32", max_batch: int = 32):
        self.model, self.tokenizer = load_encoder(path, weights)
        cfg = self.model.config
        self.num_classes = labels_of(cfg)
        names = cfg.get("id2label") or {}
        self.names = [str(names.get(str(i), names.get(i, f"LABEL_{i}"))) for i in range(self.num_classes)]
        self.multi_label = cfg.get("problem_type") == "multi_label_classification"
        self.context = context(path, self.model.encoder.max_tokens)
        self.max_batch = max_batch

    def describe(self) -> str:
        return f"{self.num_classes} classes, up to {self.context} tokens"

    def token_ids(self, text: str, index: int) -> List[int]:
        return checked_length(encode_checked(self.tokenizer, text, index, self.context), index, self.context)

    def embed(self, rows: List[List[int]]) -> np.ndarray:
        """(len(rows), num_classes) probabilities; similar lengths run together."""
        out = np.empty((len(rows), self.num_classes), np.float64)
        for batch in length_batches([len(r) for r in rows], self.max_batch):
            z = self.model.score_packed([rows[i] for i in batch]).astype(np.float64)
            if self.multi_label:
                out[batch] = 1.0 / (1.0 + np.exp(-z))
            else:
                e = np.exp(z - z.max(axis=1, keepdims=True))
                out[batch] = e / e.sum(axis=1, keepdims=True)
        return out

    async def answer(self, body: bytes, name: str, run) -> Tuple[dict, int]:
        obj = request_object(body, _FIELDS, {})
        served_model(obj, name)
        texts = obj.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        expected = f"a non-empty string or a list of up to {MAX_INPUTS} of them"
        if not isinstance(texts, list) or not texts or len(texts) > MAX_INPUTS or not all(
                isinstance(t, str) and t for t in texts):
            raise bad("input", expected, obj.get("input"))
        ids = [self.token_ids(t, i) for i, t in enumerate(texts)]
        probs = await run(ids)
        data = [{"index": i, "label": self.names[int(np.argmax(p))], "probs": [float(x) for x in p],
                 "num_classes": self.num_classes} for i, p in enumerate(probs)]
        tokens = sum(len(x) for x in ids)
        return {"id": "classify-" + uuid.uuid4().hex, "object": "list", "created": int(time.time()), "model": name,
                "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, tokens
