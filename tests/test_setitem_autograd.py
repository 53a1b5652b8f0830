"""t[key] = value under autograd: recorded as torch records it (an in-place op on t), gradients compared
with torch's for each kind of key and value."""
import numpy as np
import pytest
import torch

import forgegrad as fg


def _inputs(dtype=np.float32):
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((5, 4, 3)).astype(dtype), "y": rng.standard_normal((3,)).astype(dtype),
            "y2": rng.standard_normal((4, 3)).astype(dtype), "y3": rng.standard_normal((2, 1, 3)).astype(dtype),
            "w": rng.standard_normal((5, 4, 3)).astype(dtype)}


def _run(lib, fn, arrays, grads):
    """fn(lib, tensors) -> loss, on forgegrad or torch tensors; returns the gradients of those named in
    grads (None where a tensor got none) and the loss."""
    if lib is torch:
        ts = {k: torch.tensor(v, requires_grad=k in grads) for k, v in arrays.items()}
    else:
        ts = {k: fg.tensor(v.copy(), requires_grad=k in grads) for k, v in arrays.items()}
    loss = fn(lib, ts)
    loss.backward()
    out = {}
    for k in grads:
        g = ts[k].grad
        out[k] = None if g is None else (g.detach().numpy() if lib is torch else np.asarray(g._data))
    return out, float(loss.detach().numpy() if lib is torch else loss.item())


def _index(lib, arr):
    return torch.tensor(arr) if lib is torch else fg.tensor(arr)


def _check(fn, grads, dtype=np.float32):
    arrays = _inputs(dtype)
    got, got_loss = _run(fg, fn, arrays, grads)
    want, want_loss = _run(torch, fn, arrays, grads)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for k in grads:
        assert (got[k] is None) == (want[k] is None), k
        if want[k] is not None:
            assert got[k].dtype == want[k].dtype, k
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _slice_broadcast(lib, t):
    h = t["x"] * 2
    h[1:4, ::2] = t["y"]  # (3,) broadcast over (3, 2, 3)
    return (h * t["w"]).sum()


def _int_key(lib, t):
    h = t["x"].sin()  # saves x, not its output
    h[2] = t["y2"]
    return (h * t["w"]).sum()


def _int_tuple_key_scalar_value(lib, t):
    h = t["x"] * t["w"]
    h[1, 2, 0] = 7.0
    h[-1] = 0.5
    return (h * h).sum()


def _bool_mask(lib, t):
    h = t["x"] + 1
    mask = _index(lib, np.asarray(t["x"].detach().numpy() if lib is torch else t["x"]._data) > 0.3)
    h[mask] = t["y"][:1].sum()  # a 0-d value spread over every selected element
    return (h * t["w"]).sum()


def _bool_row_mask(lib, t):
    h = t["x"] * 3
    h[_index(lib, np.array([True, False, True, False, False]))] = t["y3"][0]  # (1, 3) over (2, 4, 3)
    return (h * t["w"]).sum()


def _advanced_unique(lib, t):
    h = t["x"] * 2
    h[_index(lib, np.array([3, 0, 4]))] = t["y2"]  # (4, 3) broadcast over (3, 4, 3)
    return (h * t["w"]).sum()


def _advanced_mixed(lib, t):
    h = t["x"] - 1
    h[_index(lib, np.array([1, 4])), :, 2] = t["y2"][:, :1].reshape(1, 4)  # (1, 4) over (2, 4)
    return (h * t["w"]).sum()


def _leading_unit_dims(lib, t):
    h = t["x"] * 1.5
    h[0, 0] = t["y"].reshape(1, 1, 3)  # extra leading dims of size 1, as torch accepts
    return (h * t["w"]).sum()


def _value_without_grad(lib, t):
    h = t["x"] * 2
    h[:, 1] = t["y2"][0].detach()
    return (h * t["w"]).sum()


def _target_without_grad(lib, t):
    h = t["w"] * 1  # no gradient asked for w: h requires none until the write
    h[1:3, 0] = t["y"]
    assert h.requires_grad
    return (h * h).sum()


def _used_before_write(lib, t):
    h = t["x"] * 2
    z = h + 1  # made before the write: differentiates h's old value
    u = h[0] * 3
    h[0] = t["y2"]
    return (z * t["w"]).sum() + u.sum() + (h * h).sum()


def _two_writes(lib, t):
    h = t["x"] * 2
    h[0] = t["y2"]
    h[0, 1:] = t["y"] * 4  # overwrites part of the first write
    h[3] = h[0] * 2  # a value read from h itself
    return (h * t["w"]).sum()


