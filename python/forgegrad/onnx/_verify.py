"""Checking an exported file with onnxruntime against forgegrad's eval-mode outputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor
from ._errors import OnnxVerificationError


@dataclass
class OutputError:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    ok: bool
    note: str = ""  # why an output failed beyond the tolerance, or NaNs both sides agree on
    n_finite: int = -1  # finite reference values compared (-1: not a float output)


@dataclass
class VerificationRun:
    label: str                # "example" or "random"
    sizes: Dict[str, int]     # dynamic axis -> size used
    outputs: List[OutputError]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)


@dataclass
class ExportReport:
    """What export() wrote and how onnxruntime's outputs compared with forgegrad's."""

    path: str
    opset: int
    input_names: List[str]
    output_names: List[str]
    dynamic_axes: Dict[str, Dict[int, str]]
    num_nodes: int
    num_initializers: int
    rtol: float
    atol: float
    runs: List[VerificationRun] = field(default_factory=list)
    # nodes of a float64 graph run in float32 between Casts (onnxruntime has no double kernel for them)
    float32_nodes: List[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(self.runs)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    @property
    def sizes_tried(self) -> List[Dict[str, int]]:
        return [r.sizes for r in self.runs]

    def max_abs_error(self) -> Dict[str, float]:
        return {n: max((o.max_abs for r in self.runs for o in r.outputs if o.name == n), default=0.0)
                for n in self.output_names}

    def max_rel_error(self) -> Dict[str, float]:
        return {n: max((o.max_rel for r in self.runs for o in r.outputs if o.name == n), default=0.0)
                for n in self.output_names}

    def __str__(self) -> str:
        axes = ", ".join(f"{n}: {ax}" for n, ax in self.dynamic_axes.items()) or "none (static)"
        lines = [f"ONNX export: {self.path} (opset {self.opset}, {self.num_nodes} nodes, "
                 f"{self.num_initializers} initializers)",
                 f"  inputs: {', '.join(self.input_names)}; outputs: {', '.join(self.output_names)}",
                 f"  dynamic axes: {axes}"]
        if self.float32_nodes:
            lines.append(f"  float64 graph; in float32 between Casts (no double kernel in onnxruntime): "
                         f"{', '.join(self.float32_nodes)}")
        if not self.runs:
            lines.append("  not verified")
            return "\n".join(lines)
        lines.append(f"  verified with onnxruntime (rtol={self.rtol:g}, atol={self.atol:g}): "
                     f"{'PASS' if self.ok else 'FAIL'}")
        lines.append(f"  {'run':<24} {'output':<16} {'shape':<18} {'max abs err':>12} {'max rel err':>12}")
        for r in self.runs:
            sizes = ", ".join(f"{k}={v}" for k, v in r.sizes.items()) or "static"
            for o in r.outputs:
                lines.append(f"  {r.label + ' ' + sizes:<24} {o.name:<16} {str(o.shape):<18} {o.max_abs:>12.3g} "
                             f"{o.max_rel:>12.3g}{_flag(o)}")
        return "\n".join(lines)


def _flag(o: OutputError) -> str:
    if o.ok:
        return f"  ({o.note})" if o.note else ""
    return f"  <-- {o.note or 'over tolerance'}"


def _compare(name, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> OutputError:
    """Elementwise check of onnxruntime's output against forgegrad's.

    A NaN (or an infinity) counts as agreement only where the reference has the same value at the
    same place (an unbiased variance over a batch of 1 is NaN in both, rightly); NaN against a
    number fails. Whether an output was verified at all is decided over all runs (see
    ``_require_finite``)."""
    if got.shape != want.shape:
        return OutputError(name, tuple(want.shape), float("inf"), float("inf"), False, "shape differs")
    if want.dtype.kind != "f":
        bad = got != want
        return OutputError(name, tuple(want.shape), float(bad.any()), float(bad.any()), not bad.any())
    g, w = got.astype(np.float64), want.astype(np.float64)
    both_nan = np.isnan(g) & np.isnan(w)
    same = both_nan | (g == w)  # also equal infinities, whose difference would be NaN
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(g - w))
    diff = np.where(np.isnan(diff), np.inf, diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(w))
    # the tolerance scales with finite reference values only (an infinite one would admit anything)
    ok = bool(np.all(diff <= atol + rtol * np.abs(np.where(same | ~np.isfinite(w), 0.0, w))))
    n_nan = int(both_nan.sum())
    note = ""
    if not ok and (np.isnan(g) != np.isnan(w)).any():
        note = "NaN on one side only"
    elif n_nan:
        note = f"{n_nan} NaN in both at the same places"
    return OutputError(name, tuple(want.shape), float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), ok,
                       note, int(np.isfinite(w).sum()))


def _require_finite(runs: List[VerificationRun]) -> None:
    """Fail every float output that never had a finite reference value in any run (e.g. NaN
    everywhere, as from NaN weights or an overflow): both sides agreeing on NaN says nothing about
    whether the exported graph computes the model, so such an output was not verified."""
    outs = [o for r in runs for o in r.outputs if o.n_finite >= 0]
    for name in dict.fromkeys(o.name for o in outs):
        mine = [o for o in outs if o.name == name]
        if sum(o.n_finite for o in mine) == 0 and any(np.prod(o.shape, dtype=np.int64) > 0 for o in mine):
            for o in mine:
                o.ok = False
                o.note = ("not verified: forgegrad's output is NaN/inf everywhere in every run (NaN weights "
                          "or inputs?); NaN agreeing with NaN proves nothing")


def _random_like(x: Tensor, shape, rng) -> np.ndarray:
    if x.dtype == bool:
        return rng.random(shape) < 0.5
    if x.dtype.kind in "iu":  # stay in the example's range (token ids, class indices)
        lo, hi = (int(x._data.min()), int(x._data.max())) if x._data.size else (0, 1)
        return rng.integers(lo, hi + 1, size=shape).astype(x.dtype)
    return rng.standard_normal(shape).astype(x.dtype)


def default_verify_sizes(symbols) -> List[Dict[str, int]]:
    if not symbols.names:
        return []
    out = []
    for v in (1, 7):
        sizes = {s: (v if symbols.a[s] != v else v + 1) for s in symbols.free}
        out.append(sizes)
    return out


def _run(sess, report: ExportReport, arrays, label: str, sizes: Dict[str, int], symbols) -> list:
    """The session's outputs on ``arrays``; onnxruntime's failure (an index out of range, shapes that do not
    broadcast) as an OnnxVerificationError naming the sizes. Where the graph ran at the example's sizes and fails
    at others, a value that follows the dynamic axes was most likely exported as a constant of the example's size,
    which the message says, naming the axes."""
    try:
        return sess.run(report.output_names, {n: a for n, a in zip(report.input_names, arrays)})
    except Exception as e:  # onnxruntime's own exception classes (InvalidArgument, Fail, RuntimeException...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if label == "example":
            raise OnnxVerificationError(f"onnxruntime failed to run the exported graph {report.path} on the example: "
                                        f"{first}", report) from e
        changed = ", ".join(f"{n}={sizes[n]} (example: {symbols.a[n]})" for n in symbols.names
                            if sizes.get(n) != symbols.a[n])
        raise OnnxVerificationError(
            f"onnxruntime ran the exported graph {report.path} at the example's sizes but failed with the dynamic "
            f"axes at other sizes, {changed}: {first}. A value that depends on these axes was probably exported as a "
            "constant of the example's size (an index, a mask or a shape computed in numpy inside forward): compute "
            "it with Tensor ops on the inputs while tracing, or pass dynamic_axes={} for a static graph",
            report) from e


def verify_model(model, report: ExportReport, inputs: List[Tensor], input_axes, symbols,
                 verify_sizes: Optional[Sequence[Dict[str, int]]], seed: int = 0, hint: str = "") -> ExportReport:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(report.path, sess_options=opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    cases = [("example", dict(symbols.a), [x._data for x in inputs])]
    for sizes in (default_verify_sizes(symbols) if verify_sizes is None else verify_sizes):
        unknown = set(sizes) - set(symbols.free)
        if unknown:
            raise ValueError(f"verify_sizes names {sorted(unknown)}, which are not dynamic axes whose size can be "
                             f"chosen (those are {symbols.free}; a sum such as 'past_sequence+sequence' follows them)")
        full = symbols.full(sizes)
        arrays = []
        for x, ax in zip(inputs, input_axes):
            shape = [full[ax[a]] if a in ax else d for a, d in enumerate(x.shape)]
            arrays.append(_random_like(x, shape, rng))
        cases.append(("random", full, arrays))

    for label, sizes, arrays in cases:
        with no_grad():
            # integer and float64 inputs keep their dtype (Tensor._stored makes any integer array int64: a uint8
            # input's wrap-around, 200 << 3 == 64, would not be the reference onnxruntime is held to)
            out = model(*[Tensor(a, dtype=a.dtype) if a.dtype.kind in "iu" or a.dtype == np.float64
                          else Tensor._stored(a) for a in arrays])
        from ._capture import flatten_outputs
        want = [np.asarray(t._data) for t in flatten_outputs(out)[0]]
        got = _run(sess, report, arrays, label, sizes, symbols)
        errs = [_compare(n, np.asarray(g), w, report.rtol, report.atol)
                for n, g, w in zip(report.output_names, got, want)]
        report.runs.append(VerificationRun(label, sizes if symbols.names else {}, errs))
    _require_finite(report.runs)
    if not report.ok:
        raise OnnxVerificationError(
            "onnxruntime's outputs differ from forgegrad's past the tolerance:\n" + str(report) + hint, report)
    return report
