"""The fuzz targets and how a case's bad input is made (runs inside the child interpreter).

Targets:

- ``op:NAME``: an op of the registry, called on Tensors (or raw numpy arrays, which keep their
  strides) built from one of its samples; the reference is the op's torch function on the same inputs.
- ``kernel:MODULE.FUNC``: a public function of forgegrad.kernels; ``c:SUB.FUNC``: a ``forgegrad._C``
  binding. Their valid base calls are recorded while the registry's samples run forward and backward
  (every call that reaches them, arguments copied on entry), plus a few written here for those the ops
  never reach. The reference of a mutated call is the same function on the *canonical* arguments: the
  same values as C-contiguous arrays of the base call's dtype; so a layout, dtype or aliasing mutation
  must raise a clear error or give exactly what the plain call gives.
- ``sig:SUB.FUNC``: a ``_C`` binding called with arguments drawn from its signature alone (random
  arrays, numbers, strings, None for each parameter); only a clear error or a normal return is checked.

A case is JSON: ``{"target", "base", "mutations": [[kind, which, param], ...], "seed", "raw"}``; the
parent draws it with hypothesis; ``which`` picks the argument modulo the candidates, so the parent need
not know the arguments.
"""
from __future__ import annotations

import functools
import inspect
import pickle
import re

import numpy as np

import forgegrad as fg
from forgegrad import _C
from forgegrad import kernels as K
from forgegrad.kernels import (activation, activation_more, attention, conv, ctc, embedding, gemm, geometry, loss,
                               norm, optim, pool, rnn, softmax)

KERNEL_MODULES = {m.__name__.rsplit(".", 1)[1]: m for m in
                  (activation, activation_more, attention, conv, ctc, embedding, gemm, geometry, loss, norm, optim,
                   pool, rnn, softmax)}
# cuda, cuda_pointwise, cuda_nn and cuda_gemm take device arrays: no valid call exists without a GPU
# (their argument checks are tested on a GPU; cuda_gemm's and cuda_nn's kernels also on the CPU, emulated)
C_SUBMODULES = [n for n in dir(_C) if not n.startswith("_") and inspect.ismodule(getattr(_C, n))
                and n not in ("cuda", "cuda_pointwise", "cuda_nn", "cuda_gemm")]
# set_num_threads(10**6) would legitimately start a million threads; its range is checked by test_runtime.
SIG_SKIP = {"runtime.set_num_threads": "a huge thread count is a valid request that takes minutes to honour",
            "runtime._check_region_alloc": "a self-test hook whose task count is its loop length: 2**31 tasks is "
                                           "a valid request that runs for hours"}
MAX_BASES = 6  # recorded base calls kept per function (distinct argument shapes first)


def kernel_functions():
    out = {}
    for mname, mod in KERNEL_MODULES.items():
        for name, fn in vars(mod).items():
            if name.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != mod.__name__:
                continue
            out[f"{mname}.{name}"] = fn
    return out


def c_functions():
    out = {}
    for sub in C_SUBMODULES:
        mod = getattr(_C, sub)
        for name in dir(mod):
            fn = getattr(mod, name)
            if not name.startswith("__") and callable(fn) and type(fn).__name__ == "builtin_function_or_method":
                out[f"{sub}.{name}"] = fn
    out.update({f"plan.{fn.__name__}": fn for fn in PLAN_TARGETS})
    return out


# ---- _C.plan: a class, whose methods are no module functions: targets that build a plan and run it -----
class _Param:
    """What a plan reads of a Parameter: its ``_data``, here any object a mutation made."""

    def __init__(self, data):
        self._data = data


_I, _F = "_Int", "_Float"  # the annotations run_signature draws ints and floats for


def plan_linear(x, weight, bias=None, activation=-1, alpha=0.0, packed=False):
    plan = _C.plan.SequentialPlan()
    pw = _C.gemm.PackedWeight(weight) if packed else None
    plan.add_linear({"weight": _Param(weight), "bias": None if bias is None else _Param(bias)}, activation, alpha, pw)
    return plan.run(x)


