"""Elementwise arithmetic and math with numpy broadcasting."""
from __future__ import annotations

import numpy as np

from .._tensor_methods import TensorMethods
from .._validate import is_array_or_number
from .._op_dispatch import BOOL_SUBTRACTION
from .. import autograd as _ag
from ..autograd import Function
from . import _meta as M
from . import _samples as S
from ._util import float_of_bool, unbroadcast
from .registry import BadInput, Sample, register_op

_ONE_FLOP = M.per_output_element(1)
_DENSE_MIN = 1 << 14  # below this a copy of a scattered view saves less than it costs


def _bad_broadcast():
    return [BadInput((S.rand(3, 4), S.rand(5, 4)), {}, ValueError, "broadcast")]


def _clamp_samples():
    x = S.rand(3, 7)
    return [Sample((x,), {"min": -0.5, "max": 0.7}), Sample((S.rand(2, 5, 9),), {"min": 0.0}, "min only"),
            Sample((S.rand(*S.LARGE),), {"max": 0.1}, "max only")]


def _where_samples():
    rng = np.random.default_rng(5)
    return [Sample((rng.random((3, 7)) > 0.5, S.rand(3, 7), S.rand(3, 7, seed=1)), grad=(1, 2)),
            Sample((rng.random((4, 1)) > 0.5, S.rand(4, 6), S.rand(6, seed=1)), name="broadcast", grad=(1, 2))]


def _shape(x):
    return x.shape if isinstance(x, np.ndarray) else np.shape(x)


class _BinaryMathFunction(Function):
    """y = fn(a, b) with numpy broadcasting; the gradients grad_a / grad_b(g, a, b) are summed back to
    each input's shape. Only what the gradients asked for read is saved (``reads``: what grad_a and
    grad_b read of a and b), as torch's: x * c with a constant c keeps c, not x, so an in-place change of
    x is then no error at backward. Ops whose gradients do not read the inputs (add, sub) keep only their
    shapes, so the graph does not hold their arrays alive."""

    keeps_inputs = True
    reads = ("ab", "ab")
    keeps = None  # keeps[needs a's gradient][needs b's gradient] = (keep a, keep b), from reads (_binary)
    square = False  # grad_a(g, x, x) == grad_b(g, x, x): x op x may send x one summed gradient (mul)

    @staticmethod
    def fn(a, b):  # pragma: no cover - set per op
        raise NotImplementedError

    @staticmethod
    def forward(ctx, a, b):
        cls = type(ctx)
        ctx.shapes = (_shape(a), _shape(b))
        if cls.keeps_inputs:
            needs = ctx.needs_input_grad
            keep_a, keep_b = cls.keeps[needs[0]][needs[1]]
            ctx.save_for_backward(a if keep_a else None, b if keep_b else None)
        if a is b and type(a) is np.ndarray and a.size >= _DENSE_MIN and not (a.flags.c_contiguous
                                                                              or a.flags.f_contiguous):
            # one array read twice (x * x on an overlapping window view): numpy walks a scattered view in short
            # runs, so it is copied once and the copy read by forward and backward. The view stays saved, for
            # the in-place write check.
            a = b = np.ascontiguousarray(a)
            if cls.keeps_inputs and (keep_a or keep_b):
                ctx.dense = a
        return cls.fn(a, b)

    @staticmethod
    def backward(ctx, g):
        cls = type(ctx)
        a, b = ctx.saved_tensors if cls.keeps_inputs else (None, None)
        dense = ctx.__dict__.get("dense")
        if dense is not None:
            a = b = dense
            if cls.square and all(ctx.needs_input_grad[:2]) and ctx.parents[0] is ctx.parents[1] and not _ag._rebound:
                # x * x: both gradients are g * x and the engine would add them; g * x + g * x == 2 * (g * x)
                # exactly, so one product, doubled in place, goes to x once (one 4-byte pass and array fewer)
                ga = unbroadcast(g * a, ctx.shapes[0])
                if type(ga) is np.ndarray and ga.flags.owndata and ga.flags.writeable:
                    return np.add(ga, ga, out=ga), None
                return ga + ga, None
        sa, sb = ctx.shapes
        return (unbroadcast(cls.grad_a(g, a, b), sa) if ctx.needs_input_grad[0] else None,
                unbroadcast(cls.grad_b(g, a, b), sb) if ctx.needs_input_grad[1] else None)


