"""Checks generated from the op registry: every op x every check, from the op's own samples.

For each registered op (forgegrad.ops.all_ops()) and each check in forgegrad.ops.registry.CHECKS:

- forward:  every sample's outputs equal the torch reference's (to the op's tolerance);
- backward: the gradient of every float input (a fixed random cotangent per output) equals torch's;
- float64:  every sample (but the large ones) again with its float32 arrays as float64: outputs and
            gradients in float64, equal to torch's float64 to 1e-10 (no float32 step anywhere);
- threads:  forward and backward give identical bits at 1, 2 and 3 threads;
- isa:      forward and backward on every SIMD path the CPU has match the reference;
- onnx:     the op alone exports to ONNX, and onnxruntime reproduces it (the exporter verifies);
- meta:     on the meta device the op gives the shapes and dtypes the real run gives;
- errors:   the op's bad inputs raise the declared error, naming the argument.

A check an op declares a gap for (``gaps={"onnx": "why"}``) is not generated; the coverage table
printed at the end of the run (tests/conftest.py) lists it with its reason.
"""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.ops.registry import CHECKS

torch = pytest.importorskip("torch")

OPS = fg.ops.all_ops()
COVERAGE = {}  # (op name, check) -> "ok" | "FAIL" | gap reason; read by conftest's summary
SIMD_PATHS = [p for p in ("scalar", "avx2", "avx512")
              if ("scalar", "avx2", "avx512").index(p) <= ("scalar", "avx2", "avx512").index(
                  fg.cpu_info()["detected_isa"])]


def _cases():
    for op in OPS:
        for check in CHECKS:
            if check in op.gaps:
                COVERAGE[(op.name, check)] = "gap: " + op.gaps[check]
                continue
            yield pytest.param(op, check, id=f"{op.name}-{check}")


# ---- running an op on both sides -----------------------------------------------------------------
def _fg_args(sample, requires_grad=()):
    return [fg.tensor(a.copy(), requires_grad=i in requires_grad) if isinstance(a, np.ndarray) else a
            for i, a in enumerate(sample.args)]


def _torch_args(sample, requires_grad=()):
    out = []
    for i, a in enumerate(sample.args):
        if isinstance(a, np.ndarray):
            t = torch.from_numpy(a.copy())
            out.append(t.requires_grad_(True) if i in requires_grad else t)
        else:
            out.append(a)
    return out


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _float_outputs(outs):
    return [i for i, o in enumerate(outs) if np.asarray(o._data if isinstance(o, fg.Tensor) else o).dtype.kind == "f"]


def _cotangents(outs, seed=7):
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-1, 1, size=outs[i].shape).astype(np.float32) for i in _float_outputs(outs)}


def _run_fg(op, sample, grad_positions=()):
    """Forward and, when grad_positions, the gradients of those inputs; all as numpy arrays."""
    args = _fg_args(sample, grad_positions)
    outs = _as_tuple(op(*args, **sample.kwargs))
    values = [o._data.copy() for o in outs]
    grads = []
    if grad_positions:
        cot = _cotangents(outs)
        total = None
        for i, c in cot.items():
            if not outs[i].requires_grad:
                continue
            term = (outs[i] * fg.tensor(c)).sum()
            total = term if total is None else total + term
        if total is not None:
            total.backward()
        for p in grad_positions:
            g = args[p].grad
            grads.append(np.zeros(sample.args[p].shape, np.float32) if g is None else g._data.copy())
    return values, grads


def _run_torch(op, sample, grad_positions=()):
    args = _torch_args(sample, grad_positions)
    outs = _as_tuple(op.torch(torch, *args, **sample.kwargs))
    values = [o.detach().numpy() for o in outs]
    grads = []
    if grad_positions:
        cot = _cotangents(values)
        total = sum((outs[i] * torch.from_numpy(c)).sum() for i, c in cot.items() if outs[i].requires_grad)
        if isinstance(total, torch.Tensor):
            total.backward()
        for p in grad_positions:
            g = args[p].grad
            grads.append(np.zeros(sample.args[p].shape, np.float32) if g is None else g.numpy())
    return values, grads


