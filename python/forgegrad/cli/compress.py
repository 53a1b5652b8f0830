"""``forgegrad compress CHECKPOINT --quantize dynamic|static|qat --prune SPARSITY --distill-from TEACHER
--out DIR``: compress a classifier checkpoint, write the compressed checkpoint and its ONNX file, and
print a before/after table (size on disk, accuracy on the held-out split, latency at batch 1 and 64).

Order: structured pruning (L2 norm, the layers shrink) -> fine-tuning (with the teacher's soft
targets when --distill-from is given; --finetune-epochs) -> quantization (dynamic: int8 Linear
weights, activations per batch; static: calibrated on 10 training batches; qat: fake-quant
fine-tuning, then convert). The compressed checkpoint records what was done, so ``forgegrad eval``
and ``forgegrad export`` rebuild it (see ``rebuild``).
"""
from __future__ import annotations

import os
import time

import numpy as np

from .. import models
from .. import random as _random
from ..autograd import no_grad
from ..tensor import Tensor
from . import _checkpoint, _data, _loop
from ._argtypes import positive_int
from ._errors import CLIError, UsageError, require

QUANTIZE = ("dynamic", "static", "qat")
ONNX_NAME = "model.onnx"


def add_parser(sub):
    p = sub.add_parser("compress", help="prune, distill and/or quantize a checkpoint; print a before/after table",
                       description=__doc__.split("\n\n")[0].split(": ", 1)[-1] if __doc__ else None)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a `forgegrad train` output (directory, .json or "
                   ".safetensors) of a classifier")
    p.add_argument("--quantize", choices=QUANTIZE, default=None, help="int8 quantization mode")
    p.add_argument("--prune", type=_sparsity, default=None, metavar="SPARSITY",
                   help="fraction of hidden units/channels to remove (structured; e.g. 0.5)")
    p.add_argument("--distill-from", default=None, metavar="TEACHER",
                   help="a checkpoint whose outputs guide the fine-tuning (DistillationLoss T=2, alpha=0.5)")
    p.add_argument("--finetune-epochs", type=positive_int, default=3,
                   help="epochs of fine-tuning after pruning, for distillation and for qat (default 3)")
    p.add_argument("--lr", type=float, default=5e-4, help="fine-tuning learning rate (Adam, default 5e-4)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for model.safetensors, model.json, "
                   "model.onnx")
    p.add_argument("--no-onnx", action="store_true", help="do not write the ONNX file")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)
    return p


def _sparsity(text):
    import argparse
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return v


# ---- rebuilding a compressed checkpoint --------------------------------------------------------------
def rebuild(model, compression: dict, state) -> None:
    """Give a freshly built zoo model the structure a compressed checkpoint's weights need (in place
    where possible): shrunk layer sizes, then quantized layers. Returns the model to load into."""
    from ..nn.utils.shrink import resize_to_state_dict

    if compression.get("prune"):
        resize_to_state_dict(model, state)
    mode = compression.get("quantize")
    if mode == "dynamic":
        from ..quantization import quantize_dynamic
        return quantize_dynamic(model, inplace=False)
    if mode in ("static", "qat"):
        from ..nn import Conv2d, Linear
        from ..quantization.static import QuantizedConv2d, QuantizedLinear
        for path, parent in list(model.named_modules()):
            for name, child in list(parent._modules.items()):
                key = f"{path}.{name}.weight" if path else f"{name}.weight"
                w = state.get(key)
                if w is None or np.asarray(getattr(w, "data", w)).dtype != np.int8:
                    continue
                if type(child) is Linear:
                    q = QuantizedLinear(child.in_features, child.out_features, child.bias is not None)
                elif type(child) is Conv2d:
                    q = QuantizedConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                        child.padding, child.dilation, child.bias is not None)
                else:
                    raise ValueError(f"{key} is int8 but {path}.{name} is a {type(child).__name__}")
                setattr(parent, name, q)
        from ..quantization.static import _fuse
        _fuse(model)  # as convert did: the same layers fused (the int8 weights are loaded afterwards)
        return model
    if mode is not None:
        raise ValueError(f"unknown quantization mode {mode!r} in the checkpoint")
    return model