def _keeps(reads, names="ab"):
    """keeps[needs a's gradient][needs b's gradient]: whether each of ``names`` is read by the gradients
    asked for, from ``reads`` (what a's and b's gradients read). A table: forward looks it up per call."""
    return tuple(tuple(tuple(c in (reads[0] if na else "") + (reads[1] if nb else "") for c in names)
                       for nb in (False, True)) for na in (False, True))


def _binary_inference(fn):
    """The no-graph kernel of a binary op: its forward without the context (no shapes or inputs kept)."""
    def run(a, b):
        if a is b and type(a) is np.ndarray and a.size >= _DENSE_MIN and not (a.flags.c_contiguous
                                                                              or a.flags.f_contiguous):
            a = b = np.ascontiguousarray(a)  # (as forward: a scattered view read twice is copied once)
        return fn(a, b)
    return run


def _binary(name, fn, grad_a, grad_b, keeps_inputs=True, reads=("ab", "ab"), make_b=S.rand, **fields):
    """Define and register the Function of a broadcasting two-input op from its formula and gradients."""
    fields.setdefault("inference", {"cpu": _binary_inference(fn)})
    title = name.title()
    cls = type(f"{title}Function", (_BinaryMathFunction,), {
        "__module__": __name__, "__qualname__": f"{title}Function", "__doc__": f"{name}(a, b) with broadcasting.",
        "fn": staticmethod(fn), "grad_a": staticmethod(grad_a), "grad_b": staticmethod(grad_b),
        "keeps_inputs": keeps_inputs, "reads": reads, "keeps": _keeps(reads)})
    return register_op(name, meta=M.broadcast, flops=_ONE_FLOP, samples=S.binary(make_b),
                       torch=lambda torch, a, b: getattr(torch, name)(a, b), bad_inputs=_bad_broadcast, **fields)(cls)


