"""forgegrad._C.bf16 (cpp/kernels/per_isa/bf16_convert.cpp): float32 -> bfloat16 rounding and bfloat16 -> float32
widening, bit-equal to ml_dtypes' casts on every bfloat16 pattern and on float32 ties, NaN payloads, infinities,
denormals, -0 and random bits; equal to torch's CPU cast everywhere but NaN's bits (both quiet NaNs); the same bits on
every SIMD path and thread count; the casts forgegrad makes (Tensor.to, optimizers' working copies) through them;
bad arguments refused."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad import dtypes as _dtypes

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
_ISAS = ("scalar", "avx2", "avx512")  # every path this CPU can run (tests/conftest.py's rule)
_SIMD_PATHS = [p for p in _ISAS if _ISAS.index(p) <= _ISAS.index(fg.cpu_info()["detected_isa"])]


def _float32_patterns(rng) -> np.ndarray:
    """Every bfloat16 upper half with the low halves that decide rounding (ties 0x8000 to even and odd, just
    below / above, 0, all ones), the specials, and random bits: as float32."""
    upper = np.arange(65536, dtype=np.uint32) << 16
    lows = np.array([0, 1, 0x4000, 0x7FFF, 0x8000, 0x8001, 0xC000, 0xFFFF], np.uint32)
    specials = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001,
                         0xFF800001, 0x7FBFFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FA00000, 0x00000001, 0x80000001,
                         0x00007FFF, 0x00008000, 0x00018000, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x7F7F7FFF,
                         0x7F7F8000, 0xFF7F8000, 0x3F808000, 0x3F818000], np.uint32)
    rand = rng.integers(0, 2 ** 32, 1 << 18, dtype=np.uint32)
    return np.concatenate([(upper[:, None] | lows[None, :]).ravel(), specials, rand]).view(np.float32)


def _round(f: np.ndarray) -> np.ndarray:
    out = np.empty(f.size, np.uint16)
    _C.bf16.round_from_float32(np.ascontiguousarray(f), out)
    return out


def _widen(h: np.ndarray) -> np.ndarray:
    out = np.empty(h.size, np.float32)
    _C.bf16.widen_to_float32(np.ascontiguousarray(h), out)
    return out


def _ml_round(f: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return f.astype(BF16).view(np.uint16)


@pytest.mark.parametrize("offset", [0, 5])  # (a start off the vector width: every path's tail too)
def test_rounding_is_ml_dtypes_bits_and_torch_values(rng, simd_path, offset):
    f = _float32_patterns(rng)[offset:]
    got = _round(f)
    np.testing.assert_array_equal(got, _ml_round(f))
    want = torch.from_numpy(f.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(f)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    for bits in (got[nan], want[nan]):  # torch's NaN is 0xFFFF, ml_dtypes' the quiet NaN of its sign
        assert np.all((bits & 0x7FC0) == 0x7FC0)  # exponent all ones, quiet bit set: a quiet NaN
    assert np.all((got[nan] & 0x7FFF) == 0x7FC0) and np.array_equal(got[nan] >> 15, f[nan].view(np.uint32) >> 31)


def test_widening_is_exact_on_all_65536_patterns(simd_path):
    h = np.arange(65536, dtype=np.uint16)
    got = _widen(h).view(np.uint32)
    np.testing.assert_array_equal(got, h.astype(np.uint32) << 16)
    np.testing.assert_array_equal(got, h.view(BF16).astype(np.float32).view(np.uint32))
    want = torch.from_numpy(h.view(np.int16).copy()).view(torch.bfloat16).float().numpy().view(np.uint32)
    np.testing.assert_array_equal(got, want)
    # and back: every bfloat16 pattern but the signalling / payload NaNs survives the round trip
    back = _round(_widen(h))
    keep = ~np.isnan(h.view(BF16).astype(np.float32)) | ((h & 0x7FFF) == 0x7FC0)
    np.testing.assert_array_equal(back[keep], h[keep])


def test_same_bits_at_any_thread_count_and_on_every_simd_path(rng, threads):
    f = rng.standard_normal(300_001).astype(np.float32) * np.float32(1e3)  # several thread ranges
    h = _ml_round(f)
    before = fg.get_simd()
    try:
        for path in _SIMD_PATHS:
            fg.set_simd(path)
            for n in (1, 2, 3):
                threads(n)
                np.testing.assert_array_equal(_round(f), h, err_msg=f"{path}, {n} threads")
                np.testing.assert_array_equal(_widen(h), h.view(BF16).astype(np.float32))
    finally:
        fg.set_simd(before)


@pytest.mark.parametrize("layout", ["c", "fortran", "strided", "permuted", "0-d", "empty"])
def test_astype_keeps_values_and_layout(rng, layout):
    base = rng.standard_normal((6, 10, 4)).astype(np.float32)
    f = {"c": base, "fortran": np.asfortranarray(base), "strided": base[:, ::3, 1:],
         "permuted": base.transpose(1, 0, 2), "0-d": base[0, 0, 0].reshape(()), "empty": base[:0]}[layout]
    got = _dtypes.astype(f, BF16)
    want = f.astype(BF16)
    assert got.dtype is BF16 and got.shape == want.shape and got.strides == want.strides
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    for dt in (np.float32, np.float64, np.float16, np.int32):  # (negative floats to uint8: numpy leaves undefined)
        back = _dtypes.astype(got, np.dtype(dt))
        ref = want.astype(np.float32).astype(dt)
        assert back.dtype == ref.dtype and back.strides == ref.strides
        np.testing.assert_array_equal(back, ref)


def test_tensor_casts_and_gradients_run_through_the_kernels(rng):
    x = fg.tensor(_float32_patterns(rng)[:4096].reshape(64, 64), requires_grad=False)
    y = x.to(fg.bfloat16)
    np.testing.assert_array_equal(y._data.view(np.uint16), _ml_round(x.numpy()).reshape(64, 64))
    a = fg.tensor(rng.standard_normal((5, 7)).astype(np.float32), requires_grad=True)
    b = a.to(fg.bfloat16)
    g = rng.standard_normal((5, 7)).astype(np.float32)
    (b.float() * fg.tensor(g)).sum().backward()
    # the gradient flows back through the bfloat16 tensor: g rounded to bfloat16, widened to a's float32
    np.testing.assert_array_equal(a.grad.numpy(), g.astype(BF16).astype(np.float32))


def test_bfloat16_optimizer_step_rounds_into_the_parameter(rng):
    w = rng.standard_normal((9, 13)).astype(np.float32)
    g = rng.standard_normal((9, 13)).astype(np.float32)
    p = fg.tensor(w).to(fg.bfloat16).requires_grad_()
    storage = p._data
    p.grad = fg.tensor(g).to(fg.bfloat16)
    fg.optim.SGD([p], lr=0.1).step()
    assert p._data is storage  # rounded back into the parameter's own storage
    # the float32 step on the widened values (a float32 SGD), rounded once as ml_dtypes rounds
    q = fg.nn.Parameter(fg.tensor(w.astype(BF16).astype(np.float32)))
    q.grad = fg.tensor(g.astype(BF16).astype(np.float32))
    fg.optim.SGD([q], lr=0.1).step()
    np.testing.assert_array_equal(p._data.view(np.uint16), q.numpy().astype(BF16).view(np.uint16))


def test_bindings_refuse_bad_arguments():
    f = np.zeros(8, np.float32)
    h = np.zeros(8, np.uint16)
    ro = np.zeros(8, np.uint16)
    ro.flags.writeable = False
    shared = np.zeros(16, np.uint16)
    bad = [
        (lambda: _C.bf16.round_from_float32(f.astype(np.float64), h), TypeError, "src must be a float32"),
        (lambda: _C.bf16.round_from_float32(f, np.zeros(8, np.int32)), TypeError, "out must be a bfloat16 or uint16"),
        (lambda: _C.bf16.round_from_float32(f.reshape(2, 4), h), ValueError, "src must be a 1-D"),
        (lambda: _C.bf16.round_from_float32(np.zeros(16, np.float32)[::2], h), ValueError, "non-contiguous"),
        (lambda: _C.bf16.round_from_float32(f, np.zeros(7, np.uint16)), ValueError, "out must have src's length 8"),
        (lambda: _C.bf16.round_from_float32(f, ro), ValueError, "out must be writeable"),
        (lambda: _C.bf16.round_from_float32([0.0], h[:1]), TypeError, "src must be a numpy array"),
        (lambda: _C.bf16.widen_to_float32(h, np.zeros(8, np.float64)), TypeError, "out must be a float32"),
        (lambda: _C.bf16.widen_to_float32(f, f.copy()), TypeError, "src must be a bfloat16 or uint16"),
        (lambda: _C.bf16.widen_to_float32(shared[:8], shared[8:].view(np.float32)), ValueError, "length"),
        (lambda: _C.bf16.widen_to_float32(shared[2:6], shared[4:12].view(np.float32)), ValueError, "overlap"),
    ]
    for call, exc, match in bad:
        with pytest.raises(exc, match=match):
            call()
    _C.bf16.round_from_float32(f, h.view(BF16))  # a bfloat16 array is taken as is
    _C.bf16.round_from_float32(f[:0], h[:0])  # empty
