"""torch.utils's layout: ``forgegrad.utils.data`` is forgegrad.data (Dataset, DataLoader, ...);
``forgegrad.utils.checkpoint`` is activation checkpointing; ``forgegrad.utils.hooks`` holds RemovableHandle."""
from . import checkpoint, data, hooks

__all__ = ["checkpoint", "data", "hooks"]
