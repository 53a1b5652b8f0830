"""MPNet (transformers' ``MPNetModel``, ``MPNetForSequenceClassification`` and ``MPNetForMaskedLM``): the encoder of
sentence-transformers' all-mpnet-base-v2.

Its layers compute what BERT's do (post-norm, GELU) under other names (``attention.attn.q`` ->
``attention.self.query``, ``attention.attn.o`` -> ``attention.output.dense``, ``attention.LayerNorm`` ->
``attention.output.LayerNorm``, mapped on load and save), without token types (the type table is one row of zeros,
which changes no bit), with RoBERTa's position numbering (rows counted from 2 over the tokens that are not the padding
id 1: transformers fixes that id, whatever ``pad_token_id`` says), and one more term: every layer adds a
relative-position bias to its attention scores, T5's bidirectional buckets of the distance j - i (exact below 8 each
way, logarithmic up to 128, 16 buckets a side) looked up in ``encoder.relative_attention_bias`` (buckets, heads).
transformers always computes 32 buckets with max distance 128, whatever ``relative_attention_num_buckets`` says (the
table's rows past 32 are never read), and so does this. The distance is that of places in the row, not of position
ids (as in transformers), so right padding leaves each text's bias as it is alone (``encode_packed`` gives
``forward``'s vectors). An ONNX export computes the buckets in the graph: the distance clamped to [-128, 128] indexes
a constant of that distance's bucket (computed once in float32 as torch does: the logarithms are not left to
onnxruntime, whose last bit could move a distance across a bucket edge).
"""
from __future__ import annotations

import functools
import re
from typing import Dict, Optional

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import rows
from .bert import BertForSequenceClassification, RobertaClassificationHead, RobertaModel

__all__ = ["MPNetModel", "MPNetForSequenceClassification", "MPNetForMaskedLM", "relative_buckets"]

_BUCKETS, _MAX_DISTANCE = 32, 128  # transformers' compute_position_bias: fixed, not read from the config
_PAD = 1  # MPNetEmbeddings.padding_idx: fixed in transformers
# MPNet's layer names -> BERT's (within encoder.layer.{i})
_LAYER = {"attention.attn.q": "attention.self.query", "attention.attn.k": "attention.self.key",
          "attention.attn.v": "attention.self.value", "attention.attn.o": "attention.output.dense",
          "attention.LayerNorm": "attention.output.LayerNorm"}
_TOKEN_TYPES = "embeddings.token_type_embeddings.weight"


@functools.lru_cache(maxsize=1)
def relative_buckets() -> np.ndarray:
    """The bucket of each distance d = j - i (key place minus query place) for d in [-128, 128] (index d + 128), as
    transformers' ``MPNetEncoder.relative_position_bucket`` computes it (float32 logs, truncated); every farther
    distance falls in the bucket of +-128. Read-only."""
    d = np.arange(-_MAX_DISTANCE, _MAX_DISTANCE + 1)
    half = _BUCKETS // 2
    exact = half // 2
    n = -d
    out = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    f32 = np.float32
    with np.errstate(divide="ignore"):  # log(0) at d = 0 lands in the branch the where drops
        scaled = np.log(n.astype(f32) / f32(exact)) / f32(np.log(_MAX_DISTANCE / exact)) * f32(half - exact)
    large = np.minimum(exact + np.where(n < exact, 0, scaled).astype(np.int64), half - 1)
    out = out + np.where(n < exact, n, large)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _bucket_index(T: int) -> np.ndarray:
    """(T, T) bucket of query i and key j of a length-T row. Read-only (cached per length)."""
    d = np.clip(np.arange(T)[None, :] - np.arange(T)[:, None], -_MAX_DISTANCE, _MAX_DISTANCE) + _MAX_DISTANCE
    out = relative_buckets()[d]
    out.setflags(write=False)
    return out


def _rename(key: str, table: Dict[str, str]) -> str:
    m = re.match(r"(.*?encoder\.layer\.\d+\.)(.+)$", key)
    if m is None:
        return key
    head, rest = m.groups()
    for a, b in table.items():
        if rest.startswith(a + "."):
            return head + b + rest[len(a):]
    return key


def _checked(config: dict) -> dict:
    """MPNet's config for BERT's layers (one token type); refuses a bucket table too small for transformers' 32."""
    n = config.get("relative_attention_num_buckets", _BUCKETS)
    if isinstance(n, bool) or not isinstance(n, int) or n < _BUCKETS:
        raise ValueError(f"MPNetModel: config relative_attention_num_buckets must be an integer >= {_BUCKETS} "
                         f"(transformers' MPNet always reads {_BUCKETS} buckets), got {n!r}")
    return dict(config, type_vocab_size=1, pad_token_id=_PAD)


