"""Tensor's memory-layout, device and dtype attributes and small casts (stride, storage_offset, data_ptr, nbytes,
half(), ...), each against torch 2.13 on the same data and views."""
import numpy as np
import pytest
import torch

import forgegrad as fg


def _pair(shape=(3, 4), seed=0):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return fg.tensor(a), torch.tensor(a)


VIEWS = [("plain", lambda x: x), ("t", lambda x: x.t()), ("row slice", lambda x: x[1:]),
         ("col slice", lambda x: x[:, 1:3]), ("step", lambda x: x[::2]), ("unsqueeze", lambda x: x.unsqueeze(1)),
         ("expand", lambda x: x[:1].expand(5, 4)), ("transpose 3d", lambda x: x.reshape(2, 3, 2).transpose(0, 2)),
         ("row", lambda x: x[2]), ("permute", lambda x: x.reshape(2, 2, 3).permute(2, 0, 1))]


@pytest.mark.parametrize("name,view", VIEWS, ids=[n for n, _ in VIEWS])
def test_layout_matches_torch(name, view):
    f, t = _pair()
    a, b = view(f), view(t)
    assert a.stride() == b.stride()
    assert a.is_contiguous() == b.is_contiguous()
    assert a.storage_offset() == b.storage_offset()
    for d in range(-a.ndim, a.ndim):
        assert a.stride(d) == b.stride(d)
    assert a.data_ptr() - f.data_ptr() == (b.data_ptr() - t.data_ptr())
    assert a.nbytes == b.nbytes and a.itemsize == b.itemsize == a.element_size()


def test_stride_errors_and_keyword():
    f, t = _pair()
    assert f.stride(dim=1) == t.stride(dim=1)
    with pytest.raises(IndexError):
        t.stride(2)
    with pytest.raises(IndexError, match="range"):
        f.stride(2)
    with pytest.raises(TypeError, match="'dim'"):
        f.stride(1.0)
    assert fg.tensor(2.0).stride() == torch.tensor(2.0).stride() == ()


def test_fresh_tensors_start_their_storage():
    assert fg.nn.Linear(3, 4).weight.storage_offset() == 0
    assert fg.zeros(3).storage_offset() == 0 and fg.tensor([1, 2]).storage_offset() == 0
    assert fg.empty(2, 3, device="meta").data_ptr() == 0
    assert fg.empty(2, 3, device="meta").stride() == torch.empty(2, 3, device="meta").stride()


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"])
def test_dtype_queries(dtype):
    a = np.ones((2, 3), dtype)
    f, t = fg.tensor(a, dtype=getattr(fg, dtype)), torch.tensor(a)
    assert f.dtype.name == dtype
    assert f.is_signed() == t.is_signed()
    assert f.is_complex() == t.is_complex() is False
    assert f.nbytes == t.nbytes and f.itemsize == t.itemsize
    assert f.ndimension() == t.ndimension() == 2


def test_device_queries():
    f, t = _pair()
    assert f.get_device() == t.get_device() == -1
    assert f.is_cpu is t.is_cpu is True
    assert f.is_shared() == t.is_shared() is False
    assert f.pin_memory() is f and f.is_pinned() is False
    assert fg.empty(2, device="meta").get_device() == torch.empty(2, device="meta").get_device()
    assert fg.empty(2, device="meta").is_cpu is torch.empty(2, device="meta").is_cpu is False


@pytest.mark.parametrize("cast", ["half", "byte", "char", "short", "int", "long", "float", "double", "bool"])
def test_casts_match_torch(cast):
    a = np.array([[-3.7, 0.0, 2.5], [100.2, -0.4, 7.9]], np.float32)
    f, t = getattr(fg.tensor(a), cast)(), getattr(torch.tensor(a), cast)()
    if cast in ("byte",):  # negative float -> uint8 is undefined behaviour in C, torch's and numpy's differ
        f, t = getattr(fg.tensor(np.abs(a)), cast)(), getattr(torch.tensor(np.abs(a)), cast)()
    assert f.dtype.name == str(t.dtype).replace("torch.", "")
    np.testing.assert_array_equal(f.numpy(), t.numpy())
    assert f.type() == t.type()


def test_type_string_forms():
    f, t = _pair()
    for name in ("torch.DoubleTensor", "torch.LongTensor", "torch.ByteTensor", "torch.CharTensor",
                 "torch.ShortTensor", "torch.IntTensor", "torch.BoolTensor", "torch.FloatTensor"):
        assert f.type(name).type() == t.type(name).type() == name
    assert f.type(fg.float64).dtype == fg.float64
    assert f.half().type() == t.half().type() == "torch.HalfTensor"


def test_new_empty_strided():
    f, t = _pair()
    a, b = f.new_empty_strided((2, 3), (1, 2)), t.new_empty_strided((2, 3), (1, 2))
    assert a.shape == tuple(b.shape) and a.stride() == b.stride() and a.dtype == fg.float32
    ints = fg.tensor([1, 2]).new_empty_strided((3,), (1,))
    assert ints.dtype == fg.int64
    assert f.new_empty_strided((2,), (1,), dtype=fg.float64).dtype == fg.float64
    with pytest.raises(RuntimeError, match="same length"):
        f.new_empty_strided((2, 3), (1,))


def test_retains_grad_and_is_leaf():
    for m in (fg, torch):
        x = m.ones(3, requires_grad=True)
        y = x * 2
        z = m.ones(2)
        assert (x.is_leaf, y.is_leaf, z.is_leaf) == (True, False, True)
        assert (x.retains_grad, y.retains_grad) == (False, False)
        y.retain_grad()
        x.retain_grad()  # a leaf keeps its grad anyway: retains_grad stays False
        assert (x.retains_grad, y.retains_grad) == (False, True)
        with m.no_grad():
            assert (x * 2).is_leaf


def test_is_inference():
    f, t = _pair()
    assert f.is_inference() == t.is_inference() is False
    with fg.inference_mode(), torch.inference_mode():  # more in tests/test_inference_tensors.py
        assert fg.ones(2).is_inference() is torch.ones(2).is_inference() is True


def test_is_contiguous_memory_format():
    f, _ = _pair()
    assert f.is_contiguous(memory_format="torch.contiguous_format") is True
    with pytest.raises(ValueError, match="'memory_format'"):
        f.is_contiguous(memory_format="channels_last")


def test_existing_methods_not_replaced():
    from forgegrad.tensor import Tensor
    assert fg.Tensor.element_size is Tensor.element_size and "is_leaf" in Tensor.__dict__
