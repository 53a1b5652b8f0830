"""NLLB-MoE's lean decode step: BartLeanStep's pre-norm M2M100 decoder (models/hf/_decode_seq2seq.py) with each
sparse layer's top-2 mixture of experts on arrays: the router's logits and probabilities, route_top2's choices and
capacity (models/hf/nllb_moe.py, the Tensor forward's own function), the gates, and each expert on the rows routed
to it only (gathered, its fc1 / activation / fc2 as the step's GEMMs), the weighted outputs added back in the Tensor
forward's order (experts in index order).

An expert's capacity counts the tokens of one call: ``generate`` on a batch routes the batch's step tokens together,
so a token may be dropped for another row's (an eval fraction below 1, or a fixed expert_capacity). The completions
server's rows must each get what ``generate`` gives their prompt alone, whose every step is a call of one token:
with ``rows_alone`` each row's token is routed as that call routes it (route_top2 on its row alone, where no capacity
can bind: one token fills at most one place in each of its two experts' queues).

Where the step does not apply (``nllb_moe_lean_applies``): the random second-expert policies ("sampling",
"random": their draws come from the process' generator per call, which a batch of rows cannot share as calls alone
would), a half-precision router whose classifier is not a float32 Linear, and a model keeping its router logits
(``output_router_logits``, which only the Tensor forward records). There generate decodes through the Tensor layers
and the server serves the model one request at a time.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ... import _C
from ._decode_seq2seq import BartLeanStep, _linear

__all__ = ["NllbMoeLeanStep", "nllb_moe_lean_applies"]


def nllb_moe_lean_applies(model) -> bool:
    """Whether NllbMoeLeanStep computes what ``model``'s Tensor decode does (see the module's docstring)."""
    from ... import nn
    s = model.router
    if s.second_expert_policy != "all" or model.output_router_logits:
        return False
    if s.router_dtype != "float32":
        return all(type(m.router.classifier) is nn.Linear for m in model._sparse(model.decoder))
    return True


class NllbMoeLeanStep(BartLeanStep):
    """BartLeanStep for NLLB-MoE (``step(tokens (B,), positions) -> logits (B, vocab)``): its layers' names
    (``cross_attention``, ``ff_layer_norm``, ``ffn``) and sparse feed-forwards. ``rows_alone``: each row's token
    routed as a call of that row alone (the server's rows), else the step's tokens together (generate's batch)."""

    def __init__(self, model, cross: List[Tuple], mask: Optional[np.ndarray], cache, rows_alone: bool = False):
        super().__init__(model, cross, mask, cache)
        self.rows_alone = bool(rows_alone)
        self.settings = model.router
        half = self.settings.router_dtype
        # a half-precision router's weights rounded once (transformers casts the classifier to router_dtype)
        self.half_router = {} if half == "float32" else {
            id(m.router.classifier): _half_classifier(m.router.classifier, half) for m in model._sparse(model.decoder)}

    @staticmethod
    def _parts(layer) -> tuple:
        return layer.cross_attention, layer.cross_attention_layer_norm, layer.ff_layer_norm

    def _feed_forward(self, layer, y: np.ndarray) -> np.ndarray:
        if not layer.sparse:
            return _dense(layer.ffn, y, self.act)
        return self._sparse(layer.ffn, np.ascontiguousarray(y, dtype=np.float32))

    def _router(self, classifier, h: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(logits, probabilities) (N, E) of the rows h, as NllbMoeSparseMLP computes them."""
        half = self.settings.router_dtype
        if half == "float32":
            logits = np.ascontiguousarray(_linear(classifier, h), dtype=np.float32)
        else:  # half-precision values, float32 sums: the input, weights and logits rounded
            from .nllb_moe import rounded_array
            weight, bias = self.half_router[id(classifier)]
            logits = rounded_array(_C.gemm.linear(rounded_array(h, half), weight, bias, -1, 0.0, None), half)
        probs = np.empty_like(logits)
        _C.softmax.softmax_forward(logits, probs)
        if half != "float32":
            from .nllb_moe import rounded_array
            probs = rounded_array(probs, half)
        return logits, probs

    def _routes(self, probs: np.ndarray, logits: np.ndarray):
        """route_top2's (first, second, keep first, keep second) of the rows: together, or each row alone."""
        from .nllb_moe import route_top2
        s = self.settings
        if not self.rows_alone:
            return route_top2(probs, logits, None, s, False)
        parts = [route_top2(probs[b:b + 1], logits[b:b + 1], None, s, False) for b in range(probs.shape[0])]
        return tuple(np.concatenate(column) for column in zip(*parts))

    def _sparse(self, ffn, h: np.ndarray) -> np.ndarray:
        """NllbMoeSparseMLP.forward in eval on rows h (N, d): top-2 routing, gates, the routed rows through each
        expert (scaled by 1 - moe_token_dropout), added back expert by expert."""
        s = self.settings
        N = h.shape[0]
        logits, probs = self._router(ffn.router.classifier, h)
        first, second, keep1, keep2 = self._routes(probs, logits)
        rows = np.arange(N)
        p1, p2 = probs[rows, first], probs[rows, second]
        eps = np.float32(np.finfo(np.float32).eps)
        k1, k2 = keep1.astype(np.float32), keep2.astype(np.float32)
        if s.normalize_before_dropping:
            total = np.maximum(p1 + p2, eps)
            gates = np.concatenate([p1 / total * k1, p2 / total * k2])
        else:
            p1, p2 = p1 * k1, p2 * k2
            total = np.maximum(p1 + p2, eps)
            gates = np.concatenate([p1 / total, p2 / total])  # slot n: token n's first choice, N + n: its second
        picked = np.concatenate([np.where(keep1, first, -1), np.where(keep2, second, -1)])
        y = np.zeros_like(h)
        for e in range(s.num_experts):
            slots = np.flatnonzero(picked == e)
            if not slots.size:
                continue
            out = _dense(ffn.experts[f"expert_{e}"], np.ascontiguousarray(h[slots % N]), self.act)
            if s.token_dropout > 0:
                out = out * np.float32(1 - s.token_dropout)
            y[slots % N] += out * gates[slots][:, None]  # a token takes an expert once: no index repeats
        return y


def _dense(mlp, y: np.ndarray, act: int) -> np.ndarray:
    """fc1 -> activation -> fc2 (a dense layer's feed-forward, or an expert)."""
    return _linear(mlp.fc2, _linear(mlp.fc1, y, act))


def _half_classifier(classifier, half: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    from .nllb_moe import rounded_array
    bias = classifier._parameters.get("bias")
    return (np.ascontiguousarray(rounded_array(classifier.weight.numpy(), half)),
            None if bias is None else rounded_array(bias.numpy(), half))
