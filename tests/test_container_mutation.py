"""Sequential / ModuleList / ModuleDict mutation against torch side by side: item assignment and deletion (keys
renumbered), insert, extend, pop, append, +, +=, *, *= (keys, order, state_dict keys, error texts), and that a
mutated Sequential leaves no stale inference plan (eager, frozen, forgegrad.compile and Module.compile)."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn
from forgegrad.nn.utils.freeze import freeze

TNN = torch.nn


def layers(nn_):
    return [nn_.Linear(3, 5), nn_.ReLU(), nn_.Linear(5, 5), nn_.Tanh(), nn_.Linear(5, 2)]


def pair(kind="Sequential"):
    torch.manual_seed(0)
    t = getattr(TNN, kind)(*layers(TNN)) if kind == "Sequential" else TNN.ModuleList(layers(TNN))
    f = getattr(nn, kind)(*layers(nn)) if kind == "Sequential" else nn.ModuleList(layers(nn))
    f.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return t, f


def structure(m):
    """(key, type name) of each child, and the state_dict keys."""
    return [(k, type(v).__name__) for k, v in m._modules.items()], list(m.state_dict())


def error_of(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (the exception itself is what is compared)
        return type(e), str(e).replace("torch.nn.modules.container", "forgegrad.nn.container")
    return None


def same_error(t_fn, f_fn):
    te, fe = error_of(t_fn), error_of(f_fn)
    assert te is not None and fe is not None, (te, fe)
    assert fe == te


# each: fn(nn_, model) mutating model in place (or returning a new one)
SEQUENTIAL_EDITS = {
    "setitem": lambda nn_, m: m.__setitem__(2, nn_.Linear(5, 5)),
    "setitem negative": lambda nn_, m: m.__setitem__(-1, nn_.Linear(5, 4)),
    "delitem": lambda nn_, m: m.__delitem__(1),
    "delitem negative": lambda nn_, m: m.__delitem__(-2),
    "delitem slice": lambda nn_, m: m.__delitem__(slice(1, 4, 2)),
    "delitem all": lambda nn_, m: m.__delitem__(slice(None)),
    "insert front": lambda nn_, m: m.insert(0, nn_.Identity()),
    "insert end": lambda nn_, m: m.insert(5, nn_.Sigmoid()),
    "insert negative": lambda nn_, m: m.insert(-2, nn_.Sigmoid()),
    "pop": lambda nn_, m: m.pop(1),
    "pop negative": lambda nn_, m: m.pop(-1),
    "pop slice": lambda nn_, m: m.pop(slice(0, 2)),
    "append": lambda nn_, m: m.append(nn_.Linear(2, 2)),
    "extend": lambda nn_, m: m.extend([nn_.ReLU(), nn_.Linear(2, 3)]),
    "iadd": lambda nn_, m: m.__iadd__(nn_.Sequential(nn_.ReLU(), nn_.Linear(2, 3))),
    "add": lambda nn_, m: m + nn_.Sequential(nn_.ReLU()),
    "mul": lambda nn_, m: m * 2,
    "rmul": lambda nn_, m: 3 * m,
    "imul": lambda nn_, m: m.__imul__(2),
}


@pytest.mark.parametrize("edit", list(SEQUENTIAL_EDITS))
def test_sequential_edit_keys_as_torch(edit):
    t, f = pair()
    tr, fr = SEQUENTIAL_EDITS[edit](TNN, t), SEQUENTIAL_EDITS[edit](nn, f)
    assert structure(f) == structure(t)
    if isinstance(tr, TNN.Module):
        assert type(fr).__name__ == type(tr).__name__
        assert structure(fr) == structure(tr)
    for name in list(f._modules):
        assert getattr(f, name) is f._modules[name]  # the attribute mirrors follow the registry
    assert len(f) == len(t)


def test_sequential_mul_shares_modules():
    _, f = pair()
    doubled = f * 2
    assert doubled[0] is doubled[5] is f[0]


def test_named_sequential_deletion_renumbers_as_torch():
    t = TNN.Sequential(OrderedDict(a=TNN.ReLU(), b=TNN.Tanh(), c=TNN.Sigmoid()))
    f = nn.Sequential(OrderedDict(a=nn.ReLU(), b=nn.Tanh(), c=nn.Sigmoid()))
    del t[0]
    del f[0]
    assert structure(f) == structure(t) and not hasattr(f, "a") and not hasattr(f, "b")


SEQUENTIAL_ERRORS = {
    "getitem": lambda nn_, m: m[5],
    "getitem negative": lambda nn_, m: m[-6],
    "setitem": lambda nn_, m: m.__setitem__(7, nn_.ReLU()),
    "setitem non-module": lambda nn_, m: m.__setitem__(0, 3),
    "delitem": lambda nn_, m: m.__delitem__(-9),
    "pop": lambda nn_, m: m.pop(5),
    "insert": lambda nn_, m: m.insert(7, nn_.ReLU()),
    "insert negative": lambda nn_, m: m.insert(-6, nn_.ReLU()),
    "add list": lambda nn_, m: m + [nn_.ReLU()],
    "iadd list": lambda nn_, m: m.__iadd__([nn_.ReLU()]),
    "mul zero": lambda nn_, m: m * 0,
    "mul float": lambda nn_, m: m * 1.5,
    "imul negative": lambda nn_, m: m.__imul__(-1),
    "index str": lambda nn_, m: m["0"],
}


@pytest.mark.parametrize("case", list(SEQUENTIAL_ERRORS))
def test_sequential_errors_as_torch(case):
    t, f = pair()
    te, fe = error_of(lambda: SEQUENTIAL_ERRORS[case](TNN, t)), error_of(lambda: SEQUENTIAL_ERRORS[case](nn, f))
    assert te is not None and fe is not None and fe[0] is te[0], (te, fe)
    if case not in ("setitem non-module", "index str"):  # (those two name torch's / forgegrad's own types)
        assert fe == te
    assert structure(f) == structure(t)  # nothing changed


def test_sequential_insert_refuses_a_non_module():
    t, f = pair()
    assert error_of(lambda: t.insert(0, 3))[0] is error_of(lambda: f.insert(0, 3))[0] is AssertionError


# ---- no stale inference plan ------------------------------------------------------------------------------------
PLAN_EDITS = ["setitem", "setitem negative", "delitem", "delitem slice", "insert front", "insert negative", "pop",
              "pop negative", "iadd", "imul"]


def run_both(t, f, x, frozen=None):
    with torch.no_grad():
        want = t(torch.tensor(x)).numpy()
    with fg.no_grad():
        got = (frozen or f)(fg.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return got


def sync(t, f):
    """forgegrad's model takes torch's values (the new layers' too)."""
    f.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})


