"""The torch surface programs use (issue 13): .data as a Tensor, named-tuple returns, tensor methods,
in-place ops, module-level functions, dtype objects, forgegrad.utils.data; each checked against torch."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn


def _pair(*shape, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return fg.tensor(x.copy()), torch.tensor(x.copy())


def _eq(a, b):
    """Same values (float32 kernels may differ from torch's by an ulp) and the same dtype."""
    b = b.detach().numpy()
    np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7)
    assert np.asarray(a).dtype == b.dtype


def test_data_is_a_tensor_sharing_storage():
    p = nn.Parameter(fg.randn(3, 4))
    p.grad = fg.ones(3, 4)
    before = p.numpy().copy()
    p.data -= 0.5 * p.grad  # the SGD update of pytorch/examples: in place, the parameter stays usable
    np.testing.assert_allclose(p.numpy(), before - 0.5, atol=1e-6)
    assert isinstance(p, nn.Parameter) and p.requires_grad and p.is_leaf
    p.data.add_(p.grad, alpha=-0.5)  # word_language_model's update
    np.testing.assert_allclose(p.numpy(), before - 1.0, atol=1e-6)  # (p - .5) - .5 rounds unlike p - 1
    assert isinstance(p.data, fg.Tensor) and not p.data.requires_grad
    p.data = fg.zeros(2)  # assigning replaces the storage
    assert p.shape == (2,)
    x, xt = _pair(2, 5)
    got, want = x.data.max(1), xt.data.max(1)  # torch's (values, indices), not numpy's
    _eq(got.values, want.values)
    _eq(got.indices, want.indices)
    v, i = x.max(1)
    _eq(i, xt.max(1)[1])
    _eq(x.min(dim=0).indices, xt.min(dim=0).indices)
    with pytest.raises(TypeError, match="data must be a Tensor"):
        p.data = [1, 2]


def test_tensor_methods_match_torch():
    x, xt = _pair(4, 6)
    _eq(x.view_as(fg.zeros(6, 4)), xt.view_as(torch.zeros(6, 4)))
    _eq(x.narrow(1, 2, 3), xt.narrow(1, 2, 3))
    _eq(x.narrow(0, -2, 2), xt.narrow(0, -2, 2))
    _eq(x.contiguous(), xt.contiguous())
    for a, b in zip(x.split(4, 1), xt.split(4, 1)):
        _eq(a, b)
    for a, b in zip(x.split([1, 3], 0), xt.split([1, 3], 0)):
        _eq(a, b)
    for a, b in zip(x.chunk(4, 1), xt.chunk(4, 1)):
        _eq(a, b)
    assert len(x.chunk(3, 0)) == len(xt.chunk(3, 0))
    for a, b in zip(x.unbind(1), xt.unbind(1)):
        _eq(a, b)
    assert x.type() == xt.type() == "torch.FloatTensor"
    assert x.long().type() == xt.long().type()
    assert x.type("torch.LongTensor").dtype == fg.long
    assert not x.is_cuda and x.device.type == "cpu"
    for name, args in [("new_zeros", (2, 3)), ("new_ones", ((2, 3),)), ("new_empty", (2,)), ("new_full", ((2,), 7.0))]:
        got, want = getattr(x, name)(*args), getattr(xt, name)(*args)
        assert tuple(got.shape) == tuple(want.shape) and got.dtype == fg.float32
        if name != "new_empty":
            _eq(got, want)
    _eq(x.new_tensor([1, 2]), xt.new_tensor([1, 2]))
    assert x.long().new_zeros(2).dtype == fg.int64
    with pytest.raises(IndexError):
        x.narrow(2, 0, 1)
    with pytest.raises(RuntimeError):
        x.split([1, 1], 0)


def test_split_gradient_flows_back():
    x, xt = _pair(4, 6)
    x.requires_grad_(), xt.requires_grad_()
    a, b = x.split(3, 1)
    (a * 2 + b.unbind(0)[1].sum()).sum().backward()
    a, b = xt.split(3, 1)
    (a * 2 + b.unbind(0)[1].sum()).sum().backward()
    _eq(x.grad, xt.grad)


