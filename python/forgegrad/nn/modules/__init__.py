"""torch.nn.modules' layout for code that imports from it: ``forgegrad.nn.modules.module`` holds Module and the
global module hooks (``register_module_forward_hook`` ...). The layers themselves live in forgegrad.nn."""
from . import module  # noqa: F401
from ..module import Module  # noqa: F401

__all__ = ["Module", "module"]
