"""torch's parameter names by keyword (tools/signature_audit.py's ``renamed`` and ``moved``): each call made with
torch's keyword names in forgegrad and in torch, values, dtypes and gradients compared; the overloads torch tells
apart by type (``x.to(torch.float64, True)``, ``x.scatter_(0, idx, 1.0)``) positionally; forgegrad's own names that
stay accepted; and the torch docstring names the audit skips, each checked to be refused by torch itself."""
import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import forgegrad as fg

RNG = np.random.default_rng(3)
A = RNG.standard_normal((3, 4)).astype(np.float32)
B = RNG.standard_normal((3, 4)).astype(np.float32)
V = RNG.standard_normal(4).astype(np.float32)
SQ = (RNG.standard_normal((3, 3)) + 3 * np.eye(3)).astype(np.float64)
SPD = SQ @ SQ.T + np.eye(3)
CUBE = RNG.standard_normal((2, 4, 6)).astype(np.float32)
HALF = np.array([-1.5, 0.0, 2.0, 0.0], np.float32)
GEQRF_A, GEQRF_TAU = (t.numpy() for t in torch.geqrf(torch.tensor(SQ)))


def _tensors(m, arrays, grad):
    return [m.tensor(a.copy(), requires_grad=grad and a.dtype.kind == "f") for a in arrays]


def _compare(a, b, rtol=1e-5, atol=1e-6):
    if isinstance(b, (tuple, list)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _compare(u, v, rtol, atol)
        return
    if b is None:  # no gradient to that input in torch: none in forgegrad either
        assert a is None
        return
    assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1], (a.dtype, b.dtype)
    assert tuple(a.shape) == tuple(b.shape)
    np.testing.assert_allclose(np.asarray(a.detach().numpy(), np.float64), b.detach().double().numpy(),
                               rtol=rtol, atol=atol)


