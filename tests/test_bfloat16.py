"""forgegrad.bfloat16 against torch 2.13's CPU bfloat16: the dtype and its casts, torch's promotion for every pair
with bfloat16, ops computed in float32 and rounded once (bit-equal where torch rounds once too: casts and
elementwise ops; within bfloat16's tolerance where the summation order differs: reductions, matmul, conv),
gradients, Module.to(bfloat16), save/load and safetensors with the BF16 tag, and forgegrad without ml_dtypes."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import forgegrad as fg

pytest.importorskip("ml_dtypes")
F, TF = fg.nn.functional, torch.nn.functional
OTHERS = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"]
BF16_EPS = 2.0 ** -7


def _name(dt) -> str:
    return str(dt).split(".")[-1]


def _values(t) -> np.ndarray:
    """A forgegrad or torch tensor's values as float64 (bfloat16 through .float(), as numpy has none)."""
    if t.dtype in (fg.bfloat16, torch.bfloat16):
        t = t.float()
    return np.asarray(t.detach().numpy(), dtype=np.float64) if t.dtype not in (fg.bool, torch.bool) \
        else np.asarray(t.detach().numpy())


def _same(got, want, what, exact=True, rtol=2 * BF16_EPS, atol=1e-2):
    assert _name(got.dtype) == _name(want.dtype), f"{what}: forgegrad {got.dtype}, torch {want.dtype}"
    assert tuple(got.shape) == tuple(want.shape), what
    if exact:
        np.testing.assert_array_equal(_values(got), _values(want), err_msg=what)
    else:
        np.testing.assert_allclose(_values(got), _values(want), rtol=rtol, atol=atol, err_msg=what)