def test_inplace_ops_match_torch():
    x, xt = _pair(3, 4)
    y, yt = _pair(4, seed=1)
    for op, args in [("add_", (y,)), ("sub_", (2.0,)), ("mul_", (y,)), ("div_", (3.0,)), ("clamp_", (-0.5, 0.5)),
                     ("pow_", (2,)), ("neg_", ()), ("zero_", ()), ("fill_", (1.5,))]:
        targs = tuple(yt if a is y else a for a in args)
        assert getattr(x, op)(*args) is x
        getattr(xt, op)(*targs)
        _eq(x, xt)
    x.add_(y, alpha=-2)
    xt.add_(yt, alpha=-2)
    _eq(x, xt)
    x += 1
    x *= y
    xt += 1
    xt *= yt
    _eq(x, xt)
    x.copy_(y)
    xt.copy_(yt)
    _eq(x, xt)
    shared = x.data
    x.mul_(2)  # outside autograd the storage itself changes: views see it
    _eq(shared, xt * 2)


def test_inplace_autograd_rules_are_torchs():
    leaf = fg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        leaf.add_(1)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        leaf += 1
    with fg.no_grad():
        leaf.add_(1)  # allowed under no_grad, as in torch
    x, xt = _pair(3)
    x.requires_grad_(), xt.requires_grad_()
    for t in (x, xt):
        y = t * 2
        y += t
        y.mul_(3)
        y.add_(y)
        y.sigmoid().sum().backward()
    _eq(x.grad, xt.grad)
    ints = fg.tensor([1, 2])
    with pytest.raises(RuntimeError, match="can't be cast"):
        ints.add_(0.5)  # torch: result type Float can't be cast to Long
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        fg.zeros(3).add_(fg.ones(2, 3))


def test_module_level_functions_match_torch():
    x, xt = _pair(2, 3, 4)
    for name, args in [("flatten", (1,)), ("exp", ()), ("sigmoid", ()), ("sum", (1,)), ("mean", ()),
                       ("transpose", (0, 2)), ("unsqueeze", (1,)), ("softmax", (2,)), ("clamp", (-0.1, 0.1))]:
        _eq(getattr(fg, name)(x, *args), getattr(torch, name)(xt, *args))
    got, want = fg.max(x, 1), torch.max(xt, 1)
    _eq(got.values, want.values)
    _eq(got.indices, want.indices)
    _eq(fg.min(x, dim=2)[1], torch.min(xt, dim=2)[1])
    for a, b in zip(fg.split(x, 2, dim=2), torch.split(xt, 2, dim=2)):
        _eq(a, b)
    for a, b in zip(fg.chunk(x, 2, 1), torch.chunk(xt, 2, 1)):
        _eq(a, b)
    arr = np.arange(6.0).reshape(2, 3)
    t = fg.from_numpy(arr)
    assert t.dtype == fg.float64 and t.numpy() is arr  # shares memory and keeps float64, as torch's
    for like in (fg.zeros_like, fg.ones_like, fg.randn_like, fg.rand_like):
        out = like(x)
        assert out.shape == x.shape and out.dtype == fg.float32
    assert fg.zeros_like(x, dtype=fg.int64).dtype == fg.int64
    assert fg.LongTensor([1, 2]).dtype == fg.long and fg.FloatTensor(2, 3).shape == (2, 3)
    fg.manual_seed(0)
    assert fg.randint(5, (3,)).dtype == fg.int64 and fg.randint(5, (3,)).shape == (3,)
    r = fg.randint(2, 6, (100,), dtype=fg.int32)
    assert r.dtype == fg.int32 and r.numpy().min() >= 2 and r.numpy().max() < 6
    with pytest.raises(TypeError, match="size must be a tuple"):
        fg.randint(0, 5, 3)  # torch also refuses an int size
    draws = fg.multinomial(fg.tensor([0.0, 1.0, 0.0, 3.0]), 50, replacement=True)
    assert draws.dtype == fg.int64 and set(draws.tolist()) <= {1, 3}
    rows = fg.multinomial(fg.tensor([[1.0, 0, 0], [0, 0, 1.0]]), 1)
    assert rows.tolist() == [[0], [2]]
    # without replacement and too few non-zero categories torch 2.13 fills up with the zero-weight ones
    assert fg.multinomial(fg.tensor([1.0, 0.0]), 2).tolist() == [0, 1]


