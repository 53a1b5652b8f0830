"""torch programs behave the same with the import changed: each silently-different case found by
porting pytorch/examples (issue 13), checked against torch itself."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import nn, optim


def _call(t, call: str):
    """t.<call>, e.g. _call(x, "unsqueeze(2)")."""
    return eval("t." + call, {"t": t})


def _same_error(fn_fg, fn_torch):
    """Both raise, with the same exception type."""
    with pytest.raises(Exception) as want:
        fn_torch()
    with pytest.raises(type(want.value)):
        fn_fg()


@pytest.mark.parametrize("call", ["unsqueeze(99)", "unsqueeze(-4)", "unsqueeze(3)", "squeeze(5)", "squeeze(-3)",
                                  "flatten(7)", "flatten(0, 5)", "flatten(-3)", "transpose(0, 5)",
                                  "transpose(-3, 1)", "sum(2)", "mean(-3)", "softmax(2)", "max(2)", "argmax(5)",
                                  "var(2)", "std(2)", "amax(2)", "permute(0, 2)"])
def test_out_of_range_dims_raise_index_error(call):
    x, xt = fg.randn(3, 4), torch.randn(3, 4)
    _same_error(lambda: _call(x, call), lambda: _call(xt, call))


@pytest.mark.parametrize("call", ["unsqueeze(2)", "unsqueeze(-3)", "unsqueeze(-1)", "squeeze(0)", "squeeze(-1)",
                                  "flatten(0)", "flatten(-2, -1)", "flatten(1)", "transpose(-1, 0)"])
def test_in_range_dims_match_torch(call):
    x = fg.randn(3, 1)
    xt = torch.from_numpy(np.asarray(x).copy())
    assert tuple(_call(x, call).shape) == tuple(_call(xt, call).shape)


def test_zero_dim_tensor_dims():
    s, st = fg.tensor(1.0), torch.tensor(1.0)
    for call in ["squeeze(0)", "squeeze(-1)", "unsqueeze(0)", "unsqueeze(-1)", "flatten(0)"]:
        assert tuple(_call(s, call).shape) == tuple(_call(st, call).shape)
    _same_error(lambda: s.squeeze(1), lambda: st.squeeze(1))
    _same_error(lambda: s.unsqueeze(2), lambda: st.unsqueeze(2))


def test_clamp_of_int64_with_float_bounds_promotes_like_torch():
    got = fg.tensor([-2, 0, 3]).clamp(-.5, .5)
    want = torch.tensor([-2, 0, 3]).clamp(-.5, .5)
    np.testing.assert_array_equal(np.asarray(got), want.numpy())
    assert np.asarray(got).dtype == np.float32
    got = fg.tensor([-2, 0, 3]).clamp(-1, 1)
    assert np.asarray(got).dtype == np.int64 and got.tolist() == [-1, 0, 1]


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
def test_empty_var_std_are_nan():
    assert np.isnan(fg.zeros(0).var().item()) and np.isnan(torch.zeros(0).var().item())
    assert np.isnan(fg.zeros(0).std().item())


@pytest.mark.parametrize("shape,dim", [((3,), None), ((2, 4), 1), ((2, 4), 0)])
def test_std_backward_at_zero_deviation_is_zero(shape, dim):
    x = fg.ones(*shape, requires_grad=True)
    xt = torch.ones(*shape, requires_grad=True)
    (x.std() if dim is None else x.std(dim).sum()).backward()
    (xt.std() if dim is None else xt.std(dim).sum()).backward()
    np.testing.assert_array_equal(np.asarray(x.grad), xt.grad.numpy())  # torch: 0, not nan


def test_one_hot_num_classes_semantics():
    t, tt = fg.tensor([0, 2]), torch.tensor([0, 2])
    np.testing.assert_array_equal(np.asarray(F.one_hot(t)), torch.nn.functional.one_hot(tt).numpy())
    np.testing.assert_array_equal(np.asarray(F.one_hot(t, 4)), torch.nn.functional.one_hot(tt, 4).numpy())
    for n in (-5, -2, 0, 2):
        _same_error(lambda: F.one_hot(t, n), lambda: torch.nn.functional.one_hot(tt, n))
    _same_error(lambda: F.one_hot(fg.tensor([-1, 0])), lambda: torch.nn.functional.one_hot(torch.tensor([-1, 0])))


def test_autograd_on_zero_dim_tensors():
    x, xt = fg.tensor(0.5, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    (x.sigmoid() * 2).backward()
    (xt.sigmoid() * 2).backward()
    np.testing.assert_allclose(x.grad.item(), xt.grad.item(), rtol=1e-6)
    x, xt = fg.tensor(0.3, requires_grad=True), torch.tensor(0.3, requires_grad=True)
    ((x * 3).exp().tanh() + x.relu() * x - x / 2).backward()
    ((xt * 3).exp().tanh() + xt.relu() * xt - xt / 2).backward()
    np.testing.assert_allclose(x.grad.item(), xt.grad.item(), rtol=1e-6)


def test_keras_sequential_builds_every_layer_when_input_size_known():
    model = nn.Sequential(nn.Dense(64, activation="relu", input_dim=100), nn.Dropout(0.5), nn.Dense(32),
                          nn.Dense(10, activation="softmax"))
    assert [tuple(p.shape) for p in model.parameters()] == [(64, 100), (64,), (32, 64), (32,), (10, 32), (10,)]
    opt = optim.SGD(model.parameters(), lr=0.1)
    before = [np.asarray(p).copy() for p in model.parameters()]
    loss = model(fg.randn(4, 100)).sum() * 0 + model(fg.randn(4, 100))[:, 0].sum()
    loss.backward()
    opt.step()
    assert all(not np.array_equal(b, np.asarray(p)) for b, p in zip(before, model.parameters()))
    grown = nn.Sequential()
    grown.add(nn.Dense(5, input_dim=3))
    grown.add(nn.Dense(2))
    assert [tuple(p.shape) for p in grown.parameters()] == [(5, 3), (5,), (2, 5), (2,)]


def test_optimizer_refuses_unbuilt_lazy_parameters():
    model = nn.Sequential(nn.Dense(8), nn.ReLU(), nn.Dense(2))
    with pytest.raises(ValueError, match="lazy layers 0 \\(Dense\\) have no parameters yet"):
        optim.Adam(model.parameters())
    model(fg.randn(2, 3))  # built by a first forward: now the optimizer takes them
    optim.Adam(model.parameters())
