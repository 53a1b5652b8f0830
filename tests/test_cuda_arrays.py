"""DeviceArray, the array kernels, the allocator on the device and CUDA errors, against numpy.
Every test needs a GPU and skips with the reason without one (CI has none); the same logic without a
device is in tests/test_cuda_runtime.py."""
import os
import subprocess
import sys

import numpy as np
import pytest

import forgegrad.cuda as fcuda

pytestmark = pytest.mark.skipif(not fcuda.is_available(),
                                reason=f"no CUDA device on this machine ({fcuda.unavailable_reason()})")

ODD_SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 3, 5), (1, 4, 1, 3), (0, 3), (5, 1, 2, 1, 3)]


def _sample(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 100, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", fcuda.DTYPES, ids=str)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
def test_round_trip_keeps_values_and_dtype(dtype, shape):
    x = _sample(shape, dtype)
    d = fcuda.to_device(x)
    assert (d.shape, d.dtype, d.ndim, d.size, d.nbytes) == (x.shape, x.dtype, x.ndim, x.size, x.nbytes)
    assert d.device == fcuda.current_device()
    back = fcuda.to_host(d)
    assert back.dtype == x.dtype
    np.testing.assert_array_equal(back, x)


def test_non_contiguous_and_unsupported_inputs():
    x = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2].T
    np.testing.assert_array_equal(fcuda.to_device(x).numpy(), x)
    with pytest.raises(TypeError, match="not supported on CUDA"):
        fcuda.to_device(np.zeros(3, np.float16))
    with pytest.raises(TypeError, match="not supported on CUDA"):
        fcuda.to_device(np.zeros(3, np.complex64))


def test_device_array_is_not_a_numpy_array():
    d = fcuda.zeros((2, 3))
    with pytest.raises(TypeError, match=r"cannot be read as a numpy array; use \.cpu\(\)"):
        np.asarray(d)
    with pytest.raises(TypeError, match="cannot be read as a numpy array"):
        np.add(d, 1)


def test_reshape_is_a_view_sharing_the_block():
    x = np.arange(24, dtype=np.float32)
    d = fcuda.to_device(x)
    v = d.reshape(2, -1, 3)
    assert v.shape == (2, 4, 3) and v.shares_storage(d) and v.data_ptr == d.data_ptr
    v.fill(1.5)  # writes through the view
    np.testing.assert_array_equal(d.numpy(), np.full(24, 1.5, np.float32))
    del d  # the view keeps the block alive
    np.testing.assert_array_equal(v.numpy(), np.full((2, 4, 3), 1.5, np.float32))
    with pytest.raises(ValueError, match="cannot reshape"):
        v.reshape(5, 5)
    with pytest.raises(ValueError, match="only one dimension"):
        v.reshape(-1, -1)


@pytest.mark.parametrize("dtype", fcuda.DTYPES, ids=str)
def test_empty_zeros_full_fill(dtype):
    assert fcuda.empty((3, 4), dtype).dtype == dtype
    np.testing.assert_array_equal(fcuda.zeros((3, 4), dtype).numpy(), np.zeros((3, 4), dtype))
    np.testing.assert_array_equal(fcuda.full((5,), 3, dtype).numpy(), np.full(5, 3, dtype))
    with pytest.raises(ValueError, match="negative"):
        fcuda.empty((2, -1), dtype)


def test_copy_between_arrays():
    x = _sample((4, 5), np.float32)
    src, dst = fcuda.to_device(x), fcuda.empty((4, 5))
    dst.copy_(src)
    np.testing.assert_array_equal(dst.numpy(), x)
    as_int = fcuda.empty((4, 5), np.int32)
    as_int.copy_(src)  # a dtype difference is a cast
    np.testing.assert_array_equal(as_int.numpy(), x.astype(np.int32))
    with pytest.raises(ValueError, match="shape"):
        dst.copy_(fcuda.empty((5, 4)))
    np.testing.assert_array_equal(fcuda.clone(src).numpy(), x)


@pytest.mark.parametrize("src", fcuda.DTYPES, ids=str)
@pytest.mark.parametrize("dst", fcuda.DTYPES, ids=str)
def test_cast_matches_numpy(src, dst):
    x = _sample((3, 7), src)
    if np.dtype(src).kind == "f":
        x = (x * 20).astype(src)  # values in every target's range, with fractions and negatives
        if np.dtype(dst).kind in "ub":
            x = np.abs(x)
        x[0, 0] = 0
    got = fcuda.cast(fcuda.to_device(x), dst).numpy()
    assert got.dtype == dst
    np.testing.assert_array_equal(got, x.astype(dst))


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.float64], ids=str)
@pytest.mark.parametrize("shape,dims", [((3, 5, 7, 2), (2, 0, 3, 1)), ((1, 9), (1, 0)), ((4, 1, 3), (2, 1, 0)),
                                        ((2, 3, 4, 5, 6), (4, 3, 2, 1, 0))])
