"""The CUDA runtime: the caching allocator's logic (on the CPU, over malloc), the API without a
device, and (skipped without a GPU, with the reason) device arrays, array kernels and errors."""
import threading

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.cuda as fcuda

HostAllocator = fg._C.allocator.HostCachingAllocator
MiB = 1 << 20


def test_sizes_round_up_to_512_bytes():
    a = HostAllocator()
    assert fg._C.allocator.ROUND == 512
    assert [fg._C.allocator.round_size(n) for n in (1, 511, 512, 513, 4096)] == [512, 512, 512, 1024, 4096]
    p = a.allocate(700)
    assert a.block_size(p) == 1024
    s = a.stats()
    assert (s["allocated"], s["requested"], s["reserved"], s["raw_allocs"]) == (1024, 700, 2 * MiB, 1)
    assert a.allocate(0) == 0  # a 0-byte request owns nothing
    a.free(0)
    a.free(p)
    assert a.stats()["allocated"] == 0 and a.stats()["requested"] == 0


def test_freed_block_is_reused_best_fit():
    a = HostAllocator()
    blocks = [a.allocate(n) for n in (4096, 1024, 8192, 1024)]
    a.free(blocks[0])
    a.free(blocks[2])
    # 3000 bytes fits both the 4096 and the 8192 hole: the smaller is taken
    assert a.allocate(3000) == blocks[0]
    assert a.allocate(8000) == blocks[2]
    assert a.stats()["raw_allocs"] == 1


def test_split_and_merge_of_neighbours():
    a = HostAllocator()
    p, q, r = a.allocate(1024), a.allocate(1024), a.allocate(1024)
    assert q == p + 1024 and r == q + 1024  # split off the front of one 2 MiB segment
    a.free(p)
    a.free(r)  # r merges with the free tail of the segment
    a.free(q)  # q merges with both: the segment is one free block again
    big = a.allocate(MiB)  # the largest small request fits only the whole merged segment
    assert big == p
    s = a.stats()
    assert s["raw_allocs"] == 1 and s["segments"] == 1


def test_small_and_large_pools_are_separate():
    a = HostAllocator()
    small = a.allocate(MiB)
    large = a.allocate(MiB + 1)  # > small_limit: its own segment rounded to 2 MiB
    s = a.stats()
    assert s["raw_allocs"] == 2 and s["reserved"] == 4 * MiB
    a.free(large)
    p = a.allocate(1000)  # a small request does not take the free large segment
    assert not (large <= p < large + 2 * MiB)
    a.free(small)
    a.free(p)


def test_large_block_split_only_for_a_large_rest():
    a = HostAllocator()
    p = a.allocate(10 * MiB)
    a.free(p)
    q = a.allocate(3 * MiB)  # the rest (7 MiB) is worth keeping as a block of its own
    assert q == p and a.block_size(q) == 3 * MiB
    r = a.allocate(7 * MiB)
    assert r == p + 3 * MiB and a.stats()["raw_allocs"] == 1
    a.free(q)
    a.free(r)
    s = a.allocate(int(9.5 * MiB))  # rest 0.5 MiB <= small_limit: not split, the block keeps 10 MiB
    assert a.block_size(s) == 10 * MiB


def test_stats_peak_and_reset():
    a = HostAllocator()
    ps = [a.allocate(100_000) for _ in range(4)]
    peak = a.stats()["peak_allocated"]
    assert peak == 4 * fg._C.allocator.round_size(100_000)
    for p in ps[1:]:
        a.free(p)
    s = a.stats()
    assert s["peak_allocated"] == peak and s["allocated"] == peak // 4
    assert (s["num_allocs"], s["num_frees"], s["live_blocks"]) == (4, 3, 1)
    a.reset_peak()
    assert a.stats()["peak_allocated"] == peak // 4


def test_empty_cache_returns_only_unused_segments():
    a = HostAllocator()
    keep = a.allocate(1000)
    gone = a.allocate(5 * MiB)
    a.free(gone)
    assert a.raw_outstanding == 2 * MiB + 6 * MiB
    a.empty_cache()
    s = a.stats()
    assert s["reserved"] == 2 * MiB and s["raw_frees"] == 1 and a.raw_outstanding == 2 * MiB
    a.free(keep)
    a.empty_cache()
    assert a.stats()["reserved"] == 0 and a.raw_outstanding == 0


