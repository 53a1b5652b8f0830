"""Meta tensors of complex dtypes: each op gives torch's meta result (shape, dtype, device) — promotion with real
tensors and Python numbers, real results of abs / angle / var / std / real / imag / view_as_real, complex results
of reductions and products, the complex constructors and casts."""
from __future__ import annotations

import pytest
import torch

import forgegrad as fg


def _cases(T):
    F = T.nn.functional

    def e(*shape, dtype=T.float32):
        return T.empty(*shape, device="meta", dtype=dtype)

    c64 = lambda *s: e(*s, dtype=T.complex64)  # noqa: E731
    c128 = lambda *s: e(*s, dtype=T.complex128)  # noqa: E731
    return {
        "add broadcast": lambda: c64(2, 3) + c64(3), "add float32": lambda: c64(2, 3) + e(2, 3),
        "mul float64": lambda: c64(2, 3) * e(3, dtype=T.float64), "mul complex128": lambda: c64(3) * c128(2, 3),
        "float32 * 1j": lambda: e(2, 3) * 1j, "int64 * 1j": lambda: e(4, dtype=T.int64) * 1j,
        "sub int64": lambda: c64(3) - e(3, dtype=T.int64), "div": lambda: c128(2, 3) / e(3),
        "0-d float64 operand": lambda: c64(3) * T.empty((), device="meta", dtype=T.float64), "pow": lambda: c64(3) ** 2,
        "exp": lambda: c64(2, 3).exp(), "sqrt": lambda: c128(3).sqrt(), "sigmoid": lambda: T.sigmoid(c64(2)),
        "neg": lambda: -c64(3), "sgn": lambda: c64(3).sgn(), "conj": lambda: c64(2).conj(),
        "abs": lambda: c64(2, 3).abs(), "abs complex128": lambda: c128(2).abs(), "angle": lambda: T.angle(c64(2, 3)),
        "real": lambda: c64(2, 3).real, "imag": lambda: c128(2, 3).imag,
        "view_as_real": lambda: T.view_as_real(c64(2, 3)),
        "view_as_complex": lambda: T.view_as_complex(e(2, 3, 2, dtype=T.float64)),
        "complex": lambda: T.complex(e(2, 3), e(3)),
        "polar": lambda: T.polar(e(3, dtype=T.float64), e(3, dtype=T.float64)),
        "sum": lambda: c64(2, 3).sum(), "sum dim keepdim": lambda: c128(2, 3).sum(1, keepdim=True),
        "sum dtype": lambda: c64(3).sum(dtype=T.complex128), "mean": lambda: c64(2, 3).mean(0),
        "mean complex128": lambda: c128(2).mean(), "prod": lambda: c64(2, 3).prod(),
        "cumsum": lambda: c64(2, 3).cumsum(1),
        "var": lambda: c64(2, 3).var(), "std complex128": lambda: c128(4, 3).std(0), "norm": lambda: c64(2, 3).norm(),
        "max": lambda: c64(3).max(), "max dim": lambda: c64(2, 3).max(1), "argmax": lambda: c64(2, 3).argmax(1),
        "matmul": lambda: c64(2, 3) @ c64(3, 4), "matmul float32": lambda: c64(2, 3) @ e(3, 4),
        "bmm": lambda: T.bmm(c128(5, 2, 3), c128(5, 3, 4)), "linear": lambda: F.linear(c64(2, 3), c64(4, 3)),
        "eq": lambda: c64(2, 3) == c64(3), "isfinite": lambda: T.isfinite(c64(3)),
        "isclose": lambda: T.isclose(c64(3), c64(3)),
        "to complex64": lambda: e(2, 3).to(T.complex64), "to complex128": lambda: c64(2).to(T.complex128),
        "to float32": lambda: c64(2).to(T.float32), "cfloat": lambda: e(2).cfloat(),
        "reshape": lambda: c64(2, 3).reshape(3, 2), "cat": lambda: T.cat([c64(2, 3), c64(1, 3)]),
        "stack": lambda: T.stack([c64(2), c64(2)]), "getitem": lambda: c64(4, 3)[1:],
        "permute": lambda: c64(2, 3, 4).permute(2, 0, 1), "pad": lambda: F.pad(c64(2, 3), (1, 1)),
        "where": lambda: T.where(e(3, dtype=T.bool), c64(3), e(3)), "clone": lambda: c64(3).clone(),
        "dropout": lambda: F.dropout(c64(2, 3), 0.5, False), "ones_like": lambda: T.ones_like(c64(3)),
        # torch's meta device runs these too (its CPU refuses complex values; forgegrad's CPU does as well)
        "relu": lambda: T.relu(c64(3)), "lt": lambda: c64(3) < c64(3), "softmax": lambda: T.softmax(c64(3), 0),
    }


def _describe(y):
    return [(tuple(t.shape), str(t.dtype).split(".")[-1], str(t.device)) for t in (y if isinstance(y, tuple) else (y,))]


@pytest.mark.filterwarnings("ignore:Casting complex values to real")
@pytest.mark.parametrize("name", list(_cases(torch)))
def test_complex_meta_ops_give_torchs_shape_and_dtype(name):
    want = _describe(_cases(torch)[name]())
    got = _describe(_cases(fg)[name]())
    assert got == want
