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


@register(R.RecurrentLayerFunction)
def map_recurrent_layer(ctx, op):
    return _recurrent_node(ctx, op, None)  # sequence_lens left out: every sequence is full length


def _map_with_lengths(ctx, op):
    """A layer over variable-length sequences (nn.RNN/LSTM/GRU's ``lengths`` under an export): the node's
    ``sequence_lens`` input, int32. onnxruntime then runs each sequence over its own steps, zero outputs past
    them, the final state at its own end, the reverse direction from its last step, as forgegrad does."""
    return _recurrent_node(ctx, op, op.input("lengths", np.int32))


def _recurrent_node(ctx, op, sequence_lens):
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
        if bi in ctx.constants and bh in ctx.constants:  # (1, 2*G*H): [Wb, Rb]
            B = ctx.const(np.concatenate([ctx.constants[bi], ctx.constants[bh]], axis=1), hint=f"{bi}.with_{bh}")
        else:
            B = ctx.node("Concat", [bi, bh], axis=1)
    h0 = ctx.unsqueeze(op.input("h0"), [0]) if op.attr("h0") is not None else None
    c0 = ctx.unsqueeze(op.input("c0"), [0]) if op.attr("c0") is not None else None
    attrs = dict(hidden_size=H, direction="reverse" if op.attr("reverse") else "forward")
    inputs = [op.input("x"), W, Rw, B, sequence_lens, h0]
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


def _register_lengths_form():
    from ...nn.rnn import RecurrentLayerWithLengths
    register(RecurrentLayerWithLengths)(_map_with_lengths)


_register_lengths_form()


@register(R.EmbeddingFunction)
def map_embedding(ctx, op):
    return [ctx.node("Gather", [op.input("weight"), op.input("indices", np.int64)], axis=0)]


# ---- graph pass: one bidirectional node per layer ----------------------------------------------------
def _attrs(node):
    from onnx import helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode() for x in v]
        out[a.name] = v
    return out


def _const_int_list(ctx, name):
    arr = ctx.constants.get(name)
    return None if arr is None else [int(v) for v in np.asarray(arr).reshape(-1)]


