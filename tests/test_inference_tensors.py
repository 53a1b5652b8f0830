"""Inference tensors against torch: which tensors are inference tensors (made inside inference_mode, views of them,
in the mode or after it), and torch's RuntimeErrors outside the mode for an in-place write, requires_grad_() and an
op recorded by autograd that saves one for backward; clone(), pickle and deepcopy give normal tensors."""
from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
import forgegrad.nn.functional as F


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _made_in_mode(lib, arr, **kw):
    with lib.inference_mode():
        return lib.tensor(arr, **kw) * 1  # an op's output, as most inference tensors are


def _message(fn):
    with pytest.raises(RuntimeError) as e:
        fn()
    return str(e.value)


def test_tensors_made_in_the_mode_and_out_of_it():
    def kinds(lib):
        x = lib.ones(3)
        with lib.inference_mode():
            a, b, c = lib.ones(3), x * 2, lib.tensor([1.0, 2.0])
            with lib.no_grad():
                d = lib.ones(2)  # no_grad inside keeps the mode
            with lib.inference_mode(False):
                e = lib.ones(2)  # inference_mode(False): normal tensors
                ev = a.view(3)  # ... but a view of an inference tensor is one
        f = lib.inference_mode()(lambda: x + 1)()  # as a decorator
        return [t.is_inference() for t in (x, a, b, c, d, e, ev, f)] + [lib.is_inference(a), lib.is_inference(x)]
    assert kinds(fg) == kinds(torch) == [False, True, True, True, True, False, True, True, True, False]


_VIEWS = {
    "view": lambda t: t.view(-1), "reshape": lambda t: t.reshape(2, -1), "flatten": lambda t: t.flatten(),
    "T": lambda t: t.T, "t": lambda t: t.t(), "transpose": lambda t: t.transpose(0, 1),
    "permute": lambda t: t.permute(1, 0), "mT": lambda t: t.mT, "movedim": lambda t: t.movedim(0, 1),
    "unsqueeze": lambda t: t.unsqueeze(0), "squeeze": lambda t: t[None].squeeze(0),
    "expand": lambda t: t[None].expand(2, -1, -1), "slice": lambda t: t[1:], "int index": lambda t: t[0],
    "narrow": lambda t: t.narrow(1, 1, 2), "split": lambda t: t.split(1)[1], "chunk": lambda t: t.chunk(2, 1)[1],
    "unbind": lambda t: t.unbind(0)[1], "unfold": lambda t: t.unfold(1, 2, 1), "view_as": lambda t: t.view_as(t),
    "detach": lambda t: t.detach(), "data": lambda t: t.data, "contiguous": lambda t: t.contiguous(),
    "diagonal": lambda t: t.diagonal(), "diagonal(-1, 1, 0)": lambda t: t.diagonal(-1, 1, 0),
    "as_strided": lambda t: t.as_strided((2, 2), (1, 4), 1),
    "as_strided of a slice": lambda t: t[1:].as_strided((3,), (2,)), "select": lambda t: t.select(1, 2),
    "swapaxes": lambda t: t.swapaxes(0, 1), "unflatten": lambda t: t.unflatten(1, (2, 2)),
    # not views: new storage, normal tensors outside the mode
    "clone": lambda t: t.clone(), "add": lambda t: t + 1, "fancy index": lambda t: t[[0, 2]],
    "mask": lambda t: t[t > 0], "sum": lambda t: t.sum(), "to float64": lambda t: t.to(t.dtype) * 1.0,
}


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("name", list(_VIEWS))
def test_views_of_inference_tensors_are_inference_tensors(name, dtype):
    arr = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    op = _VIEWS[name]

    def kinds(lib):
        with lib.inference_mode():
            inf = lib.tensor(arr)
            normal_in_mode = op(normal)  # a view made in the mode of a normal tensor is normal
            inf_in_mode = op(inf)
        return [op(inf).is_inference(), inf_in_mode.is_inference(), normal_in_mode.is_inference(),
                op(normal).is_inference()]
    normal = fg.tensor(arr)
    ours = kinds(fg)
    normal = torch.tensor(arr)
    assert ours == kinds(torch)


