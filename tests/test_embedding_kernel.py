"""The deterministic embedding backward (forgegrad.kernels.embedding): each row sums its positions
in ascending order, so it equals numpy's sequential np.add.at bit for bit, at any thread count."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.kernels.embedding import embedding_backward


def _case(V=300, n=5000, D=37, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, size=(n // 50, 50)).astype(np.int64)
    idx[0, :10] = 7  # a popular row
    return rng.standard_normal(idx.shape + (D,)).astype(np.float32), idx


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_equals_sequential_scatter_add_bits(threads):
    g, idx = _case()
    want = np.zeros((300, g.shape[-1]), np.float32)
    np.add.at(want, idx.reshape(-1), g.reshape(-1, g.shape[-1]))
    want[5] = 0.0
    before = fg.get_num_threads()
    try:
        fg.set_num_threads(threads)
        got = embedding_backward(g, idx, 300, padding_idx=5)
    finally:
        fg.set_num_threads(before)
    assert got.tobytes() == want.tobytes()


def test_rows_nobody_looked_up_and_negative_padding():
    g = np.ones((3, 4), np.float32)
    got = embedding_backward(g, np.array([0, 0, 2]), 5, padding_idx=-3)  # row 2 is the padding row
    np.testing.assert_array_equal(got[:, 0], [2, 0, 0, 0, 0])


def test_bad_arguments():
    g = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="indices"):
        embedding_backward(g, np.array([0, 1, 2], np.int32), 5)
    with pytest.raises(ValueError, match="grad"):
        embedding_backward(g, np.array([0, 1]), 5)
    with pytest.raises(IndexError, match="indices"):
        embedding_backward(g, np.array([0, 1, 5]), 5)
    with pytest.raises(ValueError, match="padding_idx"):
        embedding_backward(g, np.array([0, 1, 2]), 5, padding_idx=5)
