"""The opt-in CPU fallback (forgegrad.devices.set_cpu_fallback / FORGEGRAD_CPU_FALLBACK=1): an op without a
Function on a device runs on the CPU through host copies.

The device here is registered through the public plugin API (tests/device_seam_helpers.py: arrays that refuse
every numpy protocol) with Functions for only linear, add, mul, relu and the view ops a device must have (the
fallback cannot give views: reshape, permute, expand, getitem), so every other op is missing on it. With
the fallback on, those ops must give the CPU's bits, forward and backward, and their results must live on the
device. The cuda test runs where a GPU is (tools/gpu_check.sh lists this file).
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import device_seam_helpers as seam
import forgegrad as fg
import forgegrad.cuda as fcuda
import forgegrad.nn.functional as F
from forgegrad import _cpu_fallback, devices, nn, optim
from forgegrad.optim import kernels as optim_kernels

DEV = "fbdev"
ADAPTED = ("linear", "add", "mul", "relu", "reshape", "permute", "expand", "getitem")
host = seam.host


@pytest.fixture(autouse=True, scope="module")
def _device():
    array_type = type(f"{DEV}Array", (seam.SeamArray,), {})
    devices.register_device(DEV, array_type, seam.SeamBackend(array_type))
    for name in ADAPTED:
        op = fg.ops.get(name)
        op.add_device(DEV, seam.adapt(op, array_type))
        kernel = seam.adapt_inference(op, DEV, array_type)
        if kernel is not None:
            op.set_inference(DEV, kernel)
    optim_kernels.register_kernel("sgd", DEV, seam.adapt_optimizer_kernel(optim_kernels.kernel("sgd", "cpu")))
    before = devices.cpu_fallback_enabled()
    try:
        yield
    finally:
        devices.set_cpu_fallback(before)
        for name in ADAPTED:
            fg.ops.get(name).remove_device(DEV)
        optim_kernels.unregister_kernel("sgd", DEV)
        devices.unregister_device(DEV)


@pytest.fixture
def fallback():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the once-per-op warning has a test of its own
        with devices.cpu_fallback(True):
            yield


def _bits(a, b, what=""):
    a, b = host(a), host(b)
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: values differ"


# ---- off: the error names the op and the switch ------------------------------------------------------------
def test_without_the_switch_a_missing_op_raises_naming_it_and_the_switch():
    x = fg.randn(3, 4).to(DEV)
    with devices.cpu_fallback(False):
        _bits(x.relu(), fg.randn(3, 4).relu() * 0 + x.cpu().relu())  # an adapted op runs on the device
        with pytest.raises(NotImplementedError, match=rf"op 'cumsum' has no kernel for device '{DEV}' \(it runs "
                                                      r"on: cpu, meta\).*FORGEGRAD_CPU_FALLBACK=1.*"
                                                      r"forgegrad\.devices\.set_cpu_fallback\(True\)"):
            x.cumsum(1)


def test_the_switch_restores_the_error_when_turned_off():
    x = fg.randn(3, 4).to(DEV)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with devices.cpu_fallback():
            assert devices.cpu_fallback_enabled()
            assert x.cumsum(1).device == DEV
        with devices.cpu_fallback(False):
            with pytest.raises(NotImplementedError, match="FORGEGRAD_CPU_FALLBACK"):
                x.cumsum(1)
            devices.set_cpu_fallback(True)
            assert x.cumsum(1).device == DEV
            devices.set_cpu_fallback(False)
            with pytest.raises(NotImplementedError, match="op 'cumsum' has no kernel"):
                x.cumsum(1)
    with pytest.raises(TypeError, match="set_cpu_fallback: expected a bool, got str"):
        devices.set_cpu_fallback("yes")


@pytest.mark.parametrize("value, on", [("1", True), ("", False), ("0", False)])
def test_the_environment_variable_is_read_at_import(value, on):
    env = dict(os.environ, FORGEGRAD_CPU_FALLBACK=value)
    out = subprocess.run([sys.executable, "-c", "import forgegrad; print(forgegrad.devices.cpu_fallback_enabled())"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(on)


# ---- on: the CPU's bits, forward and backward, on the device ----------------------------------------------
def _run(op, sample, dev, grad_positions):
    """Outputs and gradients of ``op`` on ``sample`` with its tensors on ``dev`` (host arrays to compare)."""
    args = []
    for i, a in enumerate(sample.args):
        if isinstance(a, np.ndarray):
            t = fg.tensor(a.copy()).to(dev)
            args.append(t.requires_grad_(True) if i in grad_positions else t)
        else:
            args.append(a)
    out = op(*args, **sample.kwargs)
    outs = tuple(out) if isinstance(out, tuple) else (out,)
    assert all(o.device == dev for o in outs)
    rng = np.random.default_rng(3)
    total = None
    for o in outs:
        if o.requires_grad:
            c = fg.tensor(rng.uniform(-1, 1, size=o.shape).astype(host(o).dtype)).to(dev)
            term = (o * c).sum()
            total = term if total is None else total + term
    if total is not None:
        total.backward()
    grads = []
    for p in grad_positions:
        assert args[p].grad is not None and args[p].grad.device == dev
        grads.append(args[p].grad)
    return outs, grads


def _grad_positions(sample):
    if sample.grad is not None:
        return sample.grad
    return tuple(i for i, a in enumerate(sample.args) if isinstance(a, np.ndarray) and a.dtype == np.float32)


@pytest.mark.parametrize("name", ["cumsum", "logsumexp", "max_dim", "mode", "erf", "mse_loss", "cross_entropy",
                                  "layer_norm"])
def test_ops_without_a_device_function_give_the_cpus_bits(name, fallback):
    op = fg.ops.get(name)
    assert DEV not in op.functions
    for sample in op.samples():
        pos = _grad_positions(sample)
        want_outs, want_grads = _run(op, sample, "cpu", pos)
        got_outs, got_grads = _run(op, sample, DEV, pos)
        assert len(got_outs) == len(want_outs)
        for k, (g, w) in enumerate(zip(got_outs, want_outs)):
            _bits(g, w, f"{name} {sample.name!r} output {k}")
        for p, g, w in zip(pos, got_grads, want_grads):
            _bits(g, w, f"{name} {sample.name!r} gradient of argument {p}")


def test_multi_output_op_gives_its_int_indices_on_the_device(fallback):
    x = fg.randn(4, 6)
    values, indices = x.to(DEV).max(1)
    assert values.device == indices.device == DEV and indices.dtype == fg.int64
    _bits(indices, x.max(1)[1])
    _bits(values, x.max(1)[0])


@pytest.mark.parametrize("name, call", [("erf", lambda t: t.erf()), ("logsumexp", lambda t: t.logsumexp(1)),
                                        ("cumsum", lambda t: t.cumsum(0))])
def test_a_float64_input_runs_the_cpus_float64_function(name, call, fallback):
    x = np.random.default_rng(0).standard_normal((3, 5))
    xc = fg.tensor(x, requires_grad=True)
    xd = fg.tensor(x).to(DEV).requires_grad_(True)
    yc, yd = call(xc), call(xd)
    assert yd.dtype == fg.float64
    _bits(yd, yc, name)
    yc.sum().backward()
    yd.sum().backward()
    assert xd.grad.dtype == fg.float64
    _bits(xd.grad, xc.grad, name)


def test_no_grad_and_integer_and_bool_tensors_follow_the_cpus_dtypes(fallback):
    x = fg.randn(4, 5)
    i = fg.tensor(np.arange(-6, 6, dtype=np.int32).reshape(3, 4))
    with fg.no_grad():
        _bits(x.to(DEV).erf(), x.erf())
        _bits(x.to(DEV).cumsum(1), x.cumsum(1))
    _bits(i.to(DEV).cumsum(1), i.cumsum(1))  # int32 sums in int64, as torch's
    _bits(i.to(DEV).erf(), i.erf())  # an integer tensor's erf is float32
    _bits(x.to(DEV).isnan(), x.isnan())
    _bits(x.to(DEV).argmax(1), x.argmax(1))
    h = fg.randn(3, 4).half()
    _bits(h.to(DEV).erf(), h.erf())  # float16 on the float32 kernels, rounded back


def test_the_warning_is_given_once_per_op_and_device(fallback):
    _cpu_fallback.forget(DEV)
    x = fg.randn(3, 4).to(DEV)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        x.cumsum(1)
        x.cumsum(0)
        x.erf()
        x.erf()
    messages = [str(w.message) for w in seen if issubclass(w.category, UserWarning)]
    assert messages == [
        f"The operator '{n}' is not currently supported on the {DEV} device and falls back to the CPU "
        "(FORGEGRAD_CPU_FALLBACK=1); this may be slow." for n in ("cumsum", "erf")]
    assert all(w.filename == __file__ for w in seen)  # it points at the caller, not into forgegrad


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.norm(self.fc1(x).relu()).cumsum(1)
        return self.fc2(h).logsumexp(1)


def test_a_small_model_trains_to_the_cpus_bits(fallback):
    fg.manual_seed(0)
    cpu_model = _Net()
    dev_model = _Net()
    dev_model.load_state_dict(cpu_model.state_dict())
    dev_model.to(DEV)
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((5, 6)).astype(np.float32), rng.standard_normal(5).astype(np.float32))
               for _ in range(3)]
    for model, dev in ((cpu_model, "cpu"), (dev_model, DEV)):
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for xb, yb in batches:
            opt.zero_grad()
            loss = F.mse_loss(model(fg.tensor(xb).to(dev)), fg.tensor(yb).to(dev))
            loss.backward()
            opt.step()
    for (name, p), q in zip(cpu_model.named_parameters(), dev_model.parameters()):
        assert q.device == DEV
        _bits(q, p, name)


# ---- what the fallback refuses or keeps ---------------------------------------------------------------
def test_view_ops_are_refused_clearly(fallback):
    x = fg.randn(3, 4).to(DEV)
    with pytest.raises(NotImplementedError, match=r"op 'tensor_unfold' has no kernel for device 'fbdev' .*is a "
                                                  r"view op .*CPU fallback cannot run.*\.cpu\(\)"):
        x.unfold(1, 2, 1)
    with devices.cpu_fallback(False), pytest.raises(NotImplementedError) as err:
        x.unfold(1, 2, 1)
    assert "FORGEGRAD_CPU_FALLBACK" not in str(err.value)  # the switch would not help


def test_in_place_variants_write_the_device_tensor(fallback):
    x = fg.randn(3, 4)
    xd = x.to(DEV)
    xd.exp_()
    assert xd.device == DEV
    _bits(xd, x.exp())
    a = fg.randn(3, 4, requires_grad=True)
    ad = a.detach().to(DEV).requires_grad_(True)
    for t in (a, ad):
        y = t * 2
        y.sigmoid_()
        y.sum().backward()
    _bits(ad.grad, a.grad)


def test_an_in_place_write_into_what_backward_needs_raises_as_on_the_cpu(fallback):
    for dev in ("cpu", DEV):
        x = fg.randn(3, 4).to(dev).requires_grad_(True)
        y = x.exp()  # saves its output
        y.mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_double_backward_through_a_fallback_op(fallback):
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    grads = []
    for dev in ("cpu", DEV):
        t = fg.tensor(x).to(dev).requires_grad_(True)
        (g,) = fg.autograd.grad(t.erf().sum(), [t], create_graph=True)
        (g * g).sum().backward()
        grads.append(t.grad)
    _bits(grads[1], grads[0])
    # a rule built on a helper Function that runs on the CPU only (not a registry op) says so
    t = fg.randn(3, 4).to(DEV).requires_grad_(True)
    with pytest.raises(NotImplementedError, match=f"LocallyConstantFunction has no kernel for device '{DEV}'"):
        fg.autograd.grad(t.abs().sum(), [t], create_graph=True)


def test_a_trace_records_the_op(fallback):
    x = fg.randn(3, 4).to(DEV)
    with fg.autograd.trace() as rec:
        y = x.cumsum(1)
    fn, args, _, outs = rec.records[-1]
    assert fn.op is fg.ops.get("cumsum") and args[0] is x and outs[0] is y and y.device == DEV


# ---- cuda (runs where a GPU is: tools/gpu_check.sh) -----------------------------------------------------
@pytest.mark.skipif(not fcuda.is_available(), reason="needs a CUDA GPU: " + (fcuda.unavailable_reason() or ""))
def test_cuda_runs_an_op_without_a_cuda_function_through_the_fallback(fallback):
    candidates = {"cumsum": lambda t: t.cumsum(1), "logcumsumexp": lambda t: t.logcumsumexp(1),
                  "cumprod": lambda t: t.cumprod(1), "logsumexp": lambda t: t.logsumexp(1)}
    name = next((n for n in candidates if "cuda" not in fg.ops.get(n).devices), None)
    assert name is not None, "each candidate op has a cuda Function now: name one that has none"
    x = np.random.default_rng(4).standard_normal((5, 7)).astype(np.float32)
    outs, grads = [], []
    for dev in ("cpu", "cuda"):
        t = fg.tensor(x).to(dev).requires_grad_(True)
        y = candidates[name](t)
        assert y.device == dev
        (y * y).sum().backward()
        outs.append(y)
        grads.append(t.grad)
    assert grads[1].device == "cuda"
    np.testing.assert_allclose(host(outs[1]), host(outs[0]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(host(grads[1]), host(grads[0]), rtol=1e-5, atol=1e-5)  # (y * y) and sum on the GPU
