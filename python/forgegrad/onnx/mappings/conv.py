"""Registration of forgegrad's conv / pooling / batch-norm ops (forgegrad.ops.conv) with the
mappings in _conv_adapters, which read the arguments by PyTorch's names and emit with _conv_emit."""
from __future__ import annotations

from ...ops import conv as C
from . import register
from ._conv_adapters import _adaptive, map_avg_pool, map_batch_norm, map_conv, map_max_pool

register(C.Conv2d)(map_conv)
register(C.MaxPool2d)(map_max_pool)
register(C.AvgPool2d)(map_avg_pool)
register(C.AdaptiveAvgPool2d)(_adaptive("ReduceMean"))
register(C.BatchNorm)(map_batch_norm)
