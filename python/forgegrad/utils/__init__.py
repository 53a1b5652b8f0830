"""torch.utils's layout: ``forgegrad.utils.data`` is forgegrad.data (Dataset, DataLoader, ...)."""
from . import data

__all__ = ["data"]
