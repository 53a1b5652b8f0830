"""forgegrad keeps torch's dtypes: tensor()/as_tensor() of ndarrays, numpy scalars and sequences of them, the legacy
Tensor([...]) constructor, and the result dtype of arithmetic and comparisons over every pair of dtypes (tensors with
dimensions, 0-d tensors, Python numbers), checked against torch 2.13."""
import itertools

import numpy as np
import pytest
import torch

import forgegrad as fg

DTYPES = ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"]
OPS = ["+", "-", "*", "/", "//", "%", "**", "==", "<", ">="]


@pytest.fixture(params=["float32", "float64"])
def default_dtype(request):
    fg.set_default_dtype(getattr(fg, request.param))
    torch.set_default_dtype(getattr(torch, request.param))
    yield request.param
    fg.set_default_dtype(fg.float32)
    torch.set_default_dtype(torch.float32)


def _name(dt) -> str:
    return str(dt).split(".")[-1]


def _make(lib, dt, zero_dim):
    vals = np.array(2.0) if zero_dim else np.array([3.0, 1.0, 2.0])
    arr = np.asarray(vals > 0) if dt == "bool" else vals.astype(dt)  # no zeros: integer division by 0 raises
    return lib.from_numpy(arr.copy())


def _torch_refuses(a, b, op) -> bool:
    """Pairs torch raises for: a bool in a subtraction (test_bool_subtraction_raises), floor_divide / remainder /
    pow of two bools (test_bool_by_bool_kernels_raise)."""
    if op == "-" and "bool" in (a, b):
        return True
    return a == b == "bool" and op in ("//", "%", "**")


_NO_BOOL = {"//": "div_floor_cpu", "%": "remainder_cpu", "**": "pow", ".fmod": "fmod_cpu",
            ".floor_divide": "div_floor_cpu", ".remainder": "remainder_cpu", ".pow": "pow",
            ".div_floor": "div_floor_cpu", ".div_trunc": "div_trunc_cpu"}


def _bool_expr(op, left, right):
    if op.startswith(".div_"):
        return f"{left}.div({right}, rounding_mode={op[5:]!r})"
    return f"{left}{op}({right})" if op.startswith(".") else f"{left} {op} {right}"


@pytest.mark.parametrize("op,left,right", [
    (op, left, right) for op in _NO_BOOL
    for left, right in [("b", "b"), ("b", "b0"), ("b0", "b0"), ("b0", "b"), ("b", "True"), ("b0", "False"),
                        ("True", "b")]
    if not (left == "True" and op.startswith("."))])  # a method needs a tensor on the left
def test_bool_by_bool_kernels_raise(op, left, right):
    """torch has no bool kernel for floor_divide, remainder, fmod, pow (numpy computes them in int8); a bool tensor
    to the power of a Python bool is the exception (a copy for True, ones for False, still bool)."""
    expr = _bool_expr(op, left, right)
    pow_of_number = op in ("**", ".pow") and right in ("True", "False")
    for lib in (torch, fg):
        env = {"b": _make(lib, "bool", False), "b0": _make(lib, "bool", True)}
        env["b"][1] = False
        if pow_of_number:
            got = eval(expr, env)
            assert _name(got.dtype) == "bool", (lib.__name__, expr)
            want = np.ones_like(env[left].numpy()) if right == "False" else env[left].numpy()
            np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{lib.__name__}: {expr}")
            continue
        with pytest.raises(NotImplementedError, match=f'"{_NO_BOOL[op]}" not implemented for \'Bool\''):
            eval(expr, env)


@pytest.mark.parametrize("method,arg", [("pow_", "True"), ("pow_", "False"), ("remainder_", "b"),
                                        ("floor_divide_", "True"), ("fmod_", "b")])
def test_bool_in_place_kernels(method, arg):
    outs = []
    for lib in (torch, fg):
        b = lib.from_numpy(np.array([True, False, True]))
        try:
            eval(f"b.{method}({arg})", {"b": b})
            outs.append((b.dtype == lib.bool, b.tolist()))
        except NotImplementedError as e:
            outs.append(str(e))
    assert outs[0] == outs[1]


@pytest.mark.parametrize("expr", ["b - x", "x - b", "b - 1", "1.5 - b", "x - True", "True - x", "b.sub(x)",
                                  "x - b0"])
@pytest.mark.parametrize("dt", ["float32", "int64", "int8", "float16"])
def test_bool_subtraction_raises(expr, dt):
    for lib in (torch, fg):
        env = {"x": _make(lib, dt, False), "b": _make(lib, "bool", False), "b0": _make(lib, "bool", True)}
        with pytest.raises(RuntimeError, match="Subtraction, the `-` operator, with a bool tensor"):
            eval(expr, env)


