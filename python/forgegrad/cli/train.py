"""``forgegrad train MODEL --data digits|PATH``: train a zoo model and write a rebuildable checkpoint."""
from __future__ import annotations

import json
import os


from .. import models
from .. import random as _random
from .._version import __version__
from . import _checkpoint, _data, _lm, _loop
from ._argtypes import fraction, positive_float, positive_int
from ._errors import CLIError, UsageError, require

OPTIMIZERS = ("adam", "adamw", "sgd")


def add_parser(sub):
    p = sub.add_parser("train", help="train a zoo model on a data set and save a checkpoint",
                       description="Train a model from forgegrad.models on the bundled digits or a data file; "
                                   "writes OUT/model.safetensors, OUT/model.json (how to rebuild it) and "
                                   "OUT/training_curve.png.")
    p.add_argument("model", metavar="MODEL", help=f"zoo model name ({', '.join(models.available())})")
    add_data_args(p)
    p.add_argument("--epochs", type=positive_int, default=10, help="passes over the training data (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="samples per step (default 64)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="default adam")
    p.add_argument("--val-split", type=fraction, default=0.2,
                   help="fraction of the data held out for validation (default 0.2; 0 disables)")
    p.add_argument("--arg", dest="model_args", action="append", default=[], metavar="KEY=VALUE",
                   help="model keyword argument, VALUE parsed as JSON when it can be (repeatable), "
                        "e.g. --arg hidden=[256,128] --arg dropout=0.1")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight for the VAE models (default 1)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default runs/MODEL)")
    p.add_argument("--no-plot", action="store_true", help="do not write the training-curve PNG")
    p.add_argument("--ranks", type=positive_int, default=None, metavar="N",
                   help="data-parallel training on N MPI ranks: re-runs this command under mpiexec (needs the "
                        "'mpi' extra); --batch-size is then per rank. Under mpiexec/srun it is implied")
    _lm.add_args(p)
    p.set_defaults(run=run)
    return p


def add_data_args(p, default="digits"):
    p.add_argument("--data", default=default, metavar="digits|PATH",
                   help=f"data set: 'digits' (bundled 8x8 digits) or a file: {_data.FILE_KINDS} (default {default})")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling and the split (default 0)")


def parse_model_args(pairs):
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--arg expects KEY=VALUE with a Python identifier as KEY, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value  # a bare string such as activation=tanh
    return out


def prepare(spec, ds, seed, val_split):
    """(x_train, y_train, x_val, y_val, inferred kwargs) for a zoo entry, checking the data fits the task."""
    if spec.task == "lm" and ds.vocab is None:
        raise UsageError(f"model {spec.name!r} is a language model: give it a text file (--data PATH.txt)")
    if spec.task != "lm" and ds.vocab is not None:
        raise UsageError(f"{ds.name} is text; only char_lstm trains on text")
    if spec.task == "classify" and ds.y is None:
        raise UsageError(f"model {spec.name!r} is a classifier but {ds.name} has no labels")
    if spec.task == "vae" and (ds.x.min() < 0 or ds.x.max() > 1):
        raise UsageError(f"model {spec.name!r} needs inputs in [0, 1]; {ds.name} spans "
                         f"[{ds.x.min():.3g}, {ds.x.max():.3g}]")
    try:
        x = _data.shape_for(ds.x, spec.input_kind)
        inferred = spec.data_kwargs(tuple(ds.x.shape[1:]), ds.num_classes) if spec.data_kwargs else {}
    except ValueError as e:
        raise UsageError(f"model {spec.name!r} cannot take {ds.name}: {e}") from None
    y = ds.targets if spec.task == "lm" else ds.y
    tr, va = _data.split(ds, val_split, seed)
    def pick(a, i):
        return None if a is None else a[i]

    return x[tr], pick(y, tr), x[va], pick(y, va), inferred


def build_optimizer(name, params, lr):
    optim = require("forgegrad.optim", None, what="training (forgegrad.optim)")
    cls = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}[name]
    if not hasattr(optim, cls):
        raise CLIError(f"forgegrad.optim.{cls} is not available in this build")
    kwargs = {"lr": lr}
    if name == "sgd":
        kwargs["momentum"] = 0.9
    return getattr(optim, cls)(params, **kwargs)


