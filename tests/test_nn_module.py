import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn
from helpers import fg_from_torch


def make_pair(seed=0):
    fg.manual_seed(seed)
    ours = nn.Sequential(nn.Linear(13, 17), nn.ReLU(), nn.Dropout(0.2), nn.Linear(17, 5))
    theirs = torch.nn.Sequential(torch.nn.Linear(13, 17), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                 torch.nn.Linear(17, 5))
    return ours, theirs


def test_state_dict_keys_match_torch():
    ours, theirs = make_pair()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]


def test_torch_weights_give_torch_outputs():
    ours, theirs = make_pair()
    fg_from_torch(ours, theirs)
    ours.eval(), theirs.eval()
    x = np.random.default_rng(0).standard_normal((6, 13)).astype(np.float32)
    np.testing.assert_allclose(ours(fg.tensor(x))._data, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_load_state_dict_strict_errors_and_atomicity():
    ours, _ = make_pair()
    sd = {k: v._data.copy() for k, v in ours.state_dict().items()}
    before = ours[0].weight._data.copy()
    bad = dict(sd)
    bad.pop("3.bias")
    bad["extra.weight"] = np.zeros(3, np.float32)
    bad["0.weight"] = np.zeros((17, 13), np.float32)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "3.bias"'):
        ours.load_state_dict(bad)
    np.testing.assert_array_equal(ours[0].weight._data, before)  # nothing modified
    res = ours.load_state_dict(bad, strict=False)
    assert res.missing_keys == ["3.bias"] and res.unexpected_keys == ["extra.weight"]
    wrong = dict(sd)
    wrong["0.weight"] = np.zeros((13, 17), np.float32)
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        ours.load_state_dict(wrong)


def test_linear_init_bounds_and_repr():
    fg.manual_seed(1)
    lin = nn.Linear(100, 7)
    assert np.abs(lin.weight._data).max() <= 1 / np.sqrt(100) + 1e-7
    assert np.abs(lin.bias._data).max() <= 1 / np.sqrt(100) + 1e-7
    assert repr(lin) == "Linear(in_features=100, out_features=7, bias=True)"
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)


def test_train_eval_and_zero_grad():
    ours, _ = make_pair()
    ours.eval()
    assert all(not m.training for m in ours.modules())
    ours.train()
    out = ours(fg.randn(4, 13)).sum()
    out.backward()
    assert all(p.grad is not None for p in ours.parameters())
    ours.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


def test_dense_infers_input_size():
    d = nn.Dense(4, activation="relu")
    assert list(d.parameters()) == []
    y = d(fg.randn(3, 9))
    assert y.shape == (3, 4) and d.weight.shape == (4, 9) and (y._data >= 0).all()
    with pytest.raises(ValueError, match="unknown activation"):
        nn.Dense(3, activation="swishy")


def test_custom_module_registration():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.ModuleList([nn.Linear(3, 3) for _ in range(2)])
            self.scale = nn.Parameter(np.ones(1, np.float32))
            self.register_buffer("steps", np.zeros(1, np.float32))

        def forward(self, x):
            for layer in self.body:
                x = layer(x).relu()
            return x * self.scale

    net = Net()
    assert set(net.state_dict()) == {"body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias", "scale", "steps"}
    assert len(list(net.parameters())) == 5
    with pytest.raises(TypeError):
        net.scale = np.ones(1)


def test_module_to_a_tensor_takes_its_dtype_and_device_as_torch():
    for lib in (fg, torch):
        m = lib.nn.Linear(2, 3)
        assert m.to(lib.zeros(1, dtype=lib.float64)) is m
        assert m.weight.dtype == lib.float64 and m.bias.dtype == lib.float64
        with pytest.raises(TypeError):
            m.to(lib.zeros(1, dtype=lib.int64))  # parameters stay floating, as torch's refuses
    with pytest.raises(TypeError, match="dtype"):
        fg.nn.Linear(2, 3).to(fg.zeros(1), fg.float64)