CASES = [_slice_broadcast, _int_key, _int_tuple_key_scalar_value, _bool_mask, _bool_row_mask, _advanced_unique,
         _advanced_mixed, _leading_unit_dims, _value_without_grad, _target_without_grad, _used_before_write,
         _two_writes]


@pytest.mark.parametrize("fn", CASES, ids=[f.__name__.strip("_") for f in CASES])
def test_setitem_gradients_match_torch(fn):
    _check(fn, ("x", "y", "y2", "y3"))


@pytest.mark.parametrize("fn", [_slice_broadcast, _advanced_unique, _used_before_write])
def test_setitem_gradients_match_torch_float64(fn):
    _check(fn, ("x", "y", "y2", "y3"), dtype=np.float64)


def test_float64_value_into_float32_target_gets_a_float64_gradient():
    def fn(lib, t):
        h = t["x"] * 2
        h[1] = t["y2"].double() if lib is torch else t["y2"].to(fg.float64)
        return (h * t["w"]).sum()
    _check(fn, ("x", "y2"))


def test_reported_example():
    x = fg.ones(3, requires_grad=True)
    y = fg.ones(1, requires_grad=True)
    h = x * 2
    h[0] = y
    h.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 2, 2])
    np.testing.assert_array_equal(y.grad.numpy(), [1])


def test_write_is_in_place_and_counted():
    x = fg.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    h = x * 1
    arr, version = h._data, h._version
    view = h.detach()
    h[1, 1] = fg.tensor(np.float32(9.0), requires_grad=True)
    assert h._data is arr and h._version == version + 1
    assert view.numpy()[1, 1] == 9.0  # the storage was written, as torch's


def test_op_that_saved_the_old_value_raises_as_torch():
    for lib in (torch, fg):
        x = lib.ones(4, requires_grad=True)
        h = x * 2
        s = h.sigmoid()  # saves its output, not h: fine
        p = h * h  # saves h
        h[0] = lib.zeros(1, requires_grad=True)
        s.sum().backward()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            p.sum().backward()


def _view_of_graph_tensor(lib, t):
    h = t["x"] * 2
    row = h[1]
    row[2] = t["y"]  # written into h: h's gradient skips it, y gets it through h and through row
    h[1:][3, ::2] = t["y2"][:2, :1]  # a chained view (a temporary); (2, 1) over (2, 3)
    tail = h[3:][:, 1:]
    tail[_index(lib, np.array([1, 0])), 0] = t["y3"][:, 0, :]
    return (h * t["w"]).sum() + (row * row).sum() + tail.sum() * 2


def test_setitem_on_indexing_view_writes_the_base_as_torch():
    _check(_view_of_graph_tensor, ("x", "y", "y2", "y3"))
    _check(_view_of_graph_tensor, ("x", "y2"), dtype=np.float64)


def _other_views_of_graph_tensor(lib, t):
    h = t["x"] * 2  # (5, 4, 3)
    h.reshape(60)[7:12] = t["y2"][0, :1]  # written into h through a reshape, a transpose and an expand
    h.transpose(0, 2)[1, 2] = t["y"][:1] * 3
    h[0, :, :1].expand(4, 3)[1, 1] = t["y"][2]
    return (h * t["w"]).sum()


def test_setitem_on_other_views_of_graph_tensor_writes_the_base_as_torch():
    _check(_other_views_of_graph_tensor, ("x", "y", "y2"))
    x = fg.ones(4, 3, requires_grad=True)
    h = x * 2
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        h[:, :1].expand(4, 3)[0] = fg.zeros(3, requires_grad=True)  # torch refuses it too
    np.testing.assert_array_equal(h.numpy(), 2)  # nothing was written
    c = h[1:].clone()  # a copy is no view: written and differentiated
    c[0] = 1.0
    c.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0] * 3, [0] * 3, [2] * 3, [2] * 3])


def test_leaf_refused_and_no_grad_is_a_plain_write():
    x = fg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        x[0] = 2.0
    with fg.no_grad():
        x[0] = 2.0
        h = x * 2
        h[1] = fg.ones(1, requires_grad=True)
    assert x.is_leaf and x.numpy()[0] == 2.0 and not h.requires_grad and h.grad_fn is None


def test_integer_target_stays_without_grad():
    # torch: a value that requires grad written into an integer tensor is a plain write
    for lib in (torch, fg):
        h = lib.zeros(3, dtype=lib.int64)
        h[0] = lib.ones(1, requires_grad=True) * 2
        assert not h.requires_grad and h.tolist() == [2, 0, 0]


def test_bad_assignment_counts_nothing():
    x = fg.ones(3, requires_grad=True)
    h = x * 2
    version, node = h._version, h.grad_fn
    with pytest.raises(ValueError):
        h[0:2] = fg.ones(3, requires_grad=True)
    assert h._version == version and h.grad_fn is node
