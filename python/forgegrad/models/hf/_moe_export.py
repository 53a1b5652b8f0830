"""The routed experts of a mixture-of-experts decoder block (moe.SparseMoeBlock) in an ONNX export.

Which experts a token uses depends on its values, and a traced graph has one fixed set of ops, so the block's
expert part is recorded as one op, ``RoutedExpertsCall(h, probs, module)``: its forward is the eager block's (each
expert on the rows routed to it), and its mapping below emits the routing and a Loop over the experts that some
token chose:

    values, experts = TopK(probs, k)                  (ties: the lower index first, as torch.topk)
    values /= ReduceSum(values)                       (norm_topk_prob)
    for e in Unique(experts):                          (an ONNX Loop; only the experts in use)
        token, choice = NonZero(experts == e)          (the rows routed to e)
        out = down(act(gate(h[token])) * up(h[token])) * values[token, choice]
        y[token] += out                                (ScatterND of y[token] + out: a token picks e once)

so the graph does the eager block's expert work (the experts' GEMMs on their routed rows) rather than every expert
on every token (num_experts / top_k times as much, what ``SparseMoeBlock.dense_forward`` traces). The experts'
weights are stored stacked, (E, H, 2I) gate and up and (E, I, H) down, transposed for MatMul; each loop step
gathers its expert's. Only standard ops (opset 11 and later); onnxruntime verifies every export.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import numpy_helper

from ... import grad_mode
from ...autograd import Function
from ...onnx._context import onnx_dtype
from ...onnx.mappings import register
from ...onnx.mappings._loop import loop_body

_F32 = np.float32


def _float32_linears(layers, bias: bool) -> bool:
    from ... import nn
    return all(type(p) is nn.Linear and (p.bias is not None) == bias and p.weight._data.dtype == _F32
               and (p.bias is None or p.bias._data.dtype == _F32) for p in layers)


def exports_routed(module) -> bool:
    """Whether an export records a SparseMoeBlock's experts as RoutedExpertsCall: float32 Linear projections
    without bias (quantized, bfloat16 or float64 experts trace their own layers through ``dense_forward``), unless
    the block asks for the dense graph (``export_dense``)."""
    if module.export_dense or not loop_activation(module.hidden_act):
        return False
    return _float32_linears([getattr(e, p) for e in module.experts for p in ("gate_proj", "up_proj", "down_proj")],
                            bias=False)


def exports_chosen(module) -> bool:
    """Whether an export records an NllbMoeSparseMLP's experts as ChosenExpertsCall (float32 Linear fc1 / fc2
    with biases; else its dense graph)."""
    if module.export_dense or not loop_activation(module.activation_function):
        return False
    return _float32_linears([getattr(e, p) for e in module.experts.values() for p in ("fc1", "fc2")], bias=True)


class RoutedExpertsCall(Function):
    """``module.routed_experts(h, probs)`` on (N, hidden) rows and their (N, num_experts) router probabilities:
    the k chosen experts' outputs of each row, weighted and summed (the block without its shared expert)."""

    @staticmethod
    def forward(ctx, h, probs, module):
        from ...tensor import Tensor
        with grad_mode.untraced(), grad_mode.no_grad():
            return module.routed_experts(Tensor._wrap(h), Tensor._wrap(probs))._data

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("RoutedExpertsCall records a mixture-of-experts block for an ONNX export; training runs "
                           "SparseMoeBlock's own forward")


