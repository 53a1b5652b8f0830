"""BERT, RoBERTa and XLM-RoBERTa encoders (transformers' ``BertModel``, ``RobertaModel``, ``XLMRobertaModel``) and
their sequence classifiers (``*ForSequenceClassification``: cross-encoders and rerankers among them), with
transformers' parameter names."""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np

from ... import grad_mode, nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import (PackedBatch, activation, additive_mask, attend, config_probability, ids_array, mask_array,
                      merge_heads, padding_bias, split_heads)

__all__ = ["BertModel", "RobertaModel", "XLMRobertaModel", "BertForSequenceClassification",
           "RobertaForSequenceClassification", "XLMRobertaForSequenceClassification", "BertOutput"]


class BertOutput(NamedTuple):
    last_hidden_state: Tensor
    pooler_output: Optional[Tensor]


def _eps(cfg):
    return cfg.get("layer_norm_eps", 1e-12)


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], E)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], E)
        self.token_type_embeddings = nn.Embedding(cfg.get("type_vocab_size", 2), E)
        self.LayerNorm = nn.LayerNorm(E, eps=_eps(cfg))
        self.dropout = nn.Dropout(cfg.get("hidden_dropout_prob", 0.1))

    def forward(self, ids: np.ndarray, token_type_ids: np.ndarray, positions: Optional[np.ndarray] = None):
        """``positions``: each token's row of the position table; None: 0..T-1 (BERT's), as a slice of the
        table, so that an exported graph keeps T dynamic. Summed as transformers does: (word + type) + position."""
        pos = self.position_embeddings.weight[:ids.shape[-1]] if positions is None else \
            self.position_embeddings(positions if isinstance(positions, Tensor) else Tensor._wrap(positions))
        x = self.word_embeddings(Tensor._wrap(ids)) + self.token_type_embeddings(Tensor._wrap(token_type_ids)) + pos
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.query, self.key, self.value = nn.Linear(E, E), nn.Linear(E, E), nn.Linear(E, E)
        self.dropout_p = config_probability(cfg, "attention_probs_dropout_prob", "BertModel", 0.1)

    def forward(self, x, mask):
        q, k, v = (split_heads(layer(x), self.heads) for layer in (self.query, self.key, self.value))
        return merge_heads(attend(q, k, v, mask, dropout_p=self.dropout_p if self.training else 0.0))


