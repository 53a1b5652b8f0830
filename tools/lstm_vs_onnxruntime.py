"""Batch-1 LSTM inference: forgegrad (kernel and nn.LSTM module) against onnxruntime, one thread each,
interleaved, min of N, in one process (issue #12's target: the `rnn` suite's "lstm inference T50 B1").

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python tools/lstm_vs_onnxruntime.py \
        [--reps 40] [--shapes 50,128,256 1,128,256] [--clock cpu|wall]

Rows per shape T,I,H (batch 1, one layer, time-major as the suite):
  kernel  forgegrad.kernels.rnn.lstm_forward(..., training=False), as the `rnn` suite times it;
  module  forgegrad.nn.LSTM under no_grad on a Tensor (the per-call overhead of the module path);
  ort     onnxruntime (intra_op_num_threads=1) on torch's ONNX export of the same weights;
  torch   torch.nn.LSTM under no_grad (torch.set_num_threads(1)).
Each round calls every runtime once (enough calls for ~min_time per sample), the order rotating
between rounds; min over rounds. --clock cpu (default) times the calling thread's CPU time: every side
runs in the calling thread at one thread, and time slices taken by other processes are left out.
T=1 isolates per-call overhead (Python wrappers, session.run, allocation).
"""
import argparse
import io
import os
import time
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import forgegrad  # noqa: E402
from forgegrad import nn  # noqa: E402
from forgegrad.kernels import rnn as K  # noqa: E402


def runtimes(T, I, H):
    import onnxruntime as ort
    import torch
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, 1, I)).astype(np.float32)
    forgegrad.manual_seed(0)
    m = nn.LSTM(I, H)
    tm = torch.nn.LSTM(I, H)
    sd = {k: v._data for k, v in m.state_dict().items()}
    with torch.no_grad():
        for k, p in tm.named_parameters():
            p.copy_(torch.from_numpy(sd[k].copy()))
    w = [sd[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    xt = torch.from_numpy(x)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tm, (xt,), buf, input_names=["x"], output_names=["y", "h_n", "c_n"], dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    xf = forgegrad.Tensor(x)
    feed = {"x": x}

    def module():
        with forgegrad.no_grad():
            return m(xf)

    def torch_run():
        with torch.no_grad():
            return tm(xt)

    fns = {"kernel": lambda: K.lstm_forward(x, None, None, *w, training=False),
           "module": module, "ort": lambda: sess.run(None, feed), "torch": torch_run}
    ref = sess.run(None, feed)[0]
    for k in ("kernel", "module"):
        y = fns[k]()[0]
        y = y.numpy() if hasattr(y, "numpy") else y
        err = float(np.max(np.abs(np.asarray(y) - ref)))
        assert err < 1e-4, (k, err)
    return fns


def measure(fns, reps, clock, min_time):
    for f in fns.values():
        for _ in range(3):
            f()
    loops = {}
    for k, f in fns.items():
        t0 = clock()
        f()
        loops[k] = max(1, int(min_time / max(clock() - t0, 1e-7)))
    names = list(fns)
    best = {k: float("inf") for k in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            f, n = fns[k], loops[k]
            t0 = clock()
            for _ in range(n):
                f()
            best[k] = min(best[k], (clock() - t0) / n)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--shapes", nargs="+", default=["50,128,256", "1,128,256"])
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--min-time", type=float, default=0.01)
    p.add_argument("--only", nargs="+", default=None, help="runtimes to time (default: all)")
    a = p.parse_args()
    forgegrad.set_num_threads(1)
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    print(f"clock {a.clock}, min of {a.reps} interleaved rounds, 1 thread each; us per call")
    for s in a.shapes:
        T, I, H = (int(v) for v in s.split(","))
        fns = runtimes(T, I, H)
        if a.only:
            fns = {k: f for k, f in fns.items() if k in a.only}
        best = measure(fns, a.reps, clock, a.min_time)
        cells = "  ".join(f"{k} {v * 1e6:8.1f}" for k, v in best.items())
        ratios = "  ".join(f"ort/{k} {best['ort'] / best[k]:.3f}" for k in ("kernel", "module")
                           if k in best and "ort" in best)
        print(f"T{T} I{I} H{H} B1: {cells}   {ratios}")


if __name__ == "__main__":
    main()
