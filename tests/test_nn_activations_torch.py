"""The activation modules and functions added for MobileNetV3 / YOLO / GLU / SELU ports (nn/activation_extra.py over
ops/activation_hard.py, activation_more.py, activation_param.py) against torch: reprs, module outputs and gradients,
PReLU's state_dict from torch, the in-place variants under torch's rules, RReLU's eval and training modes, the
ONNX mappings at every opset the exporter takes, and hardsigmoid's double backward (torch has none to compare with).
The ops' forward / backward / float64 / ONNX / meta / error checks are generated (tests/test_op_registry.py)."""
import warnings

import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import autograd
from forgegrad.ops import registry

NEW_OPS = ["hardtanh", "hardsigmoid", "hardswish", "softshrink", "hardshrink", "threshold", "mish", "logsigmoid",
           "selu", "celu", "softsign", "tanhshrink", "glu", "softmin", "prelu", "rrelu"]


def _x(*shape, seed=0, scale=4.0):
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    flat = x.reshape(-1)
    flat[:8] = [-3.0, 3.0, 0.0, -1.0, 1.0, 6.0, 0.5, -0.5]  # the kinks of the piecewise ones
    return x


# (forgegrad module, torch module) built with the same arguments
MODULES = [
    ("ReLU6", (), {}), ("ReLU6", (True,), {}), ("Hardtanh", (), {}), ("Hardtanh", (-2, 2, True), {}),
    ("Hardtanh", (-0.5, 3.0), {}), ("Hardsigmoid", (), {}), ("Hardsigmoid", (True,), {}), ("Hardswish", (), {}),
    ("Mish", (), {}), ("Mish", (True,), {}), ("LogSigmoid", (), {}), ("SELU", (), {}), ("SELU", (True,), {}),
    ("CELU", (), {}), ("CELU", (2.0, True), {}), ("CELU", (1,), {}), ("GLU", (), {}), ("GLU", (1,), {}),
    ("Softsign", (), {}), ("Softshrink", (), {}), ("Softshrink", (1,), {}), ("Hardshrink", (), {}),
    ("Hardshrink", (0.25,), {}), ("Tanhshrink", (), {}), ("Threshold", (0.1, 20), {}),
    ("Threshold", (1.0, -2.0, True), {}), ("Softmin", (1,), {}), ("Softmin", (), {"dim": 0}), ("Softmax2d", (), {}),
    ("RReLU", (), {}), ("RReLU", (0.1, 0.3, True), {}), ("PReLU", (), {}), ("PReLU", (4, 0.1), {}),
]


