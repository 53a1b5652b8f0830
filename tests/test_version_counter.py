"""Version counters (torch's ``t._version``): every in-place write counts, views share the count, and
backward refuses an array an op saved that was written in place since. Each behaviour is run in forgegrad
and in torch from the same program and compared: the counts, whether backward raises, the gradients."""
import re

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _version_counter as _vc

MODIFIED = "modified by an inplace operation"


def _arr(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _both(program):
    """Run ``program(lib)`` with lib = forgegrad and lib = torch; their results, or the RuntimeError each raised."""
    out = []
    for lib in (fg, torch):
        try:
            out.append(program(lib))
        except RuntimeError as e:
            out.append(e)
    return out


# ---- counting --------------------------------------------------------------------------------------
# each step: one in-place write (or none), the same call in both libraries
_STEPS = [
    lambda t, lib: t.add_(1), lambda t, lib: t.sub_(0.5, alpha=2), lambda t, lib: t.mul_(2),
    lambda t, lib: t.div_(4), lambda t, lib: t.pow_(2), lambda t, lib: t.neg_(), lambda t, lib: t.clamp_(-1, 1),
    lambda t, lib: t.copy_(lib.ones(2, 3)), lambda t, lib: t.fill_(3), lambda t, lib: t.zero_(),
    lambda t, lib: t.__iadd__(1), lambda t, lib: t.__isub__(1), lambda t, lib: t.__imul__(2),
    lambda t, lib: t.__itruediv__(2), lambda t, lib: t.__ipow__(2), lambda t, lib: t.__setitem__((0, 1), 5.0),
    lambda t, lib: t.__setitem__(slice(None), lib.zeros(3)), lambda t, lib: t + 1, lambda t, lib: t.sum(),
]


def test_each_inplace_op_counts_one_like_torch():
    def program(lib):
        t = lib.tensor(_arr(2, 3))
        versions = [t._version]
        for step in _STEPS:
            step(t, lib)
            versions.append(t._version)
        return versions
    got, want = _both(program)
    assert got == want
    assert got[-1] == len(_STEPS) - 2  # the last two steps write nothing


def test_views_share_the_count_and_data_has_its_own_like_torch():
    def program(lib):
        base = lib.zeros(4, 3)
        row, flat, tr, det = base[1], base.reshape(12), base.t(), base.detach()
        out = []
        for view in (row, flat, tr, det):
            view.add_(1)
            out.append((base._version, row._version, flat._version, tr._version, det._version))
        base[0] = 2
        data = base.data  # a counter of its own (torch's escape hatch)
        out.append((base._version, row._version, data._version))
        data.mul_(2)
        out.append((base._version, data._version))
        return out
    got, want = _both(program)
    assert got == want
    assert got[3][0] == 4 and got[-1] == (5, 1)


def test_init_load_state_dict_and_optimizer_steps_count_like_torch():
    def program(lib):
        m = lib.nn.Linear(3, 2)
        after_init = m.weight._version
        lib.nn.init.uniform_(m.weight)
        counts = [m.weight._version - after_init]
        m.load_state_dict(m.state_dict())
        counts.append(m.weight._version - after_init)
        x = lib.tensor(_arr(4, 3))
        for opt in (lib.optim.SGD(m.parameters(), lr=0.1), lib.optim.Adam(m.parameters(), lr=0.1)):
            for _ in range(2):
                opt.zero_grad()
                m(x).sum().backward()
                opt.step()
                counts.append(m.weight._version - after_init)
        return counts
    got, want = _both(program)
    assert got == want == [1, 2, 3, 4, 5, 6]


def test_long_training_counts_every_step_like_torch():
    def program(lib):
        m = lib.nn.Sequential(lib.nn.Linear(2, 2), lib.nn.Tanh(), lib.nn.Linear(2, 1))
        opt = lib.optim.SGD(m.parameters(), lr=0.01)
        start = m[2].weight._version
        x = lib.tensor(_arr(3, 2))
        for _ in range(5 * 16):  # past the stamps' trimming
            opt.zero_grad()
            m(x).sum().backward()
            opt.step()
        loss = m(x).sum()
        opt.step()
        try:
            loss.backward()
        except RuntimeError as e:  # the second layer's weight, saved before the step
            now, then = map(int, re.search(r"is at version (\d+); expected version (\d+)", str(e)).groups())
            return m[2].weight._version - start, now - then
    got, want = _both(program)
    assert got == want == (81, 1)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_model_and_optimizer_count_their_steps_like_torch(how):
    import copy
    import pickle

    def program(lib):
        m = lib.nn.Linear(3, 2)
        opt = lib.optim.Adam(m.parameters(), lr=0.01)
        x = lib.tensor(_arr(4, 3))
        for _ in range(2):
            opt.zero_grad()
            m(x).sum().backward()
            opt.step()
        m2, opt2 = copy.deepcopy((m, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((m, opt)))
        start = m2.weight._version  # (torch's unpickling counts one write)
        steps = []
        for _ in range(3):
            opt2.zero_grad()
            m2(x).sum().backward()
            opt2.step()
            steps.append(m2.weight._version - start)
        return steps + [m.weight._version]
    got, want = _both(program)
    assert got == want


def test_two_optimizers_over_one_parameter_count_every_step_like_torch():
    def program(lib):
        p, q = lib.nn.Parameter(lib.zeros(3)), lib.nn.Parameter(lib.zeros(2))
        both, one = lib.optim.SGD([p, q], lr=0.1), lib.optim.Adam([p], lr=0.1)
        for i in range(100):
            p.grad, q.grad = lib.ones(3), lib.ones(2)
            (both if i % 3 else one).step()
        return p._version, q._version
    got, want = _both(program)
    assert got == want == (100, 66)


def test_a_refused_inplace_op_counts_nothing():
    def program(lib):
        ints = lib.tensor([1, 2])
        x = lib.tensor(_arr(3), requires_grad=True)
        y = x * 2
        for t, bad in ((ints, lambda: ints.add_(0.5)), (y, lambda: y.add_(lib.ones(2, 3)))):
            with pytest.raises(RuntimeError):
                bad()
        y.sigmoid().sum().backward()  # y's saved value is still what the graph holds: no error
        return ints._version, y._version
    got, want = _both(program)
    assert got == want == (0, 0)


def test_meta_tensors_count_too():
    t = fg.zeros(3, device="meta")
    t.add_(1)
    t.mul_(2)
    want = torch.zeros(3, device="meta")
    want.add_(1)
    want.mul_(2)
    assert t._version == want._version == 2


# ---- backward refuses what was changed after it was saved ------------------------------------------
def _mul_input(lib):
    a, w = lib.tensor(_arr(2, 3)), lib.tensor(_arr(2, 3, seed=1), requires_grad=True)
    z = w * a  # saves a for w's gradient
    a.add_(1)
    z.sum().backward()


def _unary_output(name, how):
    def program(lib):
        x = lib.tensor(_arr(3), requires_grad=True)
        y = getattr(x * 1, name)()  # sigmoid, exp and tanh save their output
        if how == "no_grad":
            with lib.no_grad():
                y.mul_(2)
        elif how == "detach":
            y.detach().zero_()
        else:
            y.mul_(2)  # recorded: the graph is right, but what sigmoid saved is not the value y holds now
        y.sum().backward()
    return program


def _matmul_input(lib):
    a, b = lib.tensor(_arr(2, 3)), lib.tensor(_arr(3, 4, seed=1), requires_grad=True)
    m = a @ b
    a.mul_(2)
    m.sum().backward()


def _view_modified(lib):
    x = lib.tensor(_arr(2, 3), requires_grad=True)
    y = (x * 1).exp()
    with lib.no_grad():
        y[0:1].add_(1)  # a view of the saved output
    y.sum().backward()


def _setitem_into_saved(lib):
    a, w = lib.tensor(_arr(2, 3)), lib.tensor(_arr(2, 3, seed=1), requires_grad=True)
    z = w * a
    a[0] = 0.0
    z.sum().backward()


def _copy_into_saved(lib):
    a, w = lib.tensor(_arr(2, 3)), lib.tensor(_arr(2, 3, seed=1), requires_grad=True)
    z = (w * 1).tanh() * a
    a.copy_(lib.ones(2, 3))
    z.sum().backward()


def _step_before_backward(lib):
    m = lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 1))
    opt = lib.optim.SGD(m.parameters(), lr=0.1)
    m(lib.tensor(_arr(5, 3))).sum().backward()  # gradients for the step
    loss = m(lib.tensor(_arr(5, 3))).sum()
    opt.step()  # the second layer's weight, saved by this forward, is updated before its backward
    loss.backward()


