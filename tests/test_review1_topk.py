"""Review of the float32 top-k / sort kernel (forgegrad._topk_kernel, _C.topk): k's validation as torch's
(TypeError for a non-integer k, a one-element integer tensor accepted), and torch's results on the rows the
kernel's paths meet at their edges (lengths around the radix cut-off, k at the prefilter ratio, NaN / inf /
-0.0 / denormal rows), on every ISA."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _topk_kernel


def _isas():
    before = fg.get_simd()
    found = []
    for name in ("avx512", "avx2", "scalar"):
        try:
            fg.set_simd(name)
            found.append(name)
        except ValueError:
            pass
    fg.set_simd(before)
    return found


@pytest.mark.parametrize("k", [2.0, True, None, "2", fg.tensor(2.0), fg.tensor([1, 2])])
def test_topk_k_not_an_int_is_type_error(k):
    x = fg.arange(10.0)
    with pytest.raises(TypeError, match="'k' must be an int"):
        fg.topk(x, k)
    with pytest.raises(TypeError, match="'k' must be an int"):
        fg.kthvalue(x, k)


def test_k_as_integer_tensor_and_numpy_int():
    x = np.random.default_rng(0).standard_normal(10).astype(np.float32)
    want = torch.topk(torch.from_numpy(x), 3)
    for k in (fg.tensor(3), np.int64(3)):
        got = fg.topk(fg.tensor(x), k)
        np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
    assert fg.kthvalue(fg.tensor(x), fg.tensor(2)).values.item() == torch.kthvalue(torch.from_numpy(x), 2).values.item()


@pytest.mark.parametrize("k", [-1, 11])
def test_k_out_of_range_is_index_error(k):
    with pytest.raises(IndexError, match="k"):
        fg.topk(fg.arange(10.0), k)


def _stable_ref(a, k, largest):
    """The first k of a stable sort, NaN the largest, -0.0 == 0.0 (the kernel's documented order)."""
    idx = np.broadcast_to(np.arange(a.shape[-1]), a.shape)
    val = a.astype(np.float64) + 0.0
    nan = np.isnan(a)
    if largest:
        order = np.lexsort((idx, np.where(nan, 0.0, -val), ~nan), axis=-1)
    else:
        order = np.lexsort((idx, np.where(nan, 0.0, val), nan), axis=-1)
    return order[..., :k]


_SPECIAL = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-39, 2.0], np.float32)


@pytest.mark.parametrize("n", [1, 255, 256, 257, 5000])
def test_edges_every_isa_match_stable_order_and_torch_values(n):
    rng = np.random.default_rng(n)
    rows = {"special": rng.choice(_SPECIAL, (3, n)), "ties": rng.integers(-2, 3, (3, n)).astype(np.float32),
            "increasing": np.tile(np.arange(n, dtype=np.float32), (3, 1)), "nan": np.full((2, n), np.nan, np.float32)}
    before = fg.get_simd()
    try:
        for isa in _isas():
            fg.set_simd(isa)
            for a in rows.values():
                for k in sorted({1, max(1, n // 128), max(1, n // 2), n}):
                    for largest in (True, False):
                        _, idx = _topk_kernel.topk_along(a, -1, k, largest)
                        np.testing.assert_array_equal(idx, _stable_ref(a, k, largest))
                        want = torch.topk(torch.from_numpy(a), k, largest=largest).values.numpy()
                        got = fg.topk(fg.tensor(a), k, largest=largest).values.numpy()
                        np.testing.assert_array_equal(got, want)
                for desc in (False, True):
                    want = torch.sort(torch.from_numpy(a), descending=desc, stable=True)
                    got = fg.sort(fg.tensor(a), descending=desc, stable=True)
                    np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
    finally:
        fg.set_simd(before)


def test_negative_stride_and_middle_dim_match_torch():
    a = np.random.default_rng(3).integers(0, 4, (3, 300, 5)).astype(np.float32)
    v = a[::-1, :, ::-2]
    for dim in (0, 1, 2):
        want = torch.sort(torch.from_numpy(v.copy()), dim=dim, descending=True, stable=True)
        got = fg.sort(fg.tensor(v), dim=dim, descending=True, stable=True)
        np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
        np.testing.assert_array_equal(got.values.numpy(), want.values.numpy())
