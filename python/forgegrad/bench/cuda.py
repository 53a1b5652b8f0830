"""The `cuda` suite: forgegrad's CUDA kernels against torch (cuBLAS / cuDNN) on the same GPU.

Workloads, the same data and weights on both sides, TF32 off on both (torch's matmul and cuDNN flags
set to False for the suite) unless the row says TF32:
  * SGEMM 4096^3 and 1024^3 through ``fg.matmul`` on cuda tensors (FP32; 4096^3 with TF32 too);
  * a 3x3 convolution's forward + backward (input, weight and bias gradients) at a ResNet stage shape;
  * training steps with Adam: the LeNet zoo model (batch 64) and an LSTM layer + Linear head
    (T 50, batch 32, 128 -> 256, the `rnn` suite's shape); the gpt suite's GPT step (AdamW).
Each timed call queues ``INNER`` repetitions and then waits for the device, so the row is the GPU's
time per call plus 1/INNER of one synchronisation; the clock is wall time. Without a GPU every row is
absent and its note says why; without torch built with CUDA the torch column is absent.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from . import _timing
from ._timing import optional_import

INNER = 10
RUNTIMES = ("forgegrad", "torch")


def _torch_cuda():
    torch = optional_import("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


def _synced(fn, synchronize):
    """A call that runs fn INNER times, then waits for that runtime's queued GPU work."""
    def run():
        for _ in range(INNER):
            fn()
        synchronize()
    return run


def _pair(fg_fn, torch_fn):
    from .. import cuda as fcuda
    torch = _torch_cuda()
    return {"forgegrad": _synced(fg_fn, fcuda.synchronize),
            "torch": None if torch_fn is None else _synced(torch_fn, torch.cuda.synchronize)}


def _sgemm_fns(n: int, tf32: bool):
    import forgegrad as fg
    from .. import cuda as fcuda
    torch = _torch_cuda()
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    fa, fb = fg.tensor(a).to("cuda"), fg.tensor(b).to("cuda")

    def ours():
        old = fcuda.matmul_allow_tf32
        fcuda.matmul_allow_tf32 = tf32
        try:
            with fg.no_grad():
                fg.matmul(fa, fb)
        finally:
            fcuda.matmul_allow_tf32 = old

    theirs = None
    if torch is not None:
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()

        def theirs():
            old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                torch.matmul(ta, tb)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old
    return _pair(ours, theirs)


CONV = (32, 64, 56, 56, 64)  # batch, in channels, height, width, out channels; 3x3, padding 1


def _conv_fns():
    import forgegrad as fg
    import forgegrad.nn.functional as F
    torch = _torch_cuda()
    n, c, h, w, k = CONV
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c, 3, 3)) * 0.05).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    gy = rng.standard_normal((n, k, h, w)).astype(np.float32)
    fx, fw, fbias = (fg.tensor(v).to("cuda").requires_grad_(True) for v in (x, wt, bias))
    fgy = fg.tensor(gy).to("cuda")

    def ours():
        fx.grad = fw.grad = fbias.grad = None
        F.conv2d(fx, fw, fbias, padding=1).backward(fgy)

    theirs = None
    if torch is not None:
        tx, tw, tbias = (torch.from_numpy(v).cuda().requires_grad_(True) for v in (x, wt, bias))
        tgy = torch.from_numpy(gy).cuda()

        def theirs():
            tx.grad = tw.grad = tbias.grad = None
            torch.nn.functional.conv2d(tx, tw, tbias, padding=1).backward(tgy)
    return _pair(ours, theirs)


def _classifier_step_fns(model, torch_model, x: np.ndarray, y: np.ndarray):
    """forward + cross-entropy + backward + Adam on cuda, forgegrad and its torch twin (same weights)."""
    from ._steps import classifier_step_fns
    fns = classifier_step_fns(model, torch_model, x, y, _torch_cuda(), device="cuda")
    return _pair(fns["forgegrad"], fns["torch"])


def _lenet_fns():
    from ..models import LeNet
    from .cnn import torch_lenet
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    torch = _torch_cuda()
    return _classifier_step_fns(LeNet(in_channels=1, num_classes=10, input_size=28),
                                torch_lenet(torch) if torch is not None else None, x, y)