# ---- measuring ------------------------------------------------------------------------------------------
def _latency_ms(model, sample, batch, repeats):
    x = Tensor._stored(np.ascontiguousarray(np.repeat(sample[:1], batch, axis=0)))
    model.eval()
    times = []
    with no_grad():
        model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def measure(model, weights_path, x_val, y_val):
    acc = _loop.evaluate(model, "classify", x_val, y_val)["accuracy"]
    return {"size": os.path.getsize(weights_path), "accuracy": acc,
            "latency_b1": _latency_ms(model, x_val, 1, 50), "latency_b64": _latency_ms(model, x_val, 64, 10)}


def format_table(before, after) -> str:
    rows = [("size on disk", f"{before['size'] / 1024:,.1f} KiB", f"{after['size'] / 1024:,.1f} KiB",
             f"{after['size'] / before['size']:.2f}x"),
            ("accuracy (held-out)", f"{before['accuracy'] * 100:.2f} %", f"{after['accuracy'] * 100:.2f} %",
             f"{(after['accuracy'] - before['accuracy']) * 100:+.2f} pts"),
            ("latency batch 1", f"{before['latency_b1']:.3f} ms", f"{after['latency_b1']:.3f} ms",
             f"{before['latency_b1'] / after['latency_b1']:.2f}x speed"),
            ("latency batch 64", f"{before['latency_b64']:.3f} ms", f"{after['latency_b64']:.3f} ms",
             f"{before['latency_b64'] / after['latency_b64']:.2f}x speed")]
    head = ("", "before", "after", "change")
    w = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = lambda r: "  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))  # noqa: E731
    return "\n".join([line(head), "  ".join("-" * n for n in w)] + [line(r) for r in rows])


# ---- the command ------------------------------------------------------------------------------------------
def _finetune(model, teacher, x, y, epochs, lr, seed):
    from ..data import DataLoader, TensorDataset
    from ..nn import CrossEntropyLoss
    from ..optim import Adam
    from ..train import DistillationLoss, fit

    loss = DistillationLoss(temperature=2.0, alpha=0.5) if teacher is not None else CrossEntropyLoss()
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, seed=seed)
    fit(model, loss, Adam(model.parameters(), lr=lr), loader, epochs=epochs, progress=False, teacher=teacher)


