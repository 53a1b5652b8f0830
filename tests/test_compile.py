"""forgegrad.compile against torch.compile's API (OptimizedModule layout, decorator forms, argument errors), and
its frozen inference path: outputs bit-identical to the eager model, and made again after every kind of weight
change. torch.compile itself is only constructed here (never called: inductor compiles C code, seconds a model)."""
import copy
import warnings

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn
from forgegrad.models.cnn import LeNet


def mlp():
    fg.manual_seed(0)
    return nn.Sequential(nn.Linear(13, 24), nn.ReLU(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 5))


def torch_mlp():
    tnn = torch.nn
    return tnn.Sequential(tnn.Linear(13, 24), tnn.ReLU(), tnn.Linear(24, 24), tnn.Tanh(), tnn.Linear(24, 5))


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = mlp()
        self.norm = nn.BatchNorm1d(5)
        self.scale = 3.0

    def forward(self, x):
        return self.norm(self.body(x)) * self.scale


def same(a, b):
    return np.array_equal(a.numpy(), b.numpy())


def infer(model, x):
    with fg.no_grad():
        return model(x)


# ---- API surface, against torch's OptimizedModule ----------------------------------------------------------------

def test_state_dict_keys_and_layout_match_torch():
    ours, theirs = fg.compile(mlp()), torch.compile(torch_mlp())
    assert type(ours).__name__ == type(theirs).__name__ == "OptimizedModule"
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert isinstance(ours, nn.Module) and ours._orig_mod is ours._modules["_orig_mod"]
    assert repr(ours).startswith("OptimizedModule(\n  (_orig_mod): Sequential(")
    assert len(ours) == len(theirs) == 5