def test_permute_matches_numpy(dtype, shape, dims):
    x = _sample(shape, dtype)
    np.testing.assert_array_equal(fcuda.permute(fcuda.to_device(x), dims).numpy(), np.transpose(x, dims))


@pytest.mark.parametrize("shape,to", [((3, 1), (3, 6)), ((1, 4), (2, 5, 3, 4)), ((), (2, 3)), ((2, 1, 3), (2, 7, 3))])
def test_expand_and_its_gradient_match_numpy(shape, to):
    x = _sample(shape, np.float32)
    got = fcuda.expand(fcuda.to_device(x), to).numpy()
    np.testing.assert_array_equal(got, np.broadcast_to(x, to))
    g = _sample(to, np.float32, seed=1)
    lead = len(to) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and to[lead + i] != 1)
    want = g.sum(axis=axes, keepdims=True).reshape(shape)
    np.testing.assert_allclose(fcuda.sum_to_shape(fcuda.to_device(g), shape).numpy(), want, rtol=1e-6, atol=1e-6)


KEYS = [1, -1, (slice(1, None), 2), (Ellipsis, slice(None, None, 2)), (None, 1, slice(None, 3)),
        (slice(None, None, -1),), (slice(4, 0, -2), Ellipsis, None), (0, 0, 0), (slice(7, 9),),
        (slice(None), slice(None), slice(1, 6, 3)), (4, Ellipsis, 6), (-1, -1, -1)]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k) for k in KEYS])
def test_getitem_and_setitem_match_numpy(key):
    x = _sample((5, 4, 7), np.float64)
    d = fcuda.to_device(x)
    np.testing.assert_array_equal(fcuda.getitem(d, key).numpy(), x[key])
    dst = fcuda.zeros((5, 4, 7), np.float64)
    sel = np.asarray(x[key])
    fcuda.setitem(dst, key, fcuda.to_device(sel))
    want = np.zeros_like(x)
    want[key] = sel
    np.testing.assert_array_equal(dst.numpy(), want)


def test_strided_copy_checks_bounds():
    d = fcuda.to_device(np.arange(10, dtype=np.float32))
    with pytest.raises(IndexError, match="outside"):
        fcuda.as_strided(d, (4,), (3,), 1)  # reads element 10
    with pytest.raises(IndexError, match="outside"):
        fcuda.as_strided(d, (2,), (-1,), 0)
    np.testing.assert_array_equal(fcuda.as_strided(d, (3, 2), (3, 1), 1).numpy(), [[1, 2], [4, 5], [7, 8]])


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_], ids=str)
def test_cat_matches_numpy(axis, dtype):
    shapes = [(3, 5, 7), (3, 5, 7), (3, 5, 7)]
    xs = []
    for i, s in enumerate(shapes):
        s = list(s)
        s[axis] = [1, 4, 2][i]
        xs.append(_sample(tuple(s), dtype, seed=i))
    got = fcuda.cat([fcuda.to_device(x) for x in xs], axis).numpy()
    np.testing.assert_array_equal(got, np.concatenate(xs, axis))
    pieces = fcuda.split(fcuda.to_device(np.concatenate(xs, axis)), [x.shape[axis] for x in xs], axis % 3)
    for p, x in zip(pieces, xs):
        np.testing.assert_array_equal(p.numpy(), x)


def test_cat_errors_name_the_mismatch():
    a, b = fcuda.zeros((2, 3)), fcuda.zeros((2, 4))
    with pytest.raises(ValueError, match="does not match"):
        fcuda.cat([a, b], 0)
    with pytest.raises(ValueError, match="does not match"):
        fcuda.cat([a, fcuda.zeros((2, 3), np.int64)], 0)
    with pytest.raises(ValueError, match="out of range"):
        fcuda.cat([a], 2)