def test_out_of_memory_frees_the_cache_and_retries_once():
    a = HostAllocator(limit=8 * MiB)
    p = a.allocate(5 * MiB)  # a 6 MiB segment
    a.free(p)  # cached: 6 of the 8 MiB are held
    q = a.allocate(7 * MiB)  # needs 8 MiB: the raw allocation fails, the cache is freed, the retry succeeds
    s = a.stats()
    assert s["num_ooms"] == 1 and s["raw_frees"] == 1 and s["reserved"] == 8 * MiB
    with pytest.raises(MemoryError, match=r"tried to allocate 3000000 bytes.*allocated 8388608 bytes.*reserved"):
        a.allocate(3_000_000)
    assert isinstance(fcuda.OutOfMemoryError("x"), MemoryError)
    with pytest.raises(fcuda.OutOfMemoryError):
        a.allocate(1 << 62)
    a.free(q)
    assert a.allocate(1000) != 0  # the allocator still works after a failure


def test_foreign_pointer_is_an_error():
    a = HostAllocator()
    p = a.allocate(100)
    with pytest.raises(ValueError, match="does not own"):
        a.free(p + 512)
    a.free(p)
    with pytest.raises(ValueError, match="does not own"):
        a.free(p)  # double free


def test_concurrent_use_from_native_threads():
    # threads allocate, fill with their id, check and free at once: no block is handed out twice
    a = HostAllocator(small_limit=4096, small_segment=16384, large_round=4096)
    assert a.stress(threads=4, iterations=3000, max_bytes=20000, seed=3) == 0
    s = a.stats()
    assert s["allocated"] == 0 and s["live_blocks"] == 0 and s["num_allocs"] == s["num_frees"]


def test_concurrent_use_from_python_threads():
    a = HostAllocator()
    live = []
    lock = threading.Lock()

    def work(seed):
        rng = np.random.default_rng(seed)
        mine = []
        for _ in range(300):
            n = int(rng.integers(1, 3 * MiB))
            mine.append((a.allocate(n), n))
            if len(mine) > 4:
                a.free(mine.pop(0)[0])
        with lock:
            live.extend(mine)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = sorted((p, p + a.block_size(p)) for p, _ in live)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))  # no two live blocks overlap
    assert a.stats()["live_blocks"] == len(live)
    for p, _ in live:
        a.free(p)
    a.empty_cache()
    assert a.raw_outstanding == 0


# ---- without a device -----------------------------------------------------------------------------
no_gpu = pytest.mark.skipif(fcuda.is_available(), reason="checks the no-device errors; this machine has a GPU")


@no_gpu
def test_every_call_raises_the_clear_error_without_a_device():
    reason = fcuda.unavailable_reason()
    assert reason
    x = np.zeros(3, np.float32)
    calls = [fcuda.synchronize, fcuda.current_device, lambda: fcuda.set_device(0), fcuda.memory_allocated,
             fcuda.max_memory_allocated, fcuda.memory_reserved, fcuda.max_memory_reserved, fcuda.memory_stats,
             fcuda.reset_peak_memory_stats, fcuda.empty_cache, lambda: fcuda.empty((2, 3)),
             lambda: fcuda.zeros(3, np.int64), lambda: fcuda.full(3, 1.5), lambda: fcuda.to_device(x),
             lambda: fcuda.to_host(x)]
    for call in calls:
        with pytest.raises(RuntimeError, match="CUDA is not available") as e:
            call()
        assert reason in str(e.value)
    # the pure queries answer
    assert fcuda.device_count() == 0 and fcuda.is_available() is False
    if fcuda.is_built():  # the raw binding says the same
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            fg._C.cuda.DeviceArray([2, 3])
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            fg._C.cuda.DeviceArray.from_numpy(x)
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            fg._C.cuda.memory_stats()


# ---- the index math of the array kernels and the shape ops' geometry, checked on the CPU ----------
# _C.testing runs the kernels' own index functions (cpp/include/forgegrad/strided_index.h) on the CPU.
def _numpy_as_strided(a, shape, strides, offset=0):
    flat = np.ascontiguousarray(a).reshape(-1)
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=tuple(shape),
                                           strides=[s * flat.itemsize for s in strides])
    return view.copy()


