"""The global random generator: parameter initialisation, dropout masks and shuffling all draw
from it, so ``forgegrad.manual_seed(s)`` makes a run repeatable."""
from __future__ import annotations

import numpy as np

__all__ = ["manual_seed", "generator", "seed_from"]

_gen = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed forgegrad's global generator; returns it."""
    global _gen
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _gen = np.random.default_rng(int(seed))
    return _gen


def generator() -> np.random.Generator:
    return _gen


def seed_from(gen: np.random.Generator) -> int:
    """A fresh seed drawn from gen (to derive independent streams)."""
    return int(gen.integers(0, 2**63 - 1))