def square_pair():
    """5 -> 5 layers throughout, so every edit keeps the model runnable."""
    torch.manual_seed(1)
    t = TNN.Sequential(TNN.Linear(5, 5), TNN.ReLU(), TNN.Linear(5, 5), TNN.Tanh(), TNN.Linear(5, 5))
    f = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 5))
    sync(t, f)
    return t.eval(), f.eval()


SQUARE_EDITS = {
    "setitem": lambda nn_, m: m.__setitem__(2, nn_.Linear(5, 5)),
    "setitem negative": lambda nn_, m: m.__setitem__(-2, nn_.Sigmoid()),
    "delitem": lambda nn_, m: m.__delitem__(1),
    "delitem slice": lambda nn_, m: m.__delitem__(slice(0, 2)),
    "insert front": lambda nn_, m: m.insert(0, nn_.Linear(5, 5)),
    "insert negative": lambda nn_, m: m.insert(-1, nn_.ReLU()),
    "pop": lambda nn_, m: m.pop(3),
    "pop negative": lambda nn_, m: m.pop(-1),
    "iadd": lambda nn_, m: m.__iadd__(nn_.Sequential(nn_.ReLU(), nn_.Linear(5, 5))),
    "imul": lambda nn_, m: m.__imul__(2),
}


@pytest.mark.parametrize("edit", list(SQUARE_EDITS))
def test_mutated_sequential_no_stale_plan(edit):
    t, f = square_pair()
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    before = run_both(t, f, x)  # builds the cached plan
    SQUARE_EDITS[edit](TNN, t)
    SQUARE_EDITS[edit](nn, f)
    t.eval(), f.eval()
    sync(t, f)
    assert not np.allclose(run_both(t, f, x), before)


