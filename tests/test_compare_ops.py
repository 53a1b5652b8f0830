"""Comparisons, casts, argmax/argmin, where and var/std as recorded ops (forgegrad.ops.compare /
ops.stats): values and dtypes against torch, gradients, that autograd.trace() records them, and
that in-place assignment refuses to run while tracing."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.autograd import trace
from forgegrad.ops import compare as C
from forgegrad.ops import elementwise as E
from forgegrad.ops import stats as ST
from torch_ref import compare

R = np.random.default_rng(0)


def rn(*shape):
    return R.standard_normal(shape).astype(np.float32)


def assert_same(out, want):
    """forgegrad tensor vs torch tensor: same dtype (numpy's name for it), shape and values."""
    want = want.detach().numpy()
    assert out.dtype == want.dtype, (out.dtype, want.dtype)
    assert out.shape == want.shape, (out.shape, want.shape)
    np.testing.assert_array_equal(out._data, want)


OPS = ["lt", "le", "gt", "ge", "eq", "ne"]
OPERATORS = {"lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
             "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b}


# ---- comparisons ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("sa,sb", [((3, 5), (3, 5)), ((4, 1, 7), (3, 1)), ((), (7,)), ((2, 3), ())])
def test_compare_tensors_broadcast(op, sa, sb):
    a, b = rn(*sa), rn(*sb)
    if a.size and b.size:  # some exact ties so == / <= / >= see equal values
        a.reshape(-1)[0] = b.reshape(-1)[0]
    ta, tb = torch.tensor(a), torch.tensor(b)
    fa, fb = fg.tensor(a), fg.tensor(b)
    assert_same(OPERATORS[op](fa, fb), OPERATORS[op](ta, tb))
    assert_same(getattr(fa, op)(fb), getattr(ta, op)(tb))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("other", [0, 0.25, -1.5, True])
def test_compare_with_scalars(op, other):
    a = np.array([[-1.5, 0.0, 0.25, 1.0], [1.0, -3.0, 0.25, 2.0]], np.float32)
    assert_same(OPERATORS[op](fg.tensor(a), other), OPERATORS[op](torch.tensor(a), other))
    # reflected: 0.25 < t runs t.__gt__(0.25)
    assert_same(OPERATORS[op](other, fg.tensor(a)), OPERATORS[op](other, torch.tensor(a)))


@pytest.mark.parametrize("op", OPS)
def test_compare_int_and_bool_tensors(op):
    i = np.array([[3, -1, 0], [7, 7, 2]], np.int64)
    j = np.array([3, 0, 5], np.int64)
    assert_same(OPERATORS[op](fg.tensor(i), fg.tensor(j)), OPERATORS[op](torch.tensor(i), torch.tensor(j)))
    # int tensor against a float scalar compares as float, as in torch
    assert_same(OPERATORS[op](fg.tensor(i), 2.5), OPERATORS[op](torch.tensor(i), 2.5))
    p, q = np.array([True, False, True, False]), np.array([True, True, False, False])
    assert_same(OPERATORS[op](fg.tensor(p), fg.tensor(q)), OPERATORS[op](torch.tensor(p), torch.tensor(q)))


def test_compare_with_arrays_and_lists():
    a = rn(2, 3)
    b = rn(3)
    for other in (b, list(b.tolist())):
        out = fg.tensor(a) > other
        assert out.dtype == np.bool_
        np.testing.assert_array_equal(out._data, a > b)


def test_compare_not_differentiable_and_recorded():
    x = fg.tensor(rn(3, 4), requires_grad=True)
    with trace() as rec:
        outs = [getattr(x, op)(0.1) for op in OPS]
    assert [r[0] for r in rec.records] == [C.CompareFunction] * 6
    assert [r[2]["op"] for r in rec.records] == OPS
    for (_, args, _, results), out in zip(rec.records, outs):
        assert args[0] is x and args[1] == 0.1 and results[0] is out
        assert out.dtype == np.bool_ and not out.requires_grad and out.grad_fn is None
    # the model's result still backpropagates around the mask
    y = (fg.where(x > 0, x, x * 2)).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad._data, np.where(x._data > 0, 1.0, 2.0).astype(np.float32))


def test_compare_unknown_op():
    with pytest.raises(ValueError, match="op must be one of"):
        C.CompareFunction.apply(fg.tensor(rn(2)), 0.0, op="lessish")


# ---- casts ---------------------------------------------------------------------------------------
CAST_INPUTS = {
    "float": np.array([[-1.7, -0.5, 0.0], [0.4, 2.5, 3.9]], np.float32),
    "int": np.array([[-2, 0, 1], [5, 0, -7]], np.int64),
    "bool": np.array([[True, False, True], [False, False, True]]),
}
CASTS = {"float": (lambda t: t.float(), lambda t: t.float()),
         "long": (lambda t: t.long(), lambda t: t.long()),
         "bool": (lambda t: t.bool(), lambda t: t.bool()),
         "to_int64": (lambda t: t.to(fg.int64), lambda t: t.to(torch.int64)),
         "to_np_float32": (lambda t: t.to(np.float32), lambda t: t.to(torch.float32)),
         "to_cpu_dtype": (lambda t: t.to("cpu", dtype=np.bool_), lambda t: t.to("cpu", dtype=torch.bool))}


@pytest.mark.parametrize("src", sorted(CAST_INPUTS))
@pytest.mark.parametrize("cast", sorted(CASTS))
def test_casts_vs_torch(src, cast):
    a = CAST_INPUTS[src]
    fg_fn, th_fn = CASTS[cast]
    assert_same(fg_fn(fg.tensor(a)), th_fn(torch.tensor(a)))


def test_cast_to_own_dtype_is_identity_and_float64_is_a_dtype():
    x, i, b = fg.tensor(rn(3)), fg.tensor(np.arange(3)), fg.tensor(np.array([True, False]))
    assert x.float() is x and i.long() is i and b.bool() is b and x.to("cpu") is x
    assert x.to(np.float32) is x and x.to(np.float64) is not x  # float64 is a dtype of its own (torch)
    y = i.to(np.float64)
    assert y.dtype == np.float64 and np.array_equal(y._data, [0.0, 1.0, 2.0])
    assert x.double().float().dtype == np.float32 and x.double().double().dtype == np.float64


def test_cast_records_and_gradient():
    x = fg.tensor(rn(2, 3), requires_grad=True)
    with trace() as rec:
        h = x.to(np.float16)
        back = h.float()
        idx = x.long()
    assert [r[0] for r in rec.records] == [C.CastFunction] * 3
    assert [np.dtype(r[2]["dtype"]) for r in rec.records] == [np.float16, np.float32, np.int64]
    assert h.dtype == np.float16 and h.requires_grad  # float -> float is differentiable
    assert idx.dtype == np.int64 and not idx.requires_grad  # -> int cuts the graph, as in torch
    (back * 3).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad._data, np.full((2, 3), 3.0, np.float32))
    tx = torch.tensor(x._data, requires_grad=True)
    (tx.half().float() * 3).sum().backward()
    np.testing.assert_array_equal(x.grad._data, tx.grad.numpy())


