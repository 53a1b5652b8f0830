"""forgegrad.ops: every differentiable op, one record each in the op registry (ops.registry).

``forgegrad.ops.get(name)`` returns an op's record; calling it runs the op on Tensors.
``forgegrad.ops.all_ops()`` lists them (``forgegrad ops`` prints the table). The op files group
related ops; each op's Function, shape rule, kernels, reference and samples sit together there.
"""
from .registry import BadInput, OpDef, Sample, all_ops, get, of_function, register_op
from . import activation, compare, conv, elementwise, linalg, loss, reduce, rnn, shape, stats  # noqa: F401,E402

__all__ = ["OpDef", "Sample", "BadInput", "register_op", "get", "all_ops", "of_function"]