# name, y = fn(a, b), dL/da and dL/db from (g, a, b) before unbroadcasting (and what each reads of a, b)
AddFunction = _binary("add", np.add, lambda g, a, b: g, lambda g, a, b: g, keeps_inputs=False)
def _subtract(a, b):
    """a - b; a bool operand (tensor or Python bool) raises, as torch's (numpy would count it as 0/1)."""
    if getattr(a, "dtype", None) == np.bool_ or getattr(b, "dtype", None) == np.bool_ or isinstance(
            a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        raise RuntimeError(BOOL_SUBTRACTION)
    return np.subtract(a, b)


SubFunction = _binary("sub", _subtract, lambda g, a, b: g, lambda g, a, b: -g, keeps_inputs=False)
MulFunction = _binary("mul", np.multiply, lambda g, a, b: g * b, lambda g, a, b: g * a, reads=("b", "a"))
MulFunction.square = True
DivFunction = _binary("div", np.divide, lambda g, a, b: g / b, lambda g, a, b: -g * a / (b * b), reads=("b", "ab"),
                      make_b=S.positive, tol=(2e-5, 1e-5))


def _power(a, b):
    """np.power, with torch's integer rule for a tensor of negative integer exponents (numpy refuses them): 1 for a
    base 1, +-1 for a base -1 (by the exponent's parity) and 0 otherwise."""
    if not (isinstance(b, np.ndarray) and b.dtype.kind in "iu" and np.asarray(a).dtype.kind in "iub" and (b < 0).any()):
        if not isinstance(b, np.ndarray) and b == -0.5 and np.asarray(a).dtype.kind == "f":
            return 1 / np.sqrt(a)  # torch's rsqrt for this exponent: NaN at -inf, -inf at -0.0 (IEEE pow: 0, inf)
        return np.power(a, b)
    pos = np.power(a, np.where(b < 0, 0, b))
    neg = np.where(a == 1, 1, np.where(a == -1, np.where(b % 2 == 0, 1, -1), 0))
    return np.where(b < 0, neg, pos).astype(pos.dtype)


@register_op("pow", meta=M.broadcast, flops=M.per_output_element(4),
             samples=lambda: [Sample((S.positive(3, 7), S.rand(3, 7, seed=1))),
                              Sample((S.positive(4, 5), S.rand(5, seed=2)), name="broadcast"),
                              Sample((S.rand(3, 7), 2.0), name="square"), Sample((S.positive(2, 3), 0.5), name="root")],
             torch=lambda torch, a, b: torch.pow(a, b), bad_inputs=_bad_broadcast, tol=(2e-5, 1e-5))
class PowFunction(Function):
    """a ** b for a tensor a and a tensor or scalar exponent b."""

    @staticmethod
    def forward(ctx, a, b):
        if not is_array_or_number(b):
            raise TypeError(f"pow: the exponent must be a tensor or a number, got {type(b).__name__} {b!r:.60}")
        y = _power(a, b)
        # y is read by the exponent's gradient only: x ** 2 keeps x, not its result (as torch's)
        ctx.save_for_backward(a, b, y if ctx.needs_input_grad[1] else None)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        ga = gb = None
        # torch's pow_backward: 0 where the exponent is 0 (also for a = 0 or NaN), and for the exponent
        # y * log(a), 0 where a = 0 and b >= 0 (NaN for a < 0, +-inf for a = 0 and b < 0)
        if ctx.needs_input_grad[0]:
            bm1 = np.subtract(b, 1, dtype=g.dtype) if not isinstance(b, np.ndarray) else b - 1
            ga = g * b * _power(a, bm1)
            if isinstance(b, np.ndarray):
                ga = np.where(b == 0, ga.dtype.type(0), ga)
            elif b == 0:
                ga = np.zeros_like(ga)
            ga = unbroadcast(ga, _shape(a))
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (y * np.log(a)).astype(g.dtype, copy=False)
            t = np.where((a == 0) & (b >= 0), t.dtype.type(0), t)
            gb = unbroadcast(g * t, _shape(b))
        return ga, gb


class _UnaryMathFunction(Function):
    """y = fn(a) elementwise, with the gradient grad(g, a, y): the pointwise ops below are one table row
    each (their Function classes are made from it). Only what the gradient reads is saved (``reads``: "a",
    "y", both or neither), as torch's: an in-place change of the other is then no error at backward."""

    reads = "ay"

    @staticmethod
    def fn(a):  # pragma: no cover - set per op
        raise NotImplementedError

    @staticmethod
    def grad(g, a, y):  # pragma: no cover - set per op
        raise NotImplementedError

    @staticmethod
    def forward(ctx, a):
        cls = type(ctx)
        y = cls.fn(a)
        ctx.save_for_backward(a if "a" in cls.reads else None, y if "y" in cls.reads else None)
        return y

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        return type(ctx).grad(g, a, y)


def _unary(name, fn, grad, reads, flops, make=S.rand):
    """Define and register the Function of a pointwise op from its formula and gradient."""
    title = "".join(part.title() for part in name.split("_"))
    cls = type(f"{title}Function", (_UnaryMathFunction,), {
        "__module__": __name__, "__qualname__": f"{title}Function", "__doc__": f"{name}(a) elementwise.",
        "fn": staticmethod(fn), "grad": staticmethod(grad), "reads": reads})
    return register_op(name, meta=M.same, flops=M.per_output_element(flops), samples=S.unary(make),
                       torch=lambda torch, a: getattr(torch, name)(a))(cls)


def _sgn(a):
    """sign(a) with torch's 0 at NaN ((0 < a) - (a < 0)): abs's gradient at NaN is g * 0."""
    s = np.sign(a)
    if s.dtype.kind == "f":
        nan = np.isnan(s)
        if nan.any():
            s[nan] = 0
    return s


# name, y = fn(a), dL/da from (g, a, y), what that reads of a and y, FLOPs per element, samples
NegFunction = _unary("neg", np.negative, lambda g, a, y: -g, "", 1)
ExpFunction = _unary("exp", float_of_bool(np.exp), lambda g, a, y: g * y, "y", 4)
LogFunction = _unary("log", float_of_bool(np.log), lambda g, a, y: g / a, "a", 4, S.positive)
SqrtFunction = _unary("sqrt", float_of_bool(np.sqrt), lambda g, a, y: g / (2 * y), "y", 1, S.positive)
AbsFunction = _unary("abs", np.abs, lambda g, a, y: g * _sgn(a), "a", 1)
SinFunction = _unary("sin", float_of_bool(np.sin), lambda g, a, y: g * np.cos(a), "a", 4)
CosFunction = _unary("cos", float_of_bool(np.cos), lambda g, a, y: -g * np.sin(a), "a", 4)


def _clamp_promotes(a, lo, hi) -> bool:
    """Whether clamp's result is float32 for an integer / bool input: a float bound promotes (torch)."""
    return np.dtype(a.dtype).kind in "biu" and any(
        np.dtype(getattr(b, "dtype", type(b))).kind == "f" for b in (lo, hi) if b is not None)


@register_op("clamp", meta=lambda a, min=None, max=None: M.MetaArray(
                 a.shape, np.float32 if _clamp_promotes(a, min, max) else a.dtype),
             flops=M.per_output_element(2), samples=_clamp_samples,
             torch=lambda torch, a, min=None, max=None: torch.clamp(a, min, max),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {}, ValueError, "min or max")])
