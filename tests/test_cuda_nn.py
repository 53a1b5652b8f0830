"""The CUDA kernels of norms, softmax, losses, reductions, elementwise math, attention and embedding
(cuda/{binary,reduce,softmax_loss,norm,attention,embedding}.cu through forgegrad._C.cuda_nn and the
ops' cuda Functions).

On a GPU: every op with a cuda Function runs each of its registry samples (odd shapes, broadcasting,
masks, ignore_index, label smoothing, ...) on the cuda device, forward and backward, and must equal the
CPU run within 1e-5 relative (or the op's own tolerance where that is looser); the kernels that claim
deterministic results give identical bits on a second run. Without a GPU those tests skip with the
reason; what runs everywhere is the registration check (each op has its cuda Function, the binding
module has its entry points in a CUDA build).
"""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C

# The ops whose cuda Functions this file covers (ops/{elementwise,reduce,stats,loss,normalization,
# attention,rnn,_cuda_math}.py register them).
CUDA_OPS = ["add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "abs", "sin", "cos", "clamp", "where",
            "compare", "sum", "mean", "amax", "amin", "max_dim", "min_dim", "argmax", "argmin", "var", "std",
            "softmax", "log_softmax", "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
            "binary_cross_entropy_with_logits", "kl_div", "layer_norm", "rms_norm",
            "batch_norm", "scaled_dot_product_attention", "embedding",
            # ops/_cuda_math.py: pointwise math, predicates and activations
            "log1p", "expm1", "exp2", "log2", "log10", "square", "reciprocal", "rsqrt", "tan", "sinh", "cosh", "asin",
            "acos", "atan", "asinh", "acosh", "atanh", "erf", "erfc", "erfinv", "floor", "ceil", "trunc", "round",
            "frac", "sign", "sgn", "deg2rad", "rad2deg", "sinc", "logit", "isnan", "isinf", "isfinite", "isposinf",
            "isneginf", "signbit", "maximum", "minimum", "fmax", "fmin", "atan2", "hypot", "copysign", "remainder",
            "fmod", "logaddexp", "logaddexp2", "xlogy", "lerp", "elu", "celu", "selu", "softplus", "mish", "hardtanh",
            "hardsigmoid", "hardswish", "softsign", "softshrink", "hardshrink", "tanhshrink", "threshold", "logsigmoid",
            "prelu", "glu"]

BINDINGS = ["pointwise", "compare", "where", "reduce", "sum_to", "arg_reduce", "scatter_axis", "softmax",
            "softmax_backward", "cross_entropy_forward", "cross_entropy_backward", "nll_forward", "nll_backward",
            "batch_norm_forward", "batch_norm_backward", "layer_norm_forward", "layer_norm_backward",
            "attention_forward", "attention_backward", "attention_mask_grad", "embedding_forward", "embedding_backward"]


def _gpu():
    from forgegrad import cuda
    return cuda.is_available()


def _no_gpu_reason():
    from forgegrad import cuda
    return f"needs a CUDA GPU: {cuda.unavailable_reason() or 'not available'}"


needs_gpu = pytest.mark.skipif(not _gpu(), reason=_no_gpu_reason())


def _ops():
    by_name = {op.name: op for op in fg.ops.all_ops()}
    return [by_name[n] for n in CUDA_OPS]


def cuda_samples(op):
    """op's registry samples: its cuda Function runs them all (soft-capped attention and
    scale_grad_by_freq included)."""
    return op.samples()


# ---- everywhere -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CUDA_OPS)
def test_op_has_a_cuda_function(name):
    op = {o.name: o for o in fg.ops.all_ops()}[name]
    fn = op.functions.get("cuda")
    assert fn is not None, f"{name}: no cuda Function registered"
    assert fn.op is op
    assert callable(fn.forward) and callable(fn.backward)


@pytest.mark.skipif(not _C.cuda.built, reason="forgegrad was built without CUDA (no nvcc at build time)")
def test_cuda_build_binds_every_kernel():
    missing = [n for n in BINDINGS if not hasattr(_C.cuda_nn, n)]
    assert not missing, f"_C.cuda_nn lacks {missing}"


# ---- on a GPU ------------------------------------------------------------------------------------------
def _run(op, sample, device):
    """Forward values and the gradients of the sample's float inputs (a fixed cotangent), as numpy.
    Seeded first: ops that draw (dropout) draw the same numbers on both devices."""
    fg.manual_seed(0)
    positions = sample.grad_positions()
    args = []
    for i, a in enumerate(sample.args):
        if isinstance(a, np.ndarray):
            t = fg.tensor(a.copy()).to(device)
            if i in positions:
                t.requires_grad_(True)
            args.append(t)
        else:
            args.append(a)
    outs = op(*args, **sample.kwargs)
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    values = [o.cpu().numpy().copy() for o in outs]
    rng = np.random.default_rng(7)
    total = None
    for o, v in zip(outs, values):
        if v.dtype.kind == "f" and o.requires_grad:
            c = fg.tensor(rng.uniform(-1, 1, size=v.shape).astype(np.float32)).to(device)
            term = (o * c).sum()
            total = term if total is None else total + term
    if total is not None:
        total.backward()
    grads = []
    for p in positions:
        g = args[p].grad
        grads.append(np.zeros(sample.args[p].shape, np.float32) if g is None else g.cpu().numpy().copy())
    return values, grads


