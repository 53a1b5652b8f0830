"""Grad mode and op recording: the thread-local state every op reads when it runs.

``no_grad`` / ``enable_grad`` / ``set_grad_enabled`` / ``inference_mode`` switch graph recording;
``trace()`` records every op applied inside it (the ONNX exporter's view of a model). Kept apart from the
autograd engine so that Tensor can import it without importing the engine.
"""
from __future__ import annotations

import contextlib
import threading
from threading import get_ident as _get_ident
from typing import Dict, List

from ._seen_flag import SeenFlag

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "inference_mode",
           "is_inference_mode_enabled", "graph_free", "records_graph", "trace", "recorder"]

_state = threading.local()


def is_grad_enabled() -> bool:
    """torch.is_grad_enabled. Inside ``inference_mode()`` it is False unless ``enable_grad()`` /
    ``set_grad_enabled(True)`` turned it on there, and even then no op is recorded (torch's: inference mode
    keeps autograd off); the code deciding whether an op records asks :func:`records_graph`."""
    d = _state.__dict__
    if _inference_seen and d.get("inference", False):
        return d.get("grad_shown", False)
    return d.get("grad_enabled", True)


def records_graph() -> bool:
    """Whether an op on a tensor that requires grad records a graph node now (grad mode on, outside inference
    mode; inside it ``enable_grad()`` changes is_grad_enabled() only)."""
    return _state.__dict__.get("grad_enabled", True)


def graph_free() -> bool:
    """True when no op needs to go through Function.apply: grad mode is off, no trace() is recording and no
    batched forgegrad.func.vmap or autocast region runs in this thread (its batching rules or autocast's policy see
    the ops only there). Layers use it for their inference fast path (a kernel call, no graph bookkeeping)."""
    d = _state.__dict__
    return not d.get("grad_enabled", True) and d.get("recorder") is None and not d.get("batching") and \
        not d.get("autocast")


def _set_grad_enabled(mode: bool) -> None:
    _state.grad_enabled = bool(mode)


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager / decorator that turns graph recording on or off."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)

    # Entered once per inference call: kept to a couple of dict operations (and a global read).
    def __enter__(self):
        d = _state.__dict__
        if _inference_seen and d.get("inference", False):  # in inference mode: what is reported, not recording
            self.prev, self.shown = d.get("grad_shown", False), True
            d["grad_shown"] = self.mode
            return self
        self.prev, self.shown = d.get("grad_enabled", True), False
        d["grad_enabled"] = self.mode
        return self

    def __exit__(self, *exc):
        _state.__dict__["grad_shown" if self.shown else "grad_enabled"] = self.prev
        return False


class no_grad(set_grad_enabled):
    """No graph is recorded inside: outputs do not require grad (inference, parameter updates)."""

    def __init__(self):
        self.mode = False


class enable_grad(set_grad_enabled):
    def __init__(self):
        self.mode = True


def is_inference_mode_enabled() -> bool:
    """True inside ``inference_mode()`` (torch.is_inference_mode_enabled)."""
    return _state.__dict__.get("inference", False)


# Inference tensors (forgegrad._inference_tensors) cost nothing while no thread is in inference mode. Tensor's
# constructors test ``_inference_threads`` (thread id -> inference_mode(True) blocks open in it; each thread
# changes only its own entry, so no lock): only while it is not empty does a new tensor ask whether its thread is
# in the mode. The modules that check ops read ``_inference_seen`` in their own namespaces (INFERENCE_SEEN, a
# forgegrad._seen_flag.SeenFlag), set once the first block opens: inference tensors may exist from then on.
_inference_threads: Dict[int, int] = {}
_inference_seen = False  # (kept equal to INFERENCE_SEEN by its watch)
INFERENCE_SEEN = SeenFlag("_inference_seen")
INFERENCE_SEEN.watch(globals())
watch_inference_seen = INFERENCE_SEEN.watch


class inference_mode(contextlib.ContextDecorator):
    """torch.inference_mode: a context manager or decorator (``@inference_mode()`` or bare
    ``@inference_mode``) that records no graph, as no_grad; ``mode=False`` turns grad mode on (as torch's,
    whose InferenceMode(false) is grad mode), for a block inside an inference_mode one.

    Tensors made inside are inference tensors (``is_inference()``; views of them too) with torch's rules outside
    the mode: no in-place write, no ``requires_grad_()``, not saved for backward by a recorded op (RuntimeError);
    ``clone()`` gives a normal tensor. See forgegrad._inference_tensors and docs/torch_compat.md.
    """

    def __new__(cls, mode=True):
        if callable(mode) and not isinstance(mode, bool):  # @inference_mode without parentheses
            return cls()(mode)
        return super().__new__(cls)

    def __init__(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise TypeError(f"inference_mode: mode must be a bool, got {type(mode).__name__}")
        self.mode = mode

    def __enter__(self):
        d = _state.__dict__
        self.prev = (d.get("grad_enabled", True), d.get("inference", False), d.get("grad_shown", False))
        if self.mode:
            key = _get_ident()
            _inference_threads[key] = _inference_threads.get(key, 0) + 1
            if not _inference_seen:
                INFERENCE_SEEN.note()
        # grad_shown: what is_grad_enabled() reports in the mode (enable_grad() inside turns it on, as torch's,
        # while nothing is recorded: grad_enabled, the recording switch every op reads, stays False)
        d["grad_enabled"], d["inference"], d["grad_shown"] = not self.mode, self.mode, not self.mode
        return self

    def __exit__(self, *exc):
        d = _state.__dict__
        d["grad_enabled"], d["inference"], d["grad_shown"] = self.prev
        if self.mode:
            key = _get_ident()
            n = _inference_threads.get(key, 1) - 1
            if n:
                _inference_threads[key] = n
            else:
                _inference_threads.pop(key, None)
        return False


# ---- op recording (used by the ONNX exporter) ------------------------------------------------
class _Recorder:
    """Collects (function class, args, kwargs, outputs) for every Function.apply while active."""

    probe = False

    def __init__(self):
        self.records: List[tuple] = []

    def record(self, fn_cls, args, kwargs, outputs):
        self.records.append((fn_cls, args, kwargs, outputs))


@contextlib.contextmanager
def trace():
    """Record every op applied inside the block: ``with trace() as rec: model(x)``.

    ``rec.records`` is a list of ``(FunctionClass, args, kwargs, outputs)``, where args keeps the
    Tensor inputs and the non-tensor arguments in call order and outputs is a tuple of Tensors.
    """
    prev = _state.__dict__.get("recorder")
    rec = _Recorder()
    _state.recorder = rec
    try:
        yield rec
    finally:
        _state.recorder = prev


def recorder():
    """The active trace() recorder of this thread, or None (also inside a checkpointed forward, whose
    recorder only keeps the recorded-forward kernels on: forgegrad.utils.checkpoint)."""
    rec = _state.__dict__.get("recorder")
    return None if rec is None or rec.probe else rec


@contextlib.contextmanager
def untraced():
    """No recording inside (a recorded op that computes its result with other ops records only itself)."""
    prev = _state.__dict__.get("recorder")
    _state.recorder = None
    try:
        yield
    finally:
        _state.recorder = prev
