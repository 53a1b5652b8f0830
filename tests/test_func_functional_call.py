"""forgegrad.func.functional_call, stack_module_state, nn.utils.stateless, and autograd.grad(is_grads_batched=True)
/ autograd.functional.jacobian(vectorize=True) against torch 2.13."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.func as ff
from test_func_transforms import _both, _lib, _t

RNG = np.random.default_rng(13)
X = RNG.standard_normal((6, 3)).astype(np.float32)


def _mod(lib):
    return fg if lib == "fg" else torch


class _Tied:
    """Two Linear layers sharing one weight, and a BatchNorm (buffers), built in either library."""

    @staticmethod
    def make(lib):
        nn = _mod(lib).nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(3, 3)
                self.b = nn.Linear(3, 3)
                self.b.weight = self.a.weight
                self.bn = nn.BatchNorm1d(3)

            def forward(self, x, shift=0.0):
                return self.bn(self.b(self.a(x).tanh())) + shift

        r = np.random.default_rng(1)
        net = Net()
        with (fg.no_grad() if lib == "fg" else torch.no_grad()):
            for p in net.parameters():
                p.copy_(_t(lib, r.standard_normal(tuple(p.shape)).astype(np.float32)))
        return net


def test_parameters_buffers_kwargs_and_gradients():
    def run(lib):
        F = _lib(lib)[1]
        net = _Tied.make(lib).eval()
        w = _t(lib, np.eye(3, dtype=np.float32) * 0.5, requires_grad=True)
        stats = {"bn.running_mean": _t(lib, np.array([0.1, -0.2, 0.3], np.float32)),
                 "bn.running_var": _t(lib, np.array([2.0, 0.5, 1.5], np.float32))}
        out = F.functional_call(net, ({"a.weight": w}, stats), (_t(lib, X),), {"shift": 1.5})
        out.sum().backward()
        own = net(_t(lib, X))  # the module's own tensors are back
        return out, w.grad, own, net.a.weight.grad
    _both(run, tol=2e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_tie_weights(tie):
    def run(lib):
        net = _Tied.make(lib).eval()
        w = _t(lib, np.full((3, 3), 0.25, np.float32))
        return _lib(lib)[1].functional_call(net, {"a.weight": w}, _t(lib, X), tie_weights=tie)
    _both(run, tol=2e-5)


def test_training_mode_buffer_updates_reach_the_given_tensors():
    def run(lib):
        net = _Tied.make(lib).train()
        stats = {"bn.running_mean": _t(lib, np.zeros(3, np.float32)), "bn.running_var": _t(lib, np.ones(3, np.float32)),
                 "bn.num_batches_tracked": _t(lib, np.array(0))}
        out = _lib(lib)[1].functional_call(net, stats, (_t(lib, X),))
        return out, stats, dict(net.named_buffers())
    _both(run, tol=2e-5)


def test_errors_and_restoring_after_an_exception():
    for lib in ("fg", "torch"):
        F = _lib(lib)[1]
        net = _Tied.make(lib)
        before = {**dict(net.named_parameters()), **dict(net.named_buffers())}
        with pytest.raises(ValueError, match="which are tied. Consider using tie_weights=False"):
            F.functional_call(net, {"a.weight": _t(lib, X[:3]), "b.weight": _t(lib, X[3:])}, _t(lib, X))
        with pytest.raises(RuntimeError, match="Error\\(s\\) in reparametrizing for Net:\n\tUnexpected key\\(s\\): "
                                               "'c.weight'.\n\tMissing key\\(s\\): 'a.bias', 'b.bias'"):
            F.functional_call(net, {"a.weight": _t(lib, X[:3]), "c.weight": _t(lib, X[:3]),
                                    "bn.weight": _t(lib, X[0]), "bn.bias": _t(lib, X[0]),
                                    "bn.running_mean": _t(lib, X[0]), "bn.running_var": _t(lib, X[0]),
                                    "bn.num_batches_tracked": _t(lib, np.array(0))}, _t(lib, X), strict=True)
        with pytest.raises(ValueError, match="appeared in multiple dictionaries"):
            F.functional_call(net, ({"a.bias": _t(lib, X[0])}, {"a.bias": _t(lib, X[1])}), _t(lib, X))
        with pytest.raises(ValueError, match="Expected parameter_and_buffer_dicts to be a dict"):
            F.functional_call(net, 3, _t(lib, X))
        # the forward raises (a weight of the wrong width; forgegrad's linear says ValueError, torch's RuntimeError)
        with pytest.raises((RuntimeError, ValueError)):
            F.functional_call(net, {"a.weight": _t(lib, np.ones((3, 2), np.float32)), "bn.running_mean": _t(lib, X[0])},
                              _t(lib, X))
        with pytest.raises(TypeError, match="bn.running_var|is not an instance"):  # swapped ones put back
            F.functional_call(net, {"a.weight": _t(lib, X[:3]), "bn.running_var": X[0]}, _t(lib, X))
        now = {**dict(net.named_parameters()), **dict(net.named_buffers())}
        assert now.keys() == before.keys() and all(before[k] is v for k, v in now.items())
        assert net.b.weight is net.a.weight


def test_stateless_alias_warns_and_stack_module_state_errors():
    assert fg.vmap is ff.vmap and fg.func is ff and "func" in fg.__all__  # torch.vmap, torch.func
    net = fg.nn.Linear(3, 2)
    w = fg.zeros(2, 3)
    with pytest.warns(FutureWarning, match="torch.func.functional_call"):
        out = fg.nn.utils.stateless.functional_call(net, {"weight": w}, (fg.tensor(X),))
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(net.bias.detach().numpy(), (6, 2)))
    for lib in ("fg", "torch"):
        F, nn = _lib(lib)[1], _mod(lib).nn
        with pytest.raises(RuntimeError, match="Expected at least one model, got 0"):
            F.stack_module_state([])
        with pytest.raises(RuntimeError, match="same training/eval mode"):
            F.stack_module_state([nn.Linear(2, 2), nn.Linear(2, 2).eval()])
        with pytest.raises(RuntimeError, match="same class"):
            F.stack_module_state([nn.Linear(2, 2), nn.Tanh()])
        m2 = nn.Linear(2, 2)
        m2.bias.requires_grad_(False)
        with pytest.raises(RuntimeError, match="Expected bias from each model to have the same .requires_grad"):
            F.stack_module_state([nn.Linear(2, 2), m2])


def test_grad_is_grads_batched_and_jacobian_vectorize():
    def run(lib):
        m = _mod(lib)
        x = _t(lib, X.astype(np.float64), requires_grad=True)
        z = _t(lib, np.ones(2), requires_grad=True)
        y, s = (x.sin() * x).sum(1), x.exp()
        gos = (_t(lib, RNG_B), _t(lib, RNG_C))
        g1 = m.autograd.grad([y, s], [x, z], gos, retain_graph=True, allow_unused=True, is_grads_batched=True)
        g2 = m.autograd.grad(y, [x, z], gos[0], retain_graph=True, materialize_grads=True, is_grads_batched=True)
        (g3,) = m.autograd.grad(y, x, gos[0], create_graph=True, is_grads_batched=True)
        (gg,) = m.autograd.grad(g3.pow(2).sum(), x)
        jf = m.autograd.functional
        j = jf.jacobian(lambda a, b: (a.tanh() * b.sum(), a.sum()), (x.detach(), z.detach()), vectorize=True)
        jfw = jf.jacobian(lambda a: a.exp()[:2], x.detach()[:, 0], vectorize=True, strategy="forward-mode")
        h = jf.hessian(lambda a: a.pow(3).sum(), x.detach()[0], vectorize=True, outer_jacobian_strategy="forward-mode")
        return g1, g2, g3, gg, j, jfw, h
    _both(run)
    x = fg.tensor(X, requires_grad=True)
    for lib in ("fg", "torch"):
        m = _mod(lib)
        x = _t(lib, X, requires_grad=True)
        with pytest.raises(RuntimeError, match="we interpret the first dimension of each grad_output as the batch"):
            m.autograd.grad(x * 2, x, _t(lib, X), is_grads_batched=True)
        with pytest.raises(ValueError, match="same size in the mapped dimension"):
            m.autograd.grad([x * 2, x * 3], x, [_t(lib, X[None]), _t(lib, np.stack([X, X]))], is_grads_batched=True)
        jf = m.autograd.functional
        with pytest.raises(NotImplementedError, match="only implemented for `vectorize=True`"):
            jf.jacobian(lambda a: a, x, strategy="forward-mode")
        with pytest.raises(RuntimeError, match="`strict=True` and `vectorized=True`"):
            jf.jacobian(lambda a: a, x, vectorize=True, strict=True)
        with pytest.raises(AssertionError, match="Expected strategy to be either"):
            jf.jacobian(lambda a: a, x, strategy="sideways")


RNG_B = RNG.standard_normal((4, 6))
RNG_C = RNG.standard_normal((4, 6, 3))
