"""forgegrad.autocast("cpu") against torch.autocast("cpu") (torch 2.13): the dtype each op gives (lower-precision
ops in bfloat16, the float32 list in float32, the rest by promotion), values within bfloat16's tolerance, float32
gradients for float32 parameters, an MLP and a small CNN forward and backward, a training loop that learns, and the
context's rules (decorator, nesting, threads, the cast cache, float16, unsupported dtypes)."""
import threading
import warnings

import numpy as np
import pytest
import torch

import forgegrad as fg

pytest.importorskip("ml_dtypes")
BF16_EPS = 2.0 ** -7


def _name(dt) -> str:
    return str(dt).split(".")[-1]


def _values(t) -> np.ndarray:
    return np.asarray(t.detach().float().numpy(), dtype=np.float64)


def _close(got, want, what, tol=4 * BF16_EPS):
    assert _name(got.dtype) == _name(want.dtype), f"{what}: forgegrad {got.dtype}, torch {want.dtype}"
    w = _values(want)
    np.testing.assert_allclose(_values(got), w, rtol=tol, atol=tol * max(1.0, float(np.abs(w).max(initial=0))),
                               err_msg=what)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _env(lib, low_input):
    env = {"lib": lib, "F": lib.nn.functional}
    for name, shape, seed in (("x", (4, 6), 0), ("w", (3, 6), 1), ("b", (3,), 2), ("img", (2, 3, 6, 7), 3),
                              ("k", (4, 3, 3, 3), 4), ("seq", (2, 5, 6), 5), ("vol", (1, 2, 4, 4, 4), 6)):
        t = lib.from_numpy(_rand(*shape, seed=seed))
        env[name] = t.to(lib.bfloat16) if low_input and name in ("x", "img", "seq") else t
    env["t"] = lib.tensor([0, 2, 1, 1])
    return env


# one expression per op of torch's lists, and some that follow promotion
OPS = ["F.linear(x, w, b)", "x @ w.t()", "lib.matmul(x, w.t())", "lib.mm(x, w.t())",
       "lib.bmm(seq, seq.transpose(1, 2))", "lib.addmm(b, x, w.t())",
       "lib.baddbmm(seq[:, :, :5], seq, seq.transpose(1, 2))",
       "lib.addbmm(x[:, :4], seq[:, :4], seq.transpose(1, 2)[:, :, :4])",
       "F.conv2d(img, k, b[:1].expand(4).contiguous(), padding=1)",
       "F.conv1d(seq, w.reshape(3, 6, 1)[:, :5])", "F.conv_transpose2d(img, k.transpose(0, 1))",
       "F.prelu(x, b[:1])", "F.scaled_dot_product_attention(seq, seq, seq)", "x @ x[0]", "lib.mv(x, x[0])",
       "F.mse_loss(x, x * 2)", "F.cross_entropy(x, t)", "F.nll_loss(x.log_softmax(1), t)", "F.l1_loss(x, x.exp())",
       "F.smooth_l1_loss(x, x * 3)", "F.huber_loss(x, x * 3)", "F.binary_cross_entropy_with_logits(x, x.sigmoid())",
       "F.binary_cross_entropy(x.sigmoid(), x.sigmoid() * 0.5)", "F.kl_div(x.log_softmax(1), x.softmax(1), "
       "reduction='batchmean')", "x.prod(1)", "F.avg_pool3d(vol, 2)", "F.max_pool3d(vol, 2)", "lib.cdist(x, x)",
       "F.relu(x)", "x.softmax(1)", "F.layer_norm(x, (6,))", "x.sum()", "x + b.sum()", "x * 2.5", "F.gelu(x)",
       "F.max_pool2d(img, 2)", "F.batch_norm(img, None, None, training=True)", "lib.cat([x, x])", "x.exp()"]