def eager_loop(model, x):
    """The modules one by one with grad on: no cached plan involved."""
    y = fg.tensor(x)
    for m in model:
        y = m(y)
    return y.detach().numpy()


@pytest.mark.parametrize("edit", ["setitem", "delitem", "insert negative", "insert front", "pop", "iadd", "imul"])
def test_mutated_frozen_sequential_no_stale_plan(edit):
    _, f = square_pair()
    frozen = freeze(f)  # read-only weights, a native one-call plan
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    with fg.no_grad():
        before = frozen(fg.tensor(x)).numpy()
    for m in (f, frozen):
        fg.manual_seed(5)  # the same new layers in both
        SQUARE_EDITS[edit](nn, m)
    with fg.no_grad():
        got = frozen(fg.tensor(x)).numpy()
    assert frozen.__dict__["_inference_plan"][0] == tuple(frozen._modules.values())
    np.testing.assert_allclose(got, eager_loop(f, x), rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, before)


@pytest.mark.parametrize("edit", ["setitem", "delitem", "delitem slice", "insert front", "pop negative", "iadd"])
@pytest.mark.parametrize("how", ["forgegrad.compile", "Module.compile"])
def test_compiled_model_sees_container_mutation(edit, how):
    t, f = square_pair()
    for p in f.parameters():
        p.requires_grad = False
    compiled = fg.compile(f) if how == "forgegrad.compile" else f
    if how == "Module.compile":
        nn.Module.compile(f)
    x = np.random.default_rng(2).standard_normal((2, 5)).astype(np.float32)
    run_both(t, f, x, compiled)
    impl = compiled if how == "forgegrad.compile" else f._compiled_call_impl
    first = impl._frozen
    assert first is not None
    SQUARE_EDITS[edit](TNN, t)
    SQUARE_EDITS[edit](nn, f)
    t.eval(), f.eval()
    for p in f.parameters():
        p.requires_grad = False
    sync(t, f)
    run_both(t, f, x, compiled)
    assert impl._frozen is not None and impl._frozen is not first  # made again from the mutated model


# ---- ModuleList -----------------------------------------------------------------------------------------------------
LIST_EDITS = {
    "setitem": lambda nn_, m: m.__setitem__(1, nn_.Linear(2, 2)),
    "setitem negative": lambda nn_, m: m.__setitem__(-1, nn_.Sigmoid()),
    "delitem": lambda nn_, m: m.__delitem__(0),
    "delitem negative": lambda nn_, m: m.__delitem__(-3),
    "delitem slice": lambda nn_, m: m.__delitem__(slice(None, None, 2)),
    "insert": lambda nn_, m: m.insert(2, nn_.Identity()),
    "insert end": lambda nn_, m: m.insert(5, nn_.Identity()),
    "pop": lambda nn_, m: m.pop(3),
    "pop slice": lambda nn_, m: m.pop(slice(1, 3)),
    "iadd": lambda nn_, m: m.__iadd__([nn_.ReLU(), nn_.Linear(1, 1)]),
    "add": lambda nn_, m: m + [nn_.ReLU()],
    "add modulelist": lambda nn_, m: m + nn_.ModuleList([nn_.Tanh()]),
    "extend": lambda nn_, m: m.extend((nn_.ReLU(),)),
}


@pytest.mark.parametrize("edit", list(LIST_EDITS))
def test_modulelist_edit_keys_as_torch(edit):
    t, f = pair("ModuleList")
    tr, fr = LIST_EDITS[edit](TNN, t), LIST_EDITS[edit](nn, f)
    assert structure(f) == structure(t)
    if isinstance(tr, TNN.Module):
        assert type(fr).__name__ == type(tr).__name__ and structure(fr) == structure(tr)
    for name in list(f._modules):
        assert getattr(f, name) is f._modules[name]


