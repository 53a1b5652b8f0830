"""forgegrad.optim: optimizers and learning-rate schedulers with torch.optim's names and math.

Every update is one fused, multithreaded C++ pass over parameter, gradient and state
(forgegrad.kernels.optim), bit-identical for any thread count.
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
