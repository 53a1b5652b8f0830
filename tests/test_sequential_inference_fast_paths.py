"""The one-call inference paths of an eager nn.Sequential: a Linear / ReLU MLP under no_grad runs as one native plan
(not only a frozen one), a quantize_dynamic MLP as a DynamicLinearChain (in grad mode too). Both must give the bits
the layers give one by one, follow parameter and module changes, and leave hooks, errors and pickling as before."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C, nn
from forgegrad.quantization import quantize_dynamic


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _mlp(*acts, sizes=(37, 29, 13, 5)):
    fg.manual_seed(0)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(acts):
            layers.append(acts[i])
    return nn.Sequential(*layers).eval()


def _one_by_one(model, x):
    """The modules called one at a time (each its own forward), no Sequential around them."""
    y = fg.tensor(x)
    for m in model:
        y = m(y)
    return y.numpy()


def _torch_copy(model):
    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            lin = torch.nn.Linear(m.in_features, m.out_features)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(m.weight.numpy()))
                lin.bias.copy_(torch.from_numpy(m.bias.numpy()))
            layers.append(lin)
        else:
            layers.append(getattr(torch.nn, type(m).__name__)(*({"negative_slope": m.negative_slope}.values()
                                                                 if isinstance(m, nn.LeakyReLU) else ())))
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_eager_mlp_runs_one_native_plan_with_the_layers_bits(batch):
    model = _mlp(nn.ReLU(), nn.Tanh())
    x = _rand(batch, 37, seed=batch)
    with fg.no_grad():
        got = model(fg.tensor(x)).numpy()
        assert isinstance(model.__dict__["_inference_plan"][2], _C.plan.SequentialPlan)
        again = model(fg.tensor(x)).numpy()  # through Sequential.__call__'s shortcut
        layers = _one_by_one(model, x)
    graph = model(fg.tensor(x)).numpy()  # grad mode: the autograd ops
    np.testing.assert_array_equal(got, layers)
    np.testing.assert_array_equal(again, layers)
    np.testing.assert_array_equal(got, graph)
    with torch.no_grad():
        np.testing.assert_allclose(got, _torch_copy(model)(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_eager_native_plan_follows_parameter_and_module_changes():
    model = _mlp(nn.ReLU(), nn.ReLU())
    x = _rand(2, 37)
    with fg.no_grad():
        model(fg.tensor(x))
        model[0].weight._data[:3] *= -2.0  # in place
        model[2].weight = nn.Parameter(fg.tensor(_rand(13, 29, seed=5)))  # replaced
        model.add_module("4", nn.Linear(13, 6))  # another module in its place
        got = model(fg.tensor(x)).numpy()
        want = _one_by_one(model, x)
    assert got.shape == (2, 6)
    np.testing.assert_array_equal(got, want)


def test_activation_settings_read_at_each_call_keep_the_python_steps():
    """LeakyReLU's slope can change after the plan is built: an eager plan with it runs the Python steps."""
    model = _mlp(nn.LeakyReLU(0.1))
    x = _rand(4, 37)
    with fg.no_grad():
        model(fg.tensor(x))
        assert model.__dict__["_inference_plan"][2] is False
        model[1].negative_slope = 0.3
        got = model(fg.tensor(x)).numpy()
    with torch.no_grad():
        want = _torch_copy(model)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_eager_native_plan_keeps_hooks_errors_and_pickling():
    model = _mlp(nn.ReLU())
    x = _rand(1, 37)
    with fg.no_grad():
        model(fg.tensor(x))
        seen = []
        handle = model[1].register_forward_pre_hook(lambda m, args: seen.append(m))
        model(fg.tensor(x))
        assert seen == [model[1]]
        handle.remove()
        with pytest.raises(ValueError):
            model(fg.tensor(_rand(1, 36)))
    calls = []
    real_forward = model.forward
    model.forward = lambda inp: (calls.append(1), real_forward(inp))[1]  # an instance's own forward runs
    with fg.no_grad():
        model(fg.tensor(x))
    assert calls == [1]
    del model.forward
    loaded = pickle.loads(pickle.dumps(model))
    with fg.no_grad():
        np.testing.assert_array_equal(loaded(fg.tensor(x)).numpy(), model(fg.tensor(x)).numpy())


@pytest.mark.parametrize("reduce_range", [True, False])
@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_int8_chain_gives_the_layers_bits(batch, reduce_range):
    q = quantize_dynamic(_mlp(nn.ReLU(), nn.ReLU()), reduce_range=reduce_range)
    assert q._int8_chain is not None and len(q._int8_chain.layers) == 3
    x = _rand(batch, 37, seed=batch)
    want = _one_by_one(q, x)
    np.testing.assert_array_equal(q(fg.tensor(x)).numpy(), want)  # grad mode
    with fg.no_grad():
        np.testing.assert_array_equal(q(fg.tensor(x)).numpy(), want)
    np.testing.assert_array_equal(q._int8_chain.run(x), want)
    # torch's dynamic int8 of the same weights: within a few activation quantization steps
    with torch.no_grad():
        ref = _torch_copy(_mlp(nn.ReLU(), nn.ReLU()))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(want, ref, atol=0.05 * np.abs(ref).max())