LSTM = (50, 32, 128, 256)  # T, batch, input, hidden (the rnn suite's training shape), batch_first


def _lstm_fns():
    from ..models import SequenceClassifier
    torch = _torch_cuda()
    t, b, i, h = LSTM
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, t, i)).astype(np.float32)
    y = rng.integers(0, 10, b)
    twin = None
    if torch is not None:
        class TorchSequenceClassifier(torch.nn.Module):  # SequenceClassifier's names: rnn, fc
            def __init__(self):
                super().__init__()
                self.rnn = torch.nn.LSTM(i, h, batch_first=True)
                self.fc = torch.nn.Linear(h, 10)

            def forward(self, inp):
                return self.fc(self.rnn(inp)[0][:, -1, :])
        twin = TorchSequenceClassifier()
    return _classifier_step_fns(SequenceClassifier(i, hidden_size=h, num_classes=10), twin, x, y)


def _gpt_fns():
    """The gpt suite's training step (4 layers x 4 heads x 256, batch 16, T 128, AdamW) on cuda."""
    from .gpt import train_fns
    fns = train_fns(_torch_cuda(), device="cuda")
    return _pair(fns["forgegrad"], fns["torch"])


def workloads(quick: bool = False) -> List[Workload]:
    out = [Workload("SGEMM 4096^3 FP32", RUNTIMES, lambda _t: _sgemm_fns(4096, False), flop=2.0 * 4096 ** 3),
           Workload("SGEMM 4096^3 TF32", RUNTIMES, lambda _t: _sgemm_fns(4096, True), flop=2.0 * 4096 ** 3)]
    if not quick:
        out.append(Workload("SGEMM 1024^3 FP32", RUNTIMES, lambda _t: _sgemm_fns(1024, False), flop=2.0 * 1024 ** 3))
    n, c, h, w, k = CONV
    out += [Workload(f"conv3x3 fwd+bwd {n}x{c}x{h}x{w} -> {k}", RUNTIMES, lambda _t: _conv_fns(),
                     flop=3 * 2.0 * n * k * c * 9 * h * w),
            Workload("LeNet train step, batch 64, Adam", RUNTIMES, lambda _t: _lenet_fns())]
    t, b, i, hid = LSTM
    out.append(Workload(f"LSTM train step T{t} B{b} I{i} H{hid}, Adam", RUNTIMES, lambda _t: _lstm_fns(),
                        flop=3 * 2.0 * t * b * 4 * hid * (i + hid)))
    out.append(Workload("GPT 4L-4H-256 train step, B16 T128, AdamW", RUNTIMES, lambda _t: _gpt_fns()))
    return out


@contextmanager
def _fp32_everywhere():
    """Wall-clock timing, and torch's TF32 switches off (rows that want TF32 turn it on per call)."""
    torch = _torch_cuda()
    old_clock = _timing.CLOCK
    _timing.CLOCK = "wall"
    flags = None
    if torch is not None:
        flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        _timing.CLOCK = old_clock
        if flags is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _per_call(rows: List[dict]) -> List[dict]:
    """The timed callables ran INNER calls each: report seconds per call."""
    for row in rows:
        row["seconds"] = {k: (None if v is None else v / INNER) for k, v in row["seconds"].items()}
        row["samples"] = {k: (None if v is None else [s / INNER for s in v]) for k, v in row["samples"].items()}
    return rows


@suite("cuda")
def cuda_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    from .. import cuda as fcuda
    if not fcuda.is_available():  # `bench all` on a machine without a GPU: the rows say why they are empty
        rows = [{"workload": w.name, "threads": threads[0], "seconds": {k: None for k in w.runtimes},
                 "samples": {k: None for k in w.runtimes}, "clock": "wall"} for w in workloads(quick)]
        rows[0]["note"] = f"no row ran: {fcuda.unavailable_reason()}"
        return rows
    with _fp32_everywhere():
        rows = time_workloads(workloads(quick), threads[:1], repeat=5 if quick else 9, min_time=0.05)
    torch = _torch_cuda()
    note = f"GPU: {torch.cuda.get_device_name(0)}" if torch is not None else "torch with CUDA not installed"
    if rows:
        rows[0]["note"] = note
    return _per_call(rows)
