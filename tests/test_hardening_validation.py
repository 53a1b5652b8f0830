"""Regression tests for argument validation and out= aliasing (issue #12, items 3 and 5): flags must
be real bools, indices real ints, scalars are named when mistyped, optimizer hyperparameters are
range-checked as torch does, and an out= that partially overlaps an input is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _validate as V
from forgegrad.kernels import activation as KA
from forgegrad.kernels import loss as KL
from forgegrad.kernels import norm as KN
from forgegrad.kernels import optim as KO
from forgegrad.kernels import pool as KP
from forgegrad.kernels import rnn as KR
from forgegrad.kernels import softmax as KS
from forgegrad.nn import functional as F


# ---- the shared helpers --------------------------------------------------------------------------
def test_check_bool():
    assert V.check_bool(True, "f") is True and V.check_bool(np.bool_(False), "f") is False
    for bad in ("abc", 1, 0, None, 1.0, np.array([True])):
        with pytest.raises(TypeError, match="flag must be a bool"):
            V.check_bool(bad, "flag")


def test_check_int():
    assert V.check_int(np.int32(-3), "i") == -3 and type(V.check_int(np.int64(2), "i")) is int
    for bad in (1.5, 1.0, True, "1", None):
        with pytest.raises(TypeError, match="ignore_index must be an int"):
            V.check_int(bad, "ignore_index")
    with pytest.raises(ValueError, match=r"n must be in \[0, 3\], got 4"):
        V.check_int(4, "n", low=0, high=3)


def test_check_float():
    assert V.check_float(2, "x") == 2.0 and V.check_float(np.float32(0.5), "x") == 0.5
    assert V.check_float(np.array(0.25), "x") == 0.25  # a 0-d array, through __float__
    for bad in ("0.1", None, True, [1.0], 1 + 2j, np.ones(3), np.array(True)):
        with pytest.raises(TypeError, match="lr must be a number"):
            V.check_float(bad, "lr")
    with pytest.raises(ValueError, match=r"beta1 must be in \[0.0, 1.0\), got 1.0"):
        V.check_float(1, "beta1", low=0.0, high=1.0, high_open=True)
    with pytest.raises(ValueError, match="must be in"):
        V.check_float(float("nan"), "x", low=0.0)
    with pytest.raises(ValueError, match="must be finite"):
        V.check_float(float("inf"), "x", finite=True)


# ---- public functions and kernel wrappers ------------------------------------------------------------
X = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
T = np.array([0, 2, 1, 2])


@pytest.mark.parametrize("call,name", [
    (lambda: F.dropout(fg.tensor(X), training="abc"), "training"),
    (lambda: F.kl_div(fg.tensor(X), fg.tensor(X), log_target=1), "log_target"),
    (lambda: F.batch_norm(fg.tensor(X), fg.zeros(3), fg.ones(3), training="yes"), "training"),
    (lambda: F.max_pool2d(fg.zeros(1, 1, 4, 4), 2, ceil_mode="no"), "ceil_mode"),
    (lambda: F.avg_pool2d(fg.zeros(1, 1, 4, 4), 2, count_include_pad=None), "count_include_pad"),
    (lambda: KN.batch_norm_forward(X, running_mean=np.zeros(3, np.float32), running_var=np.ones(3, np.float32),
                                   training="abc"), "training"),
    (lambda: KP.max_pool2d_forward(np.zeros((1, 1, 4, 4), np.float32), 2, ceil_mode=[]), "ceil_mode"),
    (lambda: KR.gru_forward(np.zeros((2, 1, 3), np.float32), np.zeros((1, 2), np.float32),
                            np.zeros((6, 3), np.float32), np.zeros((6, 2), np.float32), reverse="yes"), "reverse"),
    (lambda: KO.sgd_step([X.copy()], [X], None, [], lr=0.1, nesterov=1), "nesterov"),
])
def test_flags_must_be_bools(call, name):
    with pytest.raises(TypeError, match=f"{name} must be a bool"):
        call()


@pytest.mark.parametrize("make,name", [
    (lambda: fg.nn.LSTM(3, 4, batch_first="yes"), "batch_first"),
    (lambda: fg.nn.GRU(3, 4, bidirectional="no"), "bidirectional"),  # (torch takes 1 or None here by truth value:
    (lambda: fg.nn.RNNCell(3, 4, bias="no"), "bias"),  # test_bool_flags_torch.py; a string never)
    (lambda: fg.nn.BatchNorm1d(3, affine="no"), "affine"),
    (lambda: fg.nn.BatchNorm2d(3, track_running_stats="False"), "track_running_stats"),
])
def test_module_flags_must_be_bools(make, name):
    with pytest.raises(TypeError, match=f"{name} must be a bool"):
        make()


def test_module_scalars_are_named():
    with pytest.raises(TypeError, match="negative_slope must be a number"):
        fg.nn.LeakyReLU("0.1")
    with pytest.raises(TypeError, match="eps must be a number"):
        fg.nn.BatchNorm1d(3, eps="1e-5")


def test_unaligned_int64_target_is_copied():
    buf = np.zeros(4 * 8 + 1, np.uint8)
    t = np.frombuffer(buf.data, np.int64, count=4, offset=1)
    assert not t.flags.aligned
    want = KL.cross_entropy_forward(X, np.zeros(4, np.int64))[0]
    np.testing.assert_array_equal(KL.cross_entropy_forward(X, t)[0], want)


def test_numpy_bools_are_bools():
    with fg.no_grad():
        y = F.dropout(fg.tensor(X), p=0.5, training=np.bool_(False))
    assert np.array_equal(y._data, X)


@pytest.mark.parametrize("fn", [
    lambda ii: F.cross_entropy(fg.tensor(X), fg.tensor(T), ignore_index=ii),
    lambda ii: F.nll_loss(fg.tensor(X), fg.tensor(T), ignore_index=ii),
    lambda ii: KL.cross_entropy_forward(X, T, ignore_index=ii),
    lambda ii: KL.cross_entropy_backward(KS.softmax(X), T, ignore_index=ii),
])
def test_ignore_index_must_be_an_int(fn):
    with pytest.raises(TypeError, match="ignore_index must be an int, got float 1.5"):
        fn(1.5)
    fn(np.int64(1))  # numpy integers are fine


def test_ignore_index_matches_torch():
    want = torch.nn.functional.cross_entropy(torch.from_numpy(X), torch.from_numpy(T), ignore_index=2)
    got = F.cross_entropy(fg.tensor(X), fg.tensor(T), ignore_index=np.int32(2))
    np.testing.assert_allclose(got._data, want.numpy(), rtol=1e-6)


@pytest.mark.parametrize("call,name", [
    (lambda v: F.leaky_relu(fg.tensor(X), negative_slope=v), "negative_slope"),
    (lambda v: F.dropout(fg.tensor(X), p=v), "p"),
    (lambda v: F.cross_entropy(fg.tensor(X), fg.tensor(T), label_smoothing=v), "label_smoothing"),
    (lambda v: KL.cross_entropy_forward(X, T, label_smoothing=v), "label_smoothing"),
    (lambda v: KL.cross_entropy_backward(KS.softmax(X), T, grad_scale=v), "grad_scale"),
    (lambda v: KN.batch_norm_forward(X, training=True, momentum=v), "momentum"),
    (lambda v: F.batch_norm(fg.tensor(X), None, None, training=True, eps=v), "eps"),
    (lambda v: KO.adam_step([X.copy()], [X], [X * 0], [X * 0], None, [1], lr=v, beta1=0.9, beta2=0.999, eps=1e-8),
     "lr"),
    (lambda v: KO.sgd_step([X.copy()], [X], None, [], lr=0.1, weight_decay=v), "weight_decay"),
])
def test_wrong_typed_scalars_are_named(call, name):
    with pytest.raises(TypeError, match=f"{name} must be a number") as e:
        call("0.5")
    assert "float() argument" not in str(e.value)


def _adam(**kw):
    p = X.copy()
    args = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    args.update(kw)
    KO.adam_step([p], [X], [np.zeros_like(X)], [np.zeros_like(X)], None, [1], **args)
    return p


@pytest.mark.parametrize("kw,match", [
    ({"beta1": 1}, r"beta1 must be in \[0.0, 1.0\)"), ({"beta1": -0.1}, "beta1 must be in"),
    ({"beta2": 1.0}, "beta2 must be in"), ({"lr": -1e-3}, "lr must be in"), ({"eps": -1.0}, "eps must be in"),
    ({"weight_decay": -0.1}, "weight_decay must be in"), ({"beta1": float("nan")}, "beta1 must be in"),
])
def test_adam_step_ranges_as_torch(kw, match):
    with pytest.raises(ValueError, match=match):
        _adam(**kw)
    with pytest.raises(ValueError):  # torch refuses the same values
        torch.optim.Adam([torch.zeros(1, requires_grad=True)],
                         **{("betas" if k.startswith("beta") else k):
                            ((v, 0.999) if k == "beta1" else (0.9, v)) if k.startswith("beta") else v
                            for k, v in kw.items()})


def test_adam_step_still_matches_torch():
    p = torch.from_numpy(X.copy()).requires_grad_()
    p.grad = torch.from_numpy(X.copy())
    torch.optim.Adam([p], lr=1e-3, betas=(0.0, 0.99), eps=1e-8).step()
    np.testing.assert_allclose(_adam(beta1=0.0, beta2=0.99), p.detach().numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kw", [{"lr": -0.1}, {"momentum": -0.5}, {"nesterov": True},
                                {"nesterov": True, "momentum": 0.9, "dampening": 0.1}])
def test_sgd_step_ranges_as_torch(kw):
    args = dict({"lr": 0.1}, **kw)
    bufs = [np.zeros_like(X)] if args.get("momentum") else None
    with pytest.raises(ValueError):
        KO.sgd_step([X.copy()], [X], bufs, [True], **args)
    with pytest.raises(ValueError):
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], **args)


# ---- out= aliasing ---------------------------------------------------------------------------------
def _buffer(n=64):
    return np.random.default_rng(3).standard_normal(n).astype(np.float32)


@pytest.mark.parametrize("fn", [KA.relu, KA.sigmoid, KA.tanh, KA.gelu, KA.leaky_relu, KS.softmax, KS.log_softmax])
def test_forward_out_partially_overlapping_input_is_refused(fn):
    buf = _buffer()
    x, out = buf[0:40].reshape(5, 8), buf[8:48].reshape(5, 8)
    with pytest.raises(ValueError, match="out partially overlaps x"):
        fn(x, out=out)
    want = fn(x.copy())
    y = x.copy()
    assert fn(y, out=y) is y and np.array_equal(y, want)  # exactly in place is allowed


@pytest.mark.parametrize("fn,saved", [(KA.relu_backward, "y"), (KA.sigmoid_backward, "y"), (KA.tanh_backward, "y"),
                                      (KA.gelu_backward, "x"), (KS.softmax_backward, "y"),
                                      (KS.log_softmax_backward, "y")])
def test_backward_out_partially_overlapping_is_refused(fn, saved):
    buf = _buffer(96)
    g, s = buf[0:40].reshape(5, 8), buf[48:88].reshape(5, 8)
    with pytest.raises(ValueError, match="out partially overlaps grad"):
        fn(g, s, out=buf[4:44].reshape(5, 8))
    with pytest.raises(ValueError, match=f"out partially overlaps {saved}"):
        fn(g, s, out=buf[52:92].reshape(5, 8))
    want = fn(g.copy(), s.copy())
    g2, s2 = g.copy(), s.copy()
    assert np.array_equal(fn(g2, s, out=g2), want) and np.array_equal(fn(g, s2, out=s2), want)


def test_column_sums_out_overlapping_x_is_refused():
    buf = _buffer()
    with pytest.raises(ValueError, match="out overlaps x"):
        KA.column_sums(buf[:40].reshape(5, 8), out=buf[32:40])


def test_cross_entropy_backward_out_overlap():
    prob = KS.softmax(X)
    buf = np.zeros(40, np.float32)
    buf[:12] = prob.ravel()
    with pytest.raises(ValueError, match="out partially overlaps prob"):
        KL.cross_entropy_backward(buf[:12].reshape(4, 3), T, out=buf[3:15].reshape(4, 3))
    gl = np.ones(40, np.float32)
    with pytest.raises(ValueError, match="out overlaps grad_loss"):
        KL.cross_entropy_backward(prob, T, grad_loss=gl[:4], out=gl[2:14].reshape(4, 3))
    want = KL.cross_entropy_backward(prob, T)
    p2 = prob.copy()
    assert np.array_equal(KL.cross_entropy_backward(p2, T, out=p2), want)  # documented: out may be prob
    with pytest.raises(ValueError, match=r"out must have shape \(4, 3\)"):
        KL.cross_entropy_backward(prob, T, out=np.zeros((3, 4), np.float32))


# ---- found probing the recently added ops (2026-12-06) ----------------------------------------------------
@pytest.mark.parametrize("kw, err, msg", [
    (dict(label_smoothing="x"), TypeError, "label_smoothing must be a number"),  # was: '<=' not supported
    (dict(bias="yes"), TypeError, "bias must be a bool"),  # was: taken by truthiness
    (dict(out_features=-1), TypeError, "out_features must be a tuple"),  # was: 'int' object is not iterable
    (dict(out_features=(2.5,)), ValueError, "out_features entries must be a positive int, got 2.5"),
    (dict(weight=[1.0] * 5), TypeError, "weight must be a Tensor"),  # was: AttributeError
])
def test_linear_cross_entropy_loss_arguments(kw, err, msg):
    with pytest.raises(err, match=msg):
        fg.nn.LinearCrossEntropyLoss(3, 5, **kw)


def test_linear_cross_entropy_loss_num_classes():
    """num_classes=0 was reported as Linear's out_features (the product of num_classes and out_features)."""
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="LinearCrossEntropyLoss: num_classes must be a positive int"):
            fg.nn.LinearCrossEntropyLoss(3, bad)
    m = fg.nn.LinearCrossEntropyLoss(3, 5, out_features=[2], bias=np.bool_(True), label_smoothing=np.float32(0.25))
    assert m.out_features == (2,) and m.linear.weight.shape == (10, 3) and m.label_smoothing == 0.25
