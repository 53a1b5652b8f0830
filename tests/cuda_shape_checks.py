"""The shape ops' cuda Functions against their CPU Functions on the registry's samples, forward and
backward. Run on a GPU by tests/test_cuda_arrays.py and, without one, by tests/test_cuda_runtime.py
over a host stand-in for the array kernels (their index math from _C.testing)."""
import numpy as np

import forgegrad.cuda as fcuda
from forgegrad.ops import _cuda_nn as CN

SHAPE_OPS = ("reshape", "permute", "expand", "getitem", "cat", "stack", "clone")


def check_shape_op_functions(to_device, to_host):
    from forgegrad.ops import registry
    rng = np.random.default_rng(5)
    checked = 0
    for name in SHAPE_OPS:
        op = registry.get(name)
        cpu_fn, cuda_fn = op.functions["cpu"], op.functions["cuda"]
        for sample in op.samples():
            if name == "getitem":
                arrays, rest = [sample.args[0]], sample.args[1:]
            else:
                arrays = [a for a in sample.args if isinstance(a, np.ndarray)]
                rest = sample.args[len(arrays):]
            cctx, dctx = cpu_fn.__new__(cpu_fn), cuda_fn.__new__(cuda_fn)
            want = cpu_fn.forward(cctx, *arrays, *rest, **sample.kwargs)
            got = cuda_fn.forward(dctx, *[to_device(a) for a in arrays], *rest, **sample.kwargs)
            np.testing.assert_array_equal(to_host(got), want, err_msg=f"{name} {sample.name}")
            g = rng.standard_normal(np.shape(want)).astype(np.float32)
            want_g = cpu_fn.backward(cctx, g)
            got_g = cuda_fn.backward(dctx, to_device(g))
            want_g = want_g if isinstance(want_g, tuple) else (want_g,)
            got_g = got_g if isinstance(got_g, tuple) else (got_g,)
            assert len(got_g) == len(want_g)
            for w, d in zip(want_g, got_g):
                np.testing.assert_allclose(to_host(d), w, rtol=1e-6, atol=1e-6, err_msg=f"{name} {sample.name} grad")
            checked += 1
    assert checked >= 15


class HostArray(np.ndarray):
    """A host stand-in for DeviceArray in the CPU check: what the cuda Functions use of it."""

    device = 0

    def numpy(self):
        return np.array(self)

    def copy_(self, src):
        self[...] = src


def host_stand_in(monkeypatch):
    """Routes forgegrad.cuda's array kernels to host code: the strided copy and broadcast sum through
    the kernels' own index math (_C.testing), the rest numpy. Returns to_device."""
    import forgegrad as fg

    def wrap(a):
        return np.ascontiguousarray(a).view(HostArray)

    def assign(dst, shape, strides, offset, src):
        flat = np.asarray(dst).reshape(-1)
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=tuple(shape),
                                               strides=[s * flat.itemsize for s in strides])
        view[...] = np.asarray(src)

    monkeypatch.setattr(fcuda, "as_strided", lambda a, shape, strides, offset=0: wrap(
        fg._C.testing.strided_copy(np.asarray(a), list(shape), list(strides), int(offset))))
    monkeypatch.setattr(fcuda, "as_strided_assign", assign)
    monkeypatch.setattr(fcuda, "sum_to_shape", lambda a, shape: wrap(
        fg._C.testing.sum_to_shape(np.asarray(a), list(shape)).astype(a.dtype)))
    monkeypatch.setattr(fcuda, "cat", lambda arrays, axis=0: wrap(np.concatenate([np.asarray(a) for a in arrays],
                                                                                 axis)))
    monkeypatch.setattr(fcuda, "empty", lambda shape, dtype=np.float32, device=None: wrap(np.empty(shape, dtype)))
    monkeypatch.setattr(fcuda, "zeros", lambda shape, dtype=np.float32, device=None: wrap(np.zeros(shape, dtype)))
    monkeypatch.setattr(fcuda, "to_device", lambda a, device=None: wrap(np.asarray(a)))
    monkeypatch.setattr(fcuda, "to_host", lambda a: np.array(a))
    monkeypatch.setattr(CN, "kernels", lambda: _HostEmbedding)  # the row gather of indexing with an array
    return wrap


class _HostEmbedding:
    """The embedding kernels' contract in numpy (rows gathered; repeated rows' gradients summed)."""

    @staticmethod
    def embedding_forward(weight, index):
        return np.asarray(weight)[np.asarray(index)].view(HostArray)

    @staticmethod
    def embedding_backward(g, index, num_weights, padding_idx):
        out = np.zeros((num_weights, g.shape[-1]), np.float32)
        np.add.at(out, np.asarray(index), np.asarray(g).reshape(-1, g.shape[-1]))
        return out.view(HostArray)
