"""torch 2.13's nn.Module access methods against torch side by side (the same model built in both): get_submodule,
get_parameter, get_buffer, set_submodule, register_module (results and error texts), extra state in state_dict /
load_state_dict / forgegrad.save, to_empty, type, share_memory and the in-place Module.compile."""
import io
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn

TNN = torch.nn


def build(nn_):
    """The same structure in torch.nn or forgegrad.nn: nested Sequentials, a BatchNorm (buffers, an int one), a
    buffer registered by hand and a plain (non-module) attribute."""
    torch.manual_seed(0)
    fg.manual_seed(0)
    model = nn_.Sequential(OrderedDict(
        body=nn_.Sequential(nn_.Linear(3, 4), nn_.BatchNorm1d(4), nn_.ReLU()),
        head=nn_.Linear(4, 2)))
    model.tag = 5
    return model


def both():
    t, f = build(TNN), build(nn)
    f.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return t, f


def error_of(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (the exception itself is what is compared)
        return type(e), str(e)
    return None


def same_error(t_fn, f_fn):
    te, fe = error_of(t_fn), error_of(f_fn)
    assert te is not None and fe is not None, (te, fe)
    assert fe == te


# ---- get_submodule / get_parameter / get_buffer ----------------------------------------------------------------
@pytest.mark.parametrize("target", ["", "body", "body.0", "body.1", "head"])
def test_get_submodule(target):
    t, f = both()
    tm, fm = t.get_submodule(target), f.get_submodule(target)
    assert type(fm).__name__ == type(tm).__name__
    assert fm is dict(f.named_modules())[target]


@pytest.mark.parametrize("target", ["nope", "body.9", "body.0.weight", "head.bias.x", "tag", "body.0.nope.x"])
def test_get_submodule_errors(target):
    t, f = both()
    same_error(lambda: t.get_submodule(target), lambda: f.get_submodule(target))


@pytest.mark.parametrize("target", ["body.0.weight", "body.1.bias", "head.bias"])
def test_get_parameter(target):
    t, f = both()
    p = f.get_parameter(target)
    assert isinstance(p, nn.Parameter) and p is dict(f.named_parameters())[target]
    np.testing.assert_array_equal(p.detach().numpy(), t.get_parameter(target).detach().numpy())


@pytest.mark.parametrize("target", ["body.1.running_mean", "body.0.nope", "tag", "nope.weight", "body.0"])
def test_get_parameter_errors(target):
    t, f = both()
    same_error(lambda: t.get_parameter(target), lambda: f.get_parameter(target))


@pytest.mark.parametrize("target", ["body.1.running_mean", "body.1.running_var", "body.1.num_batches_tracked"])
def test_get_buffer(target):
    t, f = both()
    b = f.get_buffer(target)
    assert b is dict(f.named_buffers())[target]
    np.testing.assert_array_equal(b.numpy(), t.get_buffer(target).numpy())


@pytest.mark.parametrize("target", ["body.0.weight", "body.1.nope", "tag", "head"])
def test_get_buffer_errors(target):
    t, f = both()
    same_error(lambda: t.get_buffer(target), lambda: f.get_buffer(target))


# ---- set_submodule / register_module ----------------------------------------------------------------------------
@pytest.mark.parametrize("target,strict", [("body.0", False), ("head", True), ("body.extra", False), ("new", False)])
def test_set_submodule(target, strict):
    t, f = both()
    t.set_submodule(target, TNN.Linear(3, 7), strict=strict)
    f.set_submodule(target, nn.Linear(3, 7), strict=strict)
    assert list(f.state_dict()) == list(t.state_dict())
    assert isinstance(f.get_submodule(target), nn.Linear) and f.get_submodule(target).out_features == 7


@pytest.mark.parametrize("target,strict", [("", False), ("body.extra", True), ("tag", False), ("nope.x", False),
                                           ("body.0.weight", False)])
def test_set_submodule_errors(target, strict):
    t, f = both()
    same_error(lambda: t.set_submodule(target, TNN.ReLU(), strict=strict),
               lambda: f.set_submodule(target, nn.ReLU(), strict=strict))


def test_set_submodule_refuses_a_non_module():
    t, f = both()
    same_error(lambda: t.set_submodule("head", 3), lambda: f.set_submodule("head", 3))


def test_register_module_is_add_module():
    t, f = both()
    t.register_module("extra", TNN.Linear(2, 2))
    f.register_module("extra", nn.Linear(2, 2))
    assert list(f.state_dict()) == list(t.state_dict())
    with pytest.raises(TypeError, match="is not a Module subclass"):
        f.register_module("bad", 3)


def test_torch_class_attributes():
    assert nn.Module.call_super_init is TNN.Module.call_super_init is False
    assert nn.Module.dump_patches is TNN.Module.dump_patches is False
    assert nn.Module.T_destination.__bound__ is not None


class _Mixin:
    def __init__(self, *args, **kwargs):
        self.mixin_args = (args, kwargs)


@pytest.mark.parametrize("lib", ["fg", "torch"])
def test_call_super_init_passes_arguments_on(lib):
    base = nn.Module if lib == "fg" else TNN.Module

    class Cooperative(base, _Mixin):
        call_super_init = True

    m = Cooperative(1, k=2)
    assert m.mixin_args == ((1,), {"k": 2}) and m.training and list(m.parameters()) == []
    m.lin = nn.Linear(2, 2) if lib == "fg" else TNN.Linear(2, 2)  # Module's state is set up
    assert len(list(m.parameters())) == 2

    class Sub(base):
        call_super_init = True

        def __init__(self, n):
            super().__init__()
            self.n = n
    assert Sub(4).n == 4

    class MixinFirst(_Mixin, base):  # the mixin sets an attribute before Module.__init__ runs: allowed
        call_super_init = True

        def __init__(self):
            super().__init__(5)
    assert MixinFirst().mixin_args == ((5,), {})


def _type_error(make):
    with pytest.raises(TypeError) as e:
        make()
    return str(e.value)


def test_call_super_init_false_refuses_arguments_as_torch():
    def cases(base):
        class Plain(base, _Mixin):
            pass

        class ToObject(base):
            call_super_init = True
        return [lambda: Plain(1), lambda: Plain(k=2), lambda: Plain(1, 2, k=3), lambda: base(3), lambda: ToObject(3)]
    for ours, theirs in zip(cases(nn.Module), cases(TNN.Module)):
        assert _type_error(ours) == _type_error(theirs)


def test_assigning_registered_kinds_before_module_init_raises_as_torch():
    def run(lib_nn, tensor):
        class Early(lib_nn.Module):
            def __init__(self):
                self.plain = 3  # allowed
                msgs = []
                for value in (lib_nn.Parameter(tensor([1.0])), lib_nn.Linear(2, 2), lib_nn.Buffer(tensor([1.0]))):
                    with pytest.raises(AttributeError) as e:
                        self.x = value
                    msgs.append(str(e.value))
                self.msgs = msgs
        return Early().msgs
    assert run(nn, fg.tensor) == run(TNN, torch.tensor)


def test_torch_module_names_present():
    names = ["get_submodule", "get_parameter", "get_buffer", "set_submodule", "register_module", "get_extra_state",
             "set_extra_state", "to_empty", "share_memory", "type", "compile", "call_super_init", "dump_patches",
             "T_destination"]
    assert all(hasattr(TNN.Module, n) for n in names)
    missing = [n for n in names if not hasattr(nn.Module, n)]
    assert not missing


# ---- extra state ---------------------------------------------------------------------------------------------------
def stateful(nn_, settable=True):
    class Counter(nn_.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn_.Linear(2, 2)
            self.steps = 0
            self.history = [1.5, 2.5]

        def get_extra_state(self):
            return {"steps": self.steps, "history": list(self.history), "table": np.arange(3) * self.steps}

    if settable:
        def set_extra_state(self, state):
            self.steps = int(state["steps"])
            self.history = list(state["history"])
            self.table = np.asarray(state["table"])
        Counter.set_extra_state = set_extra_state

    outer = nn_.Sequential(nn_.Linear(2, 2), Counter())
    outer[1].steps = 7
    return outer


def test_extra_state_keys_and_order_as_torch():
    t, f = stateful(TNN), stateful(nn)
    assert list(f.state_dict()) == list(t.state_dict())
    assert "1._extra_state" in f.state_dict()
    assert f.state_dict()["1._extra_state"]["steps"] == t.state_dict()["1._extra_state"]["steps"] == 7


def test_extra_state_round_trip():
    src, dst = stateful(nn), stateful(nn)
    dst[1].steps = 0
    res = dst.load_state_dict(src.state_dict())
    assert (res.missing_keys, res.unexpected_keys) == ([], [])
    assert dst[1].steps == 7 and dst[1].history == [1.5, 2.5]
    np.testing.assert_array_equal(dst[1].table, np.arange(3) * 7)
    np.testing.assert_array_equal(dst[1].lin.weight.numpy(), src[1].lin.weight.numpy())


def test_extra_state_missing_and_unexpected_as_torch():
    t, f = stateful(TNN), stateful(nn)
    t_sd = {k: v for k, v in t.state_dict().items() if k != "1._extra_state"}
    f_sd = {k: v for k, v in f.state_dict().items() if k != "1._extra_state"}
    tr, fr = t.load_state_dict(t_sd, strict=False), f.load_state_dict(f_sd, strict=False)
    assert (fr.missing_keys, fr.unexpected_keys) == (tr.missing_keys, tr.unexpected_keys) == (["1._extra_state"], [])
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "1._extra_state"'):
        f.load_state_dict(f_sd)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "1._extra_state"'):
        t.load_state_dict(t_sd)
    # get_extra_state without set_extra_state: the entry is saved, and unexpected when loaded back
    tg, fg_ = stateful(TNN, settable=False), stateful(nn, settable=False)
    tr, fr = tg.load_state_dict(tg.state_dict(), strict=False), fg_.load_state_dict(fg_.state_dict(), strict=False)
    assert (fr.missing_keys, fr.unexpected_keys) == (tr.missing_keys, tr.unexpected_keys) == ([], ["1._extra_state"])


def test_extra_state_through_forgegrad_save_load():
    src, dst = stateful(nn), stateful(nn)
    buf = io.BytesIO()
    fg.save(src.state_dict(), buf)
    buf.seek(0)
    loaded = fg.load(buf)
    dst.load_state_dict(loaded)
    assert dst[1].steps == 7 and dst[1].history == [1.5, 2.5]
    np.testing.assert_array_equal(dst[1].table, np.arange(3) * 7)
    np.testing.assert_array_equal(dst[0].weight.numpy(), src[0].weight.numpy())


def test_load_state_dict_does_not_call_get_extra_state_as_torch():
    models = stateful(TNN), stateful(nn)
    for m in models:
        state = m.state_dict()
        calls = []
        counter = m[1]
        type(counter).get_extra_state = (lambda get: lambda self: calls.append(1) or get(self))(
            type(counter).get_extra_state)
        m.load_state_dict(state)
        assert calls == []


def test_extra_state_that_cannot_be_saved_is_refused_clearly():
    class Opaque(nn.Module):
        def get_extra_state(self):
            return object()

    with pytest.raises(TypeError, match=r"_extra_state.*cannot be saved"):
        fg.save(nn.Sequential(Opaque()).state_dict(), io.BytesIO())


def test_base_extra_state_methods_raise():
    with pytest.raises(RuntimeError):
        nn.Linear(2, 2).get_extra_state()
    with pytest.raises(RuntimeError):
        nn.Linear(2, 2).set_extra_state({})
    assert "_extra_state" not in "".join(nn.Linear(2, 2).state_dict())


# ---- to_empty / type / share_memory ---------------------------------------------------------------------------
def test_to_empty_materialises_a_meta_model():
    t = build(TNN)
    with fg.device("meta"):
        f = build(nn)
    tm = build(TNN).to("meta")
    params = list(f.parameters())
    assert f.to_empty(device="cpu") is f
    tm.to_empty(device="cpu")
    assert [p is q for p, q in zip(params, f.parameters())] == [True] * len(params)  # the same Parameters
    for (fk, fv), (tk, tv) in zip(f.state_dict().items(), tm.state_dict().items()):
        assert fk == tk and fv.device.type == tv.device.type == "cpu"
        assert tuple(fv.shape) == tuple(tv.shape) and str(fv.dtype).split(".")[-1] == str(tv.dtype).split(".")[-1]
    f.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    f.eval()
    t.eval()
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(f(fg.tensor(x)).detach().numpy(), t(torch.tensor(x)).detach().numpy(), rtol=1e-5,
                               atol=1e-6)


def test_to_empty_recurse_false_and_to_meta():
    with fg.device("meta"):
        f = nn.Sequential(nn.Linear(2, 3))
    f.to_empty(device="cpu", recurse=False)  # a Sequential has no tensors of its own
    assert f[0].weight.device.type == "meta"
    f[0].to_empty(device="cpu", recurse=False)
    assert f[0].weight.device.type == "cpu"
    f.to_empty(device="meta")
    assert f[0].weight.device.type == f[0].bias.device.type == "meta"


def test_to_empty_needs_device_by_keyword_as_torch():
    t, f = both()
    for call in (lambda m: m.to_empty(), lambda m: m.to_empty("cpu")):
        assert error_of(lambda: call(t))[0] is error_of(lambda: call(f))[0] is TypeError


@pytest.mark.parametrize("name", ["float64", "float16", "torch.DoubleTensor"])
def test_type_casts_every_tensor_as_torch(name):
    t, f = both()
    t.head.weight.grad = torch.ones(2, 4)
    f.head.weight.grad = fg.ones(2, 4)
    tt = getattr(torch, name) if not name.startswith("torch.") else name
    ft = getattr(fg, name) if not name.startswith("torch.") else name
    weight = f.head.weight
    assert f.type(ft) is f
    t.type(tt)
    assert f.head.weight is weight
    for (fk, fv), (tk, tv) in zip(f.state_dict().items(), t.state_dict().items()):
        assert fk == tk and str(fv.dtype).split(".")[-1] == str(tv.dtype).split(".")[-1], fk
        np.testing.assert_array_equal(fv.numpy(), tv.numpy())
    assert str(f.head.weight.grad.dtype).split(".")[-1] == str(t.head.weight.grad.dtype).split(".")[-1]


def test_type_refuses_an_unknown_name_and_changes_nothing():
    _, f = both()
    with pytest.raises(TypeError):
        f.type("torch.NoSuchTensor")
    assert all(p.dtype == fg.float32 for p in f.parameters())


def test_share_memory_returns_the_module():
    t, f = both()
    before = [p.numpy().copy() for p in f.parameters()]
    assert f.share_memory() is f and t.share_memory() is t
    assert all(np.array_equal(a, p.numpy()) for a, p in zip(before, f.parameters()))


# ---- compile in place ------------------------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        return self.b(self.a(x).relu())


def test_compile_in_place_returns_none_as_torch():
    assert TNN.Linear(2, 2).compile() is None
    m = Net()
    assert m.compile() is None
    assert m._compiled_call_impl is not None and TNN.Linear(2, 2)._compiled_call_impl is None
    assert nn.Linear(2, 2)._compiled_call_impl is None


@pytest.mark.parametrize("make", [Net, lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))])
def test_compile_in_place_runs_frozen_and_matches_eager(make):
    fg.manual_seed(1)
    m = make().eval()
    x = fg.randn(4, 6)
    with fg.no_grad():
        ref = m(x).numpy()
    m.compile(mode="max-autotune")
    with fg.no_grad():
        y = m(x).numpy()
    assert m._compiled_call_impl._frozen is not None  # the call took the frozen path
    np.testing.assert_array_equal(y, ref)
    # a weight change is seen
    with fg.no_grad():
        list(m.parameters())[0].mul_(2.0)
    m.compile(disable=True)
    with fg.no_grad():
        ref2 = m(x).numpy()
    m.compile()
    with fg.no_grad():
        m(x)
        list(m.parameters())[0].mul_(0.5)
        m.compile(disable=True)
        ref3 = m(x).numpy()
        m.compile()
        np.testing.assert_array_equal(m(x).numpy(), ref3)
    assert not np.array_equal(ref2, ref3)


