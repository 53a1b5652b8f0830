"""F.ctc_loss / nn.CTCLoss against torch: every reduction, both target layouts, unbatched, zero_infinity,
gradients (0 past each input length), float64, the same bits at 1-3 threads, bad input, and a tiny model
trained with it until its greedy decoding reads back the labels."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _log_probs(T, N, C, seed=0, dtype=np.float32):
    z = np.random.default_rng(seed).uniform(-3, 3, (T, N, C))
    z = z - z.max(-1, keepdims=True)
    return (z - np.log(np.exp(z).sum(-1, keepdims=True))).astype(dtype)


# T=13, N=3, C=7: repeated labels (need a blank between them), a short input, a target one step too long
LP = _log_probs(13, 3, 7)
PADDED = np.array([[1, 1, 2, 3, 3], [4, 4, 4, 0, 0], [2, 6, 2, 5, 0]], np.int64)
IL, TL = np.array([13, 5, 9]), np.array([5, 3, 4])  # sample 1 needs 5 steps for 4 4 4 and has 5
INFEASIBLE_IL = np.array([13, 4, 9])  # now sample 1 has 4: no alignment


def _concat(padded, tl):
    return np.concatenate([padded[b, :tl[b]] for b in range(len(tl))])


def _both(lp, targets, il, tl, grad=True, lengths=lambda a: a, **kw):
    """(loss, grad) from forgegrad and from torch, with a fixed random cotangent for reduction='none'."""
    x = fg.tensor(lp.copy(), requires_grad=grad)
    ft = [fg.tensor(a) if isinstance(a, np.ndarray) else a for a in (lengths(il), lengths(tl))]
    out = F.ctc_loss(x, fg.tensor(targets), *ft, **kw)
    xt = torch.from_numpy(lp.copy()).requires_grad_(grad)
    tt = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in (lengths(il), lengths(tl))]
    want = TF.ctc_loss(xt, torch.from_numpy(targets), *tt, **kw)
    if not grad:
        return out.numpy(), want.detach().numpy(), None, None
    cot = np.random.default_rng(5).uniform(0.5, 1.5, out.shape).astype(lp.dtype)
    (out * fg.tensor(cot)).sum().backward()
    (want * torch.from_numpy(cot)).sum().backward()
    return out.numpy(), want.detach().numpy(), x.grad.numpy(), xt.grad.numpy()


def _close(a, b, dtype=np.float32):
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(a, b, equal_nan=True, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch(reduction, layout, dtype):
    targets = PADDED if layout == "padded" else _concat(PADDED, TL)
    got, want, g, gw = _both(LP.astype(dtype), targets, IL, TL, reduction=reduction)
    assert got.dtype == want.dtype and got.shape == want.shape
    _close(got, want, dtype)
    _close(g, gw, dtype)
    assert np.isfinite(g).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_unbatched(reduction):
    lp = LP[:, 2]
    got, want, g, gw = _both(lp, PADDED[2, :4], np.array(9), np.array(4), reduction=reduction)
    assert got.shape == want.shape == ()
    _close(got, want)
    _close(g, gw)
    # lengths as plain ints in tuples
    got2, _, _, _ = _both(lp, PADDED[2, :4], (9,), (4,), grad=False, reduction=reduction)
    _close(got2, want)


def test_lengths_as_tensors_tuples_lists_and_int32_agree():
    base, _, _, _ = _both(LP, PADDED, IL, TL, grad=False, reduction="none")
    for conv in (tuple, list, lambda a: a.astype(np.int32)):
        got, want, _, _ = _both(LP, PADDED.astype(np.int32), IL, TL, grad=False, lengths=lambda a: conv(a),
                                reduction="none")
        np.testing.assert_array_equal(got, base)
        _close(got, want)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_zero_infinity(reduction):
    # without: the infeasible sample's loss is inf and its gradient NaN (torch's formula: inf - inf)
    got, want, g, gw = _both(LP, PADDED, INFEASIBLE_IL, TL, reduction=reduction)
    _close(got, want)
    _close(g, gw)
    assert np.isinf(got).any() and np.isnan(g[:4, 1]).all() and not np.isnan(g[:, [0, 2]]).any()
    # with: 0, and a 0 gradient for every step of that sample
    got, want, g, gw = _both(LP, PADDED, INFEASIBLE_IL, TL, reduction=reduction, zero_infinity=True)
    _close(got, want)
    _close(g, gw)
    assert np.isfinite(got).all() and (g[:, 1] == 0).all()


def test_gradient_is_zero_past_each_input_length_and_for_empty_inputs():
    il, tl = np.array([13, 0, 6]), np.array([5, 0, 0])
    got, want, g, gw = _both(LP, PADDED, il, tl, reduction="none")
    _close(got, want)
    _close(g, gw)
    assert got[1] == 0 and (g[:, 1] == 0).all() and (g[6:, 2] == 0).all() and (g[:6, 2] != 0).all()
    # an empty input with a non-empty target has no alignment
    got = F.ctc_loss(fg.tensor(LP), fg.tensor(PADDED), np.array([13, 0, 6]), np.array([5, 1, 0]),
                     reduction="none").numpy()
    assert got[1] == np.inf


def test_no_grad_gives_the_same_loss():
    x = fg.tensor(LP, requires_grad=True)
    with_graph = F.ctc_loss(x, fg.tensor(PADDED), fg.tensor(IL), fg.tensor(TL), reduction="none")
    with fg.no_grad():
        without = F.ctc_loss(x, fg.tensor(PADDED), fg.tensor(IL), fg.tensor(TL), reduction="none")
    assert with_graph.requires_grad and not without.requires_grad
    np.testing.assert_array_equal(with_graph.numpy(), without.numpy())


def test_same_bits_at_1_2_3_threads():
    rng = np.random.default_rng(1)
    T, N, C = 60, 12, 19
    lp = _log_probs(T, N, C, seed=2)
    tl = rng.integers(0, 20, N)
    targets = rng.integers(1, C, int(tl.sum()))
    il = rng.integers(25, T + 1, N)
    before = fg.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 3):
            fg.set_num_threads(n)
            x = fg.tensor(lp, requires_grad=True)
            loss = F.ctc_loss(x, fg.tensor(targets), fg.tensor(il), fg.tensor(tl))
            loss.backward()
            runs.append((loss.numpy().tobytes(), x.grad.numpy().tobytes()))
    finally:
        fg.set_num_threads(before)
    assert runs[0] == runs[1] == runs[2]


def test_module():
    m = fg.nn.CTCLoss(blank=6, reduction="sum", zero_infinity=True)
    assert repr(m) == "CTCLoss(blank=6, reduction='sum', zero_infinity=True)"
    targets = np.where(PADDED == 6, 1, PADDED)  # 6 is the blank here
    targets[1, 3:] = 6  # padding past the target length may be anything, the blank included
    got = m(fg.tensor(LP), fg.tensor(targets), fg.tensor(INFEASIBLE_IL), fg.tensor(TL)).numpy()
    want = torch.nn.CTCLoss(blank=6, reduction="sum", zero_infinity=True)(
        torch.from_numpy(LP), torch.from_numpy(targets), torch.from_numpy(INFEASIBLE_IL), torch.from_numpy(TL))
    _close(got, want.numpy())
    with pytest.raises(ValueError, match="reduction"):
        fg.nn.CTCLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="blank"):
        fg.nn.CTCLoss(blank=-1)


def _bad(**kw):
    args = dict(log_probs=fg.tensor(LP), targets=fg.tensor(PADDED), input_lengths=fg.tensor(IL),
                target_lengths=fg.tensor(TL))
    args.update(kw)
    return F.ctc_loss(**args)


@pytest.mark.parametrize("kw,error,match", [
    ({"blank": 7}, ValueError, r"blank must be a class index in \[0, 7\)"),
    ({"blank": -1}, ValueError, "blank"),
    ({"blank": 1}, ValueError, r"targets must not contain the blank \(1\), found at position 0 \(sample 0\)"),
    ({"targets": fg.tensor(np.where(PADDED == 6, 9, PADDED))}, ValueError, r"targets must hold class indices"),
    ({"targets": fg.tensor(PADDED.astype(np.float32))}, TypeError, "targets must be an integer tensor"),
    ({"targets": fg.tensor(PADDED[None])}, ValueError, "targets must be padded"),
    ({"targets": fg.tensor(PADDED[:2])}, ValueError, "targets .* must have N = 3 rows"),
    ({"targets": fg.tensor(_concat(PADDED, TL)[:-1])}, ValueError, "target_lengths must be >= 0 and sum to the 11 "),
    ({"targets": fg.tensor(np.r_[_concat(PADDED, TL), 1])}, ValueError, "target_lengths sum to 12 but .* hold 13"),
    ({"input_lengths": fg.tensor(np.array([14, 5, 9]))}, ValueError, r"input_lengths must be in \[0, T\] with T = 13"),
    ({"input_lengths": fg.tensor(np.array([13, -1, 9]))}, ValueError, "input_lengths"),
    ({"input_lengths": (13, 5)}, ValueError, r"input_lengths must hold one length per sample \(3\)"),
    ({"input_lengths": fg.tensor(IL.astype(np.float32))}, TypeError, "input_lengths must be an integer tensor"),
    ({"input_lengths": (13, 5.0, 9)}, TypeError, r"input_lengths\[1\] must be an int"),
    ({"input_lengths": "13"}, TypeError, "input_lengths"),
    ({"target_lengths": fg.tensor(np.array([6, 3, 4]))}, ValueError, r"target_lengths must be in \[0, S\] with S = 5"),
    ({"target_lengths": fg.tensor(np.array([5, -3, 4]))}, ValueError, "target_lengths"),
    ({"target_lengths": fg.tensor(TL.astype(bool))}, TypeError, "target_lengths"),
    ({"log_probs": fg.tensor(LP.astype(np.int64))}, TypeError, "log_probs must be a float32 or float64"),
    ({"log_probs": fg.tensor(LP[None])}, ValueError, "log_probs must be"),
    ({"reduction": "batchmean"}, ValueError, "reduction"),
    ({"zero_infinity": 1}, TypeError, "zero_infinity"),
])
def test_bad_input_names_the_argument(kw, error, match):
    with pytest.raises(error, match=match):
        _bad(**kw)


def test_binding_checks_its_saved_arguments():
    from forgegrad import _C
    nll, alpha = _C.ctc.forward(LP, PADDED, IL, TL, 0, True)
    assert alpha.shape == (int((IL * (2 * TL + 1)).sum()),)
    with pytest.raises(ValueError, match="alpha must have shape"):
        _C.ctc.backward(LP, PADDED, IL, TL, 0, nll, alpha[1:], np.ones(3), False)
    with pytest.raises(ValueError, match="grad_nll must have shape"):
        _C.ctc.backward(LP, PADDED, IL, TL, 0, nll, alpha, np.ones(2), False)
    with pytest.raises(TypeError, match="log_probs must be a float32 or float64"):
        _C.ctc.forward(LP.astype(np.float16), PADDED, IL, TL, 0, False)
    with pytest.raises(ValueError, match="log_probs must be C-contiguous"):
        _C.ctc.forward(np.asfortranarray(LP), PADDED, IL, TL, 0, False)
    _, none = _C.ctc.forward(LP, PADDED, IL, TL, 0, False)
    assert none is None


def test_meta_device_gives_the_shape():
    x = fg.tensor(LP).to("meta")
    out = F.ctc_loss(x, fg.tensor(PADDED).to("meta"), fg.tensor(IL).to("meta"), (13, 5, 9), reduction="none")
    assert out.is_meta and out.shape == (3,)
    assert F.ctc_loss(x, fg.tensor(PADDED).to("meta"), IL, TL).shape == ()


class _Recogniser(fg.nn.Module):
    """Conv1d over (N, features, T) frames, an LSTM over time, a Linear to the classes (blank = 0)."""

    def __init__(self, features, classes):
        super().__init__()
        self.conv = fg.nn.Conv1d(features, 16, 3, padding=1)
        self.lstm = fg.nn.LSTM(16, 24)
        self.out = fg.nn.Linear(24, classes)

    def forward(self, x):  # x (N, features, T) -> log-probabilities (T, N, classes)
        h = self.conv(x).relu().permute(2, 0, 1)
        h, _ = self.lstm(h)
        return F.log_softmax(self.out(h), dim=-1)


def _greedy(log_probs, blank=0):
    """Best path: the argmax per step, repeats merged, blanks dropped."""
    best = log_probs.argmax(-1)
    out = []
    for t, c in enumerate(best):
        if c != blank and (t == 0 or c != best[t - 1]):
            out.append(int(c))
    return out


def test_tiny_model_learns_to_read_its_labels():
    fg.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = [[3, 1, 1, 4, 2], [2, 2, 5, 3], [4, 1, 5, 5, 2, 1]]  # repeats need a blank between them
    N, T, feats, classes = len(labels), 24, 8, 6
    x = fg.tensor(rng.standard_normal((N, feats, T)).astype(np.float32))
    targets = fg.tensor(np.concatenate(labels).astype(np.int64))
    tl = tuple(len(y) for y in labels)
    il = (T, T - 3, T)
    model = _Recogniser(feats, classes)
    opt = fg.optim.Adam(model.parameters(), lr=0.02)
    ctc = fg.nn.CTCLoss()
    first = None
    for step in range(400):
        opt.zero_grad()
        loss = ctc(model(x), targets, il, tl)
        loss.backward()
        opt.step()
        first = float(loss.numpy()) if first is None else first
        if step % 20 == 19:
            with fg.no_grad():
                lp = model(x).numpy()
            if all(_greedy(lp[:il[b], b]) == labels[b] for b in range(N)):
                break
    assert all(_greedy(lp[:il[b], b]) == labels[b] for b in range(N)), (step, float(loss.numpy()))
    assert float(loss.numpy()) < first / 4


def test_create_graph_refuses_it_as_torch_does():
    x = fg.tensor(LP, requires_grad=True)
    loss = F.ctc_loss(x, fg.tensor(PADDED), IL, TL)
    with pytest.raises(NotImplementedError, match="ctc_loss"):
        fg.autograd.grad(loss, x, create_graph=True)
