"""simd.h's verf skips its exp branch for a vector whose lanes are all inside the polynomial's range
(|x| <= 0.9277, most of a GELU's inputs at initialisation): each value must get the same bits whether
its vector took that shortcut or not (a neighbour past the edge forces the full path), for GELU forward
and backward on every ISA, and stay close to torch."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.kernels import activation as KA

torch = pytest.importorskip("torch")


def _pairs():
    """(small, mixed): small values (|x| / sqrt 2 under the edge) and the same array with every 16th
    value replaced by one past the edge, so that every vector of every ISA holds a large lane."""
    rng = np.random.default_rng(0)
    small = (rng.uniform(-1.3, 1.3, 4099)).astype(np.float32)
    small[:8] = [0.0, -0.0, 1.3119, -1.3119, 1e-30, -1e-30, 0.5, np.nan]  # the edge sits at |x| = 1.31199
    mixed = small.copy()
    mixed[::16] = 3.0
    keep = np.ones(small.size, bool)
    keep[::16] = False
    return small, mixed, keep


def test_same_bits_with_and_without_the_shortcut_on_every_isa():
    small, mixed, keep = _pairs()
    g = np.random.default_rng(1).standard_normal(small.size).astype(np.float32)
    isa = fg.get_simd()
    paths = ("scalar", "avx2", "avx512")
    try:
        for path in paths[:paths.index(fg.cpu_info()["detected_isa"]) + 1]:
            fg.set_simd(path)
            for fn in (lambda x: KA.gelu(x), lambda x: KA.gelu_backward(g, x)):
                a, b = fn(small)[keep], fn(mixed)[keep]
                assert a.tobytes() == b.tobytes(), path
    finally:
        fg.set_simd(isa)


def test_close_to_torch():
    small, mixed, _ = _pairs()
    for x in (small[8:], mixed[8:]):  # without the NaN
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        ty = torch.nn.functional.gelu(tx)
        ty.sum().backward()
        np.testing.assert_allclose(KA.gelu(x), ty.detach().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(KA.gelu_backward(np.ones_like(x), x), tx.grad.numpy(), rtol=1e-6, atol=1e-6)
