"""torch.nn.modules.module's names: Module and the global module hooks (defined in forgegrad.nn.hooks)."""
from ..hooks import (RemovableHandle, register_module_forward_hook,  # noqa: F401
                     register_module_forward_pre_hook, register_module_full_backward_hook,
                     register_module_full_backward_pre_hook)
from ..module import Module  # noqa: F401

__all__ = ["Module", "RemovableHandle", "register_module_forward_pre_hook", "register_module_forward_hook",
           "register_module_full_backward_pre_hook", "register_module_full_backward_hook"]
