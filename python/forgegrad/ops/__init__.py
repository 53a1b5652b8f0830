"""forgegrad.ops: every differentiable op, one record each in the op registry (ops.registry).

``forgegrad.ops.get(name)`` returns an op's record; calling it runs the op on Tensors.
``forgegrad.ops.all_ops()`` lists them (``forgegrad ops`` prints the table). The modules of this
package group related ops; each op's Function, shape rule, kernels, reference and samples sit
together there, and every module (not starting with "_") is loaded by :func:`load_all` when
forgegrad is imported: adding an op module needs no list to be updated.
"""
import importlib
import pkgutil

from .registry import BadInput, OpDef, Sample, all_ops, get, of_function, register_op

__all__ = ["OpDef", "Sample", "BadInput", "register_op", "get", "all_ops", "of_function", "load_all"]


def load_all() -> None:
    """Import every op module of this package (each registers its ops)."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "registry":
            importlib.import_module(f"{__name__}.{info.name}")
    from . import _float64  # noqa: F401  (after every op: marks the ops that run in float64)
    from . import _cuda_math  # noqa: F401  (after every op: the cuda Functions of the pointwise math ops)
    from . import _double_backward  # noqa: F401  (after every op: their differentiable rules, for create_graph)
