"""The `int8` suite (issue 15): forgegrad's int8 GEMM and dynamic-int8 MLP against forgegrad's fp32
kernels, onnxruntime's MatMulInteger and onnxruntime's own quantize_dynamic of the same model.

Workloads (each row's name says which int8 path ran: amx, avx512_vnni, avx_vnni (with its encoding: VEX
on CPUs with AVX-VNNI, EVEX on AVX-512 VNNI ones), avx2 or scalar):
  * int8 GEMM u8 x s8 -> s32, 512^3 and the MLP's layer shapes: "forgegrad" (the int8 kernel, on the
    best path; 512^3 also with 7-bit activations, and once per other VNNI/AMX path) vs "fg fp32"
    (forgegrad's SGEMM on the same shape) vs "onnxruntime" (a one-node MatMulInteger graph, u8 x s8,
    same data)
  * dynamic-int8 MLP 784-256-128-10 (ReLU) at batch 1 and 64: forgegrad's quantize_dynamic model vs
    "fg fp32" (the float model, no_grad) vs "onnxruntime" (onnxruntime.quantization.quantize_dynamic
    of forgegrad's fp32 ONNX export of the same model, QInt8 weights)
  * dynamic-int8 LSTM T50 H256 at batch 1: the same three sides (onnxruntime: DynamicQuantizeLSTM)
  * weight-only int8 Linear 1x4096x4096 (the decoder case) vs the float Linear
Threads are pinned on every side (onnxruntime: intra_op_num_threads). The ratio columns are the other
runtime's time over forgegrad's int8 time (> 1: int8 forgegrad is faster).
"""
from __future__ import annotations

import os
import tempfile
from typing import Dict, List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._timing import optional_import, ort_session

MLP = (784, 256, 128, 10)
GEMM_SHAPES = [(512, 512, 512), (64, 256, 784), (64, 128, 256), (64, 10, 128), (1, 256, 784)]  # (M, N, K)