LIST_ERRORS = {
    "getitem": lambda nn_, m: m[5],
    "setitem": lambda nn_, m: m.__setitem__(-6, nn_.ReLU()),
    "delitem": lambda nn_, m: m.__delitem__(5),
    "pop": lambda nn_, m: m.pop(-7),
    "extend": lambda nn_, m: m.extend(3),
    "iadd": lambda nn_, m: m.__iadd__(nn_.ReLU()),
}


@pytest.mark.parametrize("case", list(LIST_ERRORS))
def test_modulelist_errors_as_torch(case):
    t, f = pair("ModuleList")
    same_error(lambda: LIST_ERRORS[case](TNN, t), lambda: LIST_ERRORS[case](nn, f))
    assert structure(f) == structure(t)


def test_modulelist_insert_out_of_range_refused():
    _, f = pair("ModuleList")
    with pytest.raises(IndexError, match="Index out of range: 9"):
        f.insert(9, nn.ReLU())
    with pytest.raises(TypeError, match="is not a Module subclass"):
        f.insert(0, 3)
    f.insert(-1, nn.Identity())  # as list.insert
    assert [type(m).__name__ for m in f][-2:] == ["Identity", "Linear"]


# ---- ModuleDict -----------------------------------------------------------------------------------------------------
def dict_pair():
    return (TNN.ModuleDict({"a": TNN.Linear(2, 3), "b": TNN.ReLU(), "c": TNN.Linear(3, 1)}),
            nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.ReLU(), "c": nn.Linear(3, 1)}))


DICT_EDITS = {
    "delitem": lambda nn_, m: m.__delitem__("b"),
    "pop": lambda nn_, m: m.pop("a"),
    "clear": lambda nn_, m: m.clear(),
    "update mapping": lambda nn_, m: m.update({"d": nn_.Tanh(), "a": nn_.Linear(2, 2)}),
    "update pairs": lambda nn_, m: m.update([("z", nn_.Tanh()), ["b", nn_.Linear(1, 1)]]),
    "update moduledict": lambda nn_, m: m.update(nn_.ModuleDict({"e": nn_.Sigmoid()})),
    "update ordereddict": lambda nn_, m: m.update(OrderedDict(y=nn_.Identity(), x=nn_.Identity())),
}


@pytest.mark.parametrize("edit", list(DICT_EDITS))
def test_moduledict_edit_as_torch(edit):
    t, f = dict_pair()
    tr, fr = DICT_EDITS[edit](TNN, t), DICT_EDITS[edit](nn, f)
    assert structure(f) == structure(t)
    assert type(fr).__name__ == type(tr).__name__
    assert [k in f for k in "abcdexyz"] == [k in t for k in "abcdexyz"]
    assert [hasattr(f, k) for k in "abcdexyz"] == [hasattr(t, k) for k in "abcdexyz"]


def test_moduledict_init_from_pairs_as_torch():
    t = TNN.ModuleDict([("q", TNN.ReLU()), ("p", TNN.Linear(1, 2))])
    f = nn.ModuleDict([("q", nn.ReLU()), ("p", nn.Linear(1, 2))])
    assert structure(f) == structure(t)


DICT_ERRORS = {
    "delitem missing": lambda nn_, m: m.__delitem__("nope"),
    "pop missing": lambda nn_, m: m.pop("nope"),
    "update int": lambda nn_, m: m.update(3),
    "update non-iterable element": lambda nn_, m: m.update([3]),
    "update bad length": lambda nn_, m: m.update([("a", nn_.ReLU(), 1)]),
}


@pytest.mark.parametrize("case", list(DICT_ERRORS))
def test_moduledict_errors_as_torch(case):
    t, f = dict_pair()
    same_error(lambda: DICT_ERRORS[case](TNN, t), lambda: DICT_ERRORS[case](nn, f))
    assert structure(f) == structure(t)
