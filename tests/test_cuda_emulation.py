"""The GEMM-family CUDA kernels (cuda/gemm.cu, conv.cu, pool.cu) compiled by g++ against an emulated
CUDA runtime (tests/cuda_emulation/: one host thread per CUDA thread, __syncthreads a barrier,
device pointers host pointers) and compared with the CPU kernels on odd shapes.

This checks the kernels' logic -- tiling, edges, float4 and scalar paths, split-K, the TF32 mma
fragment layout, the gather-form backward passes -- without a GPU. It is not a GPU run: speed,
races and the hardware itself are only checked by tests/test_cuda_gemm.py on a GPU.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from forgegrad.kernels import conv as cpu_conv
from forgegrad.kernels import pool as cpu_pool
from forgegrad.kernels.geometry import conv2d_geometry, pool2d_geometry

from cuda_gemm_cases import check_against_cpu, close, function_cases, rand, ref_gemm, run_function, tf32

pytestmark = pytest.mark.slow  # one g++ build of the kernels (cached under build/), then small launches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [os.path.join(ROOT, "cuda", f) for f in ("gemm.cu", "conv.cu", "pool.cu")]
BINDINGS = [os.path.join(ROOT, "cpp", "bindings", f) for f in ("bind_cuda_gemm.cpp", "py_array.cpp")]
HEADERS = [os.path.join(ROOT, p) for p in ("cuda/common.cuh", "cuda/gemm_tiles.cuh", "cuda/launch.cuh",
                                           "cpp/include/forgegrad/cuda_gemm.h", "cpp/include/forgegrad/conv.h",
                                           "cpp/include/forgegrad/pool.h", "cpp/include/forgegrad/cuda_array.h",
                                           "cpp/include/forgegrad/cuda_api.h", "tests/cuda_emulation/cuda_runtime.h",
                                           "tests/cuda_emulation/emu_module.cpp")]

_CXX = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
# the package itself is built with a C++ compiler, so only an installed wheel without one lacks it
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(_CXX is None, reason="no C++ compiler to build the emulated CUDA kernels")]


def _build():
    cxx = _CXX
    import pybind11
    flags = ["-std=c++17", "-fPIC", "-DFG_CUDA_EMULATION", "-w",
             "-I" + os.path.join(ROOT, "tests", "cuda_emulation"), "-I" + os.path.join(ROOT, "cuda"),
             "-I" + os.path.join(ROOT, "cpp", "include"), "-I" + pybind11.get_include(),
             "-I" + sysconfig.get_paths()["include"]]
    digest = hashlib.sha256(" ".join(flags).encode())
    for p in SOURCES + BINDINGS + HEADERS:
        with open(p, "rb") as f:
            digest.update(f.read())
    out_dir = os.path.join(ROOT, "build", "cuda_emulation", digest.hexdigest()[:16])
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = os.path.join(out_dir, "fg_cuda_emu" + suffix)
    if not os.path.exists(target):
        os.makedirs(out_dir, exist_ok=True)
        objs, procs = [], []
        # the kernels, and one unit with the bindings (emu_module.cpp includes BINDINGS)
        for src in SOURCES + [os.path.join(ROOT, "tests", "cuda_emulation", "emu_module.cpp")]:
            obj = os.path.join(out_dir, os.path.basename(src) + ".o")
            # kernels optimised (they run), the pybind11 unit not (it compiles slowly)
            lang = ["-x", "c++", "-O1"] if src.endswith(".cu") else ["-O0"]
            procs.append(subprocess.Popen([cxx, *flags, *lang, "-c", src, "-o", obj]))
            objs.append(obj)
        if any([p.wait() != 0 for p in procs]):  # wait for all of them
            raise RuntimeError("building the emulated CUDA kernels failed (compiler output above)")
        tmp = target + f".{os.getpid()}.tmp"
        subprocess.run([cxx, "-shared", *objs, "-o", tmp], check=True)
        os.replace(tmp, target)  # atomic: a concurrent run sees the whole module or none
    spec = importlib.util.spec_from_file_location("fg_cuda_emu", target)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules.setdefault("fg_cuda_emu", mod)
    return mod


@pytest.fixture(scope="module")
def emu():
    return _build()


# ---- SGEMM -----------------------------------------------------------------------------------------
def run_gemm(emu, a, b, ta, tb, batch=(), alpha=1.0, beta=0.0, c=None, tf32=False, bias=None, a_off=0):
    """op(a) @ op(b) for the stacked matrices of a, b (batch strides 0 where an operand has batch 1)."""
    M = a.shape[-1] if ta else a.shape[-2]
    K = a.shape[-2] if ta else a.shape[-1]
    N = b.shape[-2] if tb else b.shape[-1]
    out_batch = tuple(batch)
    if c is None:
        c = np.full(out_batch + (M, N), np.nan, np.float32)
    a_mat, b_mat = a.shape[-2] * a.shape[-1], b.shape[-2] * b.shape[-1]

    def strides(shape, mat):
        st, s = [], mat
        for n in reversed(shape):
            st.append(0 if n == 1 else s)
            s *= n
        return st[::-1]

    a_b = a.shape[:-2] if a.ndim > 2 else (1,) * len(out_batch)
    b_b = b.shape[:-2] if b.ndim > 2 else (1,) * len(out_batch)
    a_buf = np.concatenate([np.zeros(a_off, np.float32), a.ravel()]) if a_off else a
    emu.sgemm(ta, tb, M, N, K, alpha, a_buf, a.shape[-1], b, b.shape[-1], beta, c, N, list(out_batch),
              strides(a_b, a_mat), strides(b_b, b_mat), strides(out_batch, M * N), tf32, bias, a_off)
    return c


@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 5, 3), (13, 17, 11), (70, 65, 37), (64, 64, 16), (3, 129, 8)])
def test_sgemm_small_tiles(emu, M, N, K, ta, tb):
    a = rand(*((K, M) if ta else (M, K)))
    b = rand(*((N, K) if tb else (K, N)), seed=1)
    close(run_gemm(emu, a, b, ta, tb), ref_gemm(a, b, ta, tb))


@pytest.mark.parametrize("ta,tb", [(False, False), (True, True)])
def test_sgemm_big_tiles_through_batches(emu, ta, tb):
    # 2 tiles of 128 x 128 per entry x 128 entries: the 128 x 128 configuration; B broadcast (stride 0)
    M, N, K = 130, 67, 21
    a = rand(128, *((K, M) if ta else (M, K)))
    b = rand(*((N, K) if tb else (K, N)), seed=1)
    close(run_gemm(emu, a, b, ta, tb, batch=(128,)), ref_gemm(a, b, ta, tb))


def test_sgemm_alpha_beta_bias_and_unaligned_a(emu):
    a, b, c0 = rand(9, 12), rand(12, 10, seed=1), rand(9, 10, seed=2)
    bias = rand(10, seed=3)
    got = run_gemm(emu, a, b, False, False, alpha=0.5, beta=-2.0, c=c0.copy(), bias=bias, a_off=1)
    close(got, 0.5 * ref_gemm(a, b, False, False) - 2.0 * c0 + bias)
    # alpha = 0: C scaled by beta only, NaN in A ignored; beta = 0 ignores NaN in C
    a_nan = a.copy()
    a_nan[0, 0] = np.nan
    close(run_gemm(emu, a_nan, b, False, False, alpha=0.0, beta=3.0, c=c0.copy()), 3.0 * c0)
    got = run_gemm(emu, a, b, False, False, c=np.full((9, 10), np.nan, np.float32))
    close(got, ref_gemm(a, b, False, False))
    # K = 0 with a bias: the bias rows
    close(run_gemm(emu, rand(4, 0), rand(0, 10), False, False, bias=bias), np.broadcast_to(bias, (4, 10)))


@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_sgemm_split_k_few_tiles_long_k(emu, ta, tb):
    # 2 x 3 tiles of 64 x 64 and K = 1500: split over k into chunks (a Linear weight gradient's shape),
    # the partial sums added in order with alpha, beta and a bias; the same bits on every run
    M, N, K = 70, 130, 1500
    a = rand(*((K, M) if ta else (M, K)))
    b = rand(*((N, K) if tb else (K, N)), seed=1)
    c0, bias = rand(M, N, seed=2), rand(N, seed=3)
    got = run_gemm(emu, a, b, ta, tb, alpha=0.5, beta=-2.0, c=c0.copy(), bias=bias)
    close(got, 0.5 * ref_gemm(a, b, ta, tb) - 2.0 * c0 + bias)
    plain = run_gemm(emu, a, b, ta, tb)
    close(plain, ref_gemm(a, b, ta, tb))
    assert np.array_equal(plain, run_gemm(emu, a, b, ta, tb))


def test_sgemm_broadcast_batches(emu):
    a, b = rand(3, 1, 5, 7), rand(1, 4, 7, 6, seed=1)
    close(run_gemm(emu, a, b, False, False, batch=(3, 4)), ref_gemm(a, b, False, False))


def test_sgemm_is_deterministic_and_tile_independent(emu):
    # the same outputs from the 64 x 64 tiles (1 entry) and the 128 x 128 tiles (256 entries)
    a, b = rand(70, 19), rand(19, 60, seed=1)
    one = run_gemm(emu, a, b, False, False)
    many = run_gemm(emu, np.broadcast_to(a, (256, 70, 19)).copy(), b, False, False, batch=(256,))
    assert np.array_equal(one, many[0]) and np.array_equal(many[0], many[255])


@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_sgemm_tf32_fragment_layout(emu, ta, tb):
    # products of TF32-rounded inputs are exact in FP32: the result must equal the FP64 product of the
    # rounded inputs to FP32 accuracy (a wrong fragment layout is off by O(1))
    M, N, K = 37, 29, 45
    a = rand(*((K, M) if ta else (M, K)))
    b = rand(*((N, K) if tb else (K, N)), seed=1)
    got = run_gemm(emu, a, b, ta, tb, tf32=True)
    close(got, ref_gemm(tf32(a), tf32(b), ta, tb))
    assert not np.allclose(got, ref_gemm(a, b, ta, tb), rtol=1e-6, atol=0)  # it did round


def test_reductions(emu):
    src = rand(3, 4, 2, 5)
    dst = np.empty((3, 1, 2, 5), np.float32)
    emu.sum_to_batch(src, dst, [3, 4, 2], [3, 1, 2], 5)
    close(dst, src.sum(axis=1, keepdims=True))
    dst = np.empty((1, 4, 1, 5), np.float32)
    emu.sum_to_batch(src, dst, [3, 4, 2], [1, 4, 1], 5)
    close(dst, src.sum(axis=(0, 2), keepdims=True))
    g = rand(1000, 7)  # linear bias grad: column sums
    out = np.empty(7, np.float32)
    emu.strided_sum(g, out, 7, 1000, 7, 1, 1)
    close(out, g.astype(np.float64).sum(0))
    y = rand(3, 5, 11, 13)  # conv bias grad
    out = np.empty(5, np.float32)
    emu.strided_sum(y, out, 5, 3, 5 * 143, 143, 143)
    close(out, y.astype(np.float64).sum((0, 2, 3)))


# ---- convolution -------------------------------------------------------------------------------------
def conv_geo(x, w, stride, padding, dilation, groups):
    s, p, d, g, out = conv2d_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    return [*x.shape, w.shape[0], w.shape[2], w.shape[3], g, *s, *d, *p, out[2], out[3]], out


CONV_CASES = [  # x shape, w shape, stride, padding, dilation, groups
    ((2, 3, 9, 11), (5, 3, 3, 3), 1, 1, 1, 1),
    ((2, 4, 13, 10), (6, 4, 3, 2), (2, 3), (1, 2), (2, 1), 1),
    ((1, 4, 8, 8), (6, 2, 3, 3), 2, 1, 1, 2),
    ((2, 3, 7, 7), (3, 1, 3, 3), 1, "same", 1, 3),
    ((3, 5, 4, 4), (7, 5, 1, 1), 1, 0, 1, 1),
    ((1, 2, 6, 5), (3, 2, 2, 3), 1, (0, 1, 2, 0), 1, 1),
    ((2, 3, 40, 40), (4, 3, 3, 3), 1, 1, 1, 1),  # weight gradient split over the pixels
    ((1, 256, 8, 8), (256, 1, 3, 3), 1, 1, 1, 256),  # 256 groups: the 128 x 128 tile configuration
]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV_CASES)
def test_conv2d(emu, xs, ws, stride, padding, dilation, groups):
    x, w, bias = rand(*xs), rand(*ws, seed=1), rand(ws[0], seed=2)
    geo, out = conv_geo(x, w, stride, padding, dilation, groups)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = np.full(out, np.nan, np.float32)
    emu.conv2d_forward(x, w, bias, y, geo)
    close(y, cpu_conv.conv2d_forward(x, w, bias, **args))
    gy = rand(*out, seed=3)
    gx_ref, gw_ref, gb_ref = cpu_conv.conv2d_backward(x, w, gy, **args)
    gx = np.full(x.shape, np.nan, np.float32)
    emu.conv2d_backward_input(w, gy, gx, geo)
    close(gx, gx_ref)
    gw, gb = np.full(w.shape, np.nan, np.float32), np.full(ws[0], np.nan, np.float32)
    work = emu.conv2d_backward_weight(x, gy, gw, gb, geo)
    close(gw, gw_ref)
    close(gb, gb_ref)
    if xs == (2, 3, 40, 40):
        assert work > 0  # the split-K path ran


# ---- pooling -----------------------------------------------------------------------------------------
def pool_geo(x, k, s, p, d, ceil_mode):
    k, s, p, d, out = pool2d_geometry(x.shape, k, s, p, d, ceil_mode)
    return [*x.shape, *k, *s, *p, *d, out[2], out[3]], out


@pytest.mark.parametrize("xs,k,s,p,d,ceil_mode", [
    ((2, 3, 9, 10), 3, 2, 1, 1, False),
    ((1, 2, 11, 9), (2, 3), (1, 2), (1, 0), (2, 1), True),
    ((2, 2, 8, 8), 2, None, 0, 1, False),
    ((1, 1, 7, 7), 3, 3, 1, 2, True),
])
def test_max_pool2d_matches_cpu_bit_for_bit(emu, xs, k, s, p, d, ceil_mode):
    x = rand(*xs)
    x[0, 0, 1, :] = 0.5  # ties: the first in window order wins
    x[-1, -1, 2, 3] = np.nan  # NaN propagates
    geo, out = pool_geo(x, k, s, p, d, ceil_mode)
    y, idx = np.empty(out, np.float32), np.empty(out, np.int64)
    emu.max_pool2d_forward(x, y, idx, geo)
    y_ref, idx_ref = cpu_pool.max_pool2d_forward(x, k, s, p, d, ceil_mode)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    gy = rand(*out, seed=1)
    gx = np.full(xs, np.nan, np.float32)
    emu.max_pool2d_backward(gy, idx, gx, geo)
    np.testing.assert_array_equal(gx, cpu_pool.max_pool2d_backward(gy, idx_ref, xs))


@pytest.mark.parametrize("xs,k,s,p,ceil_mode,cip,div", [
    ((2, 3, 9, 10), 3, 2, 1, False, True, None),
    ((2, 3, 9, 10), 3, 2, 1, True, False, None),
    ((1, 2, 11, 9), (2, 3), (1, 2), (1, 0), True, True, 5),
    ((1, 1, 5, 5), 2, None, 0, False, True, None),
])
def test_avg_pool2d_matches_cpu_bit_for_bit(emu, xs, k, s, p, ceil_mode, cip, div):
    x = rand(*xs)
    geo, out = pool_geo(x, k, s, p, 1, ceil_mode)
    y = np.full(out, np.nan, np.float32)
    emu.avg_pool2d_forward(x, y, geo, cip, div or 0)
    np.testing.assert_array_equal(y, cpu_pool.avg_pool2d_forward(x, k, s, p, ceil_mode, cip, div))
    gy = rand(*out, seed=1)
    gx = np.full(xs, np.nan, np.float32)
    emu.avg_pool2d_backward(gy, gx, geo, cip, div or 0)
    np.testing.assert_array_equal(gx, cpu_pool.avg_pool2d_backward(gy, xs, k, s, p, ceil_mode, cip, div))


# ---- the whole cuda path: the ops' cuda Functions -> the real bindings -> the kernels, emulated --------
class _WithEmulatedGemm:
    """What ops/linalg.py, conv.py and pool.py see as ``_C``: the real module, but cuda_gemm emulated."""

    def __init__(self, real, emu):
        self._real, self.cuda_gemm = real, emu.cuda_gemm

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def emulated_ops(emu, monkeypatch):
    from forgegrad import _C
    from forgegrad.ops import conv, linalg, pool
    for mod in (linalg, conv, pool):
        monkeypatch.setattr(mod, "_C", _WithEmulatedGemm(_C, emu))
    return emu


@pytest.mark.parametrize("op,args,kwargs,grad", function_cases(large=False))
def test_cuda_function_matches_cpu(emulated_ops, op, args, kwargs, grad):
    check_against_cpu(op, args, kwargs, grad, emulated_ops.DeviceArray.from_numpy)


def test_cuda_matmul_tf32_flag(emulated_ops, monkeypatch):
    import forgegrad.cuda
    from forgegrad.ops import registry
    fn = registry._OPS["matmul"].functions["cuda"]
    a, b = rand(20, 30), rand(30, 10, seed=1)
    (fp32,), _ = run_function(fn, (a, b), {}, (0, 1), emulated_ops.DeviceArray.from_numpy)
    monkeypatch.setattr(forgegrad.cuda, "matmul_allow_tf32", True)
    (rounded,), (ga, gb) = run_function(fn, (a, b), {}, (0, 1), emulated_ops.DeviceArray.from_numpy)
    close(fp32, ref_gemm(a, b, False, False))
    close(rounded, ref_gemm(tf32(a), tf32(b), False, False))
    assert not np.array_equal(fp32, rounded)
    g = np.random.default_rng(7).uniform(-1, 1, (20, 10)).astype(np.float32)  # run_function's cotangent
    close(ga, ref_gemm(tf32(g), tf32(b), False, True))  # the gradients took the TF32 path too
    close(gb, ref_gemm(tf32(a), tf32(g), True, False))


def test_cuda_bindings_name_bad_arguments(emulated_ops):
    k = emulated_ops.cuda_gemm
    a = emulated_ops.DeviceArray.from_numpy(rand(3, 4))
    with pytest.raises(ValueError, match="cannot be multiplied"):
        k.matmul(a, a, False)
    with pytest.raises(TypeError, match="b must be a forgegrad._C.cuda.DeviceArray, got ndarray"):
        k.matmul(a, rand(4, 2), False)
    with pytest.raises(TypeError, match="weight must be float32, got int64"):
        k.linear(a, emulated_ops.DeviceArray.from_numpy(np.zeros((2, 4), np.int64)), None, False)
    with pytest.raises(ValueError, match="bias must have shape"):
        k.linear(a, a, emulated_ops.DeviceArray.from_numpy(rand(4)), False)
    x = emulated_ops.DeviceArray.from_numpy(rand(1, 2, 5, 5))
    with pytest.raises(ValueError, match="does not match input"):
        w = emulated_ops.DeviceArray.from_numpy(rand(3, 3, 3, 3))
        k.conv2d_forward(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        k.avg_pool2d_backward(x, [1, 2, 5, 5], (2, 2), (2, 2), (0, 0), False, True, 0)


@pytest.mark.parametrize("xs,out", [((2, 3, 7, 9), (3, 4)), ((1, 2, 2, 3), (5, 7)), ((1, 1, 6, 6), (1, 1)),
                                    ((2, 2, 5, 4), (5, 4)), ((2, 3, 13, 11), (1, 1)), ((3, 2, 1, 1), (1, 1))])
def test_adaptive_avg_pool2d_matches_cpu_bit_for_bit(emu, xs, out):
    x = rand(*xs)
    y = np.full(xs[:2] + out, np.nan, np.float32)
    emu.adaptive_avg_pool2d_forward(x, y)
    np.testing.assert_array_equal(y, cpu_pool.adaptive_avg_pool2d_forward(x, out))
    gy = rand(*y.shape, seed=1)
    gx = np.full(xs, np.nan, np.float32)
    emu.adaptive_avg_pool2d_backward(gy, gx)
    np.testing.assert_array_equal(gx, cpu_pool.adaptive_avg_pool2d_backward(gy, xs))
