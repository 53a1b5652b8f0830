"""The kernels of cuda/{binary,reduce,softmax_loss,norm,attention,embedding}.cu executed on the CPU.

No GPU is available to this project's CI, so this test compiles the kernels' own source with g++
against tests/cuda_sim/cuda_runtime.h -- a stand-in that runs every simulated GPU thread of a block as
a std::thread, with __syncthreads as a block barrier and the warp shuffles as exchanges between the 32
threads of a warp -- and compares what the host entry points of cuda_nn.h produce with numpy. It
exercises the kernels' logic (index math, tiling, the fixed-order reductions, the two-pass slices, the
online softmax and the recomputed attention backward) on odd shapes. It says nothing about the GPU's
memory model, occupancy or speed: that needs tests/test_cuda_nn.py on a real GPU.
"""
from __future__ import annotations

import ctypes as C
import hashlib
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = ["binary", "reduce", "softmax_loss", "norm", "attention", "embedding"]
SIM = os.path.join(ROOT, "tests", "cuda_sim")
P = C.c_void_p


def _split_top(text):
    """Split a launch configuration at its top-level commas."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()]


def _to_cpp(source):
    """CUDA source -> C++ for the simulator: launches become fg_sim::launch calls, dynamic shared
    memory the simulated block's buffer."""
    source = source.replace("extern __shared__ float smem[];",
                            "float* smem = reinterpret_cast<float*>(fg_sim::block->dyn.data());")

    def launch(m):
        cfg = _split_top(m.group(2))
        smem = cfg[2] if len(cfg) > 2 else "0"
        return f"fg_sim::launch(dim3({cfg[0]}), dim3({cfg[1]}), {smem}, [&] {{ {m.group(1)}({m.group(3)}); }});"

    return re.sub(r"([\w:]+(?:<\w+>)?)\s*<<<(.*?)>>>\((.*?)\);", launch, source, flags=re.S)


_CXX = shutil.which("g++") or shutil.which("c++")
# the package itself is built with a C++ compiler, so only an installed wheel without one lacks it
pytestmark = pytest.mark.skipif(_CXX is None, reason="needs a C++20 compiler (g++) to build the kernel simulator")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    cxx = _CXX
    sources = {k: open(os.path.join(ROOT, "cuda", k + ".cu"), encoding="utf-8").read() for k in KERNELS}
    digest = hashlib.sha256()  # the library is cached under build/ by the hash of everything it compiles
    inputs = [os.path.join(ROOT, "cuda", n) for n in sorted(os.listdir(os.path.join(ROOT, "cuda")))]
    inputs += [os.path.join(SIM, "cuda_runtime.h"), os.path.join(SIM, "sim_api.cpp"),
               os.path.join(ROOT, "cpp", "include", "forgegrad", "cuda_nn.h"), __file__]
    for path in inputs:
        with open(path, "rb") as f:
            digest.update(f.read())
    cache = os.path.join(ROOT, "build", "cuda_sim")
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError:
        cache = str(tmp_path_factory.mktemp("cuda_sim"))
    lib = os.path.join(cache, f"libfgsim-{digest.hexdigest()[:16]}.so")
    if not os.path.exists(lib):
        work = tmp_path_factory.mktemp("cuda_sim_src")
        files = []
        for k, text in sources.items():
            f = work / f"{k}.cpp"
            f.write_text(_to_cpp(text))
            files.append(str(f))
        files.append(os.path.join(SIM, "sim_api.cpp"))
        flags = ["-std=c++20", "-O0", "-pthread", "-fPIC", "-w", f"-I{SIM}", f"-I{os.path.join(ROOT, 'cuda')}",
                 f"-I{os.path.join(ROOT, 'cpp', 'include')}"]
        objs = [str(work / (os.path.basename(f) + ".o")) for f in files]
        procs = [subprocess.Popen([cxx, *flags, "-c", f, "-o", o], stderr=subprocess.PIPE, text=True)
                 for f, o in zip(files, objs)]  # the files compile in parallel
        errors = [p.communicate()[1] for p in procs if p.wait() != 0]
        assert not errors, "building the kernel simulator failed:\n" + "\n".join(e[-3000:] for e in errors)
        proc = subprocess.run([cxx, "-shared", "-pthread", *objs, "-o", lib + ".tmp"], capture_output=True, text=True)
        assert proc.returncode == 0, f"linking the kernel simulator failed:\n{proc.stderr[-3000:]}"
        os.replace(lib + ".tmp", lib)
    return C.CDLL(lib)