class ClampFunction(Function):
    """clamp(a, min, max); the gradient passes where min <= a <= max (torch's convention)."""

    @staticmethod
    def forward(ctx, a, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp: at least one of min or max must be given")
        # tensor bounds (keywords: apply unwraps positional tensors only) as their arrays
        min, max = (b.numpy() if isinstance(b, TensorMethods) else b for b in (min, max))
        for bound, name in ((min, "min"), (max, "max")):  # numpy would drop an imaginary part
            if isinstance(bound, (complex, np.complexfloating)) or getattr(bound, "dtype", None) is not None \
                    and np.dtype(bound.dtype).kind == "c":
                raise TypeError(f"clamp: {name} must be a real number, got {bound!r}")
            if bound is not None and not is_array_or_number(bound, real=True):
                raise TypeError(f"clamp: {name} must be a number or a tensor, got {type(bound).__name__} {bound!r:.60}")
        given = a
        if _clamp_promotes(a, min, max):  # clamp(int tensor, 0.5) is float, as in torch, not truncated
            a = a.astype(np.float32)
        elif a.dtype.kind == "b" and any(not isinstance(b, (bool, np.bool_)) and np.dtype(
                getattr(b, "dtype", type(b))).kind in "iu" for b in (min, max) if b is not None):
            a = a.astype(np.int64)  # clamp(bool tensor, 1) is int64, torch's promotion
        y = np.clip(a, min, max)
        mask = np.ones(a.shape, dtype=bool)
        if min is not None:
            mask &= a >= min
        if max is not None:
            mask &= a <= max
        # torch's backward reads the input and tensor bounds: it refuses them written in place since (the
        # mask is what this backward reads; they are kept for that check only, and their tensors hold them)
        ctx.save_for_backward(mask, given, *(b for b in (min, max) if isinstance(b, np.ndarray)))
        return y.astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        mask = ctx.saved_tensors[0]
        return g * mask


@register_op("where", meta=lambda cond, a, b: M.MetaArray(M.broadcast(cond, a, b).shape, M.broadcast(a, b).dtype),
             flops=M.no_flops, samples=_where_samples, torch=lambda torch, cond, a, b: torch.where(cond, a, b),
             bad_inputs=lambda: [BadInput((np.ones((3, 4), bool), S.rand(3, 4), S.rand(5, 4)), {}, ValueError,
                                          "broadcast")])
class WhereFunction(Function):
    """where(cond, a, b): cond is a bool array (not differentiable)."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        ctx.shapes = (_shape(a), _shape(b))
        out = np.where(cond, a, b)
        if out.dtype == np.float64 and not any(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in (a, b)):
            out = out.astype(np.float32)  # a Python float branch does not promote (torch)
        return out

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        sa, sb = ctx.shapes
        ga = unbroadcast(np.where(cond, g, 0).astype(g.dtype), sa) if ctx.needs_input_grad[1] else None
        gb = unbroadcast(np.where(cond, 0, g).astype(g.dtype), sb) if ctx.needs_input_grad[2] else None
        return None, ga, gb


# ---- cuda ------------------------------------------------------------------------------------------------
# The same ops on DeviceArrays through the broadcasting kernels of cuda/binary.cu (one launch per op,
# gradients summed back to each input's shape by the reduction kernel). Python numbers stay scalars.
# The comparisons (ops.compare) register here too, as they share the kernel file.
from . import _cuda_nn as CN  # noqa: E402

# name -> (grad_a(g, a, b, y), grad_b(g, a, b, y)) before summing to the input shapes
_CUDA_BINARY_GRADS = {
    "add": (lambda g, a, b, y: g, lambda g, a, b, y: g),
    "sub": (lambda g, a, b, y: g, lambda g, a, b, y: CN.pw("neg", g)),
    "mul": (lambda g, a, b, y: CN.pw("mul", g, b), lambda g, a, b, y: CN.pw("mul", g, a)),
    "div": (lambda g, a, b, y: CN.pw("div", g, b), lambda g, a, b, y: CN.pw("div_grad_b", g, a, b)),
    "pow": (lambda g, a, b, y: CN.pw("pow_grad_a", g, a, b), lambda g, a, b, y: CN.pw("pow_grad_b", g, y, a)),
}


class _BinaryCudaFunction(Function):
    """a <op> b on cuda with broadcasting, from class attributes: ``kernel`` (the pointwise kernel's name),
    ``grads`` ((grad_a, grad_b) of (g, a, b, y); grad_b None: b has no gradient) and ``keeps`` (a _keeps
    table of what the gradients asked for read: a, b and y, as the CPU Functions save). Either input may be
    a number (a scalar of the kernel)."""

    kernel = grads = keeps = None

    @staticmethod
    def forward(ctx, a, b):
        cls = type(ctx)
        ctx.shapes = (CN.shape_of(a), CN.shape_of(b))
        y = CN.pw(cls.kernel, a, b)
        needs = ctx.needs_input_grad
        keep_a, keep_b, keep_y = cls.keeps[needs[0]][needs[1]]
        ctx.save_for_backward(a if keep_a and CN.is_array(a) else None, b if keep_b and CN.is_array(b) else None,
                              y if keep_y else None)
        ctx.scalars = (None if CN.is_array(a) else a, None if CN.is_array(b) else b)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        a = ctx.scalars[0] if a is None else a
        b = ctx.scalars[1] if b is None else b
        grad_a, grad_b = type(ctx).grads
        needs = ctx.needs_input_grad  # (False for a number)
        return (CN.sum_to(grad_a(g, a, b, y), ctx.shapes[0]) if needs[0] else None,
                CN.sum_to(grad_b(g, a, b, y), ctx.shapes[1]) if needs[1] and grad_b is not None else None)


def cuda_binary_function(op, kernel, grads, reads=("", "")) -> None:
    """Register ``op``'s cuda Function: ``kernel`` over broadcast inputs, ``grads`` as _BinaryCudaFunction's,
    ``reads``: what a's and b's gradients read of "a", "b" and "y"."""
    title = "".join(part.title() for part in op.name.split("_"))
    op.add_device("cuda", type(f"{title}CudaFunction", (_BinaryCudaFunction,), {
        "__module__": __name__, "__doc__": f"{op.name} on cuda.", "kernel": kernel, "grads": grads,
        "keeps": _keeps(reads, "aby")}))


# name -> what (grad_a, grad_b) above read of a, b and y
_CUDA_BINARY_READS = {"add": ("", ""), "sub": ("", ""), "mul": ("b", "a"), "div": ("b", "ab"), "pow": ("ab", "ay")}

for _fn in (AddFunction, SubFunction, MulFunction, DivFunction, PowFunction):
    cuda_binary_function(_fn.op, _fn.op.name, _CUDA_BINARY_GRADS[_fn.op.name], _CUDA_BINARY_READS[_fn.op.name])

# name -> gradient from (g, a, y)
_CUDA_UNARY_GRADS = {
    "neg": lambda g, a, y: CN.pw("neg", g),
    "exp": lambda g, a, y: CN.pw("mul", g, y),
    "log": lambda g, a, y: CN.pw("div", g, a),
    "sqrt": lambda g, a, y: CN.pw("sqrt_grad", g, y),
    "abs": lambda g, a, y: CN.pw("abs_grad", g, a),
    "sin": lambda g, a, y: CN.pw("sin_grad", g, a),
    "cos": lambda g, a, y: CN.pw("cos_grad", g, a),
}


class _UnaryCudaFunction(Function):
    """fn(a) elementwise on cuda; saves what the CPU Function does (its ``reads``)."""

    @staticmethod
    def forward(ctx, a):
        y = CN.pw(type(ctx).op.name, a)
        reads = type(ctx).reads
        ctx.save_for_backward(a if "a" in reads else None, y if "y" in reads else None)
        return y

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        return _CUDA_UNARY_GRADS[type(ctx).op.name](g, a, y)


for _fn in (NegFunction, ExpFunction, LogFunction, SqrtFunction, AbsFunction, SinFunction, CosFunction):
    _fn.op.add_device("cuda", type(f"{_fn.__name__[:-8]}CudaFunction", (_UnaryCudaFunction,),
                                   {"__module__": __name__, "__doc__": f"{_fn.op.name} on cuda.",
                                    "reads": _fn.reads}))


class ClampCudaFunction(Function):
    """clamp on cuda (float32); the gradient passes where min <= a <= max, as on the CPU."""

    @staticmethod
    def forward(ctx, a, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp: at least one of min or max must be given")
        lo, hi = CN.scalar_or_nan(min), CN.scalar_or_nan(max)
        ctx.save_for_backward(a, lo if CN.is_array(lo) else None, hi if CN.is_array(hi) else None)
        ctx.bounds = (lo, hi)
        return CN.pw("clamp", a, lo, hi, shape=a.shape)

    @staticmethod
    def backward(ctx, g):
        a, lo_arr, hi_arr = ctx.saved_tensors
        lo, hi = ctx.bounds
        return CN.pw("clamp_grad", g, a, lo if lo_arr is None else lo_arr, hi if hi_arr is None else hi_arr,
                     shape=g.shape)


ClampFunction.op.add_device("cuda", ClampCudaFunction)


class WhereCudaFunction(Function):
    """where(cond, a, b) on cuda: cond a bool DeviceArray, a / b DeviceArrays or numbers."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        ctx.shapes = (CN.shape_of(a), CN.shape_of(b))
        return CN.kernels().where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        sa, sb = ctx.shapes
        needs = ctx.needs_input_grad
        ga = CN.sum_to(CN.kernels().where(cond, g, 0.0), sa) if needs[1] else None
        gb = CN.sum_to(CN.kernels().where(cond, 0.0, g), sb) if needs[2] else None
        return None, ga, gb


WhereFunction.op.add_device("cuda", WhereCudaFunction)


def _register_compare_cuda():
    from .compare import COMPARISONS, CompareFunction

    class CompareCudaFunction(Function):
        """a <op> b on cuda (float32 inputs or numbers) -> a bool DeviceArray."""

        non_differentiable_outputs = (0,)

        @staticmethod
        def forward(ctx, a, b, op="lt"):
            if op not in COMPARISONS:
                raise ValueError(f"Compare: op must be one of {sorted(COMPARISONS)}, got {op!r}")
            return CN.kernels().compare(op, a, b)

        @staticmethod
        def backward(ctx, g):  # pragma: no cover - the bool output never reaches backward
            return None, None

    CompareFunction.op.add_device("cuda", CompareCudaFunction)


_register_compare_cuda()