# ---- argmax / argmin -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("dim", [None, 0, 1, -1, 2])
@pytest.mark.parametrize("keepdim", [False, True])
def test_argmax_argmin_vs_torch(name, dim, keepdim):
    a = rn(4, 5, 3)
    a[1, :, 0] = 7.0  # ties: the first index wins in both
    a[:, 2, 1] = -7.0
    kw = {} if dim is None else {"dim": dim}
    out = getattr(fg.tensor(a), name)(keepdim=keepdim, **kw)
    want = getattr(torch.tensor(a), name)(keepdim=keepdim, **kw)
    assert_same(out, want)


def test_argmax_int_input_and_0d():
    i = np.array([[3, 9, 9], [-1, -5, -5]], np.int64)
    assert_same(fg.tensor(i).argmax(1), torch.tensor(i).argmax(1))
    assert_same(fg.tensor(i).argmin(0), torch.tensor(i).argmin(0))
    s = np.float32(2.5)
    assert_same(fg.tensor(s).argmax(), torch.tensor(s).argmax())
    assert_same(fg.tensor(s).argmin(dim=0), torch.tensor(s).argmin(dim=0))


def test_argmax_errors():
    with pytest.raises(IndexError, match="dim out of range"):
        fg.tensor(rn(2, 3)).argmax(dim=2)
    with pytest.raises(ValueError, match="non-zero size"):
        fg.tensor(np.zeros((2, 0), np.float32)).argmin(dim=1)
    with pytest.raises(ValueError, match="empty tensor"):
        fg.tensor(np.zeros((0,), np.float32)).argmax()


def test_argmax_recorded_not_differentiable():
    x = fg.tensor(rn(3, 4), requires_grad=True)
    with trace() as rec:
        i = x.argmax(dim=1, keepdim=True)
        j = x.argmin()
    assert [r[0] for r in rec.records] == [C.ArgMaxFunction, C.ArgMinFunction]
    assert rec.records[0][2] == {"dim": 1, "keepdim": True}
    assert i.dtype == np.int64 and not i.requires_grad and i.grad_fn is None
    assert j.shape == () and j.item() == int(np.argmin(x._data))


# ---- where -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cond_kind", ["bool_tensor", "float_tensor", "int_tensor", "ndarray", "list"])
def test_where_conditions_vs_torch(cond_kind):
    a, b = rn(3, 4), rn(4)
    c = np.array([[1.0, 0.0, -2.0, 0.0]] * 3, np.float32)
    cond = {"bool_tensor": fg.tensor(c != 0), "float_tensor": fg.tensor(c),
            "int_tensor": fg.tensor(c.astype(np.int64)), "ndarray": c, "list": c.tolist()}[cond_kind]
    compare(lambda x, y: fg.where(cond, x, y), lambda x, y: torch.where(torch.tensor(c != 0), x, y), [a, b])