def plan_conv(x, weight, bias, stride, padding, dilation, groups, activation=-1, alpha=0.0, max_pool2x2=False,
              ceil_mode=False, linear_weight=None, packed=False):
    """A Conv2d step (kernel_size: the weight's), then, with linear_weight, Flatten and a Linear step."""
    plan = _C.plan.SequentialPlan()
    pw = _C.conv.PackedConvWeight(weight, groups) if packed else None
    kernel = tuple(weight.shape[2:]) if getattr(weight, "ndim", 0) == 4 else (3, 3)
    plan.add_conv2d({"weight": _Param(weight), "bias": None if bias is None else _Param(bias)}, stride, padding,
                    dilation, groups, kernel, activation, alpha, max_pool2x2, ceil_mode, pw)
    if linear_weight is not None:
        plan.add_flatten()
        plan.add_linear({"weight": _Param(linear_weight)})
    return plan.run(x)


# pybind11-style first lines: the sig: targets draw their arguments from them
plan_linear.__doc__ = (f"plan_linear(x: object, weight: numpy.ndarray, bias: object = None, activation: {_I} = -1, "
                       f"alpha: {_F} = 0.0, packed: bool = False) -> object\n\nA SequentialPlan of one Linear step run "
                       "on x (None: left to the Python steps).")
plan_conv.__doc__ = (f"plan_conv(x: object, weight: numpy.ndarray, bias: object, stride: tuple[{_I}, {_I}], "
                     f"padding: tuple[{_I}, {_I}, {_I}, {_I}], dilation: tuple[{_I}, {_I}], groups: {_I}, "
                     f"activation: {_I} = -1, alpha: {_F} = 0.0, max_pool2x2: bool = False, ceil_mode: bool = False, "
                     "linear_weight: object = None, packed: bool = False) -> object\n\nA SequentialPlan of a Conv2d "
                     "step (and Flatten + Linear) run on x.")
PLAN_TARGETS = (plan_linear, plan_conv)


# ---- recording the base calls ---------------------------------------------------------------------
def _copy(v):
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, (list, tuple)):
        return type(v)(_copy(x) for x in v) if not hasattr(v, "_fields") else v
    if isinstance(v, fg.Tensor):
        return fg.tensor(v._data.copy())
    return v


def _key(args, kwargs):
    def k(v):
        if isinstance(v, np.ndarray):
            return ("a", v.shape, v.dtype.str)
        if isinstance(v, (list, tuple)):
            return tuple(k(x) for x in v)
        return type(v).__name__
    return (k(args), tuple(sorted((n, k(v)) for n, v in kwargs.items())))


def record_corpus():
    """{target: [(args, kwargs), ...]} of valid calls of every kernel function and _C binding."""
    import sys
    corpus, seen, originals = {}, {}, []
    targets = {fn: "c:" + t for t, fn in c_functions().items()}
    targets.update({fn: "kernel:" + t for t, fn in kernel_functions().items()})

    def recorder_for(target, fn):
        def recorder(*args, **kwargs):
            key = _key(args, kwargs)
            bucket = seen.setdefault(target, set())
            if len(bucket) < MAX_BASES and key not in bucket:
                bucket.add(key)
                corpus.setdefault(target, []).append((_copy(args), _copy(kwargs)))
            return fn(*args, **kwargs)
        return recorder

    recorders = {fn: recorder_for(t, fn) for fn, t in targets.items()}
    # every place a function is reachable from: its module, _C's submodules, and the modules that
    # imported it by name (e.g. ``from ..kernels import matmul as _mm``)
    holders = [m for n, m in list(sys.modules.items()) if n.startswith("forgegrad") and m is not None]
    holders += [getattr(_C, sub) for sub in C_SUBMODULES] + [sys.modules[__name__]]  # the plan targets
    for mod in holders:
        for attr, value in list(vars(mod).items()):
            try:
                rec = recorders.get(value)
            except TypeError:  # an unhashable module attribute
                continue
            if rec is not None:
                originals.append((mod, attr, value))
                setattr(mod, attr, rec)
    try:
        _run_samples()
        _extra_calls()
    finally:
        for mod, attr, value in reversed(originals):
            setattr(mod, attr, value)
    return corpus


