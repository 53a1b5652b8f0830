"""ONNX export of dynamic-quantized models in onnxruntime's integer form, verified in onnxruntime.

Each DynamicQuantizedLinear becomes what onnxruntime's own ``quantize_dynamic`` writes (its
"QOperator" form), which onnxruntime runs on its int8 kernels:

    x --DynamicQuantizeLinear--> (x_q uint8, x_scale, x_zero_point)
    MatMulInteger(x_q, W^T + 128 uint8, x_zero_point, 128) -> int32 --Cast--> float
    Mul(x_scale * w_scale[n]) (+ bias) (Relu, when the ReLU runs in the kernel)

onnxruntime quantizes activations with all 8 bits and rounds ``x / scale`` (forgegrad with
``reduce_range=True`` uses 7 bits, as torch on x86), so outputs differ by rounding: the export is
verified to agree within one quantization step of the output (see ``export_onnx``).

Scope: models that are chains of modules (nn.Sequential, nested) built from DynamicQuantizedLinear,
Linear, ReLU, Tanh, Sigmoid, Flatten, Dropout and Identity; other modules raise
NotImplementedError naming them (forgegrad.onnx.export handles float models of any shape).
"""
from __future__ import annotations

import os

import numpy as np

from .. import nn
from .._atomic_io import atomic_write
from ..tensor import Tensor
from .functional import choose_qparams
from .modules import DynamicQuantizedLinear

__all__ = ["export_onnx", "QuantizedExportReport", "unsigned_weight"]


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ImportError("export_onnx needs the onnx package: pip install 'forgegrad[onnx]'") from None
    return onnx, helper, numpy_helper


class QuantizedExportReport:
    """What export_onnx wrote and how onnxruntime's outputs compared with forgegrad's."""

    def __init__(self, path, max_abs_error=None, step=None, ops=()):
        self.path, self.max_abs_error, self.step, self.ops = path, max_abs_error, step, tuple(ops)

    def __repr__(self) -> str:
        verified = ("not verified" if self.max_abs_error is None else
                    f"onnxruntime max |error| {self.max_abs_error:.3g} <= one output step {self.step:.3g}")
        return f"QuantizedExportReport({self.path!r}, ops={list(self.ops)}, {verified})"


def _chain(model):
    """The model's modules in call order (nested Sequentials flattened)."""
    if isinstance(model, nn.Sequential):
        out = []
        for m in model.children():
            out.extend(_chain(m))
        return out
    return [model]


class _Graph:
    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, base):
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, arr, base):
        n = self.name(base)
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    def node(self, op, inputs, outputs=1, **attrs):
        outs = [self.name(op) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op, inputs, outs, **attrs))
        return outs if outputs > 1 else outs[0]


def unsigned_weight(w: np.ndarray) -> np.ndarray:
    """int8 weights as uint8 ``w + 128``, to be used with a weight zero point of 128: the same integer
    products. onnxruntime's u8 x s8 kernels on CPUs without AVX-512 VNNI use vpmaddubsw, whose int16
    pair sums saturate with full 8-bit activations (outputs several quantization steps off on an
    AVX2-only CPU); its u8 x u8 kernels widen to int16 first and are exact on every CPU."""
    return (w.astype(np.int16) + 128).astype(np.uint8)


def _emit(g, m, x, where):
    if isinstance(m, DynamicQuantizedLinear):
        xq, xs, xz = g.node("DynamicQuantizeLinear", [x], outputs=3)
        wt = g.const(np.ascontiguousarray(unsigned_weight(m.weight._data).T), f"{where}.weight_uint8_T")
        acc = g.node("MatMulInteger", [xq, wt, xz, g.const(np.array(128, np.uint8), f"{where}.weight_zero_point")])
        y = g.node("Mul", [g.node("Cast", [acc], to=1),  # float
                           g.node("Mul", [xs, g.const(m.weight_scale._data, f"{where}.weight_scale")])])
        if m.bias is not None:
            y = g.node("Add", [y, g.const(m.bias._data, f"{where}.bias")])
        return g.node("Relu", [y]) if m.relu else y
    if isinstance(m, nn.Linear):
        y = g.node("MatMul", [x, g.const(np.ascontiguousarray(m.weight._data.T), f"{where}.weight_T")])
        return y if m.bias is None else g.node("Add", [y, g.const(m.bias._data, f"{where}.bias")])
    simple = {nn.ReLU: "Relu", nn.Tanh: "Tanh", nn.Sigmoid: "Sigmoid"}
    if type(m) in simple:
        return g.node(simple[type(m)], [x])
    if isinstance(m, (nn.Identity, nn.Dropout)):  # Dropout is the identity in eval mode
        return x
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        return g.node("Flatten", [x], axis=1)
    raise NotImplementedError(f"export_onnx: {where} ({type(m).__name__}) is not supported in quantized export; "
                              "supported: DynamicQuantizedLinear, Linear, ReLU, Tanh, Sigmoid, Flatten(1, -1), "
                              "Dropout, Identity in an nn.Sequential chain")


