"""Adagrad, RMSprop, Adadelta and LBFGS against torch.optim from the same parameters and gradients."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn, optim

torch = pytest.importorskip("torch")

SHAPES = [(5, 3), (7,), (2, 3, 4)]


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    ours = [nn.Parameter(fg.tensor(v.copy())) for v in values]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    return ours, theirs


def _run(make_ours, make_theirs, steps=5, seed=0):
    ours, theirs = _pair(seed)
    opt_a, opt_b = make_ours(ours), make_theirs(theirs)
    rng = np.random.default_rng(seed + 1)
    for _ in range(steps):
        for a, b in zip(ours, theirs):
            g = rng.standard_normal(a.shape).astype(np.float32)
            a.grad = fg.tensor(g.copy())
            b.grad = torch.from_numpy(g.copy())
        opt_a.step()
        opt_b.step()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=2e-6, atol=2e-6)
    return opt_a, opt_b


@pytest.mark.parametrize("kw", [{}, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5),
                                dict(lr=0.05, maximize=True, eps=1e-3)])
def test_adagrad_matches_torch(kw):
    opt, ref = _run(lambda p: optim.Adagrad(p, **kw), lambda p: torch.optim.Adagrad(p, **kw))
    for a, b in zip(opt.param_groups[0]["params"], ref.param_groups[0]["params"]):
        np.testing.assert_allclose(opt.state[a]["sum"].numpy(), ref.state[b]["sum"].numpy(), rtol=1e-6)


@pytest.mark.parametrize("kw", [{}, dict(lr=0.01, alpha=0.9, momentum=0.8), dict(centered=True, weight_decay=0.05),
                                dict(centered=True, momentum=0.5, maximize=True, eps=1e-4)])
def test_rmsprop_matches_torch(kw):
    _run(lambda p: optim.RMSprop(p, **kw), lambda p: torch.optim.RMSprop(p, **kw))


@pytest.mark.parametrize("kw", [{}, dict(lr=0.5, rho=0.8, weight_decay=0.1), dict(eps=1e-3, maximize=True)])
def test_adadelta_matches_torch(kw):
    _run(lambda p: optim.Adadelta(p, **kw), lambda p: torch.optim.Adadelta(p, **kw))


@pytest.mark.parametrize("cls,kw,msg", [(optim.Adagrad, dict(lr=-1), "learning rate"),
                                        (optim.Adagrad, dict(eps=-1), "eps"),
                                        (optim.RMSprop, dict(alpha=-0.1), "alpha"),
                                        (optim.Adadelta, dict(rho=1.5), "rho"),
                                        (optim.LBFGS, dict(line_search_fn="armijo"), "line_search_fn"),
                                        (optim.LBFGS, dict(history_size=0), "history_size")])
def test_bad_hyperparameters(cls, kw, msg):
    with pytest.raises(ValueError, match=msg):
        cls([nn.Parameter(fg.zeros(2))], **kw)


def _logistic_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = (x @ rng.standard_normal(5) > 0).astype(np.float32)
    w0 = (0.1 * rng.standard_normal((5, 1))).astype(np.float32)
    return x, y[:, None], w0


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_lbfgs_matches_torch(line_search):
    x, y, w0 = _logistic_problem()
    w, b = nn.Parameter(fg.tensor(w0.copy())), nn.Parameter(fg.zeros(1))
    tw, tb = torch.nn.Parameter(torch.from_numpy(w0.copy())), torch.nn.Parameter(torch.zeros(1))
    opt = optim.LBFGS([w, b], lr=1, max_iter=4, history_size=3, line_search_fn=line_search)
    ref = torch.optim.LBFGS([tw, tb], lr=1, max_iter=4, history_size=3, line_search_fn=line_search)
    X, Y, TX, TY = fg.tensor(x), fg.tensor(y), torch.from_numpy(x), torch.from_numpy(y)

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(X @ w + b, Y) + 0.01 * (w * w).sum()
        loss.backward()
        return loss

    def torch_closure():
        ref.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(TX @ tw + tb, TY) + 0.01 * (tw * tw).sum()
        loss.backward()
        return loss

    for i in range(3):
        la, lb = opt.step(closure), ref.step(torch_closure)
        np.testing.assert_allclose(float(la.item()), float(lb.item()), rtol=1e-4)
        if i < 2:  # the same iterations and evaluations (later, near the optimum, rounding may end a search early)
            st, rst = opt.state[w], ref.state[tw]
            assert (st["func_evals"], st["n_iter"]) == (rst["func_evals"], rst["n_iter"])
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(b.numpy(), tb.detach().numpy(), rtol=1e-3, atol=1e-4)


def test_lbfgs_needs_a_closure_and_one_group():
    p = nn.Parameter(fg.zeros(2))
    with pytest.raises(ValueError, match="closure"):
        optim.LBFGS([p]).step()
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": [p]}, {"params": [nn.Parameter(fg.zeros(1))]}])


def test_save_and_load_take_binary_file_objects(tmp_path):
    import io
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "nested": [1, 2.5]}
    buf = io.BytesIO()
    fg.save({"model": state}, buf)
    buf.seek(0)
    back = fg.load(buf)
    np.testing.assert_array_equal(back["model"]["w"], state["w"])
    assert back["model"]["nested"] == [1, 2.5] and not buf.closed
    with open(tmp_path / "m.safetensors", "wb") as f:
        fg.save(nn.Linear(3, 2).state_dict(), f)
    with open(tmp_path / "m.safetensors", "rb") as f:
        assert sorted(fg.load(f)) == ["bias", "weight"]
    with open(tmp_path / "t.txt", "w") as f, pytest.raises(TypeError, match="binary mode"):
        fg.save({"w": state["w"]}, f)
    with pytest.raises(ValueError, match="not a valid safetensors"):
        fg.load(io.BytesIO(b"garbage bytes"))
