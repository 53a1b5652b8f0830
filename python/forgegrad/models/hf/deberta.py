"""DeBERTa-v2 and DeBERTa-v3 (transformers' ``deberta-v2`` model type: ``DebertaV2Model`` and its sequence
classifier, masked LM and token classifier), with transformers' parameter names.

BERT's post-norm layers, with disentangled attention: the scores of query i and key j are

    q_i . k_j  +  q_i . pk[c2p(i, j)]  +  k_j . pq[p2c(i, j)]      all over sqrt(head_dim * (1 + #pos_att_type))

where pk / pq are the relative-position embeddings (``encoder.rel_embeddings``, after the encoder's LayerNorm when
``norm_rel_ebd`` says "layer_norm") through the key / query projections (``share_att_key``) or their own
(``pos_key_proj`` / ``pos_query_proj``), and the table rows are the relative distance i - j, log-bucketed past
``position_buckets / 2`` and clamped to the table (``pos_att_type`` picks which of the two terms there are). Each
term is one GEMM against the table rows the length can reach and a gather (advanced indexing: its gradient is the
scatter-add) with an index built in numpy once per length; the sum is the float bias of the fused attention kernel.
An ONNX export computes the indices and the padding masks in the graph (``_GraphContext``): any batch and length.
The embeddings' LayerNorm output is zeroed at padding; the first layer's output goes through ``ConvLayer`` where
``conv_kernel_size`` > 0 (DeBERTa-v2-xlarge / xxlarge).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from ... import grad_mode, nn
from ...nn.utils.freeze import FrozenCache, frozen_arrays
from ...tensor import Tensor
from ...factories import where
from ._layers import (_NEG, FLOAT32_MAX, PackedBatch, activation, attend, config_probability, ids_array, mask_array,
                      merge_heads, split_heads)
from .bert import BertDenseNorm, BertIntermediate, BertOutput
from .deberta_positions import _gather_plan, distance_rows, relative_positions

__all__ = ["DebertaV2Model", "DebertaV2ForSequenceClassification", "DebertaV2ForMaskedLM",
           "DebertaV2ForTokenClassification", "relative_positions"]

_WHO = "DebertaV2Model"


def _positive(cfg: dict, key: str) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{_WHO}: config {key} must be a positive integer, got {v!r}")
    return v


def deberta_settings(cfg: dict) -> dict:
    """config.json's DeBERTa keys, checked and with transformers' defaults filled in (the absent relative-position
    sizes resolved as transformers resolves them); ``cfg`` itself stays as it is (save_pretrained writes it)."""
    c = dict(cfg)
    if cfg.get("model_type") == "deberta":
        raise ValueError("DeBERTa v1 (model_type 'deberta') is not supported; only 'deberta-v2' (DeBERTa-v2 and v3)")
    E, H = _positive(c, "hidden_size"), _positive(c, "num_attention_heads")
    head = c.get("attention_head_size")
    if head is None:
        if E % H:
            raise ValueError(f"{_WHO}: hidden_size {E} is not a multiple of num_attention_heads {H}")
        head = E // H
    c["attention_head_size"] = head if head == E // H else _positive(c, "attention_head_size")
    kinds = c.get("pos_att_type")
    if kinds is None:
        kinds = []
    elif isinstance(kinds, str):
        kinds = [x.strip() for x in kinds.lower().split("|")]
    if not isinstance(kinds, (list, tuple)) or not set(kinds) <= {"c2p", "p2c"}:
        raise ValueError(f"{_WHO}: config pos_att_type must list 'c2p' and/or 'p2c' (or be 'p2c|c2p'), got "
                         f"{cfg.get('pos_att_type')!r}")
    c["pos_att_type"] = list(kinds)
    c["relative_attention"] = bool(c.get("relative_attention", False))
    max_rel = c.get("max_relative_positions", -1)
    max_rel = -1 if max_rel is None else max_rel
    buckets = c.get("position_buckets", -1)
    buckets = -1 if buckets is None else buckets
    for key, v in (("max_relative_positions", max_rel), ("position_buckets", buckets)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{_WHO}: config {key} must be an integer, got {v!r}")
    c["max_relative_positions"] = max_rel if max_rel >= 1 else _positive(c, "max_position_embeddings")
    c["position_buckets"] = buckets
    if buckets > 0 and buckets // 2 < 2:
        raise ValueError(f"{_WHO}: config position_buckets must be at least 4 (or -1: none), got {buckets}")
    if buckets > 0 and c["max_relative_positions"] <= buckets // 2 + 1:
        raise ValueError(f"{_WHO}: config max_relative_positions ({c['max_relative_positions']}) must exceed "
                         f"position_buckets / 2 + 1 ({buckets // 2 + 1}): the log buckets divide by its logarithm")
    c["att_span"] = buckets if buckets > 0 else c["max_relative_positions"]
    norms = c.get("norm_rel_ebd", "none")
    c["norm_rel_ebd"] = [x.strip() for x in str(norms if norms is not None else "none").lower().split("|")]
    kernel = c.get("conv_kernel_size", 0) or 0
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 0:
        raise ValueError(f"{_WHO}: config conv_kernel_size must be a non-negative integer, got {kernel!r}")
    c["conv_kernel_size"] = kernel
    c["embedding_size"] = c.get("embedding_size") or E
    c["layer_norm_eps"] = c.get("layer_norm_eps", 1e-7)
    c["type_vocab_size"] = c.get("type_vocab_size", 0) or 0
    c["position_biased_input"] = bool(c.get("position_biased_input", True))
    c["pooler_hidden_size"] = c.get("pooler_hidden_size", E)
    if c["pooler_hidden_size"] != E:
        raise ValueError(f"{_WHO}: config pooler_hidden_size ({c['pooler_hidden_size']}) must equal hidden_size "
                         f"({E}): transformers' classifier reads hidden_size features from the pooler")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        c[key] = config_probability(c, key, _WHO, 0.1)
    return c


class DebertaV2Embeddings(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        E, size = c["hidden_size"], c["embedding_size"]
        pad = c.get("pad_token_id")
        self.word_embeddings = nn.Embedding(c["vocab_size"], size,
                                            padding_idx=pad if pad is not None and 0 <= pad < c["vocab_size"] else None)
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], size) if c["position_biased_input"] \
            else None
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], size) if c["type_vocab_size"] > 0 else None
        self.embed_proj = nn.Linear(size, E, bias=False) if size != E else None
        self.LayerNorm = nn.LayerNorm(E, eps=c["layer_norm_eps"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])

    def forward(self, ids: np.ndarray, types: np.ndarray, keep: Optional[Tensor],
                positions: Optional[np.ndarray] = None) -> Tensor:
        """(word + position + token type) -> embed_proj -> LayerNorm -> zeroed at padding (``keep``: (B, T, 1)
        of 0 / 1, None for none) -> dropout, in transformers' order. ``positions``: each token's position row
        (packed tokens, ``encode_packed``); None for 0 .. T - 1 along the last axis of ``ids``."""
        x = self.word_embeddings(Tensor._wrap(ids))
        if self.position_embeddings is not None:
            x = x + (self.position_embeddings.weight[:ids.shape[1]] if positions is None
                     else self.position_embeddings(Tensor._wrap(positions)))
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(Tensor._wrap(types))
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        x = self.LayerNorm(x)
        return self.dropout(x if keep is None else x * keep)


class DisentangledSelfAttention(nn.Module):
    """DeBERTa's attention: content-to-content scores plus the content-to-position (c2p) and position-to-content
    (p2c) terms of the relative-position table (module docstring)."""

    def __init__(self, c: dict):
        super().__init__()
        E, self.heads = c["hidden_size"], c["num_attention_heads"]
        inner = self.heads * c["attention_head_size"]
        self.query_proj, self.key_proj, self.value_proj = nn.Linear(E, inner), nn.Linear(E, inner), nn.Linear(E, inner)
        self.kinds = tuple(c["pos_att_type"])
        self.share_att_key = bool(c.get("share_att_key", False))
        self.relative = c["relative_attention"]
        if self.relative and not self.share_att_key:
            if "c2p" in self.kinds:
                self.pos_key_proj = nn.Linear(E, inner)
            if "p2c" in self.kinds:
                self.pos_query_proj = nn.Linear(E, inner)
        self.pos_dropout = nn.Dropout(c["hidden_dropout_prob"])
        self.dropout_p = c["attention_probs_dropout_prob"]
        # sqrt(d * (1 + number of position terms)) in float32, as transformers (also without relative attention)
        self.scale = float(np.sqrt(np.float32(c["attention_head_size"] * (1 + len(self.kinds))), dtype=np.float32))

    def forward(self, x: Tensor, ctx: "_Context") -> Tensor:
        q, k, v = (split_heads(proj(x), self.heads) for proj in (self.query_proj, self.key_proj, self.value_proj))
        return merge_heads(self.attend_heads(q, k, v, ctx))

    def attend_heads(self, q: Tensor, k: Tensor, v: Tensor, ctx: "_Context") -> Tensor:
        """Attention of the (B, H, T, D) heads with the relative-position bias and the padding masks of ``ctx``."""
        bias = self.position_bias(q, k, ctx) if self.relative and self.kinds else None
        if ctx.masked:  # padding: masked scores as transformers' masked_fill (no gradient through them)
            bias = ctx.mask_scores(bias)
            q = q * ctx.query_keep  # a padding query's row is all masked: no gradient reaches q or k from it
        return attend(q, k, v, bias, scale=1.0 / self.scale, dropout_p=self.dropout_p if self.training else 0.0)

    def position_bias(self, q: Tensor, k: Tensor, ctx: "_Context") -> Tensor:
        """The c2p and p2c terms (B, H, T, T), divided by the scale."""
        B, H, T, D = q.shape
        rel = self.pos_dropout(ctx.rel_embeddings)[None]  # (1, R, E): the rows the length reaches
        R = rel.shape[1]
        bias = None
        if "c2p" in self.kinds:
            pk = self._table(self.key_proj if self.share_att_key else self.pos_key_proj, rel, ctx)  # (1, H, R, D)
            c2p = (q @ pk.transpose(-1, -2)).reshape(B, H, T * R)[:, :, ctx.c2p]  # (B, H, T, T)
            bias = c2p / self.scale
        if "p2c" in self.kinds:
            pq = self._table(self.query_proj if self.share_att_key else self.pos_query_proj, rel, ctx)
            p2c = (k @ pq.transpose(-1, -2)).reshape(B, H, T * R)[:, :, ctx.p2c]
            bias = p2c / self.scale if bias is None else bias + p2c / self.scale
        return bias

    def _table(self, proj: nn.Linear, rel: Tensor, ctx) -> Tensor:
        """``proj(rel)`` split into heads (1, H, R, D). It depends on the weights only: in a model ``nn.utils.freeze``
        made (read-only weights) it is computed once per row range and kept, as onnxruntime folds it at session
        creation (a quarter of a v3-small forward at 128 tokens)."""
        arrays = getattr(ctx, "table_arrays", None)
        weights = None if arrays is None or self.training else frozen_arrays(proj.weight, proj.bias)
        if weights is None:
            return split_heads(proj(rel), self.heads)
        cache = self.__dict__.setdefault("_frozen_tables", FrozenCache())  # empty again in a deep copy
        return cache.get(ctx.rows, arrays + weights, lambda: split_heads(proj(rel), self.heads))


class DebertaV2Attention(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.self = DisentangledSelfAttention(c)
        self.output = BertDenseNorm(c, c["num_attention_heads"] * c["attention_head_size"])

    def forward(self, x, ctx):
        return self.output(self.self(x, ctx), x)


class DebertaV2Layer(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.attention = DebertaV2Attention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertDenseNorm(c, c["intermediate_size"])

    def forward(self, x, ctx):
        x = self.attention(x, ctx)
        return self.output(self.intermediate(x), x)


class ConvLayer(nn.Module):
    """The convolution over the embeddings added to the first layer's output (``conv_kernel_size`` > 0):
    LayerNorm(layer output + act(conv(embeddings) zeroed at padding)), zeroed at padding."""

    def __init__(self, c: dict):
        super().__init__()
        E, kernel = c["hidden_size"], c["conv_kernel_size"]
        self.conv = nn.Conv1d(E, E, kernel, padding=(kernel - 1) // 2, groups=c.get("conv_groups", 1))
        self.act = activation(c.get("conv_act", "tanh"), _WHO)
        self.LayerNorm = nn.LayerNorm(E, eps=c["layer_norm_eps"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])

    def forward(self, embeddings: Tensor, residual: Tensor, keep: Optional[Tensor]) -> Tensor:
        out = self.conv(embeddings.permute(0, 2, 1)).permute(0, 2, 1)
        if keep is not None:
            out = out * keep
        out = self.LayerNorm(residual + self.act(self.dropout(out)))
        return out if keep is None else out * keep


class DebertaV2Encoder(nn.Module):
    _no_split_modules = ["DebertaV2Layer"]  # the repeated blocks: FSDP's default units

    def __init__(self, c: dict):
        super().__init__()
        self.layer = nn.ModuleList([DebertaV2Layer(c) for _ in range(c["num_hidden_layers"])])
        if c["relative_attention"]:
            self.rel_embeddings = nn.Embedding(2 * c["att_span"], c["hidden_size"])
        if "layer_norm" in c["norm_rel_ebd"]:
            self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.conv = ConvLayer(c) if c["conv_kernel_size"] > 0 else None


class _Context:
    """What every layer of one forward shares: the masks, the gather indices and the table rows."""

    def __init__(self, model: "DebertaV2Model", real: Optional[np.ndarray], T: int):
        c = model.settings
        self.allowed = self.additive = self.query_keep = self.keep = None
        self.masked = real is not None and not real.all()
        if self.masked:
            pair = real[:, None, :, None] & real[:, None, None, :]  # (B, 1, T, T): query and key both tokens
            self.allowed = pair
            self.additive = np.where(pair, np.float32(0), np.float32(_NEG))
            self.query_keep = Tensor._wrap(real[:, None, :, None].astype(np.float32))
            self.keep = Tensor._wrap(real[:, :, None].astype(np.float32))
        self.rel_embeddings = self.c2p = self.p2c = self.table_arrays = None
        if c["relative_attention"]:
            lo, hi, self.c2p, self.p2c = _gather_plan(T, c["position_buckets"], c["max_relative_positions"],
                                                      c["att_span"])
            table = model.encoder.rel_embeddings.weight
            rows = table[lo:hi]
            self.rel_embeddings = _normed(model, rows)
            self.rows = (lo, hi)
            norm = _rel_norm(model)
            self.table_arrays = frozen_arrays(table, *((norm.weight, norm.bias) if norm is not None else ()))

    def mask_scores(self, bias: Optional[Tensor]):
        """The scores' bias, float32's min where query and key are not both tokens."""
        return self.additive if bias is None else where(self.allowed, bias, _NEG)


def _rel_norm(model: "DebertaV2Model"):
    """The encoder's LayerNorm of the table rows where ``norm_rel_ebd`` says "layer_norm", else None."""
    norm = getattr(model.encoder, "LayerNorm", None)
    return norm if norm is not None and "layer_norm" in model.settings["norm_rel_ebd"] else None


