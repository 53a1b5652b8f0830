"""torch's shape and structure functions (forgegrad._torch_shape, _torch_shape_more, ops/window.py) against torch 2.13
on odd shapes: values, gradients through backward, negative dims, empty tensors, views that torch guarantees
(writing through them changes the base), in-place methods, and errors naming the argument."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg

R = np.random.default_rng(11)


def rn(*shape):
    return R.standard_normal(shape).astype(np.float32)


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check(call, *arrays, grad=True, rtol=1e-5, atol=1e-6):
    """call(lib, *tensors) run with lib = forgegrad and lib = torch on the same arrays: every output's values and
    shape, and the gradients of the float inputs for random output gradients."""
    req = [grad and a.dtype.kind == "f" for a in arrays]
    fi = [fg.tensor(a.copy(), requires_grad=r) for a, r in zip(arrays, req)]
    ti = [torch.tensor(a.copy(), requires_grad=r) for a, r in zip(arrays, req)]
    fo, to = _flat(call(fg, *fi)), _flat(call(torch, *ti))
    assert len(fo) == len(to)
    for a, b in zip(fo, to):
        assert tuple(a.shape) == tuple(b.shape)
        assert a.numpy().dtype == b.detach().numpy().dtype, (a.numpy().dtype, b.dtype)
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=rtol, atol=atol)
    if not any(req):
        return
    pairs = [(a, b) for a, b in zip(fo, to) if b.requires_grad]
    assert pairs, "torch's output has a gradient"
    for k, (a, b) in enumerate(pairs):
        g = np.random.default_rng(k).standard_normal(b.shape).astype(b.detach().numpy().dtype)
        last = k == len(pairs) - 1
        a.backward(fg.tensor(g), retain_graph=not last)
        b.backward(torch.tensor(g), retain_graph=not last)
    for i, (a, b) in enumerate(zip(fi, ti)):
        if b.grad is None:
            assert a.grad is None or not np.any(a.grad.numpy()), f"input {i}: torch has no gradient"
            continue
        assert a.grad is not None, f"input {i}: forgegrad has no gradient"
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=rtol, atol=atol, err_msg=f"grad {i}")


CASES = {
    "clone": (lambda m, a: m.clone(a), [rn(3, 5)]),
    "hstack 2d": (lambda m, a, b: m.hstack([a, b]), [rn(3, 2), rn(3, 5)]),
    "hstack 1d/0d": (lambda m, a, b: m.hstack((a, b)), [rn(3), rn()]),
    "vstack": (lambda m, a, b: m.vstack([a, b]), [rn(5), rn(2, 5)]),
    "row_stack": (lambda m, a, b: m.row_stack([a, b]), [rn(5), rn(5)]),
    "dstack": (lambda m, a, b, c: m.dstack([a, b, c]), [rn(3), rn(1, 3), rn(1, 3, 2)]),
    "column_stack": (lambda m, a, b, c: m.column_stack([a, b, c]), [rn(4), rn(4, 3), rn(4)]),
    "concat": (lambda m, a, b: m.concat([a, b], dim=-1), [rn(2, 3), rn(2, 1)]),
    "concatenate axis": (lambda m, a, b: m.concatenate([a, b], axis=0), [rn(2, 3), rn(1, 3)]),
    "atleast_1d": (lambda m, a, b: m.atleast_1d(a, b), [rn(), rn(2, 3)]),
    "atleast_2d": (lambda m, a, b: m.atleast_2d([a, b]), [rn(), rn(4)]),
    "atleast_3d": (lambda m, a, b, c: m.atleast_3d(a, b, c), [rn(), rn(4), rn(2, 3)]),
    "tensor_split sections": (lambda m, a: m.tensor_split(a, 3, dim=-1), [rn(2, 7)]),
    "tensor_split indices": (lambda m, a: m.tensor_split(a, [1, -1, 9], dim=0), [rn(5, 2)]),
    "tensor_split tensor": (lambda m, a: m.tensor_split(a, m.tensor([2, 1]), 1), [rn(2, 5)]),
    "tensor_split 0-d tensor": (lambda m, a: m.tensor_split(a, m.tensor(4)), [rn(6)]),
    "tensor_split keywords": (lambda m, a: m.tensor_split(a, indices=[2], dim=1) + a.tensor_split(sections=2),
                              [rn(3, 4)]),
    "tensor_split method tensor": (lambda m, a: a.tensor_split(tensor_indices_or_sections=m.tensor([0, 3])),
                                   [rn(5)]),
    "hsplit": (lambda m, a: m.hsplit(a, [1, 3]), [rn(2, 5, 3)]),
    "hsplit 1d": (lambda m, a: m.hsplit(a, 2), [rn(6)]),
    "vsplit": (lambda m, a: m.vsplit(a, 2), [rn(4, 3)]),
    "dsplit": (lambda m, a: m.dsplit(a, [2]), [rn(2, 1, 5)]),
    "split_with_sizes": (lambda m, a: m.split_with_sizes(a, [2, 0, 3], dim=-2), [rn(3, 5, 2)]),
    "unsafe_split": (lambda m, a: a.unsafe_split(2, 1), [rn(3, 5)]),
    "unsafe_chunk": (lambda m, a: m.unsafe_chunk(a, 3), [rn(7, 2)]),
    "swapaxes": (lambda m, a: m.swapaxes(a, 0, -1), [rn(2, 3, 4)]),
    "swapdims method": (lambda m, a: a.swapdims(-1, 1), [rn(2, 3, 4)]),
    "ravel": (lambda m, a: m.ravel(a.transpose(0, 1)), [rn(3, 4)]),
    "unflatten": (lambda m, a: m.unflatten(a, -1, (2, -1, 3)), [rn(2, 12)]),
    "unflatten method": (lambda m, a: a.unflatten(0, (1, 5)), [rn(5, 2)]),
    "unfold overlapping": (lambda m, a: a.unfold(1, 3, 2), [rn(2, 9, 3)]),
    "unfold dim -1 gaps": (lambda m, a: a.unfold(-1, 2, 3), [rn(4, 8)]),
    "unfold 0-d": (lambda m, a: a.unfold(0, 1, 1), [rn()]),
    "unfold of a transposed view": (lambda m, a: a.t().unfold(0, 2, 1).unfold(1, 2, 2), [rn(3, 5)]),
    "unfold of a slice": (lambda m, a: a[1:, 2:].unfold(-1, 3, 1), [rn(3, 7)]),
    "vander bool": (lambda m: m.vander(m.tensor([True, False, True])), []),
    "unfold size 0": (lambda m, a: a.unfold(0, 0, 2), [rn(5)]),
    "rot90 k=1": (lambda m, a: m.rot90(a), [rn(3, 5)]),
    "rot90 k=-1 dims": (lambda m, a: m.rot90(a, -1, [2, 0]), [rn(2, 3, 4)]),
    "rot90 k=2 method": (lambda m, a: a.rot90(2, [1, 2]), [rn(2, 3, 4)]),
    "rot90 k=7": (lambda m, a: m.rot90(a, 7, (-1, -2)), [rn(3, 4)]),
    "diff": (lambda m, a: m.diff(a), [rn(3, 6)]),
    "diff n=2 dim 0": (lambda m, a: m.diff(a, n=2, dim=0), [rn(5, 3)]),
    "diff prepend append": (lambda m, a, p, q: m.diff(a, 2, -1, p, q), [rn(2, 4), rn(2, 1), rn(2, 3)]),
    "diff n past size": (lambda m, a: m.diff(a, n=5), [rn(2, 3)]),
    "diff bool": (lambda m, a: m.diff(a), [rn(9) > 0]),
    "diff int": (lambda m, a: m.diff(a, dim=0), [(rn(4, 2) * 5).astype(np.int64)]),
    "cross dim": (lambda m, a, b: m.cross(a, b, dim=0), [rn(3, 4), rn(3, 4)]),
    "cross method broadcast": (lambda m, a, b: a.cross(b, dim=-1), [rn(2, 3), rn(1, 3)]),
    "cross linalg": (lambda m, a, b: m.linalg.cross(a, b), [rn(5, 3), rn(5, 3)]),
    "trapezoid": (lambda m, a: m.trapezoid(a), [rn(3, 7)]),
    "trapezoid dx": (lambda m, a: m.trapezoid(a, dx=0.3, dim=0), [rn(5, 2)]),
    "trapezoid x 1d": (lambda m, y, x: m.trapezoid(y, x, dim=-1), [rn(2, 6), rn(6)]),
    "trapezoid x full": (lambda m, y, x: m.trapezoid(y, x, dim=0), [rn(4, 3), rn(4, 3)]),
    "trapz": (lambda m, y, x: m.trapz(y, x), [rn(3, 5), rn(3, 5)]),
    "trapz dx": (lambda m, y: m.trapz(y, dx=2.5), [rn(5)]),
    "cumulative_trapezoid": (lambda m, y: m.cumulative_trapezoid(y, dim=0), [rn(5, 3)]),
    "cumulative_trapezoid x": (lambda m, y, x: m.cumulative_trapezoid(y, x), [rn(2, 5), rn(5)]),
    "block_diag": (lambda m, a, b, c: m.block_diag(a, b, c), [rn(), rn(3), rn(2, 4)]),
    "block_diag one": (lambda m, a: m.block_diag(a), [rn(2, 3)]),
    "block_diag int and float": (lambda m, a: m.block_diag(m.tensor([1, 2]), a, m.tensor([[True]])), [rn(2, 2)]),
    "trapezoid int": (lambda m: m.trapezoid(m.tensor([1, 2, 4])), []),
    "cartesian_prod": (lambda m, a, b, c: m.cartesian_prod(a, b, c), [rn(2), rn(3), rn(1)]),
    "cartesian_prod one": (lambda m, a: m.cartesian_prod(a), [rn(3)]),
    "combinations": (lambda m, a: m.combinations(a), [rn(5)]),
    "combinations r=3 repl": (lambda m, a: m.combinations(a, 3, with_replacement=True), [rn(4)]),
    "combinations r=1": (lambda m, a: m.combinations(a, r=1), [rn(3)]),
    "combinations r>n": (lambda m, a: m.combinations(a, r=3), [rn(2)]),
    "repeat_interleave int": (lambda m, a: m.repeat_interleave(a, 3), [rn(2, 3)]),
    "repeat_interleave int dim": (lambda m, a: a.repeat_interleave(2, dim=-1), [rn(2, 3)]),
    "repeat_interleave tensor": (lambda m, a: m.repeat_interleave(a, m.tensor([1, 0, 3]), 0), [rn(3, 2)]),
    "repeat_interleave 1-elem tensor": (lambda m, a: m.repeat_interleave(a, m.tensor([2]), dim=1), [rn(2, 3)]),
    "repeat_interleave output_size": (lambda m, a: m.repeat_interleave(a, m.tensor([2, 1]), 0, output_size=3),
                                      [rn(2, 2)]),
    "repeat_interleave 0-d": (lambda m, a: a.repeat_interleave(2), [rn()]),
    "repeat_interleave counts only": (lambda m: m.repeat_interleave(m.tensor([2, 0, 1])), []),
    # torch 2.13's vander backward raises (an in-place cumprod): its gradient is checked in test_vander_gradient
    "vander": (lambda m, a: m.vander(a), [rn(4)], {"grad": False}),
    "vander N increasing": (lambda m, a: m.vander(a, N=3, increasing=True), [np.array([0., 1.5, -2.], np.float32)],
                            {"grad": False}),
    "vander int": (lambda m: m.vander(m.tensor([1, 2, 3]), 4), []),
    "select": (lambda m, a: m.select(a, 1, -2), [rn(3, 4, 2)]),
    "select method": (lambda m, a: a.select(-1, 0), [rn(3, 4)]),
    "select_scatter": (lambda m, a, s: m.select_scatter(a, s, -1, 1), [rn(3, 4), rn(3)]),
    "slice_scatter step": (lambda m, a, s: m.slice_scatter(a, s, 1, 1, None, 2), [rn(2, 6), rn(2, 3)]),
    "slice_scatter default": (lambda m, a, s: a.slice_scatter(s, start=-2), [rn(5, 2), rn(2, 2)]),
    "diagonal_scatter": (lambda m, a, s: m.diagonal_scatter(a, s), [rn(3, 5), rn(3)]),
    "diagonal_scatter offset dims": (lambda m, a, s: m.diagonal_scatter(a, s, -1, 2, 0), [rn(4, 2, 3), rn(2, 2)]),
    "diagflat": (lambda m, a: m.diagflat(a), [rn(2, 2)]),
    "diagflat offset": (lambda m, a: a.diagflat(-2), [rn(3)]),
    "addcmul": (lambda m, a, b, c: m.addcmul(a, b, c, value=-0.5), [rn(3, 1), rn(1, 4), rn(3, 4)]),
    "addcdiv": (lambda m, a, b, c: a.addcdiv(b, c * c + 1, value=2), [rn(3, 4), rn(3, 4), rn(4)]),
    "dist": (lambda m, a, b: m.dist(a, b), [rn(3, 4), rn(4)]),
    "dist p=3": (lambda m, a, b: a.dist(b, 3), [rn(5), rn(5)]),
    "dist inf": (lambda m, a, b: m.dist(a, b, float("inf")), [rn(2, 3), rn(2, 3)]),
    "dist p=0": (lambda m, a, b: m.dist(a, b, 0), [rn(4), rn(4)], {"grad": False}),  # torch's backward fails
    "renorm": (lambda m, a: m.renorm(a, 2, 0, 1.0), [rn(4, 3) * 2]),
    "renorm p1 dim -1": (lambda m, a: a.renorm(1, -1, 1.5), [rn(2, 3, 4)]),
    "renorm 3-d dim 1": (lambda m, a: m.renorm(a, 3, 1, 0.7), [rn(2, 3, 2)]),
    "sum_to_size": (lambda m, a: a.sum_to_size(3, 1), [rn(2, 3, 4)]),
    "sum_to_size tuple": (lambda m, a: a.sum_to_size((1, 4)), [rn(5, 4)]),
    "index_put": (lambda m, a, v: m.index_put(a, (m.tensor([0, 2]), m.tensor([1, -1])), v), [rn(3, 4), rn(2)]),
    "index_put broadcast": (lambda m, a, v: a.index_put((m.tensor([[1], [0]]), m.tensor([[3, 0]])), v),
                            [rn(2, 5), rn(1)]),
    "index_put bool": (lambda m, a, v: m.index_put(a, (m.tensor([True, False, True]),), v), [rn(3, 2), rn(2)]),
    "index_put accumulate": (lambda m, a, v: m.index_put(a, (m.tensor([1, 1, 0]),), v, accumulate=True),
                             [rn(3, 2), rn(3, 2)]),
    "put": (lambda m, a, s: m.put(a, m.tensor([0, -1, 4]), s), [rn(2, 3), rn(3)]),
    "put accumulate": (lambda m, a, s: a.put(m.tensor([[1, 1], [5, 0]]), s, accumulate=True), [rn(3, 2), rn(2, 2)]),
    "mT": (lambda m, a: a.mT, [rn(2, 3, 4)]),
    "mH": (lambda m, a: a.mH, [rn(3, 4)]),
    "H": (lambda m, a: a.H, [rn(3, 4)]),
    "adjoint": (lambda m, a: m.adjoint(a), [rn(2, 3, 5)]),
    "adjoint method": (lambda m, a: a.adjoint(), [rn(3, 5)]),
    "tril method": (lambda m, a: a.tril(-1), [rn(2, 4, 3)]),
    "triu method": (lambda m, a: a.triu(1), [rn(4, 3)]),
    "where method": (lambda m, a, b: a.where(a > 0, b), [rn(3, 4), rn(4)]),
    "mm method": (lambda m, a, b: a.mm(b), [rn(3, 4), rn(4, 2)]),
    "bmm method": (lambda m, a, b: a.bmm(b), [rn(2, 3, 4), rn(2, 4, 5)]),
    "empty hstack": (lambda m, a, b: m.hstack([a, b]), [rn(0, 3), rn(0, 2)]),
    "empty tensor_split": (lambda m, a: m.tensor_split(a, 3), [rn(0, 2)]),
    "empty diff": (lambda m, a: m.diff(a, dim=0), [rn(0, 3)]),
    "empty repeat_interleave": (lambda m, a: m.repeat_interleave(a, 2, 1), [rn(2, 0)]),
    "empty unfold": (lambda m, a: a.unfold(1, 2, 1), [rn(0, 4)]),
    "empty rot90": (lambda m, a: m.rot90(a), [rn(0, 3)]),
    "float64 unfold": (lambda m, a: a.unfold(0, 2, 2), [rn(5, 2).astype(np.float64)]),
    "float64 diff": (lambda m, a: m.diff(a), [rn(2, 5).astype(np.float64)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_against_torch(name):
    call, arrays, *options = CASES[name]
    check(call, *arrays, **(options[0] if options else {}))


def test_vander_gradient():
    """torch 2.13's vander backward raises, so the reference is torch's powers x**k (k >= 1) and a zero column."""
    x = rn(5)
    f = fg.tensor(x, requires_grad=True)
    g = rn(5, 4)
    fg.vander(f, 4).backward(fg.tensor(g))
    t = torch.tensor(x, requires_grad=True)
    ref = torch.cat([t.unsqueeze(1) ** torch.arange(3, 0, -1), torch.ones(5, 1)], 1)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_methods_exist_where_torch_has_them():
    names = ["tril", "triu", "tril_", "triu_", "where", "mm", "bmm", "unsafe_chunk", "unsafe_split", "swapaxes",
             "swapdims", "ravel", "unflatten", "unfold", "rot90", "diff", "cross", "repeat_interleave", "select",
             "addcmul", "addcdiv", "addcmul_", "addcdiv_", "dist", "renorm", "renorm_", "sum_to_size",
             "fill_diagonal_", "index_put", "index_put_", "put", "put_", "adjoint", "tensor_split", "hsplit",
             "vsplit", "dsplit", "split_with_sizes", "diagflat", "select_scatter", "slice_scatter",
             "diagonal_scatter", "mT", "mH", "H", "T"]
    assert [n for n in names if hasattr(torch.Tensor, n) and not hasattr(fg.Tensor, n)] == []
    funcs = ["clone", "hstack", "vstack", "row_stack", "dstack", "column_stack", "concat", "concatenate",
             "atleast_1d", "atleast_2d", "atleast_3d", "tensor_split", "hsplit", "vsplit", "dsplit",
             "split_with_sizes", "swapaxes", "swapdims", "ravel", "unflatten", "rot90", "diff", "cross", "trapezoid",
             "trapz", "cumulative_trapezoid", "block_diag", "cartesian_prod", "combinations", "repeat_interleave",
             "vander", "select", "select_scatter", "slice_scatter", "diagonal_scatter", "diagflat", "addcmul",
             "addcdiv", "dist", "renorm", "index_put", "index_put_", "put", "adjoint", "unsafe_chunk", "unsafe_split"]
    assert [n for n in funcs if not hasattr(fg, n)] == []
    assert set(funcs) <= set(fg.__all__)
    assert fg.concat is not None and "concat" not in fg._TORCH_NAMES


# ---- views: torch guarantees these share the input's storage ------------------------------------------------
@pytest.mark.parametrize("make,write", [
    (lambda m, x: x.unfold(1, 3, 2), (0, 1, 2)),
    (lambda m, x: m.swapaxes(x, 0, 1), (3, 1)),
    (lambda m, x: x.swapdims(1, 0), (2, 0)),
    (lambda m, x: m.select(x, 1, -1), (2,)),
    (lambda m, x: m.tensor_split(x, 2, 1)[1], (0, 1)),
    (lambda m, x: m.hsplit(x, [2])[0], (1, 1)),
    (lambda m, x: m.unflatten(x, 1, (2, 3)), (1, 1, 2)),
    (lambda m, x: x.mT, (4, 2)),
    (lambda m, x: m.ravel(x), (7,)),
    (lambda m, x: m.atleast_3d(x), (1, 2, 0)),
])
def test_views_write_through(make, write):
    a = np.arange(30, dtype=np.float32).reshape(5, 6)
    f, t = fg.tensor(a.copy()), torch.tensor(a.copy())
    vf, vt = make(fg, f), make(torch, t)
    vf[write] = -1.0
    vt[write] = -1.0
    np.testing.assert_array_equal(f.numpy(), t.numpy())
    assert (f.numpy() == -1).any()


def test_copies_do_not_write_through():
    a = rn(3, 4)
    f = fg.tensor(a.copy())
    for out in (fg.rot90(f), fg.clone(f), fg.repeat_interleave(f, 1, 0), fg.hstack([f, f]),
                fg.slice_scatter(f, f[:1], 0, 0, 1)):
        out[0, 0] = 100.0
    np.testing.assert_array_equal(f.numpy(), a)


def test_unfold_gradient_through_a_write_into_its_base():
    """An in-place write through windows that do not overlap reaches the base's graph (values and gradients as
    torch's); through overlapping windows under autograd it is refused with torch's overlap message (torch 2.13
    writes the shared elements twice and its gradient counts them once: x*2 -> unfold(0, 3, 2).mul_(2) gives 16 at
    element 2 and a gradient of 4 there)."""
    res = []
    for m in (fg, torch):
        x = m.tensor(np.arange(8, dtype=np.float32) / 3, requires_grad=True)
        h = x * 2
        h.unfold(0, 3, 3).mul_(h[:2].unsqueeze(1).detach() + 1)
        (h * h).sum().backward()
        res.append((h.detach().numpy(), x.grad.numpy()))
    np.testing.assert_allclose(res[0][0], res[1][0], rtol=1e-6)
    np.testing.assert_allclose(res[0][1], res[1][1], rtol=1e-6)
    h = fg.tensor(np.arange(8, dtype=np.float32), requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="single memory location"):
        h.unfold(0, 3, 2).mul_(2)


# ---- in-place methods ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,call", [
    ("tril_", lambda m, x, o: x.tril_(1)),
    ("triu_", lambda m, x, o: x.triu_(-1)),
    ("addcmul_", lambda m, x, o: x.addcmul_(o, o, value=0.5)),
    ("addcdiv_", lambda m, x, o: x.addcdiv_(o, o * o + 1, value=-2)),
    ("renorm_", lambda m, x, o: x.renorm_(2, 1, 0.5)),
    ("index_put_", lambda m, x, o: x.index_put_((m.tensor([0, 2]), m.tensor([1, 3])), o[0, :2])),
    ("index_put_ accumulate", lambda m, x, o: x.index_put_((m.tensor([1, 1]),), o[:2], accumulate=True)),
    ("put_", lambda m, x, o: x.put_(m.tensor([5, -2]), o[1, 1:3])),
    ("put_ accumulate", lambda m, x, o: x.put_(m.tensor([0, 0, 3]), o[2, :3], accumulate=True)),
    ("fill_diagonal_", lambda m, x, o: x.fill_diagonal_(2.5)),
    ("index_put_ function", lambda m, x, o: m.index_put_(x, (m.tensor([2]),), o[1])),
])
def test_inplace_methods_match_torch(name, call):
    a, b = rn(3, 4), rn(3, 4)
    res = {}
    for m in (fg, torch):
        leaf = m.tensor(a.copy(), requires_grad=True)
        other = m.tensor(b.copy(), requires_grad=True)
        x = leaf * 1.5  # a graph tensor: in place is allowed there
        out = call(m, x, other)
        assert out is x
        g = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
        x.backward(m.tensor(g))
        res[m.__name__] = (x.detach().numpy(), leaf.grad.numpy(),
                           None if other.grad is None else other.grad.numpy())
    (xf, gf, of), (xt, gt, ot) = res["forgegrad"], res["torch"]
    np.testing.assert_allclose(xf, xt, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gf, gt, rtol=1e-5, atol=1e-6)
    if ot is None:
        assert of is None or not of.any()
    else:
        np.testing.assert_allclose(of, ot, rtol=1e-5, atol=1e-6)


def test_inplace_on_a_leaf_that_requires_grad_refuses():
    x = fg.tensor(rn(3, 3), requires_grad=True)
    for call in (lambda: x.tril_(), lambda: x.fill_diagonal_(0.0), lambda: x.put_(fg.tensor([0]), fg.tensor([1.0]))):
        with pytest.raises(RuntimeError, match="leaf"):
            call()


@pytest.mark.parametrize("shape,wrap", [((7, 3), True), ((7, 3), False), ((3, 5), True), ((4, 4, 4), False),
                                        ((4, 5), False), ((5, 4), True)])
def test_fill_diagonal(shape, wrap):
    f, t = fg.zeros(shape), torch.zeros(shape)
    f.fill_diagonal_(3.0, wrap=wrap)
    t.fill_diagonal_(3.0, wrap=wrap)
    np.testing.assert_array_equal(f.numpy(), t.numpy())
    i = fg.zeros((3, 3), dtype=fg.int64)
    i.fill_diagonal_(7)
    np.testing.assert_array_equal(i.numpy(), np.eye(3, dtype=np.int64) * 7)


def test_double_backward_through_compositions():
    """The compositions are made of differentiable ops, so grad of grad matches torch's."""
    a = rn(3, 5)
    outs = {}
    for m in (fg, torch):
        x = m.tensor(a.copy(), requires_grad=True)
        y = m.diff(x * x, dim=1).sum() + m.rot90(x ** 3).sum() + x.unfold(1, 2, 1).pow(2).sum()
        (gx,) = m.autograd.grad(y, x, create_graph=True)
        (ggx,) = m.autograd.grad((gx * gx).sum(), x)
        outs[m.__name__] = ggx.detach().numpy()
    np.testing.assert_allclose(outs["forgegrad"], outs["torch"], rtol=1e-4, atol=1e-4)


