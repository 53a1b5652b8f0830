"""The nn.functional operations at package level (forgegrad.conv2d, forgegrad.batch_norm, ...) with torch's
package-level (aten) signatures: positional calls, torch's keyword names, values against torch 2.13, errors."""
import numpy as np
import pytest
import torch

import forgegrad as fg

R = np.random.default_rng(0)
X3 = R.standard_normal((2, 4, 9)).astype(np.float32)      # (N, C, L)
X4 = R.standard_normal((2, 4, 6, 6)).astype(np.float32)   # (N, C, H, W)
W1 = R.standard_normal((3, 4, 3)).astype(np.float32)
W2 = R.standard_normal((3, 4, 3, 3)).astype(np.float32)
WT1 = R.standard_normal((4, 3, 3)).astype(np.float32)
WT2 = R.standard_normal((4, 3, 3, 3)).astype(np.float32)
B3 = R.standard_normal(3).astype(np.float32)
C4 = R.standard_normal(4).astype(np.float32)
V4 = (R.random(4) + 0.5).astype(np.float32)
A = R.standard_normal((5, 6)).astype(np.float32)
B = R.standard_normal((5, 6)).astype(np.float32)
C = R.standard_normal((5, 6)).astype(np.float32)
SIGN = np.where(R.random(5) > 0.5, 1.0, -1.0).astype(np.float32)
PROB = R.random((5, 6)).astype(np.float32)
LOGP = np.log(R.dirichlet(np.ones(6), 5)).astype(np.float32)
EMB = R.standard_normal((7, 3)).astype(np.float32)
IDX = np.array([[0, 2, 6], [3, 3, 1]], np.int64)
BW = R.standard_normal((2, 6, 6)).astype(np.float32)
CTC_LP = np.log(R.dirichlet(np.ones(5), (8, 2))).astype(np.float32)  # (T, N, C)
CTC_T = np.array([[1, 2, 3], [2, 4, 0]], np.int64)


def _conv(m, x):
    return m.tensor(x) if m is fg or x.dtype != np.float64 else m.tensor(x)