def build_model(name, kwargs):
    try:
        return models.create(name, **kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _strip_ranks(argv):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--ranks":
            skip = True
        elif not a.startswith("--ranks="):
            out.append(a)
    return out


def _start_world(args):
    """The forgegrad.distributed.comm module when this process is one rank of an MPI job, else None."""
    from ..distributed import comm
    launched = comm.launched_size()
    if args.ranks is not None and launched > 1 and args.ranks != launched:
        raise UsageError(f"--ranks {args.ranks} but the MPI launcher started {launched} ranks; leave --ranks out "
                         "under mpiexec")
    if launched <= 1:
        return None
    try:
        comm.init()
    except ImportError as e:
        raise CLIError(str(e)) from None
    if args.threads is None and "FORGEGRAD_NUM_THREADS" not in os.environ:
        from .._runtime import set_num_threads
        from ..distributed.launch import threads_per_rank
        set_num_threads(threads_per_rank(comm.local_size()))  # N ranks share the node's cores
    return comm


def run(args, log=print):
    try:
        spec = models.spec(args.model)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if spec.task == "causal_lm":  # byte-level language models: their own loop (steps, schedule, samples)
        if args.ranks is not None and args.ranks > 1:
            raise UsageError("--ranks: data-parallel training of language models (gpt) is not supported yet")
        return _lm.run(args, spec, build_model, parse_model_args, log)
    from ..distributed import comm as _comm
    if args.ranks is not None and args.ranks > 1 and _comm.launched_size() <= 1:
        from ..distributed import launch
        if not _comm.is_available():
            raise CLIError('--ranks needs mpi4py and an MPI library: pip install "forgegrad[mpi]"')
        try:
            return launch.relaunch(_strip_ranks(args.argv), args.ranks)
        except FileNotFoundError as e:
            raise CLIError(str(e)) from None
    world = _start_world(args)
    rank0 = world is None or world.rank() == 0
    if not rank0:
        def log(*a, **k):  # noqa: F811 - rank 0 speaks for the job
            return None
    user_kwargs = parse_model_args(args.model_args)
    ds = _data.load(args.data)
    x_tr, y_tr, x_va, y_va, inferred = prepare(spec, ds, args.seed, args.val_split)
    kwargs = {**inferred, **user_kwargs}
    _random.manual_seed(args.seed)
    model = build_model(spec.name, kwargs)
    net = model
    if world is not None:
        from ..distributed import DistributedDataParallel
        net = DistributedDataParallel(model)  # rank 0's initial weights on every rank
    optimizer = build_optimizer(args.optimizer, model.parameters(), args.lr)
    out = args.out or os.path.join("runs", spec.name)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"training {spec.name} ({n_params:,} parameters) on {ds.name}: {len(x_tr)} train / {len(x_va)} validation "
        f"samples, {args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr}"
        + (f" ({world.size()} MPI ranks, batch {args.batch_size} per rank)" if world is not None else ""))
    meta = {"task": spec.task, "input_kind": spec.input_kind, "input_shape": list(x_tr.shape[1:]),
            "num_classes": ds.num_classes, "data": args.data,
            "split": {"val_fraction": args.val_split, "seed": args.seed},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                      "optimizer": args.optimizer, "beta": args.beta},
            "forgegrad_version": __version__}
    if ds.vocab is not None:
        meta["vocab"] = ds.vocab
    history = []

    def checkpoint(epoch, record):
        history.append(record)
        if rank0:
            _checkpoint.save(model, dict(meta, epochs_completed=epoch, history=history), out)

    loss_fn = _loop.make_loss(spec.task, beta=args.beta)
    try:
        _loop.fit(net, spec.task, optimizer, x_tr, y_tr, x_va, y_va, args.epochs, args.batch_size,
                  _random.generator(), on_epoch_end=checkpoint, progress=not args.no_progress and rank0,
                  log=log, loss_fn=loss_fn, world=world)
    except _loop.Interrupted as e:
        _plot(args, history, out, spec.name, log)
        where = (f"the checkpoint of epoch {e.epochs_done} is kept in {out}" if e.epochs_done
                 else "no epoch finished, so no checkpoint was written")
        raise CLIError(f"interrupted during epoch {e.epochs_done + 1}; {where}", code=130) from None
    except FloatingPointError as e:
        raise CLIError(str(e)) from None
    _plot(args, history, out, spec.name, log)
    final = history[-1]
    log("final: " + _loop.format_metrics({k: v for k, v in final.items() if k not in ("epoch", "seconds")}))
    log(f"checkpoint: {os.path.join(out, _checkpoint.WEIGHTS)} (+ {_checkpoint.META})")
    return 0


def _plot(args, history, out, name, log):
    from ..distributed import comm
    if args.no_plot or not history or (comm.is_distributed() and comm.rank() != 0):
        return
    path = os.path.join(out, "training_curve.png")
    if _loop.plot_history(history, path, title=f"{name}"):
        log(f"training curve: {path}")
    else:
        log('no training curve: matplotlib is not installed (pip install "forgegrad[plot]")')
