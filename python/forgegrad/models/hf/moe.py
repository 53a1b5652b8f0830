"""Mixture-of-experts decoders (transformers' ``MixtralForCausalLM``, ``Qwen2MoeForCausalLM``,
``Qwen3MoeForCausalLM``): Mistral's / Qwen2's / Qwen3's attention with a sparse MLP block in place of the
dense one.

The block routes each token to ``num_experts_per_tok`` of its experts (SwiGLU MLPs): the router's logits go
through a float32 softmax, the k largest probabilities pick the experts (largest first, as torch.topk),
and the k weights are renormalized to sum to 1 (Mixtral always, Qwen with ``norm_topk_prob``). Only the
tokens routed to an expert go through it; each expert's outputs are scaled by their weights and the k
outputs of a token summed in routing order, as transformers does. Qwen2-MoE adds a shared expert on every
token, gated by sigmoid(shared_expert_gate(x)); Qwen's ``decoder_sparse_step`` / ``mlp_only_layers`` keep
some layers dense (an MLP of ``intermediate_size``).

The parameters are one ``nn.Linear`` per expert projection under transformers' module path
(``model.layers.i.mlp.gate``, ``mlp.experts.e.gate_proj`` / ``up_proj`` / ``down_proj``); Mixtral's
checkpoints store them as ``block_sparse_moe.gate`` and ``block_sparse_moe.experts.e.w1`` / ``w3`` / ``w2``
(renamed on load, back on save), and transformers' in-memory layout with all experts fused
(``mlp.experts.gate_up_proj`` (E, 2I, H), ``mlp.experts.down_proj`` (E, H, I)) is split on load.
``save_pretrained`` writes one tensor per expert, as transformers' own ``save_pretrained`` does.

The forward returns the logits. With ``model.output_router_logits = True`` (or the config's) each sparse block
keeps its router's logits of the last forward (``model.router_logits()``), and ``model.aux_loss(mask)`` is
transformers' load-balancing loss on them (``load_balancing_loss``: Switch Transformer's eqs. 4-6),
differentiable into the routers; add ``model.router_aux_loss_coef`` times it to the language-model loss, as
transformers' forward does with ``labels``. An ONNX export records the experts' part as one op whose graph routes
in ONNX ops and runs each expert in use on its routed rows only (_moe_export.py); ``dense_forward`` is the same
block as plain tensor ops, every expert on every token, weighted: what an export records with a block's
``export_dense = True`` and for experts that are not float32 Linear layers (int8 / bfloat16 weights).
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from ... import _C, grad_mode, nn
from ...factories import cat
from ...nn import functional as F
from ...tensor import Tensor
from .llama import LlamaMLP, LlamaModel, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, _window

__all__ = ["MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "SparseMoeBlock",
           "load_balancing_loss"]


def _positive_int(cfg: dict, keys, who: str, default=None) -> int:
    """The first of ``keys`` the config gives, checked to be a positive integer (``default`` when none)."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    key = next((k for k in keys if cfg.get(k) is not None), keys[0])
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{who}: config {key} must be a positive integer, got {value!r}")
    return value


def top_k_experts(probs: np.ndarray, k: int) -> np.ndarray:
    """(N, k) expert indices: each row's k largest probabilities, largest first, as torch.topk returns them; among
    exactly equal probabilities the lower index first, as ONNX's TopK (torch.topk leaves that order unspecified:
    torch 2.13 on the CPU returns an all-equal row's higher indices first)."""
    return np.argsort(-probs, axis=-1, kind="stable")[:, :k]


def expert_slots(top: np.ndarray, n_experts: int):
    """For each expert some token is routed to, in expert order: (expert, slots), where slot t * k + j is
    token t's j-th choice."""
    flat = top.reshape(-1)
    order = np.argsort(flat, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=n_experts))])
    return [(e, order[bounds[e]:bounds[e + 1]]) for e in range(n_experts) if bounds[e + 1] > bounds[e]]