class MPNetModel(RobertaModel):
    """MPNet's encoder: ``forward(input_ids, attention_mask=None)`` returns ``BertOutput(last_hidden_state,
    pooler_output or None)``; ``encode_packed`` as BERT's. Up to ``max_position_embeddings - 2`` tokens."""

    architecture = "MPNetModel"
    model_type = "mpnet"
    prefix = "mpnet."

    def __init__(self, config: dict, add_pooling_layer: bool = True):
        super().__init__(_checked(config), add_pooling_layer=add_pooling_layer)
        self.hf_config = dict(config)  # what save_pretrained writes
        self.encoder.relative_attention_bias = nn.Embedding(int(config.get("relative_attention_num_buckets",
                                                                           _BUCKETS)), config["num_attention_heads"])

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return super().forward(input_ids, attention_mask)  # MPNet has no token types

    def scores_bias(self, mask, T: int, graph_ids: Optional[Tensor]):
        """The padding mask plus the relative-position bias (1, heads, T, T), the same in every layer."""
        if graph_ids is None:
            index = Tensor._wrap(np.ascontiguousarray(_bucket_index(T)))
        else:  # an export: the distances from the input's length, in the graph
            place = (graph_ids[0].float() * 0 + 1).cumsum(-1) - 1  # (T,): 0 .. T - 1
            d = (place.unsqueeze(0) - place.unsqueeze(1)).clamp(-_MAX_DISTANCE, _MAX_DISTANCE).long() + _MAX_DISTANCE
            index = Tensor._wrap(np.ascontiguousarray(relative_buckets()))[d]
        bias = rows(self.encoder.relative_attention_bias.weight, index).permute(2, 0, 1).unsqueeze(0)
        if mask is None:
            return bias
        return bias + (mask if isinstance(mask, Tensor) else Tensor._wrap(np.ascontiguousarray(mask)))

    def _pad(self) -> int:
        return _PAD

    @staticmethod
    def from_hf(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {_rename(k, _LAYER): v for k, v in tensors.items() if not k.endswith("position_ids")}
        for head in ("", "mpnet."):
            word = out.get(head + "embeddings.word_embeddings.weight")
            if word is not None:
                out[head + _TOKEN_TYPES] = np.zeros((1, word.shape[1]), word.dtype)
        return out

    def to_hf(self) -> Dict[str, np.ndarray]:
        back = {b: a for a, b in _LAYER.items()}
        return {_rename(k, back): t.numpy() for k, t in self.state_dict().items() if not k.endswith(_TOKEN_TYPES)}


class MPNetForSequenceClassification(nn.Module):
    """MPNet (no pooler) + RoBERTa's classification head (dense -> tanh -> out_proj) over the first token:
    transformers' ``MPNetForSequenceClassification``; ``forward`` returns the logits (B, num_labels)."""

    architecture = "MPNetForSequenceClassification"
    model_type = "mpnet"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.hf_config = dict(config)
        labels = self.config.get("num_labels") or len(self.config.get("id2label") or {}) or 2
        self.mpnet = MPNetModel(self.config, add_pooling_layer=False)
        self.classifier = RobertaClassificationHead(dict(self.config, classifier_dropout=None), labels)

    @property
    def encoder(self) -> MPNetModel:
        return self.mpnet

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.classifier(self.mpnet(input_ids, attention_mask).last_hidden_state[:, 0])

    def head(self, first: Tensor) -> Tensor:
        return self.classifier(first)

    def score_packed(self, sequences, token_types=None) -> np.ndarray:
        return BertForSequenceClassification.score_packed(self, sequences)  # MPNet has no token types

    from_hf = staticmethod(MPNetModel.from_hf)
    to_hf = MPNetModel.to_hf


class MPNetLMHead(nn.Module):
    """dense -> GELU -> LayerNorm, then the word embeddings (the tied decoder) + ``bias``."""

    def __init__(self, cfg: dict):
        super().__init__()
        E = cfg["hidden_size"]
        self.dense = nn.Linear(E, E)
        self.layer_norm = nn.LayerNorm(E, eps=cfg.get("layer_norm_eps", 1e-12))
        self.bias = nn.Parameter(np.zeros(cfg["vocab_size"], np.float32))


class MPNetForMaskedLM(nn.Module):
    """MPNet + its LM head: transformers' ``MPNetForMaskedLM``, its decoder tied to the word embeddings and
    ``lm_head.bias`` (as every released MPNet; ``tie_word_embeddings`` false is refused); ``forward`` returns the
    logits (B, T, vocab_size)."""

    architecture = "MPNetForMaskedLM"
    model_type = "mpnet"

    def __init__(self, config: dict):
        super().__init__()
        if config.get("tie_word_embeddings", True) is False:
            raise ValueError("MPNetForMaskedLM: config tie_word_embeddings false (an untied decoder) is not "
                             "supported; the decoder is the word embeddings")
        self.config = dict(config)
        self.hf_config = dict(config)
        self.mpnet = MPNetModel(self.config, add_pooling_layer=False)
        self.lm_head = MPNetLMHead(self.config)

    @property
    def encoder(self) -> MPNetModel:
        return self.mpnet

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        h = self.lm_head
        x = h.layer_norm(F.gelu(h.dense(self.mpnet(input_ids, attention_mask).last_hidden_state)))
        return x @ self.mpnet.embeddings.word_embeddings.weight.transpose(0, 1) + h.bias

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        # the tied decoder's copies of the word embeddings and lm_head.bias, where a checkpoint keeps them
        return MPNetModel.from_hf({k: v for k, v in tensors.items() if not k.startswith("lm_head.decoder.")})

    to_hf = MPNetModel.to_hf
