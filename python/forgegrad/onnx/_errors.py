"""Exceptions raised by forgegrad.onnx."""
from __future__ import annotations


class OnnxExportError(RuntimeError):
    """The model could not be turned into an ONNX graph (see the message for the op and where)."""


class UnsupportedOpError(OnnxExportError):
    """An op in the trace has no ONNX mapping, or uses a form of the op that has none."""


class OnnxVerificationError(RuntimeError):
    """onnxruntime's outputs differ from forgegrad's past the tolerance. ``report`` holds the numbers."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report
