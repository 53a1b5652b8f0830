"""DistilBERT (transformers' ``DistilBertModel`` and ``DistilBertForSequenceClassification``).

Its layers compute what BERT's do (post-norm: LayerNorm(attention + x), then LayerNorm(FFN + x); learned positions;
GELU), under other names and without token types, so ``DistilBertModel`` is a ``BertModel`` built from the
translated config whose checkpoint names are mapped on load and save (``q_lin`` -> ``attention.self.query``, ...);
the token-type table it lacks is one row of zeros (adding it changes no bit). Its packed path (``encode_packed``)
and everything else is BERT's.
"""
from __future__ import annotations

import re
from typing import Dict

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from .bert import BertForSequenceClassification, BertModel

__all__ = ["DistilBertModel", "DistilBertForSequenceClassification"]

# DistilBERT's layer names -> BERT's (within transformer.layer.{i} / encoder.layer.{i})
_LAYER = {"attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key",
          "attention.v_lin": "attention.self.value", "attention.out_lin": "attention.output.dense",
          "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense",
          "ffn.lin2": "output.dense", "output_layer_norm": "output.LayerNorm"}
_TOKEN_TYPES = "embeddings.token_type_embeddings.weight"


def bert_config(cfg: dict) -> dict:
    """DistilBERT's config in BERT's keys."""
    for key in ("dim", "n_layers", "n_heads", "hidden_dim"):
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"DistilBertModel: config.json must give {key} as a positive integer, got {v!r}")
    return dict(cfg, hidden_size=cfg["dim"], num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
                intermediate_size=cfg["hidden_dim"], hidden_act=cfg.get("activation", "gelu"), type_vocab_size=1,
                layer_norm_eps=1e-12, hidden_dropout_prob=cfg.get("dropout", 0.1),
                attention_probs_dropout_prob=cfg.get("attention_dropout", 0.1))


def _rename(key: str, table: Dict[str, str]) -> str:
    """A layer parameter's name in the other naming (``transformer.layer.i.q_lin`` <-> ``encoder.layer.i.attention
    .self.query``), after any prefix (``distilbert.``)."""
    m = re.match(r"(.*?)(transformer|encoder)\.layer\.(\d+)\.(.+)$", key)
    if m is None:
        return key
    prefix, stack, i, rest = m.groups()
    for a, b in table.items():
        if rest.startswith(a + "."):
            return f"{prefix}{'encoder' if stack == 'transformer' else 'transformer'}.layer.{i}.{b}{rest[len(a):]}"
    return key


class DistilBertModel(BertModel):
    """DistilBERT's encoder: ``forward(input_ids, attention_mask=None)`` returns ``BertOutput(last_hidden_state,
    None)``."""

    architecture = "DistilBertModel"
    prefix = "distilbert."

    def __init__(self, config: dict, add_pooling_layer: bool = False):
        super().__init__(bert_config(config), add_pooling_layer=False)
        self.hf_config = dict(config)  # what save_pretrained writes

    @staticmethod
    def from_hf(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {_rename(k, _LAYER): v for k, v in tensors.items() if not k.endswith("position_ids")}
        for head in ("", "distilbert."):
            word = out.get(head + "embeddings.word_embeddings.weight")
            if word is not None:
                out[head + _TOKEN_TYPES] = np.zeros((1, word.shape[1]), word.dtype)
        return out

    def to_hf(self) -> Dict[str, np.ndarray]:
        back = {b: a for a, b in _LAYER.items()}
        return {_rename(k, back): t.numpy() for k, t in self.state_dict().items() if not k.endswith(_TOKEN_TYPES)}

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return super().forward(input_ids, attention_mask)


class DistilBertForSequenceClassification(nn.Module):
    """DistilBERT + pre_classifier (dim -> dim, ReLU) + dropout + classifier over the first token; ``forward``
    returns the logits (B, num_labels)."""

    architecture = "DistilBertForSequenceClassification"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.hf_config = dict(config)
        labels = self.config.get("num_labels") or len(self.config.get("id2label") or {}) or 2
        self.distilbert = DistilBertModel(self.config)
        self.pre_classifier = nn.Linear(self.config["dim"], self.config["dim"])
        self.dropout = nn.Dropout(self.config.get("seq_classif_dropout", 0.2))
        self.classifier = nn.Linear(self.config["dim"], labels)

    @property
    def encoder(self) -> BertModel:
        return self.distilbert

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.head(self.distilbert(input_ids, attention_mask).last_hidden_state[:, 0])

    def head(self, first: Tensor) -> Tensor:
        return self.classifier(self.dropout(F.relu(self.pre_classifier(first))))

    def score_packed(self, sequences, token_types=None) -> np.ndarray:
        return BertForSequenceClassification.score_packed(self, sequences)  # DistilBERT has no token types

    from_hf = staticmethod(DistilBertModel.from_hf)
    to_hf = DistilBertModel.to_hf
