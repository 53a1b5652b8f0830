"""forgegrad.nn.utils: gradient clipping, pruning (``nn.utils.prune``) and
shrinking structurally pruned layers (``nn.utils.shrink``), with torch.nn.utils' names."""
from . import prune, shrink, sparse_storage
from .clip_grad import clip_grad_norm_, clip_grad_value_

__all__ = ["clip_grad_norm_", "clip_grad_value_", "prune", "shrink", "sparse_storage"]
