"""``forgegrad eval CHECKPOINT``: metrics of a trained checkpoint on a data set."""
from __future__ import annotations

import json

from .. import models
from . import _checkpoint, _data, _lm, _loop
from ._argtypes import positive_int
from ._errors import UsageError
from .train import prepare


def add_parser(sub):
    p = sub.add_parser("eval", help="evaluate a checkpoint on a data set",
                       description="Loss and accuracy (classifiers), negative ELBO and reconstruction error (VAEs) "
                                   "or perplexity (char_lstm) of a checkpoint written by `forgegrad train`.")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="the train --out directory, its model.json or model.safetensors")
    p.add_argument("--data", default=None, metavar="digits|PATH",
                   help="data set (default: the one the checkpoint was trained on)")
    p.add_argument("--split", choices=("val", "all"), default=None,
                   help="'val': the validation samples held out in training (default when --data is the training "
                        "data), 'all': every sample")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(run=run)
    return p


def run(args, log=print):
    model, meta = _checkpoint.load(args.checkpoint)
    spec = models.spec(meta["name"])
    data = args.data or meta.get("data")
    if not data:
        raise UsageError("the checkpoint does not say which data it was trained on: pass --data")
    if spec.task == "causal_lm":
        return _eval_lm(args, model, meta, data, log)
    ds = _data.load(data, vocab=meta.get("vocab"))
    same_data = data == meta.get("data")
    split_cfg = meta.get("split", {})
    split = args.split or ("val" if same_data and split_cfg.get("val_fraction", 0) > 0 else "all")
    if split == "val":
        if not same_data:
            raise UsageError("--split val needs the data the checkpoint was trained on; use --split all")
        if not split_cfg.get("val_fraction", 0):
            raise UsageError("the checkpoint was trained without a validation split; use --split all")
        _, _, x, y, _ = prepare(spec, ds, split_cfg.get("seed", 0), split_cfg["val_fraction"])
    else:
        x, y, _, _, _ = prepare(spec, ds, 0, 0.0)
    if list(x.shape[1:]) != list(meta.get("input_shape", x.shape[1:])):
        raise UsageError(f"{ds.name} has samples of shape {tuple(x.shape[1:])} but the model takes "
                         f"{tuple(meta['input_shape'])}")
    if spec.task == "classify" and meta.get("num_classes") and y is not None and y.max() >= meta["num_classes"]:
        raise UsageError(f"{ds.name} has label {int(y.max())} but the model has {meta['num_classes']} classes")
    beta = meta.get("train", {}).get("beta", 1.0)
    metrics = _loop.evaluate(model, spec.task, x, y, batch_size=args.batch_size,
                             loss_fn=_loop.make_loss(spec.task, beta=beta))
    if args.json:
        log(json.dumps({"model": meta["name"], "data": ds.name, "split": split, "samples": len(x), **metrics}))
    else:
        log(f"{meta['name']} on {ds.name} ({split}, {len(x)} samples): " + _loop.format_metrics(metrics))
    return 0


def _eval_lm(args, model, meta, data, log):
    """Next-byte loss of a byte-level language model: the held-out tail of its training text
    (``--split val``) or the whole file."""
    import math
    tokens = _lm.read_bytes(data)
    frac = meta.get("split", {}).get("val_fraction", 0)
    split = args.split or ("val" if data == meta.get("data") and frac > 0 else "all")
    if split == "val":
        if data != meta.get("data") or not frac:
            raise UsageError("--split val needs the data the checkpoint was trained on (with a validation split); "
                             "use --split all")
        _, tokens = _lm.split_bytes(tokens, frac, model.block_size)
    elif len(tokens) < model.block_size + 1:
        raise UsageError(f"{data} has fewer than block_size + 1 = {model.block_size + 1} bytes")
    loss = _lm.evaluate(model, tokens, model.block_size, batch_size=min(args.batch_size, 64), max_windows=10**9)
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
    if args.json:
        log(json.dumps({"model": meta["name"], "data": data, "split": split, "bytes": len(tokens), **metrics}))
    else:
        log(f"{meta['name']} on {data} ({split}, {len(tokens)} bytes): " + _loop.format_metrics(metrics))
    return 0