def test_dynamic_int8_chain_follows_loaded_weights_and_module_changes():
    q = quantize_dynamic(_mlp(nn.ReLU(), nn.ReLU()))
    x = _rand(2, 37)
    q(fg.tensor(x))
    other = quantize_dynamic(_mlp(nn.ReLU(), nn.ReLU(), sizes=(37, 29, 13, 5)))
    for layer in other:
        if hasattr(layer, "set_weight"):
            layer.set_weight(_rand(layer.out_features, layer.in_features, seed=layer.in_features))
    q.load_state_dict(other.state_dict())
    np.testing.assert_array_equal(q(fg.tensor(x)).numpy(), _one_by_one(other, x))
    q.add_module("4", nn.Identity())  # modules changed: the layers run one by one
    np.testing.assert_array_equal(q(fg.tensor(x)).numpy(), _one_by_one(q, x))


def test_dynamic_int8_chain_falls_back_for_hooks_shapes_and_bad_input():
    q = quantize_dynamic(_mlp(nn.ReLU(), nn.ReLU()))
    x3 = _rand(2, 3, 37)
    np.testing.assert_array_equal(q(fg.tensor(x3)).numpy(), _one_by_one(q, x3))  # 3-D: the modules reshape
    seen = []
    handle = q[1].register_forward_pre_hook(lambda m, args: seen.append(m))
    q(fg.tensor(_rand(1, 37)))
    assert seen == [q[1]]
    handle.remove()
    with pytest.raises(ValueError, match=r"input must have shape \(\*, 37\)"):
        q(fg.tensor(_rand(1, 36)))
    with pytest.raises(TypeError, match="float32"):
        q(fg.tensor(_rand(1, 37).astype(np.float64)))
    calls = []
    q.forward = lambda inp: calls.append(1) or fg.tensor(np.zeros((1, 5), np.float32))
    q(fg.tensor(_rand(1, 37)))
    assert calls == [1]
    del q.forward
    copied = copy.deepcopy(pickle.loads(pickle.dumps(q)))
    assert copied._int8_chain.mods == tuple(copied._modules.values())
    x = _rand(1, 37)
    np.testing.assert_array_equal(copied(fg.tensor(x)).numpy(), q(fg.tensor(x)).numpy())


def _patched(module, calls):
    """module's forward wrapped on the instance as accelerate's hooks do (a call counted, the output doubled)."""
    original = module.forward

    def forward(*args, **kwargs):
        calls.append(module)
        return original(*args, **kwargs) * 2
    module.forward = forward


@pytest.mark.parametrize("which", [0, 1, 2])
def test_forward_patched_onto_a_layer_after_the_first_call_runs(which):
    # the eager native plan (Linear, ReLU fused into it, Linear) had been built: a forward set on one of its
    # modules later must run, as it does with the modules called one by one (and in grad mode)
    model = _mlp(nn.ReLU())
    x = _rand(3, 37)
    with fg.no_grad():
        model(fg.tensor(x))
        model(fg.tensor(x))
    calls = []
    _patched(model[which], calls)
    with fg.no_grad():
        want = _one_by_one(model, x)
        got = model(fg.tensor(x)).numpy()
    assert calls == [model[which]] * 2
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model(fg.tensor(x)).detach().numpy(), want)  # grad mode: the modules' calls


def test_forward_patched_onto_a_frozen_conv_step_and_an_int8_layer_runs():
    fg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5))
    frozen = nn.utils.freeze(model.eval())
    x = _rand(2, 2, 8, 8)
    with fg.no_grad():
        frozen(fg.tensor(x))
        calls = []
        _patched(frozen[0], calls)
        got = frozen(fg.tensor(x)).numpy()
        want = _one_by_one(frozen, x)
    assert calls == [frozen[0]] * 2
    np.testing.assert_array_equal(got, want)
    q = quantize_dynamic(_mlp(nn.ReLU(), nn.ReLU()))
    x = _rand(2, 37)
    q(fg.tensor(x))
    calls = []
    _patched(q[2], calls)
    np.testing.assert_array_equal(q(fg.tensor(x)).numpy(), _one_by_one(q, x))
    assert calls == [q[2]] * 2


def test_linear_step_with_a_float64_bias_raises_what_the_layer_raises():
    model = _mlp(nn.ReLU())
    model[0].bias = nn.Parameter(fg.tensor(_rand(29).astype(np.float64)))
    x = fg.tensor(_rand(2, 37))
    with pytest.raises(RuntimeError) as one_by_one:
        model[0](x)
    with fg.no_grad(), pytest.raises(RuntimeError) as fused:
        model(x)
    assert str(fused.value) == str(one_by_one.value)
    tm = _torch_copy(_mlp(nn.ReLU()))
    tm[0].bias = torch.nn.Parameter(torch.zeros(29, dtype=torch.float64))
    with pytest.raises(RuntimeError):  # torch raises the same kind of error
        tm(torch.from_numpy(x.numpy()))
