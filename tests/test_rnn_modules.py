"""forgegrad.nn.rnn (RNN, LSTM, GRU, cells) and nn.sparse.Embedding against torch.nn."""
import functools

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from forgegrad.nn.sparse import Embedding
from helpers import assert_close_scaled

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest.py

# Gradients here chain through up to 3 layers x 2 directions and sum over T*B rows; float32
# rounding grows with the magnitude of those sums, so atol is 1e-6 scaled by the largest value.
_close = functools.partial(assert_close_scaled, atol_scale=1e-6)


def _pair(kind, I, H, **kw):
    torch.manual_seed(1)
    if kind == "lstm":
        ours, theirs = LSTM(I, H, **kw), torch.nn.LSTM(I, H, **kw)
    elif kind == "gru":
        ours, theirs = GRU(I, H, **kw), torch.nn.GRU(I, H, **kw)
    else:
        ours, theirs = RNN(I, H, nonlinearity=kind, **kw), torch.nn.RNN(I, H, nonlinearity=kind, **kw)
    ours_names = [n for n, _ in ours.named_parameters()]
    assert ours_names == [n for n, _ in theirs.named_parameters()]
    for n, p in theirs.named_parameters():
        getattr(ours, n)._data[...] = p.detach().numpy()
    return ours, theirs


def _compare(kind, ours, theirs, x, hx, lengths=None, check_grads=True):
    """Run both on x (and hx = (h0, c0) / h0 numpy or None), compare outputs, states, gradients."""
    rng = np.random.default_rng(4)
    lstm = kind == "lstm"
    xf, xt = fg.tensor(x.copy(), requires_grad=True), torch.tensor(x.copy(), requires_grad=True)
    hf = ht = None
    if hx is not None:
        parts = hx if lstm else (hx,)
        hf = [fg.tensor(p.copy(), requires_grad=True) for p in parts]
        ht = [torch.tensor(p.copy(), requires_grad=True) for p in parts]
    of = ours(xf, (tuple(hf) if lstm else hf[0]) if hf else None, lengths=lengths)
    if lengths is None:
        ot = theirs(xt, (tuple(ht) if lstm else ht[0]) if ht else None)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=theirs.batch_first,
                                                         enforce_sorted=False)
        o, s = theirs(packed, (tuple(ht) if lstm else ht[0]) if ht else None)
        T = x.shape[1] if theirs.batch_first else x.shape[0]
        o, _ = torch.nn.utils.rnn.pad_packed_sequence(o, batch_first=theirs.batch_first, total_length=T)
        ot = (o, s)
    outs_f = [of[0]] + (list(of[1]) if lstm else [of[1]])
    outs_t = [ot[0]] + (list(ot[1]) if lstm else [ot[1]])
    for i, (a, b) in enumerate(zip(outs_f, outs_t)):
        assert a.shape == tuple(b.shape), (i, a.shape, b.shape)
        _close(a, b, f"output {i}")
    if not check_grads:
        return
    seeds = [rng.standard_normal(a.shape).astype(np.float32) for a in outs_f]
    loss_f = sum(((a * fg.tensor(s)).sum() for a, s in zip(outs_f, seeds)), fg.tensor(np.float32(0)))
    loss_t = sum((b * torch.tensor(s)).sum() for b, s in zip(outs_t, seeds))
    loss_f.backward()
    loss_t.backward()
    _close(xf.grad, xt.grad, "grad input")
    if hf:
        for i, (a, b) in enumerate(zip(hf, ht)):
            _close(a.grad, b.grad, f"grad hx[{i}]")
    for n, p in theirs.named_parameters():
        _close(getattr(ours, n).grad, p.grad, f"grad {n}")


CONFIGS = [  # kind, layers, bidirectional, batch_first, bias
    ("lstm", 1, False, False, True),
    ("lstm", 2, True, True, True),
    ("lstm", 3, True, False, False),
    ("gru", 1, True, False, True),
    ("gru", 2, False, True, True),
    ("gru", 3, True, True, True),
    ("tanh", 2, True, False, True),
    ("relu", 1, False, True, False),
    ("relu", 3, True, False, True),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "{}-L{}-{}-{}{}".format(
    c[0], c[1], "bi" if c[2] else "uni", "bf" if c[3] else "tf", "" if c[4] else "-nobias"))