def _rand(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ---- the dtype ------------------------------------------------------------------------------------------------
def test_dtype_object_and_finfo_as_torch():
    bf = fg.bfloat16
    assert repr(bf) == "forgegrad.bfloat16" and bf is fg.dtypes.bfloat16 and bf == "bfloat16"
    assert bf.is_floating_point and bf.is_signed and not bf.is_complex and bf.itemsize == 2
    assert fg.dtypes.of("torch.bfloat16") is bf and fg.dtypes.of(str(torch.bfloat16)) is bf
    got, want = fg.finfo(bf), torch.finfo(torch.bfloat16)
    for field in ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution"):
        assert getattr(got, field) == getattr(want, field), field
    assert got.dtype == want.dtype == "bfloat16"
    assert fg.is_floating_point(fg.zeros(2, dtype=bf)) and fg.zeros(2, dtype=bf).is_floating_point()
    assert fg.zeros(2, dtype=bf).type() == torch.zeros(2, dtype=torch.bfloat16).type() == "torch.BFloat16Tensor"
    assert fg.zeros(3, dtype=bf).element_size() == 2
    assert bf.to_complex() == fg.complex64


@pytest.mark.parametrize("factory", [
    "zeros(2, 3, dtype=lib.bfloat16)", "ones(4, dtype=lib.bfloat16)", "full((2, 2), 1.1, dtype=lib.bfloat16)",
    "tensor([1.1, -2.7, 3e38], dtype=lib.bfloat16)", "arange(0, 3, 0.7, dtype=lib.bfloat16)",
    "eye(3, dtype=lib.bfloat16)",
    "zeros_like(lib.ones(3, dtype=lib.bfloat16))", "empty(2, dtype=lib.bfloat16).shape", "tensor(2.3).to(lib.bfloat16)",
    "ones(3).new_full((2,), 0.1, dtype=lib.bfloat16)"])
def test_factories_take_dtype_bfloat16(factory):
    got, want = (eval("lib." + factory, {"lib": lib}) for lib in (fg, torch))
    if isinstance(want, torch.Size):
        assert tuple(got) == tuple(want)
        return
    _same(got, want, factory)


@pytest.mark.parametrize("draw", ["randn", "rand"])
def test_random_factories_give_bfloat16(draw):
    x = getattr(fg, draw)(1000, dtype=fg.bfloat16)
    assert x.dtype == fg.bfloat16
    v = _values(x)
    assert np.array_equal(v, v.astype(np.float32).astype(np.float64))  # rounded values, not float32 draws
    if draw == "rand":
        assert v.min() >= 0 and v.max() < 1


_SPECIAL = np.array([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 3.4e38, 3.3895e38, -3.39e38, 1e-40, 1e-45, np.inf, -np.inf,
                     np.nan, 65504.0, 1.0 / 3, -2.5e-3], np.float32)


@pytest.mark.parametrize("source", ["float32", "float64", "float16", "int64", "int32", "uint8", "bool"])
def test_casts_to_bfloat16_round_as_torch(source):
    """Round to nearest even (ties included), NaN and infinities kept, past bfloat16's largest to inf; float64 rounds
    through float32 as torch does (c10::BFloat16 is made from a float)."""
    rng = np.random.default_rng(1)
    if source in ("float32", "float64", "float16"):
        raw = np.concatenate([_SPECIAL, rng.standard_normal(500) * 10.0 ** rng.integers(-8, 8, 500)])
        if source == "float64":
            raw = np.concatenate([raw, 1 + 2.0 ** -8 + np.array([2.0 ** -30, -2.0 ** -30, 2.0 ** -24])])
        with np.errstate(over="ignore"):
            raw = raw.astype(source)
    else:
        raw = (rng.integers(-300, 300, 200) if source != "bool" else rng.integers(0, 2, 200)).astype(source)
        if source in ("int64", "int32"):
            raw = np.concatenate([raw, np.array([257, 16777217, -2 ** 31 + 1, 2 ** 30 + 2 ** 22], source)])
        if source == "uint8":
            raw = np.abs(raw).astype(np.uint8)
    got, want = (lib.from_numpy(raw.copy()).to(lib.bfloat16) for lib in (fg, torch))
    _same(got, want, f"{source} -> bfloat16")


@pytest.mark.parametrize("target", ["float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool"])
def test_casts_from_bfloat16_as_torch(target):
    raw = np.concatenate([_SPECIAL[np.isfinite(_SPECIAL) & (np.abs(_SPECIAL) < 1e9)], _rand(300, scale=50)])
    got, want = (lib.from_numpy(raw.copy()).to(lib.bfloat16).to(getattr(lib, target)) for lib in (fg, torch))
    if target in ("int8", "uint8"):  # out-of-range float -> small int is undefined behaviour in C++: compare in range
        keep = (_values(want) > -100) & (_values(want) < 100) if target == "int8" else (_values(want) < 200)
        got, want = got[fg.tensor(keep)], want[torch.from_numpy(keep)]
    _same(got, want, f"bfloat16 -> {target}")


def test_numpy_refused_as_torch_and_float_numpy_tolist_item_work():
    x = fg.tensor([1.1, 2.5, -3.0]).bfloat16()
    tx = torch.tensor([1.1, 2.5, -3.0]).bfloat16()
    for t in (x, tx):
        with pytest.raises(TypeError, match="BFloat16"):
            t.numpy()
        with pytest.raises(TypeError, match="BFloat16"):
            np.asarray(t)
    np.testing.assert_array_equal(x.float().numpy(), tx.float().numpy())
    assert x.tolist() == tx.tolist() and x[0].item() == tx[0].item() and float(x[1]) == float(tx[1])
    assert isinstance(x.tolist()[0], float)
    assert repr(x) == "tensor([ 1.1016,  2.5000, -3.0000], dtype=bfloat16)"


# ---- promotion ------------------------------------------------------------------------------------------------
def _make(lib, dt, zero_dim):
    vals = np.array(2.0) if zero_dim else np.array([3.0, 1.0, 2.0, 1.25, 7.0])
    if dt == "bfloat16":
        return lib.from_numpy(vals.astype(np.float32)).to(lib.bfloat16)
    arr = np.asarray(vals > 0) if dt == "bool" else vals.astype(dt)
    return lib.from_numpy(arr.copy())


@pytest.mark.parametrize("other", OTHERS)
@pytest.mark.parametrize("op", ["+", "-", "*", "/", "==", "<", "**"])
def test_promotion_of_every_pair_with_bfloat16(other, op):
    for (za, zb), swap in itertools.product(itertools.product((False, True), repeat=2), (False, True)):
        if op == "-" and other == "bool":
            continue  # torch refuses a bool in a subtraction (tests/test_torch_dtypes.py)
        a, b = ("bfloat16", za), (other, zb)
        if swap:
            a, b = b, a
        res = [eval(f"x {op} y", {"x": _make(lib, *a), "y": _make(lib, *b)}) for lib in (fg, torch)]
        what = f"{a[0]}{'(0-d)' if a[1] else ''} {op} {b[0]}{'(0-d)' if b[1] else ''}"
        _same(*res, what, exact=op != "**")
        for lib in (fg, torch):
            assert _name(lib.promote_types(getattr(lib, a[0]), getattr(lib, b[0]))) == \
                _name(torch.promote_types(getattr(torch, a[0]), getattr(torch, b[0]))), what
            if op not in ("==", "<"):
                assert _name(lib.result_type(_make(lib, *a), _make(lib, *b))) == _name(res[1].dtype), what


@pytest.mark.parametrize("number", [2, 2.5, True, 0.1, 1e-3, 300])
@pytest.mark.parametrize("op", ["+", "-", "*", "/", "==", "<", ">="])
def test_python_numbers_keep_bfloat16(number, op):
    for zero_dim, reflected in itertools.product((False, True), (False, True)):
        if number is True and op == "-":
            continue
        expr = f"n {op} x" if reflected else f"x {op} n"
        res = [eval(expr, {"x": _make(lib, "bfloat16", zero_dim), "n": number}) for lib in (fg, torch)]
        _same(*res, f"{expr}, n={number!r}")


def test_comparisons_round_the_number_to_bfloat16_first():
    for lib in (fg, torch):
        x = lib.tensor([3.3, 256.0, 0.1]).to(lib.bfloat16)
        assert (x == lib.tensor([3.3, 257.0, 0.1]).to(lib.bfloat16)).tolist() == [True, True, True]
        assert (x[0] == 3.3).item() and (x[1] == 257).item() and not (x[1] < 257).item()


# ---- ops ------------------------------------------------------------------------------------------------------
X = _rand(5, 7, seed=2, scale=3)
Y = _rand(5, 7, seed=3)
# elementwise: torch computes in float32 and rounds once, as forgegrad does: bit-equal (transcendental functions may
# differ by one float32 ulp between the two libraries' kernels, which a rounding to bfloat16 hides all but rarely:
# those are compared at one bfloat16 ulp)
EXACT = ["x + y", "x - y", "x * y", "x / y", "-x", "x.abs()", "lib.relu(x)", "x.clamp(-0.5, 0.5)", "lib.maximum(x, y)",
         "x * 2.5", "x + 0.1", "x.floor()", "x.round()", "lib.where(x > 0, x, y)", "x.masked_fill(x > 1, 0.1)",
         "lib.cat([x, y], 1)", "lib.stack([x, y])", "x[1:4, ::2]", "x.t()", "x.reshape(7, 5)", "x.flip(0)",
         "x.max(1)[0]", "x.min()", "x.sort(1)[0]", "x.topk(3)[0]", "x.argmax(1)", "x.sign()", "x.square()",
         "lib.lerp(x, y, 0.3)", "x.expand(2, 5, 7)", "x.index_select(1, lib.tensor([0, 6, 2]))", "x.sqrt()",
         "x.reciprocal()"]
CLOSE = ["x.exp()", "x.log()", "x.tanh()", "x.sigmoid()", "x.sin()", "F.gelu(x)", "F.silu(x)", "x.softmax(1)",
         "x.log_softmax(1)", "x.sum()", "x.sum(0)", "x.mean(1)", "x.var(0)", "x.std()", "x.norm()", "x.cumsum(1)",
         "x.prod(1)", "x ** 1.7", "lib.erf(x)", "F.layer_norm(x, (7,))", "x.logsumexp(1)", "x @ y.t()",
         "F.linear(x, y[:3], y[0, :3])", "lib.mm(x, y.t())", "lib.bmm(x.reshape(1, 5, 7), y.t().reshape(1, 7, 5))",
         "F.conv1d(x.reshape(1, 5, 7), y[:2, :3].reshape(2, 1, 3).expand(2, 5, 3).contiguous())",
         "F.conv2d(x.reshape(1, 1, 5, 7), y[:3, :3].reshape(1, 1, 3, 3), padding=1)",
         "F.max_pool2d(x.reshape(1, 1, 5, 7), 2)", "F.avg_pool2d(x.reshape(1, 1, 5, 7), 2)",
         "F.mse_loss(x, y)", "F.cross_entropy(x, lib.tensor([0, 3, 6, 1, 2]))",
         "F.dropout(x, 0.5, training=False)", "F.batch_norm(x, None, None, training=True)"]


def _bf16_env(lib):
    return {"lib": lib, "F": lib.nn.functional, "x": lib.from_numpy(X.copy()).to(lib.bfloat16),
            "y": lib.from_numpy(Y.copy()).to(lib.bfloat16)}


def _ulps_apart(got, want) -> float:
    g, w = _values(got), _values(want)
    scale = np.maximum(np.abs(w), 2.0 ** -126)
    return float(np.nanmax(np.abs(g - w) / (scale * BF16_EPS))) if g.size else 0.0


@pytest.mark.parametrize("expr", EXACT)
def test_elementwise_and_data_movement_ops_are_bit_equal(expr):
    got, want = (eval(expr, _bf16_env(lib)) for lib in (fg, torch))
    _same(got, want, expr)


@pytest.mark.parametrize("expr", CLOSE)
def test_ops_computed_in_float32_round_to_bfloat16(expr):
    got, want = (eval(expr, _bf16_env(lib)) for lib in (fg, torch))
    assert _name(got.dtype) == _name(want.dtype), (expr, got.dtype, want.dtype)
    # one rounding of a float32 result: at most one bfloat16 ulp from torch (whose summation order differs)
    _same(got, want, expr, exact=False, rtol=2 * BF16_EPS, atol=4 * BF16_EPS)


@pytest.mark.parametrize("expr", ["(x * y).sum()", "(lib.tanh(x @ y.t()) * 2.5).sigmoid().mean()",
                                  "F.cross_entropy(F.linear(x, y[:4], y[0, :4]), lib.tensor([0, 3, 1, 1, 2]))",
                                  "F.conv2d(x.reshape(1, 1, 5, 7), y[:3, :3].reshape(1, 1, 3, 3)).square().sum()",
                                  "(x[:, 1:] / (y[:, :6].abs() + 1)).logsumexp(1).sum()",
                                  "F.layer_norm(x, (7,), y[0], y[1]).pow(2).mean()"])
def test_gradients_are_bfloat16_and_close_to_torch(expr):
    res = []
    for lib in (fg, torch):
        env = _bf16_env(lib)
        env["x"].requires_grad_()
        env["y"].requires_grad_()
        loss = eval(expr, env)
        loss.backward()
        res.append((loss, env["x"].grad, env["y"].grad))
    for got, want in zip(*res):
        assert _name(got.dtype) == _name(want.dtype) == "bfloat16", expr
        _same(got, want, expr, exact=False, rtol=4 * BF16_EPS, atol=4 * BF16_EPS * max(1.0, float(
            np.abs(_values(want)).max())))


def test_bfloat16_leaf_with_float32_ops_gets_a_bfloat16_gradient():
    for lib in (fg, torch):
        w = lib.tensor([1.5, -2.25, 3.0]).to(lib.bfloat16).requires_grad_()
        (w.float() * lib.tensor([0.1, 0.2, 0.3])).sum().backward()
        assert w.grad.dtype == lib.bfloat16
    assert w.grad.tolist() == fg.tensor([0.1, 0.2, 0.3]).bfloat16().tolist()


def test_in_place_ops_keep_bfloat16():
    res = []
    for lib in (fg, torch):
        x = lib.from_numpy(X.copy()).to(lib.bfloat16)
        x.add_(1.5)
        x.mul_(lib.from_numpy(Y.copy()))  # a float32 operand: the result stays bfloat16 (in place)
        x[0] = 3.3
        x[1, 2:4] = lib.tensor([0.1, 0.2])
        res.append(x)
    _same(*res, "in place")


# ---- modules --------------------------------------------------------------------------------------------------
def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(7, 6), lib.nn.GELU(), lib.nn.LayerNorm(6), lib.nn.Linear(6, 3))