_INPLACE = {
    "add_": lambda t: t.add_(1), "+=": lambda t: t.__iadd__(1), "mul_": lambda t: t.mul_(2),
    "setitem": lambda t: t.__setitem__(0, 5.0), "zero_": lambda t: t.zero_(), "fill_": lambda t: t.fill_(7.0),
    "copy_": lambda t: t.copy_(t * 0), "clamp_": lambda t: t.clamp_(0, 1), "uniform_": lambda t: t.uniform_(),
    "unsqueeze_": lambda t: t.unsqueeze_(0), "through a view": lambda t: t[1:].mul_(2),
    "nn.init.zeros_": "init",
}


@pytest.mark.parametrize("name", list(_INPLACE))
def test_inplace_update_outside_the_mode_raises_as_torch(name):
    arr = _rand(3, seed=1)

    def write(lib, t):
        if name == "nn.init.zeros_":
            return lib.nn.init.zeros_(t)
        return _INPLACE[name](t)
    a, ta = _made_in_mode(fg, arr), _made_in_mode(torch, arr)
    ours = _message(lambda: write(fg, a))
    assert ours == _message(lambda: write(torch, ta))
    assert ours.startswith("Inplace update to inference tensor outside InferenceMode is not allowed")
    # (torch writes the values before it raises; forgegrad refuses first, so the tensor keeps its values)
    np.testing.assert_array_equal(a.numpy(), arr)
    with fg.no_grad():  # no_grad is not the mode
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor"):
            write(fg, a)


def test_inplace_allowed_inside_the_mode_and_on_normal_tensors():
    def run(lib):
        x = lib.ones(3)
        with lib.inference_mode():
            a = lib.ones(3)
            a.add_(1)  # an inference tensor, in the mode
            x.mul_(3)  # a normal tensor, in the mode
            v = x[1:]  # a view made in the mode of a normal tensor: normal, writable after the mode
        v.add_(1)
        c = a.clone()  # a normal tensor
        c.add_(1)
        return [a.numpy().tolist(), x.numpy().tolist(), c.numpy().tolist(), c.is_inference()]
    assert run(fg) == run(torch)


def test_requires_grad_outside_the_mode_raises_as_torch():
    a, ta = _made_in_mode(fg, _rand(3)), _made_in_mode(torch, _rand(3))
    ours = _message(lambda: a.requires_grad_())
    assert ours == _message(lambda: ta.requires_grad_())
    assert ours == "Setting requires_grad=True on inference tensor outside InferenceMode is not allowed."
    assert not a.requires_grad_(False).requires_grad and not ta.requires_grad_(False).requires_grad
    with fg.inference_mode(), torch.inference_mode():  # in the mode it may require grad
        b, tb = fg.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    assert b.requires_grad and tb.requires_grad and b.is_inference() and tb.is_inference()


def _save_cases(lib, fn):
    """(name, op) pairs on x, w (require grad), xi, wi, yi, ti (inference tensors)."""
    return {
        "linear(xi, w)": lambda x, w, xi, wi, yi, ti: fn.linear(xi, w),
        "linear(x, wi)": lambda x, w, xi, wi, yi, ti: fn.linear(x, wi),
        "x * xi": lambda x, w, xi, wi, yi, ti: x * xi,
        "xi * x": lambda x, w, xi, wi, yi, ti: xi * x,
        "x / xi": lambda x, w, xi, wi, yi, ti: x / xi,
        "x @ wi.T": lambda x, w, xi, wi, yi, ti: x @ wi.T,
        "x ** xi": lambda x, w, xi, wi, yi, ti: x.abs() ** xi,
        "maximum": lambda x, w, xi, wi, yi, ti: lib.maximum(x, xi),
        "cross_entropy target": lambda x, w, xi, wi, yi, ti: fn.cross_entropy(x @ w.T, ti),
        "mse target": lambda x, w, xi, wi, yi, ti: fn.mse_loss(x @ w.T, yi),
        "index with xi's indices": lambda x, w, xi, wi, yi, ti: x[:, ti],
        "gather": lambda x, w, xi, wi, yi, ti: x.gather(1, ti[:, None]),
        "embedding": lambda x, w, xi, wi, yi, ti: fn.embedding(ti, w),
        # nothing of the inference tensor saved: these run, with torch's gradients
        "x + xi": lambda x, w, xi, wi, yi, ti: x + xi,
        "x - xi": lambda x, w, xi, wi, yi, ti: x - xi,
        "cat": lambda x, w, xi, wi, yi, ti: lib.cat([x, xi]),
        "where": lambda x, w, xi, wi, yi, ti: lib.where(xi > 0, x, xi),
        "l1 target": lambda x, w, xi, wi, yi, ti: fn.l1_loss(x @ w.T, yi),
        "x.relu() + xi.relu()": lambda x, w, xi, wi, yi, ti: x.relu() + xi.relu(),
    }


