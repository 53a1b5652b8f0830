"""forgegrad.nn.utils: gradient clipping, pruning (``nn.utils.prune``),
shrinking structurally pruned layers (``nn.utils.shrink``), with torch.nn.utils' names, and
``freeze`` (an inference copy with its Linear weights packed once for the GEMM)."""
from . import prune, shrink, sparse_storage, stateless
from .clip_grad import clip_grad_norm_, clip_grad_value_
from .freeze import freeze, is_frozen

__all__ = ["clip_grad_norm_", "clip_grad_value_", "freeze", "is_frozen", "prune", "shrink", "sparse_storage",
           "stateless"]