_ACTIVATIONS = ("silu", "swish", "relu", "tanh", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh")


def loop_activation(name) -> bool:
    """Whether the expert loop emits the activation ``name`` (else the export takes the dense graph)."""
    return name in _ACTIVATIONS


def _activation(ctx, name: str, x: str) -> str:
    if name in ("silu", "swish"):
        return ctx.node("Mul", [x, ctx.node("Sigmoid", [x])])
    if name == "relu":
        return ctx.node("Relu", [x])
    if name == "tanh":
        return ctx.node("Tanh", [x])
    half = ctx.const(_F32(0.5))
    one = ctx.const(_F32(1.0))
    if name == "gelu":  # erf form
        inner = ctx.node("Erf", [ctx.node("Mul", [x, ctx.const(_F32(1.0 / math.sqrt(2.0)))])])
    else:  # gelu_new / gelu_fast / gelu_pytorch_tanh: the tanh form
        cube = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
        poly = ctx.node("Add", [x, ctx.node("Mul", [cube, ctx.const(_F32(0.044715))])])
        inner = ctx.node("Tanh", [ctx.node("Mul", [poly, ctx.const(_F32(math.sqrt(2.0 / math.pi)))])])
    return ctx.node("Mul", [ctx.node("Mul", [x, half]), ctx.node("Add", [inner, one])])


def _stacked_weights(ctx, module, where: str):
    """(E, H, 2I) gate|up and (E, I, H) down, transposed for MatMul, one initializer each per block."""
    key = ("moe_stacked", id(module))
    if key not in ctx.memo:
        gate_up = np.stack([np.concatenate([e.gate_proj.weight._data.T, e.up_proj.weight._data.T], axis=1)
                            for e in module.experts]).astype(_F32)
        down = np.stack([e.down_proj.weight._data.T for e in module.experts]).astype(_F32)
        ctx.memo[key] = (ctx.const(np.ascontiguousarray(gate_up), hint=f"{where}.experts.gate_up_proj.weight_T",
                                   exact=True),
                         ctx.const(np.ascontiguousarray(down), hint=f"{where}.experts.down_proj.weight_T", exact=True))
    return ctx.memo[key]


def _expert_loop(ctx, where: str, h: str, experts: str, values: str, expert_out, skip_unrouted: bool) -> str:
    """(N, H): for each expert id in ``experts`` (N, k) int64 (-1: no expert, with ``skip_unrouted``), a Loop step
    running ``expert_out(rows, e)`` on the rows routed to it, times their ``values`` (N, k), added to its tokens."""
    used = ctx.node("Unique", [ctx.node("Reshape", [experts, ctx.ints([-1])])], sorted=1)
    if skip_unrouted:
        used = ctx.node("Compress", [used, ctx.node("Greater", [used, ctx.const(np.int64(-1))])], axis=0)
    steps = ctx.squeeze(ctx.node("Shape", [used]), [0])
    zeros = ctx.node("ConstantOfShape", [ctx.node("Shape", [h])], value=numpy_helper.from_array(np.zeros(1, _F32)))

    def step(it, state):
        y = state[0]
        e = ctx.node("Gather", [used, it], axis=0)
        chosen = ctx.node("Transpose", [ctx.node("NonZero", [ctx.node("Equal", [experts, e])])], perm=[1, 0])
        token = ctx.node("Gather", [chosen, ctx.const(np.int64(0))], axis=1)  # (m,)
        out = expert_out(ctx.node("Gather", [h, token], axis=0), e)  # (m, H)
        weight = ctx.unsqueeze(ctx.node("GatherND", [values, chosen]), [1])  # (m, 1)
        at = ctx.unsqueeze(token, [1])
        total = ctx.node("Add", [ctx.node("GatherND", [y, at]), ctx.node("Mul", [out, weight])])
        return [ctx.node("ScatterND", [y, at, total])], []

    body = loop_body(ctx, ctx.fresh(f"{where}_experts").replace("/", "_").replace(".", "_"), ["y"], step)
    return ctx.node("Loop", [steps, "", zeros], body=body)


@register(RoutedExpertsCall)
def map_routed_experts(ctx, op):
    m = op.attr("module")
    where = ctx.scope or "moe"
    inner = m.experts[0].gate_proj.weight.shape[0]
    gate_up, down = _stacked_weights(ctx, m, where)
    values, experts = ctx.node("TopK", [op.input("probs"), ctx.ints([m.top_k])], outputs=2, axis=-1, largest=1,
                               sorted=1)
    if m.norm_topk_prob:
        values = ctx.node("Div", [values, ctx.reduce("ReduceSum", values, [-1], keepdims=True)])

    def swiglu(rows, e):
        a = ctx.node("MatMul", [rows, ctx.node("Gather", [gate_up, e], axis=0)])  # (m, 2I)
        g = ctx.node("Slice", [a, ctx.ints([0]), ctx.ints([inner]), ctx.ints([1])])
        u = ctx.node("Slice", [a, ctx.ints([inner]), ctx.ints([2 * inner]), ctx.ints([1])])
        return ctx.node("MatMul", [ctx.node("Mul", [_activation(ctx, m.hidden_act, g), u]),
                                   ctx.node("Gather", [down, e], axis=0)])

    return [_expert_loop(ctx, where, op.input("h"), experts, values, swiglu, skip_unrouted=False)]


class ChosenExpertsCall(Function):
    """NLLB-MoE's experts (nllb_moe.NllbMoeSparseMLP) on (N, d_model) rows with each row's chosen experts
    ``choices`` (N, 2) (float expert ids; -1: a choice dropped past the capacity, or a token not routed) and their
    weights (N, 2): each expert on the rows that chose it, scaled by 1 - token_dropout (eval) and the weight,
    added to the rows in expert order (the eager forward's index_add)."""

    @staticmethod
    def forward(ctx, h, choices, weights, module):
        from ..._torch_indexing import index_add
        from ...factories import zeros
        from ...tensor import Tensor
        s = module.settings
        picked = choices.astype(np.int64)
        with grad_mode.untraced(), grad_mode.no_grad():
            x, y = Tensor._wrap(h), zeros(*h.shape)
            for e in np.unique(picked[picked >= 0]):
                token, choice = np.nonzero(picked == e)
                out = module.experts[f"expert_{e}"](x[token])
                if s.token_dropout > 0:
                    out = out * (1 - s.token_dropout)
                y = index_add(y, 0, Tensor._wrap(token), out * Tensor._wrap(weights[token, choice][:, None]))
            return y._data

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("ChosenExpertsCall records NLLB-MoE's experts for an ONNX export; training runs "
                           "NllbMoeSparseMLP's own forward")


@register(ChosenExpertsCall)
def map_chosen_experts(ctx, op):
    m = op.attr("module")
    where = ctx.scope or "moe"
    key = ("nllb_moe_stacked", id(m))
    if key not in ctx.memo:
        w1, b1, w2, b2 = (w.numpy() for w in m._stacked_weights())  # biases (E, 1, width) -> (E, width)
        arrays = {"fc1.weight_T": w1, "fc1.bias": b1[:, 0], "fc2.weight_T": w2, "fc2.bias": b2[:, 0]}
        ctx.memo[key] = [ctx.const(np.ascontiguousarray(a), hint=f"{where}.experts.{n}", exact=True)
                         for n, a in arrays.items()]
    w1, b1, w2, b2 = ctx.memo[key]
    experts = ctx.node("Cast", [op.input("choices")], to=onnx_dtype(np.int64))
    scale = 1.0 - m.settings.token_dropout

    def fc(rows, e):
        a = ctx.node("Add", [ctx.node("MatMul", [rows, ctx.node("Gather", [w1, e], axis=0)]),
                             ctx.node("Gather", [b1, e], axis=0)])
        out = ctx.node("Add", [ctx.node("MatMul", [_activation(ctx, m.activation_function, a),
                                                   ctx.node("Gather", [w2, e], axis=0)]),
                               ctx.node("Gather", [b2, e], axis=0)])
        return ctx.node("Mul", [out, ctx.const(_F32(scale))]) if scale != 1.0 else out

    return [_expert_loop(ctx, where, op.input("h"), experts, op.input("weights"), fc, skip_unrouted=True)]
