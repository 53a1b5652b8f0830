"""torch.utils's layout: ``forgegrad.utils.data`` is forgegrad.data (Dataset, DataLoader, ...);
``forgegrad.utils.checkpoint`` is activation checkpointing."""
from . import checkpoint, data

__all__ = ["checkpoint", "data"]
