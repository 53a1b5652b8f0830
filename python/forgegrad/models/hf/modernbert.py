"""ModernBERT (transformers' ``ModernBertModel`` and ``ModernBertForSequenceClassification``: the encoder of
gte-modernbert, modernbert-embed and the ModernBERT rerankers), with transformers' parameter names.

Pre-norm layers without biases (by default): LayerNorm -> fused query/key/value projection -> rotary positions
(theta 160,000 on the global layers, 10,000 on the local ones) -> attention -> Wo, then LayerNorm -> GeGLU MLP
(Wi's two halves: act(input) * gate) -> Wo; every ``global_attn_every_n_layers``-th layer (from the first) attends
to the whole sequence, the others to the keys at most ``local_attention // 2`` places away on either side; a final
LayerNorm. The first layer has no attention norm (the embeddings' norm precedes it). An ONNX export computes
the masks in the graph from its input (dynamic batch and length).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from ... import grad_mode, nn
from ...tensor import Tensor
from ._layers import (FLOAT32_MAX, PackedBatch, RotaryEmbedding, activation, attend, ids_array, key_places, mask_array,
                      merge_heads, split_heads)
from .bert import BertOutput

__all__ = ["ModernBertModel", "ModernBertForSequenceClassification"]

_NEG = np.finfo(np.float32).min


def _norm(cfg: dict) -> nn.LayerNorm:
    return nn.LayerNorm(cfg["hidden_size"], eps=cfg.get("norm_eps", 1e-5), bias=bool(cfg.get("norm_bias", False)))


def layer_types(cfg: dict) -> List[str]:
    """Each layer's attention: config.json's ``layer_types``, or (older configs) every
    ``global_attn_every_n_layers``-th layer full, the others sliding."""
    types = cfg.get("layer_types")
    if types is None:
        every = cfg.get("global_attn_every_n_layers", 3)
        types = ["sliding_attention" if i % every else "full_attention" for i in range(cfg["num_hidden_layers"])]
    if len(types) != cfg["num_hidden_layers"] or not set(types) <= {"full_attention", "sliding_attention"}:
        raise ValueError(f"ModernBertModel: layer_types must name full_attention or sliding_attention for each of "
                         f"the {cfg['num_hidden_layers']} layers, got {types!r}")
    return list(types)


def _theta(cfg: dict, kind: str) -> float:
    params = (cfg.get("rope_parameters") or {}).get(kind) or {}
    if params.get("rope_type", "default") != "default":
        raise ValueError(f"ModernBertModel: rope type {params['rope_type']!r} is not supported yet (only default)")
    old = "global_rope_theta" if kind == "full_attention" else "local_rope_theta"
    return float(params.get("rope_theta", cfg.get(old, 160000.0 if kind == "full_attention" else 10000.0)))


class ModernBertEmbeddings(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.tok_embeddings = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.norm = _norm(cfg)
        self.drop = nn.Dropout(cfg.get("embedding_dropout", 0.0))

    def forward(self, ids: np.ndarray):
        return self.drop(self.norm(self.tok_embeddings(Tensor._wrap(ids))))


class ModernBertAttention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        bias = bool(cfg.get("attention_bias", False))
        self.Wqkv = nn.Linear(E, 3 * E, bias=bias)
        self.Wo = nn.Linear(E, E, bias=bias)

    def attend(self, qkv: Tensor, cos, sin, mask) -> Tensor:
        """Attention of the (B, T, 3E) query/key/value projection: (B, T, E), before Wo."""
        E = qkv.shape[-1] // 3
        q, k, v = (split_heads(qkv[..., i * E:(i + 1) * E], self.heads) for i in range(3))
        q, k = RotaryEmbedding.apply(q, cos, sin), RotaryEmbedding.apply(k, cos, sin)
        return merge_heads(attend(q, k, v, mask))


class ModernBertMLP(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E, inner = cfg["hidden_size"], cfg["intermediate_size"]
        bias = bool(cfg.get("mlp_bias", False))
        self.Wi = nn.Linear(E, 2 * inner, bias=bias)
        self.act = activation(cfg.get("hidden_activation", "gelu"), "ModernBertModel")
        self.Wo = nn.Linear(inner, E, bias=bias)
        self.inner = inner

    def forward(self, x):
        h = self.Wi(x)
        return self.Wo(self.act(h[..., :self.inner]) * h[..., self.inner:])


class ModernBertLayer(nn.Module):
    def __init__(self, cfg: dict, index: int):
        super().__init__()
        self.attn_norm = nn.Identity() if index == 0 else _norm(cfg)
        self.attn = ModernBertAttention(cfg)
        self.mlp_norm = _norm(cfg)
        self.mlp = ModernBertMLP(cfg)


class ModernBertModel(nn.Module):
    """ModernBERT's encoder. ``forward(input_ids, attention_mask=None)`` returns ``BertOutput(last_hidden_state,
    None)``; ``encode_packed`` runs a batch of different lengths with only attention on the padding."""
    # no _no_split_modules: its layers have no forward (forward runs their parts), so FSDP's default units are
    # one per module that owns parameters

    architecture = "ModernBertModel"

    def __init__(self, config: dict):
        super().__init__()
        c = self.config = dict(config)
        if c["hidden_size"] % c["num_attention_heads"]:
            raise ValueError(f"ModernBertModel: hidden_size {c['hidden_size']} is not a multiple of "
                             f"num_attention_heads {c['num_attention_heads']}")
        self.embeddings = ModernBertEmbeddings(c)
        self.layers = nn.ModuleList([ModernBertLayer(c, i) for i in range(c["num_hidden_layers"])])
        self.final_norm = _norm(c)
        self.layer_types = layer_types(c)
        D = c["hidden_size"] // c["num_attention_heads"]
        self.rotary = {kind: RotaryEmbedding(D, _theta(c, kind), max_positions=c["max_position_embeddings"])
                       for kind in sorted(set(self.layer_types))}
        self.window = int(c.get("local_attention", 128)) // 2  # keys at most this far on either side

    @property
    def max_tokens(self) -> int:
        return int(self.config["max_position_embeddings"])

    def _masks(self, real: Optional[np.ndarray], T: int) -> Dict[str, Optional[np.ndarray]]:
        """The additive masks (B or 1, 1, T, T) of each layer type: padding keys, and on the sliding layers the
        keys more than ``window`` places away; None for nothing masked."""
        keys = None if real is None or real.all() else real[:, None, None, :]
        near = np.abs(np.arange(T)[:, None] - np.arange(T)[None, :]) <= self.window
        out = {}
        for kind in set(self.layer_types):
            allowed = keys
            if kind == "sliding_attention" and not near.all():
                allowed = near[None, None] if keys is None else (keys & near[None, None])
            out[kind] = None if allowed is None else np.where(allowed, np.float32(0), _NEG).astype(np.float32)
        return out

    def _graph_masks(self, input_ids: Tensor, attention_mask) -> Dict[str, Tensor]:
        """``_masks`` as Tensor ops on the inputs (an exported graph computes them for its length)."""
        mask = attention_mask.float() if isinstance(attention_mask, Tensor) else (input_ids * 0 + 1).float()
        place = key_places(mask)
        keys, queries = place.unsqueeze(1), place.unsqueeze(2)  # (B, 1, T), (B, T, 1)
        near = ((queries - keys) <= self.window).float() * ((keys - queries) <= self.window).float()
        allowed = mask.unsqueeze(1)  # (B, 1, T): the keys that are tokens
        return {"full_attention": ((allowed - 1) * FLOAT32_MAX).unsqueeze(1),
                "sliding_attention": ((near * allowed - 1) * FLOAT32_MAX).unsqueeze(1)}

    def _run(self, x, real: Optional[np.ndarray], T: int, padded=None, gather=None, masks=None):
        """The layers over x: (B, T, E), or the real tokens (total, E) when ``padded`` / ``gather`` move a
        projection between the packed rows and the padded batch around attention."""
        masks = self._masks(real, T) if masks is None else masks
        tables = {kind: r.cos_sin_range(0, T) for kind, r in self.rotary.items()}
        for layer, kind in zip(self.layers, self.layer_types):
            qkv = layer.attn.Wqkv(layer.attn_norm(x))
            a = layer.attn.attend(qkv if padded is None else padded(qkv), *tables[kind], masks[kind])
            x = x + layer.attn.Wo(a if gather is None else gather(a))
            x = x + layer.mlp(layer.mlp_norm(x))
        return self.final_norm(x)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> BertOutput:
        c = self.config
        ids = ids_array(input_ids, "ModernBertModel", c["vocab_size"])
        B, T = ids.shape
        if T > self.max_tokens:
            raise ValueError(f"ModernBertModel: {T} tokens exceed max_position_embeddings {self.max_tokens}")
        real = mask_array(attention_mask, "ModernBertModel", (B, T))
        masks = None
        if isinstance(input_ids, Tensor) and grad_mode.recorder() is not None:
            masks = self._graph_masks(input_ids, attention_mask)  # an export: the masks of the graph's length
        return BertOutput(self._run(self.embeddings(ids), real, T, masks=masks), None)

    def encode_packed(self, sequences: Sequence[Sequence[int]], token_types=None) -> np.ndarray:
        """As ``BertModel.encode_packed``: the last hidden states of the real tokens, stacked (total, hidden); the
        embeddings, projections, MLPs and norms run on the real tokens only, attention on the padded batch.
        (``token_types``: ignored, ModernBERT has none.) Eval mode only, no graph."""
        from ...autograd import no_grad
        p = PackedBatch(self, sequences, self.config["vocab_size"], self.max_tokens)
        with no_grad():
            return self._run(self.embeddings(p.ids), p.real, p.T, p.padded, p.gather).numpy()

    @staticmethod
    def from_hf(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return dict(tensors)

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


class ModernBertPredictionHead(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"], bias=bool(cfg.get("classifier_bias", False)))
        self.act = activation(cfg.get("classifier_activation", "gelu"), "ModernBertForSequenceClassification")
        self.norm = _norm(cfg)

    def forward(self, x):
        return self.norm(self.act(self.dense(x)))


class ModernBertForSequenceClassification(nn.Module):
    """ModernBERT + its head (dense, activation, norm) over the first token or the mean of the tokens
    (``classifier_pooling``) + a linear classifier; ``forward`` returns the logits (B, num_labels)."""

    architecture = "ModernBertForSequenceClassification"

    def __init__(self, config: dict):
        super().__init__()
        c = self.config = dict(config)
        labels = c.get("num_labels") or len(c.get("id2label") or {}) or 2
        self.pooling = c.get("classifier_pooling", "cls")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"ModernBertForSequenceClassification: classifier_pooling must be 'cls' or 'mean', "
                             f"got {self.pooling!r}")
        self.model = ModernBertModel(c)
        self.head = ModernBertPredictionHead(c)
        self.drop = nn.Dropout(c.get("classifier_dropout", 0.0))
        self.classifier = nn.Linear(c["hidden_size"], labels)

    @property
    def encoder(self) -> ModernBertModel:
        return self.model

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        x = self.model(input_ids, attention_mask).last_hidden_state
        if self.pooling == "cls":
            x = x[:, 0]
        else:
            ids = ids_array(input_ids, "ModernBertForSequenceClassification", self.config["vocab_size"])
            real = mask_array(attention_mask, "ModernBertForSequenceClassification", ids.shape)
            m = Tensor._wrap(np.ones(ids.shape + (1,), np.float32) if real is None
                             else real[..., None].astype(np.float32))
            x = (x * m).sum(1) / m.sum(1)
        return self.classifier(self.drop(self.head(x)))

    def score_packed(self, sequences: Sequence[Sequence[int]], token_types=None) -> np.ndarray:
        """The logits (B, num_labels) of ``sequences`` of any lengths, the encoder run on the real tokens only."""
        from ...autograd import no_grad
        hidden = self.model.encode_packed(sequences)
        lengths = [len(s) for s in sequences]
        starts = np.cumsum([0] + lengths[:-1])
        pooled = hidden[starts] if self.pooling == "cls" else np.stack(
            [hidden[s:s + n].sum(0) / np.float32(n) for s, n in zip(starts, lengths)])
        with no_grad():
            return self.classifier(self.drop(self.head(Tensor._wrap(np.ascontiguousarray(pooled, np.float32))))
                                   ).numpy()

    from_hf = staticmethod(ModernBertModel.from_hf)
    to_hf = ModernBertModel.to_hf
