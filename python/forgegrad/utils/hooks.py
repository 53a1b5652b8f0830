"""torch.utils.hooks' names: RemovableHandle (what every ``register_*_hook`` returns) and BackwardHook (the full
backward hooks' machinery); both defined in forgegrad.nn.hooks."""
from ..nn.hooks import BackwardHook, RemovableHandle

__all__ = ["BackwardHook", "RemovableHandle"]
