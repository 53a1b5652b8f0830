"""``forgegrad quickstart``: train an MLP on the bundled digits, export it to ONNX, verify it in
onnxruntime and compare a few timings with the other installed runtimes, in about a minute."""
from __future__ import annotations

import os
import tempfile

import numpy as np

from .. import models
from .. import random as _random
from ..tensor import Tensor
from . import _checkpoint, _data, _loop
from ._argtypes import positive_int
from ._errors import optional
from .export import export_model, format_report
from .train import build_optimizer, prepare


def add_parser(sub):
    p = sub.add_parser("quickstart", help="train, export and benchmark a small model in about a minute",
                       description="Train an MLP on the bundled 8x8 digits, export it to ONNX and verify it in "
                                   "onnxruntime, then time a GEMM and an MLP training step against numpy and "
                                   "torch (when installed).")
    p.add_argument("--epochs", type=positive_int, default=20, help="training epochs (default 20)")
    p.add_argument("--quick", action="store_true", help="a few seconds: 2 epochs and short timings")
    p.add_argument("--out", default=None, metavar="DIR", help="keep the checkpoint and model.onnx here "
                                                               "(default: a temporary directory)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="threads for the timings, on every runtime (default 1)")
    p.add_argument("--no-bench", action="store_true", help="skip the timings")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)
    return p


def run(args, log=print):
    if args.out is None:
        with tempfile.TemporaryDirectory(prefix="forgegrad-quickstart-") as tmp:
            return _run(args, tmp, log)
    os.makedirs(args.out, exist_ok=True)
    return _run(args, args.out, log)


def _run(args, out, log):
    epochs = 2 if args.quick else args.epochs
    spec = models.spec("mlp")
    ds = _data.load("digits")
    x_tr, y_tr, x_va, y_va, inferred = prepare(spec, ds, args.seed, 0.2)
    _random.manual_seed(args.seed)
    kwargs = dict(inferred, hidden=[128])
    model = models.create("mlp", **kwargs)
    log(f"[1/3] training mlp {kwargs} on the bundled digits ({len(x_tr)} train / {len(x_va)} validation), "
        f"{epochs} epochs")
    optimizer = build_optimizer("adam", model.parameters(), 3e-3)
    history = []

    def checkpoint(epoch, record):
        history.append(record)
        if epoch == epochs:
            _checkpoint.save(model, {"task": "classify", "input_kind": "flat", "input_shape": [x_tr.shape[1]],
                                     "num_classes": 10, "data": "digits",
                                     "split": {"val_fraction": 0.2, "seed": args.seed},
                                     "epochs_completed": epoch, "history": history}, out)

    def quiet(*a, **k):
        return None

    _loop.fit(model, "classify", optimizer, x_tr, y_tr, x_va, y_va, epochs, 64, _random.generator(),
              on_epoch_end=checkpoint, progress=False, log=quiet)
    final = history[-1]
    log(f"      validation accuracy {100 * final['val_accuracy']:.2f}%  loss {final['val_loss']:.4f}  "
        f"({sum(h['seconds'] for h in history):.1f}s)")

    onnx_path = os.path.join(out, "model.onnx")
    log("[2/3] exporting to ONNX and verifying in onnxruntime; parity report:")
    model.eval()
    report = export_model(model, {"name": "mlp", "task": "classify", "input_kind": "flat",
                                  "input_shape": [x_tr.shape[1]]}, onnx_path, batch=8)
    log(format_report(report))
    if args.out is not None:
        log(f"      wrote {os.path.join(out, _checkpoint.WEIGHTS)} and {onnx_path}")
    if args.no_bench:
        return 0
    log(f"[3/3] timings, {args.threads} thread(s) pinned on every runtime (median per call, interleaved rounds)")
    rows = quick_bench(args.threads, short=args.quick, model=model, onnx_path=onnx_path)
    for line in format_table(rows):
        log(line)
    return 0


