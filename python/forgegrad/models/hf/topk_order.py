"""The order of ``torch.topk(values, k)`` on the CPU, ties and NaN included, for beam search's choices.

Where the k largest values of a row are distinct from each other and from the rest, any selection gives the same
indices in the same order, and numpy's does. Where they tie (the end tokens' scores of every beam at +inf, after
``remove_invalid_values`` made a banned end token's -inf finite and ``exponential_decay_length_penalty`` then
overflowed it; equal -1e9 placeholder scores), which index comes first is the choice torch's topk makes, and that
decides which hypotheses transformers' beam search keeps. Torch (aten/src/ATen/native/TopKImpl.h) puts NaN above
every number and otherwise compares with ``>``; it runs ``std::partial_sort`` over the (value, index) pairs when
``k * 64 <= n``, else ``std::nth_element`` at k - 1 followed by ``std::sort`` of the first k - 1. Neither is
stable; their tie orders are those of libstdc++'s algorithms (heap selection; introselect with a median-of-three
pivot; introsort), which ``topk_indices`` replays step for step on the rows where a tie reaches the top k.
"""
from __future__ import annotations

import numpy as np

from ..._topk_kernel import topk_along

__all__ = ["topk_indices"]

_THRESHOLD = 16  # libstdc++'s _S_threshold: introsort leaves runs this short to the final insertion sort


def _before(a: float, b: float) -> bool:
    """torch's comparator for the largest: NaN before any number, else the greater first."""
    return (a != a and b == b) or a > b


def _lg(n: int) -> int:
    return n.bit_length() - 1


# libstdc++'s heap (stl_heap.h) on q[first:first + length], ordered by _before (the top is the last in order)