def _p(a):
    return None if a is None else a.ctypes.data_as(P)


GUARD = 64  # bytes of canary on each side of every array a kernel gets


def _guarded(a):
    """A copy of a inside a buffer with canary bytes on both sides (to catch out-of-bounds writes)."""
    raw = np.full(a.nbytes + 2 * GUARD, 0xA5, np.uint8)
    inner = raw[GUARD:GUARD + a.nbytes].view(a.dtype).reshape(a.shape)
    inner[...] = a
    return raw, inner


def _call(sim, name, *args):
    """Call a sim_* entry point; array arguments travel in guarded buffers and are copied back."""
    fn = getattr(sim, name)
    fn.restype = C.c_char_p
    conv, guarded = [], []
    for a in args:
        if isinstance(a, np.ndarray):
            raw, inner = _guarded(np.ascontiguousarray(a))
            guarded.append((a, raw, inner))
            conv.append(_p(inner))
        elif a is None:
            conv.append(None)
        elif isinstance(a, bool):
            conv.append(C.c_bool(a))
        elif isinstance(a, float):
            conv.append(C.c_float(a))
        elif isinstance(a, int):
            conv.append(C.c_int64(a))
        else:
            conv.append(a)
    err = fn(*conv)
    assert err is None, f"{name}: {err.decode()}"
    for k, (orig, raw, inner) in enumerate(guarded):
        assert (raw[:GUARD] == 0xA5).all() and (raw[GUARD + inner.nbytes:] == 0xA5).all(), \
            f"{name}: array argument {k} was written out of bounds"
        if orig.flags.writeable:
            orig[...] = inner


def _i32(v):
    return C.c_int(v)


def _strides(shape, out_shape):
    """Strides of a contiguous array of `shape` in the index space of `out_shape` (0 when broadcast)."""
    st = np.zeros(8, np.int64)
    s = 1
    for d, j in zip(range(len(out_shape) - 1, -1, -1), range(len(shape) - 1, -1, -1)):
        st[d] = 0 if shape[j] == 1 else s
        s *= shape[j]
    return st


POINTWISE = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "exp", "log", "sqrt", "abs", "neg", "sin",
             "cos", "copy", "clamp", "mul_scaled", "div_grad_b", "pow_grad_a", "pow_grad_b", "sqrt_grad",
             "abs_grad", "sin_grad", "cos_grad", "clamp_grad", "amax_grad", "bce_loss", "bce_grad_p", "bce_grad_t",
             "bce_logits_loss", "bce_logits_grad_x", "bce_logits_grad_t",
             "log1p", "expm1", "exp2", "log2", "log10", "square", "reciprocal", "rsqrt", "tan", "sinh", "cosh",
             "asin", "acos", "atan", "asinh", "acosh", "atanh", "erf", "erfc", "erfinv", "floor", "ceil", "trunc",
             "round", "frac", "sign", "deg2rad", "rad2deg", "sinc", "logit", "signbit", "log1p_grad", "expm1_grad",
             "exp2_grad", "log2_grad", "log10_grad", "reciprocal_grad", "rsqrt_grad", "tan_grad", "sinh_grad",
             "cosh_grad", "asin_grad", "acos_grad", "atan_grad", "asinh_grad", "acosh_grad", "atanh_grad", "erf_grad",
             "erfc_grad", "erfinv_grad", "sinc_grad", "logit_grad", "fmax", "fmin", "atan2", "hypot", "copysign",
             "remainder", "fmod", "logaddexp", "logaddexp2", "xlogy", "lerp", "mul_div", "maximum_grad",
             "minimum_grad", "fmax_grad", "fmin_grad", "atan2_grad", "copysign_grad", "remainder_grad_b",
             "fmod_grad_b", "logaddexp_grad", "logaddexp2_grad", "xlogy_grad_a", "elu_family", "elu_family_grad",
             "elu_grad_out", "softplus", "softplus_grad", "hardtanh_grad", "hardsigmoid", "hardsigmoid_grad",
             "hardswish", "hardswish_grad", "softshrink", "hardshrink", "shrink_grad", "threshold", "threshold_grad",
             "mish", "mish_grad", "logsigmoid", "logsigmoid_grad", "softsign", "softsign_grad", "tanhshrink_grad",
             "tanh", "prelu", "prelu_grad_x", "prelu_grad_w"]


