"""Edge cases of the late torch names (elu, softplus, losses, repeat, vector_norm, in-place activations) where
forgegrad once differed from torch: gradients at the exact switch points, a negative alpha, NaN inputs, and
the second derivatives torch defines there."""
import numpy as np
import pytest
import torch

import forgegrad as fg

_EDGES = np.array([-3.0, -1.0, -0.0, 0.0, 0.5, 2.0, 10.0, 20.0, 20.5, -30.0, np.inf, -np.inf, np.nan], np.float32)


def _grads(f, t, x):
    """(y, dy/dx, d(sum dy/dx)/dx) of forgegrad's f and torch's t at x, each as (forgegrad, torch) arrays."""
    fx, tx = fg.tensor(x.copy(), requires_grad=True), torch.tensor(x.copy(), requires_grad=True)
    fy, ty = f(fx), t(tx)
    (fg1,) = fg.autograd.grad(fy.sum(), fx, create_graph=True)
    (tg1,) = torch.autograd.grad(ty.sum(), tx, create_graph=True)
    fg1.sum().backward()
    tg1.sum().backward()
    return [(a.detach().numpy(), b.detach().numpy()) for a, b in ((fy, ty), (fg1, tg1), (fx.grad, tx.grad))]


def _assert_pairs(pairs):
    for got, want in pairs:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0, 0.0, -1.0, -0.4])
def test_elu_gradients_at_zero_nan_and_negative_alpha_match_torch(alpha):
    # a negative alpha makes elu positive for x < 0: its slope can not be read from the output there; a NaN
    # input gets slope 1 and the second derivative at x = 0 exactly is 0, as torch's
    _assert_pairs(_grads(lambda x: fg.nn.functional.elu(x, alpha), lambda x: torch.nn.functional.elu(x, alpha), _EDGES))
    x64 = _EDGES.astype(np.float64)
    _assert_pairs(_grads(lambda x: fg.nn.ELU(alpha)(x), lambda x: torch.nn.ELU(alpha)(x), x64))


def test_elu_inplace_with_negative_alpha_differentiates_through_the_write():
    # torch refuses this at backward; forgegrad computes it (from the saved input): the out-of-place gradient
    x = np.array([-2.0, -0.5, 1.0], np.float32)
    fx = fg.tensor(x, requires_grad=True)
    h = fx * 1.0
    fg.nn.functional.elu(h, -0.5, inplace=True).sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.elu(tx, -0.5).sum().backward()
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("beta,threshold", [(1.0, 20.0), (1.5, 3.0), (0.5, 10.0), (1.0, -1.0), (-1.0, 20.0)])
def test_softplus_gradients_on_both_sides_and_at_the_threshold_match_torch(beta, threshold):
    # _EDGES holds beta * x == threshold exactly for each pair: the forward is the log there, its slope the
    # sigmoid, and torch's second derivative 0
    _assert_pairs(_grads(lambda x: fg.nn.functional.softplus(x, beta, threshold),
                         lambda x: torch.nn.functional.softplus(x, beta, threshold), _EDGES))


# ---- vector_norm / Tensor.norm ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{"ord": 0}, {"ord": 0, "dim": 1, "keepdim": True}, {"ord": 0.5}, {"ord": -1, "dim": 1},
                                {"ord": -2}, {"ord": 3, "dim": (1, 0)}, {"ord": float("inf"), "dim": ()},
                                {"ord": 2, "dim": []}, {"ord": -float("inf"), "dim": 0, "keepdim": True}])
def test_vector_norm_of_rows_with_zeros_matches_torch_values_and_gradient(kw):
    # a zero's power has no derivative for ord < 1 and makes a negative ord's norm 0: torch's gradient is 0
    # there (not NaN); ord=0's result requires grad (its gradient zeros), as torch's; dim=() means every dim
    v = np.array([[3.0, -4.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, -2.0]], np.float32)
    fx, tx = fg.tensor(v, requires_grad=True), torch.tensor(v, requires_grad=True)
    fy, ty = fg.linalg.vector_norm(fx, **kw), torch.linalg.vector_norm(tx, **kw)
    assert fy.shape == tuple(ty.shape)
    np.testing.assert_allclose(fy.detach().numpy(), ty.detach().numpy(), rtol=1e-5)
    fy.sum().backward()
    ty.sum().backward()
    want = np.zeros_like(v) if tx.grad is None else tx.grad.numpy()  # torch leaves ord=0's gradient undefined
    np.testing.assert_allclose(fx.grad.numpy(), want, rtol=1e-5, atol=1e-7)