CASES = {
    "conv1d": lambda m, T: m.conv1d(T(X3), T(W1), T(B3), 2, 1, 1, 1),
    "conv1d kw": lambda m, T: m.conv1d(input=T(X3), weight=T(W1), bias=None, stride=1, padding=2, dilation=2),
    "conv2d": lambda m, T: m.conv2d(T(X4), T(W2), T(B3), 1, 1, 1, 1),
    "conv2d kw": lambda m, T: m.conv2d(T(X4), T(W2), stride=2, groups=1),
    "conv_transpose1d": lambda m, T: m.conv_transpose1d(T(X3), T(WT1), T(B3), 2, 1, 1, 1, 1),
    "conv_transpose2d": lambda m, T: m.conv_transpose2d(T(X4), T(WT2), None, 2, 0, 1, 1, 1),
    "conv_transpose2d kw": lambda m, T: m.conv_transpose2d(T(X4), T(WT2), bias=T(B3), stride=1, padding=1),
    "layer_norm": lambda m, T: m.layer_norm(T(A), [6], T(A[0]), T(B[0]), 1e-3, True),
    "layer_norm kw": lambda m, T: m.layer_norm(input=T(A), normalized_shape=(6,), eps=1e-5),
    "group_norm": lambda m, T: m.group_norm(T(X4), 2, T(C4), T(V4), 1e-4, True),
    "group_norm kw": lambda m, T: m.group_norm(T(X4), num_groups=4),
    "batch_norm train": lambda m, T: m.batch_norm(T(X4), T(C4), T(V4), T(C4.copy()), T(V4.copy()), True, 0.1, 1e-5,
                                                  False),
    "batch_norm eval": lambda m, T: m.batch_norm(T(X3), None, None, T(C4), T(V4), False, 0.1, 1e-3, True),
    "batch_norm kw": lambda m, T: m.batch_norm(input=T(X3), weight=T(V4), bias=None, running_mean=T(C4),
                                               running_var=T(V4), training=False, momentum=0.1, eps=1e-5,
                                               cudnn_enabled=False),
    "instance_norm": lambda m, T: m.instance_norm(T(X3), T(V4), T(C4), None, None, True, 0.1, 1e-5, False),
    "dropout eval": lambda m, T: m.dropout(T(A), 0.5, False),
    "dropout p0": lambda m, T: m.dropout(input=T(A), p=0.0, train=True),
    "alpha_dropout eval": lambda m, T: m.alpha_dropout(T(A), 0.3, False),
    "feature_alpha_dropout eval": lambda m, T: m.feature_alpha_dropout(T(X3), 0.3, False),
    "embedding": lambda m, T: m.embedding(T(EMB), T(IDX)),
    "embedding pad": lambda m, T: m.embedding(T(EMB), T(IDX), 3, False, False),
    "embedding kw": lambda m, T: m.embedding(weight=T(EMB), indices=T(IDX), padding_idx=-1),
    "max_pool1d": lambda m, T: m.max_pool1d(T(X3), 3),
    "max_pool1d all": lambda m, T: m.max_pool1d(T(X3), 3, 2, 1, 1, True),
    "max_pool2d": lambda m, T: m.max_pool2d(T(X4), 2, (), 0, 1, False),
    "max_pool2d kw": lambda m, T: m.max_pool2d(input=T(X4), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    "max_pool1d_with_indices": lambda m, T: m.max_pool1d_with_indices(T(X3), 2, 2),
    "avg_pool1d": lambda m, T: m.avg_pool1d(T(X3), 3, 2, 1, False, False),
    "avg_pool1d kw": lambda m, T: m.avg_pool1d(T(X3), kernel_size=2, ceil_mode=True),
    "adaptive_avg_pool1d": lambda m, T: m.adaptive_avg_pool1d(T(X3), 4),
    "adaptive_max_pool1d": lambda m, T: m.adaptive_max_pool1d(T(X3), 4),
    "pixel_shuffle": lambda m, T: m.pixel_shuffle(T(X4), 2),
    "pixel_unshuffle": lambda m, T: m.pixel_unshuffle(T(X4), 3),
    "channel_shuffle": lambda m, T: m.channel_shuffle(T(X4), 2),
    "cosine_similarity": lambda m, T: m.cosine_similarity(T(A), T(B), 0, 1e-6),
    "cosine_similarity kw": lambda m, T: m.cosine_similarity(x1=T(A), x2=T(B)),
    "pairwise_distance": lambda m, T: m.pairwise_distance(T(A), T(B), 1.0, 1e-6, True),
    "prelu": lambda m, T: m.prelu(T(X3), T(C4)),
    "selu": lambda m, T: m.selu(T(A)),
    "selu_": lambda m, T: m.selu_(T(A.copy())),
    "celu": lambda m, T: m.celu(T(A), 0.7),
    "celu_": lambda m, T: m.celu_(T(A.copy()), alpha=1.5),
    "rrelu eval": lambda m, T: m.rrelu(T(A), 0.1, 0.3, False),
    "rrelu_ eval": lambda m, T: m.rrelu_(T(A.copy()), 0.2, 0.4, False),
    "threshold": lambda m, T: m.threshold(T(A), 0.1, -5.0),
    "threshold_": lambda m, T: m.threshold_(T(A.copy()), 0.0, 2.0),
    "hardshrink": lambda m, T: m.hardshrink(T(A), 0.6),
    "hardshrink default": lambda m, T: m.hardshrink(T(A)),
    "relu_": lambda m, T: m.relu_(T(A.copy())),
    "bilinear": lambda m, T: m.bilinear(T(A), T(B), T(BW), T(B3[:2])),
    "kl_div": lambda m, T: m.kl_div(T(LOGP), T(PROB), 1),
    "kl_div sum log_target": lambda m, T: m.kl_div(T(LOGP), T(LOGP[::-1].copy()), 2, log_target=True),
    "kl_div default": lambda m, T: m.kl_div(T(LOGP), T(PROB)),  # torch's package-level default: none
    "ctc_loss default": lambda m, T: m.ctc_loss(T(CTC_LP), T(CTC_T), [8, 7], [3, 2]),
    "margin_ranking_loss default": lambda m, T: m.margin_ranking_loss(T(A[:, 0]), T(B[:, 0]), T(SIGN)),
    "triplet_margin_loss default": lambda m, T: m.triplet_margin_loss(T(A), T(B), T(C)),
    "kl_div none": lambda m, T: m.kl_div(input=T(LOGP), target=T(PROB), reduction=0),
    "ctc_loss": lambda m, T: m.ctc_loss(T(CTC_LP), T(CTC_T), [8, 7], [3, 2], 0, 1, False),
    "ctc_loss sum": lambda m, T: m.ctc_loss(T(CTC_LP), T(CTC_T), T(np.array([8, 6])), T(np.array([3, 2])), 0, 2),
    "margin_ranking_loss": lambda m, T: m.margin_ranking_loss(T(A[:, 0]), T(B[:, 0]), T(SIGN), 0.3, 2),
    "hinge_embedding_loss": lambda m, T: m.hinge_embedding_loss(T(A[:, 0]), T(SIGN), 0.5, 1),
    "cosine_embedding_loss": lambda m, T: m.cosine_embedding_loss(T(A), T(B), T(SIGN), 0.2, 0),
    "triplet_margin_loss": lambda m, T: m.triplet_margin_loss(T(A), T(B), T(C), 1.0, 2.0, 1e-6, False, 1),
    "triplet_margin_loss swap": lambda m, T: m.triplet_margin_loss(T(A), T(B), T(C), 0.5, 1.0, 1e-6, True, 2),
    "poisson_nll_loss": lambda m, T: m.poisson_nll_loss(T(A), T(PROB), True, False, 1e-8, 1),
    "poisson_nll_loss full": lambda m, T: m.poisson_nll_loss(T(PROB + 0.1), T(PROB * 3), False, True, 1e-8, 2),
    "bce_with_logits": lambda m, T: m.binary_cross_entropy_with_logits(T(A), T(PROB)),
    "bce_with_logits pos": lambda m, T: m.binary_cross_entropy_with_logits(T(A), T(PROB), T(PROB[0]), T(V4[:1]), 0),
    "bce_with_logits kw": lambda m, T: m.binary_cross_entropy_with_logits(T(A), T(PROB), pos_weight=T(C[0]),
                                                                          reduction=2),
    "rms_norm": lambda m, T: m.rms_norm(T(A), [6], T(B[0]), 1e-6),
    "rms_norm default eps": lambda m, T: m.rms_norm(T(A), (6,)),
    "rsub": lambda m, T: m.rsub(T(A), T(B)),
    "rsub alpha": lambda m, T: m.rsub(T(A), T(B), alpha=2),
    "rsub scalar": lambda m, T: m.rsub(T(A), 3.0, 0.5),
    "rsub int": lambda m, T: m.rsub(T(IDX), 10),
    "constant_pad_nd": lambda m, T: m.constant_pad_nd(T(X3), [1, 2], 0.5),
    "constant_pad_nd crop": lambda m, T: m.constant_pad_nd(T(X4), (1, -1, -2, 0)),
    "constant_pad_nd kw": lambda m, T: m.constant_pad_nd(input=T(A), pad=[0, 1, 1, 0], value=-1.0),
}


def _np(v):
    if isinstance(v, (tuple, list)):
        return [_np(x) for x in v]
    return v.detach().numpy() if isinstance(v, torch.Tensor) else v.numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_alias_matches_torch(case):
    fn = CASES[case]
    ours = fn(fg, lambda a: fg.tensor(a, dtype=getattr(fg, a.dtype.name)))
    ref = fn(torch, torch.tensor)
    o, r = _np(ours), _np(ref)
    if isinstance(r, list):
        assert isinstance(o, (tuple, list)) and len(o) == len(r)
    else:
        o, r = [o], [r]
    for a, b in zip(o, r):
        assert a.shape == b.shape and a.dtype == b.dtype, case
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=case)