def test_where_records_its_tensor_condition():
    x = fg.tensor(rn(3, 4))
    with trace() as rec:
        mask = x > 0.5
        y = fg.where(mask, x, 0.0)
        z = fg.where(x, x, 2.0)  # a float condition is cast to bool by a recorded op
    kinds = [r[0] for r in rec.records]
    assert kinds == [C.CompareFunction, E.WhereFunction, C.CastFunction, E.WhereFunction]
    assert rec.records[1][1][0] is mask  # the Compare output itself, not a copy of its data
    cast_out = rec.records[2][3][0]
    assert cast_out.dtype == np.bool_ and rec.records[3][1][0] is cast_out
    np.testing.assert_array_equal(y._data, np.where(x._data > 0.5, x._data, 0).astype(np.float32))
    np.testing.assert_array_equal(z._data, np.where(x._data != 0, x._data, 2.0).astype(np.float32))


# ---- var / std --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [None, 0, 1, -1, (0, 2), (2, -3), ()])
@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("keepdim", [False, True])
def test_var_std_vs_torch(dim, unbiased, keepdim):
    x = rn(4, 5, 3)

    def call(t, name, d):
        if d is None:
            return getattr(t, name)(unbiased=unbiased) if not keepdim else getattr(t, name)(
                dim=(0, 1, 2), unbiased=unbiased, keepdim=True)
        return getattr(t, name)(dim=d, unbiased=unbiased, keepdim=keepdim)

    # dim=() reduces every axis in torch's forward, but torch's backward then divides by n - 1 = 0
    # (inf gradients): compare against dim=None there, which is what the forward computes
    th_dim = None if dim == () else dim
    for name in ("var", "std"):
        compare(lambda t: call(t, name, dim), lambda t: call(t, name, th_dim), [x])
    np.testing.assert_allclose(call(fg.tensor(x), "var", dim)._data, call(torch.tensor(x), "var", dim).numpy(),
                               rtol=1e-5, atol=1e-6)  # torch's own forward with the same dim


def test_var_default_matches_torch_and_uses_one_op():
    x = rn(6, 5)
    compare(lambda t: t.var(1), lambda t: t.var(1), [x])
    with trace() as rec:
        fg.tensor(x).var(0)
        fg.tensor(x).std(dim=1, keepdim=True)
    assert [r[0].op.name for r in rec.records] == ["var", "std"]  # std: one op (its gradient at 0 is 0)
    assert rec.records[1][2] == {"dim": 1, "unbiased": True, "keepdim": True}


def test_var_single_element_is_nan_like_torch():
    x = np.array([[1.5], [2.0]], np.float32)
    with pytest.warns(UserWarning, match="degrees of freedom"):
        out = fg.tensor(x).var(dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = torch.tensor(x).var(dim=1)
    assert np.all(np.isnan(out._data)) and np.all(np.isnan(want.numpy()))
    # biased: the variance of one element is 0
    assert_same(fg.tensor(x).var(dim=1, unbiased=False), torch.tensor(x).var(dim=1, unbiased=False))


def test_var_int_input_is_float32():
    i = np.array([[1, 2, 4], [3, 3, 9]], np.int64)
    out = fg.tensor(i).var(dim=1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out._data, np.var(i, axis=1, ddof=1), rtol=1e-6)


def test_var_op_direct():
    x = fg.tensor(rn(3, 7), requires_grad=True)
    y = ST.VarFunction.apply(x, dim=1, unbiased=False)
    tx = torch.tensor(x._data, requires_grad=True)
    ty = tx.var(dim=1, unbiased=False)
    np.testing.assert_allclose(y._data, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(x.grad._data, tx.grad.numpy(), rtol=1e-5, atol=1e-6)


# ---- in-place assignment while tracing ------------------------------------------------------------
def test_setitem_raises_inside_trace_only():
    x = fg.tensor(rn(3, 4))
    with trace():
        with pytest.raises(RuntimeError, match="in-place assignment.*trace"):
            x[0] = 1.0
        with fg.no_grad(), pytest.raises(RuntimeError, match="cannot|not recorded"):
            x[:, 1] = fg.tensor(rn(3))
    assert not np.any(x._data[0] == 1.0)  # nothing was written
    x[0] = 1.0  # outside trace() it works as before
    np.testing.assert_array_equal(x._data[0], np.ones(4, np.float32))


def test_setitem_leaf_requires_grad_error_unchanged():
    w = fg.tensor(rn(2, 2), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w[0, 0] = 3.0
    with fg.no_grad():
        w[0, 0] = 3.0
    assert w._data[0, 0] == 3.0