def test_vector_norm_of_a_0d_tensor_and_a_narrowing_dtype():
    for dim in (0, -1, (0,)):
        for keepdim in (False, True):
            got = fg.linalg.vector_norm(fg.tensor(-3.0), dim=dim, keepdim=keepdim)
            assert got.shape == () and float(got) == 3.0
    with pytest.raises(IndexError, match="dim"):
        fg.linalg.vector_norm(fg.tensor(-3.0), dim=1)
    with pytest.raises(ValueError, match="narrow"):  # torch refuses it too
        fg.linalg.vector_norm(fg.tensor(np.ones(3)), dtype=fg.float32)
    assert fg.linalg.vector_norm(fg.ones(3), dtype=fg.float64).dtype == fg.float64


# ---- in-place activations --------------------------------------------------------------------------------------
def test_inplace_dropout_with_nothing_to_drop_returns_a_leaf_untouched_as_torch():
    # eval mode (or p=0) writes nothing: torch returns the input itself, even a leaf that requires grad
    leaf = fg.ones(3, requires_grad=True)
    assert fg.nn.functional.dropout(leaf, 0.5, training=False, inplace=True) is leaf
    assert fg.nn.Dropout(0.5, inplace=True).eval()(leaf) is leaf
    assert fg.nn.Dropout(0.0, inplace=True)(leaf) is leaf
    with pytest.raises(RuntimeError, match="leaf Variable"):  # training with p > 0 writes: refused, as torch
        fg.nn.Dropout(0.5, inplace=True)(leaf)


def test_elu_underscore_writes_its_input():
    x = fg.tensor([-1.0, 2.0])
    assert fg.nn.functional.elu_(x, 0.5) is x
    np.testing.assert_allclose(x.numpy(), torch.nn.functional.elu_(torch.tensor([-1.0, 2.0]), 0.5).numpy())


# ---- ONNX export of the new activations ------------------------------------------------------------------------
def test_onnx_export_of_inplace_activations_records_them_out_of_place(tmp_path):
    # inside the export's trace a write into an op's result (nothing else sharing its storage) is recorded as
    # the op, and later reads of the tensor read the result; ELU and Softplus verified in onnxruntime
    pytest.importorskip("onnxruntime")
    nn, F = fg.nn, fg.nn.functional
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(inplace=True), nn.Linear(8, 8), nn.ELU(0.5, inplace=True),
                          nn.Linear(8, 8), nn.Softplus(2.0, 3.0), nn.Dropout(0.3, inplace=True), nn.Linear(8, 3)).eval()
    x = fg.randn(5, 6)
    fg.onnx.export(model, x, str(tmp_path / "m.onnx"))

    class Aliased(nn.Module):
        def forward(self, a):
            h = a * 2
            y = F.relu(h, inplace=True)  # y is h: both read the result
            h.add_(1)
            return y + h

    fg.onnx.export(Aliased(), fg.randn(4, 3), str(tmp_path / "a.onnx"))


def test_onnx_export_refuses_an_inplace_activation_it_cannot_write_through(tmp_path):
    pytest.importorskip("onnxruntime")
    nn, F = fg.nn, fg.nn.functional

    class ViewTaken(nn.Module):
        def forward(self, a):
            h = a * 2
            v = h[0]  # a view taken before the write sees it (torch): the export can not follow that
            F.relu_(h)
            return v

    with pytest.raises(RuntimeError, match=r"F\.relu_.*a view.*inplace = False"):
        fg.onnx.export(ViewTaken(), fg.randn(4, 3), str(tmp_path / "v.onnx"))
    model = nn.Sequential(nn.ELU(inplace=True), nn.Linear(3, 2)).eval()  # writes into the graph input
    x = fg.randn(4, 3)
    before = x.numpy().copy()
    with pytest.raises(RuntimeError, match=r"nn\.ELU\(inplace=True\).*graph input"):
        fg.onnx.export(model, x, str(tmp_path / "e.onnx"))
    np.testing.assert_array_equal(x.numpy(), before)
    model[0].inplace = False  # the out-of-place form exports
    fg.onnx.export(model, x, str(tmp_path / "e.onnx"))
