"""forgegrad._torch_indexing beyond values: bad inputs (IndexError / TypeError naming the argument, never a wrapped
negative index), in-place variants against torch's (values, gradients, a leaf's refusal), double backward, refusal
inside an export trace, determinism of duplicate-index gradients, ONNX export of the traceable ones, and a small
program (a top-k sampling step, a scatter one-hot, a masked attention bias) equal to torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.autograd import trace

R = np.random.default_rng(3)


def rn(*shape):
    return R.standard_normal(shape).astype(np.float32)


def close(a, b, **kw):
    np.testing.assert_allclose(a.detach().numpy() if isinstance(a, torch.Tensor) else a.numpy(),
                               b.detach().numpy() if isinstance(b, torch.Tensor) else b.numpy(),
                               rtol=1e-5, atol=1e-6, **kw)


# ---- bad inputs ----------------------------------------------------------------------------------------
X = fg.tensor(rn(3, 4))


@pytest.mark.parametrize("call,error,match", [
    (lambda: fg.gather(X, 1, fg.tensor([[4]])), IndexError, "index"),
    (lambda: fg.gather(X, 1, fg.tensor([[-1]])), IndexError, "index"),
    (lambda: fg.gather(X, 1, fg.tensor([[0.0]])), TypeError, "index"),
    (lambda: fg.gather(X, 5, fg.tensor([[0]])), IndexError, "dim"),
    (lambda: fg.scatter(X, 0, fg.tensor([[3]]), 1.0), IndexError, "index"),
    (lambda: fg.scatter(X, 0, fg.tensor([[0]]), fg.tensor(rn(1, 1)), reduce="add"), ValueError, "scatter_reduce"),
    (lambda: fg.scatter_add(X, 0, fg.tensor([[-2]]), fg.tensor(rn(1, 1))), IndexError, "index"),
    (lambda: fg.scatter_reduce(X, 0, fg.tensor([[0]]), fg.tensor(rn(1, 1)), "max"), ValueError, "reduce"),
    (lambda: fg.index_select(X, 0, fg.tensor([3])), IndexError, "index"),
    (lambda: fg.index_add(X, 0, fg.tensor([-1]), fg.tensor(rn(1, 4))), IndexError, "index"),
    (lambda: fg.index_add(X, 0, fg.tensor([0]), fg.tensor(rn(2, 4))), ValueError, "source"),
    (lambda: fg.index_copy(X, 1, fg.tensor([4]), fg.tensor(rn(3, 1))), IndexError, "index"),
    (lambda: fg.index_fill(X, 1, fg.tensor([-5]), 0.0), IndexError, "index"),
    (lambda: fg.take(X, fg.tensor([12])), IndexError, "index"),
    (lambda: fg.take(X, fg.tensor([-13])), IndexError, "index"),
    (lambda: fg.take_along_dim(X, fg.tensor([[4]]), 1), IndexError, "indices"),
    (lambda: fg.masked_fill(X, fg.tensor([1, 0, 1, 0]), 0.0), TypeError, "mask"),
    (lambda: fg.masked_fill(X, fg.tensor([True, False]), 0.0), ValueError, "mask"),
    (lambda: fg.masked_scatter(X, X > -99, fg.tensor(rn(5))), ValueError, "source"),
    (lambda: fg.topk(X, 5), IndexError, "k"),
    (lambda: fg.kthvalue(X, 0), IndexError, "k"),
    (lambda: fg.sort(X, 2), IndexError, "dim"),
    (lambda: fg.flip(X, (0, -2)), RuntimeError, "dims"),
    (lambda: fg.roll(X, (1, 2), 0), ValueError, "shifts"),
    (lambda: fg.movedim(X, (0, 1), 0), ValueError, "destination"),
    (lambda: fg.diagonal(X, 0, 1, -1), RuntimeError, "dim1"),
    (lambda: fg.trace(fg.tensor(rn(2, 2, 2))), ValueError, "2-d"),
    (lambda: fg.searchsorted(fg.tensor([1.0, 2.0]), X, side="middle"), ValueError, "side"),
    (lambda: fg.searchsorted(fg.tensor([1.0, 2.0]), X, right=True, side="left"), ValueError, "side"),
    (lambda: fg.bincount(fg.tensor([1, -1])), ValueError, "non-negative"),
    (lambda: fg.bincount(fg.tensor([1, 2]), fg.tensor([1.0])), ValueError, "weights"),
    (lambda: fg.meshgrid(X, X), ValueError, "tensors"),
    (lambda: fg.meshgrid(fg.tensor([1.0]), indexing="yx"), ValueError, "indexing"),
    (lambda: fg.broadcast_tensors(X, fg.tensor(rn(5))), ValueError, "broadcast"),
    (lambda: fg.gather("x", 0, fg.tensor([0])), TypeError, "input"),
    (lambda: fg.logcumsumexp(fg.tensor([1, 2]), 0), TypeError, "input"),
])
def test_bad_inputs_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_torch_allows_negative_indices_only_where_it_does():
    x = rn(3, 4)
    np.testing.assert_array_equal(fg.take(fg.tensor(x), fg.tensor([-1, -12])).numpy(), x.reshape(-1)[[-1, -12]])
    np.testing.assert_array_equal(fg.index_fill(fg.tensor(x), 1, fg.tensor([-1]), 0.0).numpy(),
                                  torch.from_numpy(x).index_fill(1, torch.tensor([-1]), 0.0).numpy())
    with pytest.raises(RuntimeError):  # torch refuses it too: the same index is an error on both sides
        torch.gather(torch.from_numpy(x), 1, torch.tensor([[-1]]))


# ---- in-place variants -------------------------------------------------------------------------------------
def _inplace_cases():
    idx = R.integers(0, 4, (3, 5))
    uniq = np.stack([R.permutation(4)[:3] for _ in range(5)], 1)
    mask = R.uniform(size=(4, 5)) < 0.5
    return {
        "scatter_": (lambda L, t, s: t.scatter_(0, L.tensor(uniq), s), (3, 5)),
        "scatter_ value": (lambda L, t, s: t.scatter_(0, L.tensor(uniq), 2.5), None),
        "scatter_add_": (lambda L, t, s: t.scatter_add_(0, L.tensor(idx), s), (3, 5)),
        "scatter_reduce_": (lambda L, t, s: t.scatter_reduce_(0, L.tensor(idx), s, "amax", include_self=False),
                            (3, 5)),
        "index_add_": (lambda L, t, s: t.index_add_(1, L.tensor([4, 0, 4]), s, alpha=0.5), (4, 3)),
        "index_copy_": (lambda L, t, s: t.index_copy_(0, L.tensor([3, 1]), s), (2, 5)),
        "index_fill_": (lambda L, t, s: t.index_fill_(1, L.tensor([0, 2]), -1.0), None),
        "masked_fill_": (lambda L, t, s: t.masked_fill_(L.tensor(mask), s), ()),
        "masked_scatter_": (lambda L, t, s: t.masked_scatter_(L.tensor(mask), s), (20,)),
        "cumprod_": (lambda L, t, s: t.cumprod_(1), None),
    }


@pytest.mark.parametrize("name", list(_inplace_cases()))
def test_inplace_variant_values_and_gradients(name):
    fn, src_shape = _inplace_cases()[name]
    x = rn(4, 5)
    s = rn(*src_shape) if src_shape is not None else None
    outs, grads = [], []
    for L in (fg, torch):
        wrap = fg.tensor if L is fg else torch.from_numpy
        xl = wrap(x.copy()).requires_grad_(True)
        sl = None if s is None else wrap(s.copy()).requires_grad_(True)
        t = xl * 1.0  # a graph tensor: in-place ops on it are recorded
        ret = fn(L, t, sl)
        assert ret is t
        (t * t).sum().backward()
        outs.append(t)
        grads.append((xl.grad, None if sl is None else sl.grad))
    close(outs[0], outs[1])
    close(grads[0][0], grads[1][0])
    if s is not None:
        close(grads[0][1], grads[1][1])


def test_inplace_on_a_leaf_refuses_and_without_grad_writes_the_storage():
    leaf = fg.tensor(rn(3, 4), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        leaf.scatter_(0, fg.tensor([[0]]), 1.0)
    arr = rn(3, 4)
    t = fg.as_tensor(arr)  # shares arr (fg.tensor copies, as torch.tensor)
    view = t[1:]
    t.index_fill_(1, fg.tensor([2]), 0.0)
    assert arr[1, 2] == 0 and view.numpy()[0, 2] == 0  # the storage (shared with numpy and views) was written


def test_flip_and_roll_are_copies_as_torch():
    x = fg.tensor(rn(2, 3))
    before = x.numpy().copy()
    x.flip(0).add_(1)
    fg.flip(x, (0, 1)).mul_(0)
    x.roll(1, 1).zero_()
    np.testing.assert_array_equal(x.numpy(), before)


# ---- graphs -----------------------------------------------------------------------------------------------
def test_double_backward_through_gather_and_scatter_add():
    x = rn(4, 5)
    idx = R.integers(0, 5, (4, 7))
    res = []
    for L in (fg, torch):
        xl = (fg.tensor(x) if L is fg else torch.from_numpy(x.copy())).requires_grad_(True)
        il = L.tensor(idx)
        y = (L.gather(xl, 1, il) ** 3).sum() + L.scatter_add(xl * xl, 1, il[:, :3], L.gather(xl, 1, il[:, :3])).sum()
        grad = fg.autograd.grad if L is fg else torch.autograd.grad
        (g,) = grad(y, xl, create_graph=True)
        (gg,) = grad((g * g).sum(), xl)
        res.append((g, gg))
    close(res[0][0], res[1][0])
    close(res[0][1], res[1][1])


def test_value_dependent_ops_refuse_inside_an_export_trace():
    x = fg.tensor(rn(3, 4))
    with trace():
        for call in (lambda: x.sort(), lambda: x.topk(2), lambda: fg.nonzero(x > 0), lambda: fg.unique(x),
                     lambda: x.masked_select(x > 0), lambda: x.cummax(0)):
            with pytest.raises(RuntimeError, match="trace"):
                call()


def test_duplicate_index_gradients_are_the_same_bits_at_any_thread_count():
    x = rn(50, 64)
    idx = R.integers(0, 50, (4000, 64))
    grads = []
    before = fg.get_num_threads()
    try:
        for n in (1, 2, 3):
            fg.set_num_threads(n)
            xl = fg.tensor(x, requires_grad=True)
            (fg.gather(xl, 0, fg.tensor(idx)) * fg.tensor(rn(4000, 64) * 0 + 0.1)).sum().backward()
            grads.append(xl.grad.numpy().tobytes())
    finally:
        fg.set_num_threads(before)
    assert grads[0] == grads[1] == grads[2]


def test_traceable_ones_export_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    idx = fg.tensor(R.integers(0, 6, (4, 3)))

    class Net(fg.nn.Module):
        def forward(self, x):
            y = x.gather(1, idx) + fg.flip(x, (0,)).index_select(1, fg.tensor([5, 0, 2]))
            z = fg.zeros(4, 6).scatter_add(1, idx, y) + fg.roll(x, 2, 1).diagonal().sum()
            return z.masked_fill(x > 1.0, -1.0).cumprod(1) + fg.diag_embed(x[:, :2]).sum(-1).sum(-1, True)

    # cumprod exports as a Scan of Mul (ops/_onnx_select.py)
    assert fg.onnx.export(Net(), (fg.tensor(rn(4, 6)),), str(tmp_path / "net.onnx"), dynamic_axes={}).ok

    class Exportable(Net):
        def forward(self, x):
            y = x.gather(1, idx) + fg.flip(x, (0,)).index_select(1, fg.tensor([5, 0, 2]))
            z = fg.zeros(4, 6).scatter_add(1, idx, y) + fg.roll(x, 2, 1).diagonal().sum()
            return z.masked_fill(x > 1.0, -1.0) + x.logcumsumexp(1) + fg.diag_embed(x[:, :2]).sum(-1).sum(-1, True)

    report = fg.onnx.export(Exportable(), (fg.tensor(rn(4, 6)),), str(tmp_path / "ok.onnx"), dynamic_axes={})
    assert report.ok, report


# ---- a small program ----------------------------------------------------------------------------------------
def _program(L, logits, emb, labels, keep, drop):
    """One step of a decoder-ish program: top-k filtering of logits, the kept tokens' probabilities, a scatter
    one-hot of the labels, a cross-entropy from it, an embedding lookup by index_select and a masked mean."""
    k = 5
    vals, idx = L.topk(logits, k, dim=-1)
    filtered = L.full_like(logits, float("-inf")).scatter(-1, idx, vals)
    probs = L.softmax(filtered, -1)
    greedy = probs.argmax(-1)
    onehot = L.zeros_like(logits).scatter_(1, labels.unsqueeze(1), 1.0)
    logp = L.log_softmax(logits, -1)
    ce = -(onehot * logp).sum(-1).mean()
    rows = L.index_select(emb, 0, greedy)
    sorted_probs, order = L.sort(probs, -1, descending=True)
    cum = L.cumsum(sorted_probs, -1)
    nucleus = (cum - sorted_probs) < 0.8  # top-p: keep until 0.8 of the mass
    kept = L.gather(sorted_probs, 1, order.argsort(-1)) * L.gather(nucleus.float(), 1, order.argsort(-1))
    masked = rows.masked_fill(drop.unsqueeze(1), 0.0).sum() / keep.sum()
    return ce + masked + kept.sum() * 0.1, greedy, onehot


def test_program_topk_sampling_and_onehot_equal_torch():
    logits, emb = rn(6, 17), rn(17, 8)
    labels, keep = R.integers(0, 17, 6), R.uniform(size=6) < 0.6
    keep[0] = True
    res = []
    for L in (fg, torch):
        lg = (fg.tensor(logits) if L is fg else torch.from_numpy(logits.copy())).requires_grad_(True)
        em = (fg.tensor(emb) if L is fg else torch.from_numpy(emb.copy())).requires_grad_(True)
        loss, greedy, onehot = _program(L, lg, em, L.tensor(labels), L.tensor(keep), L.tensor(~keep))
        loss.backward()
        res.append((loss, greedy, onehot, lg.grad, em.grad))
    for a, b in zip(res[0], res[1]):
        close(a, b)
