"""API-level behaviour of torch names filled in late (maximum/minimum, smooth_l1/huber losses, repeat, inplace
activations, elu/softplus, vector_norm): keyword arguments, reductions, method and module forms and the errors that
name the argument. Values and gradients of the registered ops against torch are checked from their records'
samples by tests/test_op_registry.py and tests/test_double_backward_registry.py."""
import numpy as np
import pytest
import torch

import forgegrad as fg


def _pair(*shape, seed=0, requires_grad=True):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return fg.tensor(a.copy(), requires_grad=requires_grad), torch.tensor(a.copy(), requires_grad=requires_grad)


def _close(f, t, atol=1e-5):
    np.testing.assert_allclose(f.detach().numpy(), t.detach().numpy(), rtol=1e-5, atol=atol)


# ---- maximum / minimum / fmax / fmin -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["maximum", "minimum", "fmax", "fmin"])
def test_minmax_function_and_method_forms_match_torch_with_ties_and_nan(name):
    a = np.array([[1.0, 2.0, np.nan, 3.0], [0.0, -1.0, 5.0, np.nan]], np.float32)
    b = np.array([1.0, 3.0, 2.0, np.nan], np.float32)
    fa, fb = fg.tensor(a, requires_grad=True), fg.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    fy, ty = getattr(fg, name)(fa, fb), getattr(torch, name)(ta, tb)
    np.testing.assert_array_equal(fy.numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(getattr(fa, name)(fb).numpy(), ty.detach().numpy())
    fy.sum().backward()
    ty.sum().backward()
    np.testing.assert_array_equal(fa.grad.numpy(), ta.grad.numpy())
    np.testing.assert_array_equal(fb.grad.numpy(), tb.grad.numpy())


def test_maximum_of_a_tensor_with_itself_passes_the_whole_gradient():
    x = fg.tensor([1.0, -2.0], requires_grad=True)
    fg.maximum(x, x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])


def test_maximum_takes_tensors_only_as_torch():
    with pytest.raises(TypeError, match="other"):
        fg.maximum(fg.ones(2), 0.5)
    with pytest.raises(TypeError, match="input"):
        fg.minimum([1.0], fg.ones(1))
    with pytest.raises(ValueError, match="broadcast"):
        fg.maximum(fg.ones(2, 3), fg.ones(4))


# ---- smooth_l1_loss / huber_loss -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,module,width", [("smooth_l1_loss", "SmoothL1Loss", "beta"),
                                               ("huber_loss", "HuberLoss", "delta")])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_robust_losses_functional_and_module_match_torch(name, module, width, reduction):
    (fx, tx), (ft, tt) = _pair(4, 3, 5), _pair(4, 3, 5, seed=1)
    kw = {width: 0.7}
    fy = getattr(fg.nn.functional, name)(fx * 2, ft, reduction=reduction, **kw)
    ty = getattr(torch.nn.functional, name)(tx * 2, tt, reduction=reduction, **kw)
    _close(fy, ty)
    fm, tm = getattr(fg.nn, module)(reduction=reduction, **kw), getattr(torch.nn, module)(reduction=reduction, **kw)
    _close(fm(fx * 2, ft), tm(tx * 2, tt))
    fy.sum().backward()
    ty.sum().backward()
    _close(fx.grad, tx.grad)
    _close(ft.grad, tt.grad)
    assert f"{width}=0.7" in repr(fm)


def test_robust_losses_name_bad_arguments():
    x = fg.ones(2, 3)
    with pytest.raises(ValueError, match="beta"):
        fg.nn.functional.smooth_l1_loss(x, x, beta=-1.0)
    with pytest.raises(ValueError, match="delta"):
        fg.nn.functional.huber_loss(x, x, delta=0.0)
    with pytest.raises(ValueError, match="delta"):
        fg.nn.HuberLoss(delta=-2)
    with pytest.raises(ValueError, match="beta"):
        fg.nn.SmoothL1Loss(beta="1")
    with pytest.raises(ValueError, match="reduction"):
        fg.nn.functional.huber_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="target"):
        fg.nn.functional.smooth_l1_loss(x, fg.ones(3, 2))
    with pytest.raises(TypeError, match="target"):
        fg.nn.functional.smooth_l1_loss(x, [1.0])
    # beta = 0 is l1_loss (torch's special case), and its gradient the sign
    (fx, tx), (ft, tt) = _pair(5), _pair(5, seed=2)
    _close(fg.nn.functional.smooth_l1_loss(fx, ft, beta=0.0), torch.nn.functional.l1_loss(tx, tt))


