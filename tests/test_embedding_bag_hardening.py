"""_C.embedding_bag called directly with hostile arguments and from several Python threads: each case runs in a
child interpreter (hardening_util), so a crash fails its test instead of the run. The kernels run without the GIL;
they must read the binding's checked copies of indices, bag boundaries and argmax positions, not the caller's
arrays, which another thread may rewrite meanwhile."""
import numpy as np
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F
from hardening_util import check_ok

_RACE = """
import threading
import numpy as np
import forgegrad
E = forgegrad._C.embedding_bag
w = np.ones((1000, 64), np.float32)
n = 200000
idx = np.zeros(n, np.int64)
st = np.array([0, n // 2, n], np.int64)
stop = False
def flip():  # an out-of-range index appears and disappears while the kernel runs without the GIL
    while not stop:
        idx[n - 1] = 10**11
        idx[n - 1] = 0
t = threading.Thread(target=flip)
t.start()
try:
    for it in range(150):
        try:
            {call}
        except IndexError:
            pass
finally:
    stop = True
    t.join()
print("OK")
"""

_CALLS = {
    "forward_max": "E.forward_f32(w, idx, st, None, 2, -1, np.empty((2, 64), np.float32), np.empty(2, np.int64), "
                   "np.empty((2, 64), np.int64))",
    "forward_sum": "E.forward_f32(w, idx, st, None, 0, -1, np.empty((2, 64), np.float32), np.empty(2, np.int64), "
                   "None)",
    "max_backward": "E.max_backward_f32(np.ones((2, 64), np.float32), np.full((2, 64), n - 1, np.int64), idx, "
                    "np.empty((1000, 64), np.float32))",
    "psw_backward": "E.psw_backward_f32(np.ones((2, 64), np.float32), w, idx, st, -1, np.empty(n, np.float32))",
}


@pytest.mark.parametrize("name", sorted(_CALLS))
def test_index_rewritten_by_another_thread_during_kernel_does_not_crash(name):
    check_ok(_RACE.replace("{call}", _CALLS[name]), timeout=120)


def test_hostile_direct_calls_raise_never_crash():
    """Wrong dtypes, ranks, strides (negative, Fortran), unaligned, byte-swapped, read-only outputs, aliasing,
    out-of-range indices / bag starts / argmax positions / padding_idx, zero sizes: a Python exception each."""
    check_ok("""
    import numpy as np
    import forgegrad
    E = forgegrad._C.embedding_bag

    def variants(a):
        out = [a, a.astype(np.float64), a.astype(np.int32), a.astype(bool), a.astype(np.uint8), a.astype(np.float32),
               a.astype(np.int64), a[::-1], a.reshape(-1), a.reshape(1, -1), a[..., None], a[:0], a[:-1],
               np.concatenate([a, a]), a.byteswap().view(a.dtype.newbyteorder()), np.array(0, a.dtype), None,
               [0, 1], "x", np.zeros((2, 0), a.dtype)]
        if a.ndim > 1:
            out.append(np.asfortranarray(a))
        out.append(np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape))  # unaligned
        r = a.copy()
        r.flags.writeable = False
        return out + [r]

    def call(f, *a):
        try:
            f(*a)
        except (TypeError, ValueError, IndexError, MemoryError):
            pass

    w = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    idx, st = np.array([0, 4, 2, 2, 1], np.int64), np.array([0, 2, 2, 5], np.int64)
    for mode in (0, 1, 2, 3, -1):
        base = dict(w=w, idx=idx, st=st, psw=None, out=None, counts=np.empty(3, np.int64),
                    arg=np.empty((3, 3), np.int64) if mode == 2 else None)
        for key, tmpl in (("w", w), ("idx", idx), ("st", st), ("psw", np.ones(5, np.float32)),
                          ("out", np.empty((3, 3), np.float32)), ("counts", base["counts"]),
                          ("arg", np.empty((3, 3), np.int64))):
            for v in variants(tmpl):
                a = dict(base, out=np.empty((3, 3), np.float32))
                a[key] = v
                call(E.forward_f32, a["w"], a["idx"], a["st"], a["psw"], mode, -1, a["out"], a["counts"], a["arg"])
        for pad in (-2, 5, 2**62, -2**62):
            call(E.forward_f32, w, idx, st, None, mode, pad, np.empty((3, 3), np.float32), np.empty(3, np.int64),
                 base["arg"])
    o = np.empty((3, 3), np.float32)
    call(E.forward_f32, w, idx, st, None, 0, -1, w[:3], np.empty(3, np.int64), None)  # out aliases weight
    ar = np.empty((3, 3), np.int64)
    call(E.forward_f32, w, idx, st, None, 2, -1, o, ar[0], ar)  # counts aliases arg
    for s in ([0], [0, 5], [1, 5], [0, 6, 5], [0, -1, 5], [0, 2**62, 5], [0, 3, 2, 5], [-5, 5]):
        for i in ([0, 5, 2, 2, 1], [-1, 0, 0, 0, 0], [2**62, 0, 0, 0, 0], [-2**63, 0, 0, 0, 0]):
            s_, i_ = np.array(s, np.int64), np.array(i, np.int64)
            B = len(s) - 1
            for mode in (0, 1, 2):
                call(E.forward_f32, w, i_, s_, None, mode, -1, np.empty((B, 3), np.float32), np.empty(B, np.int64),
                     np.empty((B, 3), np.int64) if mode == 2 else None)
            call(E.backward_f32, np.ones((B, 3), np.float32), i_, s_, None, True, None, -1,
                 np.empty((5, 3), np.float32))
            call(E.psw_backward_f32, np.ones((B, 3), np.float32), w, i_, s_, -1, np.empty(5, np.float32))
    G = np.ones((3, 3), np.float32)
    for freq in (None, np.zeros(5, np.int64), -np.ones(5, np.int64), np.ones(4, np.int64), np.ones(5, np.int32)):
        for psw in (None, np.ones(4, np.float32), np.ones(5, np.float64)):
            for gw in (np.empty((4, 3), np.float32), np.empty((5, 2), np.float32), np.empty((5, 3), np.float32).T, w):
                for pad in (-1, 4, 5, -3):
                    call(E.backward_f32, G, idx, st, psw, bool(pad % 2), freq, pad, gw)
    for a in (np.full((3, 3), 5, np.int64), np.full((3, 3), -2, np.int64), np.full((3, 3), 2**62, np.int64),
              np.full((2, 3), 0, np.int64), np.zeros((3, 3), np.int32), np.zeros((3, 3), np.int64)[::-1]):
        for i_ in (idx, idx[:0], np.array([0, 9, 0, 0, 0]), np.array([-1, 0, 0, 0, 0])):
            for gw in (np.empty((5, 3), np.float32), np.empty((0, 3), np.float32), np.empty((5, 3), np.float32)[::-1]):
                call(E.max_backward_f32, G, a, i_, gw)
    for V, D in ((0, 3), (5, 0), (0, 0)):
        ww = np.zeros((V, D), np.float32)
        for i_, s_ in ((np.zeros(0, np.int64), np.array([0])), (np.zeros(0, np.int64), np.array([0, 0, 0])),
                       (np.array([0, 1]), np.array([0, 2]))):
            B = len(s_) - 1
            for mode in (0, 1, 2):
                call(E.forward_f32, ww, i_, s_, None, mode, -1, np.empty((B, D), np.float32), np.empty(B, np.int64),
                     np.empty((B, D), np.int64) if mode == 2 else None)
            call(E.backward_f32, np.ones((B, D), np.float32), i_, s_, None, True, None, -1,
                 np.empty((V, D), np.float32))
            call(E.max_backward_f32, np.ones((B, D), np.float32), np.zeros((B, D), np.int64), i_,
                 np.empty((V, D), np.float32))
            call(E.psw_backward_f32, np.ones((B, D), np.float32), ww, i_, s_, -1, np.empty(len(i_), np.float32))
    huge = np.empty((2**40, 0), np.float32)  # no memory, 2**40 rows
    call(E.backward_f32, np.ones((0, 0), np.float32), np.zeros(0, np.int64), np.array([0]), None, False, None, -1,
         huge)
    call(E.forward_f32, huge, np.array([2**39]), np.array([0, 1]), None, 2, -1, np.empty((1, 0), np.float32),
         np.empty(1, np.int64), np.empty((1, 0), np.int64))
    call(E.max_backward_f32, np.ones((1, 0), np.float32), np.zeros((1, 0), np.int64), np.array([2**39]), huge)
    for f in (E.forward_f32, E.backward_f32, E.max_backward_f32, E.psw_backward_f32):
        call(f)
        call(f, *([None] * 9))
        call(f, *([w] * 9))
    print("OK")
    """, timeout=300)


