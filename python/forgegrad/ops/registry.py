"""The op registry: one record per op, found by the op's name.

A record (:class:`OpDef`) holds everything forgegrad knows about an op:

- ``function``: its autograd rule on CPU arrays (a :class:`forgegrad.autograd.Function` whose
  ``forward``/``backward`` call the C++ kernels), and ``functions`` for other devices;
- ``inference``: per device, the kernel that computes the forward alone when no graph is recorded
  (``no_grad`` and no trace): the inference shortcut, taken inside ``Function.apply`` for every op;
- ``meta``: its shape rule (output shapes and dtypes from input shapes; the ``meta`` device runs it
  instead of a kernel) and ``flops``: its cost, for ``Module.summary``;
- ``onnx``: its ONNX mapping (``fn(ctx, op) -> [value names]``, see forgegrad.onnx.mappings);
- ``epilogue``: for an activation, its kernel code (``(code, alpha)`` from the op's keyword
  arguments) that a Linear kernel applies in its output pass (nn.Sequential, nn.Dense);
- ``functional``: its ``torch.nn.functional``-style entry point (nn.functional serves it by name);
- ``differentiable_backward``: its backward rule written with Tensor ops (so it records a graph), which a
  pass with ``create_graph=True`` runs instead of the array rule (double backward; the rules sit in one
  table, ops/_double_backward.py); None: such a pass refuses the op;
- ``samples``, ``torch``, ``bad_inputs``: sample inputs, the PyTorch reference and bad inputs with
  the error they must raise, from which tests/test_op_registry.py generates every check (forward
  and gradients against torch, both again in float64 against torch's float64, bits at 1-3
  threads, every SIMD path, ONNX in onnxruntime, meta shapes, errors); ``gaps`` names a check
  that does not apply and says why.

Modules, ``nn.functional``, Tensor methods and the exporter reach an op through its record::

    relu = forgegrad.ops.get("relu")
    y = relu(x)                # == ReluFunction.apply(x)

Adding an op: write its Function and decorate it with ``@register_op("name", ...)`` (see the README's
Development section for the whole recipe).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..devices import MetaArray

__all__ = ["OpDef", "Sample", "BadInput", "register_op", "get", "all_ops", "of_function", "CHECKS",
           "count_flops"]

# The generated checks, in the order the coverage table prints them.
CHECKS = ("forward", "backward", "float64", "threads", "isa", "onnx", "meta", "errors")


@dataclasses.dataclass
class Sample:
    """One call of an op: positional ``args`` (numpy arrays stand for tensors) and ``kwargs``.

    ``grad``: positions of the args whose gradient is checked (default: every float32 array).
    ``torch_kwargs``: keyword arguments for the torch reference when they differ from ``kwargs``.
    """

    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    name: str = ""
    grad: Optional[Tuple[int, ...]] = None
    onnx: bool = True  # False: this sample is outside what the ONNX mapping supports (said in `name`)

    def grad_positions(self) -> Tuple[int, ...]:
        if self.grad is not None:
            return self.grad
        return tuple(i for i, a in enumerate(self.args) if isinstance(a, np.ndarray) and a.dtype == np.float32)


@dataclasses.dataclass
class BadInput:
    """A call that must raise ``error`` with a message matching ``match`` (which names the argument)."""

    args: tuple
    kwargs: dict
    error: type
    match: str


@dataclasses.dataclass(eq=False)
class OpDef:
    """The record of one op. See the module docstring for the fields."""

    name: str
    function: type
    inference: Dict[str, Callable] = dataclasses.field(default_factory=dict)
    meta: Optional[Callable] = None
    flops: Optional[Callable] = None
    onnx: Optional[Callable] = None
    samples: Optional[Callable[[], List[Sample]]] = None
    torch: Optional[Callable] = None
    bad_inputs: Optional[Callable[[], List[BadInput]]] = None
    gaps: Dict[str, str] = dataclasses.field(default_factory=dict)
    tol: Tuple[float, float] = (1e-5, 1e-5)
    functions: Dict[str, type] = dataclasses.field(default_factory=dict)
    functional: Optional[Callable] = None  # its torch.nn.functional-style entry point, served by nn.functional
    # elementwise ops a GEMM can apply in its output pass: fn(**op kwargs) -> (kernel code, alpha)
    epilogue: Optional[Callable[..., Tuple[int, float]]] = None
    # the Function that runs the op on float64 arrays (numpy; set by ops._float64), None: float32 only
    float64: Optional[type] = None
    # positions of array arguments that stay float32 when the op runs in float64 (torch takes only
    # float32 there: fake_quantize_per_channel_affine's scale); the float64 check converts the others
    float32_args: Tuple[int, ...] = ()
    # rule(ctx, args, kwargs, *grads) -> one Tensor gradient (or None) per positional argument, computed with
    # Tensor ops from the forward's arguments (Tensors as recorded) and the output gradients (Tensors)
    differentiable_backward: Optional[Callable] = None

    def __post_init__(self):
        # ``apply``: the op without __call__'s argument check, for callers whose tensor arguments are Tensors or
        # numbers already (Tensor's operators and methods)
        self.apply = self.function.apply
        self.functions = {"cpu": self.function, **self.functions}
        self.inference, self.gaps = dict(self.inference), dict(self.gaps)
        unknown = set(self.gaps) - set(CHECKS)
        if unknown:
            raise ValueError(f"op {self.name!r}: gaps name unknown checks {sorted(unknown)}; checks are {CHECKS}")

    def add_device(self, device: str, function: type) -> None:
        """Run this op on ``device`` with ``function`` (its forward/backward take that device's arrays,
        and return that device's arrays: gradients in their input's dtype). Its no-graph kernel is
        ``set_inference(device, kernel)`` (without one, no_grad runs ``function.forward``)."""
        self.functions[device] = function
        function.op = self
        function.inference = self.inference.get(device)

    def remove_device(self, device: str) -> None:
        """Undo add_device (and set_inference) for ``device``."""
        if device == "cpu":
            raise ValueError(f"op {self.name!r}: the cpu Function cannot be removed")
        self.functions.pop(device, None)
        self.inference.pop(device, None)

    def set_inference(self, device: str, kernel: Callable) -> None:
        """Install the no-graph forward kernel of this op on ``device`` (same arguments as forward)."""
        self.inference[device] = kernel
        fn = self.functions.get(device)
        if fn is not None:
            fn.inference = kernel

    def __call__(self, *args, **kwargs):
        """Run the op on Tensors (the device is that of the tensor arguments)."""
        positions = self._operand_positions
        if positions is None:
            positions = self._find_operand_positions()
        n = len(args)
        number = tensor = None
        arrays = False
        for i, name in positions:
            if i < n:
                a = args[i]
                if not isinstance(a, _TENSOR_LIKE) and a is not None:
                    raise TypeError(f"{self.name}: argument {name!r} must be a forgegrad.Tensor (or a number), got "
                                    f"{type(a).__name__}")
                if isinstance(a, _NUMBERS):
                    number = number or (name, a)
                elif a is not None:
                    tensor = a
                    arrays = arrays or isinstance(a, np.ndarray)
        if arrays:  # numpy arrays as tensors of their dtype (no copy): torch's dtype rules apply to them too
            from ..tensor import Tensor
            operands = {i for i, _ in positions}
            args = tuple(Tensor._wrap_exact(a) if i in operands and isinstance(a, np.ndarray) else a
                         for i, a in enumerate(args))
        if number is not None and tensor is None:
            # numbers alone (sin(1.5), softmax(2.0, 0)): the kernels would read .dtype / .ndim of a float. (A number
            # beside a tensor is an operand: x // 2, 2 ** x through the Tensor operators.)
            raise TypeError(f"{self.name}: argument {number[0]!r} must be a forgegrad.Tensor, got "
                            f"{type(number[1]).__name__} (and no other argument is a tensor)")
        if number is None:
            return self.apply(*args, **kwargs)
        try:
            return self.apply(*args, **kwargs)
        except AttributeError as e:
            # A number beside a tensor: the pointwise ops broadcast it (x // 2, where(c, x, 0.0)), the others (matmul,
            # cat, the losses, conv, scatter ...) read its .shape / .dtype as the first thing they do. Which ops take
            # one is the op's own affair, so the one place that knows is the Function: its AttributeError on exactly
            # that number (e.obj) is turned into the TypeError torch raises ("argument 'other' must be Tensor, not
            # float"); any other AttributeError is a bug of the op and propagates unchanged.
            bad = _number_argument(e, args, positions)
            if bad is None:
                raise
            raise TypeError(f"{self.name}: argument {bad[0]!r} must be a forgegrad.Tensor, got {type(bad[1]).__name__} "
                            f"(this op takes no number there)") from None

    _tensor_positions = None
    _operand_positions = None

    def _find_tensor_positions(self, numbers: bool = False):
        """(position, parameter name) of the tensor arguments: where the samples pass arrays. numbers: also where
        some samples pass arrays and the others numbers (add's b: a tensor or a number; see _find_operand_positions)."""
        import inspect
        from ..tensor import Tensor
        global _TENSOR_LIKE
        _TENSOR_LIKE = (Tensor, np.ndarray, int, float, bool, complex, np.number)
        params = [p for p in inspect.signature(self.function.forward).parameters.values()][1:]
        # a tensor argument gets an array in every sample (or None, for an optional one)
        samples = self.samples() if self.samples else []
        found = set()
        for s in samples:
            found |= {i for i, a in enumerate(s.args) if isinstance(a, np.ndarray)}
        var_from = next((i for i, p in enumerate(params) if p.kind is p.VAR_POSITIONAL), None)
        taken = (np.ndarray, int, float, np.number) if numbers else np.ndarray
        found = {i for i in found if (var_from is not None and i >= var_from) or all(
            i < len(s.args) and (s.args[i] is None or isinstance(s.args[i], taken)) for s in samples)}
        names = []
        for i in sorted(found):
            if var_from is not None and i >= var_from:
                names.append((i, f"{params[var_from].name}[{i - var_from}]"))
            elif i < len(params):
                names.append((i, params[i].name))
        if not numbers:
            self._tensor_positions = tuple(names)
        return tuple(names)

    def _find_operand_positions(self):
        """(position, name) of the arguments the call checks to be a Tensor, an array or a number: the tensor
        arguments and those the samples give a tensor or a number (add(x, [1.5]) had been taken as an array)."""
        self._operand_positions = self._find_tensor_positions(numbers=True)
        return self._operand_positions

    def tensor_arguments(self):
        """(position, name) of the arguments that take tensors (used by the generated error checks)."""
        return self._tensor_positions if self._tensor_positions is not None else self._find_tensor_positions()

    @property
    def devices(self) -> Tuple[str, ...]:
        return tuple(self.functions) + (("meta",) if self.meta is not None else ())

    def onnx_mapping(self) -> Optional[Callable]:
        """The ONNX mapping: the record's own, else one registered in forgegrad.onnx.mappings."""
        if self.onnx is not None:
            return self.onnx
        from ..onnx import mappings  # imports onnx: only when exporting
        return mappings.REGISTRY.get(self.function)

    def meta_call(self, raw: Sequence[Any], kwargs: Dict[str, Any]):
        """Run the shape rule on meta arrays; returns meta arrays (a tuple for several outputs)."""
        if self.meta is None:
            raise NotImplementedError(f"op {self.name!r} has no shape rule, so it cannot run on the meta device")
        out = self.meta(*raw, **kwargs)
        counter = _flop_state.__dict__.get("counter")
        if counter is not None:
            counter(self, out, raw, kwargs)
        return out

    def __repr__(self) -> str:
        return f"<op {self.name} ({self.function.__qualname__})>"

    __hash__ = object.__hash__


def _number_argument(error: AttributeError, args: tuple, positions) -> Optional[Tuple[str, Any]]:
    """(name, value) of the number among ``args`` at ``positions`` whose attribute lookup raised ``error``."""
    obj = getattr(error, "obj", None)
    for i, name in positions:
        if i < len(args) and isinstance(args[i], _NUMBERS) and args[i] is obj:
            return name, args[i]
    return None


# What may stand at a tensor argument (numbers and numpy arrays are taken as constants); set on the
# first call, when Tensor exists (this module is imported while forgegrad.tensor is being defined).
_TENSOR_LIKE: tuple = ()
_NUMBERS = (int, float, bool, complex, np.number)  # (np.bool_ is no np.number: a 0-d bool array counts as a tensor)

_OPS: Dict[str, OpDef] = {}
_BY_FUNCTION: Dict[type, OpDef] = {}


def register_op(name: str, **fields) -> Callable[[type], type]:
    """Class decorator: ``@register_op("relu", meta=..., samples=..., torch=...)`` on a Function.

    The Function gets ``op`` (its record) and ``inference`` (its CPU no-graph kernel, or None)."""

    def deco(function: type) -> type:
        if name in _OPS:
            raise ValueError(f"op {name!r} is registered twice ({_OPS[name].function.__qualname__} and "
                             f"{function.__qualname__})")
        opdef = OpDef(name, function, **fields)
        _OPS[name] = opdef
        _BY_FUNCTION[function] = opdef
        function.op = opdef
        function.inference = opdef.inference.get("cpu")
        return function

    return deco


def get(name: str) -> OpDef:
    try:
        return _OPS[name]
    except KeyError:
        raise KeyError(f"no op named {name!r}; registered ops: {', '.join(sorted(_OPS))}") from None


def all_ops() -> List[OpDef]:
    return [_OPS[k] for k in sorted(_OPS)]


def of_function(function: type) -> Optional[OpDef]:
    return _BY_FUNCTION.get(function)


def functionals() -> Dict[str, Callable]:
    """The nn.functional entry points that op records provide, by their function name."""
    return {op.functional.__name__: op.functional for op in _OPS.values() if op.functional is not None}



# ---- FLOP counting on the meta device ---------------------------------------------------------------
_flop_state = threading.local()


class count_flops:
    """While active, every op run on the meta device reports ``(opdef, outputs, inputs, kwargs)`` to
    ``callback`` (``Module.summary`` attributes the FLOPs to the running module)."""

    def __init__(self, callback: Callable):
        self.callback = callback

    def __enter__(self):
        self._prev = _flop_state.__dict__.get("counter")
        _flop_state.counter = self.callback
        return self

    def __exit__(self, *exc):
        _flop_state.counter = self._prev
        return False


def is_meta(x) -> bool:
    return type(x) is MetaArray