def _load_before_backward(lib):
    m = lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 1))
    loss = m(lib.tensor(_arr(5, 3))).sum()
    m.load_state_dict(m.state_dict())
    loss.backward()


@pytest.mark.parametrize("program", [
    _mul_input, _unary_output("sigmoid", "no_grad"), _unary_output("exp", "detach"),
    _unary_output("tanh", "recorded"), _unary_output("sigmoid", "recorded"), _matmul_input, _view_modified,
    _setitem_into_saved, _copy_into_saved, _step_before_backward, _load_before_backward,
], ids=["mul-input", "sigmoid-output-no_grad", "exp-output-detach", "tanh-output-recorded",
        "sigmoid-output-recorded", "matmul-input", "view-of-saved-output", "setitem-input", "copy_-input",
        "optimizer-step", "load_state_dict"])
def test_changed_after_save_raises_like_torch(program):
    got, want = _both(program)
    assert isinstance(want, RuntimeError) and MODIFIED in str(want)
    assert isinstance(got, RuntimeError), "forgegrad ran backward through a changed saved tensor"
    assert str(got).startswith("one of the variables needed for gradient computation has been modified by an "
                               "inplace operation: [torch.FloatTensor [")
    versions = re.compile(r"is at version (\d+); expected version (\d+) instead")
    assert versions.search(str(got)).groups() == versions.search(str(want)).groups()