def _fwd_bwd_bits(w, idx, off, psw):
    out = []
    for mode in ("sum", "mean", "max"):
        wt = fg.tensor(w, requires_grad=True)
        pt = fg.tensor(psw, requires_grad=True) if mode == "sum" else None
        y = F.embedding_bag(fg.tensor(idx), wt, fg.tensor(off), mode=mode, per_sample_weights=pt, padding_idx=3)
        (y * y).sum().backward()
        out += [y.numpy().tobytes(), wt.grad.numpy().tobytes()]
        if pt is not None:
            out.append(pt.grad.numpy().tobytes())
    return out


def test_concurrent_python_threads_get_the_same_bits():
    """Calls from 4 Python threads at once (each kernel also splits over the pool) give the bits of a lone call."""
    import threading
    rng = np.random.default_rng(3)
    w = rng.standard_normal((200, 33)).astype(np.float32)
    idx = rng.integers(0, 200, size=5000)
    off = np.sort(rng.integers(0, 5000, size=120))
    off[0] = 0
    psw = rng.standard_normal(idx.size).astype(np.float32)
    want = _fwd_bwd_bits(w, idx, off, psw)
    got, errors = [None] * 4, []

    def work(i):
        try:
            for _ in range(3):
                got[i] = _fwd_bwd_bits(w, idx, off, psw)
                assert got[i] == want
        except Exception as e:  # reported below: an assertion in a thread does not fail the test by itself
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(g == want for g in got)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype", [fg.float32, fg.float64])
def test_zero_width_table_with_huge_row_count(mode, dtype):
    """A (2**40, 0) table holds no memory: forward and backward work (the float32 backward grouped positions by row
    in an O(num_embeddings) array first, a MemoryError)."""
    w = fg.zeros(2**40, 0, dtype=dtype, requires_grad=True)
    y = F.embedding_bag(fg.tensor([2**39, 5, 5]), w, fg.tensor([0, 1]), mode=mode)
    y.sum().backward()
    assert y.shape == (2, 0) and w.grad.shape == (2**40, 0)