def test_inplace_ones_return_their_input():
    for name, args in (("relu_", ()), ("selu_", ()), ("celu_", (1.0,)), ("threshold_", (0.0, 1.0)),
                       ("rrelu_", (0.1, 0.3, False)), ("dropout_", (0.5, False))):
        x = fg.tensor(A.copy())
        assert getattr(fg, name)(x, *args) is x, name
    x, tx = fg.tensor(A.copy()), torch.tensor(A.copy())
    fg.dropout_(x, 0.0, True)
    torch.dropout_(tx, 0.0, True)
    np.testing.assert_array_equal(x.numpy(), tx.numpy())


def test_dropout_train_draws():
    fg.manual_seed(0)
    y = fg.dropout(fg.ones(1000), 0.25, True).numpy()
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)} and 0.15 < (y == 0).mean() < 0.35


def test_required_arguments_as_torch():
    x = fg.tensor(A)
    for call in (lambda m, t: m.dropout(t, 0.5), lambda m, t: m.threshold(t, 0.1),
                 lambda m, t: m.batch_norm(t, None, None, None, None, True, 0.1, 1e-5),
                 lambda m, t: m.poisson_nll_loss(t, t, True, False, 1e-8)):
        with pytest.raises(TypeError):
            call(torch, torch.tensor(A))
        with pytest.raises(TypeError):
            call(fg, x)