@pytest.mark.parametrize("name,args,kwargs", MODULES, ids=[f"{n}{a}{k or ''}" for n, a, k in MODULES])
def test_module_repr_output_and_gradient_match_torch(name, args, kwargs):
    m, tm = getattr(fg.nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert repr(m) == repr(tm)
    m.eval()
    tm.eval()  # RReLU: the mean slope (training draws random slopes: see the RReLU tests)
    x = _x(2, 4, 3, 6)
    xf = fg.tensor(x, requires_grad=True)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    # in-place modules write into their input: give them a non-leaf (torch refuses a leaf that requires grad)
    yf, yt = m(xf * 1), tm(xt * 1)
    np.testing.assert_allclose(yf.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    c = np.random.default_rng(1).uniform(-1, 1, size=yt.shape).astype(np.float32)
    (yf * fg.tensor(c)).sum().backward()
    (yt * torch.from_numpy(c)).sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert n == tn
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_prelu_state_dict_from_torch_reproduces_outputs_and_gradients():
    torch.manual_seed(0)
    tm = torch.nn.PReLU(5, init=0.1)
    with torch.no_grad():
        tm.weight.uniform_(-1, 1)
    m = fg.nn.PReLU(5)
    assert list(m.state_dict()) == list(tm.state_dict()) == ["weight"]
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    x = _x(3, 5, 7)
    xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x.copy()).requires_grad_(True)
    yf, yt = m(xf), tm(xt)
    np.testing.assert_allclose(yf.numpy(), yt.detach().numpy(), rtol=1e-6, atol=1e-7)
    (yf * yf).sum().backward()
    (yt * yt).sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.weight.grad.numpy(), tm.weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    # an SGD step on both gives the same weight
    fg.optim.SGD(m.parameters(), lr=0.1).step()
    torch.optim.SGD(tm.parameters(), lr=0.1).step()
    np.testing.assert_allclose(m.weight.detach().numpy(), tm.weight.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_prelu_weight_size_must_match_the_channels():
    with pytest.raises(RuntimeError, match="weight"):
        fg.nn.PReLU(3)(fg.randn(2, 4, 5))
    with pytest.raises(TypeError, match="num_parameters"):
        fg.nn.PReLU(2.5)


# in-place: F.name(x, inplace=True) or F.name_ (torch's names), with its torch twin
INPLACE = [
    ("relu6", lambda F, t: F.relu6(t, inplace=True)), ("hardtanh_", lambda F, t: F.hardtanh_(t, -0.5, 2.0)),
    ("hardtanh", lambda F, t: F.hardtanh(t, -1, 1, inplace=True)),
    ("hardsigmoid", lambda F, t: F.hardsigmoid(t, inplace=True)),
    ("hardswish", lambda F, t: F.hardswish(t, inplace=True)), ("mish", lambda F, t: F.mish(t, inplace=True)),
    ("selu_", lambda F, t: F.selu_(t)), ("selu", lambda F, t: F.selu(t, inplace=True)),
    ("celu_", lambda F, t: F.celu_(t, 1.5)), ("threshold_", lambda F, t: F.threshold_(t, 0.5, -1.0)),
    ("threshold", lambda F, t: F.threshold(t, 0.0, 2.0, True)), ("rrelu_", lambda F, t: F.rrelu_(t, 0.1, 0.3)),
    ("rrelu", lambda F, t: F.rrelu(t, inplace=True)),
]


@pytest.mark.parametrize("name,call", INPLACE, ids=[n for n, _ in INPLACE])
def test_inplace_variants_follow_torch(name, call):
    x = _x(3, 8, seed=2)
    # a leaf that requires grad refuses, as torch's
    with pytest.raises(RuntimeError, match="leaf"):
        call(F, fg.tensor(x, requires_grad=True))
    with pytest.raises(RuntimeError, match="leaf"):
        call(torch.nn.functional, torch.from_numpy(x.copy()).requires_grad_(True))
    # a graph tensor: written into, the same tensor returned, gradients through the write as torch's
    xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x.copy()).requires_grad_(True)
    hf, ht = xf * 2, xt * 2
    of, ot = call(F, hf), call(torch.nn.functional, ht)
    assert of is hf and ot is ht
    np.testing.assert_allclose(hf.numpy(), ht.detach().numpy(), rtol=1e-5, atol=1e-6)
    (hf * hf).sum().backward()
    (ht * ht).sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    # a tensor an earlier op saved (sigmoid saves its output): backward refuses it once written, as torch's
    for fn, t in ((F, fg.tensor(x, requires_grad=True)),
                  (torch.nn.functional, torch.from_numpy(x.copy()).requires_grad_(True))):
        s = t.sigmoid()
        call(fn, s)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            s.sum().backward()
    # without grad: the storage itself is written (a view of it sees the new values)
    plain = fg.tensor(x.copy())
    view = plain[1]
    call(F, plain)
    np.testing.assert_array_equal(view.numpy(), plain.numpy()[1])
    assert not np.array_equal(plain.numpy(), x)


def test_rrelu_eval_is_torch_and_training_slopes_stay_within_bounds():
    x = _x(64, 33, seed=3)
    lower, upper = 0.05, 0.4
    got = F.rrelu(fg.tensor(x), lower, upper, training=False).numpy()
    want = torch.nn.functional.rrelu(torch.from_numpy(x.copy()), lower, upper, training=False).numpy()
    np.testing.assert_array_equal(got, want)
    fg.manual_seed(3)
    xf = fg.tensor(x, requires_grad=True)
    y = F.rrelu(xf, lower, upper, training=True)
    y.sum().backward()
    y, g = y.numpy(), xf.grad.numpy()
    neg, pos = x < 0, x > 0
    slopes = y[neg] / x[neg]
    assert slopes.min() >= lower - 1e-6 and slopes.max() <= upper + 1e-6
    assert slopes.std() > 0.05  # drawn per element, not one slope
    np.testing.assert_array_equal(y[pos], x[pos])
    np.testing.assert_allclose(g[neg], slopes, rtol=1e-6)  # the gradient is the slope drawn
    np.testing.assert_array_equal(g[pos], 1.0)
    fg.manual_seed(3)  # forgegrad's generator: a seed repeats the slopes
    np.testing.assert_array_equal(F.rrelu(fg.tensor(x), lower, upper, training=True).numpy(), y)


def test_rrelu_module_follows_train_and_eval_also_after_a_linear_in_a_sequential():
    fg.manual_seed(0)
    model = fg.nn.Sequential(fg.nn.Linear(6, 40), fg.nn.RReLU(0.1, 0.3))
    x = fg.randn(50, 6)
    with fg.no_grad():
        h = model[0](x).numpy()
        model.eval()
        np.testing.assert_allclose(model(x).numpy(), np.where(h > 0, h, h * np.float32(0.2)), rtol=1e-6, atol=1e-7)
        model.train()
        y = model(x).numpy()
    neg = h < 0
    slopes = y[neg] / h[neg]
    assert slopes.min() >= 0.1 - 1e-6 and slopes.max() <= 0.3 + 1e-6 and slopes.std() > 0.02


def test_rrelu_eval_epilogue_is_the_leaky_relu_kernel_code_in_the_gemm():
    from forgegrad import _C
    act = fg.nn.RReLU(0.1, 0.5)
    with pytest.raises(ValueError, match="training"):
        act.epilogue()  # a new module trains: its slopes are random
    act.eval()
    code, alpha = act.epilogue()
    assert code == _C.activation.LEAKY_RELU and alpha == pytest.approx(0.3)
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((7, 9), (5, 9), (5,)))
    fused = _C.gemm.linear(x, w, b, code, alpha, None)
    steps = F.rrelu(F.linear(fg.tensor(x), fg.tensor(w), fg.tensor(b)), 0.1, 0.5).numpy()
    np.testing.assert_allclose(fused, steps, rtol=1e-6, atol=1e-6)