def _assert_close(got, want, op, what):
    rtol, atol = op.tol
    assert len(got) == len(want), f"{op.name}: {what}: {len(got)} values, torch gives {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, f"{op.name}: {what} {k}: shape {g.shape}, torch {w.shape}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{op.name}: {what} {k}")
        else:
            np.testing.assert_array_equal(g, w.astype(g.dtype), err_msg=f"{op.name}: {what} {k}")


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ---- the checks ---------------------------------------------------------------------------------------
def check_forward(op, samples):
    for s in samples:
        got, _ = _run_fg(op, s)
        want, _ = _run_torch(op, s)
        _assert_close(got, want, op, f"sample {s.name or s.args[0].shape!r} output")


def check_backward(op, samples):
    checked = 0
    for s in samples:
        pos = s.grad_positions()
        if not pos:
            continue
        _, got = _run_fg(op, s, pos)
        _, want = _run_torch(op, s, pos)
        _assert_close(got, want, op, f"sample {s.name!r} gradient of inputs {pos}:")
        checked += 1
    assert checked, f"{op.name}: no sample has a differentiable input (declare a 'backward' gap if none can)"


F64_MAX_ELEMENTS = 20_000  # float64 runs numpy code for most ops: the large samples are left to float32


def _as_float64(op, sample):
    """The sample with its float32 arrays as float64 (but at op.float32_args), or None if it is large."""
    if any(isinstance(a, np.ndarray) and a.size > F64_MAX_ELEMENTS for a in sample.args):
        return None
    args = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32
                 and i not in op.float32_args else a for i, a in enumerate(sample.args))
    return fg.ops.Sample(args, sample.kwargs, sample.name, sample.grad_positions(), sample.onnx)


def _run_float64(op, sample, lib):
    """(outputs, gradients) of one float64 sample on forgegrad (lib=fg) or torch: numpy float64 arrays."""
    pos = sample.grad_positions()
    args = [(fg.tensor(a.copy(), requires_grad=i in pos) if lib is fg else
             torch.from_numpy(a.copy()).requires_grad_(i in pos)) if isinstance(a, np.ndarray) else a
            for i, a in enumerate(sample.args)]
    call = op if lib is fg else (lambda *a, **k: op.torch(torch, *a, **k))
    outs = _as_tuple(call(*args, **sample.kwargs))
    values = [(o.numpy() if lib is fg else o.detach().numpy()).copy() for o in outs]
    rng = np.random.default_rng(7)
    total = None
    for o, v in zip(outs, values):
        if v.dtype.kind == "f" and o.requires_grad:
            c = rng.uniform(-1, 1, size=v.shape)
            term = (o * (fg.tensor(c) if lib is fg else torch.from_numpy(c))).sum()
            total = term if total is None else total + term
    if total is not None:
        total.backward()
    grads = [np.zeros(sample.args[p].shape) if args[p].grad is None else
             (args[p].grad.numpy() if lib is fg else args[p].grad.numpy()).copy() for p in pos]
    return values, grads


def check_float64(op, samples):
    assert op.float64 is not None, f"{op.name}: no float64 Function (see forgegrad/ops/_float64.py)"
    checked = 0
    for s in samples:
        s64 = _as_float64(op, s)
        if s64 is None:
            continue
        fg.manual_seed(0)
        got, got_g = _run_float64(op, s64, fg)
        want, want_g = _run_float64(op, s64, torch)
        for k, (g, w) in enumerate(zip(got + got_g, want + want_g)):
            what = f"{op.name}: float64 sample {s.name or s.args[0].shape!r}, " + (
                f"output {k}" if k < len(got) else f"gradient of input {s64.grad[k - len(got)]}")
            assert g.shape == w.shape, f"{what}: shape {g.shape}, torch {w.shape}"
            assert g.dtype == w.dtype, f"{what}: dtype {g.dtype}, torch {w.dtype}"
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, equal_nan=True, err_msg=what)
        checked += 1
    assert checked, f"{op.name}: every sample is too large for the float64 check"