# ---- repeat / tile -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,sizes", [((3, 4), (2, 3)), ((3,), (2, 1, 4)), ((), (3, 2)), ((2, 1, 3), (1, 0, 2)),
                                         ((2, 3), (1, 1)), ((2, 5), ((3, 2),))])
def test_repeat_matches_torch_values_and_gradient(shape, sizes):
    fx, tx = _pair(*shape)
    fy, ty = fx.repeat(*sizes), tx.repeat(*sizes)
    assert fy.shape == tuple(ty.shape)
    _close(fy, ty)
    w = np.random.default_rng(3).standard_normal(tuple(ty.shape)).astype(np.float32)
    (fy * fg.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    _close(fx.grad, tx.grad)


def test_repeat_gradient_records_a_graph_and_tile_pads_dims():
    fx, tx = _pair(2, 3)
    fg_g, = fg.autograd.grad((fx.repeat(2, 2) ** 3).sum(), fx, create_graph=True)
    tg, = torch.autograd.grad((tx.repeat(2, 2) ** 3).sum(), tx, create_graph=True)
    _close(fg_g, tg)
    _close(fg.autograd.grad(fg_g.sum(), fx)[0], torch.autograd.grad(tg.sum(), tx)[0])
    _close(fg.tile(fx, (2,)), torch.tile(tx, (2,)))
    _close(fx.tile(3, 1, 2), tx.tile(3, 1, 2))


def test_repeat_names_bad_sizes():
    x = fg.ones(2, 3)
    with pytest.raises(ValueError, match="number of sizes"):
        x.repeat(2)
    with pytest.raises(ValueError, match="non-negative"):
        x.repeat(2, -1)
    with pytest.raises(TypeError, match="sizes must be ints"):
        x.repeat(2, 1.5)


# ---- inplace activations -------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda nn, ip: nn.ReLU(inplace=ip), lambda nn, ip: nn.LeakyReLU(0.2, inplace=ip),
    lambda nn, ip: nn.SiLU(inplace=ip), lambda nn, ip: nn.ELU(0.7, inplace=ip)], ids=["relu", "leaky", "silu", "elu"])
def test_inplace_activation_modules_write_their_input_and_differentiate_as_torch(make):
    (fx, tx) = _pair(3, 5)
    fh, th = fx * 2, tx * 2
    fm, tm = make(fg.nn, True), make(torch.nn, True)
    fy, ty = fm(fh), tm(th)
    assert fy is fh and ty is th  # the input itself, holding the result
    _close(fh, th)
    (fy * fy).sum().backward()
    (ty * ty).sum().backward()
    _close(fx.grad, tx.grad)
    assert "inplace=True" in repr(fm)
    assert "inplace" not in repr(make(fg.nn, False))


