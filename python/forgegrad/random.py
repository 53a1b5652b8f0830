"""The global random generator: parameter initialisation, dropout masks and shuffling all draw
from it, so ``forgegrad.manual_seed(s)`` makes a run repeatable."""
from __future__ import annotations

import sys

import numpy as np

__all__ = ["manual_seed", "generator", "seed_from", "initial_seed", "resolve"]

# the seed the generator started from (torch.initial_seed): drawn from the OS at import, else manual_seed's
_initial_seed = int(np.random.SeedSequence().entropy) % 2**64
_gen = np.random.default_rng(_initial_seed)


def manual_seed(seed: int) -> np.random.Generator:
    """Seed forgegrad's global generator; returns it."""
    global _gen, _initial_seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _gen = np.random.default_rng(int(seed))
    _initial_seed = int(seed)
    return _gen


def initial_seed() -> int:
    """The seed the global generator was last seeded with (at import: one drawn from the OS)."""
    return _initial_seed


def generator() -> np.random.Generator:
    return _gen


def resolve(gen, who: str) -> np.random.Generator:
    """A ``generator=`` argument: None is the global generator; forgegrad's generators are numpy's (a
    ``torch.Generator`` or a seed is refused, not ignored)."""
    if gen is None:
        return _gen
    batched = sys.modules.get("forgegrad.func._batched")
    if batched is not None and batched.batch_size() is not None:
        # inside a batched vmap one draw would serve every element; the loop draws per element from gen
        raise batched.NeedLoop(f"{who}: an explicit generator")
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"{who}(): generator must be a numpy.random.Generator (forgegrad's generators are numpy's, "
                        f"e.g. numpy.random.default_rng(0)) or None, got {type(gen).__name__}")
    return gen


def seed_from(gen: np.random.Generator) -> int:
    """A fresh seed drawn from gen (to derive independent streams)."""
    return int(gen.integers(0, 2**63 - 1))
