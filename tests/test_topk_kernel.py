"""forgegrad._C.topk (cpp/kernels/per_isa/topk.cpp), the float32 path of forgegrad.topk / sort / argsort /
kthvalue and of generation's top-k filter: the same values and indices as the numpy path (the reference for the
order among equal values: the stable sort's, lower index first) and as torch where torch's order is determined,
on every ISA path and at 1, 2 and 3 threads; NaN / inf / -0.0 / ties; other dims and non-contiguous inputs;
gradients; the binding's argument checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C, _topk_kernel
from forgegrad.models.hf import sampling, topk_order

R = np.random.default_rng(7)


def _isas():
    before = fg.get_simd()
    out = []
    for name in ("scalar", "avx2", "avx512"):
        try:
            fg.set_simd(name)
        except ValueError:
            continue
        out.append(name)
    fg.set_simd(before)
    return out


@pytest.fixture(params=_isas())
def isa(request):
    before = fg.get_simd()
    fg.set_simd(request.param)
    yield request.param
    fg.set_simd(before)


@pytest.fixture(params=[1, 2, 3])
def threads(request):
    before = fg.get_num_threads()
    fg.set_num_threads(request.param)
    yield request.param
    fg.set_num_threads(before)


@pytest.fixture
def numpy_path(monkeypatch):
    """Runs a call with the kernel switched off: the path before it, the reference."""
    def run(fn):
        with monkeypatch.context() as m:
            m.setattr(_topk_kernel, "usable", lambda *a: False)
            return fn()
    return run


def _special(shape, seed):
    """Values with many ties, NaN, +-inf, -0.0 and 0.0."""
    rng = np.random.default_rng(seed)
    pool = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5, -1.5, 2.0, 3e38, -3e38, 1e-45, -1e-45], np.float32)
    x = rng.integers(-4, 4, shape).astype(np.float32)
    pick = rng.uniform(size=shape) < 0.3
    x[pick] = rng.choice(pool, size=int(pick.sum()))
    return x


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    if a.dtype == np.float32:
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    else:
        np.testing.assert_array_equal(a, b)


def _pair(out):
    return out[0].numpy(), out[1].numpy()


SHAPES = [(1, 1), (3, 7), (5, 255), (4, 256), (2, 1000), (3, 4097), (2, 3, 300)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("largest", [True, False])
def test_topk_matches_numpy_path_and_torch(isa, numpy_path, shape, largest):
    n = shape[-1]
    for data in (R.standard_normal(shape).astype(np.float32), _special(shape, n)):
        x = fg.tensor(data)
        for k in sorted({0, 1, min(2, n), min(10, n), min(50, n), n // 3, n // 4 + 1, n - 1, n}):
            got = _pair(fg.topk(x, k, largest=largest))
            want = _pair(numpy_path(lambda: fg.topk(x, k, largest=largest)))
            _same(got[0], want[0])
            _same(got[1], want[1])
            t = torch.topk(torch.from_numpy(data), k, largest=largest)
            # torch's values (NaN placed alike; -0.0 and 0.0 tie, so which of them comes first may differ)
            np.testing.assert_array_equal(got[0], t.values.numpy())
            if np.unique(data).size == data.size:  # no ties: torch's indices are fixed
                _same(got[1], t.indices.numpy())


def test_topk_distinct_rows_match_torch_indices(isa):
    x = R.permutation(64 * 3000).reshape(64, 3000).astype(np.float32) - 50000
    x[::7, 5] = np.nan  # one NaN a row: torch puts it first (largest), the kernel too
    for k in (1, 10, 50, 1000, 3000):
        for largest in (True, False):
            got = _pair(fg.topk(fg.tensor(x), k, largest=largest))
            t = torch.topk(torch.from_numpy(x), k, largest=largest)
            _same(got[0], t.values.numpy())
            _same(got[1], t.indices.numpy())


def test_ties_lower_index_first():
    x = np.zeros((2, 600), np.float32)
    x[0, ::3] = -0.0
    x[1, 100:] = 5.0
    x[1, 50] = np.nan
    vals, idx = _pair(fg.topk(fg.tensor(x), 5))
    np.testing.assert_array_equal(idx, [[0, 1, 2, 3, 4], [50, 100, 101, 102, 103]])
    assert np.isnan(vals[1, 0]) and (vals[1, 1:] == 5).all()
    _, idx = _pair(fg.topk(fg.tensor(x), 3, largest=False))
    np.testing.assert_array_equal(idx, [[0, 1, 2], [0, 1, 2]])


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (3, 9), (4, 255), (3, 256), (2, 5000), (2, 3, 700)], ids=str)
def test_sort_and_argsort_match_torch_stable(isa, numpy_path, descending, shape):
    for data in (R.standard_normal(shape).astype(np.float32), _special(shape, shape[-1])):
        x = fg.tensor(data)
        got = _pair(fg.sort(x, descending=descending))
        _same(got[0], numpy_path(lambda: fg.sort(x, descending=descending)).values.numpy())
        t = torch.sort(torch.from_numpy(data), descending=descending, stable=True)
        _same(got[0], t.values.numpy())
        _same(got[1], t.indices.numpy())
        _same(fg.argsort(x, descending=descending).numpy(), t.indices.numpy())


def test_other_dims_and_noncontiguous(numpy_path):
    base = _special((6, 40, 9), 3)
    for x in (fg.tensor(base), fg.tensor(base).transpose(0, 2), fg.tensor(base)[:, ::3, 1:8]):
        for dim in range(x.ndim):
            for fn in (lambda: fg.topk(x, 3, dim=dim), lambda: fg.topk(x, 4, dim=dim, largest=False),
                       lambda: fg.sort(x, dim=dim, descending=True), lambda: fg.kthvalue(x, 2, dim=dim),
                       lambda: fg.kthvalue(x, 1, dim=dim, keepdim=True)):
                got, want = fn(), numpy_path(fn)
                _same(got[0].numpy(), want[0].numpy())
                _same(got[1].numpy(), want[1].numpy())


def test_kthvalue_matches_torch_values(numpy_path):
    data = R.standard_normal((5, 333)).astype(np.float32)
    for k in (1, 7, 100, 333):
        got = fg.kthvalue(fg.tensor(data), k)
        t = torch.kthvalue(torch.from_numpy(data), k)
        _same(got.values.numpy(), t.values.numpy())
        _same(got.indices.numpy(), t.indices.numpy())


def test_thread_counts_identical(threads):
    x = _special((37, 3001), 11)
    x[::2] = R.standard_normal((19, 3001)).astype(np.float32)
    fg.set_num_threads(1)
    ref = [_pair(fg.topk(fg.tensor(x), k)) for k in (1, 50, 1000)] + [_pair(fg.sort(fg.tensor(x)))]
    fg.set_num_threads(threads)
    got = [_pair(fg.topk(fg.tensor(x), k)) for k in (1, 50, 1000)] + [_pair(fg.sort(fg.tensor(x)))]
    for (gv, gi), (rv, ri) in zip(got, ref):
        _same(gv, rv)
        _same(gi, ri)


def test_gradients_flow_to_the_chosen_elements():
    data = R.standard_normal((3, 500)).astype(np.float32)
    x = fg.tensor(data, requires_grad=True)
    vals, _ = fg.topk(x, 7)
    (vals * fg.tensor(np.arange(21, dtype=np.float32).reshape(3, 7))).sum().backward()
    tx = torch.from_numpy(data).requires_grad_()
    (torch.topk(tx, 7).values * torch.arange(21.0).reshape(3, 7)).sum().backward()
    _same(x.grad.numpy(), tx.grad.numpy())
    x.grad = None
    fg.sort(x, descending=True)[0][:, :3].sum().backward()
    tx.grad = None
    torch.sort(tx, descending=True)[0][:, :3].sum().backward()
    _same(x.grad.numpy(), tx.grad.numpy())


def test_generation_top_k_filter_unchanged(numpy_path):
    logits = _special((4, 3000), 5)
    logits[2] = R.standard_normal(3000)
    for top_k in (1, 50, 1000):
        for temperature in (1.0, 0.7):
            s = sampling.Sampler(True, temperature, top_k)
            got = s.warp(logits)
            assert np.isfinite(got[2]).sum() == top_k  # a row of distinct values keeps exactly k
            _same(got.view(np.uint64), numpy_path(lambda: s.warp(logits)).view(np.uint64))


def test_generation_top_p_unchanged(numpy_path):
    logits = R.standard_normal((5, 4000)).astype(np.float32) * 4
    logits[1, ::2] = logits[1, 1::2]  # ties
    logits[3, 7] = np.nan
    for top_k, top_p, temperature in ((None, 0.9, 1.0), (50, 0.8, 0.7), (None, 0.5, 1.3), (1000, 0.95, 1.0)):
        s = sampling.Sampler(True, temperature, top_k, top_p)
        _same(s.warp(logits).view(np.uint64), numpy_path(lambda: s.warp(logits)).view(np.uint64))


def test_stable_order_is_numpys():
    base = R.standard_normal((6, 3000))
    base[1] = np.round(base[1], 1)  # float64 ties
    base[2] = 1 + R.integers(0, 4, 3000) * 1e-12  # distinct in float64, equal in float32: checked, then numpy
    base[3, 10] = np.nan
    base[4, ::3] = -np.inf
    base[5] = base[5] * 1e300  # beyond float32
    _same(sampling.stable_order(base), np.argsort(base, axis=-1, kind="stable"))
    x32 = R.standard_normal((4, 3000)).astype(np.float32)
    scaled = x32.astype(np.float64) / 0.7
    _same(sampling.stable_order(scaled, x32), np.argsort(scaled, axis=-1, kind="stable"))


def test_beam_topk_indices_unchanged(numpy_path):
    v = np.round(R.standard_normal((6, 5000)) * 4).astype(np.float32)  # many ties: replayed rows
    v[0] = R.standard_normal(5000).astype(np.float32)
    v[3, 17] = np.nan
    for k in (1, 8, 100):
        _same(topk_order.topk_indices(v, k), numpy_path(lambda: topk_order.topk_indices(v, k)))
        want = torch.topk(torch.from_numpy(v), k).indices.numpy()
        _same(topk_order.topk_indices(v, k), want)


def test_binding_checks():
    x = np.zeros((2, 5), np.float32)
    v, i = np.zeros((2, 3), np.float32), np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match="k must be in"):
        _C.topk.topk_f32(x, 6, True, np.zeros((2, 6), np.float32), np.zeros((2, 6), np.int64))
    with pytest.raises(ValueError, match="k must be in"):
        _C.topk.topk_f32(x, -1, True, v, i)
    with pytest.raises((ValueError, TypeError), match="values"):
        _C.topk.topk_f32(x, 2, True, v, i)
    with pytest.raises((ValueError, TypeError), match="x"):
        _C.topk.topk_f32(x.astype(np.float64), 3, True, v, i)
    with pytest.raises((ValueError, TypeError), match="indices"):
        _C.topk.sort_f32(x, False, np.zeros((2, 5), np.float32), np.zeros((2, 5), np.int32))
    with pytest.raises(ValueError):
        _C.topk.topk_f32(x, 3, True, x[:, :3], i)  # values must be contiguous
    _C.topk.topk_f32(np.zeros((0, 5), np.float32), 3, True, np.zeros((0, 3), np.float32),
                     np.zeros((0, 3), np.int64))


@pytest.mark.parametrize("shape,k,dim", [((5, 0), 0, 1), ((0, 5), 2, 1), ((7,), 3, 0), ((1,), 1, 0),
                                         ((3, 0, 4), 2, 2), ((3, 0, 4), 0, 1)], ids=str)
def test_empty_and_1d(shape, k, dim):
    x = R.standard_normal(shape).astype(np.float32)
    got, want = fg.topk(fg.tensor(x), k, dim=dim), torch.topk(torch.from_numpy(x), k, dim=dim)
    _same(got.values.numpy(), want.values.numpy())
    _same(got.indices.numpy(), want.indices.numpy())
    got, want = fg.sort(fg.tensor(x), dim=dim), torch.sort(torch.from_numpy(x), dim=dim, stable=True)
    _same(got.values.numpy(), want.values.numpy())
    _same(got.indices.numpy(), want.indices.numpy())


@pytest.mark.parametrize("largest", [True, False])
def test_prefilter_nan_thresholds(isa, numpy_path, largest):
    """NaN among the first k (the prefilter's first threshold NaN), NaN runs later, -0.0 / 0.0 ties at the k-th."""
    x = R.standard_normal((6, 5000)).astype(np.float32)
    x[0, :3] = np.nan
    x[1, :40] = np.nan
    x[2, 1000:1100] = np.nan
    x[3, ::2] = -0.0
    x[3, 1::2] = 0.0
    x[4, :] = np.nan
    x[5, 4990:] = -np.inf if largest else np.inf
    for k in (1, 3, 10, 39):
        got = _pair(fg.topk(fg.tensor(x), k, largest=largest))
        want = _pair(numpy_path(lambda: fg.topk(fg.tensor(x), k, largest=largest)))
        _same(got[0], want[0])
        _same(got[1], want[1])
