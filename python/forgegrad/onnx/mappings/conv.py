"""Registration of forgegrad's conv / pooling / batch-norm ops (forgegrad.ops.conv) with the
mappings in _conv_adapters. Imported only when forgegrad.ops.conv exists.

The op classes were written in parallel with this file, so each is looked up by the names it is
likely to have; the mappings read arguments by PyTorch's names, and an op whose arguments do not
fit fails with UnsupportedOpError naming the op, not with a wrong graph.
"""
from __future__ import annotations

from ...ops import conv as C
from . import register
from ._conv_adapters import _adaptive, map_avg_pool, map_batch_norm, map_conv, map_max_pool


def _classes(*names):
    return [getattr(C, n) for n in names if isinstance(getattr(C, n, None), type)]


for _cls in _classes("Conv2d", "Conv2D", "Conv"):
    register(_cls)(map_conv)
for _cls in _classes("MaxPool2d", "MaxPool2D", "MaxPool"):
    register(_cls)(map_max_pool)
for _cls in _classes("AvgPool2d", "AvgPool2D", "AvgPool"):
    register(_cls)(map_avg_pool)
for _cls in _classes("AdaptiveAvgPool2d", "AdaptiveAvgPool2D", "AdaptiveAvgPool"):
    register(_cls)(_adaptive("ReduceMean"))
for _cls in _classes("AdaptiveMaxPool2d", "AdaptiveMaxPool2D"):
    register(_cls)(_adaptive("ReduceMax"))
for _cls in _classes("BatchNorm2d", "BatchNorm", "BatchNorm2D"):
    register(_cls)(map_batch_norm)