def _run_samples():
    for op in fg.ops.all_ops():
        for s in op.samples() if op.samples else []:
            pos = s.grad_positions()
            args = [fg.tensor(a.copy(), requires_grad=i in pos) if isinstance(a, np.ndarray) else a
                    for i, a in enumerate(s.args)]
            try:
                with fg.no_grad():
                    op(*args, **s.kwargs)
                outs = op(*args, **s.kwargs)
                outs = outs if isinstance(outs, (tuple, list)) else (outs,)
                total = None
                for o in outs:
                    if isinstance(o, fg.Tensor) and o.requires_grad:
                        total = o.sum() if total is None else total + o.sum()
                if total is not None:
                    total.backward()
            except Exception:  # a sample meant to fail: nothing to record
                pass


def _sequential_plan(rng):
    plan = _C.plan.SequentialPlan()
    plan.add_linear({"weight": fg.nn.Parameter(fg.tensor(rng.standard_normal((3, 7)).astype(np.float32)))}, 0)
    plan.add_flatten()
    return plan


def _plan_calls(rng):
    """Base calls of the plan targets: Linear with and without bias, activation and packed weight; Conv2d with
    padding, groups, stride, dilation, a 2x2 pool, a Winograd-packed weight, and Flatten + Linear after it."""
    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    plan_linear(f32(3, 7), f32(5, 7), f32(5))
    plan_linear(f32(2, 4, 9), f32(6, 9), None, 0, 0.0, True)  # relu, packed, a 3-D input
    plan_linear(f32(1, 300), f32(40, 300), f32(40), 1, 0.1)  # leaky_relu over a longer row
    plan_conv(f32(2, 3, 9, 8), f32(4, 3, 3, 3), f32(4), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    plan_conv(f32(1, 4, 12, 12), f32(6, 2, 3, 3), None, (1, 1), (1, 1, 1, 1), (1, 1), 2, 0, 0.0, True, False,
              f32(5, 6 * 6 * 6), True)  # groups, relu, 2x2 pool, packed, then flatten + linear
    plan_conv(f32(2, 2, 11, 10), f32(3, 2, 2, 3), f32(3), (2, 1), (0, 1, 2, 0), (2, 1), 1, 3)  # gelu (tanh)


def _extra_calls():
    """Valid calls of what the op samples do not reach (optimizers, norms, geometry helpers...)."""
    rng = np.random.default_rng(0)
    for make in (lambda ps: fg.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
                 lambda ps: fg.optim.SGD(ps, lr=0.1),
                 lambda ps: fg.optim.Adam(ps, lr=1e-3, amsgrad=True),
                 lambda ps: fg.optim.AdamW(ps, lr=1e-3, weight_decay=0.1)):
        ps = [fg.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in ((3, 4), (5,))]
        opt = make(ps)
        for _ in range(2):
            for q in ps:
                q.grad = fg.tensor(rng.standard_normal(q.shape).astype(np.float32))
            opt.step()
    # the activation and softmax kernels that ops call through their tables (class attributes the
    # recorders do not patch), called here through their modules
    from forgegrad.kernels import activation as KA
    from forgegrad.kernels import softmax as KS
    a = rng.standard_normal((3, 37)).astype(np.float32)
    for name in ("relu", "sigmoid", "tanh", "silu"):
        y = getattr(KA, name)(a)
        getattr(KA, name + "_backward")(a, a if name == "silu" else y)
    KA.column_sums(a)  # a float32 Linear's backward sums its bias gradient inside the GEMM; other paths call this
    # _C.activation.pw_forward / pw_backward (elu, softplus, mish, ...), every code once, with its parameters
    from forgegrad.kernels import activation_more as KM
    for name, (_, n_fwd, n_bwd) in KM.OPS.items():
        params = (1.5, 0.5, 1.0)
        y = KM.pointwise(name, a, *params[:n_fwd]) if n_fwd is not None else KM.pointwise("elu", a, 1.0, 1.0, 1.0)
        KM.pointwise_backward(name, a, y if name == "elu_from_output" else a, *params[:n_bwd])
    # _C.activation.prelu_* / glu_* / rrelu_train_forward (forgegrad.kernels.activation_param)
    from forgegrad.kernels import activation_param as KPA
    slopes = rng.uniform(0.0, 0.5, a.shape[1]).astype(np.float32)
    KPA.prelu(a, slopes)
    KPA.prelu_backward(a, a, slopes)
    halves = np.ascontiguousarray(a[:, :36])
    KPA.glu_backward(KPA.glu(halves, 1), halves, 1)
    KPA.rrelu_train(a, np.full(a.shape, 0.2, np.float32))
    for name in ("softmax", "log_softmax"):
        getattr(KS, name + "_backward")(a, getattr(KS, name)(a))
    # the packed causal attention GPT's attention layer runs (no op sample reaches it)
    from forgegrad.kernels import attention as KAT
    from forgegrad.kernels import pool as KP
    out, lse, split = KAT.attention_forward_packed(rng.standard_normal((2, 5, 18)).astype(np.float32), 3)
    KAT.attention_backward_packed(rng.standard_normal(out.shape).astype(np.float32), split, out, lse, 3)
    # the serving engine's decode attention over a paged KV cache (2 rows, 2 kv heads x 2 query heads, blocks of 4)
    kp, vp = (rng.standard_normal((5, 2, 4, 8)).astype(np.float32) for _ in range(2))
    KAT.paged_attention_decode(rng.standard_normal((2, 2, 2, 8)).astype(np.float32), kp, vp,
                               np.array([[3, 1], [0, 4]]), np.array([6, 3]), 0.35, softcap=5.0, window=4)
    KAT.paged_attention_decode(rng.standard_normal((2, 2, 2, 8)).astype(np.float32), kp, vp,  # T5's bias by distance
                               np.array([[3, 1], [0, 4]]), np.array([6, 3]), 1.0,
                               bias=rng.standard_normal((4, 3)).astype(np.float32))
    # adaptive pools to sizes > 1 (cpp/kernels/per_isa/adaptive_pool.cpp): overlapping windows, outputs larger
    # than the input, the max's indices through max_pool2d's scatter
    xa = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    for size in ((4, 3), (11, 2)):
        ya, ia = KP.adaptive_max_pool2d_forward(xa, size)
        KP.adaptive_max_pool2d_backward(ya, ia, xa.shape)
        KP.adaptive_avg_pool2d_backward(KP.adaptive_avg_pool2d_forward(xa, size), xa.shape)
    x = rng.standard_normal((4, 7)).astype(np.float32)
    p = [x, rng.standard_normal(5).astype(np.float32)]
    for f in (lambda: K.vector_norms(p, 2.0), lambda: K.vector_norms(p, 1.0), lambda: K.vector_norms(p, float("inf")),
              lambda: _C.pool.output_shape((2, 3, 8, 8), (2, 2), None),
              lambda: _C.pool.output_shape((2, 3, 9, 9), (3, 3), (2, 2), (1, 1), (1, 1), True),
              lambda: _C.conv.weight_shape(4, 6, (3, 3), 2),
              lambda: _C.conv.resolve_padding("same", (3, 3), input_size=(8, 8)),
              lambda: _C.conv.resolve_padding((1, 2), (3, 3)),
              # ConvTranspose3d with kernel == stride (the registry samples take the general path)
              lambda: _C.conv.conv_taps_scatter(rng.standard_normal((3, 2, 1, 2, 2, 3, 1)).astype(np.float32),
                                                np.empty((3, 4, 3, 2), np.float32)),
              lambda: _C.conv.conv_taps_gather(rng.standard_normal((3, 4, 3, 2)).astype(np.float32),
                                               np.empty((3, 2, 1, 2, 2, 3, 1), np.float32)),
              # the implicit-GEMM conv forward called directly (conv2d_forward routes only some shapes to it)
              lambda: _C.conv.conv2d_forward_implicit(rng.standard_normal((2, 3, 7, 9)).astype(np.float32),
                                                      rng.standard_normal((5, 3, 3, 3)).astype(np.float32),
                                                      rng.standard_normal(5).astype(np.float32),
                                                      np.empty((2, 5, 4, 5), np.float32), (2, 2), (1, 1, 1, 1),
                                                      (1, 1), 1, 0, 0.0),
              # the strided direct conv forward called directly (routed to from 64 input channels): 16 output
              # channels, stride 2, padding 1, a ReLU
              lambda: _C.conv.conv2d_forward_ocv(rng.standard_normal((2, 3, 9, 8)).astype(np.float32),
                                                 rng.standard_normal((16, 3, 4, 4)).astype(np.float32),
                                                 rng.standard_normal(16).astype(np.float32),
                                                 np.empty((2, 16, 4, 4), np.float32), (2, 2), (1, 1, 1, 1),
                                                 (1, 1), 1, 0, 0.0),
              lambda: _C.rnn.activation("tanh", rng.standard_normal(17).astype(np.float32)),
              lambda: _C.rnn.activation("sigmoid", rng.standard_normal(9).astype(np.float32)),
              lambda: _C.runtime._check_region_alloc(4, 64),
              lambda: _C.runtime._threads_for(1 << 20),
              lambda: _C.attention.backward_splits(1, 130, 2),
              lambda: _C.attention.small_path(128, 300),
              lambda: _C.activation.column_sums(x, np.empty(7, np.float32)),
              # forgegrad.topk / sort's float32 path (not a registry op: no sample reaches it)
              lambda: _C.topk.topk_f32(x, 3, True, np.empty((4, 3), np.float32), np.empty((4, 3), np.int64)),
              lambda: _C.topk.sort_f32(x, True, np.empty((4, 7), np.float32), np.empty((4, 7), np.int64)),
              lambda: _C.gemm.sgemm(x, x.T.copy(), np.zeros((4, 4), np.float32), reference=True),
              lambda: _C.gemm.sgemm(x, x, np.ones((4, 4), np.float32), False, True, 0.5, 2.0),
              lambda: _C.gemm.matmul(x, x, None, False, True),
              lambda: _C.gemm.bmm(x[None], x.T.copy()[None], np.zeros((1, 4, 4), np.float32)),
              lambda: _C.gemm.bmm_plain(x[None], x.T.copy()[None]),
              lambda: _C.gemm.linear(x, rng.standard_normal((3, 7)).astype(np.float32), None, 0),
              # rot90's backward / clone's transposed copy (op samples are below its size threshold)
              lambda: _C.shape_copy.transpose_copy(x[None].transpose(0, 2, 1), np.empty((1, 7, 4), np.float32)),
              # the many-short-rows sum and its backward fill (global pools, mean / sum over trailing axes)
              lambda: _C.reduce_rows.sum_rows(x, np.empty(4, np.float32), True),
              lambda: _C.reduce_rows.fill_rows(x[:, 0].copy(), np.empty((4, 5), np.float32), 5.0),
              lambda: _C.reduce_rows.sum_mid(x.reshape(2, 2, 7), np.empty((2, 7), np.float32), True),
              lambda: _C.reduce_rows.sum_axes(x.reshape(2, 2, 7)[:, :, 1:6], [True, False, True],
                                              np.empty(2, np.float32), False),
              lambda: KP.global_avg_pool2d_forward(rng.standard_normal((2, 3, 7, 5)).astype(np.float32)),
              lambda: KP.global_avg_pool2d_backward(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), (2, 3, 7, 5)),
              # a frozen Sequential's steps in one call (a class: plan_linear / plan_conv are its fuzz targets)
              lambda: _sequential_plan(rng).run(rng.standard_normal((2, 7)).astype(np.float32)),
              lambda: geometry.conv2d_output_shape((2, 4, 9, 9), (6, 2, 3, 3), 2, 1, 1, 2),
              lambda: geometry.conv2d_padding("same", (3, 3), 1, 2, (8, 8)),
              lambda: geometry.conv2d_padding((1, 2, 0, 1), (3, 3)),
              lambda: geometry.conv2d_weight_shape(4, 6, (3, 3), 2),
              lambda: geometry.pool2d_output_shape((2, 3, 9, 9), (3, 3), (2, 2), 1, 1, True),
              # Sequential's graph-free forward pools without indices (no op sample reaches it)
              lambda: KP.max_pool2d_values(rng.standard_normal((2, 3, 9, 8)).astype(np.float32), 2),
              lambda: KP.max_pool2d_values(rng.standard_normal((1, 2, 9, 9)).astype(np.float32), 3, 2, 1, 1, True),
              lambda: _C.runtime.get_num_threads(), lambda: _C.runtime.get_isa(), lambda: _C.runtime.cpu_info(),
              lambda: _C.runtime.set_isa(_C.runtime.get_isa()),
              lambda: _C.allocator.round_size(1000),
              lambda: _C.testing.strided_copy(np.arange(24, dtype=np.float32), (3, 4), (-6, 1), 13),
              lambda: _C.testing.sum_to_shape(rng.standard_normal((2, 3, 4)), (3, 1)),
              lambda: _C.runtime.set_num_threads(_C.runtime.get_num_threads()),
              # forgegrad serve's JSON body decoder
              lambda: _C.serve.json_number_array(b'{"instances": [[1, 2.5e-3], [-0, 7]]}', 14, 36),
              lambda: _C.serve.json_number_array(b"[[0.1, 3], [4, 5]]", float32=True)):
        f()
    _plan_calls(rng)
    # the CSR SpMM and SDDMM of forgegrad.sparse (a 3 x 4 matrix with an empty row, times 4 x 5)
    crow, col = np.array([0, 2, 2, 3], np.int64), np.array([1, 3, 0], np.int64)
    vals, dense = rng.standard_normal(3).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)
    _C.sparse.spmm(crow, col, vals, dense, np.empty((3, 5), np.float32))
    _C.sparse.sddmm(crow, col, rng.standard_normal((3, 5)).astype(np.float32), dense, np.empty(3, np.float32))
    _C.sparse.csr_transpose(crow, col, 4, np.empty(5, np.int64), np.empty(3, np.int64), np.empty(3, np.int64))
    # CSR @ CSR (SpGEMM): that matrix times a 4 x 5 CSR with an empty row, float32 and float64
    b_crow, b_col = np.array([0, 1, 1, 3, 4], np.int64), np.array([0, 4, 1, 2], np.int64)
    b_vals = rng.standard_normal(4).astype(np.float32)
    _C.sparse.spgemm(crow, col, vals, b_crow, b_col, b_vals, 5)
    _C.sparse.spgemm(crow, col, vals.astype(np.float64), b_crow, b_col, b_vals.astype(np.float64), 5)
    # the int8 kernels (forgegrad.quantization reaches them through modules, not op samples)
    w8 = rng.integers(-128, 128, (5, 70), dtype=np.int8)
    packed, colsum = _C.quant.pack_weight(w8)
    a8 = rng.integers(0, 256, (3, 70), dtype=np.uint8)
    xq = rng.standard_normal((3, 70)).astype(np.float32)
    ws, bq = rng.uniform(0.01, 0.1, 5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    w16 = (rng.standard_normal((5, 70)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)  # bfloat16
    pc, csc = _C.quant.pack_weight(rng.integers(-128, 128, (5, 18), dtype=np.int8))
    # a recurrent layer with hidden size 2: gates (T=3, B=2, 4*2), W_hh (4*2, 2) (GRU: 3*2)
    gi4, h2 = rng.standard_normal((3, 2, 8)).astype(np.float32), rng.standard_normal((2, 2)).astype(np.float32)
    ph4, cs4 = _C.quant.pack_weight(rng.integers(-128, 128, (8, 2), dtype=np.int8))
    gi3 = np.ascontiguousarray(gi4[..., :6])
    ph3, cs3 = _C.quant.pack_weight(rng.integers(-128, 128, (6, 2), dtype=np.int8))
    for f in (lambda: _C.quant.gemm_u8s8s32(a8, packed, 5, 70),
              lambda: _C.quant.linear_dynamic(xq, packed, colsum, ws, bq, True, True),
              lambda: _C.quant.linear_u8(a8, 0.05, 100, packed, colsum, ws, bq, False, None, 0),
              lambda: _C.quant.linear_u8(a8, 0.05, 100, packed, colsum, ws, None, True, 0.1, 3),
              lambda: _C.quant.linear_weight_only(xq, w8, ws, bq),
              lambda: _C.quant.linear_weight_only(xq, w8, ws, None),
              lambda: _C.quant.linear_bf16(xq, w16, bq),
              lambda: _C.quant.linear_bf16(np.ascontiguousarray(np.tile(xq, (4, 1))), w16, None),  # 12 rows: blocks
              lambda: _C.quant.choose_qparams(xq, False),
              lambda: _C.quant.rnn_dynamic_layer(0, gi4, ph4, cs4, np.full(8, 0.01, np.float32), None, h2, h2, False,
                                                 True),
              lambda: _C.quant.rnn_dynamic_layer(1, gi3, ph3, cs3, np.full(6, 0.01, np.float32),
                                                 np.zeros(6, np.float32), h2, None, True, False),
              lambda: _C.quant.quantize_u8(xq, 0.05, 128, 0, 255),
              # a static int8 Conv2d: 5 output channels of a (2, 3, 3) kernel, K = 18
              lambda: _C.quant.conv2d_f32(rng.standard_normal((2, 2, 5, 4)).astype(np.float32), 0.05, 100, pc, csc,
                                          ws, bq, [5, 2, 3, 3], [1, 2], [1, 0, 1, 1], [1, 1], 0.1, 3),
              # with ReLU and a fused 2x2 max pool (s32 sums pooled, then requantized), and a 3x2 pool over a
              # dilated conv whose weight scales are not all positive (the kernel pools after requantizing)
              lambda: _C.quant.conv2d_f32(rng.standard_normal((2, 2, 9, 8)).astype(np.float32), 0.05, 100, pc, csc,
                                          ws, bq, [5, 2, 3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 0.1, 3, True, [2, 2]),
              lambda: _C.quant.conv2d_f32(rng.standard_normal((1, 2, 11, 9)).astype(np.float32), 0.05, 100, pc, csc,
                                          ws * np.array([1, -1, 1, 0.5, -2], np.float32), None, [5, 2, 3, 3],
                                          [1, 1], [0, 0, 1, 1], [2, 1], 0.1, 3, False, [3, 2]),
              lambda: _C.quant.path(), lambda: _C.quant.paths(), lambda: _C.quant.amx_status(),
              lambda: _C.quant.avx_vnni_encoding(),
              lambda: _C.quant.set_path(None)):
        f()
    # _C.bf16's conversions (forgegrad.dtypes.astype runs them), every ISA's vector body and its tail
    f37 = rng.standard_normal(37).astype(np.float32)
    h37 = np.empty(37, np.uint16)
    _C.bf16.round_from_float32(f37, h37)
    _C.bf16.widen_to_float32(h37, np.empty(37, np.float32))
    _C.bf16.linear(h37[:36].reshape(4, 9), h37[1:28].reshape(3, 9), h37[:3].copy())  # (bfloat16 linear's kernel)
    # the bfloat16 GEMM (vdpbf16ps where the CPU has it), every transpose, a batch, a bias, an odd K
    a9, b9 = h37[:27].reshape(3, 9), h37[2:29].reshape(9, 3)
    for ta, tb in ((False, False), (True, False), (False, True), (True, True)):
        _C.bf16.gemm(a9 if not ta else a9.T.copy(), b9 if not tb else b9.T.copy(), ta, tb, h37[:3].copy())
    _C.bf16.gemm(h37[:36].reshape(2, 2, 9), h37[1:37].reshape(2, 9, 2))
    _C.bf16.gemm_path()
    _C.bf16.set_gemm_native(True)
    # the shared host/device math (_C.hd_math), which only tests call
    HD = _C.hd_math
    v = rng.standard_normal(37).astype(np.float32)
    g4, g3 = rng.standard_normal((2, 12)).astype(np.float32), rng.standard_normal((2, 9)).astype(np.float32)
    c = rng.standard_normal((2, 3)).astype(np.float32)
    for f in (lambda: HD.exp(v), lambda: HD.sigmoid(v), lambda: HD.tanh(v), lambda: HD.erf(v),
              lambda: HD.act_forward(_C.activation.GELU, v), lambda: HD.act_forward(_C.activation.LEAKY_RELU, v, 0.1),
              lambda: HD.act_backward(_C.activation.SILU, v, v), lambda: HD.lstm_forward(g4, c),
              lambda: HD.lstm_backward(g4, c, c, c, c), lambda: HD.gru_forward(g3, g3, c),
              lambda: HD.gru_backward(g3, c, c, c), lambda: HD.rnn_forward(v, False),
              lambda: HD.rnn_backward(v, v, True),
              lambda: HD.adam_update(v.copy(), v, np.zeros_like(v), np.zeros_like(v), None, step=1, lr=1e-3, beta1=0.9,
                                     beta2=0.999, eps=1e-8),
              lambda: HD.sgd_update(v.copy(), v, np.zeros_like(v), True, lr=0.1, momentum=0.9)):
        f()
    # the float64 kernels of a training step (_C.float64; float64 max pooling through _C.pool)
    F64 = _C.float64
    x64 = rng.standard_normal((2, 3, 7, 6))
    cols = np.empty((3 * 3 * 2, 2 * 4 * 5))
    F64.im2col(x64, cols, (3, 2), (2, 1), (1, 1), (1, 2), 4, 5)
    F64.col2im(cols, np.empty_like(x64), (3, 2), (2, 1), (1, 1), (1, 2), 4, 5)
    a8, c2 = rng.standard_normal((2, 8)), rng.standard_normal((2, 2))
    act, cn, tc, hn = np.empty((2, 8)), np.empty((2, 2)), np.empty((2, 2)), np.empty((2, 2))
    F64.lstm_cell_forward(a8, c2, act, cn, tc, hn)
    F64.lstm_cell_backward(act, c2, tc, hn.copy(), c2.copy(), np.empty((2, 8)))
    w64 = rng.standard_normal((3, 4))
    F64.adam_step([w64], [w64.copy()], [np.zeros_like(w64)], [np.zeros_like(w64)], [np.zeros_like(w64)], [0.1],
                  [0.5], beta1=0.9, beta2=0.999, eps=1e-8, lr=0.1, weight_decay=0.01, decoupled=False,
                  maximize=False)
    r64 = np.empty_like(x64)
    F64.relu(x64, r64)
    F64.relu_backward(x64, r64, np.empty_like(x64))
    y64, i64 = np.empty((2, 3, 4, 3)), np.empty((2, 3, 4, 3), np.int64)
    _C.pool.max_pool2d_forward(x64, y64, i64, (2, 2), (2, 2), (1, 0), (1, 1), True)
    _C.pool.max_pool2d_backward(y64, i64, np.empty_like(x64))


def load_or_record(path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        corpus = record_corpus()
        tmp = f"{path}.{id(corpus)}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(corpus, f)
        import os
        os.replace(tmp, path)
        return corpus


# ---- signatures of the _C bindings --------------------------------------------------------------
_SIG = re.compile(r"^\w+\((.*)\) -> ")


@functools.lru_cache(maxsize=None)
def _stub_tool():
    """tools/gen_c_stub.py, which parses the same pybind11 signatures for the _C stub."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "gen_c_stub.py")
    spec = importlib.util.spec_from_file_location("gen_c_stub", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def c_signature(fn):
    """[(name, annotation, has_default)] from a pybind11 docstring's first line."""
    doc = (fn.__doc__ or "").splitlines()[0] if fn.__doc__ else ""
    m = _SIG.match(doc)
    if not m:
        return []
    params = _stub_tool().split_params(m.group(1))
    out = []
    for p in params:
        if p in ("*", "/"):
            continue
        name, _, rest = p.partition(":")
        ann, _, default = rest.partition("=")
        out.append((name.strip(), ann.strip(), bool(default)))
    return out