def _pointwise(sim, op, inputs, out_shape, alpha=1.0):
    arrays = [np.ascontiguousarray(a, np.float32) if isinstance(a, np.ndarray) else None for a in inputs]
    arrays += [None] * (4 - len(arrays))
    scalars = np.array([np.nan if isinstance(a, np.ndarray) or a is None else a for a in inputs] +
                       [np.nan] * (4 - len(inputs)), np.float32)
    strides = np.stack([_strides(a.shape, out_shape) if a is not None else np.zeros(8, np.int64) for a in arrays])
    out = np.empty(out_shape, np.float32)
    ptrs = (P * 4)(*[_p(a) for a in arrays])
    _call(sim, "sim_pointwise", _i32(POINTWISE.index(op)), _i32(len(out_shape)),
          np.array(out_shape or [1], np.int64), strides, out, ptrs, scalars, float(alpha))
    return out


def test_pointwise_broadcasting_and_scalars(sim):
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 2, (3, 1, 5)).astype(np.float32)
    b = rng.uniform(0.5, 2, (4, 1)).astype(np.float32)
    shape = (3, 4, 5)
    for op, want in [("add", a + b), ("sub", a - b), ("mul", a * b), ("div", a / b), ("pow", a ** b),
                     ("maximum", np.maximum(a, b)), ("minimum", np.minimum(a, b))]:
        np.testing.assert_allclose(_pointwise(sim, op, [a, b], shape), np.broadcast_to(want, shape), rtol=1e-6)
    np.testing.assert_allclose(_pointwise(sim, "sub", [2.5, b], (4, 1)), 2.5 - b, rtol=1e-6)
    x = rng.uniform(-2, 2, (7, 3)).astype(np.float32)
    np.testing.assert_array_equal(_pointwise(sim, "clamp", [x, -0.5, None], (7, 3)), np.clip(x, -0.5, None))
    np.testing.assert_array_equal(_pointwise(sim, "clamp_grad", [np.ones_like(x), x, np.nan, 0.3], (7, 3)),
                                  (x <= 0.3).astype(np.float32))
    g = rng.uniform(-1, 1, (3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(_pointwise(sim, "div_grad_b", [g, a, b], shape), -g * a / (b * b), rtol=1e-6)
    np.testing.assert_allclose(_pointwise(sim, "mul_scaled", [a, g], shape, alpha=0.25), a * g * 0.25, rtol=1e-6)
    np.testing.assert_allclose(_pointwise(sim, "copy", [b], (2, 4, 3)), np.broadcast_to(b, (2, 4, 3)))


def _reduce(sim, op, x, axes, center=None, scale=1.0, sqrt=False):
    shape = x.shape
    strides = [int(np.prod(shape[d + 1:])) for d in range(len(shape))]
    keep = [d for d in range(len(shape)) if d not in axes]
    ks, kst = np.array([shape[d] for d in keep] or [1], np.int64), np.array([strides[d] for d in keep] or [1], np.int64)
    rs, rst = np.array([shape[d] for d in axes] or [1], np.int64), np.array([strides[d] for d in axes] or [1], np.int64)
    geo = (_i32(len(keep)), ks, kst, _i32(len(axes)), rs, rst)
    fn = sim.sim_reduce_workspace
    fn.restype = C.c_int64
    ws_n = fn(*[_p(g) if isinstance(g, np.ndarray) else g for g in geo])
    ws = np.empty(max(ws_n, 1), np.float32)
    out = np.empty([shape[d] for d in keep], np.float32)
    ops = ["sum", "max", "min", "sum_sq_dev", "count_eq"]
    _call(sim, "sim_reduce", _i32(ops.index(op)), *geo, x, center, out, float(scale), bool(sqrt),
          ws if ws_n else None)
    return out, ws_n


def test_reductions_over_axes_and_the_two_pass_split(sim):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (3, 5, 7)).astype(np.float32)
    for axes in [(1,), (0, 2), (0, 1, 2), (2,)]:
        got, _ = _reduce(sim, "sum", x, axes)
        np.testing.assert_allclose(got, x.sum(axis=axes), rtol=1e-5, atol=1e-6)
        got, _ = _reduce(sim, "max", x, axes)
        np.testing.assert_array_equal(got, x.max(axis=axes))
    mean = x.mean(axis=(0, 2))
    got, _ = _reduce(sim, "sum_sq_dev", x, (0, 2), center=mean, scale=1 / 20, sqrt=True)
    np.testing.assert_allclose(got, x.std(axis=(0, 2), ddof=1), rtol=1e-5)
    big = rng.uniform(-1, 1, 40_000).astype(np.float32)  # one output, 40000 elements: 3 slices
    got, ws = _reduce(sim, "sum", big, (0,))
    assert ws == 3
    np.testing.assert_allclose(got, big.sum(dtype=np.float64), rtol=1e-5)
    got2, _ = _reduce(sim, "sum", big, (0,))
    assert got.tobytes() == got2.tobytes()


def test_arg_reduce_first_winner_and_nan(sim):
    x = np.array([[1, 3, 3, 0], [2, np.nan, 5, np.nan], [-1, -1, -4, -4]], np.float32)
    idx, vals = np.empty(3, np.int64), np.empty(3, np.float32)
    geo = (_i32(1), np.array([3], np.int64), np.array([4], np.int64), _i32(1), np.array([4], np.int64),
           np.array([1], np.int64))
    _call(sim, "sim_arg_reduce", True, *geo, x, idx, vals)
    np.testing.assert_array_equal(idx, np.argmax(x, axis=1))
    _call(sim, "sim_arg_reduce", False, *geo, x, idx, vals)
    np.testing.assert_array_equal(idx, np.argmin(x, axis=1))


def test_softmax_any_axis_and_backward(sim):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 37, 3)).astype(np.float32)  # axis 1: outer 4, n 37, inner 3
    g = rng.standard_normal(x.shape).astype(np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    for log in (False, True):
        y = np.empty_like(x)
        _call(sim, "sim_softmax_forward", log, x, y, 4, 37, 3)
        np.testing.assert_allclose(y, np.log(want) if log else want, rtol=1e-5, atol=1e-6)
        gx = np.empty_like(x)
        _call(sim, "sim_softmax_backward", log, y, g, gx, 4, 37, 3)
        ref = g - want * g.sum(axis=1, keepdims=True) if log else want * (g - (g * want).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(gx, ref, rtol=1e-4, atol=1e-6)


def test_cross_entropy_and_nll_match_torch(sim):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    N, Cn, d = 3, 11, 5  # (N, C, d): rows (n, i) with classes 5 apart
    z = (rng.standard_normal((N, Cn, d)) * 30).astype(np.float32)  # large logits: the smoothing term's precision
    t = rng.integers(0, Cn, (N, d)).astype(np.int64)
    t[0, 1] = -100
    w = rng.uniform(0.5, 2, Cn).astype(np.float32)
    tz = torch.from_numpy(z).requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(tz, torch.from_numpy(t), weight=torch.from_numpy(w),
                                            reduction="none", label_smoothing=0.2)
    prob, per, wy = np.empty_like(z), np.empty((N, d), np.float32), np.empty((N, d), np.float32)
    _call(sim, "sim_cross_entropy_forward", z, t, w, prob, per, wy, N, Cn, d, -100, 0.2)
    np.testing.assert_allclose(per, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal((N, d)).astype(np.float32)
    ref.backward(torch.from_numpy(g))
    grad = np.empty_like(z)
    _call(sim, "sim_cross_entropy_backward", prob, t, w, g, 1, None, grad, N, Cn, d, -100, 0.2)
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-4, atol=1e-6)
    lp = torch.log_softmax(torch.from_numpy(z), 1).numpy()
    _call(sim, "sim_nll_forward", lp, t, w, per, wy, N, Cn, d, -100)
    ref = torch.nn.functional.nll_loss(torch.from_numpy(lp), torch.from_numpy(t), weight=torch.from_numpy(w),
                                       reduction="none")
    np.testing.assert_allclose(per, ref.numpy(), rtol=1e-6)
    bad = t.copy()
    bad[1, 2] = Cn  # out of range: NaN, the kernel cannot raise
    _call(sim, "sim_cross_entropy_forward", z, bad, w, prob, per, wy, N, Cn, d, -100, 0.0)
    assert np.isnan(per[1, 2]) and np.isfinite(np.delete(per.ravel(), 1 * d + 2)).all()


def test_layer_and_rms_norm_forward_backward(sim):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    rows, D = 150, 37  # 3 row slices of 64 for the column sums
    x = rng.standard_normal((rows, D)).astype(np.float32)
    w, b = rng.standard_normal(D).astype(np.float32), rng.standard_normal(D).astype(np.float32)
    g = rng.standard_normal((rows, D)).astype(np.float32)
    for rms in (False, True):
        tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b))
        if rms:
            ref = torch.nn.functional.rms_norm(tx, (D,), tw, 1e-5)
        else:
            ref = torch.nn.functional.layer_norm(tx, (D,), tw, tb, 1e-5)
        ref.backward(torch.from_numpy(g))
        y, mean, rstd = np.empty_like(x), np.empty(rows, np.float32), np.empty(rows, np.float32)
        _call(sim, "sim_layer_norm_forward", rms, x, w, None if rms else b, 1e-5, y, None if rms else mean, rstd,
              rows, D)
        np.testing.assert_allclose(y, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
        fn = sim.sim_layer_norm_workspace
        fn.restype = C.c_int64
        ws = np.empty(fn(C.c_int64(rows), C.c_int64(D)), np.float32)
        gx, gw, gb = np.empty_like(x), np.empty(D, np.float32), np.empty(D, np.float32)
        _call(sim, "sim_layer_norm_backward", rms, g, x, None if rms else mean, rstd, w, gx, gw, None if rms else gb,
              rows, D, ws)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-4, atol=1e-4)
        if not rms:
            np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_batch_norm_training_and_eval(sim):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    N, Cn, H = 4, 3, 9
    x = rng.standard_normal((N, Cn, H)).astype(np.float32)
    w, b = rng.standard_normal(Cn).astype(np.float32), rng.standard_normal(Cn).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    for training in (True, False):
        rm, rv = rng.standard_normal(Cn).astype(np.float32), rng.uniform(0.5, 2, Cn).astype(np.float32)
        trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
        tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b))
        ref = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training, 0.1, 1e-5)
        ref.backward(torch.from_numpy(g))
        y, mean, invstd = np.empty_like(x), np.empty(Cn, np.float32), np.empty(Cn, np.float32)
        _call(sim, "sim_batch_norm_forward", x, w, b, rm, rv, training, 0.1, 1e-5, y, mean, invstd, N, Cn, H)
        np.testing.assert_allclose(y, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-5, atol=1e-6)
        gx, gw, gb = np.empty_like(x), np.empty(Cn, np.float32), np.empty(Cn, np.float32)
        _call(sim, "sim_batch_norm_backward", g, x, w, mean, invstd, training, gx, gw, gb, N, Cn, H)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("D,Dv,L,S,causal,masked", [(8, 5, 19, 37, False, True), (40, 64, 21, 21, True, False),
                                                     (100, 33, 17, 9, False, False)],
                         ids=["mask-D8", "causal-D40-Dv64", "D100-S<L"])
