"""bfloat16 linear on _C.bf16.linear (one C++ call, the float32 result rounded once) and, with a graph, as one node
(ops/_bf16_linear.py). On _C.bf16's float32 GEMM path (operands widened as read; pinned here by the float32_gemm
fixture, the only path of a CPU without AVX512_BF16): the same bits as the generic bfloat16 path (casts to float32,
the float32 linear, the result rounded) in values and gradients, for bfloat16 models and under autocast, at odd
shapes. On either path: within bfloat16's tolerance of torch; double backward; the binding's argument checks. (The
vdpbf16ps path's own contract, against torch and across thread counts: test_bf16_gemm.py.)"""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad import _op_dispatch

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F = fg.nn.functional


@pytest.fixture
def generic_path(monkeypatch):
    """Runs the block with the fused path off: the generic bfloat16 path, the reference of its bits."""
    def use():
        monkeypatch.setattr(_op_dispatch, "_bf16_linear", lambda args, kwargs, state: None)
    return use


@pytest.fixture
def float32_gemm():
    """The float32 GEMM path (what a CPU without AVX512_BF16 runs): the generic path's arithmetic, so its bits."""
    _C.bf16.set_gemm_native(False)
    yield
    _C.bf16.set_gemm_native(True)


def _bits(t):
    return t._data.view(np.uint16).copy()


def _bf16(rng, *shape, scale=1.0):
    return fg.tensor((rng.standard_normal(shape) * scale).astype(np.float32)).to(fg.bfloat16)


