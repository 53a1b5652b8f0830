"""torch's comparison, logical, bitwise and boolean-reduction functions (forgegrad/_torch_logic.py and the ops of
ops/logic.py, ops/logic_more.py, ops/histogram.py) against torch 2.13: odd shapes, bool / int8 / uint8 / int16 /
int32 / int64 / float inputs, numbers on either side, broadcasting, empty tensors, NaN, errors, in-place forms,
operators, the meta device and ONNX export at opset 18."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg

torch = pytest.importorskip("torch")

DTYPES = (np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64)
INT_DTYPES = (np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64)


def _arr(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind == "f":
        a = rng.choice([0.0, 1.0, -1.0, 2.5, -0.0, np.nan], size=shape).astype(dtype)
        return a
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -100), min(info.max, 200), size=shape, endpoint=True).astype(dtype)


def _pair(a):
    """The same values as a forgegrad and a torch tensor (numbers stay numbers)."""
    if isinstance(a, np.ndarray):
        return fg.from_numpy(a.copy()), torch.from_numpy(a.copy())
    return a, a


def _same(got, want, what=""):
    got = got.numpy() if isinstance(got, fg.Tensor) else np.asarray(got)
    want = want.numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, torch {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch {want.shape}"
    np.testing.assert_array_equal(got, want, err_msg=what)


def _both(fn_name, *args, method=False, **kw):
    fa, ta = zip(*(_pair(a) for a in args))
    if method:
        return getattr(fa[0], fn_name)(*fa[1:], **kw), getattr(ta[0], fn_name)(*ta[1:], **kw)
    return getattr(fg, fn_name)(*fa, **kw), getattr(torch, fn_name)(*ta, **kw)


# ---- comparisons ---------------------------------------------------------------------------------------------
COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge", "greater", "greater_equal", "less", "less_equal", "not_equal")


@pytest.mark.parametrize("name", COMPARISONS)
@pytest.mark.parametrize("da,db", [(np.float32, np.float32), (np.int8, np.uint8), (np.int64, np.float32),
                                   (np.bool_, np.int32), (np.uint8, np.float64), (np.int16, np.bool_)])
def test_comparisons_match_torch(name, da, db):
    a, b = _arr((3, 1, 5), da), _arr((4, 5), db, seed=1)
    for method in (False, True):
        got, want = _both(name, a, b, method=method)
        _same(got, want, f"{name} {np.dtype(da)} {np.dtype(db)} method={method}")


@pytest.mark.parametrize("name", COMPARISONS)
@pytest.mark.parametrize("dtype,number", [(np.uint8, -1), (np.int8, 300), (np.int8, 127), (np.int64, 0.5),
                                          (np.float32, np.nan), (np.bool_, 1), (np.bool_, 0.5), (np.float32, 2.5)])
def test_comparisons_with_numbers(name, dtype, number):
    a = _arr((2, 7), dtype)
    got, want = _both(name, a, number)
    _same(got, want, f"{name}({np.dtype(dtype)}, {number})")


def test_comparison_operators_with_a_number_on_the_left():
    a = _arr((3, 4), np.int32)
    f, t = _pair(a)
    for fgot, twant in ((2 < f, 2 < t), (2 >= f, 2 >= t), (0 == f, 0 == t), (5 != f, 5 != t)):
        _same(fgot, twant, "reflected comparison")


def test_comparisons_nan_empty_and_zero_d():
    nan = np.array([np.nan, 1.0, np.nan], np.float32)
    for name in ("eq", "ne", "lt", "ge"):
        _same(*_both(name, nan, nan), f"{name} nan")
    empty = np.zeros((0, 3), np.float32)
    _same(*_both("eq", empty, np.zeros(3, np.float32)), "empty")
    # a 0-d tensor promotes like a number: int8 with a 0-d int64 compares in int8
    _same(*_both("eq", np.array([44, 1], np.int8), np.array(300)), "0-d int64")


@pytest.mark.parametrize("name", COMPARISONS)
def test_inplace_comparisons_write_0_1_in_self_dtype(name):
    for da, db in ((np.float32, np.float32), (np.int64, np.float32), (np.int8, np.int8), (np.float64, np.int32)):
        fa, ta = _pair(_arr((3, 5), da))
        fb, tb = _pair(_arr((5,), db, seed=3))
        r1, r2 = getattr(fa, name + "_")(fb), getattr(ta, name + "_")(tb)
        assert r1 is fa
        _same(fa, ta, f"{name}_ {np.dtype(da)}")
        _same(r1, r2, f"{name}_ returned")
        getattr(fa, name + "_")(1)
        getattr(ta, name + "_")(1)
        _same(fa, ta, f"{name}_ number")


# ---- all / any -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ("all", "any"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_any_dims_match_torch(name, dtype):
    a = _arr((3, 4, 5), dtype)
    if np.dtype(dtype).kind != "b":
        a[0] = 1  # an all-true slice, so all() has a True somewhere
    for kw in ({}, {"dim": None, "keepdim": True}, {"dim": 1}, {"dim": -1, "keepdim": True}, {"dim": (0, 2)},
               {"dim": (0, -1), "keepdim": True},
               {"dim": ()}, {"dim": [1, 2]}):
        targs = dict(kw)
        if isinstance(kw.get("dim"), list):
            targs["dim"] = tuple(kw["dim"])
        got = getattr(fg, name)(fg.from_numpy(a.copy()), **kw)
        want = getattr(torch, name)(torch.from_numpy(a.copy()), **targs)
        _same(got, want, f"{name} {np.dtype(dtype)} {kw}")
        _same(getattr(fg.from_numpy(a.copy()), name)(**kw), want, f"Tensor.{name} {np.dtype(dtype)} {kw}")


def test_all_any_nan_empty_and_zero_d():
    nan = np.array([[np.nan, 0.0], [np.nan, np.nan]], np.float32)
    for name in ("all", "any"):
        for kw in ({}, {"dim": 0}, {"dim": 1}):
            _same(*_both(name, nan, **kw), f"{name} nan {kw}")
        empty = np.zeros((0, 3), np.float32)
        for kw in ({}, {"dim": 0}, {"dim": 1, "keepdim": True}):
            _same(*_both(name, empty, **kw), f"{name} empty {kw}")
        for kw in ({}, {"dim": 0}, {"dim": -1, "keepdim": True}):
            _same(*_both(name, np.array(2.0, np.float32), **kw), f"{name} 0-d {kw}")
        _same(*_both(name, np.zeros((2, 0), np.uint8), dim=1), f"{name} uint8 empty")


def test_all_any_method_forms_used_in_ports():
    x = fg.tensor([[0.5, -1.0], [2.0, 0.0]])
    assert not bool(x.all()) and bool((x > 0).any()) and bool((x != 7).all())
    assert fg.all(x > -2) and not fg.any(x > 5)


@pytest.mark.parametrize("name", ("all", "any"))
def test_all_any_bad_arguments(name):
    x = fg.tensor([[1, 0]])
    with pytest.raises(IndexError, match="dim"):
        getattr(x, name)(dim=2)
    with pytest.raises(TypeError, match="dim"):
        getattr(x, name)(dim=0.5)
    with pytest.raises(TypeError, match="keepdim"):
        getattr(x, name)(dim=0, keepdim="yes")
    with pytest.raises(TypeError, match="input"):
        getattr(fg, name)([1, 0])


# ---- logical ops ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ("logical_and", "logical_or", "logical_xor"))
@pytest.mark.parametrize("da,db", [(np.float32, np.float32), (np.int8, np.uint8), (np.bool_, np.float64),
                                   (np.int64, np.bool_)])
def test_logical_binary_match_torch(name, da, db):
    a, b = _arr((2, 1, 7), da), _arr((3, 7), db, seed=2)
    for method in (False, True):
        _same(*_both(name, a, b, method=method), f"{name} {np.dtype(da)} {np.dtype(db)}")
    fa, ta = _pair(a.copy())
    fb, tb = _pair(_arr((2, 3, 7), db, seed=2))
    fa2, ta2 = _pair(_arr((2, 3, 7), da, seed=4))
    getattr(fa2, name + "_")(fb)
    getattr(ta2, name + "_")(tb)
    _same(fa2, ta2, f"{name}_ {np.dtype(da)}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_logical_not_matches_torch(dtype):
    a = _arr((4, 3), dtype)
    _same(*_both("logical_not", a), f"logical_not {np.dtype(dtype)}")
    _same(*_both("logical_not", a, method=True), "method")
    _same(*_both("logical_not", np.zeros((0, 2), dtype)), "empty")
    fa, ta = _pair(a.copy())
    fa.logical_not_()
    ta.logical_not_()
    _same(fa, ta, f"logical_not_ {np.dtype(dtype)}")


# ---- bitwise ops ---------------------------------------------------------------------------------------------
BITWISE = ("bitwise_and", "bitwise_or", "bitwise_xor")
SHIFTS = ("bitwise_left_shift", "bitwise_right_shift")
OPERATORS = {"bitwise_and": "&", "bitwise_or": "|", "bitwise_xor": "^", "bitwise_left_shift": "<<",
             "bitwise_right_shift": ">>"}


def _apply_op(sym, a, b):
    return eval(f"a {sym} b", {"a": a, "b": b})  # noqa: S307  (an operator from the fixed table above)


@pytest.mark.parametrize("name", BITWISE)
@pytest.mark.parametrize("da,db", [(d, d) for d in INT_DTYPES] + [(np.uint8, np.int8), (np.int8, np.int32),
                                                                   (np.bool_, np.int16), (np.uint8, np.int64)])
def test_bitwise_match_torch(name, da, db):
    a, b = _arr((3, 1, 5), da), _arr((4, 5), db, seed=1)
    what = f"{name} {np.dtype(da)} {np.dtype(db)}"
    _same(*_both(name, a, b), what)
    _same(*_both(name, a, b, method=True), what + " method")
    (fa, ta), (fb, tb) = _pair(a), _pair(b)
    _same(_apply_op(OPERATORS[name], fa, fb), _apply_op(OPERATORS[name], ta, tb), what + " operator")


@pytest.mark.parametrize("name", BITWISE + SHIFTS)
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_bitwise_with_numbers_on_either_side(name, dtype):
    if name in SHIFTS and dtype == np.bool_:
        return  # torch refuses shifts of bools: test_bitwise_errors
    a = _arr((2, 7), dtype)
    sym = OPERATORS[name]
    numbers = (True,) if dtype == np.bool_ else (3, 0, 1, 7)
    for n in numbers:
        fa, ta = _pair(a)
        _same(_apply_op(sym, fa, n), _apply_op(sym, ta, n), f"{np.dtype(dtype)} {sym} {n}")
        if name in SHIFTS and n == 0:
            continue
        small = np.abs(a.astype(np.int64)) % 5 if name in SHIFTS else a
        fs, ts = _pair(small.astype(np.int64) if name in SHIFTS else small)
        _same(_apply_op(sym, n, fs), _apply_op(sym, n, ts), f"{n} {sym} {np.dtype(dtype)}")


@pytest.mark.parametrize("name", SHIFTS)
@pytest.mark.parametrize("dtype", INT_DTYPES[1:])
def test_shifts_by_out_of_range_amounts(name, dtype):
    a = _arr((5, 9), dtype)
    amounts = np.random.default_rng(3).integers(-3, 80, size=(5, 9)).astype(dtype if dtype != np.uint8 else np.int64)
    if np.dtype(dtype).kind == "u":
        amounts = np.abs(amounts)
    _same(*_both(name, a, amounts.astype(np.result_type(dtype, amounts.dtype))), f"{name} {np.dtype(dtype)}")


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_bitwise_not_and_invert(dtype):
    a = _arr((3, 6), dtype)
    _same(*_both("bitwise_not", a), f"bitwise_not {np.dtype(dtype)}")
    fa, ta = _pair(a)
    _same(~fa, ~ta, "~")
    fa.bitwise_not_()
    ta.bitwise_not_()
    _same(fa, ta, "bitwise_not_")


@pytest.mark.parametrize("name", BITWISE + SHIFTS)
def test_inplace_bitwise_and_augmented_operators(name):
    for dtype in (np.int64, np.int16, np.uint8):
        a, b = _arr((3, 4), dtype), np.abs(_arr((4,), dtype, seed=5)) % 6
        (fa, ta), (fb, tb) = _pair(a), _pair(b)
        getattr(fa, name + "_")(fb)
        getattr(ta, name + "_")(tb)
        _same(fa, ta, f"{name}_ {np.dtype(dtype)}")
        fa2, ta2 = _pair(a)
        sym = OPERATORS[name]
        ns = {"x": fa2, "y": fb}
        exec(f"x {sym}= y", ns)  # noqa: S102  (an augmented operator from the fixed table)
        ns_t = {"x": ta2, "y": tb}
        exec(f"x {sym}= y", ns_t)  # noqa: S102
        assert ns["x"] is fa2
        _same(fa2, ta2, f"{sym}= {np.dtype(dtype)}")


def test_bitwise_errors_name_the_op_and_dtype():
    f = fg.tensor([1.5, 2.0])
    i = fg.tensor([1, 2])
    for name in BITWISE + SHIFTS:
        with pytest.raises(TypeError, match=f"{name}.*float32"):
            getattr(fg, name)(f, i)
        with pytest.raises(TypeError, match=f"{name}.*float32"):
            getattr(fg, name)(i, 1.5)
        with pytest.raises(TypeError, match="other"):
            getattr(fg, name)(i, "x")
    with pytest.raises(TypeError, match="bitwise_not.*float64"):
        ~fg.tensor(np.ones(3))
    with pytest.raises(TypeError, match="bitwise_and.*float32"):
        f & 1
    with pytest.raises(TypeError, match="bool"):
        fg.tensor([True]) << fg.tensor([True])
    with pytest.raises(RuntimeError, match="can't be cast"):
        fg.tensor([True, False]).bitwise_and_(i)  # an int64 result into a bool tensor: torch refuses it too


# ---- gcd, lcm, isin, heaviside, dtype tests ------------------------------------------------------------------
@pytest.mark.parametrize("name", ("gcd", "lcm"))
@pytest.mark.parametrize("da,db", [(np.int64, np.int64), (np.int8, np.int8), (np.int32, np.int16),
                                   (np.uint8, np.uint8)])
def test_gcd_lcm_match_torch(name, da, db):
    a, b = _arr((3, 1, 6), da), _arr((5, 6), db, seed=2)
    a[0, 0, :2] = 0
    _same(*_both(name, a, b), f"{name} {np.dtype(da)} {np.dtype(db)}")
    _same(*_both(name, a, b, method=True), "method")
    (fa, ta), (fb, tb) = _pair(_arr((5, 6), da)), _pair(b)
    getattr(fa, name + "_")(fb)
    getattr(ta, name + "_")(tb)
    _same(fa, ta, f"{name}_")
    with pytest.raises(TypeError, match=f"{name}.*float32"):
        getattr(fg, name)(fg.tensor([1.0]), fg.tensor([2]))


def test_isin_matches_torch():
    el = _arr((3, 7), np.int64)
    test = _arr((5,), np.int64, seed=1)
    for kw in ({}, {"invert": True}, {"assume_unique": True}):
        _same(*_both("isin", el, test, **kw), f"isin {kw}")
    _same(*_both("isin", el, test.reshape(5, 1).astype(np.float32)), "promoted")
    _same(*_both("isin", el, 3), "number test_elements")
    _same(*_both("isin", 3, test), "number elements")
    f = np.array([np.nan, 1.0, 2.0], np.float32)
    _same(*_both("isin", f, f), "nan is in nothing")
    _same(*_both("isin", el, np.zeros(0, np.int64)), "empty test_elements")
    _same(*_both("isin", np.zeros((0, 2), np.int8), test), "empty elements")
    with pytest.raises(TypeError, match="invert"):
        fg.isin(fg.from_numpy(el), 3, invert="yes")


def test_heaviside_matches_torch():
    x = np.array([[-1.5, 0.0, 2.0, np.nan, -0.0]], np.float32)
    for v in (np.array([0.5], np.float32), np.full((3, 5), 7.0, np.float32)):
        _same(*_both("heaviside", x, v), "heaviside")
        _same(*_both("heaviside", x, v, method=True), "method")
    _same(*_both("heaviside", _arr((4,), np.int32), np.array([5], np.int32)), "int32")
    fx, tx = _pair(x.copy())
    fx.heaviside_(fg.tensor([0.25]))
    tx.heaviside_(torch.tensor([0.25]))
    _same(fx, tx, "heaviside_")
    with pytest.raises(TypeError, match="dtype"):
        fg.heaviside(fg.tensor([1.0]), fg.tensor([1]))
    y = fg.tensor([1.0, 0.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="derivative for 'heaviside'"):
        fg.heaviside(y, fg.tensor([0.5])).sum().backward()


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_and_size_tests(dtype):
    a = _arr((2, 3), dtype)
    (f, t) = _pair(a)
    assert fg.is_signed(f) == torch.is_signed(t) == f.is_signed()
    assert fg.is_complex(f) is False and f.is_complex() is False
    _same(fg.isreal(f), torch.isreal(t), "isreal")
    _same(f.isreal(), torch.isreal(t), "Tensor.isreal")
    assert fg.is_same_size(f, fg.from_numpy(a[:, :2].copy())) is False
    assert f.is_same_size(fg.from_numpy(a.copy())) is True
    one = np.ones(1, dtype) if dtype != np.bool_ else np.array([True])
    assert fg.is_nonzero(fg.from_numpy(one)) is torch.is_nonzero(torch.from_numpy(one)) is True
    assert fg.from_numpy(np.zeros((1, 1), dtype)).is_nonzero() is False


def test_is_nonzero_refuses_other_sizes():
    with pytest.raises(RuntimeError, match="more than one value"):
        fg.is_nonzero(fg.tensor([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="no values"):
        fg.is_nonzero(fg.zeros(0))


# ---- histograms ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_histc_matches_torch(dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 13)).astype(dtype)
    x[0, :3] = [np.nan, 5.0, -5.0]
    clean = np.nan_to_num(x)  # the data's range of NaN is not finite: both raise (test_histc_errors)
    for data, kw in ((x, {"bins": 9, "min": -1.0, "max": 1.5}), (x, {"bins": 1, "min": -3, "max": 3}),
                     (clean, {"bins": 5, "min": 0, "max": 0}), (clean, {"bins": 4, "min": 2, "max": 2})):
        _same(*_both("histc", data, **kw), f"histc {kw}")
        _same(*_both("histc", data, method=True, **kw), f"Tensor.histc {kw}")
    grid = np.linspace(-1, 1, 41).astype(dtype)  # elements on the bin edges
    _same(*_both("histc", grid, bins=8, min=-1, max=1), "edges")
    _same(*_both("histc", np.full(5, 3.0, dtype), bins=3), "constant")
    _same(*_both("histc", np.zeros(0, dtype), bins=3), "empty")


def test_histc_errors():
    with pytest.raises(TypeError, match="histc.*int64"):
        fg.histc(fg.tensor([1, 2]))
    with pytest.raises(ValueError, match="bins"):
        fg.histc(fg.tensor([1.0]), bins=0)
    with pytest.raises(ValueError, match="max must be larger than min"):
        fg.histc(fg.tensor([1.0]), bins=3, min=2, max=1)
    with pytest.raises(ValueError, match="not finite"):
        fg.histc(fg.tensor([1.0, float("nan")]))


def test_histogram_matches_torch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 11)).astype(np.float32)
    w = rng.uniform(0, 2, size=x.shape).astype(np.float32)
    cases = [((x, 7), {}), ((x, 4), {"range": (-1.0, 1.0)}), ((x, 6), {"density": True}),
             ((x, 5), {"weight": w, "density": True}), ((x, np.array([-3.0, -0.5, 0.0, 0.7, 3.0], np.float32)), {}),
             ((np.linspace(0, 1, 11).astype(np.float32), np.array([0.0, 0.3, 0.5, 1.0], np.float32)), {}),
             ((np.full(4, 2.0, np.float32), 3), {})]
    for args, kw in cases:
        fargs, targs = zip(*(_pair(a) for a in args))
        fkw = {k: (fg.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        tkw = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        got, want = fg.histogram(*fargs, **fkw), torch.histogram(*targs, **tkw)
        assert type(got).__name__ == "histogram" and got._fields == ("hist", "bin_edges")
        np.testing.assert_allclose(got.hist.numpy(), want.hist.numpy(), rtol=1e-6, err_msg=str(kw))
        _same(got.bin_edges, want.bin_edges, f"bin_edges {kw}")
        assert got.hist.dtype == fg.float32
        m = fargs[0].histogram(*fargs[1:], **fkw)
        np.testing.assert_array_equal(m[0].numpy(), got.hist.numpy())


def test_histogram_errors():
    x = fg.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="histogram.*int64"):
        fg.histogram(fg.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match="increasing"):
        fg.histogram(x, fg.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="weight"):
        fg.histogram(x, 3, weight=fg.tensor([1.0]))
    with pytest.raises(TypeError, match="range"):
        fg.histogram(x, 3, range=(0.0,))


# ---- meta device and ONNX ------------------------------------------------------------------------------------
def test_meta_shapes_and_dtypes():
    a = fg.from_numpy(_arr((3, 1, 5), np.uint8)).to("meta")
    b = fg.from_numpy(_arr((4, 5), np.int8)).to("meta")
    assert (fg.bitwise_and(a, b).shape, fg.bitwise_and(a, b).dtype) == ((3, 4, 5), fg.int16)
    assert fg.all(a, dim=(0, 2)).shape == (1,) and fg.all(a).dtype == fg.uint8
    assert fg.any(b, dim=1, keepdim=True).shape == (4, 1) and fg.any(b).dtype == fg.bool
    assert fg.logical_xor(a, b).dtype == fg.bool and fg.isin(a, b).shape == (3, 1, 5)
    f = fg.zeros(3, 7).to("meta")
    assert fg.histc(f, bins=6).shape == (6,)
    hist, edges = fg.histogram(f, 4)
    assert hist.shape == (4,) and edges.shape == (5,)


def _export(fn, inputs, tmp_path, opset):
    ort = pytest.importorskip("onnxruntime")

    class M(fg.nn.Module):
        def forward(self, *xs):
            return fn(*xs)

    path = str(tmp_path / "m.onnx")
    report = fg.onnx.export(M(), tuple(inputs), path, opset=opset, dynamic_axes={})
    assert report.ok, str(report)
    sess = ort.InferenceSession(path)
    feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("name", BITWISE + ("bitwise_not",))
@pytest.mark.parametrize("dtype", (np.int64, np.int32, np.uint8, np.int8, np.bool_))
def test_bitwise_exports_at_opset_18(name, dtype, tmp_path):
    a, b = fg.from_numpy(_arr((3, 5), dtype)), fg.from_numpy(_arr((5,), dtype, seed=1))
    fn = (lambda x, y: getattr(fg, name)(x)) if name == "bitwise_not" else getattr(fg, name)
    got = _export(fn, (a, b), tmp_path, 18)
    np.testing.assert_array_equal(got, fn(a, b).numpy())


def test_bitwise_on_integers_refuses_opset_17(tmp_path):
    a = fg.tensor([1, 2])
    with pytest.raises(Exception, match="opset 18"):
        _export(lambda x: x & 3, (a,), tmp_path, 17)


@pytest.mark.parametrize("opset", (13, 17))
@pytest.mark.parametrize("dtype", (np.uint8, np.int8, np.int16, np.int32, np.int64))
@pytest.mark.parametrize("name", SHIFTS)
def test_shifts_export_for_every_integer_dtype(name, dtype, opset, tmp_path):
    """Signed shifts too (BitShift on uint64 between Casts; arithmetic right shift through the complement), with
    amounts out of range (negative, the width and past it) and values at the dtype's ends: torch's results."""
    info = np.iinfo(dtype)
    bits = info.bits
    vals = np.array([info.min, info.min + 1, -77 if info.min < 0 else 77, -1 if info.min < 0 else 1, 0, 1, 77,
                     info.max - 1, info.max], dtype)
    a = fg.from_numpy(np.tile(vals[:, None], (1, 6)))
    amounts = [0, 1, bits - 1, bits, bits + 5, -1] if info.min < 0 else [0, 1, bits - 1, bits, bits + 5, 3]
    b = fg.from_numpy(np.array(amounts, dtype))
    got = _export(getattr(fg, name), (a, b), tmp_path, opset)
    want = getattr(torch, name)(torch.from_numpy(a.numpy().copy()), torch.from_numpy(b.numpy().copy())).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, getattr(fg, name)(a, b).numpy())


@pytest.mark.parametrize("dtype", (np.uint8, np.int8, np.float32))
def test_all_any_and_comparisons_export(dtype, tmp_path):
    a = fg.from_numpy(_arr((3, 4, 5), dtype))
    got = _export(lambda x: fg.all(x, dim=(0, 2)), (a,), tmp_path, 17)
    np.testing.assert_array_equal(got, fg.all(a, dim=(0, 2)).numpy())
    got = _export(lambda x: x.any(dim=1, keepdim=True), (a,), tmp_path, 18)
    np.testing.assert_array_equal(got, a.any(dim=1, keepdim=True).numpy())
    got = _export(lambda x: fg.logical_xor(x, x > 1), (a,), tmp_path, 17)
    np.testing.assert_array_equal(got, fg.logical_xor(a, a > 1).numpy())


@pytest.mark.parametrize("dtype", (np.uint8, np.int8, np.int64, np.float64))
def test_comparisons_with_wrapped_numbers_export(dtype, tmp_path):
    a = fg.from_numpy(np.array([[0, 1, 100, 127]]).astype(dtype))

    def fn(x):
        return fg.stack([x > -1, x == 300, x < 0.5, fg.ne(x, 44)])
    got = _export(fn, (a,), tmp_path, 17)
    t = torch.from_numpy(a.numpy().copy())
    want = torch.stack([t > -1, t == 300, t < 0.5, torch.ne(t, 44)])
    np.testing.assert_array_equal(got, want.numpy())


@pytest.mark.parametrize("dtype", (np.int8, np.uint8, np.int16, np.int32, np.int64))
def test_gcd_lcm_at_the_dtype_limits(dtype):
    info = np.iinfo(dtype)
    vals = [info.max, 0, 1, 3, 6, 12, info.max // 3, info.max - 1] + ([-1, info.min // 2] if info.min else [2, 5])
    if np.dtype(dtype).itemsize < 4:
        vals.append(info.min)  # |MIN| wraps to MIN: torch's gcd(-128, 127) is -1 (torch traps on MIN / -1 from int32)
    v = np.array(vals, dtype)
    a, b = np.repeat(v, len(v)), np.tile(v, len(v))
    for name in ("gcd", "lcm"):
        _same(*_both(name, a, b), f"{name} {np.dtype(dtype)}")


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_histc_and_histogram_bin_elements_next_to_the_edges_as_torch(dtype):
    for seed in range(40):
        rng = np.random.default_rng(seed)
        bins, lo = int(rng.integers(1, 60)), float(rng.uniform(-3, 0))
        hi = lo + float(rng.uniform(0.1, 5))
        edges = np.linspace(lo, hi, bins + 1).astype(dtype)
        x = np.concatenate([edges, np.nextafter(edges, dtype(np.inf)), np.nextafter(edges, dtype(-np.inf)),
                            rng.uniform(lo - 1, hi + 1, 50).astype(dtype)])
        _same(*_both("histc", x, bins=bins, min=lo, max=hi), f"histc seed {seed}")
        got, want = _both("histogram", x, bins, range=(lo, hi))
        _same(got.hist, want.hist, f"histogram seed {seed}")
        _same(got.bin_edges, want.bin_edges, f"histogram edges seed {seed}")


def test_numpy_all_any_of_a_tensor_call_its_methods():
    # np.all(t) calls t.all(axis=None, out=None): torch takes numpy's axis / keepdims aliases, and so do these
    x = fg.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert bool(np.all(x >= 0)) and not bool(np.all(x > 0)) and bool(np.any(x > 2))
    _same(np.all(x > 0, axis=1), torch.from_numpy(np.array([False, True])), "np.all axis")
    _same(x.any(axis=0, keepdims=True), torch.tensor([[True, True]]), "axis keepdims")
    with pytest.raises(TypeError, match="not both"):
        x.all(0, axis=1)
