"""forgegrad.nn.utils: gradient clipping and pruning (``nn.utils.prune``), with torch.nn.utils' names."""
from . import prune
from .clip_grad import clip_grad_norm_, clip_grad_value_

__all__ = ["clip_grad_norm_", "clip_grad_value_", "prune"]
