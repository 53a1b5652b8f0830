"""The float32 EmbeddingBag kernels (cpp/kernels/per_isa/embedding_bag.cpp via forgegrad.kernels.embedding_bag, the
path F.embedding_bag takes for float32 tables) against torch 2.13 on odd shapes, the same bits at 1, 2 and 3 threads
and on every SIMD path, and bad input raising Python errors before a kernel runs."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad.kernels import embedding_bag as K

SIMD_PATHS = [p for p in ("scalar", "avx2", "avx512")
              if ("scalar", "avx2", "avx512").index(p) <= ("scalar", "avx2", "avx512").index(
                  fg.cpu_info()["detected_isa"])]


def _both(w, idx, offsets=None, psw=None, seed=1, **kw):
    """Outputs and gradients (weight, per_sample_weights) of forgegrad and torch for a random cotangent."""
    res = []
    for lib, func in ((fg, F.embedding_bag), (torch, torch.nn.functional.embedding_bag)):
        wt = lib.tensor(w, requires_grad=True)
        pt = None if psw is None else lib.tensor(psw, requires_grad=True)
        y = func(lib.tensor(idx), wt, None if offsets is None else lib.tensor(offsets), per_sample_weights=pt, **kw)
        c = np.random.default_rng(seed).uniform(-1, 1, size=tuple(y.shape)).astype(np.float32)
        (y * lib.tensor(c)).sum().backward()
        res.append([np.asarray(y.detach().numpy()), wt.grad.numpy(), None if pt is None else pt.grad.numpy()])
    return res


def _close(res, rtol=1e-5, atol=2e-6):
    (mine, ref) = res
    for a, b in zip(mine, ref):
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _random_offsets(rng, n, bags):
    """bags offsets into n positions with empty bags at the start, in the middle and at the end."""
    cuts = np.sort(rng.integers(0, n + 1, size=bags - 3))
    return np.concatenate([[0, 0], cuts, [n]]).astype(np.int64)


CASES = [
    dict(),
    dict(padding_idx=5),
    dict(padding_idx=-1),
    dict(include_last_offset=True),
    dict(include_last_offset=True, padding_idx=0),
]


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("kw", CASES)
@pytest.mark.parametrize("dim", [1, 37, 64])
def test_offsets_match_torch(mode, kw, dim):
    rng = np.random.default_rng(dim)
    w = rng.standard_normal((101, dim)).astype(np.float32)
    idx = rng.integers(0, 101, size=331)
    idx[rng.integers(0, 331, size=40)] = 5  # padding entries (padding_idx=5)
    idx[100:104] = 5  # bags of padding only: offsets 100 and 104 below
    idx[200:203] = 100  # padding_idx=-1
    off = np.sort(np.concatenate([_random_offsets(rng, idx.size, 29), [100, 104]]))
    if not kw.get("include_last_offset"):
        off = off[:-1]
    _close(_both(w, idx, off, mode=mode, **kw))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("kw", [dict(), dict(padding_idx=3)])
def test_2d_input_match_torch(mode, kw):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((23, 19)).astype(np.float32)
    idx = rng.integers(0, 23, size=(17, 5))
    idx[4] = 3  # all padding with padding_idx=3: zeros
    _close(_both(w, idx, mode=mode, **kw))


@pytest.mark.parametrize("kw", [dict(), dict(padding_idx=2), dict(include_last_offset=True, padding_idx=0)])
def test_per_sample_weights_match_torch(kw):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((40, 21)).astype(np.float32)
    idx = rng.integers(0, 40, size=157)
    idx[::7] = 2
    psw = rng.uniform(-2, 2, size=157).astype(np.float32)
    off = _random_offsets(rng, 157, 12)
    if not kw.get("include_last_offset"):
        off = off[:-1]
    _close(_both(w, idx, off, psw=psw, mode="sum", **kw))
    _close(_both(w, idx[:156].reshape(12, 13), None, psw=psw[:156].reshape(12, 13), mode="sum",
                 padding_idx=kw.get("padding_idx")))


def test_max_nan_and_ties_match_torch():
    w = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)
    w[3] = w[1]  # ties: the first position holding the maximum gets the gradient
    w[4, 2] = np.nan  # first in its bag: the bag's result, and it gets the gradient
    idx = np.array([3, 1, 4, 1, 2, 4, 3, 0], np.int64)
    mine, ref = _both(w, idx, np.array([0, 2, 5], np.int64), mode="max")
    np.testing.assert_array_equal(mine[0], ref[0])
    np.testing.assert_array_equal(mine[1], ref[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_idx", [None, 1])
def test_max_nan_is_kept_only_as_the_first_entry_as_torch(dtype, padding_idx):
    """torch 2.13's CPU max compares each later entry with '>' against the running maximum: a NaN after the first
    kept entry is skipped (the bag's maximum is that of the other entries, and gets the gradient), a NaN first stays.
    Both the float32 kernels and the float64 numpy path (they took any NaN as the maximum / propagated it)."""
    w = np.array([[1.0, -2.0, 0.5], [7.0, 7.0, 7.0], [np.nan, 3.0, np.nan], [2.0, np.nan, np.inf],
                  [-np.inf, 1.0, np.nan]], dtype)
    idx = np.array([0, 2, 3, 1, 2, 0, 4, 4, 1, 2, 3, 3, 2, 1], np.int64)
    off = np.array([0, 3, 6, 8, 9, 12], np.int64)  # NaN in the middle, first, after a padding entry, only NaNs
    mine, ref = _both(w, idx, off, mode="max", padding_idx=padding_idx)
    np.testing.assert_array_equal(mine[0], ref[0])
    np.testing.assert_array_equal(mine[1], ref[1])


def test_int32_indices_and_offsets():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((30, 9)).astype(np.float32)
    idx = rng.integers(0, 30, size=50).astype(np.int32)
    for mode in ("sum", "mean", "max"):
        _close(_both(w, idx, np.array([0, 7, 7, 30], np.int32), mode=mode))


def _run_all(w, idx, off, psw):
    out = []
    for mode in ("sum", "mean", "max"):
        wt = fg.tensor(w, requires_grad=True)
        pt = fg.tensor(psw, requires_grad=True) if mode == "sum" else None
        y = F.embedding_bag(fg.tensor(idx), wt, fg.tensor(off), mode=mode, per_sample_weights=pt, padding_idx=7)
        (y * y).sum().backward()
        out += [y.numpy().tobytes(), wt.grad.numpy().tobytes()]
        if pt is not None:
            out.append(pt.grad.numpy().tobytes())
    return out


def test_same_bits_at_1_2_3_threads_and_every_simd_path():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((300, 45)).astype(np.float32)
    idx = rng.integers(0, 300, size=30000)
    off = _random_offsets(rng, idx.size, 700)[:-1]
    psw = rng.standard_normal(idx.size).astype(np.float32)
    threads, simd = fg.get_num_threads(), fg.get_simd()
    try:
        runs = []
        for n in (1, 2, 3):
            fg.set_num_threads(n)
            runs.append(_run_all(w, idx, off, psw))
        fg.set_num_threads(2)
        for path in SIMD_PATHS:
            fg.set_simd(path)
            runs.append(_run_all(w, idx, off, psw))
    finally:
        fg.set_num_threads(threads)
        fg.set_simd(simd)
    assert all(r == runs[0] for r in runs[1:])


def test_float64_sums_are_rounded_once():
    """A long bag of values whose float32 running sum drifts: the kernel adds in float64 and rounds once."""
    w = np.array([[1.0], [1e-8]], np.float32)
    idx = np.array([0] + [1] * 100000, np.int64)
    out, counts, _ = K.forward(w, idx, np.array([0, idx.size], np.int64), None, "sum")
    assert out[0, 0] == np.float32(1.0 + 100000 * np.float64(np.float32(1e-8)))
    assert counts.tolist() == [idx.size]


@pytest.mark.parametrize("call,error,match", [
    (lambda w: F.embedding_bag(fg.tensor([1, 2, 3]), w, fg.tensor([1, 2])), ValueError, r"offsets\[0\]"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2, 3]), w, fg.tensor([0, 2, 1])), ValueError, "non-decreasing"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2, 3]), w, fg.tensor([0, 5])), ValueError, r"offsets\[-1\]"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2, 10]), w, fg.tensor([0])), IndexError, r"input\[2\] = 10"),
    (lambda w: F.embedding_bag(fg.tensor([[1, -3]]), w), IndexError, r"input\[1\] = -3"),
    (lambda w: F.embedding_bag(fg.tensor([1.0, 2.0]), w, fg.tensor([0])), TypeError, "input"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2]), w, fg.tensor([0.0])), TypeError, "offsets"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2]), w, fg.tensor([0]), mode="sum",
                               per_sample_weights=fg.ones(3)), ValueError, "per_sample_weights"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2]), w, fg.tensor([0]), mode="sum",
                               per_sample_weights=fg.ones(2, dtype=fg.float64)), TypeError, "per_sample_weights"),
])
def test_bad_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call(fg.randn(10, 3, requires_grad=True))


def test_kernel_bindings_check_their_arguments():
    """Called directly, the bindings refuse what would read or write out of bounds."""
    w = np.ones((4, 3), np.float32)
    ok = np.array([0, 2, 3], np.int64)
    with pytest.raises(IndexError, match="out of range"):
        K.forward(w, np.array([0, 4, 1]), ok, None, "sum")
    with pytest.raises(IndexError, match="out of range"):
        K.forward(w, np.array([0, -1, 1]), ok, None, "max")
    with pytest.raises(ValueError, match=r"bag_starts\[0\]"):
        K.forward(w, np.array([0, 1, 1]), np.array([1, 2, 3]), None, "sum")
    with pytest.raises(ValueError, match="non-decreasing"):
        K.forward(w, np.array([0, 1, 1]), np.array([0, 2, 1, 3]), None, "mean")
    with pytest.raises(ValueError, match=r"bag_starts\[-1\]"):
        K.forward(w, np.array([0, 1, 1]), np.array([0, 2]), None, "sum")
    with pytest.raises(ValueError, match="padding_idx"):
        K.forward(w, np.array([0, 1, 1]), ok, None, "sum", padding_idx=4)
    with pytest.raises(ValueError, match="per_sample_weights"):
        K.forward(w, np.array([0, 1, 1]), ok, np.ones(2, np.float32), "sum")
    g = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="grad"):
        K.backward(np.ones((3, 3), np.float32), np.array([0, 1, 1]), ok, 4)
    with pytest.raises(IndexError, match="arg"):
        K.max_backward(g, np.full((2, 3), 3), np.array([0, 1, 1]), 4)
    with pytest.raises(IndexError, match="out of range"):
        K.psw_backward(g, w, np.array([0, 9, 1]), ok)
