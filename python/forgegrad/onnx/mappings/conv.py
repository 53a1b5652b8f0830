"""Registration of forgegrad's conv, pooling and batch-norm ops with the mappings in _conv_adapters,
which read the arguments by PyTorch's names and emit with _conv_emit."""
from __future__ import annotations

from ...ops import conv, normalization, pool
from . import register
from ._conv_adapters import _adaptive, map_avg_pool, map_batch_norm, map_conv, map_conv1d, map_max_pool

register(conv.Conv2dFunction)(map_conv)
register(conv.Conv1dFunction)(map_conv1d)
register(pool.MaxPool2dFunction)(map_max_pool)
register(pool.AvgPool2dFunction)(map_avg_pool)
register(pool.AdaptiveAvgPool2dFunction)(_adaptive("ReduceMean"))
register(normalization.BatchNormFunction)(map_batch_norm)