def _normed(model: "DebertaV2Model", rows: Tensor) -> Tensor:
    """Table rows through the encoder's LayerNorm where ``norm_rel_ebd`` says "layer_norm"."""
    norm = _rel_norm(model)
    return norm(rows) if norm is not None else rows


class _GraphContext:
    """``_Context`` as Tensor ops on the inputs, for an ONNX export: the masks from ``attention_mask`` (applied
    whenever there is one, whatever the example holds) and the gather indices from the length through
    ``distance_rows``, over the whole table (which rows a length reaches follows it through the log buckets)."""

    def __init__(self, model: "DebertaV2Model", input_ids: Tensor, attention_mask, real: Optional[np.ndarray]):
        c = model.settings
        self.masked = real is not None
        self.keep = None
        if self.masked:
            mask = (attention_mask if isinstance(attention_mask, Tensor) else Tensor._wrap(real)).float()  # (B, T)
            self.pair = mask.unsqueeze(1).unsqueeze(3) * mask.unsqueeze(1).unsqueeze(2)  # (B, 1, T, T)
            self.additive = (self.pair - 1) * FLOAT32_MAX  # 0 for two tokens, float32's min otherwise
            self.query_keep, self.keep = mask.unsqueeze(1).unsqueeze(3), mask.unsqueeze(2)
        self.rel_embeddings = self.c2p = self.p2c = None
        if c["relative_attention"]:
            span = c["att_span"]
            n, c2p, p2c = distance_rows(c["position_buckets"], c["max_relative_positions"], span)
            place = (input_ids[0].float() * 0 + 1).cumsum(-1) - 1  # (T,): 0 .. T - 1
            d = (place.unsqueeze(1) - place.unsqueeze(0)).clamp(-n, n).long() + n  # (T, T): i - j + n
            rows = place.long() * (2 * span)  # each query's (key's) scores start here in the flattened (T * 2 span)
            self.c2p = rows.unsqueeze(1) + Tensor._wrap(c2p)[d]
            self.p2c = rows.unsqueeze(0) + Tensor._wrap(p2c)[d]
            self.rel_embeddings = _normed(model, model.encoder.rel_embeddings.weight)

    def mask_scores(self, bias: Optional[Tensor]) -> Tensor:
        return self.additive if bias is None else bias * self.pair + self.additive