def test_attention_forward_backward(sim, D, Dv, L, S, causal, masked):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    B = 2
    q, k = rng.standard_normal((B, L, D)).astype(np.float32), rng.standard_normal((B, S, D)).astype(np.float32)
    v, g = rng.standard_normal((B, S, Dv)).astype(np.float32), rng.standard_normal((B, L, Dv)).astype(np.float32)
    mask = None
    if masked:  # one mask for both batches, a fully masked row (output 0, as torch)
        mask = np.where(rng.random((1, L, S)) < 0.3, -np.inf, rng.standard_normal((1, L, S))).astype(np.float32)
        mask[0, 3] = -np.inf
    scale = 0.7
    tq, tk, tv = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (q, k, v))
    tm = None if mask is None else torch.from_numpy(mask.copy()).requires_grad_(True)
    ref = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=causal, scale=scale)
    ref = torch.nan_to_num(ref, nan=0.0)
    ref.backward(torch.from_numpy(g))
    out, lse = np.empty((B, L, Dv), np.float32), np.empty((B, L), np.float32)
    _call(sim, "sim_attention_forward", q, k, v, mask, 0, out, lse, B, L, S, D, Dv, scale, causal)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    gq, gk, gv, ws = (np.empty_like(q), np.empty_like(k), np.empty_like(v), np.empty(B * L, np.float32))
    _call(sim, "sim_attention_backward", q, k, v, mask, 0, out, lse, g, gq, gk, gv, B, L, S, D, Dv, scale, causal, ws)
    for got, want in ((gq, tq.grad), (gk, tk.grad), (gv, tv.grad)):
        np.testing.assert_allclose(got, np.nan_to_num(want.numpy()), rtol=1e-4, atol=1e-5)
    if mask is not None:  # the mask's gradient: the score gradient summed over the batch it broadcasts over
        ds = np.empty((B, L, S), np.float32)
        _call(sim, "sim_attention_mask_grad", q, k, v, mask, 0, out, lse, g, ds, B, L, S, D, Dv, scale, causal)
        np.testing.assert_allclose(ds.sum(axis=0, keepdims=True), np.nan_to_num(tm.grad.numpy()), rtol=1e-4,
                                   atol=1e-5)


