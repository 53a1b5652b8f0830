"""ONNX export of statically quantized (and QAT-converted) models, verified in onnxruntime.

Each QuantizedLinear / QuantizedConv2d becomes onnxruntime's integer "QOperator" form, which it runs
on its int8 kernels (a ReLU / max-pool fused into a QuantizedConv2d follows as Relu / MaxPool):

    x --QuantizeLinear(input qparams)--> uint8
      --MatMulInteger(W^T) / ConvInteger(W), weights as uint8 W + 128 with zero point 128--> int32
      --Cast--> float
      --Mul(input_scale * weight_scale[n])--Add(bias)--> QuantizeLinear / DequantizeLinear (output qparams)

which is forgegrad's computation op for op (the uint8 weights: see ``onnx_export.unsigned_weight``).
ONNX's QuantizeLinear divides by the scale where forgegrad multiplies by its float32 inverse, so a
value on a rounding tie can land one step apart: the export is verified to agree within one output
quantization step.

Scope: chains of modules (nn.Sequential, nested, or models such as the zoo's LeNet whose forward runs
its Sequentials in order) built from QuantizedLinear, QuantizedConv2d, Linear, ReLU, Tanh, Sigmoid,
MaxPool2d, Flatten, Dropout and Identity; anything else raises NotImplementedError naming it.
"""
from __future__ import annotations

import numpy as np

from .. import nn
from .._atomic_io import atomic_write
from ..tensor import Tensor
from .onnx_export import unsigned_weight
from .static import QuantizedConv2d, QuantizedLinear

__all__ = ["export_static_onnx"]

F32 = np.float32


class _Graph:
    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, arr, hint="c"):
        self.n += 1
        name = f"{hint}_{self.n}"
        self.inits.append(self.numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op, inputs, **attrs):
        self.n += 1
        out = f"{op.lower()}_{self.n}"
        self.nodes.append(self.helper.make_node(op, inputs, [out], **attrs))
        return out


def _quantized(g, x, m, path):
    sx, zx = m.qparams("input")
    so, zo = m.qparams("output")
    zx_c = g.const(np.array(zx, np.uint8), f"{path}_x_zp")
    xq = g.node("QuantizeLinear", [x, g.const(np.array(sx, F32), f"{path}_x_scale"), zx_c])
    w = m.weight._data
    mult = (F32(sx) * m.weight_scale._data.astype(F32)).astype(F32)
    wu, zw_c = unsigned_weight(w), g.const(np.array(128, np.uint8), f"{path}_w_zp")
    if isinstance(m, QuantizedLinear):
        acc = g.node("MatMulInteger", [xq, g.const(np.ascontiguousarray(wu.T), f"{path}_w"), zx_c, zw_c])
        shape = (-1,)
    else:
        (pt, pb), (pl, pr) = _conv_pads(m)
        acc = g.node("ConvInteger", [xq, g.const(wu, f"{path}_w"), zx_c, zw_c], kernel_shape=list(m.kernel_size),
                     strides=list(m.stride), dilations=list(m.dilation), pads=[pt, pl, pb, pr])
        shape = (1, -1, 1, 1)
    y = g.node("Mul", [g.node("Cast", [acc], to=1), g.const(mult.reshape(shape), f"{path}_mult")])
    if m.bias is not None:
        y = g.node("Add", [y, g.const(m.bias._data.astype(F32).reshape(shape), f"{path}_bias")])
    so_c, zo_c = g.const(np.array(so, F32), f"{path}_y_scale"), g.const(np.array(zo, np.uint8), f"{path}_y_zp")
    return g.node("DequantizeLinear", [g.node("QuantizeLinear", [y, so_c, zo_c]), so_c, zo_c])


def _conv_pads(m):
    from ._int_ops import _pads
    return _pads(m.padding, m.kernel_size, m.dilation)


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _emit(g, x, m, path):
    if isinstance(m, QuantizedLinear):
        return _quantized(g, x, m, path)
    if isinstance(m, QuantizedConv2d):  # with the ReLU / max-pool convert fused into it (Identity in the chain)
        y = _quantized(g, x, m, path)
        if getattr(m, "fused_relu", False):
            y = g.node("Relu", [y])
        if getattr(m, "fused_pool", None):
            y = g.node("MaxPool", [y], kernel_shape=list(m.fused_pool), strides=list(m.fused_pool))
        return y
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return x
    simple = {nn.ReLU: "Relu", nn.Tanh: "Tanh", nn.Sigmoid: "Sigmoid"}
    if type(m) in simple:
        return g.node(simple[type(m)], [x])
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        return g.node("Flatten", [x], axis=1)
    if type(m) is nn.Linear:
        b = [g.const(m.bias._data, f"{path}_b")] if m.bias is not None else []
        return g.node("Gemm", [x, g.const(m.weight._data, f"{path}_w")] + b, transB=1)
    if type(m) is nn.MaxPool2d and not m.ceil_mode and m.dilation in (1, (1, 1)):
        p = _pair(m.padding)
        return g.node("MaxPool", [x], kernel_shape=_pair(m.kernel_size), strides=_pair(m.stride),
                      pads=[p[0], p[1], p[0], p[1]])
    raise NotImplementedError(f"export_static_onnx: {path or 'the model'} ({type(m).__name__}) is not supported; "
                              "supported: QuantizedLinear, QuantizedConv2d, Linear, ReLU, Tanh, Sigmoid, MaxPool2d, "
                              "Flatten, Dropout, Identity in a chain")


def export_static_onnx(model, example_input, path, verify: bool = True, opset: int = 17) -> dict:
    """Write ``model`` (see the module docstring) to ``path``; with ``verify`` run it in onnxruntime
    on ``example_input`` and raise ValueError if an output differs from forgegrad's by more than one
    output quantization step. Returns {"path", "ops", "max_abs_error", "step"}."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ImportError("export_static_onnx needs the onnx package: pip install 'forgegrad[onnx]'") from None
    from ..nn.utils.shrink import chain

    x = example_input if isinstance(example_input, Tensor) else Tensor._stored(np.asarray(example_input, F32))
    g = _Graph(helper, numpy_helper)
    out = "input"
    last_step = None
    for p, m in chain(model):
        out = _emit(g, out, m, p.replace(".", "_") or "m")
        if isinstance(m, (QuantizedLinear, QuantizedConv2d)):
            last_step = m.qparams("output")[0]
    model.eval()
    from ..autograd import no_grad
    with no_grad():
        ref = model(x)._data
    g.nodes.append(helper.make_node("Identity", [out], ["output"]))
    batch = ["batch"] + list(x.shape[1:])
    graph = helper.make_graph(g.nodes, "forgegrad_static_int8",
                              [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, batch)],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT,
                                                             ["batch"] + list(ref.shape[1:]))], g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="forgegrad")
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    atomic_write(str(path), lambda f: f.write(data), who="export_static_onnx")
    report = {"path": str(path), "ops": sorted({n.op_type for n in g.nodes}), "max_abs_error": None,
              "step": last_step}
    if verify:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("verifying the export needs onnxruntime: pip install 'forgegrad[onnx]'") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x._data})[0]
        err = float(np.abs(got - ref).max())
        report["max_abs_error"] = err
        step = last_step if last_step is not None else 0.0
        if err > step * 1.0001 + 1e-6:
            raise ValueError(f"export_static_onnx: onnxruntime's output differs from forgegrad's by {err:.4g}, more "
                             f"than one output quantization step ({step:.4g})")
    return report