@pytest.mark.parametrize("x_shape,n", [((1, 7), 5), ((3, 64), 129), ((8, 33), 17), ((9, 33), 17), ((37, 515), 40),
                                       ((2, 150, 96), 70), ((96,), 3), ((0, 4), 6), ((4, 0), 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_is_the_generic_paths_bits(rng, float32_gemm, x_shape, n, bias):
    x, w = _bf16(rng, *x_shape), _bf16(rng, n, x_shape[-1])
    b = _bf16(rng, n) if bias else None
    y = F.linear(x, w, b)
    assert y.dtype == fg.bfloat16 and tuple(y.shape) == x_shape[:-1] + (n,)
    # the generic path's arithmetic: the float32 Linear of the widened operands, rounded once
    want = _C.gemm.linear(x._data.astype(np.float32), w._data.astype(np.float32),
                          None if b is None else b._data.astype(np.float32)).astype(BF16)
    np.testing.assert_array_equal(_bits(y), want.view(np.uint16))
    tx, tw = (torch.from_numpy(t.float().numpy()).bfloat16() for t in (x, w))
    ty = torch.nn.functional.linear(tx, tw, None if b is None else torch.from_numpy(b.float().numpy()).bfloat16())
    np.testing.assert_allclose(y.float().numpy(), ty.float().numpy(), rtol=2 ** -6, atol=2 ** -6 * (x_shape[-1] ** .5))


def _mlp_run(rng_seed, autocast, threads=None):
    rng = np.random.default_rng(rng_seed)
    fg.manual_seed(0)
    model = fg.nn.Sequential(fg.nn.Linear(33, 40), fg.nn.ReLU(), fg.nn.Linear(40, 7))
    x = fg.tensor(rng.standard_normal((19, 33)).astype(np.float32))
    y = fg.tensor(rng.integers(0, 7, 19))
    if not autocast:
        model, x = model.to(fg.bfloat16), x.to(fg.bfloat16)
    with fg.autocast("cpu", enabled=autocast):
        out = model(x)
    loss = F.cross_entropy(out.float(), y)
    loss.backward()
    return [_bits(out)] + [p.grad._data.view(np.uint16 if p.grad.dtype == fg.bfloat16 else np.uint32).copy()
                           for p in model.parameters()]


@pytest.mark.parametrize("autocast", [False, True])
def test_training_step_is_the_generic_paths_bits(float32_gemm, generic_path, autocast):
    fused = _mlp_run(3, autocast)
    generic_path()
    generic = _mlp_run(3, autocast)
    assert len(fused) == len(generic) == 5
    for a, b in zip(fused, generic):
        np.testing.assert_array_equal(a, b)


def test_one_node_per_linear_and_bfloat16_gradients(rng, float32_gemm):
    x = _bf16(rng, 5, 6).requires_grad_()
    w = _bf16(rng, 4, 6).requires_grad_()
    b = _bf16(rng, 4).requires_grad_()
    y = F.linear(x, w, b)
    assert type(y._ctx).__name__ == "Bf16LinearFunction"
    g = rng.standard_normal((5, 4)).astype(np.float32)
    (y.float() * fg.tensor(g)).sum().backward()
    g16 = g.astype(BF16).astype(np.float32)
    gx, gw, gb = _C.gemm.linear_backward(g16, x._data.astype(np.float32), w._data.astype(np.float32), True, True,
                                         True)
    for got, want in ((x.grad, gx), (w.grad, gw), (b.grad, gb)):
        assert got.dtype == fg.bfloat16
        np.testing.assert_array_equal(_bits(got), want.astype(BF16).view(np.uint16))
    # only the asked-for gradients: a frozen weight is not saved, a leaf input gets none
    w2 = _bf16(rng, 4, 6).requires_grad_()
    z = F.linear(_bf16(rng, 5, 6), w2)
    z.float().sum().backward()
    assert w2.grad is not None and w2.grad.dtype == fg.bfloat16


def test_double_backward_matches_the_generic_path(rng, generic_path):
    def run():
        x = fg.tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)).to(fg.bfloat16).requires_grad_()
        w = fg.tensor(np.linspace(-0.5, 0.7, 20, dtype=np.float32).reshape(5, 4)).to(fg.bfloat16).requires_grad_()
        y = F.linear(x, w)
        (gx,) = fg.autograd.grad((y.float() ** 2).sum(), [x], create_graph=True)
        gx.float().sum().backward()
        return gx.float().numpy(), w.grad.float().numpy()
    fused = run()
    generic_path()
    generic = run()
    for a, b in zip(fused, generic):
        np.testing.assert_allclose(a, b, rtol=2 ** -6, atol=1e-2)


def test_shapes_the_path_refuses_keep_the_generic_errors(rng):
    with pytest.raises((RuntimeError, ValueError)):
        F.linear(_bf16(rng, 3, 4), _bf16(rng, 5, 6))
    with pytest.raises((RuntimeError, ValueError)):
        F.linear(_bf16(rng, 3, 4), _bf16(rng, 5, 4), _bf16(rng, 6))
    with pytest.raises(RuntimeError, match="same dtype"):
        F.linear(_bf16(rng, 3, 4), fg.ones(5, 4))


def test_binding_refuses_bad_arguments():
    x = np.zeros((3, 4), np.uint16)
    w = np.zeros((5, 4), np.uint16)
    bad = [
        (lambda: _C.bf16.linear(x.astype(np.float32), w, None), TypeError, "x must be a bfloat16 or uint16"),
        (lambda: _C.bf16.linear(x, w.astype(np.int16), None), TypeError, "w must be a bfloat16 or uint16"),
        (lambda: _C.bf16.linear(x[0], w, None), ValueError, "x must be a 2-D C-contiguous"),
        (lambda: _C.bf16.linear(x, w.T, None), ValueError, "w must be a 2-D C-contiguous"),
        (lambda: _C.bf16.linear(x, np.zeros((5, 3), np.uint16), None), ValueError, "w must have shape"),
        (lambda: _C.bf16.linear(x, w, np.zeros(4, np.uint16)), ValueError, "bias must have w's 5 rows"),
        (lambda: _C.bf16.linear(x, w, np.zeros(5, np.float32)), TypeError, "bias must be a bfloat16"),
        (lambda: _C.bf16.linear(x, w, [0.0] * 5), TypeError, "bias must be a numpy array"),
    ]
    for call, exc, match in bad:
        with pytest.raises(exc, match=match):
            call()
    out = _C.bf16.linear(x.view(BF16), w.view(BF16), None)
    assert out.dtype == np.uint16 and out.shape == (3, 5)