def test_load_state_dict_with_torch_prefixed_keys():
    # a checkpoint saved from torch.compile(model).state_dict(): keys with the _orig_mod. prefix
    theirs = torch.compile(torch_mlp())
    ours = fg.compile(mlp().eval())
    ours.load_state_dict({k: fg.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 13)).astype(np.float32)
    with torch.no_grad():
        expected = theirs._orig_mod(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(infer(ours, fg.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_attributes_pass_through_both_ways_as_torch():
    for compile_, make in ((fg.compile, WithBuffer), (torch.compile, None)):
        if make is None:
            model = torch_mlp()
            model.scale = 3.0
        else:
            model = make()
        c = compile_(model)
        assert c.scale == 3.0
        c.scale = 5.0  # set on the model, as torch does
        assert model.scale == 5.0 and "scale" not in {k for k in c.__dict__ if k != "_orig_mod"} - {"scale"}
        del c.scale
        assert not hasattr(model, "scale")
        with pytest.raises(AttributeError):
            c.no_such_attribute


def test_train_eval_pass_through_as_torch():
    for compile_, model in ((fg.compile, mlp()), (torch.compile, torch_mlp())):
        c = compile_(model)
        assert c.training and model.training
        assert c.eval() is c
        assert not c.training and not model.training and not list(model.children())[0].training
        c.train()
        assert model.training
        c.training = False
        assert not model.training


def test_decorator_forms_and_functions():
    calls = []

    @fg.compile
    def f(x):
        calls.append(fg.compiler.is_compiling())
        return x * 2

    @fg.compile(mode="max-autotune", fullgraph=True, dynamic=False)
    def g(x):
        return x + 1

    assert f(3) == 6 and g(3) == 4 and calls == [True]
    assert f.__name__ == "f" and not fg.compiler.is_compiling()
    model = mlp()
    assert isinstance(fg.compile()(model), type(fg.compile(model)))
    assert fg.compile(model, disable=True) is model and torch.compile(torch_mlp(), disable=True) is not None
    with pytest.raises(RuntimeError, match="Model can't be None"):
        fg.compile()(None)


def test_compiler_disable_runs_outside_compiling():
    seen = []

    @fg.compiler.disable
    def logged(x):
        seen.append(fg.compiler.is_compiling())
        return x

    @fg.compiler.disable(reason="logging")
    def logged2(x):
        seen.append(fg.compiler.is_compiling())
        return x

    @fg.compile
    def f(x):
        seen.append(fg.compiler.is_compiling())
        return logged2(logged(x))

    assert f(1) == 1 and seen == [True, False, False]
    assert fg._dynamo.disable is fg.compiler.disable and fg.compiler.is_dynamo_compiling() is False


@pytest.mark.parametrize("kwargs,error,words", [
    ({"mode": "fastest"}, RuntimeError, ["mode='fastest'", "reduce-overhead", "max-autotune"]),
    ({"backend": "nope"}, RuntimeError, ["backend='nope'", "inductor", "eager"]),
    ({"mode": "default", "options": {}}, RuntimeError, ["Either mode or options"]),
    ({"backend": 3}, TypeError, ["backend", "callable"]),
    ({"fullgraph": "yes"}, TypeError, ["fullgraph"]),
    ({"dynamic": 1}, TypeError, ["dynamic"]),
    ({"options": [1]}, TypeError, ["options", "dict"]),
])
def test_argument_errors_as_torch(kwargs, error, words):
    with pytest.raises(error) as ours:
        fg.compile(mlp(), **kwargs)
    for w in words:
        assert w in str(ours.value)
    if error is RuntimeError:  # torch raises a RuntimeError (or its subclass InvalidBackend) for the same
        with pytest.raises(RuntimeError):
            torch.compile(torch_mlp(), **kwargs)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        fg.compile(mlp(), bogus=1)
    with pytest.raises(TypeError, match="nn.Module or a callable"):
        fg.compile(3)


def test_backend_callable_warns_and_runs_frozen_plan():
    model = mlp().eval()
    with pytest.warns(UserWarning, match="backend callable is not called"):
        c = fg.compile(model, backend=lambda gm, inputs: gm)
    x = fg.randn(3, 13)
    assert same(infer(c, x), infer(model, x)) and c._frozen is not None
    eager = fg.compile(model, backend="eager")
    assert same(infer(eager, x), infer(model, x)) and eager._frozen is None
    assert "inductor" in fg.compiler.list_backends() and "eager" in fg._dynamo.list_backends(None)


def test_jit_refuses_with_pointer_to_compile_and_onnx():
    with pytest.raises(AttributeError, match=r"no TorchScript.*forgegrad\.compile.*onnx\.export"):
        fg.jit


def test_dynamo_config_and_reset():
    fg._dynamo.config.suppress_errors = True
    fg._dynamo.config.suppress_errors = False
    model = mlp().eval()
    c = fg.compile(model)
    x = fg.randn(2, 13)
    infer(c, x)
    assert c._frozen is not None
    fg._dynamo.reset()
    assert c._frozen is None
    assert same(infer(c, x), infer(model, x))
    # a write no version counter sees (numpy, behind the tensor's back): reset() makes the copy again
    model[0].weight.numpy()[0, 0] += 1.0
    fg.compiler.reset()
    assert same(infer(c, x), infer(model, x))


# ---- the frozen inference path --------------------------------------------------------------------------------

@pytest.mark.parametrize("make,shape", [(mlp, (13,)), (lambda: LeNet(input_size=12), (1, 12, 12)),
                                        (WithBuffer, (13,))])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_bit_identical_to_eager(make, shape, batch):
    model = make().eval()
    c = fg.compile(model)
    x = fg.randn(batch, *shape)
    assert same(infer(c, x), infer(model, x))
    assert c._frozen is not None and c._frozen is not model
    with fg.inference_mode():
        assert same(c(x), model(x))


def test_grad_on_but_nothing_requires_grad_uses_frozen_copy():
    model = mlp().eval().requires_grad_(False)
    c = fg.compile(model)
    x = fg.randn(3, 13)
    y = c(x)
    assert not y.requires_grad and same(y, model(x)) and c._frozen is not None


def test_weights_are_shared_not_copied_and_not_touched():
    model = WithBuffer().eval()
    c = fg.compile(model)
    infer(c, fg.randn(2, 13))
    for p in model.parameters():
        assert p.requires_grad and p.numpy().flags.writeable
    ours = list(model.parameters()) + list(model.buffers())
    theirs = list(c._frozen.parameters()) + list(c._frozen.buffers())
    assert len(ours) == len(theirs) and all(a._data is b._data for a, b in zip(ours, theirs))
    assert nn.utils.is_frozen(c._frozen) and not nn.utils.is_frozen(model)


def changes():
    def in_place(m):
        with fg.no_grad():
            m[0].weight.mul_(1.5)

    def setitem(m):
        with fg.no_grad():
            m[2].bias[1] = 4.0

    def through_data(m):
        m[4].weight.data.add_(0.25)

    def replace_data(m):
        m[0].weight.data = fg.randn(24, 13)

    def replace_parameter(m):
        m[2].weight = nn.Parameter(fg.randn(24, 24))

    def load_state_dict(m):
        m.load_state_dict({k: v * 2 for k, v in m.state_dict().items()})

    def optimizer_step(m):
        m.train()
        opt = fg.optim.SGD(m.parameters(), lr=0.1)
        m(fg.randn(4, 13)).sum().backward()
        opt.step()
        m.eval()

    def init(m):
        nn.init.normal_(m[2].weight)

    def replace_layer(m):
        m.add_module("1", nn.Sigmoid())  # a submodule replaced

    def double(m):
        m.double()

    return [in_place, setitem, through_data, replace_data, replace_parameter, load_state_dict, optimizer_step,
            init, replace_layer, double]


@pytest.mark.parametrize("change", changes(), ids=lambda f: f.__name__)
def test_cache_follows_weight_changes(change):
    model = mlp().eval()
    c = fg.compile(model)
    x = fg.randn(6, 13)
    before = infer(c, x)
    change(model)
    x = x.to(model[0].weight.dtype)
    after, expected = infer(c, x), infer(model, x)
    assert same(after, expected) and not same(after.to(before.dtype), before)


def test_train_eval_flip():
    model = nn.Sequential(nn.Linear(13, 16), nn.Dropout(0.5), nn.BatchNorm1d(16))
    c = fg.compile(model.eval())
    x = fg.randn(8, 13)
    infer(c, x)
    c.train()
    fg.manual_seed(3)
    a = infer(c, x)
    fg.manual_seed(3)
    b = infer(model, x)
    assert same(a, b) and c._frozen is None  # training mode: eager (dropout, batch statistics)
    c.eval()  # the running statistics moved in those training calls: the copy is made again
    assert same(infer(c, x), infer(model, x))
    model[2].eval()  # a submodule flipped alone
    model[1].train()
    fg.manual_seed(4)
    a = infer(c, x)
    fg.manual_seed(4)
    assert same(a, infer(model, x))


def test_forward_pre_hook_added_later_is_seen():
    model = mlp().eval()
    c = fg.compile(model)
    x = fg.randn(2, 13)
    infer(c, x)
    handle = model[2].register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    assert same(infer(c, x), infer(model, x))
    handle.remove()
    assert same(infer(c, x), infer(model, x))


@pytest.mark.parametrize("make,shape", [(mlp, (13,)), (lambda: LeNet(input_size=8), (1, 8, 8))])
def test_training_gradients_identical_to_eager(make, shape):
    model = make()
    twin = copy.deepcopy(model)
    c = fg.compile(twin)
    x = fg.randn(5, *shape)
    for m in (model, c):
        fg.manual_seed(1)
        m(x).square().sum().backward()
    assert c._frozen is None
    for p, q in zip(model.parameters(), twin.parameters()):
        assert np.array_equal(p.grad.numpy(), q.grad.numpy())
    # eval with grad on and parameters requiring grad records the graph, as eager does
    model.eval()
    c.eval()
    xg = fg.randn(2, *shape, requires_grad=True)
    y = c(xg)
    assert y.requires_grad and c._frozen is None
    y.sum().backward()
    assert xg.grad is not None


def test_deepcopy_and_compiled_optimizer_loop():
    model = mlp()
    c = fg.compile(model)
    opt = fg.optim.Adam(c.parameters(), lr=1e-2)
    x, target = fg.randn(8, 13), fg.randn(8, 5)
    for _ in range(3):
        c.train()
        opt.zero_grad()
        ((c(x) - target) ** 2).mean().backward()
        opt.step()
        c.eval()
        assert same(infer(c, x), infer(model, x))
    clone = copy.deepcopy(c)
    assert type(clone) is type(c) and clone._orig_mod is not model
    assert same(infer(clone, x), infer(model, x))


def test_warnings_free_default_call():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = fg.compile(mlp().eval())
        infer(c, fg.randn(1, 13))


class Uncopyable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = mlp()

    def forward(self, x):
        return self.body(x)

    def __deepcopy__(self, memo):
        raise TypeError("holds a handle that cannot be copied")


def test_model_that_cannot_be_frozen_runs_eager_with_a_warning():
    model = Uncopyable().eval()
    c = fg.compile(model)
    x = fg.randn(2, 13)
    with pytest.warns(UserWarning, match="cannot be frozen.*runs eager"):
        y = infer(c, x)
    assert same(y, infer(model, x)) and c._frozen is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: later calls run eager without trying again
        assert same(infer(c, x), infer(model, x))
    with pytest.warns(UserWarning, match="cannot be frozen"):
        fg.compiler.reset()
        infer(c, x)


class CountsCalls(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = mlp()
        self.register_buffer("calls", fg.zeros(1))

    def forward(self, x):
        self.calls.add_(1)  # a buffer written in eval mode: the copy writes the model's own array
        return self.body(x) + self.calls


def test_buffer_written_by_forward_is_the_models():
    model = CountsCalls().eval()
    twin = copy.deepcopy(model)
    c = fg.compile(model)
    x = fg.randn(3, 13)
    for _ in range(3):
        assert same(infer(c, x), infer(twin, x))
    assert float(model.calls) == float(twin.calls) == 3.0
