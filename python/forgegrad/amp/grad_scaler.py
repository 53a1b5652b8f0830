"""torch.amp.GradScaler for forgegrad's CPU tensors: ``scaler.scale(loss).backward(); scaler.step(opt);
scaler.update()`` with torch 2.13's API and arithmetic.

The loss is multiplied by the scale (a float32 number, 2**16 at first) so that small float16 gradients do not flush
to zero; ``unscale_`` (called by ``step`` if not before) multiplies every gradient of the optimizer by the float32
reciprocal of the scale (computed in float64, as torch) and notes whether any is inf / NaN; ``step`` then skips the
optimizer's step if one was; ``update`` halves the scale after such a step (``backoff_factor``) and doubles it after
``growth_interval`` clean ones in a row (``growth_factor``; not past float32's range), as torch's
_amp_update_scale_. The scale and the growth tracker are kept as float32 / int numbers, not tensors: the same values,
and ``get_scale()`` / ``state_dict()`` give them as torch's do.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from enum import Enum
from typing import Any, Dict, Optional

import numpy as np

from .. import dtypes as _dtypes
from ..tensor import Tensor

__all__ = ["GradScaler", "OptState"]

_F32 = np.dtype(np.float32)
_F16 = np.dtype(np.float16)


class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _refresh_per_optimizer_state() -> Dict[str, Any]:
    return {"stage": OptState.READY, "found_inf": None}


class GradScaler:
    """torch.amp.GradScaler(device="cuda", init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
    growth_interval=2000, enabled=True). forgegrad scales CPU gradients (``device="cpu"``); "cuda" without an
    available device warns and disables itself, as torch's."""

    def __init__(self, device: str = "cuda", init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True) -> None:
        if not isinstance(device, str):
            raise TypeError(f"GradScaler: device must be a device type name such as 'cpu', got {device!r}")
        self._device = device
        self._enabled = bool(enabled)
        if device == "cuda" and self._enabled:
            from .. import cuda
            if not cuda.is_available():
                warnings.warn("torch.cuda.amp.GradScaler is enabled, but CUDA is not available.  Disabling.",
                              stacklevel=2)
                self._enabled = False
        elif device != "cpu" and self._enabled:
            raise ValueError(f"GradScaler: forgegrad scales gradients on the 'cpu' device, got device={device!r}")
        if self._enabled:
            if growth_factor <= 1.0:
                raise AssertionError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise AssertionError("The backoff factor must be < 1.0.")
            self._init_scale = init_scale
            self._scale: Optional[np.float32] = None  # made by the first scale(), as torch's lazy tensor
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._init_growth_tracker = 0
            self._growth_tracker: Optional[int] = None
            self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

    def _lazy_init(self) -> None:
        self._scale = np.float32(self._init_scale)
        self._growth_tracker = int(self._init_growth_tracker)

    def _check_scale_growth_tracker(self, funcname: str) -> None:
        fix = "This may indicate your script did not use scaler.scale(loss or outputs) earlier in the iteration."
        if self._scale is None:
            raise AssertionError(f"Attempted {funcname} but _scale is None.  " + fix)

    def scale(self, outputs):
        """``outputs`` (a tensor, or a list / tuple / iterable of them, nested) times the scale; as given when
        disabled. The scale is a 0-d float32 tensor, so float16 / bfloat16 outputs keep their dtype."""
        if not self._enabled:
            return outputs
        if self._scale is None:
            self._lazy_init()
        factor = Tensor._wrap_exact(np.array(self._scale, _F32))

        def apply_scale(val):
            if isinstance(val, Tensor):
                return val * factor
            if isinstance(val, (list, tuple)):
                return type(val)(map(apply_scale, val))
            if hasattr(val, "__iter__"):
                return map(apply_scale, val)
            raise ValueError("outputs must be a Tensor or an iterable of Tensors")

        return apply_scale(outputs)

    def _unscale_grads_(self, optimizer, inv_scale: np.float32, allow_fp16: bool) -> bool:
        """Every gradient of ``optimizer`` times ``inv_scale`` in place (float32 arithmetic, rounded back to a
        bfloat16 gradient's dtype); whether any was inf / NaN before."""
        found_inf = False
        for group in optimizer.param_groups:
            for param in group["params"]:
                g = param.grad
                if g is None:
                    continue
                data = g._data
                if not allow_fp16 and data.dtype == _F16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                if not isinstance(data, np.ndarray):
                    raise NotImplementedError(
                        "GradScaler: forgegrad unscales dense CPU gradients; got a gradient stored as "
                        f"{type(data).__name__} (a sparse or non-CPU gradient)")
                if data.dtype.kind == "f" and data.dtype != _F16:  # float32 / float64: in place
                    found_inf = found_inf or not bool(np.isfinite(data).all())
                    if inv_scale != 1.0:
                        np.multiply(data, inv_scale, out=data)
                else:  # float16 / bfloat16: on its float32 values, rounded back into the gradient's storage
                    wide = _dtypes.astype(data, _F32)
                    found_inf = found_inf or not bool(np.isfinite(wide).all())
                    if inv_scale != 1.0:
                        wide *= inv_scale
                        _dtypes.cast_into(data, wide)
        return found_inf

    def unscale_(self, optimizer) -> None:
        """Divides the optimizer's gradients by the scale (at most once between updates; ``step`` calls it
        otherwise), e.g. before clipping them."""
        if not self._enabled:
            return
        self._check_scale_growth_tracker("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = np.float32(1.0 / np.float64(self._scale))  # (the reciprocal in float64, as torch's)
        state["found_inf"] = self._unscale_grads_(optimizer, inv_scale, False)
        state["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step(*args, **kwargs)`` after unscaling, skipped (None returned) where a gradient was inf or
        NaN."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale_growth_tracker("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        retval = None
        if not state["found_inf"]:
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale=None) -> None:
        """The next scale: ``new_scale`` (a float or a one-element tensor) where given, else backed off after an
        inf / NaN this iteration, grown after ``growth_interval`` clean iterations (torch's _amp_update_scale_)."""
        if not self._enabled:
            return
        self._check_scale_growth_tracker("update")
        if new_scale is not None:
            if isinstance(new_scale, float):
                self._scale = np.float32(new_scale)
            else:
                reason = ("new_scale should be a float or a 1-element torch.cuda.FloatTensor or torch.FloatTensor "
                          "with requires_grad=False.")
                if not isinstance(new_scale, Tensor) or new_scale.numel() != 1 or new_scale.requires_grad:
                    raise AssertionError(reason)
                self._scale = np.float32(new_scale.item())
        else:
            found = [s["found_inf"] for s in self._per_optimizer_states.values() if s["found_inf"] is not None]
            if not found:
                raise AssertionError("No inf checks were recorded prior to update.")
            if any(found):
                self._scale = np.float32(float(self._scale) * self._backoff_factor)
                self._growth_tracker = 0
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    grown = np.float32(float(self._scale) * self._growth_factor)
                    if np.isfinite(grown):
                        self._scale = grown
                    self._growth_tracker = 0
                else:
                    self._growth_tracker = successful
        self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

    def get_scale(self) -> float:
        if not self._enabled:
            return 1.0
        return float(self._init_scale) if self._scale is None else float(self._scale)

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = new_interval

    def _get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else self._growth_tracker

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> Dict[str, Any]:
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled "
                               "instance of GradScaler.")
        self._init_scale = state_dict["scale"]
        if self._scale is not None:
            self._scale = np.float32(state_dict["scale"])
        self._growth_factor = state_dict["growth_factor"]
        self._backoff_factor = state_dict["backoff_factor"]
        self._growth_interval = state_dict["growth_interval"]
        self._init_growth_tracker = state_dict["_growth_tracker"]
        if self._growth_tracker is not None:
            self._growth_tracker = int(state_dict["_growth_tracker"])