def test_compile_in_place_training_matches_eager_gradients():
    fg.manual_seed(2)
    eager, compiled = Net(), Net()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    x = fg.randn(5, 6)
    for m in (eager, compiled):
        m(x).sum().backward()
    assert compiled._compiled_call_impl._frozen is None  # training mode: the model ran itself
    for p, q in zip(eager.parameters(), compiled.parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())


def test_compile_in_place_hooks_run_once_and_copies_stay_plain():
    import copy
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    calls = []
    handle = m.register_forward_pre_hook(lambda mod, args: calls.append(mod))
    m.compile()
    with fg.no_grad():
        m(fg.randn(2, 6))
    assert calls == [m]
    frozen = m._compiled_call_impl._frozen
    assert "_compiled_call_impl" not in frozen.__dict__ and "forward" not in frozen.__dict__
    handle.remove()  # (a lambda does not pickle)
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):  # its compiled call is its own (over the copy)
        assert clone._compiled_call_impl._orig_mod is clone
        with fg.no_grad():
            np.testing.assert_array_equal(clone(fg.ones(2, 6)).numpy(), m(fg.ones(2, 6)).numpy())
        assert clone._compiled_call_impl._frozen is not None


def test_forgegrad_compile_of_a_model_compiled_in_place():
    fg.manual_seed(3)
    m = Net().eval()
    m.a.compile()  # a submodule compiled in place, then the whole model by forgegrad.compile
    opt = fg.compile(m)
    x = fg.randn(3, 6)
    with fg.no_grad():
        y = opt(x).numpy()
        m.a.compile(disable=True)
        np.testing.assert_array_equal(y, m(x).numpy())
    assert all("_compiled_call_impl" not in mod.__dict__ for mod in opt._frozen.modules())


def test_compile_in_place_argument_errors():
    m = Net()
    with pytest.raises(RuntimeError, match="unrecognized mode"):
        m.compile(mode="fastest")
    with pytest.raises(TypeError):
        m.compile(Net())
    assert m._compiled_call_impl is None


def test_sequential_compile_keras_or_torch():
    m = nn.Sequential(nn.Linear(4, 1))
    assert m.compile() is None and m._compiled_call_impl is not None  # torch's Module.compile
    m.compile(disable=True)
    assert m._compiled_call_impl is None
    m.compile(loss="mse", optimizer="sgd", lr=0.1)  # Keras's
    assert m._compiled_call_impl is None