@pytest.mark.parametrize("with_hx", [False, True])
def test_module_matches_torch(cfg, with_hx):
    kind, L, bi, bf, bias = cfg
    ours, theirs = _pair(kind, 5, 11, num_layers=L, bidirectional=bi, batch_first=bf, bias=bias)
    rng = np.random.default_rng(0)
    T, B, D = 6, 3, 2 if bi else 1
    x = rng.standard_normal((B, T, 5) if bf else (T, B, 5)).astype(np.float32)
    hx = None
    if with_hx:
        h = rng.standard_normal((L * D, B, 11)).astype(np.float32)
        hx = (h, rng.standard_normal((L * D, B, 11)).astype(np.float32)) if kind == "lstm" else h
    _compare(kind, ours, theirs, x, hx)


@pytest.mark.parametrize("kind", ["lstm", "gru", "tanh"])
@pytest.mark.parametrize("bf", [False, True])
def test_variable_lengths_match_packed_sequences(kind, bf):
    ours, theirs = _pair(kind, 4, 7, num_layers=2, bidirectional=True, batch_first=bf)
    rng = np.random.default_rng(2)
    T, B = 7, 5
    x = rng.standard_normal((B, T, 4) if bf else (T, B, 4)).astype(np.float32)
    lengths = [3, 6, 1, 6, 5]  # unsorted, repeated, max < T
    h = rng.standard_normal((4, B, 7)).astype(np.float32)
    hx = (h, rng.standard_normal((4, B, 7)).astype(np.float32)) if kind == "lstm" else h
    _compare(kind, ours, theirs, x, hx, lengths=lengths)
    _compare(kind, ours, theirs, x, None, lengths=np.array(lengths), check_grads=False)


def test_unbatched_input_and_no_grad():
    ours, theirs = _pair("lstm", 3, 4, num_layers=2)
    x = np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32)
    with fg.no_grad():
        out, (h, c) = ours(fg.tensor(x))
    ot, (ht, ct) = theirs(torch.tensor(x))
    assert out.shape == (5, 4) and h.shape == (2, 4) and not out.requires_grad
    _close(out, ot, "out")
    _close(h, ht, "h")
    _close(c, ct, "c")


def test_default_init_matches_torch_layout():
    m = GRU(6, 10, num_layers=2, bidirectional=True)
    t = torch.nn.GRU(6, 10, num_layers=2, bidirectional=True)
    ours = dict(m.named_parameters())
    for n, p in t.named_parameters():
        assert ours[n].shape == tuple(p.shape), n
        assert np.all(np.abs(ours[n]._data) <= 1 / np.sqrt(10)), n
    assert np.std(ours["weight_hh_l1_reverse"]._data) > 0.1  # uniform(-0.316, 0.316) has std 0.18


def test_dropout_between_layers():
    m = LSTM(3, 4, num_layers=3, dropout=0.5)
    x = fg.tensor(np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32), requires_grad=True)
    m.eval()
    a = m(x)[0]._data.copy()
    m.dropout = 0.0  # eval mode ignores dropout: same output as without it
    assert np.array_equal(a, m(x)[0]._data)
    m.dropout = 0.5
    m.train()
    fg.manual_seed(0)
    out = m(x)[0]
    assert not np.array_equal(a, out._data)
    out.sum().backward()
    assert x.grad is not None and np.all(np.isfinite(x.grad._data))