def check_threads(op, samples):
    before = fg.get_num_threads()
    try:
        for s in samples:
            runs = []
            for n in (1, 2, 3):
                fg.set_num_threads(n)
                runs.append(_run_fg(op, s, s.grad_positions()))
            (v1, g1) = runs[0]
            for n, (v, g) in zip((2, 3), runs[1:]):
                for a, b in zip(v1 + g1, v + g):
                    assert _same_bits(a, b), f"{op.name}: sample {s.name!r} differs at {n} threads vs 1"
    finally:
        fg.set_num_threads(before)


def check_isa(op, samples):
    before = fg.get_simd()
    try:
        for path in SIMD_PATHS:
            fg.set_simd(path)
            for s in samples:
                pos = s.grad_positions()
                v, g = _run_fg(op, s, pos)
                wv, wg = _run_torch(op, s, pos)
                _assert_close(v + g, wv + wg, op, f"{path}: sample {s.name!r} value/gradient")
    finally:
        fg.set_simd(before)


def check_onnx(op, samples, tmp_path):
    pytest.importorskip("onnxruntime")
    mapping = op.onnx_mapping()
    assert mapping is not None, f"{op.name}: no ONNX mapping (declare an 'onnx' gap saying why if there is none)"
    exported = 0
    for k, s in enumerate(samples):
        if not s.onnx:
            continue
        tensor_pos = [i for i, a in enumerate(s.args) if isinstance(a, np.ndarray)]

        class OneOp(fg.nn.Module):
            def forward(self, *tensors):
                args = list(s.args)
                for i, t in zip(tensor_pos, tensors):
                    args[i] = t
                return op(*args, **s.kwargs)

        inputs = tuple(fg.tensor(s.args[i]) for i in tensor_pos)
        report = fg.onnx.export(OneOp(), inputs, str(tmp_path / f"{op.name}_{k}.onnx"), dynamic_axes={},
                                rtol=max(op.tol[0], 1e-5), atol=max(op.tol[1], 1e-6))
        assert report.ok, f"{op.name}: sample {s.name!r}: {report}"
        exported += 1
    assert exported, f"{op.name}: no sample is exportable"


def check_meta(op, samples):
    for s in samples:
        real = _as_tuple(op(*_fg_args(s), **s.kwargs))
        tensor_pos = {p for p, _ in op.tensor_arguments()}
        meta_args = [fg.tensor(a).to("meta") if i in tensor_pos and a is not None else a for i, a in enumerate(s.args)]
        meta = _as_tuple(op(*meta_args, **s.kwargs))
        assert len(meta) == len(real), f"{op.name}: meta gives {len(meta)} outputs, the kernel {len(real)}"
        for m, r in zip(meta, real):
            assert m.is_meta, f"{op.name}: a meta input gave a {m.device} output"
            assert (m.shape, m.dtype) == (r.shape, r.dtype), \
                f"{op.name}: sample {s.name!r}: meta {m.shape} {m.dtype}, real {r.shape} {r.dtype}"


def check_errors(op, samples):
    bad = list(op.bad_inputs() if op.bad_inputs else [])
    # every tensor argument given a value that is no tensor: a TypeError naming that argument
    first = samples[0]
    for pos, name in op.tensor_arguments():
        if pos >= len(first.args):
            continue
        args = list(first.args)
        args[pos] = "not a tensor"
        bad.append(fg.ops.BadInput(tuple(args), first.kwargs, TypeError, name.split("[")[0]))
    assert bad, f"{op.name}: no tensor arguments and no bad inputs declared"
    for b in bad:
        args = [fg.tensor(a) if isinstance(a, np.ndarray) else a for a in b.args]
        with pytest.raises(b.error, match=b.match):
            op(*args, **b.kwargs)


@pytest.mark.parametrize("op,check", list(_cases()))
def test_op(op, check, tmp_path):
    COVERAGE[(op.name, check)] = "FAIL"
    samples = op.samples() if op.samples else []
    assert samples, f"op {op.name!r} has no samples"
    if check in ("forward", "backward", "float64", "isa"):
        assert op.torch is not None, f"{op.name}: no torch reference (declare a gap saying why if none exists)"
    if check == "onnx":
        check_onnx(op, samples, tmp_path)
    else:
        globals()[f"check_{check}"](op, samples)
    COVERAGE[(op.name, check)] = "ok"