def _output_step(model, x: np.ndarray) -> float:
    """One quantization step of the output: for the last quantized layer, its activation scale (the
    finer 8-bit one onnxruntime uses is at most this) times its largest row sum of |W|; that is how
    far one activation rounding difference can move an output."""
    step, h = 0.0, Tensor._wrap(x)
    for m in _chain(model):
        if isinstance(m, DynamicQuantizedLinear):
            s, _ = choose_qparams(h._data, reduce_range=m.reduce_range)
            step = float(s) * float(np.abs(m.dequantized_weight()).sum(1).max())
        h = m(h)
    return step


def export_onnx(model, example_input, path, *, opset: int = 17, verify: bool = True, n_random: int = 2):
    """Write a dynamic-quantized model (see the module docstring for the supported form) to ONNX
    with a dynamic batch axis, and check it in onnxruntime.

    Args:
        model: an nn.Sequential (or single module) as returned by quantize_dynamic.
        example_input: (batch, features) float32 array or Tensor.
        path: the .onnx file to write (atomically).
        opset: 13 to 21.
        verify: run the file in onnxruntime on the example and on ``n_random`` random batches (of 1
            and 7 rows, scaled like the example) and require every output within one quantization
            step of the output (see ``_output_step``) of forgegrad's.

    Returns a QuantizedExportReport; raises AssertionError naming the worst error when verification fails.
    """
    onnx, helper, numpy_helper = _onnx()
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_onnx: model must be a forgegrad.nn.Module, got {type(model).__name__}")
    if not 13 <= int(opset) <= 21:
        raise ValueError(f"export_onnx: opset must be in 13..21, got {opset}")
    x = example_input._data if isinstance(example_input, Tensor) else np.asarray(example_input)
    if x.dtype != np.float32 or x.ndim != 2:
        raise ValueError(f"export_onnx: example_input must be a 2-D float32 array, got {x.dtype} {x.shape}")
    model.eval()
    g = _Graph(helper, numpy_helper)
    h = "input"
    for i, m in enumerate(_chain(model)):
        h = _emit(g, m, h, f"layer{i}")
    out_features = model(Tensor._wrap(x[:1])).shape[-1]
    g.nodes.append(helper.make_node("Identity", [h], ["output"]))
    graph = helper.make_graph(
        g.nodes, "forgegrad_int8",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", int(x.shape[1])])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["batch", int(out_features)])],
        g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int(opset))],
                              producer_name="forgegrad.quantization")
    onnx.checker.check_model(proto)
    path = os.fspath(path)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()), "export_onnx")
    ops = sorted({n.op_type for n in g.nodes})
    if not verify:
        return QuantizedExportReport(path, ops=ops)
    return _verify(model, path, x, n_random, ops)


def _verify(model, path, x, n_random, ops):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("verifying the export needs onnxruntime: pip install 'forgegrad[onnx]'") from None
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    spread = float(x.std()) or 1.0
    inputs = [x] + [(rng.standard_normal((b, x.shape[1])) * spread + x.mean()).astype(np.float32)
                    for b in (1, 7)[:n_random]]
    worst, worst_step = 0.0, 0.0
    for inp in inputs:
        ours = model(Tensor._wrap(inp))._data
        theirs = sess.run(None, {"input": inp})[0]
        step = _output_step(model, inp)
        err = float(np.abs(ours - theirs).max())
        if err > step + 1e-6:
            raise AssertionError(f"export_onnx: onnxruntime differs from forgegrad by {err:.4g} on a batch of "
                                 f"{inp.shape[0]}, more than one output quantization step ({step:.4g})")
        if err >= worst:
            worst, worst_step = err, step
    return QuantizedExportReport(path, worst, worst_step, ops)