def _same(got, want, what):
    assert _name(got.dtype) == _name(want.dtype), f"{what}: forgegrad {got.dtype}, torch {want.dtype}"
    np.testing.assert_allclose(got.numpy().astype(np.float64), want.numpy().astype(np.float64), rtol=2e-3,
                               err_msg=what)


@pytest.mark.parametrize("a,b", list(itertools.product(DTYPES, DTYPES)))
def test_binary_promotion_grid(a, b):
    for za, zb in itertools.product((False, True), repeat=2):
        for op in OPS:
            if _torch_refuses(a, b, op):
                continue
            res = [eval(f"x {op} y", {"x": _make(lib, a, za), "y": _make(lib, b, zb)}) for lib in (fg, torch)]
            _same(*res, f"{a}{'(0-d)' if za else ''} {op} {b}{'(0-d)' if zb else ''}")


@pytest.mark.parametrize("a", DTYPES)
@pytest.mark.parametrize("number", [2, 2.5, True])
def test_python_number_promotion(default_dtype, a, number):
    for zero_dim, op, reflected in itertools.product((False, True), OPS, (False, True)):
        if _torch_refuses(a, "bool" if number is True else "int64", op) or (number is True and op == "-"):
            continue
        expr = f"n {op} x" if reflected else f"x {op} n"
        res = [eval(expr, {"x": _make(lib, a, zero_dim), "n": number}) for lib in (fg, torch)]
        _same(*res, f"{expr} with x {a}{'(0-d)' if zero_dim else ''}, n={number!r}")


_DATA = [np.int32(3), np.float16(1), np.uint8(3), np.float64(2.0), np.float32(2), np.bool_(True), 3, 2.5, True,
         [np.int32(1), np.int32(2)], [np.int8(1), 2], [np.float32(1.5), 2.0], [np.float64(1.5)],
         [np.int16(1), np.int8(2)], [np.uint8(1), np.int8(2)], [np.float16(1), 2], [1, np.float16(1)],
         [np.int32(1), 2.5], [np.bool_(True)], [[1, 2], [3, 4]], [1.5, 2], [True, False]] + [
    np.arange(3).astype(d) for d in DTYPES]


@pytest.mark.parametrize("data", _DATA, ids=repr)
@pytest.mark.parametrize("factory", ["tensor", "as_tensor"])
def test_factories_keep_numpy_dtypes(default_dtype, factory, data):
    got, want = getattr(fg, factory)(data), getattr(torch, factory)(data)
    assert _name(got.dtype) == _name(want.dtype)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_as_tensor_of_ndarray_shares_memory_and_tensor_keeps_dtype():
    arr = np.arange(4, dtype=np.int32)
    t = fg.as_tensor(arr)
    arr[0] = 7
    assert t.dtype == fg.int32 and t[0].item() == 7
    assert fg.tensor(t).dtype == fg.int32 and fg.tensor(arr)[0].item() == 7


@pytest.mark.parametrize("data", [[1, 2], (1, 2), [True, False], [[1, 2]], [1.5, 2]], ids=repr)
def test_legacy_tensor_constructor_gives_default_dtype(default_dtype, data):
    got, want = fg.Tensor(data), torch.Tensor(data)
    assert _name(got.dtype) == _name(want.dtype) == default_dtype
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("data", [np.array([1, 2]), np.array([[3], [4]], np.int32), np.array([True, False]),
                                  np.array([7, 250], np.uint8), np.array([1.5, 2], np.float64)], ids=repr)
def test_legacy_constructor_of_an_ndarray_gives_default_dtype(default_dtype, data):
    got, want = fg.Tensor(data), torch.Tensor(data)
    assert _name(got.dtype) == _name(want.dtype) == default_dtype
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_operators_with_integer_ndarrays_and_arange_keep_integers():
    """fg.Tensor(ndarray) is torch's legacy constructor, but an int tensor with an int ndarray operand stays int (as
    torch's) and arange of ints is int64: forgegrad's own code keeps an array's integers (Tensor._stored)."""
    t, arr = fg.tensor([1, 2]), np.array([3, 4])
    for got, want in [(t + arr, torch.tensor([1, 2]) + arr), (arr * t, torch.tensor([1, 2]) * arr),
                      (t - arr, torch.tensor([1, 2]) - arr), (fg.arange(3), torch.arange(3)),
                      (fg.arange(1, 7, 2), torch.arange(1, 7, 2))]:
        assert _name(got.dtype) == _name(want.dtype) == "int64"
        np.testing.assert_array_equal(got.numpy(), want.numpy())


