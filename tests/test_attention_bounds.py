"""The attention bindings' bounds checks hold for what the kernels then read: a mask row stride whose span
overflows int64 is refused (it used to wrap round to a small span that passed the offsets' check), and the
mask offsets, block tables and lengths a kernel reads are the ones checked, even while another thread rewrites
the caller's arrays (the kernels run without the GIL; they used to read the caller's arrays again, past the
check). The racing cases run in a child interpreter, so a read outside an array is a failed test, not a dead
run. tests/fuzz/test_fuzz_attention.py stresses every entry point against a reference."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import forgegrad
from forgegrad import _C
from forgegrad.kernels import attention as KA

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(forgegrad.__file__)))


def _qkv(n, L, S, E):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, L, E)).astype(np.float32), rng.standard_normal((n, S, E)).astype(np.float32),
            rng.standard_normal((n, S, E)).astype(np.float32))


# (L - 1) * stride wraps round to 0, 0 and -2: spans the old check took for S or S - 2 elements
@pytest.mark.parametrize("L, stride", [(5, 1 << 62), (9, 1 << 61), (3, (1 << 63) - 1)])
def test_mask_row_stride_that_overflows_is_refused(L, stride):
    n, S, E = 2, 5, 8
    q, k, v = _qkv(n, L, S, E)
    mask = np.zeros(4 * L * S, np.float32)
    offsets = np.zeros(n, np.int64)
    out, lse = np.empty((n, L, E), np.float32), np.empty((n, L), np.float32)
    with pytest.raises(ValueError, match="mask_row_stride .* reads past the mask"):
        _C.attention.attention_forward(q, k, v, 0.5, False, mask, offsets, stride, out, lse)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    with pytest.raises(ValueError, match="mask_row_stride .* reads past the mask"):
        _C.attention.attention_backward(q, k, v, out, out, lse, 0.5, False, mask, offsets, stride, dq, dk, dv)


def test_mask_row_stride_past_the_mask_is_refused_and_one_row_takes_any_stride():
    n, L, S, E = 1, 4, 6, 8
    q, k, v = _qkv(n, L, S, E)
    out, lse = np.empty((n, L, E), np.float32), np.empty((n, L), np.float32)
    mask = np.zeros(3 * S + S, np.float32)  # rows 0..3 at stride S: exactly the buffer
    _C.attention.attention_forward(q, k, v, 0.5, False, mask, np.zeros(1, np.int64), S, out, lse)
    with pytest.raises(ValueError, match="reads past the mask of 24 elements"):
        _C.attention.attention_forward(q, k, v, 0.5, False, mask, np.zeros(1, np.int64), S + 1, out, lse)
    # a single query row never steps by the stride
    q1, out1, lse1 = q[:, :1].copy(), out[:, :1].copy(), lse[:, :1].copy()
    _C.attention.attention_forward(q1, k, v, 0.5, False, mask[:S], np.zeros(1, np.int64), 1 << 62, out1, lse1)


def test_prepare_mask_refuses_a_mask_axis_longer_than_the_batch():
    # numpy's broadcast of the offsets used to fail instead, with a message about "remapped shapes"
    with pytest.raises(ValueError, match=r"mask of shape \(3, 4, 5\) does not broadcast to \(1, 4, 5\)"):
        KA.prepare_mask(np.zeros((3, 4, 5), bool), (1,), 4, 5)
    m = KA.prepare_mask(np.zeros((4, 1), bool), (2,), 4, 5)  # a column broadcast over the keys still works
    assert m.data.shape == (1, 4, 5) and m.row_stride == 5 and m.offsets.tolist() == [0, 0]


def test_paged_kv_refuses_a_new_key_outside_the_pools_before_writing_it():
    from forgegrad.models.hf._decode import PagedKV
    blocks, H, BT, D = 4, 2, 4, 8
    keys = [np.zeros((blocks, H, BT, D), np.float32)]
    values = [np.zeros((blocks, H, BT, D), np.float32)]
    q = np.ones((2, H, 1, D), np.float32)
    kv = np.ones((2, H, D), np.float32)
    for tables, lengths, match in (([[0, -1], [1, 2]], [6, 3], r"new keys \[-1, 1\] must be blocks"),
                                   ([[0, 4], [1, 2]], [6, 3], r"new keys \[4, 1\] must be blocks"),
                                   ([[0, 3], [1, 2]], [9, 3], r"lengths must be in \[1, 8\]"),
                                   ([[0, 3], [1, 2]], [0, 3], r"lengths must be in \[1, 8\]"),
                                   ([[0, 3], [1, 2]], [1], "tables must be")):
        with pytest.raises(ValueError, match=match):
            PagedKV(keys, values, np.array(tables), np.array(lengths)).attend(0, q, kv, kv, 0.5)
        assert not keys[0].any() and not values[0].any()  # numpy would have taken -1 as block 3: nothing written
    out = PagedKV(keys, values, np.array([[0, 3], [1, 2]]), np.array([6, 3])).attend(0, q, kv, kv, 0.5)
    assert out.shape == (2, H * D) and keys[0][3, :, 1].all() and keys[0][1, :, 2].all()


_RACE = textwrap.dedent("""
    import sys, threading
    import numpy as np
    from forgegrad import _C
    forgegrad_threads = int(sys.argv[1])
    import forgegrad
    forgegrad.set_num_threads(forgegrad_threads)
    rng = np.random.default_rng(0)
    stop = threading.Event()

    def flip(a, index, good, bad):  # rewrites one checked entry while the kernels run
        while not stop.is_set():
            a[index] = bad
            a[index] = good

    def race(what, target, args, array, index, good, bad, calls=300):
        print(what, file=sys.stderr, flush=True)  # the last one named is where a crash happened
        t = threading.Thread(target=flip, args=(array, index, good, bad))
        t.start()
        refused = 0
        try:
            for _ in range(calls):
                try:
                    target(*args)
                except ValueError:
                    refused += 1  # the bad value was there at the check: a clear error
        finally:
            stop.set()
            t.join()
            stop.clear()
        return refused

    # paged decode: a used block id flipping to a far block while the kernel reads the row
    B, H, rep, D, BT, width, blocks = 2, 2, 2, 64, 16, 64, 130
    q = rng.standard_normal((B, H, rep, D)).astype(np.float32)
    pool = rng.standard_normal((blocks, H, BT, D)).astype(np.float32)
    tables = rng.integers(0, blocks, (B, width)).astype(np.int64)
    lengths = np.full(B, width * BT, np.int64)
    out = np.empty_like(q)
    race("paged_decode: a block id", _C.attention.paged_decode, (q, pool, pool, tables, lengths, 0.1, 0.0, 0, out),
         tables, (1, width - 1),
         tables[1, width - 1], 1 << 40)
    # ... and a length flipping past the table
    race("paged_decode: a length", _C.attention.paged_decode, (q, pool, pool, tables, lengths, 0.1, 0.0, 0, out),
         lengths, 1, width * BT, 1 << 40)

    # fused attention: a mask offset flipping far past the mask
    n, L, S, E = 4, 300, 300, 64
    qa = rng.standard_normal((n, L, E)).astype(np.float32)
    mask = np.zeros(L * S, np.float32)
    offsets = np.zeros(n, np.int64)
    o, lse = np.empty((n, L, E), np.float32), np.empty((n, L), np.float32)
    race("attention_forward: a mask offset", _C.attention.attention_forward,
         (qa, qa, qa, 0.1, False, mask, offsets, S, o, lse), offsets, n - 1, 0, 1 << 40, calls=60)
    print("ok")
""")


@pytest.mark.parametrize("threads", [1, 2])
def test_checked_indices_are_the_ones_read_while_another_thread_writes_them(threads):
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _RACE, str(threads)], capture_output=True, text=True, env=env,
                       timeout=240)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (
        f"the child ended with {r.returncode} (a negative status is a signal: -11 a segfault)\n{r.stderr[-2000:]}")