@pytest.mark.parametrize("name", list(_save_cases(fg, F)))
def test_saving_an_inference_tensor_for_backward_raises_as_torch(name):
    arrs = [_rand(2, 4, seed=1), _rand(3, 4, seed=2), _rand(2, 4, seed=3), _rand(3, 4, seed=4), _rand(2, 3, seed=5)]

    def run(lib, fn):
        x, w = (lib.tensor(a, requires_grad=True) for a in arrs[:2])
        with lib.inference_mode():
            xi, wi, yi = (lib.tensor(a) for a in arrs[2:])
            ti = lib.tensor([1, 2])
        try:
            out = _save_cases(lib, fn)[name](x, w, xi, wi, yi, ti)
        except RuntimeError as e:
            return str(e)
        out.sum().backward()
        return [x.grad.numpy(), None if w.grad is None else w.grad.numpy()]
    ours, theirs = run(fg, F), run(torch, TF)
    if isinstance(theirs, str):
        assert ours == theirs and theirs.startswith("Inference tensors cannot be saved for backward")
    else:
        assert not isinstance(ours, str), ours
        for u, v in zip(ours, theirs):
            assert (u is None) == (v is None)
            if u is not None:
                np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_inference_tensors_in_the_mode_and_clones_outside_it_run_in_autograd():
    a, w = _rand(2, 4), _rand(3, 4, seed=1)

    def run(lib, fn):
        wt = lib.tensor(w, requires_grad=True)
        with lib.inference_mode():
            x = lib.tensor(a)
            y = fn.linear(x, wt)  # in the mode nothing is recorded
        assert not y.requires_grad
        out = fn.linear(x.clone(), wt)  # a clone is a normal tensor
        out.pow(2).sum().backward()
        return out.detach().numpy(), wt.grad.numpy(), x.clone().is_inference()
    ours, theirs = run(fg, F), run(torch, TF)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-6)
    assert ours[2] is theirs[2] is False


def test_pickle_and_deepcopy_give_normal_tensors():
    arr = _rand(2, 3)
    for lib in (fg, torch):
        a = _made_in_mode(lib, arr)
        for copied in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
            assert not copied.is_inference() and type(copied) is lib.Tensor
            np.testing.assert_array_equal(copied.numpy(), arr)
            copied.add_(1)  # writable


def test_another_thread_outside_the_mode_makes_normal_tensors():
    got = {}
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        got["other"] = (fg.ones(2) * 2).is_inference()  # made while the main thread is in the mode
        with fg.inference_mode():
            got["other in mode"] = fg.ones(2).is_inference()
        done.set()
    th = threading.Thread(target=other)
    th.start()
    with fg.inference_mode():
        inside.set()
        done.wait(10)
        got["main"] = fg.ones(2).is_inference()
    th.join()
    assert got == {"other": False, "other in mode": True, "main": True}
    assert not fg.ones(2).is_inference()


def test_is_inference_refuses_a_non_tensor():
    for lib in (fg, torch):
        with pytest.raises(TypeError, match="input"):
            lib.is_inference(3)


def test_parameters_made_in_the_mode_as_torch():
    def run(lib):
        with lib.inference_mode():
            p = lib.nn.Parameter(lib.ones(3))  # data made in the mode: an inference parameter
            frozen = lib.nn.Parameter(lib.ones(3), requires_grad=False)
            layer = lib.nn.Linear(2, 3)  # its parameters' storage is made in the mode
        normal = lib.ones(3)
        with lib.inference_mode():
            q = lib.nn.Parameter(normal)  # a normal tensor's data: a normal parameter, in the mode too
        got = [(t.is_inference(), t.requires_grad, isinstance(t, lib.nn.Parameter))
               for t in (p, frozen, layer.weight, layer.bias, q)]
        got.append(layer.state_dict()["weight"].is_inference())
        got.append(_message(lambda: lib.nn.Parameter(frozen.detach())))  # requires grad outside the mode
        got.append(_message(lambda: p.add_(1)))  # a leaf that requires grad: autograd's check comes first
        got.append(_message(lambda: frozen.add_(1)))
        got.append(_message(lambda: lib.nn.init.zeros_(layer.weight)))
        for copied in (copy.deepcopy(p), pickle.loads(pickle.dumps(p))):  # normal parameters
            got.append((type(copied) is lib.nn.Parameter, copied.is_inference(), copied.requires_grad))
        fresh = lib.nn.Linear(2, 3)
        fresh.load_state_dict(layer.state_dict())  # copied into a normal model: normal parameters
        got.append(fresh.weight.is_inference())
        return got
    assert run(fg) == run(torch)