def run(args, log=print):
    if args.quantize is None and args.prune is None and args.distill_from is None:
        raise UsageError("nothing to do: give --quantize, --prune and/or --distill-from")
    model, meta = _checkpoint.load(args.checkpoint)
    if meta.get("task") != "classify":
        raise UsageError(f"compress works on classifiers; {meta['name']} is a {meta.get('task')} model")
    if meta.get("compression"):
        raise UsageError(f"{args.checkpoint} is already compressed ({meta['compression']}); compress the original")
    spec = models.spec(meta["name"])
    from .train import prepare
    ds = _data.load(meta.get("data") or "digits")
    split = meta.get("split", {})
    x_tr, y_tr, x_va, y_va, _ = prepare(spec, ds, split.get("seed", 0), split.get("val_fraction", 0.2) or 0.2)
    teacher = None
    if args.distill_from:
        teacher, tmeta = _checkpoint.load(args.distill_from)
        if tmeta.get("task") != "classify" or tmeta.get("num_classes") != meta.get("num_classes"):
            raise UsageError("--distill-from must be a classifier with the same classes as CHECKPOINT")
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    weights_before = os.path.join(os.path.dirname(_checkpoint.resolve(args.checkpoint)), meta.get("weights",
                                                                                                  _checkpoint.WEIGHTS))
    before = measure(model, weights_before, x_va, y_va)
    _random.manual_seed(args.seed)
    steps = []
    if args.prune:
        from ..nn.utils.shrink import prune_structured
        try:
            report = prune_structured(model, amount=args.prune)
        except ValueError as e:
            raise CLIError(f"--prune: {e}") from None
        steps.append("pruned " + ", ".join(f"{k} {a}->{b}" for k, (a, b) in report.items()))
    if args.prune or teacher is not None:
        _finetune(model, teacher, x_tr, y_tr, args.finetune_epochs, args.lr, args.seed)
        steps.append(f"fine-tuned {args.finetune_epochs} epochs" + (" distilling from " + args.distill_from
                                                                     if teacher is not None else ""))
    model.eval()
    if args.quantize == "dynamic":
        from ..quantization import quantize_dynamic
        model = quantize_dynamic(model)
    elif args.quantize in ("static", "qat"):
        from ..quantization import calibrate, convert, prepare as q_prepare, prepare_qat
        if args.quantize == "static":
            prepared = q_prepare(model)
            calibrate(prepared, [x_tr[i:i + 64] for i in range(0, min(len(x_tr), 640), 64)])
        else:
            prepared = prepare_qat(model)
            _finetune(prepared, teacher, x_tr, y_tr, args.finetune_epochs, args.lr, args.seed)
        model = convert(prepared)
    if args.quantize:
        steps.append(f"quantized ({args.quantize})")
    comp = {"prune": args.prune, "quantize": args.quantize, "distill_from": args.distill_from,
            "finetune_epochs": args.finetune_epochs}
    new_meta = {k: v for k, v in meta.items() if k not in ("format", "weights", "name", "kwargs")}
    new_meta.update(compression=comp, compressed_from=os.path.abspath(args.checkpoint))
    _checkpoint.save_weights(model, os.path.join(out, _checkpoint.WEIGHTS))
    _checkpoint.save_meta(dict(new_meta, name=meta["name"], kwargs=meta.get("kwargs", {})), out)
    after = measure(model, os.path.join(out, _checkpoint.WEIGHTS), x_va, y_va)
    log(f"{meta['name']}: " + "; ".join(steps))
    if not args.no_onnx:
        log(_write_onnx(model, args.quantize, x_va[:64], os.path.join(out, ONNX_NAME), meta))
    log(format_table(before, after))
    log(f"compressed checkpoint: {os.path.join(out, _checkpoint.WEIGHTS)} (+ {_checkpoint.META})")
    return 0


def _write_onnx(model, mode, example, path, meta):
    require("onnx", "onnx", what="ONNX export")
    require("onnxruntime", "onnx", what="verifying the ONNX export")
    x = Tensor._stored(np.ascontiguousarray(example))
    try:
        if mode in ("static", "qat"):
            from ..quantization.static_onnx import export_static_onnx
            r = export_static_onnx(model, x, path)
            return (f"ONNX: {path} ({os.path.getsize(path):,} bytes; {', '.join(r['ops'])}); onnxruntime max "
                    f"|error| {r['max_abs_error']:.3g} <= one output step {r['step']:.3g}")
        from .export import export_model, format_report
        if mode == "dynamic" and x.ndim == 2:
            from ..quantization import export_onnx
            try:  # a chain: onnxruntime's own (fastest) dynamic-quantization form
                r = export_onnx(model, x, path)
                return f"ONNX: {path} ({os.path.getsize(path):,} bytes) {r}"
            except NotImplementedError:
                pass  # any other model: forgegrad.onnx.export below
        r = export_model(model, meta, path, batch=4)
        return f"ONNX: {path} ({os.path.getsize(path):,} bytes), verified in onnxruntime\n{format_report(r)}"
    except (NotImplementedError, ValueError) as e:
        raise CLIError(f"ONNX export failed: {str(e).splitlines()[0]}") from None
