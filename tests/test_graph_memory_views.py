"""View ops (reshape, flatten, transpose, expand, slicing, unfold, ...) keep no input in the graph
(forgegrad._graph_memory): their backward needs only shapes, so their node holds the base weakly and the view
tensor holds it (torch's ``_base``). The base is then freed with the view, as in torch: each case compares which
tensors are still alive after user code drops them with torch's (torch keeps a tensor's Python object alive as
long as anything holds the tensor, so a weak reference to it tells), and the gradients with torch's. In-place
writes through views, rebasing, retain_grad, hooks and create_graph keep working with the base held that way."""
import gc
import weakref

import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad._graph_memory import Edge

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 1, 8, 8)).astype(np.float32)
CW = RNG.standard_normal((4, 1, 3, 3)).astype(np.float32)
LW = RNG.standard_normal((5, 36)).astype(np.float32)


def _params(lib):
    t = fg.tensor if lib is fg else torch.tensor
    return t(X, requires_grad=True), t(CW, requires_grad=True), t(LW, requires_grad=True)


def _conv(lib, x, w):
    return (F if lib is fg else torch.nn.functional).conv2d(x, w)


def _linear(lib, x, w):
    return (F if lib is fg else torch.nn.functional).linear(x, w)


def _pool(lib, x):
    return (F if lib is fg else torch.nn.functional).max_pool2d(x, 2)


# each case: (lib, params, refs) -> loss; it notes in refs the intermediates user code then drops
def _pool_flatten_linear(lib, p, refs):  # LeNet's tail: linear saves the flattened pool output (a view)
    c = _conv(lib, p[0], p[1])
    r = c.relu()
    q = _pool(lib, r)
    f = q.flatten(1)
    refs.update(c=c, r=r, q=q, f=f)
    return _linear(lib, f, p[2]).sum()


def _flatten_relu(lib, p, refs):  # relu reads its output: the conv output goes with the view
    c = _conv(lib, p[0], p[1])
    f = c.flatten(1)
    refs.update(c=c, f=f)
    return f.relu().sum()


def _flatten_transpose_add(lib, p, refs):  # a ViT's patch embedding: conv, flatten(2), transpose, + position
    c = _conv(lib, p[0], p[1])
    f = c.flatten(2).transpose(1, 2)
    refs.update(c=c, f=f)
    return (f + 1.0).tanh().sum()


def _slice_linear(lib, p, refs):  # linear saves its input, a view: its base stays (in torch too)
    c = _conv(lib, p[0], p[1])
    f = c.flatten(1)[:, :36]
    refs.update(c=c, f=f)
    return _linear(lib, f, p[2]).sum()


def _views_into_exp(lib, p, refs):  # unsqueeze, expand, permute, narrow, select, view: exp reads its output
    c = _conv(lib, p[0], p[1])
    v = c.unsqueeze(0).expand(3, 2, 4, 6, 6).permute(1, 0, 2, 3, 4).narrow(2, 1, 2).select(3, 0).reshape(2, -1)
    refs.update(c=c, v=v)
    return (v * 0.1).exp().sum()


def _unfold_add(lib, p, refs):
    c = _conv(lib, p[0], p[1])
    u = c.unfold(3, 2, 2)
    refs.update(c=c, u=u)
    return (u + 2.0).sigmoid().sum()


def _copying_reshape_sub(lib, p, refs):  # reshape of a transposed tensor copies: no storage shared either way
    c = _conv(lib, p[0], p[1])
    t = c.transpose(2, 3)
    f = t.reshape(2, -1)
    refs.update(c=c, t=t, f=f)
    return (f - 1.0).tanh().sum()


CASES = [_pool_flatten_linear, _flatten_relu, _flatten_transpose_add, _slice_linear, _views_into_exp, _unfold_add,
         _copying_reshape_sub]


def _alive(lib, case):
    params = _params(lib)
    refs = {}
    loss = case(lib, params, refs)
    weak = {k: weakref.ref(v) for k, v in refs.items()}
    arrays = {k: weakref.ref(v._data.base if v._data.base is not None else v._data)
              for k, v in refs.items()} if lib is fg else {}
    del refs
    gc.collect()
    alive = {k: r() is not None for k, r in weak.items()}
    if lib is fg:  # a freed tensor's storage is freed too (nothing else holds the array)
        for k, r in arrays.items():
            if not alive[k] and not any(alive.values()):
                assert r() is None, k
    loss.backward()
    return alive, [t.grad for t in params]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.strip("_"))