def _embedding_indices(lib):
    emb = lib.nn.Embedding(5, 2)
    idx = lib.tensor([0, 1, 1])
    rows = emb(idx)
    idx.fill_(3)  # backward would send the rows' gradients to row 3
    rows.sum().backward()


def _advanced_index(lib):
    x = lib.tensor(_arr(4, 3), requires_grad=True)
    idx = lib.tensor([0, 2])
    picked = (x * 1)[idx]
    idx[0] = 1
    picked.sum().backward()


@pytest.mark.parametrize("program", [_embedding_indices, _advanced_index], ids=["embedding", "getitem"])
def test_changed_indices_raise_like_torch(program):
    """The indices an embedding or an advanced index scatters its gradient through are saved, as torch's:
    changing them in place before backward raises instead of sending the gradient to other rows."""
    got, want = _both(program)
    assert isinstance(want, RuntimeError) and MODIFIED in str(want)
    assert isinstance(got, RuntimeError), "forgegrad scattered the gradient through changed indices"
    assert "[torch.LongTensor [" in str(got)
    versions = re.compile(r"is at version (\d+); expected version (\d+) instead")
    assert versions.search(str(got)).groups() == versions.search(str(want)).groups()


def test_the_error_names_the_versions_and_the_op():
    a, w = fg.tensor(_arr(2, 3)), fg.tensor(_arr(2, 3), requires_grad=True)
    a.add_(1)  # before use: fine
    z = w * a
    a.add_(1)
    a.add_(1)
    with pytest.raises(RuntimeError, match=r"\[torch.FloatTensor \[2, 3\]\], saved by MulFunction for its "
                                           r"backward, is at version 3; expected version 1 instead"):
        z.sum().backward()
    many = fg.tensor(_arr(4))
    z = w[0, :1] * many[:1]
    for _ in range(5 * _vc._HISTORY):  # more writes than the stamps kept: the expected version is a bound
        many.add_(0)
    with pytest.raises(RuntimeError, match=r"is at version (\d+); expected version (\d+) or earlier") as info:
        z.sum().backward()
    now, bound = map(int, re.search(r"version (\d+); expected version (\d+)", str(info.value)).groups())
    assert now == 5 * _vc._HISTORY and 0 < bound <= now - _vc._HISTORY


# ---- legal patterns are untouched ------------------------------------------------------------------
def _grads(program):
    """program(lib) -> tensors whose .grad to compare; runs in both libraries, neither may raise."""
    got, want = _both(program)
    for r in (got, want):
        assert not isinstance(r, RuntimeError), r
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g.grad), w.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_changing_what_backward_does_not_read_is_no_error():
    def program(lib):
        x = lib.tensor(_arr(3), requires_grad=True)
        y = x.neg()  # saves nothing
        y.add_(1)
        h = x * 2
        e = h.exp()  # saves its output only: its input may change
        h.add_(1)
        s = x + 1  # add saves nothing
        with lib.no_grad():
            s.mul_(3)
        (y + e + s).sum().backward()
        return [x]
    _grads(program)


