"""ALBERT (transformers' ``AlbertModel`` and ``AlbertForSequenceClassification``), with transformers' parameter names.

ALBERT's layers compute what BERT's do (post-norm attention and feed-forward, ``gelu_new`` by default) under other
names (``attention.query`` -> ``attention.self.query``, ``attention.dense`` -> ``attention.output.dense``, ``ffn`` ->
``intermediate.dense``, ``ffn_output`` -> ``output.dense``, ``full_layer_layer_norm`` -> ``output.LayerNorm``,
mapped on load and save), with two differences of shape:

* factorized embeddings: the word, position and type tables are ``embedding_size`` wide (128 in the released
  models) and ``encoder.embedding_hidden_mapping_in`` projects them to ``hidden_size`` before the first layer;
* shared layers: ``num_hidden_groups`` groups of ``inner_group_num`` layers hold all the weights, and depth i of
  the ``num_hidden_layers`` runs group ``int(i / (num_hidden_layers / num_hidden_groups))`` (all its layers), as
  transformers does: albert-base-v2's 12 depths run its one layer 12 times.

So ``AlbertModel`` is a ``BertModel`` whose ``encoder.layer`` lists the shared layers in the order they run (the same
module several times), and it shares BERT's packed path, serving and ONNX export. Its pooler is one Linear
(``pooler``) and tanh, BERT's under another name.
"""
from __future__ import annotations

import re
from typing import Dict, List

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import activation
from .bert import BertEmbeddings, BertForSequenceClassification, BertLayer, BertModel, BertPooler

__all__ = ["AlbertModel", "AlbertForSequenceClassification"]

_WHO = "AlbertModel"
# ALBERT's layer names -> BERT's (within encoder.albert_layer_groups.{g}.albert_layers.{j})
_LAYER = {"attention.query": "attention.self.query", "attention.key": "attention.self.key",
          "attention.value": "attention.self.value", "attention.dense": "attention.output.dense",
          "attention.LayerNorm": "attention.output.LayerNorm", "ffn": "intermediate.dense",
          "ffn_output": "output.dense", "full_layer_layer_norm": "output.LayerNorm"}


def _positive(config: dict, key: str, default=None) -> int:
    v = config.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{_WHO}: config {key} must be a positive integer, got {v!r}")
    return v


def _rename(key: str, table: Dict[str, str]) -> str:
    """A shared layer's parameter name in the other naming (after any prefix, ``albert.``)."""
    m = re.match(r"(.*?albert_layers\.\d+\.)(.+)$", key)
    if m is None:
        return key
    head, rest = m.groups()
    for a, b in table.items():
        if rest.startswith(a + "."):
            return head + b + rest[len(a):]
    return key


def _pooler(key: str, to_hf: bool) -> str:
    """ALBERT's pooler (``pooler.weight``) <-> BERT's (``pooler.dense.weight``), after any prefix."""
    a, b = ("pooler.dense.", "pooler.") if to_hf else ("pooler.", "pooler.dense.")
    m = re.match(r"((?:albert\.)?)" + re.escape(a) + r"(weight|bias)$", key)
    return m.group(1) + b + m.group(2) if m else key


class AlbertLayerGroup(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.albert_layers = nn.ModuleList([BertLayer(cfg) for _ in range(cfg["inner_group_num"])])


class AlbertTransformer(nn.Module):
    """The projection to the hidden size and the groups of shared layers; ``layer``: the layers in the order the
    depths run them."""
    _no_split_modules = ["BertLayer"]  # the shared layers, run once per depth: FSDP's default units

    def __init__(self, cfg: dict):
        super().__init__()
        self.embedding_hidden_mapping_in = nn.Linear(cfg["embedding_size"], cfg["hidden_size"])
        self.albert_layer_groups = nn.ModuleList([AlbertLayerGroup(cfg) for _ in range(cfg["num_hidden_groups"])])
        self.depths, self.groups = cfg["num_hidden_layers"], cfg["num_hidden_groups"]

    @property
    def layer(self) -> List[BertLayer]:
        order = []
        for i in range(self.depths):
            order.extend(self.albert_layer_groups[int(i / (self.depths / self.groups))].albert_layers)
        return order


def _checked(config: dict) -> dict:
    c = dict(config, hidden_act=config.get("hidden_act", "gelu_new"))
    activation(c["hidden_act"], f"{_WHO}: config hidden_act")
    for key, default in (("embedding_size", 128), ("num_hidden_groups", 1), ("inner_group_num", 1)):
        c[key] = _positive(c, key, default)
    if c["num_hidden_groups"] > _positive(c, "num_hidden_layers"):
        raise ValueError(f"{_WHO}: config num_hidden_groups ({c['num_hidden_groups']}) must not exceed "
                         f"num_hidden_layers ({c['num_hidden_layers']}): the groups past it never run")
    return c


class AlbertModel(BertModel):
    """ALBERT's encoder: ``forward(input_ids, attention_mask=None, token_type_ids=None)`` returns
    ``BertOutput(last_hidden_state (B, T, hidden), pooler_output (B, hidden) or None)``."""

    architecture = "AlbertModel"
    model_type = "albert"
    prefix = "albert."

    def __init__(self, config: dict, add_pooling_layer: bool = True):
        c = _checked(config)
        nn.Module.__init__(self)  # BERT's layers are not built: ALBERT's groups hold them
        self.config = c
        self.hf_config = dict(config)
        kind = c.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"{_WHO}: config position_embedding_type {kind!r} is not supported (only 'absolute')")
        self.embeddings = BertEmbeddings(dict(c, hidden_size=c["embedding_size"]))
        self.encoder = AlbertTransformer(c)
        self.pooler = BertPooler(c) if add_pooling_layer else None

    def embed(self, ids, types, positions) -> Tensor:
        return self.encoder.embedding_hidden_mapping_in(self.embeddings(ids, types, positions))

    @staticmethod
    def from_hf(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {_pooler(_rename(k, _LAYER), False): v for k, v in tensors.items() if not k.endswith("position_ids")}

    def to_hf(self) -> Dict[str, np.ndarray]:
        back = {b: a for a, b in _LAYER.items()}
        return {_pooler(_rename(k, back), True): t.numpy() for k, t in self.state_dict().items()}


class AlbertForSequenceClassification(nn.Module):
    """ALBERT + dropout + a linear classifier over the pooled first token: transformers'
    ``AlbertForSequenceClassification``; ``forward`` returns the logits (B, num_labels)."""

    architecture = "AlbertForSequenceClassification"
    model_type = "albert"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.hf_config = dict(config)
        labels = self.config.get("num_labels") or len(self.config.get("id2label") or {}) or 2
        self.albert = AlbertModel(self.config)
        self.dropout = nn.Dropout(self.config.get("classifier_dropout_prob", 0.1))
        self.classifier = nn.Linear(self.config["hidden_size"], labels)

    @property
    def encoder(self) -> AlbertModel:
        return self.albert

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.classifier(self.dropout(self.albert(input_ids, attention_mask, token_type_ids).pooler_output))

    def head(self, first: Tensor) -> Tensor:
        return self.classifier(self.dropout(F.tanh(self.albert.pooler.dense(first))))

    score_packed = BertForSequenceClassification.score_packed
    from_hf = staticmethod(AlbertModel.from_hf)
    to_hf = AlbertModel.to_hf
