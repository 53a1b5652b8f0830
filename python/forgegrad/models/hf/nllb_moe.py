"""NLLB-MoE (transformers' ``NllbMoeForConditionalGeneration``, model_type "nllb-moe": facebook/nllb-moe-54b):
M2M100's pre-norm encoder-decoder (fixed position table, scaled tied embeddings, final LayerNorms) whose every
``encoder_sparse_step``-th encoder layer and ``decoder_sparse_step``-th decoder layer has a sparse feed-forward: a
top-2 router over ``num_experts`` experts (each an fc1 -> activation -> fc2 MLP), the other layers a dense one.
transformers' names: each layer's ``self_attn``, ``cross_attention`` (decoder), ``ffn`` (dense: ``fc1``/``fc2``;
sparse: ``router.classifier`` and ``experts.expert_{e}.fc1``/``fc2``), ``self_attn_layer_norm``,
``cross_attention_layer_norm``, ``ff_layer_norm``.

The router (``NllbMoeTop2Router``, fairseq's top-2 gating) on the (B * T) tokens of a call, in float32 (``router_dtype``
bfloat16 / float16: its input, weights, logits and probabilities rounded to it, as transformers' casts):
  * probabilities softmax(logits); the first expert the most probable, the second the largest logit but that one
    (``second_expert_policy`` "sampling": of the logits plus Gumbel noise; "random": kept with probability 2 * its
    probability; their draws from forgegrad's generator, ``forgegrad.manual_seed``);
  * padding tokens (the encoder's attention_mask 0) go to no expert unless ``router_ignore_padding_tokens``;
  * each expert takes at most ``capacity`` tokens: in eval ceil(moe_eval_capacity_token_fraction * tokens) when
    that fraction is > 0, else ``expert_capacity`` (or 2 * ceil(tokens / experts) when null). Tokens queue for an
    expert in order (by their top probability, highest first, with ``batch_prioritized_routing``), every first
    choice ahead of every second choice; a choice past the capacity is dropped (a token dropped twice gets only its
    residual);
  * the two weights are the two probabilities over their sum, the sum taken before the dropping
    (``normalize_router_prob_before_dropping``) or after it (a dropped choice weighs 0);
  * in eval an expert's output is scaled by 1 - ``moe_token_dropout`` (training: dropout of that rate).
Only the tokens routed to an expert go through it (gathered per expert, their weighted outputs added back).

transformers 5's ``NllbMoeExperts.forward`` runs the wrong experts (it one-hot encodes the 0/1 dispatch mask, so
``expert_0`` takes every second choice and ``expert_1`` every first choice whatever the router picked); forgegrad
runs the experts the router picked, as transformers 4 and fairseq do; the tests compare against transformers with
that dispatch restored. transformers' router also overwrites its ``expert_capacity`` with each eval call's capacity
and keeps it for later training calls; forgegrad takes the config's every call.

``model.output_router_logits = True`` keeps each sparse layer's router logits of the last forward
(``router_logits()``: (encoder layers', decoder layers')) and ``aux_losses(attention_mask)`` gives transformers'
``encoder_aux_loss`` and ``decoder_aux_loss`` (load_balancing_loss with top-2); its training loss adds
``router_aux_loss_coef`` times their sum to the cross-entropy. generate's decode steps and the completions server's
batched rows run the lean step (models/hf/_decode_nllb_moe.py; the server's rows each routed as a call of that row
alone, as ``generate`` routes its prompt alone).

``export_seq2seq`` writes its graphs (BART's, each sparse layer's routing as graph ops: route_top2_choices): the first
and second choices by ArgMax, the queue places by a CumSum over the tokens (batch_prioritized_routing: a count of the
tokens of a higher top probability, an (N, N) comparison), the capacity from the call's token count as route_top2
computes it (the fraction's product in float64). With a fixed capacity K (moe_eval_capacity_token_fraction <= 0: the
config's expert_capacity) the experts run on their slots (Switch Transformer's / GShard's dispatch): each kept
choice scattered to slot (expert, queue place), the slots' tokens gathered, all experts one batched MatMul over
(num_experts, min(K, tokens)) rows, the outputs added back to their tokens. With a capacity computed from the call's
tokens (a fraction > 0, the checkpoints' 1.0: every token; a null expert_capacity) no fixed slot count bounds it (the
graph's shapes are products of the input sizes), and every expert runs on every token, weighted by its routing weight
(0 where it is not routed or was dropped): num_experts / 2 times the expert work of the eager layer (64x for
nllb-moe-54b's 128 experts; with its fraction 1.0 a slot dispatch would hold every token too: no saving). Refused:
second_expert_policy "sampling" / "random" (random draws) and a half-precision router_dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import numpy as np

from ... import grad_mode, nn
from ..._torch_indexing import index_add
from ...factories import cat, where, zeros
from ...nn import functional as F
from ...quantization.bf16 import from_bfloat16_bits, to_bfloat16_bits
from ...random import generator
from ...tensor import Tensor
from ._layers import activation, additive_mask, config_probability, ids_array, key_places, mask_array
from .bart import BartAttention, BartStack, M2M100ForConditionalGeneration
from .moe import load_balancing_loss

__all__ = ["NllbMoeForConditionalGeneration", "RouterSettings", "route_top2"]

_WHO = "NllbMoeForConditionalGeneration"
_POLICIES = ("all", "sampling", "random")


@dataclass(frozen=True)
class RouterSettings:
    """A config's routing fields, checked (``router_settings``)."""
    num_experts: int
    expert_capacity: Optional[int]
    eval_capacity_fraction: float
    batch_prioritized: bool
    normalize_before_dropping: bool
    ignore_padding: bool
    token_dropout: float
    router_bias: bool
    second_expert_policy: str = "all"
    router_dtype: str = "float32"


