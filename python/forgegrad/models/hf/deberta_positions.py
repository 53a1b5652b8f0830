"""DeBERTa's relative positions: transformers' log buckets (``make_log_bucket_position``,
``build_relative_position``) in numpy, and the gather indices the disentangled attention reads from them: per
length for the eager path (``_gather_plan``), and one distance-indexed table for an ONNX graph (``distance_rows``).
All cached and read-only."""
from __future__ import annotations

import functools

import numpy as np


def log_bucket(rel: np.ndarray, buckets: int, max_position: int) -> np.ndarray:
    """transformers' ``make_log_bucket_position``: distances within buckets / 2 as they are, farther ones on a
    log scale reaching buckets / 2 - 1 more rows at ``max_position``, in float32 as torch computes them."""
    mid = buckets // 2
    sign = np.sign(rel)
    abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel))
    f32 = np.float32
    ratio = np.log((abs_pos / f32(mid)).astype(f32))
    log_pos = np.ceil(ratio / np.log(f32((max_position - 1) / mid)) * f32(mid - 1)) + f32(mid)
    return np.where(abs_pos <= mid, rel.astype(f32), log_pos * sign).astype(np.int64)


@functools.lru_cache(maxsize=8)
def relative_positions(T: int, buckets: int, max_position: int) -> np.ndarray:
    """The (T, T) relative positions i - j of query i and key j (log-bucketed when ``buckets`` > 0):
    transformers' ``build_relative_position``. Read-only (cached per length)."""
    rel = np.arange(T)[:, None] - np.arange(T)[None, :]
    if buckets > 0 and max_position > 0:
        rel = log_bucket(rel, buckets, max_position)
    rel.setflags(write=False)
    return rel


@functools.lru_cache(maxsize=8)
def _gather_plan(T: int, buckets: int, max_position: int, span: int):
    """(lo, hi, c2p, p2c) for length T: the table rows [lo, hi) the scores can reach, and the flat indices into a
    (T * (hi - lo)) row of each query's (or key's) scores against those rows that give the (T, T) c2p scores
    [i, j] = q_i . pk[clamp(r(i, j) + span)] and p2c scores [i, j] = k_j . pq[clamp(-r(j, i) + span)]."""
    rel = relative_positions(T, buckets, max_position)
    c2p = np.clip(rel + span, 0, 2 * span - 1)
    p2c = np.clip(-rel + span, 0, 2 * span - 1).T  # [i, j]: key j's row for query i
    lo, hi = int(min(c2p.min(), p2c.min())), int(max(c2p.max(), p2c.max())) + 1
    R, rows = hi - lo, np.arange(T)
    c2p_flat = rows[:, None] * R + (c2p - lo)
    p2c_flat = rows[None, :] * R + (p2c - lo)
    for a in (c2p_flat, p2c_flat):
        a.setflags(write=False)  # shared by every call of this length
    return lo, hi, c2p_flat, p2c_flat


@functools.lru_cache(maxsize=8)
def distance_rows(buckets: int, max_position: int, span: int):
    """(n, c2p, p2c): the table rows of the c2p and p2c terms of a query and a key at distance d = i - j, for d in
    [-n, n] (index d + n), as ``_gather_plan`` reads them. Both are non-decreasing in d (the log buckets grow with
    the distance) and clamped to the table, and n is where they reach its first and last rows, so a graph clamps
    i - j to [-n, n] and gathers here: one constant for every length, holding the eager path's very rows (the
    buckets' float32 logs and ceilings taken once here, not by onnxruntime's Log, whose last bit could move a
    distance across a bucket boundary). Read-only."""
    n, last = span, 2 * span - 1
    while True:
        d = np.arange(-n, n + 1)
        rel = log_bucket(d, buckets, max_position) if buckets > 0 and max_position > 0 else d
        c2p = np.clip(rel + span, 0, last)
        p2c = np.clip(-rel[::-1] + span, 0, last)  # at d = i - j, key j's row for query i: -r(j - i) = -r(-d)
        if c2p[0] == p2c[0] == 0 and c2p[-1] == p2c[-1] == last:
            break
        n *= 2
    for a in (c2p, p2c):
        a.setflags(write=False)
    return n, c2p, p2c