def test_errors_name_the_argument():
    x = fg.tensor(A)
    with pytest.raises(TypeError, match="'reduction'"):
        fg.kl_div(x, x, "mean")
    with pytest.raises(TypeError, match="'reduction'"):
        fg.margin_ranking_loss(x[:, 0], x[:, 0], fg.tensor(SIGN), 0.0, 3)
    with pytest.raises(TypeError, match="'train'"):
        fg.dropout(x, 0.5, "yes")
    with pytest.raises(TypeError, match="'training'"):
        fg.batch_norm(fg.tensor(X3), None, None, None, None, 1, 0.1, 1e-5, False)
    with pytest.raises(TypeError, match="'padding_idx'"):
        fg.embedding(fg.tensor(EMB), fg.tensor(IDX), None)
    with pytest.raises(TypeError, match="'generator'"):
        fg.rrelu(x, 0.1, 0.3, False, object())
    with pytest.raises(RuntimeError, match="'alpha'"):
        fg.rsub(fg.tensor(IDX), 1, 0.5)
    with pytest.raises(RuntimeError):
        torch.rsub(torch.tensor(IDX), 1, 0.5)
    with pytest.raises(TypeError, match="'input'"):
        fg.rsub(A, 1.0)


def test_backward_through_aliases():
    for name, call in (("batch_norm", lambda m, t: m.batch_norm(t, None, None, None, None, True, 0.1, 1e-5, False)),
                       ("layer_norm", lambda m, t: m.layer_norm(t, [9])),
                       ("rsub", lambda m, t: m.rsub(t, 2.0, 3)),
                       ("constant_pad_nd", lambda m, t: m.constant_pad_nd(t, [2, -1]))):
        x, tx = fg.tensor(X3, requires_grad=True), torch.tensor(X3, requires_grad=True)
        (call(fg, x) ** 2).sum().backward()
        (call(torch, tx) ** 2).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-3, atol=1e-4, err_msg=name)


def test_names_on_package():
    from forgegrad._torch_functional_aliases import FUNCTIONS
    assert len(FUNCTIONS) == 47
    for name in FUNCTIONS:
        assert hasattr(torch, name) and name in fg.__all__ and getattr(fg, name) is FUNCTIONS[name], name