@pytest.mark.parametrize("kind", ["lstm", "gru", "tanh", "relu"])
@pytest.mark.parametrize("batched", [True, False])
def test_cells_match_torch(kind, batched):
    torch.manual_seed(3)
    if kind == "lstm":
        ours, theirs = LSTMCell(5, 9), torch.nn.LSTMCell(5, 9)
    elif kind == "gru":
        ours, theirs = GRUCell(5, 9), torch.nn.GRUCell(5, 9)
    else:
        ours, theirs = RNNCell(5, 9, nonlinearity=kind), torch.nn.RNNCell(5, 9, nonlinearity=kind)
    for n, p in theirs.named_parameters():
        getattr(ours, n)._data[...] = p.detach().numpy()
    rng = np.random.default_rng(5)
    shape = (4, 5) if batched else (5,)
    hshape = (4, 9) if batched else (9,)
    x = rng.standard_normal(shape).astype(np.float32)
    hs = [rng.standard_normal(hshape).astype(np.float32) for _ in range(2 if kind == "lstm" else 1)]
    xf, xt = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    hf = [fg.tensor(h, requires_grad=True) for h in hs]
    ht = [torch.tensor(h, requires_grad=True) for h in hs]
    of = ours(xf, tuple(hf) if kind == "lstm" else hf[0])
    ot = theirs(xt, tuple(ht) if kind == "lstm" else ht[0])
    of, ot = (list(of), list(ot)) if kind == "lstm" else ([of], [ot])
    for a, b in zip(of, ot):
        _close(a, b, "cell output")
    sum((a * (i + 1)).sum() for i, a in enumerate(of)).backward()
    sum((b * (i + 1)).sum() for i, b in enumerate(ot)).backward()
    _close(xf.grad, xt.grad, "grad x")
    for a, b in zip(hf, ht):
        _close(a.grad, b.grad, "grad h")
    for n, p in theirs.named_parameters():
        _close(getattr(ours, n).grad, p.grad, n)
    # hx=None means zeros
    z = ours(fg.tensor(x))
    z_ref = theirs(torch.tensor(x))
    _close(z[0] if kind == "lstm" else z, z_ref[0] if kind == "lstm" else z_ref, "zero state")


def test_embedding_padding_idx_matches_torch():
    torch.manual_seed(0)
    t = torch.nn.Embedding(10, 6, padding_idx=2)
    e = Embedding(10, 6, padding_idx=2)
    assert np.all(e.weight._data[2] == 0)
    e.weight._data[...] = t.weight.detach().numpy()
    idx = np.array([[1, 2, 3], [2, 2, 9]], np.int64)
    out = e(fg.tensor(idx))
    ref = t(torch.tensor(idx))
    _close(out, ref, "embedding")
    g = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
    (out * fg.tensor(g)).sum().backward()
    (ref * torch.tensor(g)).sum().backward()
    _close(e.weight.grad, t.weight.grad, "embedding grad")
    assert np.all(e.weight.grad._data[2] == 0)
    with pytest.raises(IndexError, match="index out of range"):
        e(fg.tensor(np.array([10])))
    fr = Embedding.from_pretrained(t.weight.detach().numpy())
    assert not fr.weight.requires_grad and fr(fg.tensor(np.array([4]))).shape == (1, 6)


def test_module_errors():
    m = LSTM(4, 5, num_layers=2)
    x = fg.tensor(np.zeros((3, 2, 4), np.float32))
    with pytest.raises(ValueError, match="input.size\\(-1\\) must be equal to input_size. Expected 4, got 3"):
        m(fg.tensor(np.zeros((3, 2, 3), np.float32)))
    with pytest.raises(ValueError, match=r"Expected hidden size \(2, 2, 5\) for h_0, got \(1, 2, 5\)"):
        m(x, (fg.tensor(np.zeros((1, 2, 5), np.float32)), fg.tensor(np.zeros((2, 2, 5), np.float32))))
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D"):
        m(fg.tensor(np.zeros((4,), np.float32)))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        m(x, fg.tensor(np.zeros((2, 2, 5), np.float32)))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, seq_len=3\]"):
        m(x, lengths=[4, 1])
    with pytest.raises(ValueError, match="lengths must be 2 integers"):
        m(x, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout should be a number"):
        GRU(3, 4, dropout=1.5)
