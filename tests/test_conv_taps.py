"""_C.conv.conv_taps_scatter / conv_taps_gather (the tap interleave of a transposed conv whose kernel equals its
stride) against numpy's transposes, and their argument checks."""
import numpy as np
import pytest

from forgegrad import _C


def _reference(cols):
    B, KD, KH, KW, D, H, W = cols.shape
    return cols.transpose(0, 4, 1, 5, 2, 6, 3).reshape(B, D * KD, H * KH, W * KW)


@pytest.mark.parametrize("shape", [(3, 2, 2, 2, 3, 4, 5), (2, 1, 2, 3, 2, 3, 7), (1, 3, 1, 1, 2, 2, 2),
                                   (2, 1, 1, 70, 1, 2, 3), (4, 1, 2, 2, 1, 5, 17)])
def test_scatter_and_gather_match_numpy(rng, threads, shape):
    cols = rng.standard_normal(shape).astype(np.float32)
    want = _reference(cols)
    for n in (1, 2):
        threads(n)
        out = np.full(want.shape, np.nan, np.float32)
        _C.conv.conv_taps_scatter(cols, out)
        np.testing.assert_array_equal(out, want)
        back = np.full(shape, np.nan, np.float32)
        _C.conv.conv_taps_gather(want, back)
        np.testing.assert_array_equal(back, cols)


def test_taps_reject_bad_arguments(rng):
    cols = np.zeros((2, 2, 2, 2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="out"):
        _C.conv.conv_taps_scatter(cols, np.zeros((2, 6, 6, 5), np.float32))
    with pytest.raises((TypeError, ValueError), match="cols"):
        _C.conv.conv_taps_scatter(cols[..., 0], np.zeros((2, 6, 6, 6), np.float32))
    with pytest.raises((TypeError, ValueError), match="cols"):
        _C.conv.conv_taps_gather(np.zeros((2, 6, 6, 6), np.float32), cols.astype(np.float64))
    with pytest.raises((TypeError, ValueError), match="out"):
        _C.conv.conv_taps_scatter(cols, np.zeros((2, 6, 6, 6), np.float32)[:, :, :, ::-1])
