"""forgegrad.amp: torch.amp's autocast for CPU ops (forgegrad.autocast), in bfloat16 or float16 (autocast_mode.py),
and torch.amp.GradScaler for CPU gradients (grad_scaler.py)."""
from .autocast_mode import (autocast, get_autocast_dtype, is_autocast_available, is_autocast_enabled,
                            set_autocast_dtype, set_autocast_enabled)
from .grad_scaler import GradScaler

__all__ = ["autocast", "is_autocast_enabled", "get_autocast_dtype", "set_autocast_enabled", "set_autocast_dtype",
           "is_autocast_available", "GradScaler"]
