"""Recurrent layers and embeddings: RecurrentLayer -> ONNX LSTM / GRU / RNN, Embedding -> Gather.

forgegrad's RecurrentLayer runs one layer in one direction (nn.LSTM/GRU/RNN compose layers,
directions, batch_first from it with ops that map on their own), so each record becomes one ONNX
recurrent node with num_directions=1 and direction forward/reverse:

    x (T, B, I) -> Y (T, 1, B, H) -> squeeze -> y (T, B, H);  Y_h / Y_c (1, B, H) -> h_n / c_n (B, H)

Weights are re-ordered from torch's gate order to ONNX's: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n ->
z,r,h (with linear_before_reset=1, torch's placement of the reset gate). When the weights are
initializers (parameters) the re-ordered copies are computed here; otherwise with Slice/Concat.
Missing initial states are left out (ONNX's default is zeros), so batch and sequence stay dynamic.
"""
from __future__ import annotations

import numpy as np

from ...ops import rnn as R
from . import register

# ONNX gate blocks, as indices of torch's blocks
_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn_tanh": [0], "rnn_relu": [0]}
_OP = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}


def _reordered(ctx, op, arg, mode, H):
    """Weight (G*H, K) or bias (G*H,) in ONNX gate order, with a leading num_directions axis of 1."""
    name = op.input(arg)
    order = _ORDER[mode]
    arr = ctx.constants.get(name)
    if arr is not None:  # a parameter: re-order once, here
        blocks = [arr[g * H:(g + 1) * H] for g in order]
        return ctx.const(np.concatenate(blocks, axis=0)[None], hint=f"{name}.onnx_gates")
    parts = [ctx.node("Slice", [name, ctx.ints([g * H]), ctx.ints([(g + 1) * H]), ctx.ints([0])]) for g in order]
    w = parts[0] if len(parts) == 1 else ctx.node("Concat", parts, axis=0)
    return ctx.unsqueeze(w, [0])


@register(R.RecurrentLayer)
def map_recurrent_layer(ctx, op):
    mode = op.attr("mode")
    w_hh = op.args["w_hh"]
    H = w_hh.shape[1]
    G = w_hh.shape[0] // H
    W = _reordered(ctx, op, "w_ih", mode, H)
    Rw = _reordered(ctx, op, "w_hh", mode, H)
    B = None
    if op.attr("b_ih") is not None or op.attr("b_hh") is not None:
        zeros = ctx.const(np.zeros((1, G * H), np.float32))
        bi = _reordered(ctx, op, "b_ih", mode, H) if op.attr("b_ih") is not None else zeros
        bh = _reordered(ctx, op, "b_hh", mode, H) if op.attr("b_hh") is not None else zeros
        B = ctx.node("Concat", [bi, bh], axis=1)  # (1, 2*G*H): [Wb, Rb]
    h0 = ctx.unsqueeze(op.input("h0"), [0]) if op.attr("h0") is not None else None
    c0 = ctx.unsqueeze(op.input("c0"), [0]) if op.attr("c0") is not None else None
    attrs = dict(hidden_size=H, direction="reverse" if op.attr("reverse") else "forward")
    inputs = [op.input("x"), W, Rw, B, None, h0]  # sequence_lens left out: every sequence is full length
    if mode == "lstm":
        inputs.append(c0)
        outs = ctx.node("LSTM", inputs, outputs=3, **attrs)
    elif mode == "gru":
        outs = ctx.node("GRU", inputs, outputs=2, linear_before_reset=1, **attrs)
    else:
        outs = ctx.node("RNN", inputs, outputs=2, activations=["Relu" if mode == "rnn_relu" else "Tanh"], **attrs)
    y = ctx.squeeze(outs[0], [1])
    states = [ctx.squeeze(s, [0]) for s in outs[1:]]
    return [y] + states


@register(R.Embedding)
def map_embedding(ctx, op):
    return [ctx.node("Gather", [op.input("weight"), op.input("indices", np.int64)], axis=0)]
