"""The device seam, tested on the CPU through the public plugin API.

``seam`` (tests/device_seam_helpers.py) is a device registered with ``register_device`` whose arrays
refuse every numpy protocol and whose op Functions run the CPU kernels behind that wall. So every test
here fails if a Python-layer path treats device storage as numpy, and every result must be the CPU's
to the bit. The cuda device's registration is tested for the machine without a GPU at the end.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

import device_seam_helpers as seam
import forgegrad as fg
import forgegrad.cuda as fcuda
import forgegrad.nn.functional as F
from forgegrad import devices, nn, optim
from forgegrad.optim import kernels as optim_kernels

DEV = seam.DEVICE
host = seam.host


@pytest.fixture(autouse=True, scope="module")
def _seam_device():
    with seam.registered():
        yield


def _same(a, b):
    np.testing.assert_array_equal(host(a), host(b))


# ---- the plugin API ----------------------------------------------------------------------------------
def test_registered_device_is_known_everywhere():
    assert DEV in devices.known_devices() and devices.is_device_name(DEV) and devices.is_device_name("cuda:0")
    assert fg.device(DEV) == DEV and isinstance(devices.backend(DEV), seam.SeamBackend)
    assert DEV in fg.ops.get("conv2d").devices and DEV in optim_kernels.devices_of("adam")


def test_register_and_unregister_a_second_device():
    seam.register("seam2")
    try:
        x = fg.randn(3, 2)
        a = x.to(DEV).to("seam2")  # between two devices: through the host
        assert a.device == "seam2" and type(a._data).__name__ == "seam2Array"
        _same(a, x)
        with pytest.raises(RuntimeError, match=f"add: expected all tensors to be on the same device, but found "
                                               f"{DEV} and seam2"):
            x.to(DEV) + a
    finally:
        seam.unregister("seam2")
    assert not devices.is_device_name("seam2")
    assert "seam2" not in fg.ops.get("add").functions and "seam2" not in optim_kernels.devices_of("sgd")
    with pytest.raises(ValueError, match="unknown device 'seam2'"):
        fg.device("seam2")


def test_a_device_with_a_backend_and_no_ops():
    class Bare(seam.SeamArray):
        __slots__ = ()
    devices.register_device("bare", Bare, seam.SeamBackend(Bare))
    try:
        x = fg.ones(2, device="bare")
        assert x.device == "bare" and x.tolist() == [1.0, 1.0] and fg.zeros_like(x).device == "bare"
        with pytest.raises(NotImplementedError, match="op 'mul' has no kernel for device 'bare' \\(it runs on: "):
            x * 2.0
        with pytest.raises(NotImplementedError, match="device 'bare': its backend has no add\\(\\) and op 'add' "
                                                      "has no kernel for it"):
            devices.add(x._data, x._data)  # what gradient accumulation would need
        with pytest.raises(NotImplementedError, match="Adam has no kernel for device 'bare'"):
            p = nn.Parameter(x)
            p.grad = fg.ones(2, device="bare")
            optim.Adam([p]).step()
    finally:
        devices.unregister_device("bare")


def test_register_device_validates_its_arguments():
    with pytest.raises(ValueError, match="built-in"):
        devices.register_device("cpu", seam.SeamArray, seam.BACKEND)
    with pytest.raises(ValueError, match="identifier"):
        devices.register_device("bad:name", seam.SeamArray, seam.BACKEND)
    with pytest.raises(TypeError, match="backend must be a forgegrad.devices.DeviceBackend"):
        devices.register_device("nobackend", None, object())
    with pytest.raises(TypeError, match="backend lacks empty, full, from_host, to_host"):
        devices.register_device("nobackend", None, devices.DeviceBackend())
    with pytest.raises(ValueError, match="already belong to 'seam'"):
        devices.register_device("other", seam.SeamArray, seam.BACKEND)
    with pytest.raises(ValueError, match="no device 'never'"):
        devices.unregister_device("never")


# ---- tensors on the device ------------------------------------------------------------------------------
def test_factories_create_on_the_device_with_the_cpu_values():
    assert fg.zeros(2, 3, device=DEV).device == DEV
    _same(fg.zeros(2, 3, device=DEV), np.zeros((2, 3), np.float32))
    _same(fg.ones(4, device=DEV, dtype=fg.int64), np.ones(4, np.int64))
    _same(fg.full((2, 2), 7.5, device=DEV), np.full((2, 2), 7.5, np.float32))
    assert fg.empty(3, device=DEV).shape == (3,) and fg.empty(3, device=DEV).device == DEV
    _same(fg.arange(5, device=DEV), np.arange(5))
    _same(fg.eye(3, device=DEV), np.eye(3, dtype=np.float32))
    _same(fg.tensor([[1.0, 2.0]], device=DEV), np.array([[1, 2]], np.float32))
    for make in (lambda d: fg.randn(3, 4, device=d), lambda d: fg.rand(5, device=d),
                 lambda d: fg.randint(0, 9, (6,), device=d)):
        fg.manual_seed(3)
        want = make("cpu")
        fg.manual_seed(3)
        got = make(DEV)
        assert got.device == DEV and got.dtype == want.dtype
        _same(got, want)
    x = fg.randn(2, 3, device=DEV)
    for like in (fg.zeros_like(x), fg.ones_like(x), fg.empty_like(x), fg.full_like(x, 2.0), fg.randn_like(x),
                 fg.rand_like(x), fg.randint_like(x, 5)):
        assert like.device == DEV and like.shape == (2, 3)
    assert fg.zeros_like(x, device="cpu").device == "cpu"
    assert fg.randn(2, device=DEV, requires_grad=True).requires_grad


def test_default_device_context():
    with fg.device(DEV):
        assert devices.default_device() == DEV
        assert fg.randn(2).device == DEV and fg.zeros(1).device == DEV and fg.tensor([1.0]).device == DEV
        fg.manual_seed(0)
        model = nn.Linear(3, 2)
    assert devices.default_device() == "cpu" and fg.randn(1).device == "cpu"
    fg.manual_seed(0)
    ref = nn.Linear(3, 2)
    assert model.weight.device == DEV and model.bias.device == DEV
    _same(model.weight, ref.weight)  # initialised on the host: the same draws as on the CPU
    _same(model.bias, ref.bias)


def test_layers_built_under_the_device_context():
    fg.manual_seed(2)
    ref = (nn.Embedding(6, 3, padding_idx=0), nn.LSTM(3, 4), nn.LayerNorm(4))
    fg.manual_seed(2)
    with fg.device(DEV):
        got = (nn.Embedding(6, 3, padding_idx=0), nn.LSTM(3, 4), nn.LayerNorm(4))
    for g, r in zip(got, ref):
        for pg, pr in zip(g.parameters(), r.parameters()):
            assert pg.device == DEV
            _same(pg, pr)
    idx = fg.tensor([0, 2, 5]).to(DEV)
    _same(got[0](idx), ref[0](fg.tensor([0, 2, 5])))
    one = F.one_hot(idx, 6)
    assert one.device == DEV
    _same(one, np.eye(6, dtype=np.int64)[[0, 2, 5]])


def test_moving_and_reading_values():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = fg.tensor(a).to(DEV)
    assert x.device == DEV and x.is_cuda is False and type(x._data) is seam.SeamArray
    assert x.to(DEV) is x and x.cpu().device == "cpu"
    _same(x.cpu(), a)
    assert x.tolist() == a.tolist() and x[1, 2].item() == 5.0 and float(x.sum()) == 15.0
    assert bool(x[0, 1] > 0)
    with pytest.raises(TypeError, match=f"can't convert {DEV} device type tensor to numpy. Use Tensor.cpu()"):
        x.numpy()
    with pytest.raises(TypeError, match="can't convert"):
        np.asarray(x)
    assert f"device='{DEV}'" in repr(x) and "5." in repr(x)
    assert x.to(DEV, dtype=fg.float64).dtype == fg.float64  # the cast op on the device
    y = fg.zeros(2, 3)
    y.copy_(x)  # across devices, as torch's copy_
    _same(y, a)
    z = fg.zeros(2, 3, device=DEV)
    z.copy_(fg.tensor(a))
    z.add_(1.0)
    assert z.device == DEV
    _same(z, a + 1)
    z.zero_()
    _same(z, np.zeros((2, 3), np.float32))


def test_new_tensors_and_in_place_ops_stay_on_the_device():
    x = fg.randn(2, 3, device=DEV)
    for t in (x.new_zeros(4), x.new_ones(2, 2), x.new_empty(3), x.new_full((2,), 3.0), x.new_tensor([1.0, 2.0])):
        assert t.device == DEV
    _same(x.new_full((2,), 3.0), np.full(2, 3, np.float32))
    counts = fg.zeros(3, dtype=fg.int64, device=DEV)
    counts.add_(fg.ones(1, dtype=fg.int64, device=DEV))  # broadcast and dtype kept, on the device
    assert counts.dtype == fg.int64 and counts.device == DEV
    _same(counts, np.ones(3, np.int64))
    assert repr(counts) == f"tensor([1, 1, 1], device='{DEV}', dtype=int64)"
    with pytest.raises(NotImplementedError, match=f"on a {DEV} tensor: indexed in-place writes run on the CPU only"):
        x[0] = 1.0


def test_mixed_devices_are_refused_naming_the_op():
    a, b = fg.randn(3), fg.randn(3, device=DEV)
    with pytest.raises(RuntimeError, match=f"add: expected all tensors to be on the same device, but found cpu "
                                           f"and {DEV}"):
        a + b
    with pytest.raises(RuntimeError, match=f"matmul: expected all tensors to be on the same device, but found "
                                           f"{DEV} and cpu"):
        fg.randn(2, 3, device=DEV) @ fg.randn(3, 2)
    with pytest.raises(RuntimeError, match="linear: expected all tensors"):
        nn.Linear(3, 2)(b.reshape(1, 3))


def test_an_op_without_a_kernel_on_the_device_raises():
    op = fg.ops.get("relu")
    fn, inference = op.functions[DEV], op.inference.get(DEV)
    op.remove_device(DEV)
    try:
        with pytest.raises(NotImplementedError, match=f"op 'relu' has no kernel for device '{DEV}'"):
            fg.randn(3, device=DEV).relu()
    finally:
        op.add_device(DEV, fn)
        if inference is not None:
            op.set_inference(DEV, inference)
    assert fg.randn(3, device=DEV).relu().device == DEV


# ---- autograd ------------------------------------------------------------------------------------------
def _grads_of(device):
    fg.manual_seed(1)
    w = fg.randn(4, 3).to(device).requires_grad_()
    x = fg.randn(5, 4).to(device)
    h = (x @ w).tanh()
    loss = (h * h).sum() + (x @ w).sum() * 0.5  # w used twice: its gradients add up
    loss.backward()
    assert w.grad.device == device
    g1 = host(w.grad).copy()
    (x @ w).mean().backward()  # a second backward accumulates into .grad
    return g1, host(w.grad)


def test_gradients_on_the_device_match_the_cpu_and_accumulate():
    (c1, c2), (s1, s2) = _grads_of("cpu"), _grads_of(DEV)
    np.testing.assert_array_equal(s1, c1)
    np.testing.assert_array_equal(s2, c2)
    assert not np.array_equal(c1, c2)


def test_backward_seed_and_explicit_gradient_on_the_device():
    x = fg.randn(3, device=DEV, requires_grad=True)
    y = x * 2.0
    y.backward(fg.ones(3, device=DEV))
    _same(x.grad, np.full(3, 2, np.float32))
    with pytest.raises(RuntimeError, match=f"the gradient is on cpu but the tensor is on {DEV}"):
        (x * 2.0).backward(fg.ones(3))
    (x * 3.0).backward(np.ones(3, np.float32))  # array-likes go to the tensor's device
    _same(x.grad, np.full(3, 5, np.float32))


def test_outputs_that_do_not_reach_the_loss_get_zeros_on_the_device():
    fg.manual_seed(0)
    lstm = nn.LSTM(3, 4, batch_first=True)
    x = fg.randn(2, 5, 3)
    out_c, (h_c, _) = lstm(x)
    h_c.sum().backward()  # only h: out and c get zero gradients
    ref = [host(p.grad) for p in lstm.parameters()]
    lstm.zero_grad()
    lstm.to(DEV)
    out_s, (h_s, _) = lstm(x.to(DEV))
    h_s.sum().backward()
    for p, r in zip(lstm.parameters(), ref):
        assert p.grad.device == DEV
        np.testing.assert_array_equal(host(p.grad), r)


def test_to_device_is_differentiable():
    x = fg.randn(4, requires_grad=True)
    y = x.to(DEV)
    assert y.requires_grad and y.grad_fn is not None
    (y * y).sum().backward()
    assert x.grad.device == "cpu"
    _same(x.grad, 2 * x.detach().numpy())


def test_no_grad_runs_the_device_inference_kernels():
    calls = []
    op = fg.ops.get("relu")
    kernel = op.inference[DEV]
    op.set_inference(DEV, lambda *a, **k: calls.append(1) or kernel(*a, **k))
    try:
        x = fg.randn(5, device=DEV, requires_grad=True)
        with fg.no_grad():
            y = x.relu()
        assert calls and y.device == DEV and not y.requires_grad
        calls.clear()
        x.relu()  # recording a graph: the Function, not the inference kernel
        assert not calls
    finally:
        op.set_inference(DEV, kernel)


# ---- modules ---------------------------------------------------------------------------------------------
def test_module_to_moves_parameters_and_buffers_keeping_identity():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    params = list(model.parameters())
    values = [host(p).copy() for p in params]
    model(fg.randn(2, 1, 5, 5)).sum().backward()
    grads = [host(p.grad).copy() for p in params]
    assert model.to(DEV) is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    for p, v, g in zip(model.parameters(), values, grads):
        assert p.device == DEV and p.grad.device == DEV and isinstance(p, nn.Parameter)
        _same(p, v)
        _same(p.grad, g)
    assert all(b.device == DEV for b in model.buffers())
    model(fg.randn(2, 1, 5, 5, device=DEV))  # the batch-norm counter advances on the device
    assert model[1].num_batches_tracked.item() == 2
    model.cpu()
    assert all(p.device == "cpu" for p in model.parameters()) and all(b.device == "cpu" for b in model.buffers())


def test_lazy_layers_moved_before_their_first_call_build_on_the_device():
    x = fg.randn(3, 5)
    fg.manual_seed(0)
    ref = nn.Sequential(nn.Dense(4, activation="relu"), nn.Dense(2))
    want = ref(x)
    fg.manual_seed(0)
    model = nn.Sequential(nn.Dense(4, activation="relu"), nn.Dense(2)).to(DEV)
    got = model(x.to(DEV))
    assert all(p.device == DEV for p in model.parameters())
    _same(got, want)


def test_module_dtype_conversion_on_the_device():
    model = nn.Linear(3, 2).to(DEV)
    w = host(model.weight)
    model.double()
    assert model.weight.dtype == fg.float64 and model.weight.device == DEV
    np.testing.assert_array_equal(host(model.weight), w.astype(np.float64))


def test_meta_device_still_works_beside_a_registered_one():
    with fg.device("meta"):
        model = nn.Linear(8, 4)
    assert model.weight.is_meta
    with pytest.raises(RuntimeError, match="meta device"):
        model.to(DEV)
    assert nn.Linear(2, 2).to(DEV).to("meta").weight.is_meta


# ---- optimizers --------------------------------------------------------------------------------------------
OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.1),
    "sgd_momentum_nesterov": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda p: optim.Adam(p, lr=0.01),
    "adam_amsgrad_foreach_false": lambda p: optim.Adam(p, lr=0.01, amsgrad=True, foreach=False, maximize=True),
    "adamw": lambda p: optim.AdamW(p, lr=0.01),
    "adagrad": lambda p: optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.1, weight_decay=0.01),
    "rmsprop_centered_momentum": lambda p: optim.RMSprop(p, lr=0.01, centered=True, momentum=0.5),
    "adadelta": lambda p: optim.Adadelta(p, lr=1.0, weight_decay=0.01),
}


def _train_steps(device, make_opt, steps=3):
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(device)
    opt = make_opt(model.parameters())
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = fg.randn(16, 5).to(device), fg.randint(0, 3, (16,)).to(device)
    for _ in range(steps):
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    return model, opt


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_steps_on_the_device_as_on_the_cpu(name):
    ref, _ = _train_steps("cpu", OPTIMIZERS[name])
    got, opt = _train_steps(DEV, OPTIMIZERS[name])
    for p, r in zip(got.parameters(), ref.parameters()):
        assert p.device == DEV
        np.testing.assert_array_equal(host(p), host(r))
    for state in opt.state.values():  # buffers where the parameters live; the step count on the CPU
        for k, v in state.items():
            assert v.device == ("cpu" if k == "step" else DEV), k


def test_one_optimizer_over_parameters_on_two_devices():
    fg.manual_seed(5)
    a, b = nn.Parameter(fg.randn(4)), nn.Parameter(fg.randn(3))
    ref = [nn.Parameter(fg.tensor(host(a).copy())), nn.Parameter(fg.tensor(host(b).copy()))]
    b.data = b.to(DEV)
    for params in (ref, [a, b]):
        opt = optim.Adam(params, lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            ((params[0] ** 2).sum() * 2.0 + (params[1] ** 2).sum().to("cpu")).backward()
            opt.step()
    assert a.device == "cpu" and b.device == DEV and b.grad.device == DEV
    _same(a, ref[0])
    _same(b, ref[1])


def test_float64_on_the_device():
    x = fg.randn(3, 2, dtype=fg.float64)
    w = fg.randn(2, 2, dtype=fg.float64, requires_grad=True)
    (x @ w).tanh().sum().backward()
    xs, ws = x.to(DEV), w.detach().to(DEV).requires_grad_()
    y = (xs @ ws).tanh()
    assert y.dtype == fg.float64 and y.device == DEV
    y.sum().backward()
    assert ws.grad.dtype == fg.float64
    _same(ws.grad, w.grad)


def test_state_made_before_the_model_moved_follows_its_parameter():
    def run(move_after_first_step):
        fg.manual_seed(0)
        model = nn.Linear(3, 2)
        opt = optim.Adagrad(model.parameters(), lr=0.1)  # state made eagerly, on the CPU
        x = fg.randn(4, 3)
        for step in range(3):
            if move_after_first_step and step == 1:
                model.to(DEV)
            model(x.to(model.weight.device)).sum().backward()
            opt.step()
            opt.zero_grad()
        return model, opt
    (ref, _), (got, opt) = run(False), run(True)
    for p, r in zip(got.parameters(), ref.parameters()):
        assert p.device == DEV and opt.state[p]["sum"].device == DEV
        _same(p, r)


def test_optimizer_without_a_kernel_on_the_device_raises():
    kernel = optim_kernels.kernel("rmsprop", DEV)
    optim_kernels.unregister_kernel("rmsprop", DEV)
    try:
        with pytest.raises(NotImplementedError, match=f"RMSprop has no kernel for device '{DEV}'"):
            _train_steps(DEV, lambda p: optim.RMSprop(p), steps=1)
    finally:
        optim_kernels.register_kernel("rmsprop", DEV, kernel)
    p = nn.Parameter(fg.randn(3, device=DEV))
    lbfgs = optim.LBFGS([p])
    with pytest.raises(NotImplementedError, match=f"LBFGS has no kernel for device '{DEV}'"):
        lbfgs.step(lambda: (p * p).sum())


def test_optimizer_state_dict_round_trip_on_the_device(tmp_path):
    model, opt = _train_steps(DEV, OPTIMIZERS["adam"], steps=2)
    fg.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "ckpt.safetensors")
    ckpt = fg.load(tmp_path / "ckpt.safetensors")
    fresh, fresh_opt = _train_steps(DEV, OPTIMIZERS["adam"], steps=0)
    fresh.load_state_dict(ckpt["model"])
    fresh_opt.load_state_dict(ckpt["optimizer"])
    assert all(p.device == DEV for p in fresh.parameters())
    for p in fresh.parameters():
        assert fresh_opt.state[p]["exp_avg"].device == DEV
    for a, b in zip(fresh.parameters(), model.parameters()):
        _same(a, b)


def test_clip_grad_norm_and_value_on_the_device():
    def grads(device, clip):
        fg.manual_seed(4)
        model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 2)).to(device)
        (model(fg.randn(3, 6).to(device)) ** 2).sum().backward()
        total = clip(model.parameters())
        return total, [host(p.grad) for p in model.parameters()]

    for norm_type in (2.0, 1.0, float("inf"), 3.0):
        def clip(ps):
            return nn.utils.clip_grad_norm_(ps, 0.5, norm_type=norm_type)
        (tc, gc), (ts, gs) = grads("cpu", clip), grads(DEV, clip)
        assert ts.device == DEV
        # the device's norms are float32 reductions by ops (the CPU's C++ reduction is in double)
        np.testing.assert_allclose(host(ts), host(tc), rtol=1e-5)
        for a, b in zip(gs, gc):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    (_, gc), (_, gs) = grads("cpu", lambda ps: nn.utils.clip_grad_value_(ps, 0.1)), \
        grads(DEV, lambda ps: nn.utils.clip_grad_value_(ps, 0.1))
    for a, b in zip(gs, gc):
        np.testing.assert_array_equal(a, b)


# ---- save / load ------------------------------------------------------------------------------------------
def test_save_copies_device_tensors_to_the_host_and_load_places_them(tmp_path):
    model = nn.Linear(4, 3).to(DEV)
    path = tmp_path / "m.safetensors"
    fg.save(model.state_dict(), path)
    plain = fg.load(path)
    assert all(isinstance(v, np.ndarray) for v in plain.values())
    np.testing.assert_array_equal(plain["weight"], host(model.weight))
    assert fg.serialization.load_metadata(path) == {}
    on_dev = fg.load(path, map_location=DEV)
    assert all(v.device == DEV for v in on_dev.values())
    on_cpu = fg.load(path, map_location=fg.device("cpu"))
    assert all(isinstance(v, fg.Tensor) and v.device == "cpu" for v in on_cpu.values())
    mapped = fg.load(path, map_location={DEV: "cpu"})  # the saved device is recorded in the file
    assert all(v.device == "cpu" for v in mapped.values())
    kept = fg.load(path, map_location={"elsewhere": "cpu"})
    assert all(v.device == DEV for v in kept.values())
    seen = []
    by_fn = fg.load(path, map_location=lambda t, where: seen.append(where) or None)
    assert set(seen) == {DEV} and all(v.device == DEV for v in by_fn.values())
    with pytest.raises(TypeError, match="map_location"):
        fg.load(path, map_location=3)
    buf = io.BytesIO()
    fg.save({"w": fg.ones(2)}, buf)
    buf.seek(0)
    assert fg.load(buf, map_location={DEV: "cpu"})["w"].device == "cpu"  # nothing recorded: saved on the cpu


def test_load_state_dict_copies_into_parameters_on_their_device():
    src = nn.Linear(4, 3)
    dst = nn.Linear(4, 3).to(DEV)
    w = dst.weight
    dst.load_state_dict(src.state_dict())
    assert dst.weight is w and w.device == DEV
    _same(w, src.weight)
    back = nn.Linear(4, 3)
    back.load_state_dict(dst.state_dict())  # from device tensors into CPU parameters
    _same(back.weight, src.weight)


def test_dataloader_batches_move_to_the_device():
    data = fg.data.TensorDataset(fg.randn(10, 3), fg.randint(0, 2, (10,)))
    seen = 0
    for xb, yb in fg.data.DataLoader(data, batch_size=4):
        xb, yb = xb.to(DEV), yb.to(DEV)
        assert xb.device == DEV and yb.device == DEV and yb.dtype == fg.int64
        seen += xb.shape[0]
    assert seen == 10


# ---- the cuda device without a GPU ------------------------------------------------------------------------
@pytest.mark.skipif(fcuda.is_available(), reason="a CUDA device is present: the no-device error path does not apply")
def test_cuda_without_a_gpu_fails_clearly_everywhere(tmp_path):
    model = nn.Linear(2, 2)
    path = tmp_path / "m.safetensors"
    fg.save(model.state_dict(), path)
    calls = [lambda: fg.randn(2).to("cuda"), lambda: fg.zeros(3, device="cuda"), lambda: model.to("cuda"),
             lambda: model.cuda(), lambda: fg.device("cuda"), lambda: fg.randn(2).cuda(),
             lambda: fg.tensor([1.0], device="cuda:0"), lambda: fg.load(path, map_location="cuda")]
    for call in calls:
        with pytest.raises(RuntimeError, match="CUDA is not available: .+"):
            call()
    assert model.weight.device == "cpu"
    assert "cuda" in devices.known_devices() and "cuda" in optim_kernels.devices_of("adam")


def test_cuda_adam_kernel_maps_the_table_signature_onto_cuda_adam_step(monkeypatch):
    """The per-parameter cuda Adam (the table's cuda entry where no multi-tensor kernel is built) calls
    forgegrad.cuda.adam_step once per parameter with the table's hyper-parameters; checked with adam_step
    replaced by the CPU kernel (no GPU here). In a CUDA build the table holds the multi-tensor kernel."""
    from forgegrad import cuda_optim
    if fg._C.cuda_pointwise.built:
        assert optim_kernels.kernel("adam", "cuda") is cuda_optim.adam_step
    def cpu_adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr, betas, eps, weight_decay, decoupled):
        fg.kernels.optim.adam_step([param], [grad], [exp_avg], [exp_avg_sq], None, [step], lr=lr, beta1=betas[0],
                                   beta2=betas[1], eps=eps, weight_decay=weight_decay, decoupled_weight_decay=decoupled)
    monkeypatch.setattr(fcuda, "adam_step", cpu_adam_step)
    kernel = fcuda._adam_kernel
    rng = np.random.default_rng(0)
    kw = dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1, decoupled_weight_decay=True, maximize=False)
    arrays = [rng.standard_normal((2, 3, 4)).astype(np.float32) for _ in range(4)]
    ref = [[a.copy(), a.copy() * 0.5, np.zeros_like(a), np.zeros_like(a)] for a in arrays]
    got = [[r.copy() for r in row] for row in ref]
    for step in (1, 2, 3):
        fg.kernels.optim.adam_step(*[list(c) for c in zip(*ref)][:4], None, [step] * 4, **kw)
        kernel(*[list(c) for c in zip(*got)][:4], None, [float(step)] * 4, **kw)
    for r, g in zip(ref, got):
        for a, b in zip(r, g):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(NotImplementedError, match="amsgrad=True.*'cuda'"):
        kernel(*[list(c) for c in zip(*got)][:4], [np.zeros(1, np.float32)], [1.0] * 4, **kw)
    with pytest.raises(NotImplementedError, match="maximize=True.*'cuda'"):
        kernel(*[list(c) for c in zip(*got)][:4], None, [1.0] * 4, **dict(kw, maximize=True))
