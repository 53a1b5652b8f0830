"""The ops' cuda Functions, checked on the CPU against a numpy stand-in of forgegrad._C.cuda_nn.

tests/cuda_nn_emulation.py implements each binding's contract in numpy (its arguments, output shapes
and dtypes and the kernels' formulas). Running every registry sample of every op with a cuda Function
through it, forward and backward, and comparing with the op's CPU Function checks the Python half of
the CUDA path -- argument plumbing, what is saved for backward, reshapes, broadcasting and gradient
routing -- where CI can run it. It does not run, or vouch for, the CUDA kernels: tests/test_cuda_nn.py
does that on a GPU.
"""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.cuda as fcuda
from forgegrad.ops.registry import Sample
from forgegrad.ops import _attention_math_cuda as AMC
from forgegrad.ops import _cuda_math as CM
from forgegrad.ops import _cuda_nn as CN

import cuda_nn_emulation as EMU
from test_cuda_nn import CUDA_OPS


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setattr(CN, "kernels", lambda: EMU)
    # the composed attention path (dropout, softcap) and the host-side index counting reach past _C.cuda_nn
    monkeypatch.setattr(AMC, "_mm", EMU.matmul)
    monkeypatch.setattr(AMC, "_t", EMU.swap_last_two)
    monkeypatch.setattr(AMC, "_act_forward", lambda code, x: EMU.tanh_forward(code, x))
    monkeypatch.setattr(AMC, "_act_backward", lambda code, g, y: EMU.tanh_backward(code, g, y))
    monkeypatch.setattr(AMC, "_cuda", lambda: EMU)
    monkeypatch.setattr(fcuda, "to_host", EMU.to_host)
    monkeypatch.setattr(fcuda, "to_device", EMU.to_device)
    monkeypatch.setattr(CM, "_cuda", lambda: EMU)  # glu's strided copies and concatenation


def _wrap(a, device):
    if isinstance(a, np.ndarray):
        return EMU.EmuArray(a.copy()) if device else a.copy()
    return a


def _unwrap(a):
    return None if a is None else (a.a if isinstance(a, EMU.EmuArray) else np.asarray(a))


def _run(fn, sample, emulated_device):
    positions = sample.grad_positions()
    args = [_wrap(a, emulated_device) for a in sample.args]
    ctx = fn.__new__(fn)
    ctx.needs_input_grad = tuple(i in positions for i in range(len(args)))
    outs = fn.forward(ctx, *args, **sample.kwargs)
    outs = tuple(outs) if isinstance(outs, tuple) else (outs,)
    values = [_unwrap(o) for o in outs]
    rng = np.random.default_rng(7)
    cots = [rng.uniform(-1, 1, size=v.shape).astype(np.float32) if v.dtype.kind == "f" else None for v in values]
    grads = fn.backward(ctx, *[_wrap(c, emulated_device) if c is not None else None for c in cots])
    grads = grads if isinstance(grads, tuple) else (grads,)
    return values, [_unwrap(grads[p]) if p < len(grads) else None for p in positions]


def _cases():
    by_name = {op.name: op for op in fg.ops.all_ops()}
    for name in CUDA_OPS:
        op = by_name[name]
        yield pytest.param(op, id=name)


@pytest.mark.parametrize("op", list(_cases()))
def test_cuda_function_matches_cpu_function(op, emulated):
    cuda_fn = op.functions["cuda"]
    for sample in op.samples():
        want_v, want_g = _run(op.function, sample, False)
        got_v, got_g = _run(cuda_fn, sample, True)
        what = f"{op.name} sample {sample.name!r}"
        assert len(got_v) == len(want_v), f"{what}: {len(got_v)} outputs, the CPU gives {len(want_v)}"
        for k, (g, w) in enumerate(zip(got_v, want_v)):
            assert g.shape == w.shape, f"{what}: output {k} shape {g.shape}, the CPU gives {w.shape}"
            assert g.dtype == w.dtype, f"{what}: output {k} dtype {g.dtype}, the CPU gives {w.dtype}"
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-5, equal_nan=True, err_msg=f"{what}: output {k}")
        for k, (g, w) in enumerate(zip(got_g, want_g)):
            if w is None:
                assert g is None, f"{what}: gradient {k} is not None where the CPU's is"
                continue
            assert g is not None, f"{what}: gradient {k} missing"
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape, f"{what}: gradient {k} shape {g.shape}, the CPU gives {w.shape}"
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=f"{what}: gradient {k}")