class SparseMoeBlock(nn.Module):
    """The sparse MLP block: ``gate`` (the router, hidden -> experts, no bias), ``experts`` (SwiGLU MLPs of
    ``intermediate``), and with ``shared``: ``shared_expert`` and ``shared_expert_gate`` (Qwen2-MoE)."""

    def __init__(self, cfg: dict, n_experts: int, top_k: int, intermediate: int, norm_topk_prob: bool,
                 shared: Optional[int] = None):
        super().__init__()
        E = cfg["hidden_size"]
        self.n_experts, self.top_k, self.norm_topk_prob = n_experts, top_k, norm_topk_prob
        self.hidden_act = cfg.get("hidden_act", "silu")  # the experts' (an ONNX export emits it)
        self.gate = nn.Linear(E, n_experts, bias=False)
        expert_cfg = {**cfg, "intermediate_size": intermediate, "mlp_bias": False}
        self.experts = nn.ModuleList([LlamaMLP(expert_cfg) for _ in range(n_experts)])
        self.record_router = False  # keep the router's logits of each forward (the aux loss reads them)
        # an ONNX export's graph: False runs each expert in use on its routed rows (a Loop over them), True every
        # expert on every token, weighted (no Loop or NonZero, for runtimes without them; num_experts / top_k
        # times the expert work)
        self.export_dense = False
        self.router_logits: Optional[Tensor] = None
        self.has_shared = shared is not None
        if self.has_shared:
            self.shared_expert = LlamaMLP({**cfg, "intermediate_size": shared, "mlp_bias": False})
            self.shared_expert_gate = nn.Linear(E, 1, bias=False)

    def route(self, probs: np.ndarray):
        """Each token's k experts (N, k) from its router probabilities (N, n_experts)."""
        return top_k_experts(probs, self.top_k)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        probs = F.softmax(self._router(h), dim=-1)  # float32, as transformers' softmax(logits.float())
        if grad_mode.recorder() is not None:  # an ONNX export traces this call
            from ._moe_export import RoutedExpertsCall, exports_routed
            if not exports_routed(self):
                return self.dense_forward(h).reshape(*shape)
            return self._add_shared(h, RoutedExpertsCall.apply(h, probs, module=self)).reshape(*shape)
        return self._add_shared(h, self.routed_experts(h, probs)).reshape(*shape)

    def routed_experts(self, h: Tensor, probs: Tensor) -> Tensor:
        """The experts' part on (N, hidden) rows with their (N, n_experts) router probabilities: each row's k
        chosen experts (only the rows routed to an expert go through it), weighted, summed in routing order."""
        N, k = h.shape[0], self.top_k
        top = self.route(probs.numpy())
        weights = probs[np.arange(N)[:, None], top]  # (N, k), differentiable into the router
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        outs, order = [], []
        for e, slots in expert_slots(top, self.n_experts):  # only the tokens routed to expert e
            outs.append(self.experts[e](h[slots // k]))
            order.append(slots)
        order = np.concatenate(order)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        # every output scaled by its weight in one op (in slot order), then the k outputs of a token summed in order
        out = cat(outs, 0)[inverse] * weights.reshape(-1, 1)
        return out.reshape(N, k, h.shape[-1]).sum(dim=1)

    def _router(self, h: Tensor) -> Tensor:
        logits = self.gate(h)
        self.router_logits = logits if self.record_router else None
        return logits

    def _add_shared(self, h: Tensor, y: Tensor) -> Tensor:
        if self.has_shared:
            y = y + F.sigmoid(self.shared_expert_gate(h)) * self.shared_expert(h)
        return y

    def dense_forward(self, h: Tensor) -> Tensor:
        """The block on (N, hidden) rows with the routing as Tensor ops of the data, for ONNX export: which
        experts a token uses depends on its values, and a traced graph has one fixed set of ops. Every expert
        runs on every token and is weighted by the token's routing weight, 0 for the experts it is not routed
        to (the same output, up to the order of the k additions; num_experts / top_k times the expert work of
        the eager block)."""
        probs = F.softmax(self._router(h), dim=-1)  # (N, n_experts)
        # an expert's rank among a token's: the experts with a higher probability, or an equal one and a lower
        # index (ONNX TopK's order); the top k are those ranked below k
        mine, other = probs.unsqueeze(-1), probs.unsqueeze(-2)
        lower = Tensor._wrap(np.tril(np.ones((self.n_experts, self.n_experts), np.float32), -1))
        rank = ((other > mine).float() + (other == mine).float() * lower).sum(dim=-1)
        weights = probs * (rank < float(self.top_k)).float()
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        y = None
        for e, expert in enumerate(self.experts):
            part = expert(h) * weights[:, e:e + 1]
            y = part if y is None else y + part
        return self._add_shared(h, y)


def sparse_moe_arrays(block: SparseMoeBlock, h: np.ndarray, linear, mlp) -> np.ndarray:
    """The block's forward on arrays (rows, E) for the lean decode step and prefill: ``linear(layer, x)`` runs
    a Linear (or int8 weight-only) layer, ``mlp(module, x)`` a SwiGLU MLP, both the decoder's kernels."""
    N, k = h.shape[0], block.top_k
    logits = np.ascontiguousarray(linear(block.gate, h), dtype=np.float32)
    probs = np.empty_like(logits)
    _C.softmax.softmax_forward(logits, probs)
    top = block.route(probs)
    weights = np.take_along_axis(probs, top, axis=1)
    if block.norm_topk_prob:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    if N == 1:
        # a decode step of one sequence: its k experts on its one row, weighted and added in routing order (the
        # sum below, without the sort, gathers and scatter, ~0.1 ms a layer of Python beside ~0.4 ms of GEMVs)
        y = None
        for e, w in zip(top[0].tolist(), weights[0]):
            part = mlp(block.experts[e], h) * w
            y = part if y is None else y + part
    else:
        weights = weights.reshape(-1, 1)
        out = np.empty((N * k, h.shape[1]), np.float32)
        for e, slots in expert_slots(top, block.n_experts):
            out[slots] = mlp(block.experts[e], np.ascontiguousarray(h[slots // k])) * weights[slots]
        y = out.reshape(N, k, -1).sum(axis=1)
    if block.has_shared:
        g = np.ascontiguousarray(linear(block.shared_expert_gate, h), dtype=np.float32)
        _C.activation.act_forward(_C.activation.SIGMOID, g, g)
        y = y + g * mlp(block.shared_expert, h)
    return y


def load_balancing_loss(router_logits: Sequence[Tensor], num_experts: int, top_k: int, attention_mask=None) -> Tensor:
    """transformers' ``load_balancing_loss_func``: ``num_experts`` * sum over experts of (the share of top-k
    choices that went to the expert) * (its mean router probability), both over every layer's rows (B*T, E)
    together, padding rows (``attention_mask`` (B, T) 0) left out. The gradient reaches the routers through the
    probabilities (the choices are counts)."""
    logits = list(router_logits)
    if not logits:
        raise ValueError("load_balancing_loss: no router logits (set model.output_router_logits = True and run a "
                         "forward first)")
    rows = logits[0].shape[0]
    if any(t.ndim != 2 or t.shape != (rows, num_experts) for t in logits):
        raise ValueError(f"load_balancing_loss: router_logits must be (rows, {num_experts}) tensors of one shape, got "
                         f"{[tuple(t.shape) for t in logits]}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 < top_k <= num_experts:
        raise ValueError(f"load_balancing_loss: top_k must be an int in 1..{num_experts}, got {top_k!r}")
    if attention_mask is None:
        weight = np.ones(rows, np.float32)
    else:
        weight = np.asarray(attention_mask.numpy() if isinstance(attention_mask, Tensor) else attention_mask)
        if weight.size != rows or weight.ndim != 2:
            raise ValueError(f"load_balancing_loss: attention_mask must be (batch, tokens) with batch * tokens = "
                             f"{rows} (the router logits' rows), got shape {weight.shape}")
        weight = weight.reshape(-1).astype(np.float32)
    counts = np.zeros(num_experts, np.float32)
    prob_sum = None
    for t in logits:
        probs = F.softmax(t, dim=-1)
        top = top_k_experts(probs.numpy(), top_k)
        counts += np.bincount(top.reshape(-1), weights=np.repeat(weight, top_k), minlength=num_experts).astype(
            np.float32)
        part = (probs * Tensor._wrap(weight[:, None])).sum(dim=0)
        prob_sum = part if prob_sum is None else prob_sum + part
    total = np.float32(weight.sum() * len(logits))
    tokens_per_expert = Tensor._wrap(counts / total)
    return (tokens_per_expert * (prob_sum / float(total))).sum() * float(num_experts)


_FUSED = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$")


class _MoeDecoder:
    """What the three mixture-of-experts decoders share (mixed in before their dense base class): the
    block per layer, the config checks, loading the fused expert layout."""

    expert_keys = ("num_experts",)   # the config key(s) giving the number of experts
    shared_expert = False            # Qwen2-MoE: a gated shared expert in every sparse block

    def _moe_settings(self, cfg: dict) -> dict:
        who = self.architecture
        n = _positive_int(cfg, self.expert_keys, who)
        k = _positive_int(cfg, "num_experts_per_tok", who)
        if k > n:
            raise ValueError(f"{who}: config num_experts_per_tok ({k}) exceeds the number of experts ({n})")
        return dict(n_experts=n, top_k=k, intermediate=self._expert_size(cfg), norm_topk_prob=self._norm_topk(cfg),
                    shared=_positive_int(cfg, "shared_expert_intermediate_size", who) if self.shared_expert else None)

    def _expert_size(self, cfg: dict) -> int:
        return _positive_int(cfg, "moe_intermediate_size", self.architecture)

    @staticmethod
    def _norm_topk(cfg: dict) -> bool:
        return bool(cfg.get("norm_topk_prob", False))

    def sparse_layers(self, cfg: dict) -> List[bool]:
        """Which layers have the sparse block (Qwen: every ``decoder_sparse_step``-th, but ``mlp_only_layers``)."""
        n, who = cfg["num_hidden_layers"], self.architecture
        step = _positive_int(cfg, "decoder_sparse_step", who, default=1)
        dense = cfg.get("mlp_only_layers") or []
        if not isinstance(dense, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n
                                                  for i in dense):
            raise ValueError(f"{who}: config mlp_only_layers must list layer indices below {n}, got {dense!r}")
        return [i not in dense and (i + 1) % step == 0 for i in range(n)]

    def _build_model(self, cfg: dict) -> nn.Module:
        settings = self._moe_settings(cfg)
        mlps = [SparseMoeBlock(cfg, **settings) if sparse else None for sparse in self.sparse_layers(cfg)]
        coef = cfg.get("router_aux_loss_coef", 0.001)
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not np.isfinite(coef):
            raise ValueError(f"{self.architecture}: config router_aux_loss_coef must be a number, got {coef!r}")
        self.router_aux_loss_coef = float(coef)
        for block in mlps:
            if block is not None:
                block.record_router = bool(cfg.get("output_router_logits", False))
        return LlamaModel(cfg, mlps, **self._variant(cfg))

    def _sparse_blocks(self) -> List[SparseMoeBlock]:
        return [m for m in self.modules() if isinstance(m, SparseMoeBlock)]

    @property
    def output_router_logits(self) -> bool:
        """Whether each forward keeps its routers' logits (``router_logits``, ``aux_loss``). The forward then
        takes the Tensor path (the lean prefill keeps none)."""
        return any(b.record_router for b in self._sparse_blocks())

    @output_router_logits.setter
    def output_router_logits(self, on: bool) -> None:
        if not isinstance(on, (bool, np.bool_)):
            raise TypeError(f"{self.architecture}: output_router_logits must be True or False, got {on!r}")
        for b in self._sparse_blocks():
            b.record_router, b.router_logits = bool(on), None

    def router_logits(self) -> tuple:
        """The sparse layers' router logits of the last forward, (batch * tokens, num_experts) each, in layer
        order (transformers' ``outputs.router_logits``)."""
        if not self.output_router_logits:
            raise RuntimeError(f"{self.architecture}: router logits are kept only with model.output_router_logits "
                               "= True")
        logits = tuple(b.router_logits for b in self._sparse_blocks())
        if any(t is None for t in logits):
            raise RuntimeError(f"{self.architecture}: no forward has run since output_router_logits was set")
        return logits

    def aux_loss(self, attention_mask=None) -> Tensor:
        """transformers' load-balancing loss (``aux_loss``) of the last forward's routing (``load_balancing_loss``);
        ``attention_mask``: that forward's (batch, tokens) mask, padding rows left out."""
        block = self._sparse_blocks()[0]
        return load_balancing_loss(self.router_logits(), block.n_experts, block.top_k, attention_mask)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {}
        for key, value in tensors.items():
            m = _FUSED.match(key)
            if m is None or np.ndim(value) != 3:  # a fused tensor of another rank stays: the name check reports it
                out[key] = value
                continue
            base, kind = m.groups()
            for e in range(value.shape[0]):
                if kind == "down_proj":
                    out[f"{base}.{e}.down_proj.weight"] = value[e]
                else:  # gate_up_proj: the gate's rows, then the up projection's
                    half = value.shape[1] // 2
                    out[f"{base}.{e}.gate_proj.weight"], out[f"{base}.{e}.up_proj.weight"] = (
                        value[e, :half], value[e, half:])
        return super().from_hf(out)


class MixtralForCausalLM(_MoeDecoder, MistralForCausalLM):
    """Mixtral: Mistral's attention (and its sliding window when the config sets one) with a sparse block in
    every layer: ``num_local_experts`` experts of ``intermediate_size``, the top-k weights always renormalized.
    The checkpoint's ``block_sparse_moe.experts.e.w1`` / ``w3`` / ``w2`` are the experts' gate / up / down
    projections."""

    architecture = "MixtralForCausalLM"
    model_type = "mixtral"
    expert_keys = ("num_local_experts", "num_experts")
    _RENAME = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}

    def _expert_size(self, cfg: dict) -> int:
        return cfg["intermediate_size"]

    @staticmethod
    def _norm_topk(cfg: dict) -> bool:
        return True

    def sparse_layers(self, cfg: dict) -> List[bool]:
        return [True] * cfg["num_hidden_layers"]

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {}
        for key, value in tensors.items():
            if ".block_sparse_moe." in key:
                key = key.replace(".block_sparse_moe.", ".mlp.")
                parts = key.split(".")
                if len(parts) > 2 and parts[-2] in self._RENAME and ".mlp.experts." in key:
                    parts[-2] = self._RENAME[parts[-2]]
                    key = ".".join(parts)
            out[key] = value
        return super().from_hf(out)

    def checkpoint_name(self, key: str) -> str:
        """The name a parameter has in Mixtral's checkpoints (``...block_sparse_moe.experts.e.w1.weight``)."""
        if ".mlp." not in key:
            return key
        parts = key.replace(".mlp.", ".block_sparse_moe.").split(".")
        if ".experts." in key:
            parts[-2] = {v: k for k, v in self._RENAME.items()}[parts[-2]]
        return ".".join(parts)

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {self.checkpoint_name(k): v for k, v in super().to_hf().items()}


class Qwen2MoeForCausalLM(_MoeDecoder, Qwen2ForCausalLM):
    """Qwen1.5-MoE / Qwen2-MoE: Qwen2's attention (query/key/value biases with ``qkv_bias``, the default) and
    sparse blocks of ``num_experts`` experts of ``moe_intermediate_size`` plus a shared expert of
    ``shared_expert_intermediate_size`` weighted by sigmoid(shared_expert_gate(x)); the top-k weights
    renormalized with ``norm_topk_prob``."""

    architecture = "Qwen2MoeForCausalLM"
    model_type = "qwen2_moe"
    shared_expert = True

    @staticmethod
    def _variant(cfg: dict) -> dict:
        return dict(qkv_bias=bool(cfg.get("qkv_bias", True)), o_bias=False, qk_norm=False)

    def _sliding_windows(self, cfg: dict) -> List[Optional[int]]:
        if cfg.get("layer_types") is None:  # transformers' Qwen2-MoE default: every other layer below max_window_layers
            n = cfg["num_hidden_layers"]
            start = cfg.get("max_window_layers", n) if cfg.get("use_sliding_window") else 0
            cfg = {**cfg, "layer_types": ["sliding_attention" if (i + 1) % 2 and i < start else "full_attention"
                                          for i in range(n)]}
        return super()._sliding_windows(cfg)


class Qwen3MoeForCausalLM(_MoeDecoder, Qwen3ForCausalLM):
    """Qwen3-MoE: Qwen3's attention (an RMSNorm over each head's query and key; biases with ``attention_bias``)
    and a sparse block of ``num_experts`` experts of ``moe_intermediate_size`` (no shared expert); the top-k
    weights renormalized with ``norm_topk_prob``. A sliding window, with ``use_sliding_window``, on every layer."""

    architecture = "Qwen3MoeForCausalLM"
    model_type = "qwen3_moe"
    expert_keys = ("num_experts", "num_local_experts")

    def _sliding_windows(self, cfg: dict) -> List[Optional[int]]:
        window = _window(cfg, self.architecture) if cfg.get("use_sliding_window") else None
        return [window] * cfg["num_hidden_layers"]