_INT_TO_FLOAT = ["lib.sigmoid(x)", "lib.tanh(x)", "lib.exp(x)", "lib.sqrt(x)", "lib.clamp(x, 0.5)", "lib.clamp(x, 1)",
                 "lib.where(x > 1, x, 0.5)", "lib.where(x > 1, x, 2)", "lib.rsqrt(x)", "lib.erf(x)", "x / 2",
                 "lib.atan2(x, x)", "x * 1.5"]


@pytest.mark.parametrize("dt", ["int64", "int32", "int16", "int8", "uint8", "bool"])
@pytest.mark.parametrize("expr", _INT_TO_FLOAT)
def test_integer_tensors_made_float_take_the_default_dtype(default_dtype, dt, expr):
    got, want = (eval(expr, {"lib": lib, "x": _make(lib, dt, False)}) for lib in (fg, torch))
    assert _name(got.dtype) == _name(want.dtype)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12 if default_dtype == "float64" else 1e-6)


@pytest.mark.parametrize("expr", ["lib.sigmoid(x)", "x.mean()", "lib.nn.functional.gelu(x)", "x * 2.5", "x + y",
                                  "x * y0", "lib.tanh(x) * y"])
def test_float16_stays_float16(expr):
    res = []
    for lib in (fg, torch):
        env = {"lib": lib, "x": _make(lib, "float16", False), "y": _make(lib, "int64", False),
               "y0": lib.tensor(3.0)}
        res.append(eval(expr, env))
    _same(*res, expr)


@pytest.mark.parametrize("dt", ["int32", "int64"])
def test_index_ops_take_int32_indices(dt):
    """torch indexes with int32 and int64 tensors (tensor() now keeps an int32 array's dtype)."""
    out = []
    for lib in (fg, torch):
        x = lib.tensor(np.arange(12.0, dtype=np.float32).reshape(3, 4))
        i = lib.tensor(np.array([2, 0], dt))
        out.append([x[i], x.index_select(0, i), lib.nn.functional.embedding(i, x), x[:, i]])
    for got, want in zip(*out):
        _same(got, want, dt)


def test_narrow_integer_tensors_with_gradients():
    res = []
    for lib in (fg, torch):
        w = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        x = lib.tensor(np.array([1, 2, 3], np.int8))
        (w * x + x.to(lib.float32) / 2).sum().backward()
        res.append(w.grad)
    _same(*res, "grad through int8")


@pytest.mark.parametrize("dt", ["int8", "uint8", "int16"])
@pytest.mark.parametrize("number", [300, -300, 200, 70000])
@pytest.mark.parametrize("expr", ["x + n", "x * n", "n - x", "x // n", "x % n", "x == n", "x < n"])
def test_python_int_out_of_range_wraps(dt, number, expr):
    """torch converts a Python int to an integer tensor's dtype by wrapping (numpy raises OverflowError)."""
    res = [eval(expr, {"x": lib.tensor(np.array([1, 2, -3]).astype(dt)), "n": number}) for lib in (fg, torch)]
    _same(*res, f"{expr}, x {dt}, n={number}")


def test_narrow_dtypes_survive_save_and_load(tmp_path):
    tensors = {d: fg.tensor(np.arange(3).astype(d)) for d in DTYPES}
    fg.save(tensors, str(tmp_path / "t.fg"))
    back = fg.load(str(tmp_path / "t.fg"))
    for d in DTYPES:  # (load gives numpy arrays, forgegrad's documented form)
        assert back[d].dtype == tensors[d].dtype
        np.testing.assert_array_equal(back[d], tensors[d].numpy())
    m, fresh = fg.nn.Module(), fg.nn.Module()
    m.register_buffer("counts", fg.tensor(np.array([1, 2], np.int32)))
    fresh.register_buffer("counts", fg.tensor(np.zeros(2, np.int32)))
    fg.save(m.state_dict(), str(tmp_path / "m.fg"))
    fresh.load_state_dict(fg.load(str(tmp_path / "m.fg")))
    assert fresh.counts.dtype == fg.int32 and fresh.counts.tolist() == [1, 2]


def test_onnx_export_of_int32_index_and_uint8_image_inputs(tmp_path):
    """tensor() keeps int32 / uint8 inputs now: the graph takes them and onnxruntime agrees."""
    pytest.importorskip("onnxruntime", reason="ONNX checks need onnxruntime")
    from test_onnx_common import Lambda, export_and_check

    model = Lambda(lambda m, img, idx: (img.float() / 255 * 2 - 1)[:, :, 0] + m.w[idx].sum(1, keepdim=True) + idx)
    model.w = fg.randn(9, 4)
    img = fg.tensor(np.random.default_rng(0).integers(0, 255, (3, 4, 2)).astype(np.uint8))
    idx = fg.tensor(np.array([[3, 0, 8, 1], [2, 2, 5, 7], [0, 1, 2, 3]], np.int32))
    assert (img.dtype, idx.dtype) == (fg.uint8, fg.int32)
    export_and_check(model, (img, idx), tmp_path)