def _flag(cfg: dict, key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{_WHO}: config {key} must be true or false, got {value!r}")
    return value


def _int(cfg: dict, key: str, default, low: int, what: str) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{_WHO}: config {key} must be {what}, got {value!r}")
    return value


def router_settings(cfg: dict) -> RouterSettings:
    """The routing fields of an NLLB-MoE config (transformers' defaults where absent), each checked; also the
    fields the layers need (sparse steps, heads dividing d_model)."""
    experts = _int(cfg, "num_experts", 128, 2, "an integer >= 2 (top-2 routing)")
    capacity = cfg.get("expert_capacity", 64)
    if capacity is not None:
        capacity = _int(cfg, "expert_capacity", 64, 1, "a positive integer or null")
    for key in ("encoder_sparse_step", "decoder_sparse_step"):
        _int(cfg, key, 4, 0, "a non-negative integer (0: no sparse layers)")
    for key in ("encoder_attention_heads", "decoder_attention_heads"):
        heads = _int(cfg, key, 16, 1, "a positive integer")
        if cfg["d_model"] % heads:
            raise ValueError(f"{_WHO}: config {key} ({heads}) must divide d_model ({cfg['d_model']})")
    policy = cfg.get("second_expert_policy", "all")
    if policy not in _POLICIES:
        raise ValueError(f"{_WHO}: config second_expert_policy must be one of {', '.join(map(repr, _POLICIES))}, "
                         f"got {policy!r}")
    dtype = cfg.get("router_dtype", "float32")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"{_WHO}: config router_dtype must be 'float32', 'float16' or 'bfloat16', got {dtype!r}")
    fraction = cfg.get("moe_eval_capacity_token_fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
        raise ValueError(f"{_WHO}: config moe_eval_capacity_token_fraction must be a number (<= 0: the training "
                         f"capacity in eval too), got {fraction!r}")
    token_dropout = config_probability(cfg, "moe_token_dropout", _WHO, 0.2)
    if token_dropout == 1:
        raise ValueError(f"{_WHO}: config moe_token_dropout must be below 1, got {token_dropout!r}")
    return RouterSettings(experts, capacity, float(fraction), _flag(cfg, "batch_prioritized_routing", False),
                          _flag(cfg, "normalize_router_prob_before_dropping", False),
                          _flag(cfg, "router_ignore_padding_tokens", False), token_dropout,
                          _flag(cfg, "router_bias", False), policy, dtype)


def rounded_array(a: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values of ``a`` rounded to ``dtype`` ("bfloat16" or "float16", to nearest even, as torch's casts),
    held in float32."""
    if dtype == "bfloat16":
        return from_bfloat16_bits(to_bfloat16_bits(np.ascontiguousarray(a, np.float32)))
    with np.errstate(over="ignore"):
        return a.astype(np.float16).astype(np.float32)


def _rounded(t: Tensor, dtype: str) -> Tensor:
    """t's values rounded to ``dtype`` (rounded_array), held in float32; the gradient passes through unchanged (the
    difference added is a constant)."""
    a = t.numpy()
    return t + Tensor._wrap(rounded_array(a, dtype) - a)  # exact: r - a and a + (r - a) are float32 numbers


def _queue_places(choice: np.ndarray, routed: np.ndarray, order: np.ndarray, n_experts: int) -> np.ndarray:
    """Each token's place (0, 1, ...) in its chosen expert's queue, the tokens taken in ``order`` (routed ones only;
    an unrouted token's place is 0, as transformers' masked cumsum)."""
    N = choice.shape[0]
    picks = np.zeros((N, n_experts), np.int64)
    picks[np.arange(N), choice] = routed
    places = np.empty(N, np.int64)
    places[order] = np.cumsum(picks[order], axis=0)[np.arange(N), choice[order]] - 1
    return np.where(routed, places, 0)


def route_top2(probs: np.ndarray, logits: np.ndarray, non_padding: Optional[np.ndarray], s: RouterSettings,
               training: bool, noise: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                            np.ndarray]:
    """transformers' NllbMoeTop2Router.route_tokens on probs and logits (N, E): (first expert, second expert,
    whether the first is kept, whether the second is kept), each (N,); padding (``non_padding`` False) keeps neither
    unless router_ignore_padding_tokens. ``noise``: second_expert_policy "sampling"'s Gumbel noise (N, E), added to
    the logits that pick the second expert; "random"'s uniforms (N,): the second kept where 2 * its probability is
    above its uniform."""
    N, E = probs.shape
    rows = np.arange(N)
    first = probs.argmax(-1)  # the first of equal maxima, as torch.argmax
    others = logits + noise if s.second_expert_policy == "sampling" else logits.copy()
    others[rows, first] = -np.inf
    second = others.argmax(-1)
    chosen = np.ones(N, bool) if non_padding is None or s.ignore_padding else non_padding.astype(bool)
    chosen2 = chosen & (2 * probs[rows, second] > noise) if s.second_expert_policy == "random" else chosen
    # the tokens' queue order: by their top probability, highest first (ties: token order)
    order = np.argsort(-probs.max(-1), kind="stable") if s.batch_prioritized else rows
    place1 = _queue_places(first, chosen, order, E)
    place2 = _queue_places(second, chosen2, order, E) + np.bincount(first[chosen], minlength=E)[second]
    if not training and s.eval_capacity_fraction > 0:
        capacity = math.ceil(s.eval_capacity_fraction * N)
    else:
        capacity = s.expert_capacity if s.expert_capacity is not None else 2 * math.ceil(N / E)
    return first, second, chosen & (place1 < capacity), chosen2 & (place2 < capacity)


def _queue_places_graph(picks: Tensor, s: RouterSettings, priority: Optional[Tensor]) -> Tensor:
    """_queue_places as Tensor ops: ``picks`` (N, E) 0/1 float, a token's pick of an expert (routed ones only) ->
    (N, E) the count of tokens that queue before each token for each expert: the earlier tokens (an exclusive
    cumulative sum), or with batch_prioritized_routing the tokens of a higher ``priority`` (N,) (equal: an earlier
    token), counted by an (N, N) matrix product in place of argsort's stable sort (exact: sums of 0 / 1)."""
    if not s.batch_prioritized:
        return picks.cumsum(0) - picks
    index = key_places(priority.unsqueeze(0) * 0 + 1).squeeze(0)  # 0 .. N - 1
    mine, theirs = priority.unsqueeze(1), priority.unsqueeze(0)  # (N, 1) the token, (1, N) the others
    earlier = (index.unsqueeze(0) < index.unsqueeze(1)).float()
    ahead = (theirs > mine).float() + (theirs == mine).float() * earlier  # [n, m]: m queues before n
    return ahead @ picks


def _within_capacity(place: Tensor, tokens: Tensor, s: RouterSettings) -> Tensor:
    """(N, 1) 1.0 where a queue place (N, 1) is below route_top2's eval capacity for ``tokens`` (a (1, 1) float count
    of the call's tokens), as Tensor ops. For an integer place, place < ceil(x) exactly when place < x: the fraction's
    capacity is compared as fraction * tokens in float64, Python's product, without the ceil ONNX's opset lacks here."""
    if s.eval_capacity_fraction > 0:
        return (place.double() < tokens.double() * s.eval_capacity_fraction).float()
    if s.expert_capacity is not None:
        return (place < float(s.expert_capacity)).float()
    share = tokens.double() / s.num_experts  # 2 * ceil(tokens / experts): the truncation, plus 1 if it fell short
    whole = share.long().double()
    return (place.double() < (whole + (share > whole).double()) * 2).float()


class GraphRoute(NamedTuple):
    """route_top2_graph's choices, each (N, 1) float: the first and second expert, their queue places, whether each
    is kept (routed and within the capacity) and its weight (0 where dropped)."""
    expert1: Tensor
    expert2: Tensor
    place1: Tensor
    place2: Tensor
    keep1: Tensor
    keep2: Tensor
    weight1: Tensor
    weight2: Tensor


def route_top2_choices(probs: Tensor, logits: Tensor, routable: Tensor, s: RouterSettings) -> GraphRoute:
    """route_top2 in eval (second_expert_policy "all") as Tensor ops of the data, for an exported graph: probs and
    logits (N, E), ``routable`` (N, 1) float (1 for a token the router routes, 0 for padding it skips) -> each
    token's two choices (GraphRoute). The capacity is computed from the call's token count (routable's rows)."""
    E = s.num_experts
    experts = Tensor._wrap(np.arange(E, dtype=np.float32))
    first = probs.argmax(-1, keepdim=True).float()
    one1 = (first == experts).float()  # (N, E): the first choice
    others = where(one1, Tensor._wrap(np.full((1, 1), -np.inf, np.float32)), logits)
    second = others.argmax(-1, keepdim=True).float()  # the largest logit but the first
    one2 = (second == experts).float()
    p1, p2 = (probs * one1).sum(-1, keepdim=True), (probs * one2).sum(-1, keepdim=True)  # (N, 1) exact picks
    picks1, picks2 = one1 * routable, one2 * routable
    priority = p1.squeeze(1) if s.batch_prioritized else None  # a token's top probability
    place1 = (_queue_places_graph(picks1, s, priority) * one1).sum(-1, keepdim=True)
    # every first choice queues ahead of every second choice
    place2 = ((_queue_places_graph(picks2, s, priority) + picks1.sum(0, keepdim=True)) * one2).sum(-1, keepdim=True)
    tokens = (routable * 0 + 1).sum(0, keepdim=True)  # (1, 1): the call's tokens, padding counted
    keep1 = routable * _within_capacity(place1, tokens, s)
    keep2 = routable * _within_capacity(place2, tokens, s)
    eps = float(np.finfo(np.float32).eps)
    if s.normalize_before_dropping:
        total = (p1 + p2).clamp(min=eps)
        g1, g2 = p1 / total * keep1, p2 / total * keep2
    else:
        p1, p2 = p1 * keep1, p2 * keep2
        total = (p1 + p2).clamp(min=eps)
        g1, g2 = p1 / total, p2 / total
    return GraphRoute(first, second, place1, place2, keep1, keep2, g1, g2)


def route_top2_graph(probs: Tensor, logits: Tensor, routable: Tensor, s: RouterSettings) -> Tensor:
    """route_top2_choices as (N, E) each token's weights of its experts (the combine weights of
    NllbMoeSparseMLP.forward: 0 for an expert not picked or a choice past the capacity)."""
    return _expert_weights(route_top2_choices(probs, logits, routable, s), s.num_experts)


def _expert_weights(r: GraphRoute, n_experts: int) -> Tensor:
    experts = Tensor._wrap(np.arange(n_experts, dtype=np.float32))
    return (r.expert1 == experts).float() * r.weight1 + (r.expert2 == experts).float() * r.weight2


def graph_capacity(s: RouterSettings) -> Optional[int]:
    """The eval capacity of ``s`` when it is a fixed number of places (the config's expert_capacity: a fraction <= 0),
    which an exported graph dispatches into (NllbMoeSparseMLP.dispatched_forward); None when it is computed from the
    call's tokens (ceil(fraction * tokens), 2 * ceil(tokens / experts)), a size the graph's shapes cannot hold."""
    return s.expert_capacity if s.eval_capacity_fraction <= 0 else None


class NllbMoeDenseActDense(nn.Module):
    """fc1 -> activation -> dropout -> fc2 (a dense layer's feed-forward, and each expert)."""

    def __init__(self, cfg: dict, ffn_dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(cfg["d_model"], ffn_dim), nn.Linear(ffn_dim, cfg["d_model"])
        self.dropout = nn.Dropout(config_probability(cfg, "activation_dropout", _WHO))
        self.act = activation(cfg.get("activation_function", "relu"), _WHO)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class NllbMoeTop2Router(nn.Module):
    """The router's ``classifier`` (d_model -> experts, bias with router_bias); routing is route_top2's."""

    def __init__(self, cfg: dict, s: RouterSettings):
        super().__init__()
        self.classifier = nn.Linear(cfg["d_model"], s.num_experts, bias=s.router_bias)


class NllbMoeSparseMLP(nn.Module):
    """The sparse feed-forward: ``router`` and ``experts`` (``expert_0`` ...)."""

    def __init__(self, cfg: dict, ffn_dim: int, s: RouterSettings):
        super().__init__()
        self.settings = s
        self.router = NllbMoeTop2Router(cfg, s)
        self.experts = nn.ModuleDict({f"expert_{e}": NllbMoeDenseActDense(cfg, ffn_dim) for e in range(s.num_experts)})
        self.token_dropout = nn.Dropout(s.token_dropout)
        self.record_router = False  # keep the router's logits of each forward (aux_losses reads them)
        self.router_logits: Optional[Tensor] = None
        self.activation_function = cfg.get("activation_function", "relu")  # the experts' (an ONNX export emits it)
        self.export_dense = False  # a capacity from the token count: True exports every expert on every token

    def dense_forward(self, x: Tensor, routable: Tensor) -> Tensor:
        """The eval forward with the routing as Tensor ops of the data (route_top2_choices), for ONNX export: a traced
        graph has one fixed set of ops. With a fixed capacity (graph_capacity) the experts run on their capacity's
        slots (dispatched_forward: num_experts * min(capacity, tokens) rows); else, traced, the experts are one op
        whose graph loops over the experts in use on the rows that chose them (_moe_export.ChosenExpertsCall), and
        with ``export_dense`` (or untraced) every expert runs on every token, weighted by the token's routing weight
        (0 for the experts it is not routed to): num_experts / 2 times the expert work of ``forward``.
        Either is ``forward``'s output up to the order of the additions. ``routable`` (B * T, 1) float: 1 for a
        token the router routes."""
        reason = "the routing as Tensor ops is eval's" if self.training else graph_unsupported(self.settings)
        if reason:
            raise NotImplementedError(f"{_WHO}: {reason}")
        shape, s = x.shape, self.settings
        h = x.reshape(-1, shape[-1])
        logits = self.router.classifier(h)
        route = route_top2_choices(F.softmax(logits, dim=-1), logits, routable, s)
        if graph_capacity(s) is not None:
            return self.dispatched_forward(h, route, routable).reshape(*shape)
        from ._moe_export import ChosenExpertsCall, exports_chosen
        if grad_mode.recorder() is not None and exports_chosen(self):
            # each expert on its routed rows, in a Loop; -1: a choice past the capacity, or padding
            k1, k2 = route.keep1, route.keep2
            choices = cat([route.expert1 * k1 + k1 - 1, route.expert2 * k2 + k2 - 1], 1)
            weights = cat([route.weight1, route.weight2], 1)
            return ChosenExpertsCall.apply(h, choices, weights, module=self).reshape(*shape)
        weights = _expert_weights(route, s.num_experts)  # (N, E)
        y = None
        for e in range(s.num_experts):
            out = self.experts[f"expert_{e}"](h)
            if s.token_dropout > 0:
                out = out * (1 - s.token_dropout)
            part = out * weights[:, e:e + 1]
            y = part if y is None else y + part
        return y.reshape(*shape)

    def dispatched_forward(self, h: Tensor, route: GraphRoute, routable: Tensor) -> Tensor:
        """The experts of a fixed capacity K as Tensor ops (Switch Transformer's / GShard's dispatch): each kept
        choice (token n, expert e, queue place p < K) is scattered into slot e * K + p of a token index and a weight
        per slot (an empty slot: the index N of a zero row, weight 0); the slots are cut to K' = min(K, N) per expert
        (an expert holds at most the call's N tokens: a Slice to N, so a small call does not pay for K), their tokens
        gathered into (E, K', d_model), every expert run as one batched MatMul with its weights stacked
        (E, d_model, ffn), and each expert's weighted outputs added back to their tokens in expert order (as
        ``forward``'s index_add; a token's two outputs: any order is the same sum). Nothing after the Slice reshapes
        the K' axis, whose size the traced shapes do not know (K in a trace of N >= K). h (N, d_model) ->
        (N, d_model)."""
        s, K = self.settings, graph_capacity(self.settings)
        E, (N, d) = s.num_experts, h.shape
        column = routable * 0  # (N, 1) zeros
        token = (column + 1).cumsum(0) - 1  # (N, 1): n
        start = Tensor._wrap(np.full((1, 1), float(E * K), np.float32))
        # a dropped choice goes to a place of its own past the slots (E * K + n, E * K + N + n): no duplicate index
        junk = cat([start + token, start + token + (column + 1).sum(0, keepdim=True)]).reshape(-1)
        kept = cat([route.keep1, route.keep2]).reshape(-1)
        slot = cat([route.expert1 * K + route.place1, route.expert2 * K + route.place2]).reshape(-1)
        where_to = (kept * slot + (1 - kept) * junk).long()
        zero = cat([Tensor._wrap(np.zeros(E * K, np.float32)), column.reshape(-1), column.reshape(-1)])  # (EK + 2N,)
        slot_token = (zero + (column + 1).sum()).scatter(0, where_to, cat([token, token]).reshape(-1))  # empty: N
        slot_weight = zero.scatter(0, where_to, cat([route.weight1, route.weight2]).reshape(-1))
        # each cut from a static shape (a squeeze or reshape after the cut would bake K' = K in)
        index = slot_token[:E * K].reshape(E, K, 1)[:, :N].long()  # (E, K', 1)
        weight = slot_weight[:E * K].reshape(E, K, 1)[:, :N]
        gather = slot_token[:E * K].reshape(E, K)[:, :N].long()  # (E, K')
        rows = F.embedding(gather, cat([h, Tensor._wrap(np.zeros((1, d), np.float32))]))  # (E, K', d)
        w1, b1, w2, b2 = self._stacked_weights()
        out = self.experts["expert_0"].act(rows @ w1 + b1) @ w2 + b2  # dropout is eval's identity
        if s.token_dropout > 0:
            out = out * (1 - s.token_dropout)
        out = out * weight
        y = zeros(N + 1, d, dtype=h.dtype)
        for e in range(E):
            rows_e = index[e]  # (K', 1)
            y = y.scatter_add(0, rows_e.expand(rows_e.shape[0], d), out[e])
        return y[:N]

    def _stacked_weights(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The experts' fc1 and fc2 weights stacked for a batched MatMul: (E, d_model, ffn), (E, 1, ffn),
        (E, ffn, d_model), (E, 1, d_model) (constants of the exported graph)."""
        ex = [self.experts[f"expert_{e}"] for e in range(self.settings.num_experts)]

        def stacked(get) -> Tensor:
            return Tensor._wrap(np.ascontiguousarray(np.stack([get(m) for m in ex])))
        return (stacked(lambda m: m.fc1.weight.numpy().T), stacked(lambda m: m.fc1.bias.numpy()[None]),
                stacked(lambda m: m.fc2.weight.numpy().T), stacked(lambda m: m.fc2.bias.numpy()[None]))

    def forward(self, x: Tensor, non_padding=None) -> Tensor:
        """x (B, T, d_model); ``non_padding`` (B * T,) bool: the tokens that are not padding (None: all); a float
        (B * T, 1) Tensor: ``dense_forward``'s ``routable`` (the exported graphs')."""
        if isinstance(non_padding, Tensor):
            return self.dense_forward(x, non_padding)
        if grad_mode.recorder() is not None:  # an ONNX export traces this call: the routing would be baked in
            raise NotImplementedError(f"{_WHO}: the routing of a traced call must be dense_forward's (its routable "
                                      f"tokens given as a Tensor, as encode_graph and decode_graph give them)")
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        N, s = h.shape[0], self.settings
        if s.router_dtype == "float32":
            logits = self.router.classifier(h)
            probs = F.softmax(logits, dim=-1)
        else:  # transformers casts the router and its input to router_dtype: half-precision values, float32 sums
            c, half = self.router.classifier, s.router_dtype
            bias = None if c.bias is None else _rounded(c.bias, half)
            logits = _rounded(F.linear(_rounded(h, half), _rounded(c.weight, half), bias), half)
            probs = _rounded(F.softmax(logits, dim=-1), half)
        noise = None  # the random policies' draws, from forgegrad's generator (transformers draws from torch's)
        if s.second_expert_policy == "sampling":
            noise = generator().gumbel(size=(N, s.num_experts)).astype(np.float32)
        elif s.second_expert_policy == "random":
            noise = generator().random(N, dtype=np.float32)
        # (transformers adds the Gumbel noise to its logits in place: the ones it returns, which its aux loss reads)
        recorded = logits + Tensor._wrap(noise) if s.second_expert_policy == "sampling" else logits
        self.router_logits = recorded if self.record_router else None
        first, second, keep1, keep2 = route_top2(probs.numpy(), logits.numpy(), non_padding, s, self.training, noise)
        rows = np.arange(N)
        p1, p2 = probs[rows, first], probs[rows, second]  # differentiable into the router
        eps = float(np.finfo(np.float32).eps)
        k1, k2 = (Tensor._wrap(k.astype(np.float32)) for k in (keep1, keep2))
        if s.normalize_before_dropping:
            total = (p1 + p2).clamp(min=eps)
            # "random" replaces the second's normalised weight by its probability (transformers' order of steps)
            second_weight = p2 if s.second_expert_policy == "random" else p2 / total
            gates = cat([p1 / total * k1, second_weight * k2])
        else:
            p1, p2 = p1 * k1, p2 * k2
            total = (p1 + p2).clamp(min=eps)
            gates = cat([p1 / total, p2 / total])  # (2N,): slot n is token n's first choice, N + n its second
        picked = np.concatenate([np.where(keep1, first, -1), np.where(keep2, second, -1)])
        outs, slots_all = [], []
        for e in range(s.num_experts):
            slots = np.flatnonzero(picked == e)
            if not slots.size:
                continue
            out = self.experts[f"expert_{e}"](h[slots % N])  # only the tokens routed to expert e
            if s.token_dropout > 0:
                out = self.token_dropout(out) if self.training else out * (1 - s.token_dropout)
            outs.append(out * gates[slots].reshape(-1, 1))
            slots_all.append(slots % N)
        y = zeros(N, shape[-1], dtype=h.dtype)
        if outs:
            y = index_add(y, 0, Tensor._wrap(np.concatenate(slots_all)), cat(outs, 0))
        return y.reshape(*shape)


class NllbMoeLayer(nn.Module):
    """NllbMoeEncoderLayer, or NllbMoeDecoderLayer with ``cross``: pre-norm self-attention, cross-attention, and
    the dense or sparse feed-forward, each added to the residual."""

    def __init__(self, cfg: dict, prefix: str, cross: bool, sparse: bool, s: RouterSettings):
        super().__init__()
        d, heads, ffn = cfg["d_model"], cfg[f"{prefix}_attention_heads"], cfg[f"{prefix}_ffn_dim"]
        attention_dropout = config_probability(cfg, "attention_dropout", _WHO)
        self.sparse = sparse
        self.self_attn = BartAttention(d, heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        if cross:
            self.cross_attention = BartAttention(d, heads, attention_dropout)
            self.cross_attention_layer_norm = nn.LayerNorm(d)
        self.ffn = NllbMoeSparseMLP(cfg, ffn, s) if sparse else NllbMoeDenseActDense(cfg, ffn)
        self.ff_layer_norm = nn.LayerNorm(d)
        self.attn_dropout = nn.Dropout(config_probability(cfg, "dropout", _WHO, 0.1))
        self.ff_dropout = nn.Dropout(config_probability(cfg, "activation_dropout", _WHO))  # as transformers'

    def forward(self, x, mask, causal=False, cross_kv=None, cross_mask=None, cache=None, layer=0, non_padding=None):
        x = x + self.attn_dropout(self.self_attn(self.self_attn_layer_norm(x), mask, causal, cache=cache, layer=layer))
        if cross_kv is not None:
            x = x + self.attn_dropout(self.cross_attention(self.cross_attention_layer_norm(x), cross_mask,
                                                           kv=cross_kv))
        h = self.ff_layer_norm(x)
        h = self.ffn(h, non_padding) if self.sparse else self.ffn(h)
        return x + self.ff_dropout(h)


class NllbMoeStack(BartStack):
    _no_split_modules = ["NllbMoeLayer"]
    _fsdp_nested_units = ["cross_attention.k_proj", "cross_attention.v_proj"]  # run by cross_kv, outside the layers


class NllbMoeForConditionalGeneration(M2M100ForConditionalGeneration):
    """NLLB-MoE: M2M100's model with sparse top-2 feed-forwards every ``encoder_sparse_step`` /
    ``decoder_sparse_step`` layers (see the module's docstring for the routing)."""

    architecture = "NllbMoeForConditionalGeneration"
    model_type = "nllb-moe"
    # an expert's capacity counts the tokens of one call: a row's decoder tokens fed again (the paged server's
    # preempted row) go one per call, as its decode steps fed them, so that no token is dropped for another's
    routes_per_call = True

    def __init__(self, config: dict):
        self.router = router_settings(config)
        super().__init__(config)
        coef = config.get("router_aux_loss_coef", 0.001)
        if isinstance(coef, bool) or not isinstance(coef, (int, float)):
            raise ValueError(f"{_WHO}: config router_aux_loss_coef must be a number, got {coef!r}")
        self.router_aux_loss_coef = float(coef)
        self.output_router_logits = bool(config.get("output_router_logits", False))

    def make_stack(self, cfg: dict, prefix: str, embed_norm):
        step = cfg.get(f"{prefix}_sparse_step", 4)
        cross = prefix == "decoder"

        def layer(i: int) -> NllbMoeLayer:
            return NllbMoeLayer(cfg, prefix, cross, step > 0 and (i + 1) % step == 0, self.router)
        return NllbMoeStack(cfg, prefix, self.positions, self.pre_norm, self.position_offset, embed_norm, layer)

    def cross_kv(self, encoder_states: Tensor) -> list:
        return [layer.cross_attention.project_kv(encoder_states) for layer in self.decoder.layers]

    def encode(self, input_ids, attention_mask=None) -> Tensor:
        """The encoder's output (B, S, d_model); its routers skip the padding (attention_mask 0)."""
        ids = ids_array(input_ids, self.architecture, self.vocab_size)
        B, S = ids.shape
        if S > self.max_positions:
            raise ValueError(f"{self.architecture}: {S} tokens exceed max_position_embeddings {self.max_positions}")
        pad = mask_array(attention_mask, self.architecture, ids.shape)
        mask = additive_mask(pad, 0, S, causal=False)
        non_padding = None if pad is None else pad.reshape(-1) != 0
        return self.encoder.run(self.encoder.embed(self._tokens(ids), 0, S, ids), mask, non_padding=non_padding)

    # --- the routers' auxiliary outputs ---
    def _sparse(self, stack) -> list:
        return [layer.ffn for layer in stack.layers if layer.sparse]

    @property
    def output_router_logits(self) -> bool:
        """Whether each forward keeps its routers' logits (``router_logits``, ``aux_losses``)."""
        return any(m.record_router for m in self._sparse(self.encoder) + self._sparse(self.decoder))

    @output_router_logits.setter
    def output_router_logits(self, on: bool) -> None:
        if not isinstance(on, bool):
            raise TypeError(f"{_WHO}: output_router_logits must be True or False, got {on!r}")
        for m in self._sparse(self.encoder) + self._sparse(self.decoder):
            m.record_router, m.router_logits = on, None

    def router_logits(self) -> Tuple[tuple, tuple]:
        """(encoder's, decoder's) sparse layers' router logits of the last forward, (batch * tokens, num_experts)
        each in layer order (transformers' ``encoder_router_logits``, ``decoder_router_logits``)."""
        if not self.output_router_logits:
            raise RuntimeError(f"{_WHO}: router logits are kept only with model.output_router_logits = True")
        out = tuple(tuple(m.router_logits for m in self._sparse(stack)) for stack in (self.encoder, self.decoder))
        if any(t is None for part in out for t in part):
            raise RuntimeError(f"{_WHO}: no forward has run since output_router_logits was set")
        return out

    def aux_losses(self, attention_mask=None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """transformers' (encoder_aux_loss, decoder_aux_loss) of the last forward: load_balancing_loss of each
        stack's router logits with top-2, the encoder's over its tokens that ``attention_mask`` (B, S) keeps (None:
        a stack without sparse layers). Its loss adds router_aux_loss_coef * (their sum) to the cross-entropy."""
        n = self.router.num_experts
        encoder, decoder = self.router_logits()
        return (load_balancing_loss(encoder, n, 2, attention_mask) if encoder else None,
                load_balancing_loss(decoder, n, 2) if decoder else None)

    @property
    def onnx_unsupported(self) -> Optional[str]:
        """Why export_seq2seq refuses this config (random second-expert policies, a half-precision router), or
        None."""
        return graph_unsupported(self.router)

    def graph_layer_arguments(self, input_ids: Tensor, mask: Optional[Tensor] = None) -> dict:
        """The routers' ``routable`` tokens in the exported graphs, (B * T, 1) float: the encoder's attention mask
        (its padding goes to no expert, unless router_ignore_padding_tokens), every decoder token."""
        every = (input_ids.reshape(-1, 1) * 0 + 1).float()
        return {"non_padding": every if mask is None or self.router.ignore_padding else mask.reshape(-1, 1)}


def graph_unsupported(s: RouterSettings) -> Optional[str]:
    """Why the routing of ``s`` has no exported graph, or None."""
    if s.second_expert_policy != "all":
        return (f"second_expert_policy {s.second_expert_policy!r} draws random numbers per token, which an exported "
                f"graph does not reproduce; export a config with second_expert_policy 'all'")
    if s.router_dtype != "float32":
        return (f"router_dtype {s.router_dtype!r} (the router rounded to half precision) has no ONNX graph yet; "
                f"export with router_dtype 'float32'")
    return None
