"""The training and evaluation loops behind ``forgegrad train``/``eval``/``quickstart``.

Three tasks, from the zoo entry: "classify" (cross-entropy on class labels; loss and accuracy),
"vae" (negative ELBO per sample, and the mean squared error of deterministic reconstructions) and
"lm" (next-token cross-entropy; loss and perplexity).
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from .. import nn
from ..autograd import no_grad
from ..tensor import Tensor
from ._errors import optional


def make_loss(task: str, beta: float = 1.0):
    if task == "vae":
        from ..models import VAELoss
        return VAELoss(beta=beta)
    return nn.CrossEntropyLoss()


def _targets(task, x, y):
    return x if task == "vae" else y


def _loss_value(task, loss_fn, out, target):
    if task == "lm":
        return loss_fn(out.reshape(-1, out.shape[-1]), target.reshape(-1))
    return loss_fn(out, target)


def _batches(n, batch_size, rng=None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def evaluate(model, task, x, y, batch_size=256, loss_fn=None):
    """Metrics of ``model`` on (x, y) without building a graph: loss (+ accuracy | recon_mse | perplexity)."""
    loss_fn = loss_fn or make_loss(task)
    was_training = model.training
    model.eval()
    total, correct, sq_err, n = 0.0, 0, 0.0, len(x)
    try:
        with no_grad():
            for idx in _batches(n, batch_size):
                xb = Tensor._stored(x[idx])
                tb = Tensor._stored(_targets(task, x, y)[idx])
                if task == "vae":
                    # eps = 0: the loss of the posterior mean, so evaluation is deterministic
                    mu, logvar = model.encode(xb)
                    out = (model.decode(mu), mu, logvar)
                    sq_err += float(((out[0]._data - xb._data.reshape(out[0].shape)) ** 2).mean(axis=tuple(
                        range(1, out[0].ndim))).sum())
                else:
                    out = model(xb)
                total += float(_loss_value(task, loss_fn, out, tb).item()) * len(idx)
                if task == "classify":
                    correct += int((out._data.argmax(axis=1) == tb._data).sum())
    finally:
        model.train(was_training)
    m = {"loss": total / max(n, 1)}
    if task == "classify":
        m["accuracy"] = correct / max(n, 1)
    elif task == "vae":
        m["recon_mse"] = sq_err / max(n, 1)
    elif task == "lm":
        m["perplexity"] = math.exp(min(m["loss"], 50.0))
    return m


def format_metrics(m, prefix=""):
    parts = []
    for k, v in m.items():
        if k.endswith("accuracy"):
            parts.append(f"{prefix}{k} {100 * v:.2f}%")
        else:
            parts.append(f"{prefix}{k} {v:.4f}")
    return "  ".join(parts)


class Interrupted(Exception):
    """Ctrl-C during training; ``epochs_done`` full epochs were completed (and checkpointed)."""

    def __init__(self, epochs_done):
        super().__init__(epochs_done)
        self.epochs_done = epochs_done


def _rank_batches(n, batch_size, rng, world):
    """This rank's batches: the epoch's permutation (the same on every rank: same seed), padded by
    repeating its start to a multiple of the number of ranks, every size()-th index from rank()."""
    order = rng.permutation(n)
    ranks = world.size()
    total = -(-n // ranks) * ranks
    order = np.concatenate([order, order[:total - n]])[world.rank()::ranks]
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


def _evaluate_sharded(world, model, task, x, y, loss_fn):
    """evaluate() over this rank's share of (x, y), combined over ranks weighted by sample counts."""
    idx = np.arange(world.rank(), len(x), world.size())
    m = evaluate(model, task, x[idx], None if y is None else y[idx], loss_fn=loss_fn) if len(idx) else {}
    keys = {"classify": ("loss", "accuracy"), "vae": ("loss", "recon_mse")}.get(task, ("loss",))
    sums = np.array([len(idx)] + [m.get(k, 0.0) * len(idx) for k in keys], np.float64)
    world.allreduce(sums)
    out = {k: float(v / max(sums[0], 1)) for k, v in zip(keys, sums[1:])}
    if task == "lm":
        out["perplexity"] = math.exp(min(out["loss"], 50.0))
    return out


