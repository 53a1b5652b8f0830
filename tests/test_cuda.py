"""CUDA kernels against the CPU kernels. The kernel tests need a GPU; without one only the
'unavailable' behaviour is tested (CI machines have no GPU)."""
import numpy as np
import pytest

import forgegrad as fg
import forgegrad.cuda as fcuda

needs_gpu = pytest.mark.skipif(not fcuda.is_available(), reason="no CUDA device on this machine")


def test_unavailable_is_reported_clearly():
    if fcuda.is_available():
        assert fcuda.unavailable_reason() == ""
        return
    assert fcuda.unavailable_reason()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        fcuda.to_device(np.zeros(3, np.float32))


@needs_gpu
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (17, 33, 65), (128, 64, 96), (3, 300, 7)])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_sgemm_matches_cpu(m, k, n, ta, tb):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    got = fcuda.matmul(fcuda.to_device(a), fcuda.to_device(b), trans_a=ta, trans_b=tb).numpy()
    want = fg.kernels.matmul(a, b, trans_a=ta, trans_b=tb)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@needs_gpu
def test_relu_and_adam_match_cpu_formulas():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(1001).astype(np.float32)
    y = fcuda.relu(fcuda.to_device(x))
    np.testing.assert_array_equal(y.numpy(), np.maximum(x, 0))
    g = rng.standard_normal(1001).astype(np.float32)
    np.testing.assert_array_equal(fcuda.relu_backward(y, fcuda.to_device(g)).numpy(), g * (x > 0))
    p, m, v = x.copy(), np.zeros_like(x), np.zeros_like(x)
    dp, dm, dv = fcuda.to_device(p), fcuda.to_device(m), fcuda.to_device(v)
    for step in range(1, 4):
        fcuda.adam_step(dp, fcuda.to_device(g), dm, dv, step=step, lr=1e-2)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        p = p - 1e-2 / (1 - 0.9 ** step) * m / (np.sqrt(v) / np.sqrt(1 - 0.999 ** step) + 1e-8)
    np.testing.assert_allclose(dp.numpy(), p, rtol=1e-5, atol=1e-6)
