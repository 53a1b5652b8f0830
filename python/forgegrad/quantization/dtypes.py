"""The quantized dtypes, named as torch's (torch.qint8, torch.quint8): a name plus the numpy storage
type and the integer range."""
from __future__ import annotations

import numpy as np

__all__ = ["QDType", "qint8", "quint8", "as_qdtype"]


class QDType:
    """A quantized dtype: int8 values with a scale and zero point (``real = scale * (q - zero_point)``)."""

    def __init__(self, name: str, storage, qmin: int, qmax: int):
        self.name, self.storage, self.qmin, self.qmax = name, np.dtype(storage), qmin, qmax

    def __repr__(self) -> str:
        return f"forgegrad.quantization.{self.name}"


qint8 = QDType("qint8", np.int8, -128, 127)
quint8 = QDType("quint8", np.uint8, 0, 255)


def as_qdtype(dtype, name: str = "dtype") -> QDType:
    """qint8/quint8, their names, or torch.qint8/torch.quint8 (by name, torch is not imported)."""
    if isinstance(dtype, QDType):
        return dtype
    text = str(dtype).rsplit(".", 1)[-1]
    if text in ("qint8", "quint8"):
        return qint8 if text == "qint8" else quint8
    raise TypeError(f"{name} must be forgegrad.quantization.qint8 or quint8 (or torch's), got {dtype!r}")