def test_inplace_relu_follows_torchs_autograd_rules():
    leaf = fg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        fg.nn.functional.relu(leaf, inplace=True)
    y = (leaf - 2).sigmoid()  # sigmoid's backward reads its output: writing it in place is torch's error
    fg.nn.functional.relu(y, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    x = fg.tensor([-1.0, 2.0, -3.0])
    view = x.reshape(3)
    assert fg.nn.functional.relu_(x) is x and x.relu_() is x
    np.testing.assert_array_equal(view.numpy(), [0.0, 2.0, 0.0])  # written into the shared storage
    with pytest.raises(TypeError, match="inplace"):
        fg.nn.ReLU(inplace="yes")
    with pytest.raises(TypeError, match="inplace"):
        fg.nn.functional.leaky_relu(x, inplace="1")  # (torch takes inplace=1 by truth value)


def test_inplace_dropout_in_training_and_eval():
    x = fg.ones(4, 6)
    m = fg.nn.Dropout(0.5, inplace=True)
    assert "inplace=True" in repr(m)
    assert m(x) is x
    assert set(np.unique(x.numpy())) <= {0.0, 2.0}
    m.eval()
    assert m(x) is x


# ---- elu / softplus --------------------------------------------------------------------------------------------
def test_elu_and_softplus_functions_and_modules_match_torch():
    fx, tx = _pair(4, 9)
    fx10, tx10 = fx * 10, tx * 10  # both sides of softplus's threshold
    _close(fg.nn.functional.elu(fx10, alpha=0.3), torch.nn.functional.elu(tx10, alpha=0.3))
    _close(fg.nn.ELU(alpha=1.5)(fx10), torch.nn.ELU(alpha=1.5)(tx10))
    fy = fg.nn.Softplus(beta=2.0, threshold=5.0)(fx10)
    ty = torch.nn.Softplus(beta=2.0, threshold=5.0)(tx10)
    _close(fy, ty)
    _close(fg.nn.functional.softplus(fx10, 0.5), torch.nn.functional.softplus(tx10, 0.5))
    fy.sum().backward()
    ty.sum().backward()
    _close(fx.grad, tx.grad)
    assert repr(fg.nn.ELU(0.5)) == "ELU(alpha=0.5)"
    assert repr(fg.nn.Softplus(2)) == "Softplus(beta=2.0, threshold=20.0)"
    with pytest.raises(TypeError, match="alpha"):
        fg.nn.ELU(alpha="1")
    with pytest.raises(TypeError, match="beta"):
        fg.nn.functional.softplus(fx, beta=None)


def test_elu_in_a_sequential_after_linear():
    fg.manual_seed(0)
    lin = fg.nn.Linear(5, 3)
    x = fg.randn(4, 5)
    for act, ref in ((fg.nn.ELU(), torch.nn.functional.elu), (fg.nn.Softplus(), torch.nn.functional.softplus)):
        with fg.no_grad():  # no graph: Sequential's fused plan, which runs these as their own steps
            out = fg.nn.Sequential(lin, act)(x)
        _close(out, ref(torch.tensor(lin(x).detach().numpy())))


# ---- linalg.vector_norm / norm ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"ord": 1}, {"ord": float("inf"), "dim": (0, 2)},
                                {"ord": 3, "dim": 1, "keepdim": True}, {"keepdim": True}, {"ord": 0, "dim": -1},
                                {"ord": -float("inf")}, {"ord": 2.5, "dim": 0}],
                         ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_vector_norm_matches_torch_values_and_gradient(kw):
    fx, tx = _pair(3, 4, 5)
    fy, ty = fg.linalg.vector_norm(fx, **kw), torch.linalg.vector_norm(tx, **kw)
    assert fy.shape == tuple(ty.shape)
    _close(fy, ty)
    if kw.get("ord") != 0:  # the count of non-zeros has no gradient
        (fy * fy).sum().backward()
        (ty * ty).sum().backward()
        _close(fx.grad, tx.grad)


def test_norm_function_and_vector_norm_arguments():
    fx, tx = _pair(4, 6)
    _close(fg.norm(fx), torch.norm(tx))
    _close(fg.norm(fx, 1, dim=1, keepdim=True), torch.norm(tx, 1, dim=1, keepdim=True))
    g, = fg.autograd.grad(fg.linalg.vector_norm(fx, dim=1).sum(), fx, create_graph=True)
    tg, = torch.autograd.grad(torch.linalg.vector_norm(tx, dim=1).sum(), tx, create_graph=True)
    _close(g, tg)
    _close(fg.autograd.grad((g * g).sum(), fx)[0], torch.autograd.grad((tg * tg).sum(), tx)[0])
    y = fg.linalg.vector_norm(fx, dtype=fg.float64)
    assert y.dtype == fg.float64
    _close(y, torch.linalg.vector_norm(tx, dtype=torch.float64))
    i = fg.tensor([[3, 4]])
    with pytest.raises(TypeError, match="floating"):
        fg.linalg.vector_norm(i)
    with pytest.raises(ValueError, match="ord"):
        fg.linalg.vector_norm(fx, ord="fro")
    with pytest.raises(TypeError, match="'x'"):
        fg.linalg.vector_norm([1.0])
