"""The inference fast path: without a graph to record (no_grad, no trace) Linear, Dense, the
activation modules and Sequential call their kernels directly, and Sequential runs Linear ->
activation pairs as one fused call (`_C.gemm.linear(..., activation)`). Results must be exactly those
of the autograd path (same kernels), and bad input must still raise clear errors."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C, nn
from forgegrad.autograd import graph_free, no_grad, trace
from forgegrad.nn import functional as F

RNG = np.random.default_rng(7)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _graph_then_free(model, x):
    """model(x) with a graph recorded (the autograd ops) and without (the fast path)."""
    xt = fg.tensor(x)
    y_graph = model(xt).numpy().copy()
    with no_grad():
        y_free = model(xt)
    assert not y_free.requires_grad
    return y_graph, y_free.numpy()


def test_graph_free_flag():
    assert not graph_free()
    with no_grad():
        assert graph_free()
        with trace():
            assert not graph_free()  # the ONNX exporter must see every op
    assert not graph_free()


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.2), nn.GELU(), nn.GELU("tanh"), nn.Sigmoid(),
                                 nn.Tanh()], ids=lambda a: repr(a))
@pytest.mark.parametrize("batch", [1, 3, 17])
def test_sequential_fusion_matches_autograd_path(act, batch, threads):
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(37, 29), act, nn.Linear(29, 11), nn.ReLU(), nn.Linear(11, 5))
    y_graph, y_free = _graph_then_free(model, _x(batch, 37))
    np.testing.assert_array_equal(y_free, y_graph)


def test_fused_linear_against_torch():
    x, w, b = _x(6, 2, 33), _x(19, 33), _x(19)
    got = _C.gemm.linear(x, w, b, _C.activation.RELU)
    want = torch.relu(torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    assert got.shape == (6, 2, 19)
    got = _C.gemm.linear(x, w)  # no bias, no activation
    np.testing.assert_allclose(got, x @ w.T, rtol=1e-5, atol=1e-5)


def test_fused_linear_layouts():
    # A transposed weight view, a strided (non-contiguous) input, a single row, zero rows.
    w = _x(33, 19).T  # (19, 33) weight, a transposed view
    x = _x(5, 66)[:, ::2]
    b = _x(19)
    np.testing.assert_allclose(_C.gemm.linear(x, w, b), x @ w.T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_C.gemm.linear(x[0], w, b), x[0] @ w.T + b, rtol=1e-5, atol=1e-5)
    assert _C.gemm.linear(np.zeros((0, 33), np.float32), w, b).shape == (0, 19)
    # K = 0: the product is empty, the output is the bias
    np.testing.assert_array_equal(_C.gemm.linear(np.zeros((3, 0), np.float32), np.zeros((4, 0), np.float32),
                                                 np.arange(4, dtype=np.float32)), np.tile(np.arange(4.0), (3, 1)))


def test_fused_linear_nan_propagates_through_relu():
    x = np.array([[np.nan], [-2.0], [3.0]], np.float32)
    y = _C.gemm.linear(x, np.ones((1, 1), np.float32), None, _C.activation.RELU)
    assert np.isnan(y[0, 0]) and y[1, 0] == 0.0 and y[2, 0] == 3.0


@pytest.mark.parametrize("args,exc,match", [
    ((np.zeros((2, 3)), np.zeros((4, 3), np.float32)), TypeError, "linear: input must be float32"),
    (([[1.0, 2.0, 3.0]], np.zeros((4, 3), np.float32)), TypeError, "linear: input must be a numpy.ndarray"),
    ((np.zeros((2, 5), np.float32), np.zeros((4, 3), np.float32)), ValueError,
     r"linear: input has shape \(2, 5\), expected \(\.\.\., 3\) for weight of shape \(4, 3\)"),
    ((np.zeros(3, np.float32), np.zeros(3, np.float32)), ValueError, "linear: weight must be 2-D"),
    ((np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), np.zeros(5, np.float32)), ValueError,
     r"linear: bias must have shape \(4,\), got \(5,\)"),
    ((np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), np.zeros(4)), TypeError,
     "linear: bias must be float32"),
    ((np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), None, 99), ValueError, "activation"),
])
def test_fused_linear_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        _C.gemm.linear(*args)


def test_linear_module_errors_on_both_paths():
    lin = nn.Linear(3, 4)
    bad = fg.tensor(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 3\)"):
        lin(bad)
    with no_grad(), pytest.raises(ValueError, match=r"expected \(\.\.\., 3\)"):
        lin(bad)
    wrong_dtype = fg.Tensor._wrap(np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match="float32"):
        lin(wrong_dtype)
    with no_grad(), pytest.raises(TypeError, match="float32"):
        lin(wrong_dtype)


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "tanh", "gelu", "leaky_relu", "softmax"])
def test_dense_fast_path_matches_autograd_path(activation):
    fg.manual_seed(1)
    model = nn.Sequential(nn.Dense(13, activation=activation, input_dim=21), nn.Dense(3))
    y_graph, y_free = _graph_then_free(model, _x(4, 21))
    np.testing.assert_array_equal(y_free, y_graph)


def test_activation_modules_fast_path_non_float32_falls_back():
    # A float64 tensor is not the kernels' dtype: the module takes the autograd op's numpy route.
    t = fg.Tensor._wrap(np.array([-1.0, 2.0]))
    with no_grad():
        assert nn.ReLU()(t).numpy().tolist() == [0.0, 2.0]


def test_trace_sees_unfused_ops_under_no_grad():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with no_grad(), trace() as rec:
        model(fg.tensor(_x(2, 4)))
    names = [r[0].op.name for r in rec.records]
    assert names == ["linear", "relu"]


def test_no_grad_restores_state_after_exception():
    with pytest.raises(RuntimeError):
        with no_grad():
            raise RuntimeError("boom")
    assert fg.autograd.is_grad_enabled()

    @no_grad()
    def f():
        return fg.autograd.is_grad_enabled()

    assert f() is False and fg.autograd.is_grad_enabled()


@pytest.mark.parametrize("shape", [(1, 23), (7, 23), (2, 3, 23)])
def test_linear_without_bias_against_torch(shape):
    # Graph path (forward + weight gradient) and fast path, with no bias: nothing but the product.
    lin = nn.Linear(23, 9, bias=False)
    tlin = torch.nn.Linear(23, 9, bias=False)
    with torch.no_grad():
        tlin.weight.copy_(torch.from_numpy(lin.weight._data))
    x = _x(*shape)
    y = lin(fg.tensor(x))
    ty = tlin(torch.from_numpy(x))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(lin.weight.grad, tlin.weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    with no_grad():
        np.testing.assert_array_equal(lin(fg.tensor(x)).numpy(), y.numpy())


def test_sequential_plan_follows_module_changes():
    fg.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU())
    x = fg.tensor(_x(5, 8))
    with no_grad():
        model(x)  # builds the plan
        model.append(nn.Linear(6, 2))
        y = model(x)
        assert y.shape == (5, 2)
        model.append(nn.Sigmoid())  # now fused into the new last Linear
        y2 = model(x)
    np.testing.assert_array_equal(y2.numpy(), model(x).numpy())  # graph path: same kernels
    assert (y2.numpy() > 0).all() and (y2.numpy() < 1).all()


def test_sequential_fast_path_with_non_linear_modules():
    fg.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Dropout(0.5), nn.Tanh(), nn.Linear(7, 3), nn.Softmax(-1))
    model.eval()
    y_graph, y_free = _graph_then_free(model, _x(4, 3, 4))
    np.testing.assert_array_equal(y_free, y_graph)


def test_sequential_does_not_fuse_a_subclass_that_overrides_forward():
    class ShiftedReLU(nn.ReLU):
        def forward(self, input):
            return F.relu(input) + 1.0

    fg.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 4), ShiftedReLU())
    y_graph, y_free = _graph_then_free(model, _x(3, 6))
    np.testing.assert_array_equal(y_free, y_graph)
    assert (y_free >= 1.0).all()


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.1), nn.GELU(), nn.Sigmoid()], ids=lambda a: repr(a))
@pytest.mark.parametrize("batch", [1, 5])
def test_sequential_conv_activation_and_pooling_match_autograd_path(act, batch, threads):
    # Conv2d -> activation applies the activation in place; MaxPool2d computes no indices; odd
    # widths leave masked tails in the vectorised 2x2 pool, and NaN must win a window as on the graph path
    fg.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), act, nn.MaxPool2d(2), nn.Conv2d(8, 5, 3), nn.ReLU(),
                          nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.Flatten())
    x = _x(batch, 3, 23, 37)
    x[0, 1, 4, 5] = np.nan
    y_graph, y_free = _graph_then_free(model, x)
    np.testing.assert_array_equal(y_free, y_graph)
    assert np.isnan(y_free).any()


def test_sequential_flatten_step_is_a_view_and_falls_back_where_it_must():
    """The graph-free Flatten reshapes the array (same data, no copy), also for an empty batch; a
    Flatten of other dims, or of a 1-D input, runs the module (which raises as it does on the graph)."""
    model = nn.Sequential(nn.Flatten(), nn.Identity())
    x = fg.tensor(_x(3, 2, 4, 5))
    with no_grad():
        y = model(x)
        assert y.shape == (3, 40) and np.shares_memory(y.numpy(), x.numpy())
        assert model(fg.tensor(np.zeros((0, 2, 3), np.float32))).shape == (0, 6)
        assert nn.Sequential(nn.Flatten(0, 1), nn.Identity())(x).shape == (6, 4, 5)
        with pytest.raises(IndexError, match="start_dim out of range"):
            nn.Sequential(nn.Flatten(), nn.Identity())(fg.tensor(np.zeros(4, np.float32)))


def test_sequential_conv_and_pool_geometry_follows_shapes_and_settings():
    """The graph-free conv and pool keep their checked geometry for the last input shape: other batch
    sizes, changed settings and non-contiguous inputs still get the graph path's results."""
    fg.manual_seed(8)
    conv, pool = nn.Conv2d(3, 6, 3, padding=1), nn.MaxPool2d(2)
    model = nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten())
    for batch in (2, 3, 2, 1):
        y_graph, y_free = _graph_then_free(model, _x(batch, 3, 10, 9))
        np.testing.assert_array_equal(y_free, y_graph)
    conv.padding, pool.kernel_size, pool.stride = (0, 0), 3, 3
    y_graph, y_free = _graph_then_free(model, _x(2, 3, 10, 9))
    assert y_free.shape == (2, 6 * 2 * 2)
    np.testing.assert_array_equal(y_free, y_graph)
    x = _x(2, 3, 9, 10).transpose(0, 1, 3, 2)  # a strided view
    y_graph, y_free = _graph_then_free(model, x)
    np.testing.assert_array_equal(y_free, y_graph)
    with no_grad(), pytest.raises(ValueError, match="larger than the padded input"):
        model(fg.tensor(_x(1, 3, 2, 2)))


