"""The GEMM-family CUDA kernels (SGEMM, implicit-GEMM conv2d, pooling) on a GPU against the CPU
kernels: the ops' cuda Functions forward and backward, odd shapes, both tile configurations,
determinism, TF32. Every test needs a GPU and skips with the reason without one (CI has none);
tests/test_cuda_emulation.py runs the same kernels' logic emulated on the CPU.
"""
import numpy as np
import pytest

import forgegrad as fg
import forgegrad.cuda as fcuda
from forgegrad import _C
from forgegrad.ops import registry

from cuda_gemm_cases import check_against_cpu, close, function_cases, rand, ref_gemm, run_function, tf32

pytestmark = pytest.mark.skipif(not fcuda.is_available(),
                                reason=f"needs a CUDA device: {fcuda.unavailable_reason() or 'available'}")


def dev(a):
    return fcuda.to_device(a)


@pytest.mark.parametrize("op,args,kwargs,grad", function_cases(large=True))
def test_cuda_function_matches_cpu(op, args, kwargs, grad):
    check_against_cpu(op, args, kwargs, grad, dev)


@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 5, 3), (13, 17, 11), (127, 129, 131), (257, 3, 1000),
                                   (2053, 2039, 67)])  # the last: enough 128 x 128 tiles for that path
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_sgemm_transposes_and_edges(M, N, K, ta, tb):
    a = rand(*((K, M) if ta else (M, K)))
    b = rand(*((N, K) if tb else (K, N)), seed=1)
    got = fcuda.matmul(dev(a), dev(b), trans_a=ta, trans_b=tb).numpy()
    close(got, fg.kernels.matmul(a, b, trans_a=ta, trans_b=tb))


@pytest.mark.parametrize("a_shape,b_shape", [((5, 3, 1, 33, 17), (4, 17, 9)), ((1, 6, 64, 64), (6, 1, 64, 64)),
                                             ((300, 7, 5), (5, 3))])
def test_batched_broadcast_matmul_and_gradients(a_shape, b_shape):
    op = registry._OPS["matmul"]
    check_against_cpu(op, (rand(*a_shape), rand(*b_shape, seed=1)), {}, (0, 1), dev)


def test_results_are_deterministic():
    a, b = rand(513, 700), rand(700, 300, seed=1)
    first = _C.cuda_gemm.matmul(dev(a), dev(b), False).numpy()
    for _ in range(3):
        assert np.array_equal(_C.cuda_gemm.matmul(dev(a), dev(b), False).numpy(), first)
    x, w = rand(4, 8, 30, 30), rand(16, 8, 3, 3, seed=2)
    gy = rand(4, 16, 30, 30, seed=3)
    args = (dev(x), dev(w), dev(gy), (1, 1), (1, 1, 1, 1), (1, 1), 1, True, True, True)
    ref = [g.numpy() for g in _C.cuda_gemm.conv2d_backward(*args)]
    for _ in range(3):  # split-K weight gradient: fixed-order reduction, bit-identical every run
        assert all(np.array_equal(g.numpy(), r) for g, r in zip(_C.cuda_gemm.conv2d_backward(*args), ref))


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_split_k_when_few_tiles_and_a_long_k(ta, tb):
    # few 64 x 64 output tiles, K = 3001: split over k, the chunks added in order (alpha, beta, bias too)
    M, N, K = 70, 130, 3001
    a = rand(*((K, M) if ta else (M, K)))
    b = rand(*((N, K) if tb else (K, N)), seed=1)
    c0 = rand(M, N, seed=2)
    out = dev(c0.copy())
    fcuda.matmul(dev(a), dev(b), trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0, out=out)
    want = fg.kernels.matmul(a, b, trans_a=ta, trans_b=tb)
    close(out.numpy(), 0.5 * want + 2.0 * c0)
    first = fcuda.matmul(dev(a), dev(b), trans_a=ta, trans_b=tb).numpy()
    close(first, want)
    assert np.array_equal(fcuda.matmul(dev(a), dev(b), trans_a=ta, trans_b=tb).numpy(), first)
    x, w, bias = rand(70, 3001), rand(130, 3001, seed=3), rand(130, seed=4)  # a Linear with a bias
    close(_C.cuda_gemm.linear(dev(x), dev(w), dev(bias), False).numpy(), x @ w.T + bias)


def test_tf32_only_when_allowed(monkeypatch):
    a, b = rand(200, 300), rand(300, 100, seed=1)
    fp32 = _C.cuda_gemm.matmul(dev(a), dev(b), False).numpy()
    close(fp32, ref_gemm(a, b, False, False))
    op = registry._OPS["matmul"]
    (via_op,), _ = run_function(op.functions["cuda"], (a, b), {}, (0, 1), dev)
    assert np.array_equal(via_op, fp32)  # matmul_allow_tf32 defaults to False
    monkeypatch.setattr(fcuda, "matmul_allow_tf32", True)
    (got,), _ = run_function(op.functions["cuda"], (a, b), {}, (0, 1), dev)
    close(got, ref_gemm(tf32(a), tf32(b), False, False))
    assert not np.array_equal(got, fp32)


@pytest.mark.parametrize("xs,ws,kwargs", [
    ((2, 3, 40, 40), (4, 3, 3, 3), dict(padding=1)),  # weight gradient split over the pixels
    ((1, 256, 8, 8), (256, 1, 3, 3), dict(padding=1, groups=256)),  # 128 x 128 tiles through the groups
    ((8, 64, 28, 28), (128, 64, 3, 3), dict(stride=2, padding=1)),
    ((3, 5, 17, 19), (7, 5, 5, 3), dict(stride=(2, 3), padding=(2, 1), dilation=(1, 2))),
])
def test_conv2d_geometries(xs, ws, kwargs):
    op = registry._OPS["conv2d"]
    check_against_cpu(op, (rand(*xs), rand(*ws, seed=1), rand(ws[0], seed=2)), kwargs, (0, 1, 2), dev)


@pytest.mark.parametrize("name,xs,kwargs", [
    ("max_pool2d", (2, 3, 31, 29), dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    ("max_pool2d", (1, 1, 1, 1), dict(kernel_size=1)),
    ("avg_pool2d", (2, 3, 31, 29), dict(kernel_size=(3, 2), stride=(2, 1), padding=1, count_include_pad=False)),
    ("avg_pool2d", (2, 3, 9, 9), dict(kernel_size=3, ceil_mode=True, divisor_override=7)),
])
def test_pool_options(name, xs, kwargs):
    check_against_cpu(registry._OPS[name], (rand(*xs),), kwargs, (0,), dev)