def fuse_bidirectional(ctx) -> None:
    """forward + reverse recurrent nodes over the same input whose squeezed outputs are concatenated
    on the feature axis (how nn.LSTM/GRU/RNN build a bidirectional layer) -> one node with
    direction="bidirectional", as torch's exporter writes it. Y (T, 2, B, H) is transposed and
    reshaped to (T, B, 2H) under the Concat's name; each direction's final state is a Gather."""
    from onnx import helper

    nodes = ctx.nodes
    producer = {o: n for n in nodes for o in n.output}
    consumers = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    removed, added = set(), []

    def same_value(a, b):  # the same tensor, or the same one cast the same way (each direction casts the lengths)
        if a == b:
            return True
        pa, pb = producer.get(a), producer.get(b)
        return (pa is not None and pb is not None and pa.op_type == pb.op_type == "Cast"
                and list(pa.input) == list(pb.input) and _attrs(pa) == _attrs(pb))

    def squeeze_of(value, axis):
        users = consumers.get(value, [])
        if len(users) != 1 or users[0].op_type != "Squeeze" or _const_int_list(ctx, users[0].input[1]) != [axis]:
            return None
        return users[0]

    for cat in nodes:
        if cat.op_type != "Concat" or len(cat.input) != 2 or _attrs(cat).get("axis") != 2:
            continue
        sq = [producer.get(v) for v in cat.input]
        if any(s is None or s.op_type != "Squeeze" for s in sq):
            continue
        fw, rv = (producer.get(s.input[0]) for s in sq)
        if fw is None or rv is None or fw.op_type not in ("LSTM", "GRU", "RNN") or rv.op_type != fw.op_type:
            continue
        af, ar = _attrs(fw), _attrs(rv)
        if af.get("direction") != "forward" or ar.get("direction") != "reverse":
            continue
        if {k: v for k, v in af.items() if k != "direction"} != {k: v for k, v in ar.items() if k != "direction"}:
            continue
        if fw.input[0] != rv.input[0] or any(squeeze_of(n.output[0], 1) is not s for n, s in zip((fw, rv), sq)):
            continue
        fin = list(fw.input) + [""] * (8 - len(fw.input))
        rin = list(rv.input) + [""] * (8 - len(rv.input))
        if any(bool(fin[k]) != bool(rin[k]) for k in range(3, 8)) or not same_value(fin[4], rin[4]):
            continue  # optional inputs must match; sequence_lens must be the same lengths
        if any(id(n) in removed for n in (fw, rv, cat)):
            continue

        def both(k, axis):
            a, b = ctx.constants.get(fin[k]), ctx.constants.get(rin[k])
            if a is not None and b is not None:
                return ctx.const(np.concatenate([a, b], axis=axis), hint=f"{fin[k]}.bidirectional")
            return ctx.node("Concat", [fin[k], rin[k]], axis=axis)

        ins = [fin[0], both(1, 0), both(2, 0), both(3, 0) if fin[3] else "", fin[4],  # sequence_lens: one for both
               both(5, 0) if fin[5] else "", both(6, 0) if fin[6] else "", ""]
        while ins and not ins[-1]:
            ins.pop()
        n_out = len(fw.output)
        attrs = {**af, "direction": "bidirectional"}
        if "activations" in attrs:  # one list per direction
            attrs["activations"] = list(af["activations"]) + list(ar["activations"])
        outs = ctx.node(fw.op_type, ins, outputs=n_out, **attrs)
        y = ctx.node("Transpose", [outs[0]], perm=[0, 2, 1, 3])  # (T, B, 2, H)
        added.append(helper.make_node("Reshape", [y, ctx.ints([0, 0, -1])], [cat.output[0]],
                                            name=ctx.fresh("Reshape_bidirectional")))
        # each direction's final state: Squeeze(Y_h, 0) becomes Gather(Y_h, d)
        for d, node in enumerate((fw, rv)):
            for k in range(1, n_out):
                s = squeeze_of(node.output[k], 0)
                if s is not None:
                    removed.add(id(s))
                    added.append(helper.make_node("Gather", [outs[k], ctx.const(np.int64(d))], s.output,
                                                        axis=0, name=ctx.fresh("Gather_direction")))
                elif consumers.get(node.output[k]):  # used some other way: slice out the direction
                    added.append(helper.make_node("Slice", [outs[k], ctx.ints([d]), ctx.ints([d + 1]),
                                                                  ctx.ints([0])], [node.output[k]],
                                                        name=ctx.fresh("Slice_direction")))
        removed.update({id(fw), id(rv), id(cat), id(sq[0]), id(sq[1])})
    if not removed:
        return
    # the new nodes (emitted at the end of ctx.nodes) go where the Concat was; then restore a
    # topological order, since a direction's final state may be read before the Concat
    kept = [n for n in nodes if id(n) not in removed]  # ctx.nodes, with the fused nodes appended
    ctx.nodes[:] = _toposort(kept + added)


def _toposort(nodes):
    """Kahn's algorithm, keeping the given order among nodes that are ready together."""
    produced_by = {o: i for i, n in enumerate(nodes) for o in n.output}
    deps = [{produced_by[v] for v in n.input if v in produced_by} for n in nodes]
    users = [[] for _ in nodes]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    import heapq
    count = [len(ds) for ds in deps]
    ready = [i for i, c in enumerate(count) if c == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        i = heapq.heappop(ready)
        out.append(nodes[i])
        for u in users[i]:
            count[u] -= 1
            if count[u] == 0:
                heapq.heappush(ready, u)
    if len(out) != len(nodes):  # pragma: no cover - a cycle would be an exporter bug
        raise RuntimeError("fuse_bidirectional produced a cyclic graph")
    return out


from . import GRAPH_PASSES  # noqa: E402

GRAPH_PASSES.append(fuse_bidirectional)