@pytest.mark.parametrize("convert", ["to(lib.bfloat16)", "bfloat16()"])
def test_module_to_bfloat16_forward_and_backward_as_torch(convert):
    fg.manual_seed(0)
    m, tm = _mlp(fg), _mlp(torch)
    tm.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in m.state_dict().items()})
    for lib, mod in ((fg, m), (torch, tm)):
        assert eval("mod." + convert, {"mod": mod, "lib": lib}) is mod
    assert all(p.dtype == fg.bfloat16 for p in m.parameters())
    out, tout = m(fg.from_numpy(X.copy()).bfloat16()), tm(torch.from_numpy(X.copy()).bfloat16())
    _same(out, tout, "forward", exact=False, atol=4 * BF16_EPS)
    out.float().sum().backward()
    tout.float().sum().backward()
    for (name, p), tp in zip(m.named_parameters(), tm.parameters()):
        assert p.grad.dtype == fg.bfloat16, name
        _same(p.grad, tp.grad, name, exact=False, rtol=4 * BF16_EPS, atol=8 * BF16_EPS)
    assert m.float() is m and m[0].weight.dtype == fg.float32
    with pytest.raises(TypeError, match="floating dtype"):
        m.to(fg.int32)


# ---- files ----------------------------------------------------------------------------------------------------
def test_save_load_round_trip_with_the_bf16_tag(tmp_path):
    from safetensors.torch import load_file, save_file
    m = _mlp(fg).bfloat16()
    path = str(tmp_path / "m.safetensors")
    fg.save(m.state_dict(), path)
    back = fg.load(path)
    import json
    n = int.from_bytes(open(path, "rb").read(8), "little")
    header = json.loads(open(path, "rb").read(8 + n)[8:])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    theirs = load_file(path)  # torch reads forgegrad's file as bfloat16
    fresh = _mlp(fg).bfloat16()
    fresh.load_state_dict(back)
    for k, v in m.state_dict().items():
        assert theirs[k].dtype == torch.bfloat16
        np.testing.assert_array_equal(theirs[k].float().numpy(), v.float().numpy())
        assert fresh.state_dict()[k].dtype == fg.bfloat16
        np.testing.assert_array_equal(fresh.state_dict()[k].float().numpy(), v.float().numpy())
    # and a file torch wrote
    t = torch.randn(4, 3).bfloat16()
    save_file({"w": t}, str(tmp_path / "t.safetensors"))
    w = fg.tensor(fg.load(str(tmp_path / "t.safetensors"))["w"])
    assert w.dtype == fg.bfloat16
    np.testing.assert_array_equal(w.float().numpy(), t.float().numpy())
    # nested checkpoints keep bfloat16 too
    fg.save({"model": m.state_dict(), "step": 3}, str(tmp_path / "n.fg"))
    assert fg.load(str(tmp_path / "n.fg"))["model"]["0.weight"].dtype == fg.bfloat16


