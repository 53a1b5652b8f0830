"""Linear's backward in one C++ call (_C.gemm.linear_backward): gx = g W, gw = g^T x and the bias
gradient, the column sums of g taken while the gw product packs g (no pass of its own over g). Checked
bit for bit against the separate kernels (matmul, column_sums) on every GEMM path (packed, direct,
skinny), at 1-3 threads and on every ISA, and nn.Linear's gradients against torch."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels import matmul
from forgegrad.kernels.activation import column_sums

torch = pytest.importorskip("torch")

# (rows, in, out): the packed path on both products, a small one (direct tiles; the sums as a pass), a
# skinny gw (out <= 8), a thin gx (in <= 16), several KC slices (rows > 320) with uneven row panels
SHAPES = [(300, 80, 96), (40, 24, 20), (64, 48, 6), (70, 12, 40), (700, 33, 45)]


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _bits(a, b):
    return a.tobytes() == b.tobytes()


def _separate(g, x, w):
    g2, x2 = g.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1])
    return matmul(g2, w).reshape(x.shape), matmul(g2, x2, trans_a=True), column_sums(g2)


def _case(shape, seed=0):
    rows, n_in, n_out = shape
    return (_rand(2, rows // 2, n_out, seed=seed + 2), _rand(2, rows // 2, n_in, seed=seed),
            _rand(n_out, n_in, seed=seed + 1))


@pytest.mark.parametrize("shape", SHAPES)
def test_same_bits_as_the_separate_kernels(shape):
    g, x, w = _case(shape)
    assert all(_bits(a, b) for a, b in zip(_C.gemm.linear_backward(g, x, w), _separate(g, x, w)))
    gx, gw, gb = _C.gemm.linear_backward(g, x, w, False, False, True)  # the bias alone: column_sums
    assert gx is None and gw is None and _bits(gb, column_sums(g.reshape(-1, shape[2])))
    gx, gw, gb = _C.gemm.linear_backward(g, x, w, True, True, False)
    assert gb is None and _bits(gw, _separate(g, x, w)[1])
    # a transposed weight view and non-contiguous inputs are read as they are (or copied once)
    got = _C.gemm.linear_backward(np.asfortranarray(g), x[:, ::1], np.asfortranarray(w))
    assert all(_bits(a, b) for a, b in zip(got, _separate(g, x, w)))


def test_empty_and_zero_rows():
    w = _rand(5, 3)
    gx, gw, gb = _C.gemm.linear_backward(np.zeros((0, 5), np.float32), np.zeros((0, 3), np.float32), w)
    assert gx.shape == (0, 3) and not gw.any() and gw.shape == (5, 3) and not gb.any() and gb.shape == (5,)


@pytest.mark.parametrize("shape", [(1000, 72, 136), (1000, 512, 24)])  # threads split gw's rows / its columns
def test_bits_any_thread_count_and_isa(shape):
    g, x, w = _case(shape, seed=3)
    ref = _C.gemm.linear_backward(g, x, w)
    before = fg.get_num_threads()
    try:
        for n in (1, 2, 3):
            fg.set_num_threads(n)
            assert all(_bits(a, b) for a, b in zip(_C.gemm.linear_backward(g, x, w), ref)), n
    finally:
        fg.set_num_threads(before)
    isa = fg.get_simd()
    try:
        paths = ("scalar", "avx2", "avx512")
        for path in paths[:paths.index(fg.cpu_info()["detected_isa"]) + 1]:
            fg.set_simd(path)
            got = _C.gemm.linear_backward(g, x, w)
            assert all(_bits(a, b) for a, b in zip(got, _separate(g, x, w))), path
            for a, b in zip(got, ref):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3, err_msg=path)
    finally:
        fg.set_simd(isa)


def test_bad_arguments():
    x, w = _rand(4, 3), _rand(5, 3)
    with pytest.raises(TypeError, match="grad must be float32"):
        _C.gemm.linear_backward(np.zeros((4, 5)), x, w)
    with pytest.raises(ValueError, match="grad has shape"):
        _C.gemm.linear_backward(_rand(4, 4), x, w)
    with pytest.raises(ValueError, match="rows"):
        _C.gemm.linear_backward(_rand(3, 5), x, w)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        _C.gemm.linear_backward([[1.0]], x, w)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_module_gradients_match_torch(bias):
    x, g = _rand(3, 50, 40), _rand(3, 50, 24, seed=5)
    lin = fg.nn.Linear(40, 24, bias=bias)
    xt = fg.tensor(x.copy(), requires_grad=True)
    lin(xt).backward(fg.tensor(g))
    tl = torch.nn.Linear(40, 24, bias=bias)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(lin.weight.numpy()))
        if bias:
            tl.bias.copy_(torch.from_numpy(lin.bias.numpy()))
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tl(tx).backward(torch.from_numpy(g))
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(lin.weight.grad.numpy(), tl.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    if bias:
        np.testing.assert_allclose(lin.bias.grad.numpy(), tl.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