def test_views_free_their_input_as_torch_does(case):
    got, grads = _alive(fg, case)
    want, tgrads = _alive(torch, case)
    assert got == want
    for g, tg in zip(grads, tgrads):
        assert (g is None) == (tg is None)
        if g is not None:
            np.testing.assert_allclose(g.numpy(), tg.numpy(), rtol=1e-4, atol=1e-5)


def test_a_view_node_holds_its_non_leaf_input_as_an_edge():
    x, w, _ = _params(fg)
    c = _conv(fg, x, w)
    arr = weakref.ref(c._data)
    f = c.flatten(1)
    assert isinstance(f._ctx.parents[0], Edge)
    y = f.relu()
    del c, f
    gc.disable()  # freed by reference counting: no reference cycle between a view, its base and the graph
    try:
        assert arr() is None
    finally:
        gc.enable()
    y.sum().backward()
    assert x.grad is not None


def test_a_view_of_a_leaf_keeps_the_leaf():
    x, _, _ = _params(fg)
    v = x.reshape(2, -1)
    assert v._ctx.parents[0] is x


def _write_through_dropped_base(lib):
    x, w, lw = _params(lib)
    c = _conv(lib, x, w)
    v = c.flatten(1)
    s = v[:, 2:10]
    del c, v  # only the slice holds the base now
    s.mul_(3.0)  # recorded on the base (CopySlices), s is rebased
    return (s.tanh().sum() + _linear(lib, s.sum(1, keepdim=True).expand(2, 36), lw).sum()), (x, w, lw)


def test_inplace_write_through_a_view_whose_base_user_code_dropped_matches_torch():
    loss, params = _write_through_dropped_base(fg)
    tloss, tparams = _write_through_dropped_base(torch)
    loss.backward()
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-4, atol=1e-5)


def _base_written_after_views(lib):
    x, w, _ = _params(lib)
    c = _conv(lib, x, w) * 1.0
    v = c.flatten(2).transpose(1, 2)  # a view of a view: its node's input is an edge, the base held by the views
    c.add_(1.0)  # the base written in place: v is stale and gets rebased on its next use
    c.mul_(2.0)
    y = (v * v).sum() + c.sum()
    return y, (x, w)


def test_base_written_in_place_after_a_chain_of_views_matches_torch():
    y, params = _base_written_after_views(fg)
    ty, tparams = _base_written_after_views(torch)
    y.backward()
    ty.backward()
    np.testing.assert_allclose(y.item(), ty.item(), rtol=1e-5)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_inplace_on_a_view_of_a_view_of_a_leaf_is_refused():
    x, _, _ = _params(fg)
    v = x.reshape(2, -1)[:, 3:7].t()  # the chain from the leaf: reshape (holds the leaf), then dropped edges
    with pytest.raises(RuntimeError, match="leaf"):
        v.add_(1.0)
    with pytest.raises(RuntimeError, match="leaf"):
        torch.tensor(X, requires_grad=True).reshape(2, -1)[:, 3:7].t().add_(1.0)


def _retain_and_hook(lib):
    x, w, _ = _params(lib)
    c = _conv(lib, x, w)
    c.retain_grad()
    seen = []
    c.register_hook(lambda g: seen.append(g.clone()))
    f = c.flatten(1)
    f.retain_grad()
    (f.relu() * 2.0).sum().backward()
    return c.grad, f.grad, seen[0], x.grad


def test_retain_grad_and_hooks_on_a_views_base_and_the_view_match_torch():
    for got, want in zip(_retain_and_hook(fg), _retain_and_hook(torch)):
        np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-4, atol=1e-5)


def _double_backward_through_views(lib):
    x, w, _ = _params(lib)
    c = _conv(lib, x, w)
    v = c.flatten(2).transpose(1, 2)[:, 1:]
    del c
    y = (v.tanh() * v.sum()).sum()
    (gx,) = (fg.autograd if lib is fg else torch.autograd).grad(y, x, create_graph=True)
    (gx * gx).sum().backward()
    return gx, w.grad


def test_create_graph_through_views_with_dropped_bases_matches_torch():
    for got, want in zip(_double_backward_through_views(fg), _double_backward_through_views(torch)):
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-4, atol=1e-4)


def test_pickled_view_carries_no_base():
    import pickle
    x, w, _ = _params(fg)
    v = _conv(fg, x, w).flatten(1).detach()[:1]  # (a detached view has no graph base; pickle must not need one)
    u = _conv(fg, x, w).flatten(1)[:1]
    assert u._graph_base is not None
    state = u.__getstate__()
    assert "_graph_base" not in state[1]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(v)).numpy(), v.numpy())
