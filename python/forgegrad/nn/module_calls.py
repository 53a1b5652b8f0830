"""Which module is running: :class:`ModuleCallStack` follows the calls of a model's modules while it runs (used by
``Module.summary`` and the ONNX exporter); :class:`ModuleCall` is one running call."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from ..tensor import Tensor
from .module import Module

class ModuleCall:
    """One running call of a module: its dotted path in the root model, the module and its arguments."""

    __slots__ = ("path", "module", "args", "kwargs")

    def __init__(self, path: str, module: Module, args: tuple, kwargs: dict):
        self.path, self.module, self.args, self.kwargs = path, module, args, kwargs

    @property
    def type_name(self) -> str:
        return type(self.module).__name__

    def input_shapes(self) -> List[Tuple[int, ...]]:
        return [tuple(a.shape) for a in list(self.args) + list(self.kwargs.values()) if isinstance(a, Tensor)]

    def describe(self) -> str:
        """e.g. "module 'features.0' (Conv2d) on inputs of shape (7, 3, 28, 28)"."""
        name = f"module {self.path!r} ({self.type_name})" if self.path else f"the model ({self.type_name})"
        shapes = self.input_shapes()
        if not shapes:
            return name
        return name + " on input" + ("s" if len(shapes) > 1 else "") + " of shape " + ", ".join(map(str, shapes))


class ModuleCallStack:
    """Follows which modules run while a model runs: ``with ModuleCallStack(model) as calls: model(x)``.

    Every Module call pushes a :class:`ModuleCall` on ``calls.stack`` while it runs (``calls.current``
    is the innermost, or None outside any module); paths are those of ``model.named_modules()``
    ("" for the model itself). ``on_enter(call)`` and ``on_exit(call, output)`` are called around
    every call, and ``calls.failed`` is the call an exception was raised in (the innermost one it
    left). ``Module.summary`` attributes FLOPs and output shapes with it, the ONNX exporter names the
    module an op or a failure comes from. It replaces ``Module.__call__`` only while active, so
    ordinary calls pay nothing for it.
    """

    def __init__(self, model=None, on_enter: Optional[Callable[[ModuleCall], Any]] = None,
                 on_exit: Optional[Callable[[ModuleCall, Any], Any]] = None):
        self.paths = {id(m): p for p, m in model.named_modules()} if isinstance(model, Module) else {}
        self.on_enter, self.on_exit = on_enter, on_exit
        self.stack: List[ModuleCall] = []
        self.failed: Optional[ModuleCall] = None
        self._failed_error = None

    @property
    def current(self) -> Optional[ModuleCall]:
        return self.stack[-1] if self.stack else None

    def __enter__(self) -> "ModuleCallStack":
        original = self._original = Module.__call__
        stack, paths = self.stack, self.paths

        def call(module, *args, **kwargs):
            frame = ModuleCall(paths.get(id(module), f"<unregistered {type(module).__name__}>"), module, args, kwargs)
            stack.append(frame)
            try:
                if self.on_enter is not None:
                    self.on_enter(frame)
                out = original(module, *args, **kwargs)
                if self.on_exit is not None:
                    self.on_exit(frame, out)
                return out
            except BaseException as e:
                if e is not self._failed_error:  # the innermost call sees the error first
                    self._failed_error, self.failed = e, frame
                raise
            finally:
                stack.pop()

        Module.__call__ = call
        return self

    def __exit__(self, *exc) -> bool:
        Module.__call__ = self._original
        return False