def _matmul_integer_model(w_kn: np.ndarray) -> bytes:
    from onnx import TensorProto, helper, numpy_helper
    K, N = w_kn.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "a_zp"], ["y"])], "mmi",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["M", K])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["M", N])],
        [numpy_helper.from_array(w_kn, "b"), numpy_helper.from_array(np.array(128, np.uint8), "a_zp")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def gemm_fns(M: int, N: int, K: int, threads: int, path=None, amax: int = 255) -> Dict[str, object]:
    """{"forgegrad": int8 GEMM, "fg fp32": SGEMM, "onnxruntime": MatMulInteger or None}; activations
    in [0, amax] (127: 7-bit activations, which the AVX2 kernel multiplies with vpmaddubsw)."""
    from .. import _C
    from ..kernels import matmul
    rng = np.random.default_rng(0)
    a = rng.integers(0, amax + 1, (M, K), dtype=np.uint8)
    w = rng.integers(-128, 128, (N, K), dtype=np.int8)
    packed, _ = _C.quant.pack_weight(w)
    af, wf = a.astype(np.float32), np.ascontiguousarray(w.T.astype(np.float32))
    if path is None:
        def int8():
            return _C.quant.gemm_u8s8s32(a, packed, N, K)
    else:
        def int8():  # the path is a process-wide setting: set it for this call only
            before = _C.quant.path()  # (FORGEGRAD_INT8's choice stays for the rows after this one)
            _C.quant.set_path(path)
            try:
                return _C.quant.gemm_u8s8s32(a, packed, N, K)
            finally:
                _C.quant.set_path(before)
    # "weights" is not a runtime: it lets a test check the results (onnxruntime's graph subtracts an
    # activation zero point of 128, as a dynamic-quantized model's does)
    fns = {"forgegrad": int8, "fg fp32": lambda: matmul(af, wf), "onnxruntime": None, "weights": w}
    ort, onnx = optional_import("onnxruntime"), optional_import("onnx")
    if ort is not None and onnx is not None:
        sess = ort_session(ort, _matmul_integer_model(np.ascontiguousarray(w.T)), threads)
        feed = {"a": a}
        fns["onnxruntime"] = lambda: sess.run(None, feed)
    return fns


def _mlp():
    from .. import nn
    from ..random import manual_seed
    manual_seed(0)
    layers = []
    for i in range(len(MLP) - 1):
        layers.append(nn.Linear(MLP[i], MLP[i + 1]))
        if i < len(MLP) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def _ort_quantized_mlp(model, ort, threads):
    """onnxruntime's quantize_dynamic (QInt8 weights) of forgegrad's fp32 ONNX export of `model`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .. import onnx as fg_onnx
    from ..tensor import Tensor
    with tempfile.TemporaryDirectory() as d:
        fp32, int8 = os.path.join(d, "fp32.onnx"), os.path.join(d, "int8.onnx")
        fg_onnx.export(model, Tensor._stored(np.zeros((1, MLP[0]), np.float32)), fp32, input_names=["x"],
                       output_names=["y"], verify=False)
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
        with open(int8, "rb") as f:
            data = f.read()
    return ort_session(ort, data, threads)


def mlp_fns(batch: int, threads: int) -> Dict[str, object]:
    """{"forgegrad": dynamic-int8 MLP, "fg fp32": the float MLP, "onnxruntime": ORT's dynamic int8}."""
    from ..autograd import no_grad
    from ..quantization import quantize_dynamic
    from ..tensor import Tensor
    model = _mlp()
    qmodel = quantize_dynamic(model)
    x = Tensor._stored(np.random.default_rng(0).random((batch, MLP[0])).astype(np.float32))

    def fp32():
        with no_grad():
            return model(x)

    fns = {"forgegrad": lambda: qmodel(x), "fg fp32": fp32, "onnxruntime": None}
    ort = optional_import("onnxruntime")
    if ort is not None and optional_import("onnx") is not None:
        sess = _ort_quantized_mlp(model, ort, threads)
        feed = {"x": x._data}
        fns["onnxruntime"] = lambda: sess.run(None, feed)
    return fns


def weight_only_fns(M: int, N: int, K: int) -> Dict[str, object]:
    """{"forgegrad": weight-only int8 Linear, "fg fp32": the float Linear} on the same weights."""
    from .. import nn
    from ..autograd import no_grad
    from ..quantization import quantize_weight_only
    from ..tensor import Tensor
    lin = nn.Linear(K, N)
    q = quantize_weight_only(lin)
    x = Tensor._stored(np.random.default_rng(0).standard_normal((M, K)).astype(np.float32))

    def fp32():
        with no_grad():
            return lin(x)

    return {"forgegrad": lambda: q(x), "fg fp32": fp32}


def lstm_fns(threads: int, T: int = 50, H: int = 256, batch: int = 1) -> Dict[str, object]:
    """{"forgegrad": dynamic-int8 LSTM, "fg fp32": nn.LSTM, "onnxruntime": ORT's quantize_dynamic of
    forgegrad's LSTM export (DynamicQuantizeLSTM) or None}."""
    from .. import nn
    from ..autograd import no_grad
    from ..quantization import quantize_dynamic
    from ..random import manual_seed
    from ..tensor import Tensor
    manual_seed(0)
    lstm = nn.LSTM(H, H).eval()
    q = quantize_dynamic(lstm, {nn.LSTM})
    x = Tensor._stored(np.random.default_rng(0).standard_normal((T, batch, H)).astype(np.float32))

    def fp32():
        with no_grad():
            return lstm(x)

    fns = {"forgegrad": lambda: q(x), "fg fp32": fp32, "onnxruntime": None}
    ort = optional_import("onnxruntime")
    if ort is not None and optional_import("onnx") is not None:
        from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize

        from .. import onnx as fg_onnx
        with tempfile.TemporaryDirectory() as d:
            fp, i8 = os.path.join(d, "lstm.onnx"), os.path.join(d, "lstm8.onnx")
            fg_onnx.export(lstm, x, fp, input_names=["x"], verify=False)
            ort_quantize(fp, i8, weight_type=QuantType.QInt8)
            with open(i8, "rb") as f:
                sess = ort_session(ort, f.read(), threads)
        feed = {"x": x._data}
        fns["onnxruntime"] = lambda: sess.run(None, feed)
    return fns


def _lenet_static(batch: int, reduce_range: bool = False):
    """The zoo LeNet (1x28x28) in float and its static int8 twin, calibrated on 4 random batches
    (reduce_range: 7-bit activations, torch's x86 default)."""
    from .. import models
    from ..quantization import calibrate, convert, get_default_qconfig, prepare
    from ..random import manual_seed
    manual_seed(0)
    model = models.create("lenet").eval()
    rng = np.random.default_rng(0)
    calib = [rng.random((batch, 1, 28, 28)).astype(np.float32) for _ in range(4)]
    prepared = prepare(model, get_default_qconfig(reduce_range=reduce_range))
    calibrate(prepared, calib)
    return model, convert(prepared), calib


def lenet_static_avx2_fns(batch: int) -> Dict[str, object]:
    """The static-int8 LeNet as a CPU with AVX2 and no VNNI runs it: forgegrad's SIMD path lowered to AVX2 for the
    int8 model (its AVX2 kernels: vpmaddwd, integer Winograd for the 3x3 conv) and for the fp32 one alike.
    onnxruntime picks its own ISA, so it has no entry here."""
    from .. import _C
    from .._runtime import get_simd, set_simd
    from ..autograd import no_grad
    from ..tensor import Tensor
    model, qmodel, calib = _lenet_static(batch)
    x = Tensor(calib[0])

    def lowered(m, path):
        def run():
            simd, before = get_simd(), _C.quant.path()
            set_simd("avx2")
            if path is not None:
                _C.quant.set_path(path)
            try:
                with no_grad():
                    return m(x)
            finally:
                _C.quant.set_path(before)
                set_simd(simd)
        return run

    return {"forgegrad": lowered(qmodel, "avx2"), "fg fp32": lowered(model, None)}


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over a list of input batches."""

    def __init__(self, batches):
        self._it = iter([{"x": b} for b in batches])

    def get_next(self):
        return next(self._it, None)


def lenet_static_fns(batch: int, threads: int, reduce_range: bool = False) -> Dict[str, object]:
    """{"forgegrad": static-int8 LeNet, "fg fp32": the float LeNet, "onnxruntime": ORT's quantize_static
    (QOperator: QLinearConv / QLinearMatMul, calibrated on the same batches) of forgegrad's fp32 export}.
    reduce_range: forgegrad's activations 7-bit (ORT's model stays the default 8-bit one)."""
    from ..autograd import no_grad
    from ..tensor import Tensor
    model, qmodel, calib = _lenet_static(batch, reduce_range)
    x = Tensor._stored(calib[0])

    def run(m):
        with no_grad():
            return m(x)

    fns = {"forgegrad": lambda: run(qmodel), "fg fp32": lambda: run(model), "onnxruntime": None}
    ort = optional_import("onnxruntime")
    if ort is not None and optional_import("onnx") is not None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        from .. import onnx as fg_onnx
        with tempfile.TemporaryDirectory() as d:
            fp, i8 = os.path.join(d, "lenet.onnx"), os.path.join(d, "lenet8.onnx")
            fg_onnx.export(model, x, fp, input_names=["x"], output_names=["y"], verify=False)
            quantize_static(fp, i8, _CalibrationReader(calib), quant_format=QuantFormat.QOperator,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
            with open(i8, "rb") as f:
                sess = ort_session(ort, f.read(), threads)
        feed = {"x": x._data}
        fns["onnxruntime"] = lambda: sess.run(None, feed)
    return fns


def path_label(path: str) -> str:
    """The int8 path's name as a row shows it: avx_vnni says which encoding of vpdpbusd ran."""
    if path == "avx_vnni":
        from .. import _C
        return f"avx_vnni/{_C.quant.avx_vnni_encoding().upper()}"
    return path


def workloads(quick: bool = False) -> List[Workload]:
    from .._runtime import get_simd
    from ..quantization import int8_path, int8_paths
    best = path_label(int8_path())
    out = []
    shapes = GEMM_SHAPES[:1] if quick else GEMM_SHAPES
    for M, N, K in shapes:
        out.append(Workload(f"int8 GEMM M{M} N{N} K{K} [{best}]", ("forgegrad", "fg fp32", "onnxruntime"),
                            lambda t, M=M, N=N, K=K: gemm_fns(M, N, K, t), flop=2.0 * M * N * K))
        if (M, N, K) == (512, 512, 512):
            # 7-bit activations (what reduce_range gives): on AVX2 three instructions per 32 products
            # (vpmaddubsw, vpmaddwd, vpaddd) against four for exact 8-bit (two vpmaddwd, two vpaddd)
            out.append(Workload(f"int8 GEMM M{M} N{N} K{K}, 7-bit activations [{best}]",
                                ("forgegrad", "fg fp32", "onnxruntime"),
                                lambda t: gemm_fns(512, 512, 512, t, amax=127), flop=2.0 * 512 ** 3))
            for p in [p for p in int8_paths() if p in ("avx_vnni", "avx512_vnni", "amx") and p != int8_path()]:
                out.append(Workload(f"int8 GEMM M{M} N{N} K{K} [{path_label(p)}]",
                                    ("forgegrad", "fg fp32", "onnxruntime"),
                                    lambda t, p=p: gemm_fns(512, 512, 512, t, path=p), flop=2.0 * 512 ** 3))
    for batch in (1, 64):
        out.append(Workload(f"dynamic-int8 MLP 784-256-128-10, batch {batch} [{best}]",
                            ("forgegrad", "fg fp32", "onnxruntime"), lambda t, b=batch: mlp_fns(b, t)))
    out.append(Workload(f"static-int8 LeNet 1x28x28, batch 64 [{best}]", ("forgegrad", "fg fp32", "onnxruntime"),
                        lambda t: lenet_static_fns(64, t)))
    out.append(Workload(f"static-int8 LeNet 1x28x28, batch 64, 7-bit activations (reduce_range) [{best}]",
                        ("forgegrad", "fg fp32", "onnxruntime"), lambda t: lenet_static_fns(64, t, True)))
    if best != "avx2" and "avx2" in int8_paths() and get_simd() in ("avx2", "avx512"):
        # what an AVX2 CPU without VNNI sees (both sides lowered to AVX2)
        out.append(Workload("static-int8 LeNet 1x28x28, batch 64, both sides on AVX2 [avx2]", ("forgegrad", "fg fp32"),
                            lambda t: lenet_static_avx2_fns(64)))
    if not quick:
        out.append(Workload(f"dynamic-int8 LSTM T50 H256, batch 1 [{best}]", ("forgegrad", "fg fp32", "onnxruntime"),
                            lambda t: lstm_fns(t)))
        out.append(Workload("weight-only int8 Linear 1x4096x4096", ("forgegrad", "fg fp32"),
                            lambda t: weight_only_fns(1, 4096, 4096)))
    return out


@suite("int8")
def int8_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.01) if quick else (9, 0.05)
    rows = time_workloads(workloads(quick), threads, repeat, min_time)
    for r in rows:  # GEMM rows carry flop counts, MLP rows do not: one table in ms
        r.pop("flop", None)
    return rows
