"""The math, gradient and activation formulas appended to cuda/binary.cu's Pointwise enum, executed on the CPU
through the kernel simulator of tests/test_cuda_sim.py and compared with the numpy formulas of
tests/cuda_nn_emulation.py (which tests/test_cuda_nn_contract.py checks against the ops' CPU Functions, so the
kernel is tied to the CPU Function through the two).

Every formula runs on a grid of values with the edges each op treats specially (0, -0, +-inf, NaN, the kinks at
+-0.5, +-1, +-3, integers and halves, out-of-domain values giving NaN), two-input ones on all pairs of that grid
(which also exercises broadcasting: a column against a row). CUDA's libm is not glibc's, so this checks the
formulas and the edge handling, not the last ulp a GPU gives (tests/test_device_ops.py does that on a GPU).
"""
from __future__ import annotations

import numpy as np
import pytest

import cuda_nn_emulation as EMU
from test_cuda_sim import POINTWISE, _pointwise, sim  # noqa: F401 - sim is the module's fixture

_EDGES = [0.0, -0.0, np.inf, -np.inf, np.nan, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 2.5, -1.5, 1e-7, 0.999, 20.0]


def _grid(n=40, seed=0, low=-4.0, high=4.0):
    rng = np.random.default_rng(seed)
    return np.concatenate([np.asarray(_EDGES, np.float32), rng.uniform(low, high, n).astype(np.float32),
                           rng.uniform(-1, 1, n // 2).astype(np.float32)])


X = _grid()
N = X.size
G = np.random.default_rng(1).uniform(-2, 2, N).astype(np.float32)
COL, ROW = _grid(12, 2)[:, None], _grid(12, 3)[None, :]
G2 = np.random.default_rng(4).uniform(-2, 2, (COL.size, ROW.size)).astype(np.float32)
UNARY = ["log1p", "expm1", "exp2", "log2", "log10", "square", "reciprocal", "rsqrt", "tan", "sinh", "cosh", "asin",
         "acos", "atan", "asinh", "acosh", "atanh", "erf", "erfc", "erfinv", "floor", "ceil", "trunc", "round", "frac",
         "sign", "deg2rad", "rad2deg", "sinc", "signbit", "hardsigmoid", "hardswish", "mish", "logsigmoid", "softsign",
         "tanh"]
UNARY_GRADS = ["log1p_grad", "expm1_grad", "exp2_grad", "log2_grad", "log10_grad", "reciprocal_grad", "rsqrt_grad",
               "tan_grad", "sinh_grad", "cosh_grad", "asin_grad", "acos_grad", "atan_grad", "asinh_grad", "acosh_grad",
               "atanh_grad", "erf_grad", "erfc_grad", "erfinv_grad", "sinc_grad", "hardsigmoid_grad",
               "hardswish_grad", "mish_grad", "logsigmoid_grad", "softsign_grad", "tanhshrink_grad", "prelu_grad_w"]
BINARY = ["fmax", "fmin", "atan2", "hypot", "copysign", "remainder", "fmod", "logaddexp", "logaddexp2", "xlogy",
          "prelu"]
BINARY_GRADS = ["maximum_grad", "minimum_grad", "fmax_grad", "fmin_grad", "copysign_grad", "remainder_grad_b",
                "fmod_grad_b", "logaddexp_grad", "logaddexp2_grad", "xlogy_grad_a", "prelu_grad_x"]
# the rest: (inputs, alpha) cases
CASES = {
    "logit": [([X, np.nan], 1.0), ([X, 0.1], 1.0), ([X, 0.7], 1.0)],
    "logit_grad": [([G, X, np.nan], 1.0), ([G, X, 0.1], 1.0)],
    "lerp": [([COL, ROW, 0.3], 1.0), ([COL, ROW, 0.75], 1.0), ([X, X[::-1].copy(), G], 1.0)],
    "mul_div": [([COL, ROW, G2], 1.0)],
    "atan2_grad": [([G2, COL, ROW], 1.0), ([G2, COL, ROW], -1.0)],
    "elu_family": [([X, 1.0507, 1.7581, 1.0], 1.0), ([X, 1.0, 2.0, 0.5], 1.0)],
    "elu_family_grad": [([G, X, 1.0507, 1.8473], 1.0), ([G, X, 1.0, -0.5], 1.0)],
    "elu_grad_out": [([G, X, 0.0, 0.0], 0.7)],
    "softplus": [([X, 1.0, 20.0], 1.0), ([X, 1.5, 3.0], 1.0)],
    "softplus_grad": [([G, X, 1.0, 20.0], 1.0), ([G, X, 1.5, 3.0], 1.0)],
    "hardtanh_grad": [([G, X, -1.0, 1.0], 1.0), ([G, X, 0.0, 6.0], 1.0)],
    "softshrink": [([X, 0.5], 1.0), ([X, 0.0], 1.0)],
    "hardshrink": [([X, 0.5], 1.0)],
    "shrink_grad": [([G, X, 0.5], 1.0)],
    "threshold": [([X, 0.5, -2.0], 1.0)],
    "threshold_grad": [([G, X, 0.5], 1.0)],
    "prelu_grad_x": [([G2, COL, ROW], 1.0)],
}
for _op in UNARY:
    CASES[_op] = [([X], 1.0)]
for _op in UNARY_GRADS:
    CASES[_op] = [([G, X], 1.0)]
for _op in BINARY:
    CASES[_op] = [([COL, ROW], 1.0)]
for _op in BINARY_GRADS:
    CASES.setdefault(_op, [([G2, COL, ROW], 1.0)])
NEW = POINTWISE[POINTWISE.index("log1p"):]


def test_every_appended_op_has_a_case():
    assert sorted(CASES) == sorted(NEW)


@pytest.mark.parametrize("op", NEW)
def test_appended_pointwise_matches_the_numpy_formula(sim, op):  # noqa: F811 - the imported fixture
    for inputs, alpha in CASES[op]:
        shape = np.broadcast_shapes(*[np.shape(a) for a in inputs])
        got = _pointwise(sim, op, inputs, shape, alpha)
        want = np.broadcast_to(EMU.pointwise(op, [EMU.EmuArray(np.asarray(a, np.float32)) if isinstance(
            a, np.ndarray) else a for a in inputs], alpha).a, shape)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, equal_nan=True,
                                   err_msg=f"{op} with scalars {[a for a in inputs if not isinstance(a, np.ndarray)]}")


def test_edge_values_spelled_out(sim):  # noqa: F811
    """Beyond agreeing with the numpy formulas: torch's values at a few edges, written out."""
    x = np.array([np.nan, -0.0, 0.5, 1.5, 2.5, -2.5], np.float32)
    np.testing.assert_array_equal(_pointwise(sim, "sign", [x], x.shape), [0, 0, 1, 1, 1, -1])
    np.testing.assert_array_equal(_pointwise(sim, "round", [x], x.shape), [np.nan, 0, 0, 2, 2, -2])  # half to even
    np.testing.assert_array_equal(_pointwise(sim, "signbit", [x], x.shape), [0, 1, 0, 0, 0, 1])
    a, b = np.array([np.nan, 1, -1, 1, 5], np.float32), np.array([1, np.nan, 3, -3, 5], np.float32)
    np.testing.assert_array_equal(_pointwise(sim, "fmax", [a, b], a.shape), [1, 1, 3, 1, 5])
    np.testing.assert_array_equal(_pointwise(sim, "remainder", [a, b], a.shape)[2:], [2, -2, 0])
    np.testing.assert_array_equal(_pointwise(sim, "maximum_grad", [np.ones(5, np.float32), a, b], a.shape),
                                  [1, 1, 0, 1, 0.5])  # a NaN side gets all of it, a tie half
    np.testing.assert_array_equal(_pointwise(sim, "xlogy", [np.zeros(3, np.float32), np.array(
        [0, -1, np.nan], np.float32)], (3,)), [0, 0, np.nan])