def _push_heap(q, first, hole, top, value):
    parent = (hole - 1) // 2
    while hole > top and _before(q[first + parent][0], value[0]):
        q[first + hole] = q[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    q[first + hole] = value


def _adjust_heap(q, first, hole, length, value):
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if _before(q[first + child][0], q[first + child - 1][0]):
            child -= 1
        q[first + hole] = q[first + child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        q[first + hole] = q[first + child - 1]
        hole = child - 1
    _push_heap(q, first, hole, top, value)


def _make_heap(q, first, last):
    length = last - first
    if length < 2:
        return
    parent = (length - 2) // 2
    while True:
        _adjust_heap(q, first, parent, length, q[first + parent])
        if parent == 0:
            return
        parent -= 1


def _pop_heap(q, first, last, result):
    value = q[result]
    q[result] = q[first]
    _adjust_heap(q, first, 0, last - first, value)


def _sort_heap(q, first, last):
    while last - first > 1:
        last -= 1
        _pop_heap(q, first, last, last)


def _heap_select(q, first, middle, last):
    _make_heap(q, first, middle)
    for i in range(middle, last):
        if _before(q[i][0], q[first][0]):
            _pop_heap(q, first, middle, i)


def _insertion_sort(q, first, last):
    for i in range(first + 1, last):
        value = q[i]
        if _before(value[0], q[first][0]):
            q[first + 1:i + 1] = q[first:i]
            q[first] = value
        else:
            _unguarded_linear_insert(q, i)


def _unguarded_linear_insert(q, last):
    value = q[last]
    while _before(value[0], q[last - 1][0]):
        q[last] = q[last - 1]
        last -= 1
    q[last] = value


def _move_median_to_first(q, result, a, b, c):
    va, vb, vc = q[a][0], q[b][0], q[c][0]
    if _before(va, vb):
        pick = b if _before(vb, vc) else c if _before(va, vc) else a
    else:
        pick = a if _before(va, vc) else c if _before(vb, vc) else b
    q[result], q[pick] = q[pick], q[result]


def _unguarded_partition_pivot(q, first, last):
    _move_median_to_first(q, first, first + 1, first + (last - first) // 2, last - 1)
    pivot = q[first][0]
    lo, hi = first + 1, last
    while True:
        while _before(q[lo][0], pivot):
            lo += 1
        hi -= 1
        while _before(pivot, q[hi][0]):
            hi -= 1
        if not lo < hi:
            return lo
        q[lo], q[hi] = q[hi], q[lo]
        lo += 1


def _nth_element(q, nth, first=0, last=None):
    last = len(q) if last is None else last
    if first == last or nth == last:
        return
    depth = 2 * _lg(last - first)
    while last - first > 3:
        if depth == 0:
            _heap_select(q, first, nth + 1, last)
            q[first], q[nth] = q[nth], q[first]
            return
        depth -= 1
        cut = _unguarded_partition_pivot(q, first, last)
        if cut <= nth:
            first = cut
        else:
            last = cut
    _insertion_sort(q, first, last)


def _sort(q, first, last):
    if first == last:
        return
    _introsort_loop(q, first, last, 2 * _lg(last - first))
    if last - first > _THRESHOLD:
        _insertion_sort(q, first, first + _THRESHOLD)
        for i in range(first + _THRESHOLD, last):
            _unguarded_linear_insert(q, i)
    else:
        _insertion_sort(q, first, last)


def _introsort_loop(q, first, last, depth):
    while last - first > _THRESHOLD:
        if depth == 0:
            _heap_select(q, first, last, last)
            _sort_heap(q, first, last)
            return
        depth -= 1
        cut = _unguarded_partition_pivot(q, first, last)
        _introsort_loop(q, cut, last, depth)
        last = cut


def _partial_sort(row: np.ndarray, k: int) -> list:
    """std::partial_sort's first k of ``row``: the heap of the first k, then each later value that would come before
    its top replacing it (only those are visited: numpy finds them a block at a time), then the heap sorted."""
    q = [(float(v), i) for i, v in enumerate(row[:k].tolist())]
    _make_heap(q, 0, k)
    n, block = len(row), 4096
    for start in range(k, n, block):
        part = row[start:start + block]
        worst = q[0][0]
        if worst != worst:  # NaN at the top: every value kept is NaN, and nothing comes before one
            break
        hits = np.flatnonzero(np.isnan(part) | (part > worst))
        for j in hits.tolist():
            value = float(part[j])
            if _before(value, q[0][0]):  # the heap's top only moves later in order: re-checked
                q.append((value, start + j))  # q[k]: the slot std::__pop_heap writes the old top to
                _pop_heap(q, 0, k, k)
                q.pop()
    _sort_heap(q, 0, k)
    return q


def _replayed(row: np.ndarray, k: int) -> np.ndarray:
    n = len(row)
    if k * 64 <= n:
        q = _partial_sort(row, k)
    else:
        q = [(float(v), i) for i, v in enumerate(row.tolist())]
        _nth_element(q, k - 1)
        _sort(q, 0, k - 1)
    return np.fromiter((i for _, i in q[:k]), np.int64, k)


def topk_indices(values: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) int64: the indices ``torch.topk(torch.from_numpy(values), k).indices`` holds on the CPU for
    ``values`` (rows, n), largest first, NaN first of all. Rows whose top k + 1 values are distinct numbers are
    ordered by the top-k kernel (float32: forgegrad._topk_kernel) or numpy (a long row: only the values at least
    its (k + 1)-th largest sorted, found by np.partition);
    the others (a tie reaching the top k, a NaN) replay torch's selection."""
    values = np.asarray(values)
    rows, n = values.shape
    if not 0 < k <= n:
        raise ValueError(f"topk_indices: k must be in [1, {n}], got {k}")
    m = min(k + 1, n)
    replay = np.isnan(values).any(axis=1)
    fast = topk_along(values, -1, m, True)  # float32: the stable order's first m (NaN rows differ: replayed)
    if fast is not None:
        order = fast[1]
    elif n < 4096 or n < 16 * m:
        order = np.argsort(-values, axis=-1, kind="stable")[:, :m]
    else:
        kth = np.partition(values, n - m, axis=-1)[:, n - m]
        order = np.zeros((rows, m), np.int64)
        for r in np.flatnonzero(~replay).tolist():
            row = values[r]
            idx = np.flatnonzero(row >= kth[r])
            order[r] = idx[np.argsort(-row[idx], kind="stable")[:m]]
    ranked = np.take_along_axis(values, order, axis=1)
    replay |= (ranked[:, 1:] == ranked[:, :-1]).any(axis=1)
    out = order[:, :k].copy()
    for r in np.flatnonzero(replay).tolist():
        out[r] = _replayed(values[r], k)
    return out