class DebertaV2Model(nn.Module):
    """DeBERTa-v2 / v3's encoder. ``forward(input_ids, attention_mask=None, token_type_ids=None)`` returns
    ``BertOutput(last_hidden_state (B, T, hidden), None)``. With ``position_biased_input`` false (v3) the length is
    not limited by the position table (the relative positions are bucketed or clamped), as in transformers."""

    architecture = "DebertaV2Model"
    model_type = "deberta-v2"
    prefix = "deberta."

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.settings = c = deberta_settings(self.config)
        self.embeddings = DebertaV2Embeddings(c)
        self.encoder = DebertaV2Encoder(c)

    @property
    def max_tokens(self) -> int:
        """The most tokens a sequence may have where a server asks (the position table's rows, which v3 was
        trained to)."""
        return int(self.config["max_position_embeddings"])

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> BertOutput:
        c = self.settings
        ids = ids_array(input_ids, _WHO, c["vocab_size"])
        B, T = ids.shape
        if c["position_biased_input"] and T > self.max_tokens:
            raise ValueError(f"{_WHO}: {T} tokens exceed max_position_embeddings {self.max_tokens}")
        types = np.zeros_like(ids)
        if token_type_ids is not None and c["type_vocab_size"] > 0:  # without a type table they are ignored
            types = ids_array(token_type_ids, f"{_WHO} (token_type_ids)", c["type_vocab_size"])
            if types.shape != ids.shape:
                raise ValueError(f"{_WHO}: token_type_ids must have the shape of input_ids {ids.shape}, got "
                                 f"{types.shape}")
        real = mask_array(attention_mask, _WHO, (B, T))
        if isinstance(input_ids, Tensor) and grad_mode.recorder() is not None:
            ctx = _GraphContext(self, input_ids, attention_mask, real)  # an export: computed in the graph
        else:
            ctx = _Context(self, real, T)
        emb = self.embeddings(ids, types, ctx.keep)
        x = emb
        for i, layer in enumerate(self.encoder.layer):
            x = layer(x, ctx)
            if i == 0 and self.encoder.conv is not None:
                x = self.encoder.conv(emb, x, ctx.keep)
        return BertOutput(x, None)

    def encode_packed(self, sequences: Sequence[Sequence[int]],
                      token_types: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
        """As ``BertModel.encode_packed``: the last hidden states of the real tokens of ``sequences`` (token-id lists
        of any lengths), stacked (total tokens, hidden) float32, equal to ``forward``'s at the real tokens (to
        float32 rounding). The embeddings, projections, feed-forward layers and norms run on the real tokens only;
        attention (and the ConvLayer) on the right-padded (batch, T) stack, with the relative-position bias of T
        (a query's c2p / p2c rows depend on its distances only, the same in every sequence) masked where the query
        or the key is padding, as ``forward`` masks it. ``token_types``: each sequence's token type ids (used where
        the model has a type table). Eval mode only, no graph."""
        from ...autograd import no_grad
        c = self.settings
        limit = self.max_tokens if c["position_biased_input"] else np.iinfo(np.int64).max
        p = PackedBatch(self, sequences, c["vocab_size"], limit)
        types = p.types(token_types if c["type_vocab_size"] > 0 else None, c["type_vocab_size"])
        ctx = _Context(self, p.real, p.T)
        with no_grad():
            emb = x = self.embeddings(p.ids, types, None, np.concatenate([np.arange(n) for n in p.lengths]))
            for i, layer in enumerate(self.encoder.layer):
                sa = layer.attention.self
                q, k, v = (split_heads(p.padded(proj(x)), sa.heads) for proj in (sa.query_proj, sa.key_proj,
                                                                                  sa.value_proj))
                x = layer.attention.output(p.gather(merge_heads(sa.attend_heads(q, k, v, ctx))), x)
                x = layer.output(layer.intermediate(x), x)
                if i == 0 and self.encoder.conv is not None:
                    x = p.gather(self.encoder.conv(p.padded(emb), p.padded(x), ctx.keep))
        return x.numpy()

    def load_filter(self, tensors: Dict[str, np.ndarray], prefix: str = "") -> Dict[str, np.ndarray]:
        """The checkpoint's tensors without those transformers ignores on load: ``position_ids``, and the absolute
        position table that v3 checkpoints carry unused (``position_biased_input`` false)."""
        unused = {prefix + "embeddings.position_ids"}
        if not self.settings["position_biased_input"]:
            unused.add(prefix + "embeddings.position_embeddings.weight")
        return {k: v for k, v in tensors.items() if k not in unused}

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if "embeddings.word_embeddings.weight" not in tensors:  # the encoder of a task model's checkpoint
            tensors = {k[len(self.prefix):]: v for k, v in tensors.items() if k.startswith(self.prefix)}
        return self.load_filter(tensors)

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


def _labels(c: dict) -> int:
    return int(c.get("num_labels") or len(c.get("id2label") or {}) or 2)


class _TaskModel(nn.Module):
    """What the task models share: the encoder under ``deberta.``, loading and saving, padded scoring."""

    def _build(self, config: dict) -> dict:
        self.config = dict(config)
        self.deberta = DebertaV2Model(self.config)
        return self.deberta.settings

    @property
    def encoder(self) -> DebertaV2Model:
        return self.deberta

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return self.deberta.load_filter(tensors, self.deberta.prefix)

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}

    def score_packed(self, sequences: Sequence[Sequence[int]],
                     token_types: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
        """The outputs of ``sequences`` (token-id lists of any lengths; ``token_types``: each one's token type ids)
        as one right-padded batch with its attention mask: ``forward``'s (the server's entry). Eval mode only."""
        from ...autograd import no_grad
        if self.training:
            raise RuntimeError(f"{type(self).__name__}.score_packed: inference only; call model.eval() first")
        if not sequences:
            raise ValueError(f"{type(self).__name__}.score_packed: sequences must hold at least one sequence")
        lengths = [len(s) for s in sequences]
        if token_types is not None and [len(t) for t in token_types] != lengths:
            raise ValueError(f"{type(self).__name__}.score_packed: token_types must give one type id per token")
        T = max(lengths)
        ids, types, mask = (np.zeros((len(sequences), T), np.int64) for _ in range(3))
        for i, s in enumerate(sequences):
            ids[i, :len(s)], mask[i, :len(s)] = s, 1
            if token_types is not None:
                types[i, :len(s)] = token_types[i]
        with no_grad():
            return self(ids, mask, types if token_types is not None else None).numpy()


class ContextPooler(nn.Module):
    """The first token's hidden state -> dropout -> dense -> ``pooler_hidden_act``."""

    def __init__(self, c: dict):
        super().__init__()
        self.dense = nn.Linear(c["pooler_hidden_size"], c["pooler_hidden_size"])
        self.dropout = nn.Dropout(config_probability(c, "pooler_dropout", _WHO, 0.0))
        self.act = activation(c.get("pooler_hidden_act", "gelu"), _WHO)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(self.dropout(x[:, 0])))


