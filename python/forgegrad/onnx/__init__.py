"""forgegrad.onnx: export forgegrad models to ONNX and check them with onnxruntime.

    report = forgegrad.onnx.export(model, x, "model.onnx", opset=17)
    print(report)   # nodes, dynamic axes, max abs/rel error per output at each size tried

The model is captured by tracing its ops (forgegrad.autograd.trace), not by module type, so custom
Modules built from functional ops export too. Each op maps to ONNX through a registry keyed by its
Function class (``forgegrad.onnx.mappings``); ``register_mapping`` adds one for a custom op.
"""
from ._errors import OnnxExportError, OnnxVerificationError, UnsupportedOpError
from ._export import MAX_OPSET, MIN_OPSET, export
from ._verify import ExportReport
from .mappings import REGISTRY, register as register_mapping

__all__ = ["export", "ExportReport", "OnnxExportError", "OnnxVerificationError", "UnsupportedOpError",
           "register_mapping", "REGISTRY", "MIN_OPSET", "MAX_OPSET"]