def test_shape_ops_forward_and_backward_match_cpu():
    # each shape op's cuda Function against its CPU Function, on the registry's samples (basic keys)
    from forgegrad.ops import registry
    for name in ("reshape", "permute", "expand", "getitem", "cat", "stack", "clone"):
        op = registry.get(name)
        cpu_fn, cuda_fn = op.functions["cpu"], op.functions["cuda"]
        for sample in op.samples():
            if name == "getitem":
                key = sample.args[1]
                if any(isinstance(k, np.ndarray) for k in (key if isinstance(key, tuple) else (key,))):
                    with pytest.raises(NotImplementedError, match="advanced indexing"):
                        cuda_fn.forward(cuda_fn.__new__(cuda_fn), fcuda.to_device(sample.args[0]), key)
                    continue
                arrays, rest = [sample.args[0]], sample.args[1:]
            else:
                arrays = [a for a in sample.args if isinstance(a, np.ndarray)]
                rest = sample.args[len(arrays):]
            cctx, dctx = cpu_fn.__new__(cpu_fn), cuda_fn.__new__(cuda_fn)
            want = cpu_fn.forward(cctx, *arrays, *rest, **sample.kwargs)
            got = cuda_fn.forward(dctx, *[fcuda.to_device(a) for a in arrays], *rest, **sample.kwargs)
            np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{name} {sample.name}")
            g = _sample(want.shape, np.float32, seed=5)
            want_g = cpu_fn.backward(cctx, g)
            got_g = cuda_fn.backward(dctx, fcuda.to_device(g))
            want_g = want_g if isinstance(want_g, tuple) else (want_g,)
            got_g = got_g if isinstance(got_g, tuple) else (got_g,)
            for w, d in zip(want_g, got_g):
                np.testing.assert_allclose(d.numpy(), w, rtol=1e-6, atol=1e-6, err_msg=f"{name} {sample.name} grad")


def test_allocator_statistics_on_the_device():
    fcuda.synchronize()
    fcuda.empty_cache()
    base = fcuda.memory_allocated()
    a = fcuda.empty((1000,), np.float32)  # 4000 bytes: a 4096-byte block
    assert fcuda.memory_allocated() == base + 4096
    assert fcuda.memory_reserved() >= fcuda.memory_allocated()
    fcuda.reset_peak_memory_stats()
    b = fcuda.empty((3 << 20,), np.uint8)
    peak = fcuda.max_memory_allocated()
    assert peak >= base + 4096 + (3 << 20)
    ptr = b.data_ptr
    del b
    assert fcuda.memory_allocated() == base + 4096 and fcuda.max_memory_allocated() == peak
    c = fcuda.empty((3 << 20,), np.uint8)  # the freed block is reused at once (stream order)
    assert c.data_ptr == ptr
    del a, c
    reserved = fcuda.memory_reserved()
    fcuda.empty_cache()
    assert fcuda.memory_reserved() < reserved
    stats = fcuda.memory_stats()
    assert stats["raw_frees"] >= 1 and stats["allocated"] == base


def test_out_of_memory_raises_memory_error_naming_the_bytes():
    with pytest.raises(fcuda.OutOfMemoryError, match=r"tried to allocate 4000000000000000 bytes") as e:
        fcuda.empty((1_000_000_000_000_000,), np.float32)
    assert isinstance(e.value, MemoryError) and "cuda:" in str(e.value)
    fcuda.synchronize()  # the device is still usable
    assert fcuda.full((3,), 2.0).numpy().tolist() == [2.0, 2.0, 2.0]


def _run(code, **env_vars):
    env = dict(os.environ, **env_vars)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "python"),
                                         env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_launch_blocking_mode_in_a_subprocess():
    code = ("import numpy as np, forgegrad.cuda as c, forgegrad._C as C\n"
            "assert C.cuda.launch_blocking()\n"
            "x = c.to_device(np.arange(6, dtype=np.float32).reshape(2, 3))\n"
            "assert c.permute(x, (1, 0)).numpy().tolist() == [[0, 3], [1, 4], [2, 5]]\n"
            "c.synchronize()\n")
    out = _run(code, FORGEGRAD_CUDA_LAUNCH_BLOCKING="1")
    assert out.returncode == 0, out.stderr
    assert not fcuda._C.cuda.launch_blocking()  # this process was started without it


# A kernel fault loses the process's CUDA context, so these run in subprocesses.
FAULT = ("import forgegrad.cuda as c, forgegrad._C as C\n"
         "try:\n"
         "    C.cuda._fault_for_tests()\n"
         "    print('launch ok')\n"
         "    c.synchronize()\n"
         "except RuntimeError as e:\n"
         "    print('error:', e)\n")


def test_asynchronous_fault_surfaces_at_synchronize():
    out = _run(FAULT)
    assert out.returncode == 0, out.stderr
    assert "launch ok" in out.stdout and "error: synchronize: CUDA error:" in out.stdout, out.stdout


def test_launch_blocking_names_the_faulting_kernel():
    out = _run(FAULT, FORGEGRAD_CUDA_LAUNCH_BLOCKING="1")
    assert out.returncode == 0, out.stderr
    assert "launch ok" not in out.stdout and "error: fault_kernel: CUDA error:" in out.stdout, out.stdout


def test_device_index_errors():
    with pytest.raises(ValueError, match="out of range"):
        fcuda.empty((2,), device=fcuda.device_count())
    with pytest.raises(ValueError, match="cuda:N"):
        fcuda.empty((2,), device="cpu")
    fcuda.set_device("cuda:0")
    assert fcuda.current_device() == 0
