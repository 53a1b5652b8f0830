"""ONNX mappings added for ops that had none (ops/_onnx_select.py, _onnx_int.py, _onnx_hist.py, _onnx_pointwise.py):
the inputs where a naive mapping goes wrong, run in onnxruntime and compared with torch (the registry's generated
checks cover the ops' own samples): NaN for fmax / fmin, exact multiples and signed zeros for remainder /
floor_divide, -0.0 for signbit / copysign, zeros and negatives for cumprod, ties and NaN for median / quantile,
and the ops inside models with dynamic axes."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def _run(fn, arrays, tmp_path, dynamic_axes=None, opset=17, verify_sizes=None):
    class M(fg.nn.Module):
        def forward(self, *xs):
            return fn(*xs)

    inputs = tuple(fg.Tensor(a, dtype=a.dtype) for a in arrays)
    path = str(tmp_path / "m.onnx")
    report = fg.onnx.export(M(), inputs, path, dynamic_axes=dynamic_axes if dynamic_axes is not None else {},
                            opset=opset, input_names=[f"input_{i}" for i in range(len(arrays))],
                            verify_sizes=verify_sizes)
    assert report.ok, str(report)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})
    return outs, report


def _t(a):
    return torch.from_numpy(np.array(a, copy=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["fmax", "fmin"])
def test_fmax_fmin_ignore_nan(name, dtype, tmp_path):
    a = np.array([[np.nan, 1.0, np.nan, -2.0, 0.0, np.inf]], dtype)
    b = np.array([[3.0, np.nan, np.nan, -2.0, -0.0, np.nan]], dtype)
    (got,), _ = _run(getattr(fg, name), (a, b), tmp_path)
    np.testing.assert_array_equal(got, getattr(torch, name)(_t(a), _t(b)).numpy())


_DIVIDEND = np.array([6.0, -6.0, 6.0, -6.0, 7.5, -7.5, 0.0, -0.0, 1e-30, 5.0, 3.0, np.inf, np.nan, 0.3])
_DIVISOR = np.array([3.0, 3.0, -3.0, -3.0, 2.5, 2.5, -2.0, 2.0, 3.0, 0.0, np.inf, 2.0, 1.0, 0.1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["remainder", "floor_divide"])
def test_remainder_floor_divide_exact_multiples_zeros_and_signs(name, dtype, tmp_path):
    a, b = _DIVIDEND.astype(dtype), _DIVISOR.astype(dtype)
    (got,), _ = _run(getattr(fg, name), (a, b), tmp_path)
    want = getattr(torch, name)(_t(a), _t(b)).numpy()
    np.testing.assert_array_equal(got, want)  # (-0.0 == 0.0: onnxruntime's Where drops a zero's minus sign)


@pytest.mark.parametrize("name", ["remainder", "floor_divide"])
def test_remainder_floor_divide_integers(name, tmp_path):
    a = np.array([7, -7, 7, -7, 6, -6, 0, 9], np.int64)
    b = np.array([2, 2, -2, -2, 3, -3, 5, 10], np.int64)
    (got,), _ = _run(getattr(fg, name), (a, b), tmp_path)
    np.testing.assert_array_equal(got, getattr(torch, name)(_t(a), _t(b)).numpy())


def test_signbit_and_copysign_read_negative_zero(tmp_path):
    x = np.array([-0.0, 0.0, -1.5, 2.0, -np.inf, np.inf, np.nan], np.float32)
    (got,), _ = _run(fg.signbit, (x,), tmp_path)
    np.testing.assert_array_equal(got, torch.signbit(_t(x)).numpy())
    mag = np.full_like(x, 3.0)
    (got,), _ = _run(fg.copysign, (mag, x), tmp_path)
    np.testing.assert_array_equal(got, torch.copysign(_t(mag), _t(x)).numpy())


def test_isclose_integers_and_infinities(tmp_path):
    a = np.array([1, 100000, -5, 0], np.int64)
    b = np.array([1, 100001, -6, 0], np.int64)
    (got,), _ = _run(lambda x, y: fg.isclose(x, y, rtol=1e-5, atol=0.5), (a, b), tmp_path)
    np.testing.assert_array_equal(got, torch.isclose(_t(a), _t(b), rtol=1e-5, atol=0.5).numpy())
    f = np.array([np.inf, -np.inf, np.inf, np.nan, 1.0], np.float32)
    g = np.array([np.inf, np.inf, 1e38, np.nan, 1.0 + 1e-6], np.float32)
    for kw in ({}, {"equal_nan": True}):
        (got,), _ = _run(lambda x, y: fg.isclose(x, y, **kw), (f, g), tmp_path)
        np.testing.assert_array_equal(got, torch.isclose(_t(f), _t(g), **kw).numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_cumprod_zeros_negatives_and_dynamic_length(dtype, tmp_path):
    x = np.array([[2, -3, 0, 4, -1, 5], [-1, -1, -1, 2, 0, 0], [1, 2, 3, 4, 5, 6]], dtype)
    (got,), report = _run(lambda t: fg.cumprod(t, 1), (x,), tmp_path, dynamic_axes={"input_0": {0: "batch", 1: "n"}})
    np.testing.assert_array_equal(got, torch.cumprod(_t(x), 1).numpy())
    assert report.dynamic_axes == {"input_0": {0: "batch", 1: "n"}}


def test_median_quantile_mode_inside_a_model_with_a_dynamic_batch(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (5, 9)).astype(np.float32)  # ties
    x[1, 3] = np.nan

    def fn(t):
        v, i = fg.median(t, dim=1)
        mv, mi = fg.mode(t.nan_to_num(0.0), dim=1)
        q = fg.nanquantile(t, 0.25, dim=1)
        return v, i, mv, mi, q
    outs, report = _run(fn, (x,), tmp_path, dynamic_axes={"input_0": {0: "batch"}})
    t = _t(x)
    tv, ti = torch.median(t, dim=1)
    tm = torch.mode(torch.nan_to_num(t, 0.0), dim=1)[0]
    np.testing.assert_array_equal(outs[0], tv.numpy())
    np.testing.assert_array_equal(outs[1], ti.numpy())
    np.testing.assert_array_equal(outs[2], tm.numpy())
    np.testing.assert_allclose(outs[4], torch.nanquantile(t, 0.25, dim=1).numpy(), rtol=1e-6)
    assert report.ok and len(report.runs) == 3  # the example and two other batch sizes


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_gcd_lcm_of_zeros_and_negatives(dtype, tmp_path):
    a = np.array([0, 0, 12, -12, 7, 48, -9, 1], np.int64)
    b = np.array([0, 5, -18, -18, 13, 36, 0, 1], np.int64)
    if dtype == np.int8:
        with pytest.raises(fg.onnx.UnsupportedOpError, match="int32 / int64"):
            _run(fg.gcd, (a.astype(dtype), b.astype(dtype)), tmp_path)
        return
    for name in ("gcd", "lcm"):
        (got,), _ = _run(getattr(fg, name), (a.astype(dtype), b.astype(dtype)), tmp_path)
        np.testing.assert_array_equal(got, getattr(torch, name)(_t(a.astype(dtype)), _t(b.astype(dtype))).numpy())


def test_histc_with_the_data_range_follows_a_dynamic_size(tmp_path):
    x = np.random.default_rng(2).normal(size=(6, 10)).astype(np.float32)
    (got,), report = _run(lambda t: fg.histc(t, bins=7), (x,), tmp_path, dynamic_axes={"input_0": {0: "batch"}})
    np.testing.assert_array_equal(got, torch.histc(_t(x), bins=7).numpy())
    (h, e), _ = _run(lambda t: fg.histogram(t, 5, density=True), (x,), tmp_path)
    th, te = torch.histogram(_t(x), 5, density=True)
    np.testing.assert_array_equal(e, te.numpy())
    np.testing.assert_allclose(h, th.numpy(), rtol=1e-6)


_SPECIAL_INPUTS = {
    "i0": [0.0, 0.5, -3.0, 10.0, -29.9, 30.5, 35.0, -60.0, 85.0],
    "special_i1": [0.0, 0.5, -3.0, 10.0, -29.9, 30.5, 35.0, -60.0, 85.0],
    "lgamma": [0.5, 1.0, 2.0, 1e-3, 7.3, 123.4, 1e5, -0.5, -2.5, -3.7, 0.0, -1.0, -4.0],
    "digamma": [1.0, 0.5, 1e-3, 7.3, 123.4, 1e5, -0.5, -2.5, -3.7, 0.0, -0.0, -1.0, -4.0],
    "erfinv": [0.0, 0.3, -0.5, 0.9, -0.99, 0.9999, 1.0, -1.0, 1.5],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(_SPECIAL_INPUTS))
def test_special_functions_over_their_range(name, dtype, tmp_path):
    """Both series branches of i0 / i1, the reflection and poles of lgamma / digamma, erfinv at and past +-1."""
    x = np.array(_SPECIAL_INPUTS[name], dtype)
    fn = getattr(fg, name) if name != "special_i1" else fg.ops.get("special_i1")
    (got,), report = _run(fn, (x,), tmp_path)
    want = (torch.special.i1 if name == "special_i1" else getattr(torch, name))(_t(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-9, atol=1e-13)  # (lgamma(1) = 0)
    assert got.dtype == dtype and not report.float32_nodes  # double throughout


def test_linalg_with_a_dynamic_batch(tmp_path):
    """inv / solve / slogdet / cholesky / solve_triangular unrolled over n, any batch size; a pivot that needs a row
    swap (a zero on the diagonal) included."""
    rng = np.random.default_rng(5)
    a = (rng.uniform(-1, 1, (3, 4, 4)) + 2 * np.eye(4)).astype(np.float32)
    a[0] = np.array([[0, 1, 2, 0], [1, 0, 0, 3], [2, 1, 1, 1], [0, 3, 1, 1]], np.float32)  # a[0][0, 0] = 0
    b = rng.uniform(-1, 1, (3, 4, 2)).astype(np.float32)
    eye4 = np.eye(4, dtype=np.float32) * 4

    def fn(x, y):
        sign, logabs = fg.linalg.slogdet(x)
        lo = fg.linalg.cholesky(x @ x.mT + fg.tensor(eye4))  # positive definite for the random verification inputs
        return (fg.linalg.inv(x), fg.linalg.solve(x, y), sign, logabs, lo,
                fg.linalg.solve_triangular(lo, y, upper=False))
    outs, report = _run(fn, (a, b), tmp_path, dynamic_axes={"input_0": {0: "batch"}, "input_1": {0: "batch"}})
    ta, tb = _t(a), _t(b)
    ts = ta @ ta.mT + _t(eye4)
    sign, logabs = torch.linalg.slogdet(ta)
    tl = torch.linalg.cholesky(ts)
    want = [torch.linalg.inv(ta), torch.linalg.solve(ta, tb), sign, logabs, tl,
            torch.linalg.solve_triangular(tl, tb, upper=False)]
    for got, w in zip(outs, want):
        np.testing.assert_allclose(got, w.numpy(), rtol=1e-4, atol=1e-5)
    assert len(report.runs) == 3


def test_vander_exports_through_cumprod(tmp_path):
    x = np.array([2.0, -1.5, 0.0, 3.0, 0.5], np.float32)
    (got,), _ = _run(lambda t: fg.vander(t, N=4), (x,), tmp_path, dynamic_axes={"input_0": {0: "n"}})
    np.testing.assert_array_equal(got, torch.linalg.vander(_t(x), N=4).flip(1).numpy())


@pytest.mark.parametrize("pool", [
    lambda nn: nn.MaxPool3d(3, stride=2, padding=1), lambda nn: nn.AvgPool3d(3, stride=2, padding=1),
    lambda nn: nn.AvgPool3d(3, stride=2, padding=1, count_include_pad=False),
    lambda nn: nn.AvgPool3d(2, stride=1, padding=1, divisor_override=3), lambda nn: nn.AdaptiveAvgPool3d(1)],
    ids=["max", "avg", "avg_no_pad_count", "avg_divisor", "global_avg"])
def test_3d_pools_over_dynamic_volumes(pool, tmp_path):
    """Verified by the exporter at the example's (8, 9, 10) volume and at (3, 4, 5) and (7, 7, 7): torch's avg_pool3d
    refuses a volume smaller than its kernel (padding not counted), so the default (1, 1, 1) check size is not one."""
    from forgegrad import nn
    fg.manual_seed(0)
    m = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), pool(nn)).eval()
    x = np.random.default_rng(3).standard_normal((2, 2, 8, 9, 10)).astype(np.float32)
    sizes = [{"b": 1, "d": 3, "h": 4, "w": 5}, {"b": 3, "d": 7, "h": 7, "w": 7}]
    outs, report = _run(m, (x,), tmp_path, dynamic_axes={"input_0": {0: "b", 2: "d", 3: "h", 4: "w"}},
                        verify_sizes=sizes)
    assert report.ok and len(report.runs) == 3


def test_3d_max_pool_indices_and_ceil_mode_over_dynamic_volumes(tmp_path):
    x = np.random.default_rng(4).standard_normal((1, 2, 6, 7, 8)).astype(np.float32)
    axes = {"input_0": {2: "d", 3: "h", 4: "w"}}
    sizes = [{"d": 4, "h": 5, "w": 9}]
    (vals, idx), _ = _run(lambda t: fg.nn.functional.max_pool3d(t, 2, return_indices=True), (x,), tmp_path, axes,
                          verify_sizes=sizes)
    tv, ti = torch.nn.functional.max_pool3d(_t(x), 2, return_indices=True)
    np.testing.assert_array_equal(vals, tv.numpy())
    np.testing.assert_array_equal(idx, ti.numpy())

    class Ceil(fg.nn.Module):
        def forward(self, t):
            return fg.nn.functional.avg_pool3d(t, 2, ceil_mode=True)
    with pytest.raises(fg.onnx.UnsupportedOpError, match="ceil_mode over dynamic spatial sizes"):
        fg.onnx.export(Ceil(), fg.tensor(x), str(tmp_path / "c.onnx"), dynamic_axes={"t": axes["input_0"]},
                       verify_sizes=sizes)


def test_matrix_exp_scales_each_matrix_by_its_own_norm(tmp_path):
    """Norms from 1e-3 to ~40 in one batch: each matrix squared its own number of times (a Loop over the largest)."""
    rng = np.random.default_rng(6)
    a = rng.uniform(-1, 1, (4, 3, 3)) * np.array([1e-3, 0.5, 4.0, 12.0])[:, None, None]
    for dtype in (np.float32, np.float64):
        x = a.astype(dtype)
        (got,), report = _run(lambda t: fg.linalg.matrix_exp(t), (x,), tmp_path, dynamic_axes={"input_0": {0: "b"}})
        np.testing.assert_allclose(got, torch.linalg.matrix_exp(_t(x)).numpy(), rtol=1e-5 if dtype == np.float32
                                   else 1e-10, atol=1e-6 if dtype == np.float32 else 1e-12)
        assert report.ok and not report.float32_nodes


def test_qr_has_lapacks_signs_with_zero_columns_and_a_dynamic_batch(tmp_path):
    """A column already zero below the diagonal (tau = 0), a zero alpha (counted positive), tall and wide."""
    rng = np.random.default_rng(7)
    a = rng.uniform(-1, 1, (3, 5, 3))
    a[0, 1:, 0] = 0.0   # first column already reduced
    a[1, 0, 0] = 0.0    # alpha 0
    for shape_fn, mode in ((lambda x: x, "reduced"), (lambda x: x.transpose(0, 2, 1), "complete")):
        x = np.ascontiguousarray(shape_fn(a))
        (q, r), report = _run(lambda t: fg.linalg.qr(t, mode=mode), (x,), tmp_path, dynamic_axes={"input_0": {0: "b"}})
        wq, wr = np.linalg.qr(x, mode=mode)  # LAPACK's signs, as forgegrad's kernel
        np.testing.assert_allclose(q, wq, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(r, wr, rtol=1e-9, atol=1e-12)
        assert report.ok and not report.float32_nodes