def test_hardsigmoid_double_backward_is_zero_and_its_gradient_torchs():
    x = _x(4, 9, seed=4).astype(np.float64)
    xf = fg.tensor(x, requires_grad=True)
    (g,) = autograd.grad(F.hardsigmoid(xf).sum(), [xf], create_graph=True)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    (gt,) = torch.autograd.grad(torch.nn.functional.hardsigmoid(xt).sum(), [xt])
    np.testing.assert_allclose(g.detach().numpy(), gt.numpy(), rtol=1e-12)
    (gg,) = autograd.grad((g * fg.tensor(x)).sum(), [xf], allow_unused=True)
    assert gg is None or not np.any(gg.numpy())


def test_errors_name_the_argument():
    x = fg.randn(2, 5)
    with pytest.raises(ValueError, match="min_val"):
        F.hardtanh(x, 2.0, 1.0)
    with pytest.raises(ValueError, match="max_val"):
        fg.nn.Hardtanh(1.0, 1.0)  # torch's module refuses equal bounds too
    with pytest.raises(RuntimeError, match="dim"):
        F.glu(x, 1)
    with pytest.raises(RuntimeError, match="dim"):
        fg.nn.GLU()(fg.randn(3, 3))
    with pytest.raises(TypeError, match="inplace"):
        F.selu(x, inplace="yes")
    with pytest.raises(RuntimeError, match="alpha"):
        fg.nn.CELU(0.0)
    with pytest.raises(RuntimeError, match="lower"):
        fg.nn.RReLU(0.5, 0.1)
    with pytest.raises(ValueError, match="3D or 4D"):
        fg.nn.Softmax2d()(x)
    with pytest.raises(TypeError, match="input"):
        F.mish([1.0, 2.0])


