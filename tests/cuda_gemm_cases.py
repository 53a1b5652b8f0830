"""Shared by tests/test_cuda_gemm.py (on a GPU) and tests/test_cuda_emulation.py (the same kernels
emulated on the CPU): random inputs, the tolerance rule, references, and running an op's Function
(CPU or cuda) forward and backward on numpy inputs."""
from __future__ import annotations

import numpy as np
import pytest


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def close(got, want, rtol=1e-5):
    """Within rtol of the reference, relative to the reference's scale (sums cancel)."""
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def tf32(x):
    """x rounded as cvt.rna.tf32.f32 rounds it (10 mantissa bits, ties away from zero)."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def ref_gemm(a, b, ta, tb):
    """op(a) @ op(b) in float64 (batched over leading axes)."""
    a64 = np.swapaxes(a, -1, -2).astype(np.float64) if ta else a.astype(np.float64)
    b64 = np.swapaxes(b, -1, -2).astype(np.float64) if tb else b.astype(np.float64)
    return a64 @ b64


def run_function(fn, args, kwargs, grad_positions, to_device=None):
    """Forward and backward (cotangent: uniform(-1, 1), seed 7) of Function fn. to_device (numpy ->
    device array) moves the array arguments and the cotangent; results come back as numpy."""
    def wrap(a):
        if isinstance(a, np.ndarray):
            return to_device(a) if to_device else a.copy()
        return a

    def unwrap(a):
        return None if a is None else (a if isinstance(a, np.ndarray) else a.numpy())

    ctx = fn.__new__(fn)
    ctx.needs_input_grad = tuple(i in grad_positions for i in range(len(args)))
    outs = fn.forward(ctx, *[wrap(a) for a in args], **kwargs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    values = [unwrap(o) for o in outs]
    rng = np.random.default_rng(7)
    cots = [rng.uniform(-1, 1, v.shape).astype(np.float32) for v in values[:1]]
    grads = fn.backward(ctx, *[wrap(c) for c in cots])
    grads = grads if isinstance(grads, tuple) else (grads,)
    return values, [unwrap(grads[p]) if p < len(grads) else None for p in grad_positions]


def check_against_cpu(op, args, kwargs, grad_positions, to_device):
    """The op's cuda Function (on to_device's arrays) against its CPU Function: values and gradients
    within 1e-5 relative; max_pool2d's indices equal."""
    want_v, want_g = run_function(op.function, args, kwargs, grad_positions)
    got_v, got_g = run_function(op.functions["cuda"], args, kwargs, grad_positions, to_device)
    for g, w in zip(got_v, want_v):
        assert g.shape == w.shape and g.dtype == w.dtype
        if w.dtype == np.int64:
            np.testing.assert_array_equal(g, w)
        else:
            close(g, w)
    for g, w in zip(got_g, want_g):
        assert (g is None) == (w is None)
        if w is not None:
            assert g.shape == w.shape
            close(g, w)


GEMM_OPS = ("matmul", "linear", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")
MATMUL_SHAPES = [((3, 1, 4, 5), (2, 5, 6)), ((5,), (5,)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3)), ((1, 1), (1, 1)),
                 ((7, 5), (3, 1, 5, 2)), ((2, 0, 3), (3, 4)), ((3, 0), (0, 2)), ((13, 17), (17, 11)),
                 ((2, 1, 3, 31, 37), (4, 1, 37, 29))]


def function_cases(large: bool):
    """pytest params (op, args, kwargs, grad positions): every registry sample of the GEMM-family ops
    (the CPU's multithreading samples only when large), and matmul's 1-D / broadcast shapes."""
    from forgegrad.ops import registry
    out = []
    for name in GEMM_OPS:
        op = registry._OPS[name]
        for s in op.samples():
            if not large and ("large" in s.name or "several threads" in s.name):
                continue
            out.append(pytest.param(op, s.args, s.kwargs, s.grad_positions(), id=f"{name}-{s.name}"))
    mm = registry._OPS["matmul"]
    for a, b in MATMUL_SHAPES:
        out.append(pytest.param(mm, (rand(*a), rand(*b, seed=1)), {}, (0, 1), id=f"matmul-{a}@{b}"))
    return out
