"""forgegrad.func: torch.func's composable transforms (grad, grad_and_value, vjp, jvp, linearize, jacrev,
jacfwd, hessian, vmap), functional_call and stack_module_state, with torch 2.13's names and arguments.

Built on forgegrad's reverse-mode autograd (see _transforms.py); vmap runs the function once per batch element
(see _vmap.py), so per-sample gradients and ensembles cost one ordinary call per element. Not here: functionalize,
replace_all_batch_norm_modules_, debug_unwrap.
"""
from ._functional_call import functional_call, stack_module_state
from ._transforms import grad, grad_and_value, hessian, jacfwd, jacrev, jvp, linearize, vjp
from ._vmap import vmap

__all__ = ["functional_call", "stack_module_state", "grad", "grad_and_value", "vjp", "jvp", "linearize", "jacrev",
           "jacfwd", "hessian", "vmap"]