def test_requires_grad_attribute_outside_the_mode_raises_as_torch():
    def run(lib):
        with lib.inference_mode():
            a = lib.ones(3) * 2
            p = lib.nn.Parameter(lib.ones(2))
        got = [_message(lambda: setattr(a, "requires_grad", True)),
               _message(lambda: setattr(a.view(3), "requires_grad", True))]
        a.requires_grad = False  # allowed
        p.requires_grad = False
        got.append(_message(lambda: setattr(p, "requires_grad", True)))
        with lib.inference_mode():
            a.requires_grad = True  # in the mode it may
        got += [a.requires_grad, p.requires_grad, a.is_leaf]
        return got
    ours = run(fg)
    assert ours == run(torch)
    assert ours[0] == "Setting requires_grad=True on inference tensor outside InferenceMode is not allowed."


def test_views_of_an_inference_tensor_that_requires_grad_record_nothing():
    def run(lib):
        with lib.inference_mode():
            b = lib.ones(3, 3, requires_grad=True)
        got = []
        for view in (b.view(9), b[1:], b.t(), b.detach(), b.unsqueeze(0)):
            got.append((view.is_inference(), view.requires_grad, view.grad_fn is None))
        y = b * 2  # saves nothing of b: recorded, a normal tensor
        got.append((y.is_inference(), y.requires_grad, y.grad_fn is None))
        return got
    assert run(fg) == run(torch)


def test_enable_grad_inside_inference_mode_reports_grad_mode_and_records_nothing():
    def run(lib):
        w = lib.ones(3, requires_grad=True)
        got = []
        with lib.inference_mode():
            got.append(lib.is_grad_enabled())
            with lib.enable_grad():
                got += [lib.is_grad_enabled(), lib.is_inference_mode_enabled()]
                y = w * 2  # grad mode on, but inference mode records no graph (torch's)
                b = lib.ones(3, requires_grad=True)
                z = b * 3
                got += [y.requires_grad, y.grad_fn is None, y.is_inference(), b.requires_grad, z.requires_grad]
                b.add_(1)  # an in-place write into a leaf that requires grad: not autograd's business here
                got.append(b.tolist())
                with lib.no_grad():
                    got.append(lib.is_grad_enabled())
                got.append(lib.is_grad_enabled())
                with lib.inference_mode(False):  # grad mode and autograd back on
                    v = w * 2
                    got += [lib.is_grad_enabled(), v.requires_grad, v.is_inference()]
            with lib.set_grad_enabled(True):
                got += [lib.is_grad_enabled(), (w * 2).requires_grad]
            got.append(lib.is_grad_enabled())
        got.append(lib.is_grad_enabled())
        with lib.enable_grad(), lib.inference_mode():
            got.append(lib.is_grad_enabled())
        with lib.no_grad():
            with lib.inference_mode(), lib.enable_grad():
                got.append(lib.is_grad_enabled())
            got.append(lib.is_grad_enabled())
        return got
    assert run(fg) == run(torch)


def _outcome(fn):
    try:
        fn()
    except RuntimeError as e:
        return str(e)
    return "ok"


def test_detach_and_data_of_an_inference_tensor_outside_the_mode_take_inplace_writes_as_torch():
    """torch lets an in-place write into ``detach()`` / ``.data`` of an inference tensor taken outside the mode (an
    inference tensor still) through, into the shared storage; taken inside the mode, or a view of one, refuses."""
    def run(lib):
        with lib.inference_mode():
            x = lib.ones(3)
            inside = x.detach()
        got = []
        for make in (lambda: x.detach(), lambda: x.data, lambda: x.detach().detach(), lambda: inside,
                     lambda: x.detach().view(3), lambda: x.data[1:]):
            t = make()
            got.append((t.is_inference(), _outcome(lambda: t.add_(1)), _outcome(lambda: t.requires_grad_())))
        return got, x.tolist()
    ours, values = run(fg)
    assert ours == run(torch)[0]
    # the three writes let through reached the storage (torch also writes a refused op's values before it raises)
    assert values == [4.0, 4.0, 4.0]