# name -> (fn(m, *tensors), input arrays, whether a gradient flows)
CALLS = {
    "torch.arange(start, end, step)": (lambda m: m.arange(start=1, end=7, step=2), (), False),
    "torch.arange(end)": (lambda m: m.arange(end=4), (), False),
    "torch.arange(1, end)": (lambda m: m.arange(1, end=2.5, step=0.5), (), False),
    "torch.full(size, fill_value)": (lambda m: m.full(size=(2, 3), fill_value=1.5), (), False),
    "torch.where(condition, input, other)": (lambda m, a, b: m.where(a > 0, input=a, other=b), (A, B), True),
    "torch.where(condition)": (lambda m, a: m.where(a > 0), (A,), False),
    "torch.heaviside(input, values)": (lambda m, x, v: m.heaviside(x, values=v), (HALF, np.float32([0.5])), False),
    "torch.det(input)": (lambda m, x: m.det(input=x), (SQ,), True),
    "torch.inverse(input)": (lambda m, x: m.inverse(input=x), (SQ,), True),
    "torch.logdet(input)": (lambda m, x: m.logdet(input=x), (SPD,), True),
    "torch.slogdet(input)": (lambda m, x: m.slogdet(input=x)[1], (SQ,), True),
    "torch.matrix_power(input, n)": (lambda m, x: m.matrix_power(input=x, n=3), (SQ,), True),
    "torch.orgqr(input, input2)": (lambda m, x, t: m.orgqr(input=x, input2=t), (GEQRF_A, GEQRF_TAU), True),
    "Tensor.orgqr(input2)": (lambda m, x, t: x.orgqr(input2=t), (GEQRF_A, GEQRF_TAU), True),
    "torch.max(input, other)": (lambda m, a, b: m.max(a, other=b), (A, B), True),
    "torch.min(input, other)": (lambda m, a, b: m.min(a, other=b), (A, B), True),
    "Tensor.max(other)": (lambda m, a, b: a.max(other=b), (A, B), True),
    "Tensor.min(other) positional": (lambda m, a, b: a.min(b), (A, B), True),
    "Tensor.max(dim) unchanged": (lambda m, a: a.max(1, keepdim=True).values, (A,), True),
    "torch.permute(input, dims)": (lambda m, x: m.permute(x, dims=(2, 0, 1)), (CUBE,), True),
    "Tensor.permute(dims)": (lambda m, x: x.permute(dims=(1, 2, 0)), (CUBE,), True),
    "torch.reshape(input, shape)": (lambda m, x: m.reshape(x, shape=(4, -1)), (CUBE,), True),
    "Tensor.reshape(shape)": (lambda m, x: x.reshape(shape=(6, 8)), (CUBE,), True),
    "Tensor.view(size)": (lambda m, x: x.view(size=(8, 6)), (CUBE,), True),
    "torch.tile(input, dims)": (lambda m, x: m.tile(x, dims=(2, 1)), (A,), True),
    "Tensor.tile(dims)": (lambda m, x: x.tile(dims=(2,)), (V,), True),
    "Tensor.flip(dims)": (lambda m, x: x.flip(dims=(0, 2)), (CUBE,), True),
    "torch.pow(input, exponent)": (lambda m, x: m.pow(x, exponent=2), (A,), True),
    "torch.pow(self, exponent)": (lambda m, x: m.pow(self=2.0, exponent=x), (A,), True),
    "torch.pow(number, tensor)": (lambda m, x: m.pow(3, x), (np.arange(4),), False),
    "Tensor.pow(exponent)": (lambda m, x, e: x.abs().pow(exponent=e), (A, B), True),
    "torch.split(tensor, split_size_or_sections, dim)": (
        lambda m, x: m.split(tensor=x, split_size_or_sections=[1, 3], dim=1), (A,), True),
    "Tensor.split(split_size)": (lambda m, x: x.split(split_size=2, dim=1), (A,), True),
    "torch.vdot(input, other)": (lambda m, a, b: m.vdot(a, other=b), (V, V[::-1]), True),
    "Tensor.vdot(other)": (lambda m, a, b: a.vdot(other=b), (V, V[::-1]), True),
    "Tensor.dot(tensor)": (lambda m, a, b: a.dot(tensor=b), (V, V[::-1]), True),
    "Tensor.heaviside(values)": (lambda m, x, v: x.heaviside(values=v), (HALF, np.float32([0.5])), False),
    "Tensor.heaviside_(values)": (lambda m, x, v: x.clone().heaviside_(values=v), (HALF, np.float32([2.0])), False),
    "Tensor.eq_(other)": (lambda m, x, v: x.clone().eq_(other=v), (HALF, np.float32([0.0])), False),
    "Tensor.lt_(other) number": (lambda m, x: x.clone().lt_(other=0.5), (HALF,), False),
    "Tensor.gcd_(other)": (lambda m, x, y: x.clone().gcd_(other=y), (np.arange(6), np.arange(6)[::-1] + 2), False),
    "Tensor.bitwise_left_shift_(other)": (lambda m, x: x.clone().bitwise_left_shift_(other=2), (np.arange(6),),
                                          False),
    "Tensor.polygamma_(n)": (lambda m, x: (x.abs() + 1).polygamma_(n=1), (A,), False),
    "Tensor.unfold(dimension, size, step)": (lambda m, x: x.unfold(dimension=1, size=2, step=2), (A,), True),
    "Tensor.new_zeros(size)": (lambda m, x: x.new_zeros(size=(2, 3)), (A,), False),
    "Tensor.new_ones(size)": (lambda m, x: x.new_ones(size=[4], dtype=m.float64), (A,), False),
    "Tensor.new_empty(size).shape": (lambda m, x: x.new_empty(size=(2,)).zero_(), (A,), False),
    "Tensor.to(dtype=)": (lambda m, x: x.to(dtype=m.float64), (A,), True),
    "Tensor.to(device=, dtype=)": (lambda m, x: x.to(device="cpu", dtype=m.int32), (A,), False),
    "Tensor.to(tensor=)": (lambda m, x, y: x.to(tensor=y), (A, SQ), True),
    "Tensor.to(dtype, non_blocking, copy)": (lambda m, x: x.to(m.float64, False, True), (A,), True),
    "Tensor.to(tensor) positional": (lambda m, x, y: x.to(y, non_blocking=True), (A, np.arange(2)), False),
    "Tensor.to(device, dtype) positional": (lambda m, x: x.to("cpu", m.float64), (A,), True),
    "Tensor.scatter_(dim, index, value) positional": (
        lambda m, x, i: x.clone().scatter_(1, i, 7.0), (A, np.array([[0], [3], [1]])), True),
    "Tensor.scatter_(dim, index, value=)": (
        lambda m, x, i: x.clone().scatter_(1, i, value=-2.0), (A, np.array([[2], [0], [1]])), True),
    "torch.repeat_interleave(repeats) positional": (lambda m, r: m.repeat_interleave(r), (np.array([1, 0, 3]),),
                                                    False),
    "torch.repeat_interleave(repeats=)": (lambda m, r: m.repeat_interleave(repeats=r), (np.array([2, 1]),), False),
    "torch.repeat_interleave(input, repeats, dim)": (lambda m, x: m.repeat_interleave(x, repeats=2, dim=1), (A,),
                                                     True),
    "torch.randint(low, high, size).shape": (lambda m: m.randint(low=3, high=4, size=(2, 3)), (), False),
    "torch.randint(high, size=)": (lambda m: m.randint(1, size=(5,)), (), False),
    "torch.randint(high=, size=)": (lambda m: m.randint(high=1, size=(2,)), (), False),
    # torch's keyword names that the audit does not see (torch's docstrings write them *size, indices_or_sections)
    "torch.zeros(size=)": (lambda m: m.zeros(size=(2, 3)), (), False),
    "torch.ones(size=)": (lambda m: m.ones(size=[4], dtype=m.int64), (), False),
    "torch.empty(size=).shape": (lambda m: m.empty(size=(3,)).zero_(), (), False),
    "torch.rand(size=).shape": (lambda m: m.rand(size=(2, 2)).mul(0), (), False),
    "torch.randn(size=).shape": (lambda m: m.randn(size=(1, 3), dtype=m.float64).mul(0), (), False),
    "Tensor.expand(size=)": (lambda m, x: x[:1].expand(size=(5, 4)), (A,), True),
    "Tensor.repeat(repeats=)": (lambda m, x: x.repeat(repeats=(2, 1, 3)), (A,), True),
    "Tensor.sum_to_size(size=)": (lambda m, x: x.sum_to_size(size=(1, 4)), (A,), True),
    "Tensor.dsplit(sections=)": (lambda m, x: x.dsplit(sections=3), (CUBE,), True),
    "torch.hsplit(input, indices=)": (lambda m, x: m.hsplit(x, indices=[1, 3]), (A,), True),
    "torch.vsplit(input, sections=)": (lambda m, x: m.vsplit(x, sections=3), (A,), True),
    "torch.triangular_solve(input=, A=)": (lambda m, b, a: m.triangular_solve(input=b, A=a, upper=False).solution,
                                           (A[:, :2].astype(np.float64), np.tril(SQ)), True),
    "Tensor.view(dtype=)": (lambda m, x: x.view(dtype=m.int32), (A,), False),
    "Tensor.view(dtype) wider": (lambda m, x: x.view(m.float64), (A,), False),
    "Tensor.view(dtype) narrower": (lambda m, x: x.view(m.int16), (A,), False),
    "Tensor.view(dtype) same size": (lambda m, x: x.view(m.float32), (np.arange(6, dtype=np.int32),), False),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_torch_keyword_names(name):
    fn, arrays, grad = CALLS[name]
    res = []
    for m in (fg, torch):
        ts = _tensors(m, arrays, grad)
        y = fn(m, *ts)
        grads = None
        if grad:
            ys = y if isinstance(y, (tuple, list)) else (y,)
            total = sum((u.double() * m.tensor(np.linspace(-1, 1, u.numel()).reshape(tuple(u.shape)))).sum()
                        for u in ys)
            total.backward()
            grads = [t.grad for t in ts if t.requires_grad]
        res.append((y, grads))
    (a, ga), (b, gb) = res
    _compare(a, b)
    if grad:
        _compare(ga, gb, rtol=1e-4, atol=1e-5)


def test_view_dtype_is_not_differentiable_and_shares_memory():
    x, t = fg.tensor(A.copy(), requires_grad=True), torch.tensor(A.copy(), requires_grad=True)
    assert x.view(fg.int32).requires_grad == t.view(torch.int32).requires_grad
    y = fg.tensor(A.copy())
    v = y.view(fg.int32)
    v.add_(1)
    np.testing.assert_array_equal(y.view(fg.int32).numpy(), v.numpy())
    with pytest.raises(RuntimeError, match="divisible"):
        fg.tensor(np.zeros((2, 3), np.float32)).view(fg.float64)
    with pytest.raises(RuntimeError):
        torch.zeros(2, 3).view(torch.float64)
    with pytest.raises(TypeError, match="shape or a dtype"):
        y.view(3, 4, dtype=fg.int32)


def test_max_with_other_and_dim_refused():
    x = fg.tensor(A)
    with pytest.raises(TypeError, match="other"):
        x.max(1, other=x)
    with pytest.raises(TypeError, match="other"):
        x.min(other=2.0)


def test_keyword_and_positional_together_refused():
    x = fg.tensor(A)
    for call in (lambda: x.reshape(12, shape=(12,)), lambda: x.permute(1, 0, dims=(1, 0)),
                 lambda: x.new_zeros(2, size=(2,)), lambda: x.to(fg.float64, dtype=fg.float64),
                 lambda: x.to(tensor=x, dtype=fg.float64), lambda: fg.pow(x, 2, self=2.0),
                 lambda: x.split(2, split_size_or_sections=2), lambda: x.flip(0, dims=(0,))):
        with pytest.raises(TypeError):
            call()


@pytest.mark.parametrize("args, kwargs", [((5,), {}), ((1, 5), {}), ((1, 6, 2), {}), ((), {"end": 5}),
                                          ((1,), {"end": 5}), ((0, 5), {"step": 2})])
def test_arange_positional_and_keyword_forms(args, kwargs):
    np.testing.assert_array_equal(fg.arange(*args, **kwargs).numpy(), torch.arange(*args, **kwargs).numpy())


@pytest.mark.parametrize("args, kwargs", [((), {"start": 1}), ((), {}), ((1,), {"start": 2}), ((1, 2, 3, 4), {}),
                                          ((3,), {"stop": 4}), ((5,), {"step": 2}), ((), {"end": 5, "step": 2})])
def test_arange_without_an_end_refused_as_torch(args, kwargs):
    with pytest.raises(TypeError):
        torch.arange(*args, **kwargs)
    with pytest.raises(TypeError, match="arange"):
        fg.arange(*args, **kwargs)


def test_sections_and_indices_checked():
    x = fg.tensor(CUBE)
    for call in (lambda: x.dsplit(2, sections=2), lambda: x.dsplit(sections=[1]), lambda: x.dsplit(indices=2),
                 lambda: x.dsplit()):
        with pytest.raises(TypeError, match="sections|indices"):
            call()


def test_result_type_torch_names():
    """torch.result_type(tensor, other): the names torch takes (its docstring says tensor1, tensor2)."""
    for a, b in ((A, 2.5), (np.arange(3), 1), (np.float64(1.0), A)):
        want = torch.result_type(tensor=torch.tensor(a), other=b if not isinstance(b, np.ndarray) else torch.tensor(b))
        got = fg.result_type(tensor=fg.tensor(a), other=b if not isinstance(b, np.ndarray) else fg.tensor(b))
        assert str(got).split(".")[-1] == str(want).split(".")[-1]


def test_to_memory_format_refused():
    with pytest.raises(TypeError, match="memory_format"):
        fg.tensor(A).to(fg.float64, memory_format=None)


def test_forgegrads_own_names_still_taken():
    """Tensor.split(split_size_or_sections=) (torch.split's name), save(state_dict=, path=), load(path=)."""
    x = fg.tensor(A)
    assert [tuple(p.shape) for p in x.split(split_size_or_sections=[1, 2])] == [(1, 4), (2, 4)]
    buf = io.BytesIO()
    fg.save(state_dict={"w": x}, path=buf, metadata={"k": "v"})
    buf.seek(0)
    np.testing.assert_array_equal(fg.load(path=buf)["w"], A)


def test_save_load_torch_names_and_positions():
    """save(obj, f, pickle_module, pickle_protocol, _use_new_zipfile_serialization, _disable_byteorder_record):
    the format options are accepted without effect (the file is safetensors); another pickle module is refused,
    and so is forgegrad's former third positional, metadata."""
    buf = io.BytesIO()
    fg.save(obj={"w": fg.tensor(A)}, f=buf, pickle_module=pickle, pickle_protocol=4,
            _use_new_zipfile_serialization=False, _disable_byteorder_record=True)
    buf.seek(0)
    np.testing.assert_array_equal(fg.load(f=buf, map_location=None, pickle_module=pickle)["w"], A)
    with pytest.raises(TypeError, match="pickle_module"):
        fg.save({"w": fg.tensor(A)}, io.BytesIO(), pickle_module=io)
    with pytest.raises(TypeError, match="pickle_module"):
        fg.load(io.BytesIO(), None, io)
    with pytest.raises(TypeError, match="metadata"):
        fg.save({"w": fg.tensor(A)}, io.BytesIO(), {"k": "v"})
    with pytest.raises(TypeError, match="obj and state_dict"):
        fg.save({"w": fg.tensor(A)}, io.BytesIO(), state_dict={})
    with pytest.raises(TypeError, match="'f'"):
        fg.load()


@pytest.mark.parametrize("copy", [None, True, False])
def test_from_dlpack_copy_and_device(copy):
    """copy=True never shares the memory, False / None share it (numpy source), as torch's; device='cpu'."""
    res = []
    for m in (fg, torch):
        src = np.arange(4.0)
        t = m.from_dlpack(src, device="cpu", copy=copy)
        t[0] = 9.0
        res.append(src[0])
    assert res[0] == res[1]


def test_from_dlpack_refusals():
    with pytest.raises(BufferError):
        fg.from_dlpack(np.arange(3.0), device="meta")
    with pytest.raises(BufferError):
        torch.from_dlpack(np.arange(3.0), device="meta")
    with pytest.raises(TypeError, match="copy"):
        fg.from_dlpack(np.arange(3.0), copy=1)


# ---- torch docstring names that torch itself refuses (the audit skips them: tools/signature_audit.py) -----------
_t2 = torch.tensor(A)
_sq, _qa, _qt = torch.tensor(SQ), torch.tensor(GEQRF_A), torch.tensor(GEQRF_TAU)
DOC_ONLY = {
    ("Tensor", "div", "value"): lambda: _t2.div(value=2.0),
    ("Tensor", "mul_", "value"): lambda: _t2.clone().mul_(value=2.0),
    ("Tensor", "true_divide", "value"): lambda: _t2.true_divide(value=2.0),
    ("Tensor", "floor_divide", "value"): lambda: _t2.floor_divide(value=2.0),
    ("Tensor", "fmod", "divisor"): lambda: _t2.fmod(divisor=2.0),
    ("Tensor", "remainder_", "divisor"): lambda: _t2.clone().remainder_(divisor=2.0),
    ("Tensor", "dsplit", "split_size_or_sections"): lambda: torch.zeros(2, 2, 4).dsplit(split_size_or_sections=2),
    ("Tensor", "vsplit", "split_size_or_sections"): lambda: _t2.vsplit(split_size_or_sections=3),
    ("Tensor", "bmm", "batch2"): lambda: _t2[None].bmm(batch2=_t2[None].mT),
    ("Tensor", "broadcast_to", "shape"): lambda: _t2.broadcast_to(shape=(2, 3, 4)),
    ("Tensor", "dot", "other"): lambda: _t2[0].dot(other=_t2[1]),
    ("Tensor", "index_copy", "tensor2"): lambda: _t2.index_copy(0, torch.tensor([0]), tensor2=_t2[:1]),
    ("Tensor", "index_copy_", "tensor"): lambda: _t2.clone().index_copy_(0, torch.tensor([0]), tensor=_t2[:1]),
    ("Tensor", "masked_scatter", "tensor"): lambda: _t2.masked_scatter(_t2 > 0, tensor=_t2),
    ("Tensor", "matmul", "tensor2"): lambda: _t2.matmul(tensor2=_t2.T),
    ("Tensor", "narrow", "dimension"): lambda: _t2.narrow(dimension=0, start=0, length=1),
    ("Tensor", "narrow_copy", "dimension"): lambda: _t2.narrow_copy(dimension=0, start=0, length=1),
    ("Tensor", "ormqr", "tau"): lambda: _qa.ormqr(tau=_qt, other=_sq),
    ("Tensor", "orgqr", "tau"): lambda: _qa.orgqr(tau=_qt),
    ("Tensor", "take", "indices"): lambda: _t2.take(indices=torch.tensor([0])),
    ("Tensor", "to", "other"): lambda: _t2.to(other=_sq),
    ("Tensor", "type_as", "tensor"): lambda: _t2.type_as(tensor=_sq),
    ("Tensor", "where", "y"): lambda: _t2.where(_t2 > 0, y=_t2),
    ("torch", "broadcast_to", "shape"): lambda: torch.broadcast_to(_t2, shape=(2, 3, 4)),
    ("torch", "cholesky_inverse", "L"): lambda: torch.cholesky_inverse(L=_sq),
    ("torch", "cholesky_solve", "B"): lambda: torch.cholesky_solve(B=_sq, L=_sq),
    ("torch", "orgqr", "tau"): lambda: torch.orgqr(_qa, tau=_qt),
    ("torch", "ormqr", "tau"): lambda: torch.ormqr(_qa, tau=_qt, other=_sq),
    ("torch", "searchsorted", "values"): lambda: torch.searchsorted(_t2[0].sort().values, values=_t2[0]),
    ("torch", "set_num_threads", "int"): lambda: torch.set_num_threads(int=torch.get_num_threads()),
    ("torch", "set_num_interop_threads", "int"): lambda: torch.set_num_interop_threads(int=1),
    ("torch", "result_type", "tensor1"): lambda: torch.result_type(tensor1=_t2, tensor2=_t2),
    ("torch", "triangular_solve", "b"): lambda: torch.triangular_solve(b=_sq[:, :1], A=_sq),
    ("torch", "true_divide", "dividend"): lambda: torch.true_divide(dividend=_t2, divisor=_t2),
    ("torch", "unsafe_split", "tensor"): lambda: torch.unsafe_split(tensor=_t2, split_size_or_sections=1),
}


def _audit():
    spec = importlib.util.spec_from_file_location(
        "signature_audit", Path(__file__).resolve().parents[1] / "tools" / "signature_audit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("key", sorted(DOC_ONLY), ids=lambda k: ".".join(k))
def test_docstring_names_torch_refuses(key):
    """The audit's errata are names torch's docstring gives and torch's own callable refuses by keyword."""
    area, name, param = key
    assert param in _audit()._DOC_ERRATA[(area, name)]
    with pytest.raises(TypeError):
        DOC_ONLY[key]()


def test_audit_has_no_renamed_or_moved_left():
    rows = _audit().audit()
    left = {(a, n): {p: k for p, k in g.items() if k in ("renamed", "moved", "opaque")} for a, n, g in rows}
    assert not {k: v for k, v in left.items() if v}
    mod = _audit()
    for (area, name), params in mod._TYPE_RESOLVED.items():  # each is a positional call in CALLS above
        assert any(c.startswith(f"{area}.{name}(") and "positional" in c for c in CALLS), (area, name, params)