def test_dtypes_are_objects():
    assert fg.float32 is fg.float and fg.float64 is fg.double and fg.int64 is fg.long and fg.int32 is fg.int
    x = fg.randn(2)
    assert x.dtype is fg.float32 and x.dtype == np.float32 and x.dtype == "float32" and x.dtype != fg.int64
    assert np.dtype(fg.float32) == np.float32 and np.zeros(2, fg.int64).dtype == np.int64
    assert x.to(fg.long).dtype is fg.int64 and x.long().dtype is fg.long
    assert repr(fg.float64) == "forgegrad.float64" and fg.float32.is_floating_point and not fg.int64.is_floating_point
    assert x.to("cpu", fg.int64).dtype is fg.int64 and x.to(fg.zeros(1, dtype=fg.int64)).dtype is fg.int64
    assert int(fg.tensor(3)) == 3 and float(fg.tensor([2.5])) == 2.5 and list(range(fg.tensor(2))) == [0, 1]


def test_utils_data_alias_and_name_hints():
    from forgegrad.utils.data import DataLoader, Dataset, TensorDataset, random_split
    import forgegrad.data as D
    assert DataLoader is D.DataLoader and Dataset is D.Dataset and TensorDataset is D.TensorDataset
    assert random_split is D.random_split
    assert fg.Size([2, 3]) == (2, 3) and fg.Size([2, 3]).numel() == 6  # torch.Size exists now
    assert fg.absolute is not None and fg.concat is not None  # torch's aliases exist now
    assert fg.concat([fg.ones(1), fg.zeros(2)]).shape == (3,)  # cat's aliases exist (forgegrad._torch_shape)
    with pytest.raises(AttributeError, match="no equivalent yet"):
        fg.hub  # noqa: B018
    with pytest.raises(AttributeError, match="no TorchScript"):  # fg.compile / onnx export named instead
        fg.jit  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'not_a_torch_name'$"):
        fg.not_a_torch_name  # noqa: B018
    assert issubclass(nn.LazyLinear, nn.Linear)  # torch's lazy modules exist (nn/lazy.py)
    assert nn.Conv3d is not None and nn.BatchNorm3d is not None  # the 3-D layers exist (nn/conv3d.py)
    assert issubclass(nn.SyncBatchNorm, nn.BatchNorm2d.__mro__[1]) and nn.DataParallel is not None
    assert nn.LinearCrossEntropyLoss is not None and nn.LinearCrossEntropyOptions is not None  # (torch 2.13's)


def test_save_load_file_objects(tmp_path):
    import io
    model = nn.Linear(3, 2)
    buf = io.BytesIO()
    fg.save(model.state_dict(), buf)  # torch.save(model.state_dict(), buf)
    buf.seek(0)
    loaded = fg.load(buf)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(loaded[k]), v.numpy())
    with open(tmp_path / "m.safetensors", "wb") as f:
        fg.save({"w": fg.from_numpy(np.arange(3.0)), "epoch": 2}, f)
    with open(tmp_path / "m.safetensors", "rb") as f:
        back = fg.load(f)
    assert back["epoch"] == 2 and back["w"].dtype == np.float64  # float64 is kept, not cast
    with pytest.raises(TypeError, match="binary mode"):
        with open(tmp_path / "t.txt", "w") as f:
            fg.save(model.state_dict(), f)
    with pytest.raises(ValueError, match="not a valid safetensors"):
        fg.load(io.BytesIO(b"garbage"))


def test_tril_triu_sin_cos_as_torch():
    import torch
    x = np.random.default_rng(0).standard_normal((2, 4, 6)).astype(np.float32)
    for k in (-2, 0, 1, 7):
        np.testing.assert_array_equal(fg.tril(fg.tensor(x), k).numpy(), torch.tril(torch.tensor(x), k).numpy())
        np.testing.assert_array_equal(fg.triu(fg.tensor(x), diagonal=k).numpy(),
                                      torch.triu(torch.tensor(x), diagonal=k).numpy())
    a = fg.tensor(x, requires_grad=True)
    fg.tril(a).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.broadcast_to(np.tril(np.ones((4, 6), np.float32)), x.shape))
    np.testing.assert_allclose(fg.sin(fg.tensor(x)).numpy(), np.sin(x), rtol=1e-6)
    np.testing.assert_allclose(fg.cos(fg.tensor(x)).numpy(), np.cos(x), rtol=1e-6)
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        fg.tril(fg.ones(3))