@pytest.mark.parametrize("dt", [np.uint16, np.uint32, np.uint64, np.complex256, object])
def test_from_numpy_refuses_a_dtype_forgegrad_has_no_tensor_for(dt):
    # it shares the array's memory, so it cannot widen: a tensor whose .dtype raised KeyError came back before
    with pytest.raises(TypeError, match=r"from_numpy: forgegrad has no tensor dtype for numpy"):
        fg.from_numpy(np.array([1], dtype=dt))


def test_unsigned_arrays_widen_to_int64_only_when_their_values_fit():
    assert fg.tensor(np.array([7, 65535], np.uint16)).tolist() == [7, 65535]
    assert fg.tensor(np.array([2 ** 63 - 1], np.uint64)).tolist() == [2 ** 63 - 1]
    with pytest.raises(OverflowError, match="uint64 data up to 18446744073709551615"):
        fg.tensor(np.array([2 ** 64 - 1], np.uint64))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.int8, np.uint8])
def test_integer_matmul_mm_and_bmm_are_torch_s_exact_products(dtype):
    """torch multiplies integer matrices in their dtype, wrapping on overflow; a float operand with an integer one is
    an error (torch: 'expected m1 and m2 to have the same dtype')."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 100, (2, 3, 5)).astype(dtype), rng.integers(0, 100, (5, 4)).astype(dtype)
    got = fg.tensor(a) @ fg.tensor(b)
    want = torch.from_numpy(a) @ torch.from_numpy(b)
    assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    np.testing.assert_array_equal(fg.mm(fg.tensor(a[0]), fg.tensor(b)).numpy(),
                                  (torch.from_numpy(a[0]) @ torch.from_numpy(b)).numpy())
    np.testing.assert_array_equal(fg.bmm(fg.tensor(a), fg.tensor(np.stack([b, b]))).numpy(),
                                  torch.bmm(torch.from_numpy(a), torch.from_numpy(np.stack([b, b]))).numpy())
    np.testing.assert_array_equal((fg.tensor(a[0, 0]) @ fg.tensor(a[0, 1])).numpy(),
                                  (torch.from_numpy(a[0, 0]) @ torch.from_numpy(a[0, 1])).numpy())
    v = fg.tensor(a[0, 0])
    assert fg.dot(v, v).dtype == v.dtype and fg.dot(v, v).item() == torch.dot(*[torch.from_numpy(a[0, 0])] * 2).item()
    with pytest.raises(TypeError, match="same dtype"):
        fg.tensor(a) @ fg.tensor(b.astype(np.float32))
    with pytest.raises(TypeError, match="same dtype"):
        fg.dot(v, v.float())


def test_as_tensor_of_a_tensor_as_torch():
    # torch.as_tensor returns a tensor of the asked dtype and device itself, graph included; another dtype
    # is a differentiable conversion (was: a detached copy in every case)
    for lib in (fg, torch):
        x = lib.ones(3, requires_grad=True)
        y = x * 2
        assert lib.as_tensor(y) is y and lib.as_tensor(y, device="cpu") is y
        assert lib.as_tensor(y, dtype=lib.float32) is y
        z = lib.as_tensor(y, dtype=lib.float64)
        assert z.dtype == lib.float64 and z.requires_grad
        (z * 3).sum().backward()
        np.testing.assert_array_equal(np.asarray(x.grad.numpy()), np.full(3, 6.0, np.float32))
    arr = np.zeros(3, np.float32)
    t = fg.as_tensor(arr)
    arr[0] = 5  # an ndarray is shared, as torch.as_tensor shares it
    assert t.numpy()[0] == 5 and torch.as_tensor(arr).numpy()[0] == 5
    with pytest.raises(TypeError):  # dtype and device are keyword-only, as torch's
        fg.as_tensor(arr, fg.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.bool_])
def test_tensor_copies_its_data_as_torch(dtype):
    # torch.tensor copies: an in-place op on the result must not write into the caller's array or tensor (it
    # shared an ndarray before: `fg.tensor(arr).add_(1)` changed arr). as_tensor / from_numpy still share.
    arr = np.ones(4, dtype)
    for lib in (fg, torch):
        t = lib.tensor(arr)
        t.fill_(0)
        assert arr.all() and t.dtype == lib.as_tensor(arr).dtype
        src = lib.ones(3)
        lib.tensor(src).fill_(0) if lib is fg else src.clone().detach().fill_(0)
        assert src.numpy().all()
        shared = lib.as_tensor(arr)
        assert np.shares_memory(np.asarray(shared.numpy()), arr)
    assert np.shares_memory(fg.from_numpy(arr).numpy(), arr)
