"""ELECTRA (transformers' ``ElectraModel``, ``ElectraForSequenceClassification`` and the discriminator,
``ElectraForPreTraining``), with transformers' parameter names.

ELECTRA's encoder is BERT's (post-norm layers, learned absolute positions, token types, the same parameter names),
without a pooler, whose embeddings are ``embedding_size`` wide: where that differs from ``hidden_size`` (the small
models: 128 -> 256) the embeddings' LayerNorm output goes through ``embeddings_project`` (a Linear) before the first
layer. So ``ElectraModel`` is a ``BertModel`` with narrower embeddings and that projection (``embed``), and it shares
BERT's packed path (``encode_packed``), serving and ONNX export. The sequence classifier's head is RoBERTa's with
GELU (not tanh) between its two Linears, as ELECTRA's authors trained it; the discriminator scores each token
(replaced or original) with dense -> ``hidden_act`` -> dense_prediction.
"""
from __future__ import annotations

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import activation
from .bert import BertEmbeddings, BertForSequenceClassification, BertModel

__all__ = ["ElectraModel", "ElectraForSequenceClassification", "ElectraForPreTraining"]


def _embedding_size(config: dict) -> int:
    activation(config.get("hidden_act", "gelu"), "ElectraModel: config hidden_act")  # named before BERT's layers
    v = config.get("embedding_size", 128)  # transformers' ElectraConfig default (not the hidden size)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"ElectraModel: config embedding_size must be a positive integer, got {v!r}")
    return v


class ElectraModel(BertModel):
    """ELECTRA's encoder: ``forward(input_ids, attention_mask=None, token_type_ids=None)`` returns
    ``BertOutput(last_hidden_state (B, T, hidden), None)``."""

    architecture = "ElectraModel"
    model_type = "electra"
    prefix = "electra."

    def __init__(self, config: dict, add_pooling_layer: bool = False):
        E = _embedding_size(config)
        super().__init__(config, add_pooling_layer=False)
        self.embeddings = BertEmbeddings(dict(self.config, hidden_size=E))
        self.embeddings_project = nn.Linear(E, self.config["hidden_size"]) if E != self.config["hidden_size"] \
            else None

    def embed(self, ids, types, positions) -> Tensor:
        x = self.embeddings(ids, types, positions)
        return x if self.embeddings_project is None else self.embeddings_project(x)


class _ElectraTask(nn.Module):
    """An ELECTRA task model: the encoder under ``electra.`` and a head."""

    def _build(self, config: dict) -> None:
        self.config = dict(config)
        self.electra = ElectraModel(self.config)

    @property
    def encoder(self) -> ElectraModel:
        return self.electra

    from_hf = staticmethod(BertModel.from_hf)
    to_hf = BertModel.to_hf


class ElectraClassificationHead(nn.Module):
    """dropout -> dense -> GELU -> dropout -> out_proj over the first token."""

    def __init__(self, cfg: dict, labels: int):
        super().__init__()
        E = cfg["hidden_size"]
        self.dense, self.out_proj = nn.Linear(E, E), nn.Linear(E, labels)
        p = cfg.get("classifier_dropout")
        self.dropout = nn.Dropout(cfg.get("hidden_dropout_prob", 0.1) if p is None else p)

    def forward(self, first: Tensor) -> Tensor:
        return self.out_proj(self.dropout(F.gelu(self.dense(self.dropout(first)))))


class ElectraForSequenceClassification(_ElectraTask):
    """ELECTRA + its classification head over the first token: transformers' ``ElectraForSequenceClassification``;
    ``forward`` returns the logits (B, num_labels)."""

    architecture = "ElectraForSequenceClassification"
    model_type = "electra"

    def __init__(self, config: dict):
        super().__init__()
        self._build(config)
        labels = self.config.get("num_labels") or len(self.config.get("id2label") or {}) or 2
        self.classifier = ElectraClassificationHead(self.config, labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.classifier(self.electra(input_ids, attention_mask, token_type_ids).last_hidden_state[:, 0])

    def head(self, first: Tensor) -> Tensor:
        return self.classifier(first)

    score_packed = BertForSequenceClassification.score_packed


class ElectraDiscriminatorPredictions(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E = cfg["hidden_size"]
        self.dense, self.dense_prediction = nn.Linear(E, E), nn.Linear(E, 1)
        self.act = activation(cfg.get("hidden_act", "gelu"), "ElectraForPreTraining")

    def forward(self, x: Tensor) -> Tensor:
        return self.dense_prediction(self.act(self.dense(x))).squeeze(-1)


class ElectraForPreTraining(_ElectraTask):
    """ELECTRA's discriminator (transformers' ``ElectraForPreTraining``, what the released ``*-discriminator``
    checkpoints are): ``forward`` returns each token's logit of having been replaced (B, T)."""

    architecture = "ElectraForPreTraining"
    model_type = "electra"

    def __init__(self, config: dict):
        super().__init__()
        self._build(config)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(self.config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        x = self.electra(input_ids, attention_mask, token_type_ids).last_hidden_state
        return self.discriminator_predictions(x)
