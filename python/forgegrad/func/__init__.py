"""forgegrad.func: torch.func's composable transforms (grad, grad_and_value, vjp, jvp, linearize, jacrev,
jacfwd, hessian, vmap), functional_call, stack_module_state and replace_all_batch_norm_modules_, with torch
2.13's names and arguments.

Built on forgegrad's reverse-mode autograd (see _transforms.py); vmap runs the function once on batched values
whose ops go to batching rules (_batched.py, _batch_rules.py), falling back to one call per batch element
(see _vmap.py), so per-sample gradients are one forward and one backward over the batch. Not here:
functionalize, debug_unwrap.
"""
from ._functional_call import functional_call, replace_all_batch_norm_modules_, stack_module_state
from ._transforms import grad, grad_and_value, hessian, jacfwd, jacrev, jvp, linearize, vjp
from ._vmap import vmap

__all__ = ["functional_call", "stack_module_state", "replace_all_batch_norm_modules_", "grad", "grad_and_value", "vjp",
           "jvp", "linearize", "jacrev", "jacfwd", "hessian", "vmap"]
