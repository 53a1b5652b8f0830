"""forgegrad.optim: optimizers and learning-rate schedulers with torch.optim's names and math.

SGD, Adam and AdamW update float32 parameters in one fused, multithreaded C++ pass over parameter,
gradient and state (forgegrad.kernels.optim), bit-identical for any thread count, and float64
parameters in numpy (torch's single-tensor math, in float64); Adagrad, RMSprop and Adadelta are
in-place numpy passes in the parameter's dtype, in torch's operation order; LBFGS works on the flat
parameter vector. State buffers have their parameter's dtype, as torch's. Each update is looked up
per device in forgegrad.optim.kernels, so parameters are updated where they live (a device adds its
updates there; LBFGS is CPU-only).
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .adaptive import Adadelta, Adagrad, RMSprop
from .lbfgs import LBFGS
from .optimizer import Optimizer
from .sgd import SGD
from .sparse_grads import SparseAdam

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "LBFGS", "SparseAdam", "lr_scheduler"]
