"""DataParallel as torch's runs it on a machine without accelerators: a wrapper that calls its module unchanged.

torch.nn.DataParallel replicates a module over the GPUs of one process; with no GPU (its CPU behaviour) it keeps
``.module`` and ``device_ids = []`` and forwards every call to the module as is. forgegrad's DataParallel is that
CPU behaviour everywhere: the module runs once, on whatever device its parameters are on (no replication over
several accelerators). Its state_dict keys carry the ``module.`` prefix, as torch's, so checkpoints move between
the two. For training over several processes use forgegrad.distributed.DistributedDataParallel.
"""
from __future__ import annotations

from .._args import is_int
from .module import Module

__all__ = ["DataParallel"]


class DataParallel(Module):
    """``DataParallel(module, device_ids=None, output_device=None, dim=0)``: ``forward`` is ``module(*args,
    **kwargs)``. ``device_ids`` and ``output_device`` are accepted and, as on torch's CPU path, not used."""

    def __init__(self, module, device_ids=None, output_device=None, dim: int = 0):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel: module must be a forgegrad.nn.Module, got {type(module).__name__}")
        if device_ids is not None and (isinstance(device_ids, (str, bytes)) or not hasattr(device_ids, "__iter__")):
            raise TypeError(f"DataParallel: device_ids must be None or a list of device indices, got {device_ids!r}")
        if not is_int(dim):
            raise TypeError(f"DataParallel: dim must be an int, got {dim!r}")
        self.module = module
        self.device_ids = []

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)