class DebertaV2ForSequenceClassification(_TaskModel):
    """DeBERTa + ``ContextPooler`` + dropout (``cls_dropout``) + a linear classifier: transformers'
    ``DebertaV2ForSequenceClassification`` (NLI models, cross-encoders); ``forward`` returns the logits
    (B, num_labels)."""

    architecture = "DebertaV2ForSequenceClassification"
    model_type = "deberta-v2"

    def __init__(self, config: dict):
        super().__init__()
        c = self._build(config)
        self.pooler = ContextPooler(c)
        self.classifier = nn.Linear(c["hidden_size"], _labels(c))
        p = c.get("cls_dropout")
        self.dropout = nn.Dropout(c["hidden_dropout_prob"] if p is None else p)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> Tensor:
        x = self.deberta(input_ids, attention_mask, token_type_ids).last_hidden_state
        return self.classifier(self.dropout(self.pooler(x)))


class DebertaV2ForTokenClassification(_TaskModel):
    """DeBERTa + dropout + a linear classifier of every token: ``forward`` returns the logits
    (B, T, num_labels)."""

    architecture = "DebertaV2ForTokenClassification"
    model_type = "deberta-v2"

    def __init__(self, config: dict):
        super().__init__()
        c = self._build(config)
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])
        self.classifier = nn.Linear(c["hidden_size"], _labels(c))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> Tensor:
        return self.classifier(self.dropout(self.deberta(input_ids, attention_mask, token_type_ids).last_hidden_state))