class BertDenseNorm(nn.Module):
    """dense -> dropout -> LayerNorm(+ residual): BERT's ``BertSelfOutput`` and ``BertOutput``."""

    def __init__(self, cfg: dict, fan_in: int):
        super().__init__()
        E = cfg["hidden_size"]
        self.dense = nn.Linear(fan_in, E)
        self.LayerNorm = nn.LayerNorm(E, eps=_eps(cfg))
        self.dropout = nn.Dropout(cfg.get("hidden_dropout_prob", 0.1))

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertDenseNorm(cfg, cfg["hidden_size"])

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.act = activation(cfg.get("hidden_act", "gelu"), "BertModel")

    def forward(self, x):
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertDenseNorm(cfg, cfg["intermediate_size"])

    def forward(self, x, mask):
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    _no_split_modules = ["BertLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(cfg) for _ in range(cfg["num_hidden_layers"])])


class BertPooler(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"])

    def forward(self, x):
        return F.tanh(self.dense(x[:, 0]))


class BertModel(nn.Module):
    """BERT's encoder (and, with their position numbering, RoBERTa's and XLM-RoBERTa's: the subclasses below).
    ``forward(input_ids, attention_mask=None, token_type_ids=None)`` returns
    ``BertOutput(last_hidden_state (B, T, hidden), pooler_output (B, hidden) or None)``."""

    architecture = "BertModel"
    prefix = "bert."  # where a task model's checkpoint keeps the encoder's weights

    def __init__(self, config: dict, add_pooling_layer: bool = True):
        super().__init__()
        self.config = dict(config)
        kind = self.config.get("position_embedding_type", "absolute")
        if kind != "absolute":
            # transformers 5 reads only absolute positions too (relative_key / relative_key_query were dropped)
            raise ValueError(f"BertModel: position_embedding_type {kind!r} is not supported (only 'absolute', "
                             "as in transformers 5)")
        self.embeddings = BertEmbeddings(self.config)
        self.encoder = BertEncoder(self.config)
        self.pooler = BertPooler(self.config) if add_pooling_layer else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> BertOutput:
        c = self.config
        ids = ids_array(input_ids, "BertModel", c["vocab_size"])
        B, T = ids.shape
        if T > self.max_tokens:
            raise ValueError(f"{type(self).__name__}: {T} tokens exceed the {self.max_tokens} its position table "
                             "holds")
        types = np.zeros_like(ids) if token_type_ids is None else ids_array(
            token_type_ids, "BertModel (token_type_ids)", c.get("type_vocab_size", 2))
        if types.shape != ids.shape:
            raise ValueError(f"BertModel: token_type_ids must have the shape of input_ids {ids.shape}, "
                             f"got {types.shape}")
        mask = additive_mask(mask_array(attention_mask, "BertModel", (B, T)), 0, T, causal=False)
        positions = self.positions(ids)
        exporting = isinstance(input_ids, Tensor) and grad_mode.recorder() is not None
        if positions is not None and exporting:
            positions = self.positions_of(input_ids)  # an export: computed in the graph from its input
        if exporting and isinstance(attention_mask, Tensor):  # an export: the padding bias from the graph's mask
            mask = padding_bias(attention_mask.float())
        mask = self.scores_bias(mask, T, input_ids if exporting else None)
        x = self.embed(ids, types, positions)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return BertOutput(x, self.pooler(x) if self.pooler is not None else None)

    def embed(self, ids, types, positions) -> Tensor:
        """The first layer's input: the embeddings (ALBERT and ELECTRA project them to the hidden size)."""
        return self.embeddings(ids, types, positions)

    def scores_bias(self, mask, T: int, graph_ids: Optional[Tensor]):
        """What every layer adds to the attention scores of a length-T batch: the padding ``mask`` (None, a numpy
        array or a graph's Tensor) and, in a subclass, a position bias (MPNet's relative buckets; ``graph_ids``: the
        exported graph's input ids, to compute it from, else None)."""
        return mask

    @property
    def max_tokens(self) -> int:
        """The most tokens a sequence may have: the position table's rows."""
        return int(self.config["max_position_embeddings"])

    def positions(self, ids: np.ndarray) -> Optional[np.ndarray]:
        """Each token's row of the position table; None for BERT's 0..T-1."""
        return None

    def encode_packed(self, sequences: Sequence[Sequence[int]],
                      token_types: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
        """The last hidden states of the real tokens of ``sequences`` (token-id lists of any lengths, one text
        each), stacked: row ``sum(lengths[:i]) + t`` is token t of sequence i, (total tokens, hidden) float32.

        Inference without running padding through the per-token layers: the embeddings, the projections, the
        feed-forward layers and the norms run on the real tokens only; attention runs on the padded
        (batch, heads, T, head_dim) stack behind the key mask ``forward`` uses. So a batch of different lengths
        costs its tokens, not batch x longest. Equal to ``forward``'s ``last_hidden_state`` at the real tokens
        (to float32 rounding: the GEMMs see other row counts). ``token_types``: each sequence's token type ids
        (a text pair's second text: 1), default 0. Eval mode only (no dropout), no graph."""
        from ...autograd import no_grad
        c = self.config
        p = PackedBatch(self, sequences, c["vocab_size"], self.max_tokens)
        types = p.types(token_types, c.get("type_vocab_size", 2))
        positions = self.positions(p.padded_ids())
        positions = np.concatenate([np.arange(n) for n in p.lengths]) if positions is None else positions[p.real]
        mask = self.scores_bias(additive_mask(p.real, 0, p.T, causal=False), p.T, None)
        with no_grad():
            x = self.embed(p.ids, types, positions)
            for layer in self.encoder.layer:
                sa = layer.attention.self
                q, k, v = (split_heads(p.padded(proj(x)), sa.heads) for proj in (sa.query, sa.key, sa.value))
                x = layer.attention.output(p.gather(merge_heads(attend(q, k, v, mask))), x)
                x = layer.output(layer.intermediate(x), x)
        return x.numpy()

    @staticmethod
    def from_hf(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {k: v for k, v in tensors.items() if not k.endswith("embeddings.position_ids")}

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


class RobertaModel(BertModel):
    """RoBERTa's encoder (transformers' ``RobertaModel``): BERT's network, with position rows counted from
    ``pad_token_id + 1`` over the tokens that are not the padding token (padding tokens take ``pad_token_id``'s
    row), as transformers numbers them from the input ids; so ``max_position_embeddings - pad_token_id - 1``
    tokens fit. Its weights may sit under ``roberta.`` (a task model's checkpoint). An ONNX export computes the
    position rows in the graph (``positions_of``)."""

    architecture = "RobertaModel"
    prefix = "roberta."

    @property
    def max_tokens(self) -> int:
        return int(self.config["max_position_embeddings"]) - self._pad() - 1

    def _pad(self) -> int:
        pad = self.config.get("pad_token_id", 1)
        return 1 if pad is None else int(pad)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        pad = self._pad()
        real = ids != pad
        return np.cumsum(real, axis=1) * real + pad

    def positions_of(self, input_ids: Tensor) -> Tensor:
        """``positions`` as Tensor ops on the int64 ids (an exported graph computes them from its input)."""
        real = (input_ids != self._pad()).long()
        return real.cumsum(-1) * real + self._pad()


class XLMRobertaModel(RobertaModel):
    """XLM-RoBERTa's encoder (transformers' ``XLMRobertaModel``): RoBERTa's network and numbering."""

    architecture = "XLMRobertaModel"


class BertForSequenceClassification(nn.Module):
    """BERT + dropout + a linear classifier over the pooled first token; ``forward`` returns the
    logits (B, num_labels)."""

    architecture = "BertForSequenceClassification"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        labels = self.config.get("num_labels") or len(self.config.get("id2label") or {}) or 2
        self.bert = BertModel(self.config)
        p = self.config.get("classifier_dropout")
        self.dropout = nn.Dropout(self.config.get("hidden_dropout_prob", 0.1) if p is None else p)
        self.classifier = nn.Linear(self.config["hidden_size"], labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.classifier(self.dropout(self.bert(input_ids, attention_mask, token_type_ids).pooler_output))

    @property
    def encoder(self) -> BertModel:
        return self.bert

    def head(self, first: Tensor) -> Tensor:
        """The logits of the sequences' first tokens' last hidden states (B, hidden)."""
        return self.classifier(self.dropout(F.tanh(self.bert.pooler.dense(first))))

    def score_packed(self, sequences: Sequence[Sequence[int]],
                     token_types: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
        """The logits (B, num_labels) of ``sequences`` of any lengths (a cross-encoder's text pairs), the encoder
        run on the real tokens only (``BertModel.encode_packed``); ``forward``'s to float32 rounding."""
        from ...autograd import no_grad
        hidden = self.encoder.encode_packed(sequences, token_types)
        firsts = np.cumsum([0] + [len(s) for s in sequences[:-1]])
        with no_grad():
            return self.head(Tensor._wrap(np.ascontiguousarray(hidden[firsts]))).numpy()

    from_hf = staticmethod(BertModel.from_hf)
    to_hf = BertModel.to_hf


class RobertaClassificationHead(nn.Module):
    """RoBERTa's classifier: dense -> tanh -> out_proj over the first token (<s>), dropout around the dense."""

    def __init__(self, cfg: dict, labels: int):
        super().__init__()
        E = cfg["hidden_size"]
        self.dense, self.out_proj = nn.Linear(E, E), nn.Linear(E, labels)
        p = cfg.get("classifier_dropout")
        self.dropout = nn.Dropout(cfg.get("hidden_dropout_prob", 0.1) if p is None else p)

    def forward(self, first: Tensor) -> Tensor:
        return self.out_proj(self.dropout(F.tanh(self.dense(self.dropout(first)))))


class RobertaForSequenceClassification(nn.Module):
    """RoBERTa (no pooler) + its classification head over the first token: transformers'
    ``RobertaForSequenceClassification``; ``forward`` returns the logits (B, num_labels)."""

    architecture = "RobertaForSequenceClassification"
    encoder_class = RobertaModel

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        labels = self.config.get("num_labels") or len(self.config.get("id2label") or {}) or 2
        self.roberta = self.encoder_class(self.config, add_pooling_layer=False)
        self.classifier = RobertaClassificationHead(self.config, labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.classifier(self.roberta(input_ids, attention_mask, token_type_ids).last_hidden_state[:, 0])

    @property
    def encoder(self) -> BertModel:
        return self.roberta

    def head(self, first: Tensor) -> Tensor:
        return self.classifier(first)

    score_packed = BertForSequenceClassification.score_packed
    from_hf = staticmethod(BertModel.from_hf)
    to_hf = BertModel.to_hf


class XLMRobertaForSequenceClassification(RobertaForSequenceClassification):
    """XLM-RoBERTa's (transformers' ``XLMRobertaForSequenceClassification``; rerankers such as bge-reranker)."""

    architecture = "XLMRobertaForSequenceClassification"
    encoder_class = XLMRobertaModel