def test_batch_norm_updates_running_stats_in_place(emulated):
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    fn = {o.name: o for o in fg.ops.all_ops()}["batch_norm"].functions["cuda"]
    erm, erv = EMU.EmuArray(rm.copy()), EMU.EmuArray(rv.copy())
    ctx = fn.__new__(fn)
    ctx.needs_input_grad = (True,)
    fn.forward(ctx, EMU.EmuArray(x), erm, erv, None, None, True, 0.1, 1e-5)
    np.testing.assert_allclose(erm.a, 0.1 * x.mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(erv.a, 0.9 + 0.1 * x.var(axis=(0, 2), ddof=1), rtol=1e-5)


def _edge_cases():
    """(op, args, kwargs) over the edge grid of tests/test_cuda_sim_math.py (0, -0, +-inf, NaN, the kinks,
    out-of-domain values), which the registry samples mostly avoid."""
    from test_cuda_sim_math import COL, ROW, X
    cases = [(n, (X,), {}) for n in [*CM.UNARY, *CM.PREDICATES, "tanhshrink", "round", "logit", "selu"]]
    cases += [(n, (COL, ROW), {}) for n in CM.BINARY]
    cases += [("round", (X * 10,), {"decimals": 1}), ("logit", (X,), {"eps": 0.1}), ("elu", (X,), {"alpha": 1.0}),
              ("elu", (X,), {"alpha": -0.5}), ("celu", (X,), {"alpha": 0.3}), ("hardtanh", (X,), {}),
              ("softplus", (X,), {"beta": 1.5, "threshold": 3.0}), ("softshrink", (X,), {}), ("hardshrink", (X,), {}),
              ("threshold", (X,), {"threshold": 0.5, "value": -2.0}), ("glu", (X.reshape(2, -1),), {"dim": 0}),
              ("prelu", (X.reshape(-1, 2), np.array([0.25, -0.5], np.float32)), {}),
              ("lerp", (COL, ROW, 0.75), {}), ("lerp", (COL, ROW, ROW[:, ::-1].copy()), {})]
    return [pytest.param(*c, id=f"{c[0]}-{i}") for i, c in enumerate(cases)]


@pytest.mark.parametrize("name,args,kwargs", _edge_cases())
def test_cuda_math_edge_values_match_cpu(name, args, kwargs, emulated):
    op = {o.name: o for o in fg.ops.all_ops()}[name]
    sample = Sample(args, kwargs)
    with np.errstate(all="ignore"):  # inf * 0 and inf / inf on purpose (some CPU Functions warn there)
        (want_v, want_g), (got_v, got_g) = _run(op.function, sample, False), _run(op.functions["cuda"], sample, True)
    for k, (g, w) in enumerate(zip(got_v + got_g, want_v + want_g)):
        assert (g is None) == (w is None), f"{name}: result {k}"
        if w is not None:
            assert np.asarray(g).dtype == np.asarray(w).dtype, f"{name}: result {k} dtype"
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=f"{name}: result {k}")


@pytest.mark.parametrize("softcap", [None, 4.0])
def test_cuda_composed_attention_keeps_nan_rows_and_zeroes_masked_ones(softcap, emulated):
    """The composed path gives 0 for a row whose keys are all masked (torch's _safe_softmax) but keeps NaN
    in a row NaN from its inputs, as the CPU's composed path (it had zeroed every NaN weight)."""
    from forgegrad.ops import _attention_math as AM
    rng = np.random.default_rng(3)
    n, L, S, E = 2, 5, 7, 4
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((n, L, E), (n, S, E), (n, S, E)))
    q[0, 1, 2] = np.nan  # query row (0, 1) NaN from its input
    k[1, 3, 0] = np.inf  # one key's score inf or NaN in every row of batch 1
    mask = np.where(rng.random((n, L, S)) < 0.3, -np.inf, 0).astype(np.float32)
    mask[0, 3] = -np.inf  # row (0, 3) fully masked
    mask[1, 4] = -np.inf
    mask[1, 2, 3] = 0.0  # row (1, 2) sees the inf key
    with np.errstate(invalid="ignore"):  # NaN and inf - inf on purpose
        want, wstate = AM.forward(q, k, v, mask.copy(), (n,), False, 0.5, 0.0, softcap)
        got, gstate = AMC.forward(*(EMU.EmuArray(a) for a in (q, k, v, mask)), False, 0.5, 0.0, softcap)
    np.testing.assert_array_equal(np.isnan(got.a), np.isnan(want))
    np.testing.assert_allclose(got.a, want, rtol=2e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(want[0, 1]).all() and (want[0, 3] == 0).all() and (want[1, 4] == 0).all()
    g = rng.standard_normal(want.shape).astype(np.float32)
    with np.errstate(invalid="ignore"):
        wd = AM.backward(g, q, k, v, wstate, mask, (n,), False, 0.5, True)
        gd = AMC.backward(EMU.EmuArray(g), *(EMU.EmuArray(a) for a in (q, k, v)), gstate, 0.5)
    for name, a, b in zip(("dq", "dk", "dv", "dmask"), gd, wd):
        np.testing.assert_allclose(a.a, b, rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=name)