def _close(got, want, op, what):
    rtol = max(1e-5, op.tol[0])
    atol = max(1e-6, op.tol[1])
    assert len(got) == len(want), f"{op.name}: {what}: {len(got)} values, the CPU gives {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, \
            f"{op.name}: {what} {k}: {g.shape} {g.dtype}, the CPU gives {w.shape} {w.dtype}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{op.name}: {what} {k}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{op.name}: {what} {k}")


@needs_gpu
@pytest.mark.parametrize("op", _ops(), ids=lambda op: op.name)
def test_cuda_matches_cpu(op):
    for sample in cuda_samples(op):
        want_v, want_g = _run(op, sample, "cpu")
        got_v, got_g = _run(op, sample, "cuda")
        _close(got_v, want_v, op, f"sample {sample.name!r} output")
        _close(got_g, want_g, op, f"sample {sample.name!r} gradient")


@needs_gpu
@pytest.mark.parametrize("name", ["sum", "mean", "var", "softmax", "cross_entropy", "layer_norm", "batch_norm",
                                  "scaled_dot_product_attention", "embedding"])
def test_cuda_results_repeat_bit_for_bit(name):
    op = {o.name: o for o in fg.ops.all_ops()}[name]
    for sample in cuda_samples(op):
        v1, g1 = _run(op, sample, "cuda")
        v2, g2 = _run(op, sample, "cuda")
        for a, b in zip(v1 + g1, v2 + g2):
            assert a.tobytes() == b.tobytes(), f"{name}: sample {sample.name!r} differs between two runs"


def _dev(a):
    from forgegrad import cuda
    return cuda.to_device(a) if a.dtype == np.float32 else _C.cuda.DeviceArray.from_numpy(a)


@needs_gpu
def test_large_reductions_split_and_match():
    # 3 * 100_003 elements over one output: the two-pass (sliced) reduction path
    x = np.random.default_rng(0).uniform(-1, 1, size=(3, 100_003)).astype(np.float32)
    got = _C.cuda_nn.reduce("sum", _dev(x)).numpy()
    np.testing.assert_allclose(got, x.sum(dtype=np.float64), rtol=1e-5)
    got = _C.cuda_nn.reduce("max", _dev(x), [1]).numpy()
    np.testing.assert_array_equal(got, x.max(axis=1))


@needs_gpu
def test_attention_head_dims_and_long_rows():
    # head dims 1..128 on each template instance, L and S past one tile, causal with L != S
    rng = np.random.default_rng(1)
    for d, dv, L, S, causal in [(1, 3, 5, 7, False), (33, 64, 40, 70, True), (128, 128, 17, 33, False),
                                (100, 20, 65, 65, True)]:
        q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, L, d), (2, S, d), (2, S, dv)))
        g = rng.standard_normal((2, L, dv)).astype(np.float32)
        tq, tk, tv = (fg.tensor(a, requires_grad=True) for a in (q, k, v))
        out = fg.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
        (out * fg.tensor(g)).sum().backward()
        cq, ck, cv = (fg.tensor(a).to("cuda").requires_grad_(True) for a in (q, k, v))
        cout = fg.nn.functional.scaled_dot_product_attention(cq, ck, cv, is_causal=causal)
        (cout * fg.tensor(g).to("cuda")).sum().backward()
        np.testing.assert_allclose(cout.cpu().numpy(), out.numpy(), rtol=1e-5, atol=1e-6)
        for c, t in ((cq, tq), (ck, tk), (cv, tv)):
            np.testing.assert_allclose(c.grad.cpu().numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5)


@needs_gpu
def test_bad_arguments_raise_value_errors():
    x = _dev(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="broadcast"):
        _C.cuda_nn.pointwise("add", [x, _dev(np.zeros((5, 4), np.float32))])
    with pytest.raises(ValueError, match="unknown op"):
        _C.cuda_nn.pointwise("frobnicate", [x])
    with pytest.raises(TypeError, match="target must be int64"):
        _C.cuda_nn.cross_entropy_forward(x, _dev(np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="head dimensions"):
        q = _dev(np.zeros((1, 2, 129), np.float32))
        _C.cuda_nn.attention_forward(q, q, q, None, 1.0, False)
    with pytest.raises(IndexError, match="axis"):
        _C.cuda_nn.softmax(x, 2)


@needs_gpu
def test_accuracy_style_int64_compare_and_bool_sum():
    # (pred.argmax(1) == y).sum(): int64 compare and an exact bool sum, as a training loop counts hits
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((37, 10)).astype(np.float32)
    y = rng.integers(0, 10, 37).astype(np.int64)
    want = (logits.argmax(1) == y).sum()
    hits = (fg.tensor(logits).to("cuda").argmax(1) == fg.tensor(y).to("cuda")).sum()
    got = hits.cpu().numpy()
    assert got.dtype == np.int64 and got == want