# ---- errors: a clear exception naming the argument ------------------------------------------------------------
X, V = fg.tensor(rn(3, 4)), fg.tensor(rn(4))


@pytest.mark.parametrize("call,error,match", [
    (lambda: fg.clone(np.zeros(2)), TypeError, "input"),
    (lambda: fg.hstack(X), TypeError, "tensors"),
    (lambda: fg.vstack([X, "a"]), TypeError, r"tensors\[1\]"),
    (lambda: fg.dstack([]), ValueError, "tensors"),
    (lambda: fg.concat([X, fg.tensor(rn(2, 5))]), ValueError, "shapes"),
    (lambda: fg.tensor_split(X, 0), RuntimeError, "sections"),
    (lambda: fg.tensor_split(X, 2, dim=2), IndexError, "dim"),
    (lambda: fg.tensor_split(X, fg.tensor([[1]])), RuntimeError, "tensor_indices_or_sections"),
    (lambda: fg.tensor_split(X, fg.tensor([1.0])), TypeError, "tensor_indices_or_sections"),
    (lambda: fg.tensor_split(X, [1.5]), TypeError, "indices"),
    (lambda: fg.hsplit(X, 3), RuntimeError, "divisible"),
    (lambda: fg.vsplit(V, 2), RuntimeError, "at least 2"),
    (lambda: fg.dsplit(X, 2), RuntimeError, "at least 3"),
    (lambda: fg.split_with_sizes(X, [1, 1]), RuntimeError, "sizes"),
    (lambda: fg.swapaxes(X, 0, 2), IndexError, "dim1"),
    (lambda: fg.unflatten(X, 1, (3, 2)), RuntimeError, "sizes"),
    (lambda: fg.unflatten(X, 1, (-1, -1)), RuntimeError, "sizes"),
    (lambda: X.unflatten(5, (2, 2)), IndexError, "dim"),
    (lambda: fg.select(X, 1, 4), IndexError, "index"),
    (lambda: fg.select(X, 2, 0), IndexError, "dim"),
    (lambda: X.unfold(1, 5, 1), RuntimeError, "size"),
    (lambda: X.unfold(1, 2, 0), RuntimeError, "step"),
    (lambda: X.unfold(2, 1, 1), IndexError, "dimension"),
    (lambda: fg.rot90(X, 1, [0, 0]), RuntimeError, "dims"),
    (lambda: fg.rot90(V), RuntimeError, "dims"),
    (lambda: fg.rot90(X, 1.0), TypeError, "k"),
    (lambda: fg.diff(X, n=-1), RuntimeError, "order"),
    (lambda: fg.diff(X, prepend=V), RuntimeError, "prepend"),
    (lambda: fg.diff(X, append=fg.tensor(rn(2, 4))), ValueError, "shapes"),
    (lambda: fg.cross(X[:2], X[:2]), RuntimeError, "size 3"),
    (lambda: fg.cross(X, X, dim=1), RuntimeError, "length 3"),
    (lambda: fg.trapezoid(X, X, dx=1.0), TypeError, "dx"),
    (lambda: fg.trapezoid(X, fg.tensor(rn(3))), RuntimeError, "x"),
    (lambda: fg.trapz(X, dx="a"), TypeError, "dx"),
    (lambda: fg.block_diag(fg.tensor(rn(1, 2, 3))), RuntimeError, "Input 0"),
    (lambda: fg.cartesian_prod(V, X), RuntimeError, r"tensors\[1\]"),
    (lambda: fg.combinations(X), RuntimeError, "1D"),
    (lambda: fg.combinations(V, -1), RuntimeError, "non-negative"),
    (lambda: fg.repeat_interleave(X, -1), RuntimeError, "repeats"),
    (lambda: fg.repeat_interleave(X, fg.tensor([1, 2]), 0), RuntimeError, "repeats"),
    (lambda: fg.repeat_interleave(X, fg.tensor([1.0, 2.0, 3.0]), 0), RuntimeError, "repeats"),
    (lambda: fg.repeat_interleave(X, 2, output_size=5), RuntimeError, "output_size"),
    (lambda: fg.repeat_interleave(X, 2.5), TypeError, "repeats"),
    (lambda: fg.vander(X), RuntimeError, "one-dimensional"),
    (lambda: fg.vander(V, N=-1), RuntimeError, "N"),
    (lambda: fg.select_scatter(X, V, 1, 0), RuntimeError, "src"),
    (lambda: fg.slice_scatter(X, X, 0, 0, 2), RuntimeError, "src"),
    (lambda: fg.slice_scatter(X, X, step=0), RuntimeError, "step"),
    (lambda: fg.diagonal_scatter(X, V), RuntimeError, "src"),
    (lambda: fg.addcmul(X, V, 2.0), TypeError, "tensor2"),
    (lambda: fg.addcmul(X, V, V, value=V), TypeError, "value"),
    (lambda: fg.addcdiv(X.long(), V.long(), V.long()), RuntimeError, "Integer division"),
    (lambda: fg.dist(X, V, p="fro"), TypeError, "p"),
    (lambda: fg.renorm(X, 0, 0, 1.0), RuntimeError, "non-positive"),
    (lambda: fg.renorm(X, 2, 0, -1.0), RuntimeError, "maxnorm"),
    (lambda: fg.renorm(V, 2, 0, 1.0), RuntimeError, "2 dimensions"),
    (lambda: X.sum_to_size(2), RuntimeError, "expandable"),
    (lambda: X.sum_to_size(1, 1, 3, 4), RuntimeError, "expandable"),
    (lambda: X.fill_diagonal_(fg.tensor(1.0)), TypeError, "fill_value"),
    (lambda: V.clone().fill_diagonal_(1.0), RuntimeError, "dimensions"),
    (lambda: fg.zeros((2, 3, 2)).fill_diagonal_(1.0), RuntimeError, "equal length"),
    (lambda: fg.index_put(X, fg.tensor([0]), V), TypeError, "indices"),
    (lambda: fg.index_put(X, (fg.tensor([5]),), V), IndexError, "index"),
    (lambda: fg.index_put(X, (fg.tensor([0.5]),), V), IndexError, r"indices\[0\]"),
    (lambda: fg.index_put(X, (None, fg.tensor([0])), V), TypeError, r"indices\[0\]"),
    (lambda: fg.index_put(X, (fg.tensor([0]),), fg.tensor(rn(3))), RuntimeError, "shape mismatch"),
    (lambda: fg.index_put(X, (fg.tensor([0]),), V.double()), RuntimeError, "dtypes"),
    (lambda: fg.put(X, fg.tensor([12]), fg.tensor([1.0])), IndexError, "index"),
    (lambda: fg.put(X, fg.tensor([0, 1]), fg.tensor([1.0])), RuntimeError, "same number of elements"),
    (lambda: fg.put(X, fg.tensor([0.0]), fg.tensor([1.0])), TypeError, "index"),
    (lambda: V.mT, RuntimeError, "mT"),
    (lambda: fg.zeros((2, 2, 2)).H, RuntimeError, "mH"),
    (lambda: fg.adjoint(V), RuntimeError, "adjoint"),
    (lambda: X.mm(fg.tensor(rn(2, 3, 4))), RuntimeError, "mat2"),
    (lambda: X.mm(X), RuntimeError, "shapes cannot be multiplied"),
    (lambda: X.bmm(X), RuntimeError, "3D"),
    (lambda: X.where(X > 0), TypeError, "other"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_model_of_them_exports_to_onnx(tmp_path):
    """The compositions are made of exportable ops and the registry ops have mappings: the exporter's check runs
    the graph in onnxruntime against forgegrad's output."""
    pytest.importorskip("onnxruntime")

    class Net(fg.nn.Module):
        def forward(self, x):
            a, b = fg.tensor_split(x, [2], dim=1)
            w = x.unfold(1, 3, 2).sum(-1)  # (4, 2)
            y = fg.hstack([a, w, fg.rot90(b, 1, (0, 1)).mT])[:, :6] + fg.diff(x, prepend=x[:, :1])
            y = fg.select_scatter(y, fg.cross(x[:, :3], x[:, 3:6], dim=1)[:, 0], 1, 0)
            y = fg.slice_scatter(y, y[:, ::2] * 2, 1, 0, None, 2)
            z = fg.repeat_interleave(y, 2, dim=0).unflatten(0, (4, 2)).sum(1)
            return fg.addcmul(z, y, y, value=0.5) + fg.trapezoid(x, dim=1).unsqueeze(1) + x.swapaxes(0, 1).T[:, :6]

    x = fg.tensor(rn(4, 6))
    report = fg.onnx.export(Net(), (x,), str(tmp_path / "shape.onnx"), dynamic_axes={})
    assert report.verified and report.ok, report


def test_meta_device_shapes():
    x = fg.zeros((5, 7), device="meta")
    assert x.unfold(1, 3, 2).shape == (5, 3, 3)
    assert fg.rot90(x).shape == (7, 5)
    assert fg.diff(x, 2, 0).shape == (3, 7)
    assert fg.repeat_interleave(x, 3, 1).shape == (5, 21)
    assert fg.cross(fg.zeros((3, 2), device="meta"), fg.zeros((3, 1), device="meta"), dim=0).shape == (3, 2)
    assert fg.hstack([x, x]).shape == (5, 14)


def test_value_dependent_forms_refuse_inside_an_export_trace():
    """Indices or repeats computed in the traced program would become constants of the graph: refused."""
    from forgegrad.autograd import trace
    x = fg.tensor(rn(3, 4))
    with trace():
        idx = (x[:, 0] > 10).long() + 1  # computed in the trace
        for call in (lambda: fg.repeat_interleave(x, idx, 0), lambda: fg.index_put(x, (idx,), x[0, 0]),
                     lambda: fg.put(x, idx, x[0, :3])):
            with pytest.raises(RuntimeError, match="trace"):
                call()
