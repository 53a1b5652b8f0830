"""Sample inputs for the op records (the generated tests in tests/test_op_registry.py run them).

Shapes are odd on purpose (tails of SIMD vectors, one-element axes); one sample per op family is
large enough that the kernels split it over threads, so the thread-count check means something.
"""
from __future__ import annotations

import numpy as np

from .registry import Sample

LARGE = (300, 257)  # 77,100 elements: above every elementwise kernel's per-thread grain


def rand(*shape, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


def positive(*shape, seed: int = 0) -> np.ndarray:
    return rand(*shape, seed=seed, low=0.2, high=3.0)


def labels(n: int, classes: int, *shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=(n, *shape)).astype(np.int64)


def unary(make=rand, **kwargs):
    """Samples of a one-input op: odd shapes, a 1-element tensor and a large one."""

    def samples():
        return [Sample((make(3, 7),), dict(kwargs)), Sample((make(2, 5, 9, seed=1),), dict(kwargs)),
                Sample((make(1, seed=2),), dict(kwargs)), Sample((make(*LARGE, seed=3),), dict(kwargs), "large")]

    return samples


def binary(make_b=rand):
    """Samples of a broadcasting two-input op: equal shapes, broadcasting both ways, a scalar."""

    def samples():
        return [Sample((rand(3, 7), make_b(3, 7, seed=1))), Sample((rand(2, 1, 9), make_b(5, 1, seed=1))),
                Sample((rand(4, 5), make_b(5, seed=2)), name="broadcast b"),
                Sample((rand(*LARGE, seed=3), make_b(*LARGE, seed=4)), name="large"),
                Sample((rand(3, 7), 1.5), name="python scalar")]

    return samples