@pytest.fixture
def numpy_strided(monkeypatch):
    # forgegrad.cuda's shape helpers over the strided-copy kernel's index math, on numpy arrays
    monkeypatch.setattr(fcuda, "as_strided", fg._C.testing.strided_copy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_], ids=str)
def test_strided_copy_index_math_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    src = (rng.integers(0, 100, 400) % 7).astype(dtype)
    cases = [((3, 4), (8, 2), 5), ((2, 3, 4), (12, 4, 1), 0), ((2, 3, 4), (1, 0, 2), 3), ((5,), (-3,), 20),
             ((4, 1, 6), (-60, 7, -2), 390), ((), (), 17), ((0, 3), (5, 1), 0),
             ((2, 2, 2, 2, 2), (100, 50, 25, 10, 1), 0), ((3, 4, 5), (20, 5, 1), 7)]  # the last: one dim
    for shape, strides, offset in cases:
        np.testing.assert_array_equal(fg._C.testing.strided_copy(src, shape, strides, offset),
                                      _numpy_as_strided(src, shape, strides, offset), err_msg=str((shape, strides)))
    with pytest.raises(IndexError, match="outside"):
        fg._C.testing.strided_copy(src, (5,), (100,), 0)


@pytest.mark.parametrize("shape,to", [((4, 3, 5), (1, 3, 1)), ((4, 3, 5), (5,)), ((2, 7), ()), ((6, 1, 4), (6, 1, 4)),
                                      ((3, 0, 2), (3, 1, 2)), ((2, 3, 4, 5), (2, 1, 4, 1))])
def test_sum_to_shape_index_math_matches_numpy(shape, to):
    g = np.random.default_rng(1).standard_normal(shape)
    lead = len(shape) - len(to)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(to) if n == 1 and shape[lead + i] != 1)
    want = g.sum(axis=axes, keepdims=True).reshape(to)
    np.testing.assert_allclose(fg._C.testing.sum_to_shape(g, to), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="cannot sum"):
        fg._C.testing.sum_to_shape(g, (7,) * len(shape))


BASIC_KEYS = [1, -1, (slice(1, None), 2), (Ellipsis, slice(None, None, 2)), (None, 1, slice(None, 3)),
              (slice(None, None, -1),), (slice(4, 0, -2), Ellipsis, None), (0, 0, 0), (slice(7, 9),),
              (slice(None), slice(None), slice(1, 6, 3)), (), (4, Ellipsis, 6), (-1, -1, -1)]


@pytest.mark.parametrize("key", BASIC_KEYS, ids=[repr(k) for k in BASIC_KEYS])
def test_basic_index_geometry_matches_numpy(numpy_strided, key):
    x = np.arange(5 * 4 * 7, dtype=np.int64).reshape(5, 4, 7)
    np.testing.assert_array_equal(fcuda.getitem(x, key), x[key])


def test_advanced_index_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="advanced indexing"):
        fcuda.basic_index((3, 4), (slice(None), np.array([0, 1])))
    with pytest.raises(NotImplementedError, match="bool"):
        fcuda.basic_index((3, 4), True)
    with pytest.raises(IndexError):
        fcuda.basic_index((3, 4), (5,))


def test_permute_expand_split_geometry(numpy_strided):
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    for dims in [(2, 0, 1), (1, 2, 0), (0, 1, 2)]:
        np.testing.assert_array_equal(fcuda.permute(x, dims), np.transpose(x, dims))
    y = x[:, :1, :]
    np.testing.assert_array_equal(fcuda.expand(np.ascontiguousarray(y), (4, 2, 3, 5)), np.broadcast_to(y, (4, 2, 3, 5)))
    with pytest.raises(ValueError, match="cannot expand"):
        fcuda.expand(x, (2, 4, 5))
    with pytest.raises(ValueError, match="permutation"):
        fcuda.permute(x, (0, 0, 1))
    for got, want in zip(fcuda.split(x, [1, 3, 1], 2), np.split(x, [1, 4], axis=2)):
        np.testing.assert_array_equal(got, want)


def test_shape_ops_have_cuda_functions():
    from forgegrad.ops import registry
    for name in ("reshape", "permute", "expand", "getitem", "cat", "stack", "clone", "cast", "relu"):
        assert "cuda" in registry.get(name).functions, name