def test_softmin_without_dim_takes_torchs_implicit_dim_with_its_warning():
    x = _x(2, 3, 4, seed=5)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        got = F.softmin(fg.tensor(x)).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = torch.nn.functional.softmin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("opset", [13, 14, 17, 18, 21])
def test_onnx_mappings_at_every_opset(opset, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    for name in NEW_OPS:
        op = registry.get(name)
        for k, s in enumerate(op.samples()[:2]):
            pos = [i for i, a in enumerate(s.args) if isinstance(a, np.ndarray)]

            class OneOp(fg.nn.Module):
                def forward(self, *tensors, s=s, pos=pos):
                    args = list(s.args)
                    for i, t in zip(pos, tensors):
                        args[i] = t
                    return op(*args, **s.kwargs)

            path = tmp_path / f"{name}_{k}_{opset}.onnx"
            report = fg.onnx.export(OneOp(), tuple(fg.tensor(s.args[i]) for i in pos), str(path), opset=opset,
                                    dynamic_axes={}, rtol=max(op.tol[0], 1e-5), atol=max(op.tol[1], 1e-6))
            assert report.ok, f"{name} sample {k} at opset {opset}: {report}"
            if name in ("hardswish", "mish"):
                types = {n.op_type for n in onnx.load(str(path)).graph.node}
                native = {"hardswish": ("HardSwish", 14), "mish": ("Mish", 18)}[name]
                assert (native[0] in types) == (opset >= native[1]), (name, opset, types)


def test_onnx_export_of_rrelu_training_slopes_is_refused_saying_why(tmp_path):
    class Random(fg.nn.Module):  # the export runs modules in eval mode: only an explicit training=True draws
        def forward(self, x):
            return F.rrelu(x, 0.1, 0.3, training=True)

    with pytest.raises(Exception, match="eval mode"):
        fg.onnx.export(Random(), (fg.randn(2, 4),), str(tmp_path / "m.onnx"))
    model = fg.nn.Sequential(fg.nn.Linear(4, 3), fg.nn.RReLU())
    model.train()  # exported in eval mode: LeakyRelu with the mean slope
    assert fg.onnx.export(model, (fg.randn(2, 4),), str(tmp_path / "m.onnx")).ok
    assert model.training


def test_mobilenet_v3_style_block_matches_torch():
    """Conv -> BatchNorm -> Hardswish, a squeeze-excite gate with Hardsigmoid, and a Mish head: torch's weights,
    same outputs and input gradients."""
    torch.manual_seed(0)

    def build(nn):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish(), nn.Conv2d(8, 8, 1),
                             nn.Hardsigmoid(), nn.Flatten(), nn.Linear(8 * 5 * 5, 6), nn.Mish(), nn.Linear(6, 4),
                             nn.SELU(), nn.Linear(4, 4), nn.GLU())

    tm, m = build(torch.nn), build(fg.nn)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    tm.eval()
    m.eval()
    x = np.random.default_rng(6).standard_normal((2, 3, 5, 5)).astype(np.float32)
    xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x.copy()).requires_grad_(True)
    yf, yt = m(xf), tm(xt)
    np.testing.assert_allclose(yf.numpy(), yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    yf.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -float("inf")])
def test_celu_refuses_a_non_finite_alpha(alpha):
    # fuzz case op:celu [["scalar", 0, 5]]: alpha=NaN gave NaN at x = 0 where torch's float64 gives 0 (and its
    # float32 NaN): no meaningful result, so the argument is refused by name
    with pytest.raises(ValueError, match="alpha"):
        F.celu(fg.tensor(np.zeros(3, np.float32)), alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        fg.nn.CELU(alpha)(fg.tensor(np.zeros(3, np.float32)))
