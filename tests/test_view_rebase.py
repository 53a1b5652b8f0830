"""Views taken before an in-place write to their base (or to another view of it) are rebased, as torch's:
they see the new values and differentiate them. Each case runs the same code on torch and forgegrad and
compares the results, the views' values and every gradient."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F


def _inputs(dtype=np.float32):
    rng = np.random.default_rng(0)
    shapes = {"x": (5, 3, 7), "y": (7,), "y2": (3, 7), "s": (), "w": (5, 3, 7), "m": (3, 5)}
    return {k: rng.standard_normal(v).astype(dtype) for k, v in shapes.items()}


def _run(lib, fn, arrays, grads):
    make = torch.tensor if lib is torch else (lambda v, requires_grad: fg.tensor(v.copy(), requires_grad=requires_grad))
    ts = {k: make(v, requires_grad=k in grads) for k, v in arrays.items()}
    outs = fn(lib, ts)
    outs[0].backward()
    values = [np.array(o.detach().numpy()) for o in outs]
    got = {k: None if ts[k].grad is None else np.array(ts[k].grad.detach().numpy()) for k in grads}
    return values, got


def _check(fn, grads=("x", "y", "y2", "s"), dtype=np.float32, none_for_zeros=()):
    """fn(lib, tensors) -> [loss, tensors whose values to compare...]. ``none_for_zeros``: inputs whose every
    path to the loss was overwritten, which forgegrad leaves without a gradient where torch gives zeros
    (copy_ and fill_ record no edge to the old value)."""
    arrays = _inputs(dtype)
    got_vals, got = _run(fg, fn, arrays, grads)
    want_vals, want = _run(torch, fn, arrays, grads)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for i, (g, w) in enumerate(zip(got_vals, want_vals)):
        assert g.shape == w.shape, i
        np.testing.assert_allclose(g, w, err_msg=f"value {i}", **tol)
    for k in grads:
        if k in none_for_zeros and got[k] is None and want[k] is not None:
            assert not want[k].any(), k
            continue
        assert (got[k] is None) == (want[k] is None), k
        if want[k] is not None:
            assert got[k].dtype == want[k].dtype, k
            np.testing.assert_allclose(got[k], want[k], err_msg=k, **tol)


def _weights(lib, t, v):
    """A fixed weighting of v's elements (so each element's gradient differs)."""
    n = int(np.prod(v.shape))
    return (lib.arange(n, dtype=v.dtype) * 0.25 - 1).reshape(*v.shape)


def _views(lib, h):
    """Views of h (5, 3, 7) of every kind, taken before a write."""
    return [h[1:4], h[2], h[:, 1, ::2], h.view(15, 7), h.reshape(5, 21)[1:, 3:9], h.transpose(0, 2),
            h.permute(1, 2, 0)[0], h[0].t(), h.narrow(2, 2, 4), h.unsqueeze(1)[:, :, 2], h[:, :1, :].squeeze(1),
            h.flatten()[4:40:3], h[:, 1:2, 3:4].expand(5, 4, 2), h.transpose(1, 2)[1:3, 2:5],
            h[1:][::2].transpose(0, 1)[1]]


def _loss(lib, t, views):
    return sum(((v * _weights(lib, t, v)).sum() for v in views), (t["w"] * 0).sum())


def _setitem_on_base(lib, t):
    h = t["x"] * 2
    vs = _views(lib, h)
    h[1, :, 2:] = t["y2"][:, 2:] * 3  # overlaps some views, not others
    h[4] = t["y"]
    return [_loss(lib, t, vs)] + vs + [h]


def test_setitem_on_base_rebases_every_kind_of_view():
    _check(_setitem_on_base)


def test_reported_example():
    for lib in (torch, fg):
        x = lib.ones(3, 4, requires_grad=True)
        y = lib.ones(4, requires_grad=True) * 1
        y.retain_grad()
        h = x * 2
        v = h[0:2]
        h[1] = y
        v.sum().backward()
        np.testing.assert_array_equal(y.grad.numpy(), np.ones(4))
        np.testing.assert_array_equal(x.grad.numpy(), [[2] * 4, [0] * 4, [0] * 4])


@pytest.mark.parametrize("write", ["mul_", "add_", "copy_", "zero_", "clamp_", "div_"])
def test_inplace_on_base(write):
    def fn(lib, t):
        h = t["x"].sin()
        vs = _views(lib, h)
        if write == "mul_":
            h.mul_(t["y"])
        elif write == "add_":
            h.add_(t["y2"] * t["s"])
        elif write == "copy_":
            h.copy_(t["y2"].exp())
        elif write == "zero_":
            h.zero_()
        elif write == "clamp_":
            h.clamp_(-0.5, 0.3)
        else:
            h.div_(t["s"].abs() + 1)
        return [_loss(lib, t, vs)] + vs + [h]
    _check(fn, none_for_zeros=("x",) if write in ("copy_", "zero_") else ())


@pytest.mark.parametrize("write", ["add_", "mul_", "copy_", "zero_", "clamp_", "setitem"])
def test_write_through_a_sibling_view(write):
    def fn(lib, t):
        h = t["x"] * t["w"]
        vs = _views(lib, h)
        w = h.transpose(0, 2)[1:5]  # (4, 3, 5): written; the other views see it
        if write == "add_":
            w.add_(t["m"] * t["s"])
        elif write == "mul_":
            w.mul_(t["m"])  # the op keeps w's old values for m's gradient
        elif write == "copy_":
            w.copy_(t["y2"][:, 2:3])
        elif write == "zero_":
            w.zero_()
        elif write == "clamp_":
            w.clamp_(min=-0.2)
        else:
            w[2, 1:] = t["y"][:5] * 2
        return [_loss(lib, t, vs) + (w * 3).sum()] + vs + [w, h]
    _check(fn, ("x", "y", "y2", "s", "m"))


def test_chained_views_and_writes_through_views_of_views():
    def fn(lib, t):
        h = t["x"] + 1
        a = h[1:]  # (4, 3, 7)
        b = a.transpose(1, 2)[::2]  # (2, 7, 3)
        c = b.reshape(2, 21)[:, 5:12]
        b[1].mul_(t["y"].unsqueeze(1))  # a view of a view of a view of h
        d = a[0].view(21)
        c[0, 1:3] = t["s"]
        return [(h * t["w"]).sum() + (c * _weights(lib, t, c)).sum() + d.sum() * 2, a, b, c, d, h]
    _check(fn)


def test_view_used_before_and_after_the_writes():
    def fn(lib, t):
        h = t["x"] * 2
        v = h[1:3, :, ::3]
        p = v * 3  # v's values before any write
        h[2] = t["y2"]
        q = v * 5  # after one write
        h.mul_(t["y"])
        r = v.sin()  # after two
        v2 = h[1:3, :, ::3]
        return [p.sum() + (q * q).sum() + r.sum() + (v2 * 7).sum(), p, q, r, v]
    _check(fn)
    _check(fn, dtype=np.float64)


def test_float64_writes_through_views():
    _check(_setitem_on_base, dtype=np.float64)

    def fn(lib, t):
        h = t["x"][0] * 1  # (3, 7)
        v = h[:, 1:4]
        h.t()[1:3, 0] = t["y"][:2]
        v.mul_(t["s"])
        return [(h * t["w"][0]).sum() + (v * v).sum(), v, h]
    _check(fn, ("x", "y", "s"), dtype=np.float64)


def test_old_node_kept_for_ops_made_before_an_overwrite():
    # copy_'s node does not take the old value as input: what stands for it must outlive the backward
    # pass's release of that node, which runs before the ops that used the old value
    def fn(lib, t):
        h = t["x"] * 2
        a = h * 3
        v = h[1]
        h.copy_(t["y"])
        return [a.sum() + h.sum() * 2 + (v * t["y2"]).sum(), a, h, v]
    _check(fn, ("x", "y", "y2"))


def test_writes_under_no_grad():
    def fn(lib, t):
        h = t["x"] * 2
        vs = _views(lib, h)
        with lib.no_grad():
            h.mul_(3)  # values change, the graph does not: the views still differentiate x * 2
            vs[0].add_(1)
            h[2, 1] = 9.0
        return [_loss(lib, t, vs) + (h * t["w"]).sum()] + vs + [h]
    _check(fn)


def test_leaf_bases_refuse_as_torch():
    for lib in (torch, fg):
        x = lib.ones(3, 4, requires_grad=True)
        v = x[0:2]
        with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad is being used in an "
                                               "in-place operation"):
            v.mul_(2)
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
            x.add_(1)
        with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
            x.t()[1] = lib.zeros(3)
        with lib.no_grad():  # allowed: the leaf's values change, its view stays a view of it
            x.mul_(2)
        t = v.t()
        ((v * lib.arange(4.0)).sum() + (t * 2).sum()).backward()
        np.testing.assert_array_equal(x.grad.numpy(), [[2, 3, 4, 5], [2, 3, 4, 5], [0] * 4])
        np.testing.assert_array_equal(v.detach().numpy(), 2)


def test_expanded_view_written_refuses_as_torch():
    for lib in (torch, fg):
        x = lib.ones(3, 1, requires_grad=True)
        h = x * 2
        e = h.expand(3, 4)
        for write in (lambda: e.add_(1), lambda: e.__setitem__(0, lib.ones(4))):
            with pytest.raises(RuntimeError, match="more than one element of the written-to tensor refers to a "
                                                   "single memory location"):
                write()
        assert h._version == 0
        np.testing.assert_array_equal(h.detach().numpy(), 2)


def test_versions_are_shared_and_views_see_the_values():
    x = fg.tensor(np.arange(12, dtype=np.float32).reshape(3, 4), requires_grad=True)
    h = x * 1
    arr = h.numpy()
    v, t, d = h[1:], h.t(), h.detach()
    h.mul_(2)
    v.add_(fg.ones(4, requires_grad=True))
    t[0, 0] = 5.0
    for u in (h, v, t, d):
        assert u._version == 3
    assert h.numpy() is arr  # written into the storage, not rebound to another array
    want = np.arange(12, dtype=np.float32).reshape(3, 4) * 2
    want[1:] += 1
    want[0, 0] = 5
    for u, w in ((h, want), (v, want[1:]), (t, want.T), (d, want)):
        np.testing.assert_array_equal(u.numpy(), w)
    assert type(v.grad_fn).__name__.startswith("AsStrided") and not d.requires_grad


def test_backward_from_a_stale_view_and_its_grad_fn():
    for lib in (torch, fg):
        x = lib.ones(2, 3, requires_grad=True)
        y = lib.full((3,), 4.0, requires_grad=True)
        h = x * 2
        v = h[1]
        h[1] = y * 3
        assert v.grad_fn is not None
        v.backward(lib.ones(3))  # v itself is the root: it differentiates y * 3
        np.testing.assert_array_equal(y.grad.numpy(), 3)
        assert x.grad is None or not x.grad.numpy().any()


def test_a_saved_result_written_later_refuses_as_torch():
    for lib in (torch, fg):
        h = lib.ones(4, requires_grad=True) * 2
        v = h[1:]
        h.pow_(lib.full((4,), 1.5, requires_grad=True))  # keeps its result (for the exponent's gradient)
        v.mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            h.sum().backward()


def test_clamp_and_mse_loss_refuse_a_changed_input_as_torch():
    for lib, functional in ((torch, torch.nn.functional), (fg, F)):
        x = lib.tensor([-2.0, -0.2, 0.4, 3.0], requires_grad=True)
        cases = []
        h = x * 1
        cases.append(h.clamp(-0.5, 0.5).sum())
        h.mul_(2)
        lo = x * 0
        cases.append(x.clamp(min=lo).sum())
        lo.add_(1)
        t = x * 1
        cases.append(functional.mse_loss(x * 2, t))
        t.mul_(2)
        h = x * 1
        cases.append(functional.mse_loss(h, x.detach(), reduction="none").sum())
        h[0] = 1.0
        for loss in cases:
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                loss.backward()
        h = x * 1  # unchanged inputs: the gradients are right
        loss = functional.mse_loss(h.clamp(-0.5, 0.5), x.detach() * 0.5)
        loss.backward()
        np.testing.assert_allclose(x.grad.numpy(), [0, -0.05, 0.1, 0], rtol=1e-6)


def test_positions_of_a_view_in_its_base_for_any_layout():
    from forgegrad._view_rebase import positions
    bases = (np.arange(60.0).reshape(3, 4, 5), np.arange(60.0).reshape(5, 4, 3).transpose(2, 1, 0),
             np.arange(120.0).reshape(6, 4, 5)[::2], np.arange(60.0).reshape(3, 4, 5)[:, ::-1])
    for base in bases:
        numbers = np.arange(base.size).reshape(base.shape)
        for key in ((slice(1, 3),), (1, slice(None), slice(None, None, 2)), (Ellipsis, 2), (slice(None, None, -1), 0)):
            v, n = base[key], numbers[key]
            expanded = np.broadcast_to(v[..., :1], v.shape[:-1] + (3,))
            for view, want in ((v, n), (v.T, n.T), (expanded, np.broadcast_to(n[..., :1], expanded.shape))):
                np.testing.assert_array_equal(positions(base, view), want)
        assert positions(base[1:], base) is None  # memory outside the base: no view of it
    gappy = np.arange(120.0).reshape(6, 4, 5)
    assert positions(gappy[::2], gappy[1]) is None  # inside the bounds, but on none of the base's elements
