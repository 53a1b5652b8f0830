"""ONNX Loop bodies for mappings that emit a loop (the int8 RNNs' steps, a mixture of experts' experts)."""
from __future__ import annotations


def loop_body(ctx, name, state_names, build):
    """An ONNX Loop body: inputs (iteration, condition, *state), outputs (condition, *new state,
    *per-step outputs). ``build(iteration, state)`` emits the step's nodes through ctx and returns
    (new state, per-step outputs); they go into the body, not the outer graph."""
    from onnx import TensorProto, helper

    it, cond = ctx.fresh(f"{name}_iteration"), ctx.fresh(f"{name}_cond")
    state = [ctx.fresh(f"{name}_{s}") for s in state_names]
    outer, ctx.nodes = ctx.nodes, []
    try:
        new_state, per_step = build(it, state)
        body_nodes = ctx.nodes
    finally:
        ctx.nodes = outer
    cond_out = ctx.fresh(f"{name}_cond_out")
    body_nodes.append(helper.make_node("Identity", [cond], [cond_out], name=ctx.fresh(f"{name}_Identity")))
    fl = TensorProto.FLOAT

    def info(n, t=fl, shape=None):
        return helper.make_tensor_value_info(n, t, shape)

    return helper.make_graph(
        body_nodes, name,
        [info(it, TensorProto.INT64, []), info(cond, TensorProto.BOOL, [])] + [info(s) for s in state],
        [info(cond_out, TensorProto.BOOL, [])] + [info(s) for s in list(new_state) + list(per_step)])