class _Transform(nn.Module):
    """dense -> hidden_act -> LayerNorm: the MLM heads' transform."""

    def __init__(self, c: dict, width: int):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], width)
        self.act = activation(c.get("hidden_act", "gelu"), _WHO)
        self.LayerNorm = nn.LayerNorm(width, eps=c["layer_norm_eps"])

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class _LegacyPredictions(nn.Module):
    """transformers' legacy MLM head (``legacy`` true, its default): ``cls.predictions.transform`` then the decoder:
    the word embeddings and ``cls.predictions.bias`` when tied (``tie_word_embeddings``), else its own
    ``decoder`` Linear."""

    def __init__(self, c: dict, tied: bool):
        super().__init__()
        self.transform = _Transform(c, c["embedding_size"])
        self.decoder = None if tied else nn.Linear(c["embedding_size"], c["vocab_size"])
        self.bias = nn.Parameter(np.zeros(c["vocab_size"], np.float32))


class _LegacyHead(nn.Module):
    def __init__(self, c: dict, tied: bool):
        super().__init__()
        self.predictions = _LegacyPredictions(c, tied)


class _LMHead(_Transform):
    """transformers' newer MLM head (``legacy`` false): ``lm_predictions.lm_head`` transform, then the word
    embeddings and its ``bias``."""

    def __init__(self, c: dict):
        super().__init__(c, c["hidden_size"])
        self.bias = nn.Parameter(np.zeros(c["vocab_size"], np.float32))


