"""Quantized layers as ops in a trace, so that forgegrad.onnx.export sees them.

A quantized module's forward calls its int8 kernel directly (no Function, no graph: these layers
are inference-only). Under ``forgegrad.autograd.trace()`` (the ONNX exporter) it goes through one
of the Functions below instead, which records the call with the module itself as an argument; the
mappings in forgegrad.onnx.mappings.quantized turn each record into ONNX nodes from the module's
int8 weights and scales. The forward computed is the same kernel call either way.
"""
from __future__ import annotations

from ..autograd import Function


def _no_backward(name):
    raise RuntimeError(f"{name} is inference-only (int8 weights have no gradient); quantization-aware "
                       "training uses forgegrad.quantization.prepare_qat on the float model")


class QuantizedLayerCall(Function):
    """One forward of a one-input quantized layer (DynamicQuantizedLinear, WeightOnlyInt8Linear,
    QuantizedLinear, QuantizedConv2d): ``module._compute(input)`` on the float32 input array."""

    @staticmethod
    def forward(ctx, input, module):
        return module._compute(input)

    @staticmethod
    def backward(ctx, grad):
        _no_backward("a quantized layer")


class DynamicQuantizedRNNCall(Function):
    """One forward of a DynamicQuantizedLSTM / GRU: ``input``, ``h0`` and (LSTM) ``c0`` (None: zeros)
    as the module takes them; returns (output, h_n) and, for the LSTM, c_n."""

    @staticmethod
    def forward(ctx, input, h0, c0, module):
        return module._run(input, h0, c0)

    @staticmethod
    def backward(ctx, *grads):
        _no_backward("DynamicQuantizedLSTM / GRU")


class BF16EmbeddingCall(Function):
    """One lookup of a BF16Embedding: ``module.rows(indices)`` (float32 rows of the bfloat16 table)."""

    @staticmethod
    def forward(ctx, indices, module):
        return module.rows(indices)

    @staticmethod
    def backward(ctx, grad):
        _no_backward("BF16Embedding")
