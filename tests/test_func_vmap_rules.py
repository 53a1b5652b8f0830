"""forgegrad.func.vmap's batching rules for losses with options, batch_norm in training mode, dropout under each
randomness mode, and the Python side effects of a call that loops, against torch.func 2.13 (or torch called
per element where torch.func's vmap refuses), with which path each call took."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.func as ff
from forgegrad.func import _vmap
from test_func_transforms import _close, _lib, _np, _t
from test_func_vmap_batched import _check, _loop_only, _paths

R = np.random.default_rng(41)
LG, LG3 = R.standard_normal((6, 4, 5)), R.standard_normal((6, 3, 5, 2))
TG, TG3 = R.integers(0, 5, (6, 4)), R.integers(0, 5, (6, 3, 2))
TG[1, :] = 3  # every target of element 1 ignored (ignore_index=3): its weighted mean is 0/0, nan in torch too
TG[2, 0] = 3
P = np.abs(R.standard_normal((6, 4, 5)))
P /= P.sum(-1, keepdims=True)
A, B = R.standard_normal((6, 3, 2)), R.standard_normal((6, 3, 2))
WC, WE, PW = np.abs(R.standard_normal(5)) + 0.1, np.abs(R.standard_normal((3, 2))), np.abs(R.standard_normal(2)) + 0.2


def _losses(lib, reduction, smoothing_with_weight: bool):
    m, F = _lib(lib)
    nf = m.nn.functional
    w, we, pw = _t(lib, WC), _t(lib, WE), _t(lib, PW)
    kw = {"reduction": reduction}

    def f(lg, t, lg3, t3, p, x, y):
        out = [nf.cross_entropy(lg, t, weight=w, **kw), nf.cross_entropy(lg, t, weight=w, ignore_index=3, **kw),
               nf.cross_entropy(lg3, t3, weight=w, **kw), nf.cross_entropy(lg, p, weight=w, **kw),
               nf.cross_entropy(lg, p, weight=w, label_smoothing=0.3, **kw),
               nf.cross_entropy(lg[0], t[0], weight=w, **kw), nf.nll_loss(lg, t, weight=w, ignore_index=3, **kw),
               nf.nll_loss(lg3.log_softmax(1), t3, weight=w, **kw),
               nf.binary_cross_entropy(x.sigmoid(), y.sigmoid(), weight=we, **kw),
               nf.binary_cross_entropy_with_logits(x, y.sigmoid(), weight=we, pos_weight=pw, **kw),
               nf.mse_loss(x, y, **kw), nf.l1_loss(x, y, **kw), nf.smooth_l1_loss(x, y, beta=0.0, **kw),
               nf.huber_loss(x, y, delta=0.7, **kw)]
        if smoothing_with_weight:  # (torch.func's vmap refuses these with reduction="mean": a masked_select)
            out += [nf.cross_entropy(lg, t, weight=w, label_smoothing=0.2, **kw),
                    nf.cross_entropy(lg, t, weight=w, ignore_index=3, label_smoothing=0.1, **kw)]
        return tuple(out)
    return f, [_t(lib, v) for v in (LG, TG, LG3, TG3, P, A, B)]


def _nan_close(a, b, tol):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_with_options(reduction):
    f, args = _losses("fg", reduction, reduction != "mean")
    got, nb, nl = _paths(lambda: _np(ff.vmap(f)(*args)))
    assert (nb, nl) == (1, 0), _vmap.stats["why"]
    f, args = _losses("torch", reduction, reduction != "mean")
    _nan_close(got, _np(torch.func.vmap(f)(*args)), 1e-10)


def test_weighted_mean_with_label_smoothing_against_torch_per_element():
    got = []
    for lib in ("fg", "torch"):
        f, args = _losses(lib, "mean", True)
        if lib == "fg":
            out, nb, nl = _paths(lambda: _np(ff.vmap(f)(*args)))
            assert (nb, nl) == (1, 0), _vmap.stats["why"]
            got.append(out)
        else:  # torch.func refuses it: torch once per element
            rows = [_np(f(*[a[i] for a in args])) for i in range(6)]
            got.append(tuple(np.stack([r[j] for r in rows]) for j in range(len(rows[0]))))
    _nan_close(got[0], got[1], 1e-10)


def test_per_sample_gradients_of_weighted_losses():
    def run(lib):
        m, F = _lib(lib)
        nf = m.nn.functional
        w = _t(lib, WC)

        def loss(lg, t, x, y):
            return (nf.cross_entropy(lg, t, weight=w, ignore_index=3) * 0 + nf.cross_entropy(lg, t, weight=w)
                    + nf.nll_loss(lg.log_softmax(-1), t, weight=w, reduction="sum")
                    + nf.binary_cross_entropy_with_logits(x, y.sigmoid(), pos_weight=_t(lib, PW)))
        lg = _t(lib, LG)
        return F.vmap(F.grad(loss, argnums=(0, 2)))(lg, _t(lib, np.where(TG == 3, 0, TG)), _t(lib, A), _t(lib, B))
    _check(run, batched=1)


# ---- batch_norm in training mode -----------------------------------------------------------------------------
def _bn_net(lib, track: bool):
    m = fg if lib == "fg" else torch
    net = m.nn.Sequential(m.nn.Conv2d(2, 3, 3, padding=1), m.nn.BatchNorm2d(3, track_running_stats=track),
                          m.nn.ReLU(), m.nn.Flatten(), m.nn.Linear(3 * 4 * 5, 2),
                          m.nn.BatchNorm1d(2, affine=False, track_running_stats=track))
    with (fg.no_grad() if lib == "fg" else torch.no_grad()):
        for i, p in enumerate(net.parameters()):
            p.copy_(_t(lib, np.random.default_rng(i).standard_normal(tuple(p.shape)).astype(np.float32) * 0.4))
    return net


def test_batch_norm_training_with_running_stats_raises_as_torch(monkeypatch):
    x = R.standard_normal((3, 4, 2, 4, 5)).astype(np.float32)
    # eval mode uses the running statistics: batched
    _check(lambda lib: _lib(lib)[1].vmap(_bn_net(lib, True).eval())(_t(lib, x)), tol=2e-5, batched=1)
    messages = []
    for lib in ("torch", "fg", "fg-loop"):
        if lib == "fg-loop":
            _loop_only(monkeypatch)  # the loop raises it too (a call that loops for another reason)
        lb = lib[:2] if lib != "torch" else lib
        m, F = _lib(lb)
        net = _bn_net(lb, True)
        for call in (lambda: F.vmap(net)(_t(lb, x)),
                     lambda: F.vmap(lambda a: m.nn.functional.batch_norm(a, m.zeros(2), None, training=True))(
                         _t(lb, x[:, 0].transpose(0, 2, 1, 3)))):
            with pytest.raises(RuntimeError) as e:
                call()
            messages.append(str(e.value))
        assert not np.any(_np(net[1].running_mean))  # raised before any update
    assert messages[2:4] == messages[:2] and messages[4:] == messages[:2]
    assert "running_mean or running_var, which will be updated in place, were not batched" in messages[0]


def test_batch_norm_training_without_running_stats():
    x = R.standard_normal((3, 4, 2, 4, 5)).astype(np.float32)
    ys = R.integers(0, 2, (3, 4))

    def run(lib):
        m, F = _lib(lib)
        plain = _bn_net(lib, False)
        replaced = F.replace_all_batch_norm_modules_(_bn_net(lib, True))
        assert replaced[1].running_mean is None and not replaced[1].track_running_stats
        assert replaced[5].num_batches_tracked is None
        params = {k: v.detach() for k, v in replaced.named_parameters()}

        def loss(p, a, y):
            return m.nn.functional.cross_entropy(F.functional_call(replaced, p, (a,)), y)
        return (F.vmap(plain)(_t(lib, x)), F.vmap(replaced)(_t(lib, x)),
                F.vmap(F.grad_and_value(loss), in_dims=(None, 0, 0))(params, _t(lib, x), _t(lib, ys)))
    _check(run, tol=5e-5, batched=3)


def test_replace_all_batch_norm_modules_refuses_a_non_module():
    with pytest.raises(TypeError, match="root must be an nn.Module"):
        ff.replace_all_batch_norm_modules_({"bn": fg.nn.BatchNorm1d(2)})
    net = fg.nn.Sequential(fg.nn.BatchNorm1d(2, track_running_stats=False), fg.nn.InstanceNorm1d(2))
    assert ff.replace_all_batch_norm_modules_(net) is net and net[0].running_mean is None


def test_batch_norm_batched_running_stats_loop():
    """Running statistics vmapped with the input (in_dims 0): each element updates its own, in the loop."""
    x = R.standard_normal((3, 4, 2, 5))
    stats = np.abs(R.standard_normal((3, 2))) + 0.5

    def run(lib):
        m, F = _lib(lib)
        rm, rv = _t(lib, stats.copy()), _t(lib, stats.copy() * 2)
        out = F.vmap(lambda a, mu, var: m.nn.functional.batch_norm(a, mu, var, training=True, momentum=0.3))(
            _t(lib, x), rm, rv)
        return out, rm, rv
    _check(run, batched=0, loops=1)


# ---- dropout ---------------------------------------------------------------------------------------------------
def test_dropout_under_each_randomness(monkeypatch):
    """"different": one draw for the whole batch (each element its own masks, not the loop's numbers: the loop
    interleaves the elements' draws); "same": one element's masks for all, as the loop (which rewinds the
    generator before each element) draws them; "error": torch's error. Another draw beside it under "different"
    loops."""
    x = fg.tensor(R.standard_normal((5, 3, 4)).astype(np.float32))
    net = fg.nn.Sequential(fg.nn.Linear(4, 6), fg.nn.Dropout(0.4), fg.nn.ReLU(), fg.nn.Dropout(0.2))
    with pytest.raises(RuntimeError, match="randomness error mode"):
        ff.vmap(net)(x)
    fg.manual_seed(5)
    different, nb, nl = _paths(lambda: ff.vmap(fg.nn.Dropout(0.4), randomness="different", chunk_size=3)(x).numpy())
    assert (nb, nl) == (1, 0)
    assert not np.array_equal(different[0] == 0, different[1] == 0)
    kept = different != 0
    np.testing.assert_allclose(different[kept], x.numpy()[kept] / 0.6, rtol=1e-6)
    assert 0.2 < 1 - kept.mean() < 0.6
    same, nb, nl = _paths(lambda: ff.vmap(fg.nn.Dropout(0.4), randomness="same")(x).numpy())
    assert (nb, nl) == (1, 0) and (same == 0).any()
    assert all(np.array_equal(same[0] == 0, same[k] == 0) for k in range(5))
    # per-sample gradients through the batched masks
    g, nb, nl = _paths(lambda: ff.vmap(ff.grad(lambda a: fg.nn.functional.dropout(a, 0.5).sum()),
                                       randomness="different")(x).numpy())
    assert (nb, nl) == (1, 0) and set(np.unique(g)) == {0.0, 2.0}
    outs, paths = [], []
    for force_loop in (False, True):
        if force_loop:
            _loop_only(monkeypatch)
        got = []
        for call in (lambda: ff.vmap(net, randomness="same")(x),
                     lambda: ff.vmap(lambda a: fg.nn.functional.dropout(a, 0.5) * fg.randn(4), randomness="different")(
                         x)):
            fg.manual_seed(5)
            out, nb, nl = _paths(lambda: call().detach().numpy())
            got.append((out, fg.randn(3).numpy()))  # the generator ends where the loop leaves it
            paths.append((nb, nl))
        outs.append(got)
    assert paths == [(1, 0), (0, 1), (0, 1), (0, 1)]
    _close(outs[0], outs[1], 1e-6)  # (the batched Linear rounds differently)
    np.testing.assert_array_equal(outs[0][0][0] == 0, outs[1][0][0] == 0)


# ---- side effects of a call that loops -----------------------------------------------------------------------
def test_side_effects_of_a_looping_call():
    """Documented: a call whose batched attempt loops has run the body once more (the attempt saw one batched
    element); vmap remembers it, so the next call of the same function with the same input shapes loops at once
    and runs the body once per element only. A batched call runs it once."""
    x = fg.tensor(R.standard_normal((4, 3)))
    seen, counter = [], fg.zeros(())

    def body(a):
        seen.append(tuple(a.shape))
        counter.add_(1)  # an unbatched tensor written with unbatched values: not undone
        return a.sort()[0]  # no batching rule: the call loops
    f = ff.vmap(body)
    out, nb, nl = _paths(lambda: f(x))
    assert (nb, nl) == (0, 1) and len(seen) == 1 + 4 and counter.item() == 5
    np.testing.assert_allclose(out.numpy(), np.sort(x.numpy(), -1))
    seen.clear()
    _, nb, nl = _paths(lambda: f(x))
    assert (nb, nl) == (0, 1) and len(seen) == 4 and counter.item() == 9 and _vmap.stats["why"] == "looped before"
    f(x[:3])  # other shapes: a fresh batched attempt
    assert len(seen) == 4 + 1 + 3
    seen.clear()
    ff.vmap(lambda a: seen.append(1) or a * 2)(x)
    assert seen == [1]
    # a loop that raised is not remembered; a module's train/eval switch gets a fresh batched attempt
    net = fg.nn.Sequential(fg.nn.Linear(3, 3), fg.nn.Dropout(0.5))
    g = ff.vmap(net)
    with pytest.raises(RuntimeError, match="randomness error mode"):
        g(x.float())
    net.eval()
    _, nb, nl = _paths(lambda: g(x.float()))
    assert (nb, nl) == (1, 0)
