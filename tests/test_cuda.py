"""CUDA kernels against the CPU kernels. The kernel tests need a GPU; without one only the
'unavailable' behaviour is tested (CI machines have no GPU)."""
import numpy as np
import pytest

import forgegrad as fg
import forgegrad.cuda as fcuda

needs_gpu = pytest.mark.skipif(not fcuda.is_available(), reason="no CUDA device on this machine")


def test_device_queries_agree():
    # forgegrad.cuda, the raw binding and cpu_info() describe the same build and the same devices
    n = fcuda.device_count()
    assert isinstance(n, int) and n == fg._C.cuda.device_count()
    assert fcuda.is_built() == fg._C.cuda.built == fg.cpu_info()["cuda_built"]
    assert fcuda.is_available() == (fcuda.is_built() and n > 0)
    if not fcuda.is_built():
        assert n == 0 and "built without CUDA" in fcuda.unavailable_reason()


def test_unavailable_is_reported_clearly():
    if fcuda.is_available():
        assert fcuda.unavailable_reason() == ""
        return
    reason = fcuda.unavailable_reason()
    assert reason
    # every entry point fails with the same clear error before touching its arguments
    x = np.zeros(3, np.float32)
    calls = [lambda: fcuda.to_device(x), lambda: fcuda.matmul(x, x), lambda: fcuda.relu(x),
             lambda: fcuda.relu_backward(x, x), lambda: fcuda.adam_step(x, x, x, x, step=1)]
    for call in calls:
        with pytest.raises(RuntimeError, match="CUDA is not available") as e:
            call()
        assert reason in str(e.value)


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


def test_import_forgegrad_leaves_cuda_until_asked():
    # `import forgegrad` neither imports forgegrad.cuda (which registers the device and its optimizer
    # kernels) nor the optimizer kernel table: both come on first use
    import subprocess
    import sys
    code = ("import sys, forgegrad\n"
            "print(sorted(m for m in ('forgegrad.cuda', 'forgegrad.optim.kernels') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
