"""forgegrad.quantization: int8 inference with torch.ao.quantization's vocabulary.

Dynamic post-training quantization (this helper's part; kernels in cpp/kernels/per_isa/qgemm.cpp):

    qmodel = forgegrad.quantization.quantize_dynamic(model, {nn.Linear, nn.LSTM, nn.GRU}, dtype=qint8)

replaces each Linear, LSTM and GRU with a module whose weights are per-channel symmetric int8 and whose
activations are quantized per call (per batch) to uint8, so its matrix products run on forgegrad's
u8 x s8 -> s32 kernels (AMX-INT8, AVX-512 VNNI, AVX2 or portable, chosen at run time; every path
gives the same integers).

Observers, fake quantization and quantization-aware training live in observers.py, fake_quant.py
and qat.py (exported below when present).
"""
from .dtypes import qint8, quint8
from .functional import (choose_qparams, dequantize, int8_path, int8_paths, quantize_per_tensor,
                         set_int8_path)
from .modules import DynamicQuantizedLinear, WeightOnlyInt8Linear
from .bf16 import BF16Embedding, WeightOnlyBF16Linear, from_bfloat16_bits, to_bfloat16_bits
from .rnn import DynamicQuantizedGRU, DynamicQuantizedLSTM
from .dynamic import quantize_dynamic, quantize_weight_only
from .onnx_export import export_onnx

__all__ = [
    "qint8", "quint8", "quantize_dynamic", "DynamicQuantizedLinear", "DynamicQuantizedLSTM",
    "DynamicQuantizedGRU", "WeightOnlyInt8Linear", "WeightOnlyBF16Linear", "quantize_weight_only",
    "BF16Embedding", "to_bfloat16_bits", "from_bfloat16_bits",
    "choose_qparams", "quantize_per_tensor", "dequantize", "int8_path", "int8_paths", "set_int8_path",
    "export_onnx",
]
# Observers / fake-quant / QAT (branch wt-prune-distill) add their imports and __all__ entries below.
from .observers import (MinMaxObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
                        PercentileObserver, PerChannelMinMaxObserver)
from .histogram import HistogramObserver
from .fake_quant import FakeQuantize, default_fake_quant, default_weight_fake_quant
from .static import (QConfig, QuantizedConv2d, QuantizedLinear, calibrate, convert, default_qconfig,
                     get_default_qconfig, prepare)
from .qat import QATQConfig, default_qat_qconfig, prepare_qat

__all__ += [
    "MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver", "PercentileObserver", "HistogramObserver", "FakeQuantize",
    "default_fake_quant", "default_weight_fake_quant", "QConfig", "default_qconfig", "get_default_qconfig",
    "prepare", "calibrate", "convert", "QuantizedLinear", "QuantizedConv2d", "QATQConfig", "default_qat_qconfig",
    "prepare_qat",
]