def test_sequential_conv_takes_a_following_2x2_max_pool_into_its_kernel_call():
    """Conv2d [-> activation] -> MaxPool2d(2) runs as one conv call that pools each block of output
    (LeNet's features: two steps); other pools, ceil_mode on odd sizes and hooked pools run as their
    own steps. Every form gives the graph path's bits."""
    from forgegrad.nn import container
    fg.manual_seed(9)
    lenet = fg.models.LeNet().eval()
    y_graph, y_free = _graph_then_free(lenet, _x(5, 1, 28, 28))
    np.testing.assert_array_equal(y_free, y_graph)
    plan = lenet.features.__dict__["_inference_plan"][1]
    assert [(run.__name__, type(tail[0]).__name__, type(tail[1]).__name__) for run, _, tail in plan] == \
        [("_run_conv", "ReLU", "MaxPool2d")] * 2
    calls = []
    hooked = nn.MaxPool2d(2)
    hooked.register_forward_pre_hook(lambda m, args: calls.append(m))
    for pool, fused in ((nn.MaxPool2d(2), True), (nn.MaxPool2d((2, 2), stride=2, padding=0, dilation=1), True),
                        (nn.MaxPool2d(2, ceil_mode=True), "even"), (nn.MaxPool2d(3), False),
                        (nn.MaxPool2d(2, stride=1), False), (nn.MaxPool2d(2, padding=1), False)):
        for steps in ((nn.Conv2d(3, 5, 3, padding=1), nn.LeakyReLU(0.3), pool), (nn.Conv2d(3, 5, 3), pool)):
            model = nn.Sequential(*steps)
            for shape in ((2, 3, 9, 11), (3, 3, 8, 8)):  # odd conv outputs drop a row / column only in floor mode
                y_graph, y_free = _graph_then_free(model, _x(*shape))
                assert y_free.shape == y_graph.shape
                assert y_free.tobytes() == y_graph.tobytes(), (pool, steps)
            tail = model.__dict__["_inference_plan"][1][0][2]
            assert tail[1] is pool
            conv_shape = model[0]._plan_geometry[1][4]
            even = conv_shape[2] % 2 == 0 and conv_shape[3] % 2 == 0  # ceil_mode pools alike there
            assert container._pool_fuses(pool, conv_shape) is (fused is True or (fused == "even" and even))
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), hooked)
    y_graph, y_free = _graph_then_free(model, _x(2, 3, 9, 11))
    assert y_free.tobytes() == y_graph.tobytes()
    assert calls == [hooked, hooked]  # a hooked pool takes its own step (the graph path's call, then this one)
    with no_grad(), pytest.raises(ValueError, match="max_pool2d: kernel_size"):
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2))(fg.tensor(_x(1, 3, 3, 5)))


def test_sequential_pool_with_indices_and_hooked_activation_run_as_modules():
    fg.manual_seed(7)
    calls = []
    relu = nn.ReLU()
    relu.register_forward_pre_hook(lambda m, args: calls.append(m))
    model = nn.Sequential(nn.Conv2d(2, 4, 3), relu, nn.MaxPool2d(2, return_indices=True))
    x = fg.tensor(_x(2, 2, 9, 10))
    with no_grad():
        y, idx = model(x)
    assert calls == [relu]  # the hooked activation took its own step
    y_graph, idx_graph = model(x)
    np.testing.assert_array_equal(y.numpy(), y_graph.numpy())
    np.testing.assert_array_equal(idx.numpy(), idx_graph.numpy())