def test_embedding_backward_sums_rows_in_order(sim):
    rng = np.random.default_rng(7)
    V, D, n = 9, 300, 1500  # D over 4 * 128 columns: two column passes; n over one 1024-index stage
    idx = rng.integers(0, V, n).astype(np.int64)
    g = rng.standard_normal((n, D)).astype(np.float32)
    gw, ws = np.empty((V, D), np.float32), np.empty(V, np.int32)
    _call(sim, "sim_embedding_backward", g, idx, gw, n, V, D, 4, ws)
    want = np.zeros((V, D), np.float32)
    for i in range(n):  # ascending position, float32: the kernel's order exactly
        want[idx[i]] += g[i]
    want[4] = 0
    np.testing.assert_array_equal(gw, want)
    w = rng.standard_normal((V, D)).astype(np.float32)
    few = np.ascontiguousarray(idx[:7])  # (a simulated thread per output element: keep it small)
    out = np.empty((7, D), np.float32)
    _call(sim, "sim_embedding_forward", w, few, out, 7, V, D)
    np.testing.assert_array_equal(out, w[few])


def test_compare_where_scatter_and_nll_backward(sim):
    rng = np.random.default_rng(8)
    a = rng.integers(0, 3, (4, 5)).astype(np.float32)
    b = rng.integers(0, 3, (5,)).astype(np.float32)
    strides = np.stack([_strides(a.shape, (4, 5)), _strides(b.shape, (4, 5)), np.zeros(8, np.int64),
                        np.zeros(8, np.int64)])
    shape = np.array([4, 5], np.int64)
    for k, fn in enumerate([np.less, np.less_equal, np.greater, np.greater_equal, np.equal, np.not_equal]):
        out = np.empty((4, 5), np.bool_)
        _call(sim, "sim_compare", _i32(k), _i32(2), shape, strides, out, a, b, float("nan"), float("nan"))
        np.testing.assert_array_equal(out, fn(a, b))
    cond = a > 1
    w_strides = np.stack([_strides(cond.shape, (4, 5)), _strides(b.shape, (4, 5)), np.zeros(8, np.int64),
                          np.zeros(8, np.int64)])
    out = np.empty((4, 5), np.float32)
    _call(sim, "sim_where", _i32(2), shape, w_strides, out, cond, b, None, float("nan"), -1.5)
    np.testing.assert_array_equal(out, np.where(cond, b, -1.5))
    g = rng.standard_normal((3, 2)).astype(np.float32)  # scatter into [3, 4, 2] along axis 1
    idx = rng.integers(0, 4, (3, 2)).astype(np.int64)
    out = np.empty((3, 4, 2), np.float32)
    _call(sim, "sim_scatter_axis", g, idx, out, 3, 4, 2)
    want = np.zeros((3, 4, 2), np.float32)
    np.put_along_axis(want, idx[:, None, :], g[:, None, :], axis=1)
    np.testing.assert_array_equal(out, want)
    t = np.array([2, -100, 0, 4], np.int64)  # nll over (4, 5), mean: a = g / denom
    wts = rng.uniform(0.5, 2, 5).astype(np.float32)
    gs, denom = np.array([0.5], np.float32), np.array([3.0], np.float32)
    grad = np.empty((4, 5), np.float32)
    _call(sim, "sim_nll_backward", t, wts, gs, 0, denom, grad, 4, 5, 1, -100)
    want = np.zeros((4, 5), np.float32)
    for r, c in enumerate(t):
        if c != -100:
            want[r, c] = -wts[c] * 0.5 / 3.0
    np.testing.assert_allclose(grad, want, rtol=1e-6)


