"""Function.apply's fast path (CPU float32 tensors and real numbers) and the shortcuts beside it (Tensor operators
calling the op's apply, no-graph kernels of add/sub/mul/div and softmax, int fast paths of the axis checks) give
what the general dispatch gave: torch's dtypes, devices, errors, traces and quiet numpy warnings."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad.autograd import trace
from forgegrad.kernels import geometry, reduce_rows
from forgegrad.ops._util import normalize_axis, single_axis


def _same(ours, theirs):
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_allclose(ours.numpy().astype(np.float64), theirs.numpy().astype(np.float64), rtol=1e-6)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("case", ["int+int", "int*0.5", "int8+300", "f16+f16", "f32+0d f64", "f64*f32", "bool+int",
                                  "int/int", "f32*2", "2-f32"])
def test_operators_follow_torch_dtypes(case, grad):
    rng = np.random.default_rng(0)
    f = rng.standard_normal((3, 4)).astype(np.float32)
    i = rng.integers(-5, 5, (3, 4))
    make = {
        "int+int": lambda m: m.tensor(i) + m.tensor(i + 1),
        "int*0.5": lambda m: m.tensor(i) * 0.5,
        "int8+300": lambda m: m.tensor(i.astype(np.int8)) + 300,
        "f16+f16": lambda m: m.tensor(f.astype(np.float16)) + m.tensor(f.astype(np.float16)),
        "f32+0d f64": lambda m: m.tensor(f) + m.tensor(np.float64(0.25)),
        "f64*f32": lambda m: m.tensor(f.astype(np.float64)) * m.tensor(f),
        "bool+int": lambda m: m.tensor(i > 0) + m.tensor(i),
        "int/int": lambda m: m.tensor(i) / m.tensor(np.where(i == 0, 1, i)),
        "f32*2": lambda m: m.tensor(f) * 2,
        "2-f32": lambda m: 2 - m.tensor(f),
    }[case]
    ctx_fg = fg.enable_grad() if grad else fg.no_grad()
    with ctx_fg:
        ours = make(fg)
    _same(ours, make(torch))
    assert not ours.requires_grad


def test_float64_default_keeps_integer_promotion_float64():
    fg.set_default_dtype(fg.float64)
    try:
        with fg.no_grad():
            out = fg.tensor(np.arange(4)) * 0.5
        assert out.dtype == fg.float64
        with fg.no_grad():
            assert (fg.tensor(np.ones(3, np.float32)) * 0.5).dtype == fg.float32
    finally:
        fg.set_default_dtype(fg.float32)


def test_meta_and_complex_still_leave_the_fast_path():
    m = fg.empty(3, 4, device="meta")
    out = m + 1.0
    assert out.is_meta and out.shape == (3, 4)
    z = fg.tensor(np.ones((2, 2), np.float32)) * 1j
    assert z.dtype == fg.complex64
    np.testing.assert_array_equal(z.numpy(), np.full((2, 2), 1j, np.complex64))


def test_operator_operands_that_are_not_tensors_or_numbers_become_tensors():
    x = fg.tensor(np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal((x + [1.0, 1.0, 1.0, 1.0]).numpy(), np.arange(1, 5, dtype=np.float32))
    np.testing.assert_array_equal(([2.0, 2.0, 2.0, 2.0] * x).numpy(), 2 * np.arange(4, dtype=np.float32))
    with pytest.raises(TypeError, match="argument 'a' must be a forgegrad.Tensor"):
        fg.ops.get("add")("text", x)  # the record itself still checks its arguments


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_no_grad_binary_kernel_matches_the_graph_forward(op):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((7,)).astype(np.float32)
    fn = {"add": lambda p, q: p + q, "sub": lambda p, q: p - q, "mul": lambda p, q: p * q,
          "div": lambda p, q: p / q}[op]
    x, y = fg.tensor(a, requires_grad=True), fg.tensor(b)
    with fg.no_grad():
        quick = fn(x, y)
    assert not quick.requires_grad and quick.grad_fn is None
    np.testing.assert_array_equal(quick.numpy(), fn(x, y).detach().numpy())
    np.testing.assert_array_equal(quick.numpy(), fn(torch.tensor(a), torch.tensor(b)).numpy())


def test_no_grad_square_of_a_scattered_view():
    # x * x of an overlapping window view: the inference kernel copies it once, as forward does
    base = np.random.default_rng(2).standard_normal(40000).astype(np.float32)
    view = np.lib.stride_tricks.as_strided(base, (19000, 4), (8, 4))
    x = fg.tensor(view)
    with fg.no_grad():
        np.testing.assert_array_equal((x * x).numpy(), view * view)


def test_no_grad_kernels_stay_quiet_and_are_traced():
    x = fg.tensor(np.array([1.0, -1.0, 0.0], np.float32))
    old = np.seterr(all="raise")
    try:
        with fg.no_grad():
            out = x / 0.0
    finally:
        np.seterr(**old)
    np.testing.assert_array_equal(out.numpy(), np.array([np.inf, -np.inf, np.nan], np.float32))
    with fg.no_grad(), trace() as rec:
        x * 2.0
        x.softmax(-1)
    assert [r[0].op.name for r in rec.records] == ["mul", "softmax"]


@pytest.mark.parametrize("shape, dim", [((4, 16), -1), ((4, 16), 1), ((4, 16), 0), ((2, 3, 5), 1), ((7,), 0)])
@pytest.mark.parametrize("log", [False, True])
def test_no_grad_softmax_matches_torch(shape, dim, log):
    a = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    name = "log_softmax" if log else "softmax"
    ref = getattr(torch, name)(torch.tensor(a), dim).numpy()
    with fg.no_grad():
        for out in (getattr(fg.tensor(a), name)(dim), getattr(F, name)(fg.tensor(a), dim),
                    fg.ops.get(name)(fg.tensor(a), dim)):  # by keyword, and positionally
            np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
        t = fg.tensor(np.ascontiguousarray(a.T)).t() if a.ndim == 2 else None  # a non-contiguous input
        if t is not None:
            np.testing.assert_allclose(getattr(t, name)(dim).numpy(), ref, rtol=1e-5, atol=1e-6)


def test_no_grad_softmax_errors_as_before():
    x = fg.tensor(np.ones((2, 3), np.float32))
    with fg.no_grad():
        with pytest.raises(IndexError, match="dim"):
            x.softmax(2)
        with pytest.raises(TypeError, match="dim"):
            x.softmax(1.0)
        with pytest.raises(TypeError, match="got bool"):
            x.softmax(True)


def test_axis_fast_paths_match_the_checks():
    assert normalize_axis(-1, 3) == (2,) and normalize_axis((0, -1), 3) == (0, 2) and single_axis(-2, 2) == 0
    with pytest.raises(IndexError, match=r"expected to be in range of \[-2, 1\], but got 2"):
        normalize_axis(2, 2)
    with pytest.raises(IndexError, match="but got -3"):
        normalize_axis((0, -3), 2)
    with pytest.raises(TypeError, match="dim0 must be an int"):
        single_axis(True, 2, "dim0")
    assert normalize_axis(0, 0) == (0,) and normalize_axis((), 2) == ()  # 0-d: dim 0 is taken, as torch's
    assert normalize_axis(np.int64(1), 2) == (1,)


def test_view_reshape_and_transpose_arguments():
    x = fg.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert x.view(4, 3).shape == (4, 3) and x.view((2, 6)).shape == (2, 6) and x.view(np.int64(12)).shape == (12,)
    assert x.view(fg.int32).dtype == fg.int32  # a dtype: the same bytes read as another dtype
    with pytest.raises(TypeError, match="tuple of ints"):
        x.reshape(3, True * 4.0)
    np.testing.assert_array_equal(x.transpose(0, 1).numpy(), np.arange(12, dtype=np.float32).reshape(3, 4).T)
    np.testing.assert_array_equal(x.permute([1, 0]).numpy(), x.numpy().T)


def test_kernel_checks_fast_paths():
    assert geometry.adaptive_output_size(1, (17, 17)) == (1, 1)
    assert geometry.adaptive_output_size((None, 2), (5, 6)) == (5, 2)
    with pytest.raises(TypeError, match="output_size"):
        geometry.adaptive_output_size(True, (5, 6))
    with pytest.raises(ValueError, match="positive"):
        geometry.adaptive_output_size(0, (5, 6))
    a = np.ones((3, 4), np.float32)
    assert reduce_rows.trailing_rows(a, (1,)) == (3, 4) and reduce_rows.trailing_rows(a, (0,)) is None
    assert reduce_rows.trailing_rows(a, (-1,)) is None  # (axes are normalized first)
    assert reduce_rows.trailing_rows(np.ones((3, 0), np.float32), (1,)) is None
    assert reduce_rows.trailing_rows(np.ones((), np.float32), (-1,)) == (1, 1)


def test_functional_wrappers_still_check_their_arguments():
    with pytest.raises(TypeError, match="input must be a forgegrad.Tensor"):
        F.relu(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="weight must be a forgegrad.Tensor"):
        F.linear(fg.ones(2, 3), np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="input must be a forgegrad.Tensor"):
        F.adaptive_avg_pool2d(np.ones((1, 1, 2, 2), np.float32), 1)
    x = fg.tensor(np.array([-1.0, 2.0], np.float32), requires_grad=True)
    y = F.relu(x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0])