def test_operands_a_gradient_does_not_read_may_change_like_torch():
    """As torch's: x * c and x / c with a constant c keep c, not x; x ** 2 keeps x, not its result; linear
    and matmul keep their input for the weight's gradient and the weight for the input's, so a frozen layer's
    input and a first layer's weight are not saved (conv2d keeps both, as torch's)."""
    def program(lib):
        nn = lib.nn
        x = lib.tensor(_arr(2, 3), requires_grad=True)
        h, c = x * 1, lib.tensor(_arr(2, 3, seed=1))
        prod, quot, sq = h * c, h / (c * c + 1), (x * 1) ** 2
        h.add_(1)
        sq.add_(1)
        frozen = nn.Linear(3, 4)
        frozen.requires_grad_(False)
        frozen.weight.copy_(lib.tensor(_arr(4, 3, seed=5)))
        u = x * 1
        out = frozen(u)
        with lib.no_grad():
            u.mul_(2)
        first = nn.Linear(3, 2)
        fo = first(lib.tensor(_arr(5, 3, seed=2)))
        v, m = x * 1, lib.tensor(_arr(3, 2, seed=4))
        mm = v @ m
        v.add_(1)
        with lib.no_grad():
            first.weight.add_(1)
        (prod.sum() + quot.sum() + sq.sum() + out.sum() + fo.sum() + mm.sum()).backward()
        return [x, first.weight, first.bias]
    _grads(program)


def test_changes_before_use_and_through_data_are_no_error():
    def program(lib):
        a, w = lib.tensor(_arr(2, 3)), lib.tensor(_arr(2, 3, seed=1), requires_grad=True)
        a.add_(1)  # before the op that saves it
        x = lib.tensor(_arr(3), requires_grad=True)
        y = x.sigmoid()
        y.data.mul_(2)  # .data: not seen by autograd (the gradient then uses the changed value, as torch's)
        ((w * a).sum() + y.sum()).backward()
        return [w, x]
    _grads(program)


def test_training_loops_run_as_before():
    def program(lib):
        torch.manual_seed(0)
        m = lib.nn.Sequential(lib.nn.Linear(3, 8), lib.nn.ReLU(), lib.nn.Linear(8, 1))
        if lib is fg:  # the same start as torch's
            m.load_state_dict({k: v.detach().numpy() for k, v in ref_init.items()})
        x, y = lib.tensor(_arr(6, 3)), lib.tensor(_arr(6, 1, seed=2))
        opt = lib.optim.Adam(m.parameters(), lr=0.01)
        for step in range(4):
            for half in (x[:3], x[3:]):  # gradient accumulation over two micro-batches
                ((m(half) - y[:3]) ** 2).mean().backward()
            loss = ((m(x) - y) ** 2).mean()
            loss.backward(retain_graph=True)
            loss.backward()  # twice through one graph: nothing changed in between
            opt.step()
            opt.zero_grad()
        return list(m.parameters())
    torch.manual_seed(0)
    ref_init = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).state_dict()
    got, want = _both(program)
    assert not isinstance(got, RuntimeError) and not isinstance(want, RuntimeError), (got, want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.detach().numpy(), rtol=1e-4, atol=1e-5)


# ---- leaves --------------------------------------------------------------------------------------
def test_inplace_on_a_leaf_or_its_view_raises_like_torch():
    def program(lib):
        x = lib.tensor(_arr(2, 3), requires_grad=True)
        messages = []
        for bad in (lambda: x.add_(1), lambda: x.view(6).mul_(2), lambda: x[0].zero_(), lambda: x.t().add_(1),
                    lambda: x.__setitem__(0, 1.0), lambda: x[1].__setitem__(0, 1.0)):
            with pytest.raises(RuntimeError) as info:
                bad()
            messages.append(str(info.value))
        with lib.no_grad():
            x.add_(1)  # allowed under no_grad
        return messages, x._version
    got, want = _both(program)
    assert got == want
    assert got[0][0] == "a leaf Variable that requires grad is being used in an in-place operation."
    assert got[0][1] == "a view of a leaf Variable that requires grad is being used in an in-place operation."


def test_counts_of_freed_arrays_are_dropped():
    before = len(_vc.entries)
    for _ in range(200):
        t = fg.zeros(5)
        t.add_(1)
        t[1:3].mul_(2)
    del t
    assert len(_vc.entries) <= before + 1
    assert fg.zeros(5)._version == 0