def quick_bench(threads: int, short: bool = False, model=None, onnx_path=None):
    """[(workload, {runtime: seconds or None})] for a square GEMM, an MLP training step and, given the
    trained model and its ONNX file, batch inference. None: the runtime is not installed; a runtime
    missing from the dict is not measured for that workload. The runtimes of one workload are timed
    in interleaved rounds (forgegrad.bench's compare), all pinned to ``threads``."""
    from ..bench._timing import compare, pinned_threads
    torch = optional("torch")
    repeat, min_time = (3, 0.005) if short else (7, 0.02)
    rng = np.random.default_rng(0)
    n = 256 if short else 512
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    from ..kernels import matmul
    rows = []
    with pinned_threads(threads):
        fns = {"forgegrad": lambda: matmul(a, b), "numpy": lambda: a @ b, "torch": None}
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            fns["torch"] = lambda: ta @ tb
        rows.append((f"GEMM {n}x{n}x{n}", compare(fns, repeat=repeat, min_time=min_time)))
        from ..bench.train import _mlp_step  # the same workload as `forgegrad bench train`
        _, step_fns = _mlp_step(torch, np.random.default_rng(1))
        rows.append(("MLP step 784-256-10, batch 128, Adam", compare(step_fns, repeat=repeat, min_time=min_time)))
        if model is not None and onnx_path is not None:
            rows.append(("trained MLP inference, batch 256",
                         compare(_inference_fns(model, onnx_path, torch, threads), repeat=repeat, min_time=min_time)))
    return rows


def _inference_fns(model, onnx_path, torch, threads):
    from .. import nn
    from ..autograd import no_grad
    x = np.random.default_rng(2).random((256, 64), dtype=np.float32)
    xt = Tensor._stored(x)
    model.eval()
    # the inference copy forgegrad serve runs: weights packed once, as onnxruntime packs them when it
    # creates its session
    frozen = nn.utils.freeze(model)

    def fg_forward():
        with no_grad():
            return frozen(xt)

    # the same network written out in numpy (Linear layers and ReLU, in order)
    layers = [(m.weight.numpy(), m.bias.numpy()) for m in model if isinstance(m, nn.Linear)]

    def np_forward():
        h = x
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if i < len(layers) - 1:
                h = np.maximum(h, 0)
        return h

    fns = {"forgegrad": fg_forward, "numpy": np_forward, "torch": None, "onnxruntime": None}
    if torch is not None:
        mods = []
        for i, (w, b) in enumerate(layers):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            mods += [lin] + ([torch.nn.ReLU()] if i < len(layers) - 1 else [])
        tm, tx = torch.nn.Sequential(*mods).eval(), torch.from_numpy(x)

        def torch_forward():
            with torch.no_grad():
                return tm(tx)

        fns["torch"] = torch_forward
    ort = optional("onnxruntime")
    if ort is not None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        fns["onnxruntime"] = lambda: sess.run(None, feed)
    return fns


def format_table(rows):
    """One line per workload: each runtime's time, then forgegrad's speed ratio against each
    reference that ran (reference time / forgegrad time; above 1 means forgegrad is faster)."""
    runtimes = ["forgegrad", "numpy", "torch", "onnxruntime"]
    refs = runtimes[1:]
    head = (f"  {'workload':<40}" + "".join(f"{r:>13}" for r in runtimes)
            + "".join(f"{'vs ' + r[:5]:>10}" for r in refs))
    lines = [head, "  " + "-" * (len(head) - 2)]
    for name, times in rows:
        cells = []
        for r in runtimes:
            t = times.get(r)
            cells.append(f"{'-' if r not in times else ('absent' if t is None else f'{t * 1e3:.3f} ms'):>13}")
        for r in refs:
            ratio = ""
            if times.get(r) and times.get("forgegrad"):
                ratio = f"{times[r] / times['forgegrad']:.2f}x"
            cells.append(f"{ratio:>10}")
        lines.append(f"  {name:<40}" + "".join(cells))
    lines.append("  (vs X: X's time / forgegrad's time, above 1 means forgegrad is faster; "
                 "-: not measured; absent: not installed)")
    return lines
