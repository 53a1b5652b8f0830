"""Defects found reviewing the ctc / resample / groupnorm / losses merges, each checked against torch."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F

RNG = np.random.default_rng(11)
A = RNG.standard_normal((4, 5)).astype(np.float32)
B = RNG.standard_normal((4, 5))  # float64
C = RNG.standard_normal((4, 5)).astype(np.float32)
Y = np.array([1.0, -1.0, 1.0, -1.0])  # float64

# (name, call(F, *tensors), arrays): float32 and float64 arguments mixed; torch promotes the loss to float64
MIXED = [
    ("cosine_embedding", lambda F_, a, b, y: F_.cosine_embedding_loss(a, b, y, margin=0.1),
     (A, B, Y.astype(np.float32))),
    ("margin_ranking", lambda F_, a, b, y: F_.margin_ranking_loss(a, b, y, margin=0.2), (A[:, 0], C[:, 0], Y)),
    ("triplet_margin", lambda F_, a, p, n: F_.triplet_margin_loss(a, p, n, swap=True), (A, C, B)),
    ("poisson_nll", lambda F_, x, t: F_.poisson_nll_loss(x, t, full=True), (A, np.abs(B) * 3)),
    ("gaussian_nll", lambda F_, x, t, v: F_.gaussian_nll_loss(x, t, v), (A, C, np.abs(B) + 0.1)),
    ("multilabel_soft_margin", lambda F_, x, t: F_.multilabel_soft_margin_loss(x, t), (A, (B > 0) * 1.0)),
    ("multilabel_soft_margin weight", lambda F_, x, t, w: F_.multilabel_soft_margin_loss(x, t, weight=w),
     (A, (C > 0).astype(np.float32), np.abs(B[0]))),
]


@pytest.mark.parametrize("call,arrays", [m[1:] for m in MIXED], ids=[m[0] for m in MIXED])
def test_losses_promote_mixed_float32_float64_as_torch(call, arrays):
    """They returned the first input's float32 where torch's loss is float64."""
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    fs = [fg.tensor(a, requires_grad=True) for a in arrays]
    ref, out = call(torch.nn.functional, *ts), call(F, *fs)
    assert str(out.dtype).split(".")[-1] == str(ref.dtype).split(".")[-1] == "float64"
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-6)
    ref.backward()
    out.backward()
    for t, f in zip(ts, fs):
        if f.grad is None:  # a sign target: no gradient, torch's is 0
            assert t.grad is None or not t.grad.any()
            continue
        assert f.grad.numpy().dtype == t.grad.numpy().dtype
        np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("value", [-3.0, 0.0, 2.5])
@pytest.mark.parametrize("kw", [dict(dim=0), dict(dim=-1, p=1.0), dict(dim=(0,)), dict(p=float("inf"), dim=0)])
def test_normalize_takes_a_0d_input_as_torch(value, kw):
    """A 0-d input raised numpy's AxisError; torch takes dim 0 / -1 there."""
    x, y = torch.tensor(value, requires_grad=True), fg.tensor(np.float32(value), requires_grad=True)
    ref, out = torch.nn.functional.normalize(x, **kw), F.normalize(y, **kw)
    assert tuple(out.shape) == ()
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy())
    (ref * 1.5).backward()
    (out * 1.5).backward()
    np.testing.assert_allclose(y.grad.numpy(), x.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("v,w", [(-3.0, -2.0), (2.5, 0.0), (0.0, 4.0)])
def test_cosine_similarity_takes_0d_inputs_as_torch(v, w):
    tv, tw = torch.tensor(v, requires_grad=True), torch.tensor(w, requires_grad=True)
    fv, fw = fg.tensor(np.float32(v), requires_grad=True), fg.tensor(np.float32(w), requires_grad=True)
    ref, out = torch.nn.functional.cosine_similarity(tv, tw, dim=0), F.cosine_similarity(fv, fw, dim=-1)
    assert tuple(out.shape) == ()
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy())
    ref.backward()
    out.backward()
    np.testing.assert_allclose(fv.grad.numpy(), tv.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(fw.grad.numpy(), tw.grad.numpy(), rtol=1e-6)


def test_0d_dim_out_of_range_names_dim():
    with pytest.raises(IndexError, match="dim"):
        F.normalize(fg.tensor(np.float32(1.0)), dim=1)
    with pytest.raises(IndexError, match="dim"):
        F.cosine_similarity(fg.tensor(np.float32(1.0)), fg.tensor(np.float32(2.0)), dim=1)


@pytest.mark.parametrize("p", [2.0, 3.0, 1.5, 1.0])
def test_normalize_gradient_with_create_graph_at_a_zero_row(p):
    """create_graph=True ran the Tensor-op norm, whose sqrt / 1/p power has an infinite slope at 0: NaN for a
    zero row, where torch's gradient is g / eps (the norm gets the subgradient 0)."""
    xv = np.array([[0, 0, 0], [1, -2, 3]], np.float32)
    wv = np.array([[1, 2, 3]], np.float32)
    x, y = torch.tensor(xv, requires_grad=True), fg.tensor(xv, requires_grad=True)
    gt, = torch.autograd.grad((torch.nn.functional.normalize(x, p=p) * torch.tensor(wv)).sum(), x, create_graph=True)
    gf, = fg.autograd.grad((F.normalize(y, p=p) * fg.tensor(wv)).sum(), y, create_graph=True)
    # atol: at p = 1 the row [1, -2, 3]'s first entry is an exact cancellation (1/6 - 6/36), which torch's
    # rounding leaves at 1.5e-8 and forgegrad's at 0
    np.testing.assert_allclose(gf.numpy(), gt.detach().numpy(), rtol=1e-5, atol=1e-6)
    # the nonzero row's second derivative is unchanged
    ht, = torch.autograd.grad((gt[1] ** 2).sum(), x)
    hf, = fg.autograd.grad((gf[1] ** 2).sum(), y)
    np.testing.assert_allclose(hf.numpy()[1], ht.numpy()[1], rtol=1e-4)


def test_cosine_similarity_gradient_with_create_graph_at_a_zero_vector():
    xv = np.array([[0, 0, 0], [1, -2, 3]], np.float32)
    zv = np.array([[1, 2, 3], [0, 0, 0]], np.float32)
    x, y = torch.tensor(xv, requires_grad=True), fg.tensor(xv, requires_grad=True)
    gt, = torch.autograd.grad(torch.nn.functional.cosine_similarity(x, torch.tensor(zv)).sum(), x, create_graph=True)
    gf, = fg.autograd.grad(F.cosine_similarity(y, fg.tensor(zv)).sum(), y, create_graph=True)
    assert np.isfinite(gf.numpy()).all()
    np.testing.assert_allclose(gf.numpy(), gt.detach().numpy(), rtol=1e-5)


@pytest.mark.parametrize("key", ["a.b", ""])
def test_parameter_dict_refuses_keys_a_state_dict_cannot_hold(key):
    """'a.b' became the state_dict key 'a.b' (torch's loaders read a submodule 'a'); torch refuses both keys."""
    with pytest.raises(KeyError):
        torch.nn.ParameterDict({key: torch.nn.Parameter(torch.ones(1))})
    with pytest.raises(KeyError, match="ParameterDict"):
        fg.nn.ParameterDict({key: fg.nn.Parameter(fg.ones(1))})
    d = fg.nn.ParameterDict()
    with pytest.raises(KeyError, match="ParameterDict"):
        d[key] = fg.nn.Parameter(fg.ones(1))


def test_fuzz_found_argument_type_errors_name_the_argument():
    # the op fuzz suite's cases: an int where a weight/bias tensor goes gave AttributeError; a str for a bool flag
    # was taken by truthiness
    import re
    x = fg.tensor(np.ones((2, 6, 3, 3), np.float32))
    with pytest.raises(TypeError, match="bias"):
        fg.ops.get("group_norm")(x, 3, None, 1)
    inp = fg.tensor(np.ones((5, 7), np.float32))
    with pytest.raises(TypeError, match="weight"):
        fg.ops.get("multi_margin_loss")(inp, fg.tensor(np.zeros(5, np.int64)), 1, 1.0, 1)
    with pytest.raises(TypeError, match="weight"):
        fg.ops.get("multilabel_soft_margin_loss")(inp, inp, 1)
    for kw in ({"log_input": "True"}, {"full": "no"}):
        with pytest.raises(TypeError, match=re.escape(next(iter(kw)))):
            fg.ops.get("poisson_nll_loss")(inp, inp, **kw)
    with pytest.raises(TypeError, match="full"):
        fg.ops.get("gaussian_nll_loss")(inp, inp, inp, full="yes")
    with pytest.raises(TypeError, match="swap"):
        fg.ops.get("triplet_margin_loss")(inp, inp, inp, swap="yes")


def test_pixel_unshuffle_of_an_empty_batch_has_the_unshuffled_shape():
    y = F.pixel_unshuffle(fg.tensor(np.zeros((0, 2, 6, 4), np.float32)), 2)
    assert tuple(y.shape) == (0, 8, 3, 2)