def test_forgegrad_imports_without_ml_dtypes_and_says_how_to_get_bfloat16():
    code = ("import sys; sys.modules['ml_dtypes'] = None\n"
            "import forgegrad as fg\n"
            "x = fg.ones(2).half() * 2\n"
            "for get in (lambda: fg.bfloat16, lambda: fg.ones(2).bfloat16(), lambda: fg.dtypes.of('bfloat16')):\n"
            "    try:\n"
            "        get()\n"
            "    except ImportError as e:\n"
            "        assert 'pip install forgegrad[bf16]' in str(e), e\n"
            "    else:\n"
            "        raise SystemExit('no ImportError')\n"
            "print('ok')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_products_of_mixed_floating_dtypes_raise_as_torch():
    for lib in (fg, torch):
        x = lib.from_numpy(X.copy()).to(lib.bfloat16)
        with pytest.raises(RuntimeError, match="dtype"):
            lib.nn.Linear(7, 2)(x)
        with pytest.raises(RuntimeError, match="dtype"):
            x @ lib.from_numpy(Y.T.copy())
        assert lib.nn.Linear(7, 2).to(lib.bfloat16)(x).dtype == lib.bfloat16


def test_transformer_layer_and_dropout_in_bfloat16_as_torch():
    fg.manual_seed(0)
    ours = fg.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    x = _rand(3, 2, 8, seed=11)
    got = ours.bfloat16()(fg.from_numpy(x.copy()).bfloat16())
    want = theirs.bfloat16()(torch.from_numpy(x.copy()).bfloat16())
    _same(got, want, "TransformerEncoderLayer", exact=False, rtol=8 * BF16_EPS, atol=8 * BF16_EPS)
    for lib in (fg, torch):  # the float32 keep mask does not widen the result
        assert lib.nn.functional.dropout(lib.ones(4, 5).to(lib.bfloat16), 0.5).dtype == lib.bfloat16


def test_load_state_dict_and_copy_into_bfloat16_round_as_torch():
    w = np.array([[1 + 2.0 ** -8 + 2.0 ** -30, 1 + 2.0 ** -8, -3.3]])  # float64: rounded through float32 by torch
    got = []
    for lib in (fg, torch):
        m = lib.nn.Linear(3, 1).to(lib.bfloat16)
        m.load_state_dict({"weight": lib.from_numpy(w.copy()), "bias": lib.from_numpy(np.zeros(1))})
        x = lib.zeros(3, dtype=lib.bfloat16)
        x.copy_(lib.from_numpy(w[0].copy()))
        got.append((m.weight.tolist(), x.tolist()))
    assert got[0] == got[1]


@pytest.mark.parametrize("name,kw", [("SGD", {"lr": 0.05, "momentum": 0.9}), ("Adam", {"lr": 0.01}),
                                     ("AdamW", {"lr": 0.01}), ("RMSprop", {"lr": 0.01})])
def test_optimizers_step_bfloat16_parameters(name, kw):
    """The float32 update of each bfloat16 parameter, rounded back into its storage (the state is float32; torch's is
    bfloat16, rounded every step): within a bfloat16 ulp or two of torch after a few steps; the optimizer's state
    survives a state_dict round trip."""
    fg.manual_seed(0)
    m, tm = fg.nn.Linear(7, 3), torch.nn.Linear(7, 3)
    tm.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in m.state_dict().items()})
    target = np.array([0, 2, 1, 1, 2])
    for lib, mod in ((fg, m), (torch, tm)):
        mod.to(lib.bfloat16)
        storage = mod.weight._data if lib is fg else None
        opt = getattr(lib.optim, name)(mod.parameters(), **kw)
        for step in range(6):
            if step == 3:  # the state through a state_dict round trip
                fresh = getattr(lib.optim, name)(mod.parameters(), **kw)
                fresh.load_state_dict(opt.state_dict())
                opt = fresh
            opt.zero_grad()
            out = mod(lib.from_numpy(X.copy()).to(lib.bfloat16))
            lib.nn.functional.cross_entropy(out.float(), lib.from_numpy(target.copy())).backward()
            opt.step()
        assert mod.weight.dtype == lib.bfloat16
        if lib is fg:
            assert m.weight._data is storage  # updated in place
    _same(m.weight, tm.weight, name, exact=False, rtol=4 * BF16_EPS, atol=4 * BF16_EPS)
    _same(m.bias, tm.bias, name, exact=False, rtol=4 * BF16_EPS, atol=4 * BF16_EPS)