@pytest.mark.parametrize("low_input", [False, True], ids=["float32 inputs", "bfloat16 inputs"])
@pytest.mark.parametrize("expr", OPS)
def test_each_op_gives_torch_s_dtype(expr, low_input):
    res = []
    for lib in (fg, torch):
        env = _env(lib, low_input)
        with lib.autocast("cpu"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res.append(eval(expr, env))
    _close(*res, expr, tol=8 * BF16_EPS)


def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 16), lib.nn.GELU(), lib.nn.LayerNorm(16), lib.nn.Linear(16, 3))


def _cnn(lib):
    return lib.nn.Sequential(lib.nn.Conv2d(3, 4, 3, padding=1), lib.nn.BatchNorm2d(4), lib.nn.ReLU(),
                             lib.nn.MaxPool2d(2), lib.nn.Conv2d(4, 5, 3), lib.nn.Flatten(), lib.nn.Linear(5, 3))


def _pair(make):
    fg.manual_seed(0)
    ours, theirs = make(fg), make(torch)
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("make,shape", [(_mlp, (8, 6)), (_cnn, (2, 3, 6, 6))], ids=["mlp", "cnn"])
def test_model_forward_and_backward_as_torch(make, shape):
    """Each layer's output dtype is torch's; values within bfloat16's tolerance; the float32 parameters get float32
    gradients close to torch's."""
    ours, theirs = _pair(make)
    x = _rand(*shape, seed=7)
    target = np.array([0, 2, 1, 1, 0, 2, 2, 1][:shape[0]])
    outs = []
    for lib, model in ((fg, ours), (torch, theirs)):
        h = lib.from_numpy(x.copy())
        layers = []
        with lib.autocast("cpu"):
            for layer in model:
                h = layer(h)
                layers.append(h)
            loss = lib.nn.functional.cross_entropy(h, lib.from_numpy(target.copy()))
        loss.backward()
        outs.append((layers, loss))
    for i, (got, want) in enumerate(zip(outs[0][0], outs[1][0])):
        _close(got, want, f"layer {i} ({type(ours[i]).__name__})", tol=8 * BF16_EPS)
    _close(outs[0][1], outs[1][1], "loss")
    assert outs[0][1].dtype == fg.float32
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert p.grad.dtype == fg.float32, name
        _close(p.grad, q.grad, f"grad of {name}", tol=16 * BF16_EPS)