def test_binary_cross_entropy_kernels_match_torch(sim):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    shape = (5, 7)
    x = (rng.standard_normal(shape) * 20).astype(np.float32)  # large |x|: no overflow on either side
    p = rng.uniform(0, 1, shape).astype(np.float32)
    p[0, 0], p[0, 1] = 0.0, 1.0  # log terms clamped at -100
    t = rng.uniform(0, 1, shape).astype(np.float32)
    w = rng.uniform(0.5, 2, (7,)).astype(np.float32)
    pw = rng.uniform(0.5, 3, (7,)).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    tx, tp, tt = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, p, t))
    F = torch.nn.functional
    ref = F.binary_cross_entropy_with_logits(tx, tt, weight=torch.from_numpy(w), pos_weight=torch.from_numpy(pw),
                                             reduction="none")
    ref.backward(torch.from_numpy(g))
    got = _pointwise(sim, "bce_logits_loss", [x, t, w, pw], shape)
    np.testing.assert_allclose(got, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    gx = _pointwise(sim, "mul", [_pointwise(sim, "bce_logits_grad_x", [x, t, pw, g], shape), w], shape)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    gt = _pointwise(sim, "mul", [_pointwise(sim, "bce_logits_grad_t", [x, pw, g], shape), w], shape)
    np.testing.assert_allclose(gt, tt.grad.numpy(), rtol=1e-5, atol=1e-5)
    tt.grad = None
    ref = F.binary_cross_entropy(tp, tt, weight=torch.from_numpy(w), reduction="none")
    ref.backward(torch.from_numpy(g))
    np.testing.assert_allclose(_pointwise(sim, "bce_loss", [p, t, w], shape), ref.detach().numpy(), rtol=1e-5)
    gp = _pointwise(sim, "mul", [_pointwise(sim, "bce_grad_p", [p, t, g], shape), w], shape)
    interior = (p > 0) & (p < 1)  # torch's gradient at p = 0 / 1 uses its own eps clamp
    np.testing.assert_allclose(gp[interior], tp.grad.numpy()[interior], rtol=1e-4, atol=1e-5)
    gt = _pointwise(sim, "mul", [_pointwise(sim, "bce_grad_t", [p, g], shape), w], shape)
    # torch's -logit(p), unclamped: +-inf at p = 0 / 1
    np.testing.assert_allclose(gt, tt.grad.numpy(), rtol=1e-5, atol=1e-4)
    assert np.isinf(gt[0, :2]).all()


def test_integer_sums_and_int64_comparisons_are_exact(sim):
    rng = np.random.default_rng(10)
    ops = ["sum", "max", "min"]
    for dtype, is_bool in ((np.int64, False), (np.bool_, True)):
        x = (rng.integers(-2**40, 2**40, (3, 40_000)) if not is_bool else rng.random((3, 40_000)) > 0.5).astype(dtype)
        for op in (["sum"] if is_bool else ops):
            geo = (_i32(1), np.array([3], np.int64), np.array([40_000], np.int64), _i32(1),
                   np.array([40_000], np.int64), np.array([1], np.int64))
            out, ws = np.empty(3, np.int64), np.empty(3 * 3, np.int64)  # 3 outputs x 3 slices
            _call(sim, "sim_reduce_int", _i32(ops.index(op)), *geo, x, is_bool, out, ws)
            want = {"sum": x.sum(axis=1, dtype=np.int64), "max": x.max(axis=1), "min": x.min(axis=1)}[op]
            np.testing.assert_array_equal(out, want)
    a = np.array([[2**53 + 1, 5, -7]], np.int64)  # not representable in float32 / float64: exact compare
    b = np.array([[2**53, 5, -8]], np.int64)
    strides = np.stack([_strides(a.shape, (1, 3)), _strides(b.shape, (1, 3)), np.zeros(8, np.int64),
                        np.zeros(8, np.int64)])
    for k, fn in enumerate([np.less, np.less_equal, np.greater, np.greater_equal, np.equal, np.not_equal]):
        out = np.empty((1, 3), np.bool_)
        _call(sim, "sim_compare_i64", _i32(k), _i32(2), np.array([1, 3], np.int64), strides, out, a, b, 0, 0)
        np.testing.assert_array_equal(out, fn(a, b))
