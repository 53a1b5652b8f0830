"""The numpy fallbacks of forgegrad.ops._special (used where scipy is not installed: scipy is not a runtime
dependency) against scipy.special, in float64, over the ranges and edge points the ops see."""
import numpy as np
import pytest
import scipy.special as sp

from forgegrad.ops import _special

X = np.concatenate([np.linspace(-7.9, 12.0, 997), [1e-8, 0.5, 1.0, 2.0, 30.0, 1e3, 1e6, -0.5, -2.5, -1e-3]])


def _close(a, b, rtol):
    a, b = np.asarray(a), np.asarray(b)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.array_equal(np.isinf(a), np.isinf(b)) and np.array_equal(a[np.isinf(a)], b[np.isinf(b)])
    ok = np.isfinite(b)
    np.testing.assert_allclose(a[ok], b[ok], rtol=rtol, atol=1e-12)  # absolute near the functions' zeros


def test_erf_erfc_lgamma():
    _close(_special.fallback_erf(X), sp.erf(X), 1e-15)
    _close(_special.fallback_erfc(X), sp.erfc(X), 1e-13)
    poles = np.array([0.0, -1.0, -2.0, -7.0, np.inf, np.nan])
    _close(_special.fallback_gammaln(np.concatenate([X, poles])), sp.gammaln(np.concatenate([X, poles])), 1e-13)
    # -inf: +inf, as torch's lgamma (scipy's gammaln gives -inf; forgegrad's scipy path maps it)
    assert _special.fallback_gammaln(np.array([-np.inf]))[0] == np.inf
    assert _special.gammaln(np.array([-np.inf, -np.inf], np.float32))[0] == np.inf


def test_digamma_trigamma():
    x = X[np.abs(X - np.round(X)) > 1e-6]  # away from the poles, where both lose digits to pi / tan(pi x)
    _close(_special.fallback_digamma(x), sp.digamma(x), 1e-12)
    _close(_special.fallback_trigamma(x), sp.polygamma(1, x), 1e-12)
    poles = np.array([0.0, -1.0, -3.0])
    assert np.all(np.isnan(_special.fallback_digamma(poles)))
    assert np.all(np.isinf(_special.fallback_trigamma(poles)))


@pytest.mark.parametrize("x", [np.linspace(-0.999999, 0.999999, 2001), np.array([-1.0, 1.0, 1.5, -2.0, 0.0, np.nan])])
def test_erfinv(x):
    _close(_special.fallback_erfinv(x), sp.erfinv(x), 1e-11)


def test_forgegrad_runs_these_ops_without_scipy():
    # scipy is not a runtime dependency: with it unimportable, forgegrad imports and the ops run on the fallbacks
    import os
    import subprocess
    import sys
    code = ("import sys; sys.modules['scipy'] = None; sys.modules['scipy.special'] = None\n"
            "import numpy as np, forgegrad as fg\n"
            "from forgegrad.ops import _special\n"
            "assert _special._sp is None\n"
            "x = fg.tensor(np.array([0.3, 1.7, 4.0], np.float32), requires_grad=True)\n"
            "y = fg.erf(x).sum() + fg.lgamma(x).sum() + fg.digamma(x).sum() + fg.erfinv(x * 0.2).sum()\n"
            "y.backward()\n"
            "assert np.isfinite(x.grad.numpy()).all()\n"
            "print(float(y))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    import torch
    t = torch.tensor([0.3, 1.7, 4.0], dtype=torch.float64)
    ref = (torch.erf(t).sum() + torch.lgamma(t).sum() + torch.digamma(t).sum() + torch.erfinv(t * 0.2).sum()).item()
    assert abs(float(out.stdout.strip()) - ref) < 1e-5