def fit(model, task, optimizer, x_train, y_train, x_val, y_val, epochs, batch_size, rng, on_epoch_end=None,
        progress=True, log=print, loss_fn=None, world=None):
    """Train for ``epochs``; after each epoch evaluate on the validation data and call
    on_epoch_end(epoch, record). Returns the history (one dict per epoch).

    ``world`` (forgegrad.distributed.comm in an MPI job; the model then a DistributedDataParallel):
    each rank trains on its shard of every epoch's permutation and the train loss and validation
    metrics are averaged over all ranks' samples.

    A KeyboardInterrupt stops training at once and raises Interrupted (the previous epoch's
    on_epoch_end, e.g. a checkpoint, has already run).
    """
    tqdm = optional("tqdm") if progress else None
    loss_fn = loss_fn or make_loss(task)
    history = []
    n = len(x_train)
    per_rank = n if world is None else -(-n // world.size())
    n_batches = (per_rank + batch_size - 1) // batch_size
    inner = getattr(model, "module", model) if world is not None else model  # evaluate needs e.g. vae.encode
    targets = _targets(task, x_train, y_train)
    for epoch in range(1, epochs + 1):
        bar = None
        if tqdm is not None:
            bar = tqdm.tqdm(total=n_batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                            file=sys.stderr, dynamic_ncols=True)
        t0 = time.perf_counter()
        model.train()
        running, seen = 0.0, 0
        try:
            batches = _batches(n, batch_size, rng) if world is None else _rank_batches(n, batch_size, rng, world)
            for idx in batches:
                xb, tb = Tensor._stored(x_train[idx]), Tensor._stored(targets[idx])
                loss = _loss_value(task, loss_fn, model(xb), tb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                lv = float(loss.item())
                if not math.isfinite(lv):
                    raise FloatingPointError(f"training diverged in epoch {epoch} (loss {lv}); try a smaller --lr")
                running += lv * len(idx)
                seen += len(idx)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{running / seen:.4f}", refresh=False)
        except KeyboardInterrupt:
            raise Interrupted(epoch - 1) from None
        finally:
            if bar is not None:
                bar.close()
        if world is not None:
            sums = world.allreduce(np.array([running, seen], np.float64))
            running, seen = float(sums[0]), int(sums[1])
        record = {"epoch": epoch, "train_loss": running / max(seen, 1), "seconds": time.perf_counter() - t0}
        if x_val is not None and len(x_val):
            try:
                if world is None:
                    vm = evaluate(model, task, x_val, y_val, loss_fn=loss_fn)
                else:
                    vm = _evaluate_sharded(world, inner, task, x_val, y_val, loss_fn)
            except KeyboardInterrupt:
                raise Interrupted(epoch - 1) from None
            record.update({f"val_{k}": v for k, v in vm.items()})
        history.append(record)
        log(f"epoch {epoch}/{epochs}  train_loss {record['train_loss']:.4f}  "
            + format_metrics({k[4:]: v for k, v in record.items() if k.startswith("val_")}, "val_")
            + f"  ({record['seconds']:.1f}s)")
        if on_epoch_end is not None:
            try:
                on_epoch_end(epoch, record)
            except KeyboardInterrupt:
                # the checkpoint writes are atomic: the previous one is still intact
                raise Interrupted(epoch - 1) from None
    return history


def plot_history(history, path, title=""):
    """Training-curve PNG (loss, and accuracy when present). Returns False when matplotlib is missing."""
    mpl = optional("matplotlib")
    if mpl is None:
        return False
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    epochs = [h["epoch"] for h in history]
    has_acc = any("val_accuracy" in h for h in history)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(9 if has_acc else 5, 3.5), squeeze=False)
    ax = axes[0][0]
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if any("val_loss" in h for h in history):
        ax.plot(epochs, [h.get("val_loss", float("nan")) for h in history], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if has_acc:
        ax = axes[0][1]
        ax.plot(epochs, [100 * h.get("val_accuracy", float("nan")) for h in history], marker="o", color="C2")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