def test_training_loop_learns_under_autocast():
    """Float32 parameters, bfloat16 forward: the loss of a separable problem falls as torch's does."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    losses = {}
    for lib in (fg, torch):
        lib.manual_seed(0)
    model, ref = _pair(_mlp)
    for lib, m in ((fg, model), (torch, ref)):
        opt = lib.optim.Adam(m.parameters(), lr=0.02)
        xs, ys = lib.from_numpy(x.copy()), lib.from_numpy(y.copy())
        losses[lib.__name__] = []
        for _ in range(60):
            opt.zero_grad()
            with lib.autocast("cpu"):
                loss = lib.nn.functional.cross_entropy(m(xs), ys)
            loss.backward()
            opt.step()
            losses[lib.__name__].append(loss.item())
        assert all(p.dtype == lib.float32 for p in m.parameters())
    ours, theirs = losses["forgegrad"], losses["torch"]
    assert ours[-1] < 0.3 * ours[0], ours
    assert abs(ours[-1] - theirs[-1]) < 0.1 + 0.2 * theirs[-1], (ours[-1], theirs[-1])


def test_context_decorator_nesting_and_queries():
    x, w = fg.randn(3, 4), fg.randn(2, 4)
    assert not fg.is_autocast_enabled("cpu") and not fg.is_autocast_enabled()
    assert fg.get_autocast_dtype("cpu") == fg.bfloat16 and _name(torch.get_autocast_dtype("cpu")) == "bfloat16"
    with fg.autocast("cpu") as ctx:
        assert isinstance(ctx, fg.autocast)
        assert fg.is_autocast_enabled("cpu") and not fg.is_autocast_enabled()  # (no device: torch's CUDA answer)
        assert fg.nn.functional.linear(x, w).dtype == fg.bfloat16
        with fg.autocast("cpu", enabled=False):
            assert not fg.is_autocast_enabled("cpu") and (x @ w.t()).dtype == fg.float32
        assert (x @ w.t()).dtype == fg.bfloat16
        with fg.no_grad():  # the layers' inference fast path keeps the policy
            assert fg.nn.Linear(4, 2)(x).dtype == fg.bfloat16
    assert (x @ w.t()).dtype == fg.float32 and fg.autograd._batch_hook is None

    @fg.autocast("cpu")
    def forward(a, b):
        return a @ b.t()
    assert forward(x, w).dtype == fg.bfloat16 and (x @ w.t()).dtype == fg.float32
    assert fg.amp.autocast is fg.autocast and torch.amp.autocast is torch.autocast
    with fg.autocast("cpu"):
        assert (x.double() @ w.double().t()).dtype == fg.float64  # float64 is never cast, as torch's
        assert x.prod(1, dtype=fg.float64).dtype == fg.float64  # an explicit dtype wins


def test_autocast_is_thread_local():
    x = fg.randn(3, 4)
    seen, ready, done = {}, threading.Event(), threading.Event()

    def other():
        ready.wait(10)
        seen["dtype"] = (x @ x.t()).dtype
        seen["enabled"] = fg.is_autocast_enabled("cpu")
        done.set()

    th = threading.Thread(target=other)
    th.start()
    with fg.autocast("cpu"):
        ready.set()
        done.wait(10)
        assert (x @ x.t()).dtype == fg.bfloat16
    th.join()
    assert seen == {"dtype": fg.float32, "enabled": False}


def test_cast_cache_reuses_a_parameter_cast_and_gradients_accumulate():
    lin, tlin = _pair(lambda lib: lib.nn.Linear(4, 4))
    x = _rand(3, 4, seed=9)
    res = []
    for lib, m in ((fg, lin), (torch, tlin)):
        for cache in (True, False):
            m.zero_grad()
            with lib.autocast("cpu", cache_enabled=cache):
                out = m(m(lib.from_numpy(x.copy())))  # the weight is cast once (cached) and used twice
            out.float().sum().backward()
            res.append((out, m.weight.grad.clone()))
    for (got, gg), (want, wg) in zip(res[:2], res[2:]):
        _close(got, want, "output")
        _close(gg, wg, "weight grad", tol=16 * BF16_EPS)


def test_float16_on_the_cpu_as_torch_and_unsupported_dtypes_disable():
    x = _rand(3, 4)
    res = []
    for lib in (fg, torch):
        with lib.autocast("cpu", dtype=lib.float16):
            t = lib.from_numpy(x.copy())
            assert lib.get_autocast_dtype("cpu") == lib.float16 and lib.is_autocast_enabled("cpu")
            res.append((t @ t.t(), lib.nn.functional.mse_loss(t.half(), t.half() * 2)))
        with pytest.warns(UserWarning, match="CPU Autocast only supports"):
            with lib.autocast("cpu", dtype=lib.float64):
                assert not lib.is_autocast_enabled("cpu")
                assert (lib.from_numpy(x.copy()) @ lib.from_numpy(x.T.copy())).dtype == lib.float32
    for got, want in zip(*res):
        _close(got, want, "float16", tol=4e-3)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="device_type"):
        fg.autocast("tpu")
    with pytest.raises(NotImplementedError, match="CPU ops only"):
        fg.autocast("cuda")
    with pytest.raises(TypeError, match="enabled"):
        fg.autocast("cpu", enabled="yes")
    with pytest.raises(TypeError, match="expected a dtype"):
        fg.autocast("cpu", dtype="bf17")


def test_vmap_inside_autocast_restores_the_autocast_hook():
    x = fg.randn(5, 3)
    with fg.autocast("cpu"):
        out = fg.vmap(lambda r: r * 2)(x)
        assert out.dtype == fg.float32
        assert (x @ x.t()).dtype == fg.bfloat16
    assert fg.autograd._batch_hook is None