class _LMPredictions(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.lm_head = _LMHead(c)


class DebertaV2ForMaskedLM(_TaskModel):
    """DeBERTa + its masked-LM head in either of transformers' layouts (``legacy``: ``cls.predictions``, else
    ``lm_predictions.lm_head``); ``forward`` returns the logits (B, T, vocab_size)."""

    architecture = "DebertaV2ForMaskedLM"
    model_type = "deberta-v2"

    def __init__(self, config: dict):
        super().__init__()
        c = self._build(config)
        self.legacy = bool(c.get("legacy", True))
        self.tied = bool(c.get("tie_word_embeddings", True))
        if self.legacy:
            self.cls = _LegacyHead(c, self.tied)
        else:
            if c["embedding_size"] != c["hidden_size"]:
                raise ValueError(f"{_WHO}: the MLM head with legacy false needs embedding_size == hidden_size, got "
                                 f"{c['embedding_size']} and {c['hidden_size']}")
            self.lm_predictions = _LMPredictions(c)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> Tensor:
        x = self.deberta(input_ids, attention_mask, token_type_ids).last_hidden_state
        words = self.deberta.embeddings.word_embeddings.weight
        if not self.legacy:
            head = self.lm_predictions.lm_head
            return head(x) @ words.transpose(0, 1) + head.bias
        p = self.cls.predictions
        x = p.transform(x)
        return p.decoder(x) if p.decoder is not None else x @ words.transpose(0, 1) + p.bias

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self.legacy and not any(k.startswith("cls.") for k in tensors) and any(
                k.startswith("lm_predictions.") for k in tensors):
            from ._files import CheckpointError
            raise CheckpointError("DebertaV2ForMaskedLM: the checkpoint's MLM head is lm_predictions.lm_head (the "
                                  "released DeBERTa-v3 layout) but config.json's legacy is true (its default): set "
                                  "\"legacy\": false in config.json to read it")
        # the tied decoder's copies (the word embeddings, cls.predictions.bias) and the v3 discriminator's head
        dropped = ("cls.predictions.decoder.",) if self.legacy and self.tied else ()
        dropped += ("mask_predictions.",) + (("lm_predictions.",) if self.legacy else ("cls.",))
        return super().from_hf({k: v for k, v in tensors.items() if not k.startswith(dropped)})

