"""Every op with a kernel on a device: forward values and input gradients equal the CPU's.

Registry-driven and parametrised over devices: for each device, each op whose record has a Function
for it (``OpDef.functions``), each of the op's own samples runs on the CPU and on the device (inputs
copied there, the cotangents too) and the outputs and gradients must agree within 1e-5 relative
(to each output's largest magnitude; for gradients, to the sample's largest gradient). ``seam`` is
the CPU-backed test device of tests/device_seam_helpers.py (it runs the CPU kernels, so it agrees to
the bit); ``cuda`` runs where a GPU is present (tools/gpu_check.sh runs this test) and is skipped
with the reason elsewhere.
"""
from __future__ import annotations

import numpy as np
import pytest

import device_seam_helpers as seam
import forgegrad as fg
import forgegrad.cuda as fcuda


RTOL = 1e-5
DEVICES = {
    seam.DEVICE: None,
    "cuda": None if fcuda.is_available() else f"CUDA is not available: {fcuda.unavailable_reason()}",
}


@pytest.fixture(autouse=True, scope="module")
def _seam_device():
    with seam.registered():
        yield


def _cases():
    for dev, skip in DEVICES.items():
        # the seam device adapts every op (it is registered by the fixture, after collection)
        ops = [op for op in fg.ops.all_ops()
               if (dev == seam.DEVICE or dev in op.functions) and op.samples is not None]
        if skip is not None:
            # the ops are listed even without the device, so the skip says which ones did not run
            names = ", ".join(op.name for op in ops) or "none yet"
            why = f"{skip} (ops with {dev} kernels: {names})"
            yield pytest.param(dev, None, marks=pytest.mark.skipif(skip is not None, reason=why),
                               id=f"{dev}-all")
            continue
        for op in ops:
            yield pytest.param(dev, op, id=f"{dev}-{op.name}")


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _run(op, sample, device):
    """Outputs and the gradients of the sample's gradient positions (numpy, on the host) with every
    array argument a tensor on ``device``; the cotangents are the same random arrays on both sides."""
    positions = sample.grad_positions()
    args = []
    for i, a in enumerate(sample.args):
        if isinstance(a, np.ndarray):
            t = fg.tensor(a.copy()).to(device)
            args.append(t.requires_grad_(True) if i in positions else t)
        else:
            args.append(a)
    outs = _as_tuple(op(*args, **sample.kwargs))
    values = [o.cpu().numpy().copy() for o in outs]
    rng = np.random.default_rng(7)
    total = None
    for o in outs:
        if o.requires_grad:
            c = fg.tensor(rng.uniform(-1, 1, size=o.shape).astype(o._data.dtype)).to(device)
            term = (o * c).sum()
            total = term if total is None else total + term
    grads = []
    if total is not None:
        total.backward()
        for p in positions:
            g = args[p].grad
            assert g is None or g.device == device, f"{op.name}: gradient of input {p} on {g.device}, not {device}"
            grads.append(np.zeros(sample.args[p].shape, np.float32) if g is None else g.cpu().numpy())
    return values, grads


def _largest(arrays) -> float:
    finite = [np.abs(a[np.isfinite(a)]) for a in arrays if a.dtype.kind == "f"]
    return max((float(f.max()) for f in finite if f.size), default=0.0)


def _close(got, want, what, floor=0.0):
    """Equal within RTOL of the larger of want's largest magnitude and ``floor``."""
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype, want.dtype)
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=what)
    scale = max(_largest([want]), floor)
    np.testing.assert_allclose(got[finite], want[finite], rtol=RTOL, atol=RTOL * scale, err_msg=what)


@pytest.mark.parametrize("device, op", list(_cases()))
def test_op_on_device_matches_cpu(device, op):
    for k, sample in enumerate(op.samples()):
        fg.manual_seed(0)  # ops that draw (dropout) draw the same numbers on both sides
        want_v, want_g = _run(op, sample, "cpu")
        fg.manual_seed(0)
        got_v, got_g = _run(op, sample, device)
        label = f"{op.name} sample {k} ({sample.name or 'unnamed'}) on {device}"
        assert len(got_v) == len(want_v)
        for i, (g, w) in enumerate(zip(got_v, want_v)):
            _close(g, w, f"{label}: output {i}")
        assert len(got_g) == len(want_g)
        # A gradient that is zero by the math (softmax over one key, RMS norm of one element) is the
        # rounding noise of terms as large as the sample's other gradients: it is compared at their scale.
        floor = _largest(want_g)
        for i, (g, w) in enumerate(zip(got_g, want_g)):
            _close(g, w, f"{label}: gradient {i}", floor)


def test_seam_agrees_to_the_bit():
    """The seam device runs the CPU kernels: its results are the CPU's bits, not just close."""
    op = fg.ops.get("linear")
    sample = op.samples()[0]
    (cv, cg), (sv, sg) = _run(op, sample, "cpu"), _run(op, sample, seam.DEVICE)
    for a, b in zip(cv + cg, sv + sg):
        np.testing.assert_array_equal(a, b)
