"""``forgegrad train gpt --data FILE``: a causal language model on a text file's bytes.

Tokens are the file's bytes (vocabulary 256: any file, any language, nothing to fit). The last
``--val-split`` of the bytes is held out. Each step draws ``--batch-size`` random windows of
``--block-size + 1`` bytes; ``--grad-accum`` micro-batches are summed per optimizer step. AdamW
(betas 0.9/0.95, weight decay 0.1 on matrices only, as GPT-2), learning rate warmed up linearly for
``--warmup`` steps then cosine-decayed to a tenth, gradients clipped to norm ``--clip``. Every
``--eval-every`` steps: validation loss, and a sample printed.
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from .. import nn, optim
from .. import random as _random
from .._version import __version__
from ..autograd import no_grad
from ..tensor import Tensor
from . import _checkpoint
from ._errors import CLIError, UsageError, optional

VOCAB = 256


def add_args(p):
    g = p.add_argument_group("language models (gpt)")
    g.add_argument("--steps", type=int, default=None,
                   help="optimizer steps (default: --epochs passes over the training bytes)")
    g.add_argument("--block-size", type=int, default=None, help="context length (default: the model's, 128)")
    g.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default 5%% of the steps)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip, 0 disables (default 1.0)")
    g.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on matrices (default 0.1)")
    g.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (default: 10 per run)")
    g.add_argument("--sample-tokens", type=int, default=200, help="bytes per printed sample (default 200)")
    g.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    g.add_argument("--top-k", type=int, default=40, help="sample among the k most likely bytes (default 40)")
    g.add_argument("--prompt", default="\n", help="sample prompt (default a newline)")


def read_bytes(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise UsageError(f"data file not found: {path}")
    with open(path, "rb") as f:
        data = np.frombuffer(f.read(), np.uint8).astype(np.int64)
    if data.size < 3:
        raise UsageError(f"{path}: the text file is too short to train a language model on")
    return data


def split_bytes(data: np.ndarray, val_fraction: float, block: int):
    n_val = int(len(data) * val_fraction)
    train, val = data[: len(data) - n_val], data[len(data) - n_val:]
    if len(train) < block + 1 or (val_fraction > 0 and len(val) < block + 1):
        raise UsageError(f"{len(data)} bytes are too few for --block-size {block} with --val-split {val_fraction}: "
                         f"each part needs at least {block + 1} bytes")
    return train, val


def batch(data: np.ndarray, n: int, block: int, rng):
    """x, y (n, block): random windows and the same windows one byte later."""
    starts = rng.integers(0, len(data) - block, n)
    idx = starts[:, None] + np.arange(block + 1)[None, :]
    w = data[idx]
    return w[:, :-1], w[:, 1:]


def lm_loss(model, x, y):
    logits = model(Tensor._stored(x))
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), Tensor._stored(y).reshape(-1))


def evaluate(model, data: np.ndarray, block: int, batch_size: int = 16, max_windows: int = 256) -> float:
    """Mean next-byte cross-entropy over up to ``max_windows`` consecutive windows of ``data``."""
    was = model.training
    model.eval()
    starts = np.arange(0, len(data) - block, block)[:max_windows]
    total, count = 0.0, 0
    try:
        with no_grad():
            for i in range(0, len(starts), batch_size):
                s = starts[i:i + batch_size]
                w = data[s[:, None] + np.arange(block + 1)[None, :]]
                total += float(lm_loss(model, w[:, :-1], w[:, 1:]).item()) * len(s)
                count += len(s)
    finally:
        model.train(was)
    return total / max(count, 1)


def lr_at(step: int, total: int, warmup: int, lr: float, min_ratio: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio * lr`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0))))


def make_optimizer(model, lr: float, weight_decay: float):
    """AdamW, decaying matrices (Linear, Embedding weights) but not biases or LayerNorm weights."""
    params = list(model.parameters())
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                       lr=lr, betas=(0.9, 0.95))


def decode(ids) -> str:
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def run(args, spec, build_model, parse_model_args, log=print):
    from ..models import sample
    data = read_bytes(args.data)
    kwargs = parse_model_args(args.model_args)
    if args.block_size is not None:
        kwargs["block_size"] = args.block_size
    kwargs.setdefault("vocab_size", VOCAB)
    if kwargs["vocab_size"] < VOCAB:
        raise UsageError(f"--arg vocab_size={kwargs['vocab_size']}: byte tokens need vocab_size >= {VOCAB}")
    _random.manual_seed(args.seed)
    model = build_model(spec.name, kwargs)
    block = model.block_size
    for name in ("grad_accum", "eval_every", "steps", "warmup"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'warmup' else 'positive'}, "
                             f"got {v}")
    train, val = split_bytes(data, args.val_split, block)
    per_step = args.batch_size * args.grad_accum * block
    steps = args.steps or max(1, args.epochs * len(train) // per_step)
    warmup = args.warmup if args.warmup is not None else max(1, steps // 20)
    eval_every = args.eval_every or max(1, steps // 10)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    out = args.out or os.path.join("runs", spec.name)
    os.makedirs(out, exist_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"training {spec.name} ({n_params:,} parameters) on {os.path.basename(args.data)}: {len(train):,} train / "
        f"{len(val):,} validation bytes, {steps} steps of {args.batch_size}x{args.grad_accum} windows of {block} "
        f"bytes, AdamW lr {args.lr} (warm-up {warmup}, cosine), clip {args.clip}")
    rng = np.random.default_rng(args.seed)
    gen = _random.generator()
    prompt = list(args.prompt.encode("utf-8")) or [10]
    # input_shape / num_classes: what `forgegrad export` traces with (token ids below the vocabulary size)
    meta = {"task": spec.task, "input_kind": spec.input_kind, "tokenizer": "bytes", "data": args.data,
            "input_shape": [max(1, min(block // 2, 32))], "num_classes": model.vocab_size,
            "split": {"val_fraction": args.val_split, "seed": args.seed},
            "train": {"steps": steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": args.lr,
                      "warmup": warmup, "clip": args.clip, "weight_decay": args.weight_decay},
            "forgegrad_version": __version__}
    tqdm = None if args.no_progress else optional("tqdm")
    bar = tqdm.tqdm(total=steps, unit="step", file=sys.stderr, dynamic_ncols=True) if tqdm else None
    history, t0, running = [], time.perf_counter(), None
    try:
        for step in range(steps):
            lr = lr_at(step, steps, warmup, args.lr)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad()
            loss_sum = 0.0
            for _ in range(args.grad_accum):
                x, y = batch(train, args.batch_size, block, rng)
                loss = lm_loss(model, x, y)
                (loss * (1.0 / args.grad_accum)).backward()
                loss_sum += float(loss.item()) / args.grad_accum
            if not math.isfinite(loss_sum):
                raise CLIError(f"training diverged at step {step + 1} (loss {loss_sum}); try a smaller --lr")
            if args.clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            running = loss_sum if running is None else 0.9 * running + 0.1 * loss_sum
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running:.3f}", lr=f"{lr:.2e}", refresh=False)
            if (step + 1) % eval_every == 0 or step + 1 == steps:
                rec = {"step": step + 1, "train_loss": running, "seconds": time.perf_counter() - t0}
                if len(val):
                    rec["val_loss"] = evaluate(model, val, block)
                history.append(rec)
                ids = sample(model, prompt, args.sample_tokens, args.temperature, args.top_k, gen)
                text = decode(ids[len(prompt):])
                msg = (f"step {step + 1}/{steps}  train_loss {running:.4f}"
                       + (f"  val_loss {rec['val_loss']:.4f}" if "val_loss" in rec else "")
                       + f"  ({rec['seconds']:.1f}s)\n--- sample ---\n{text}\n--------------")
                if bar is not None:
                    bar.write(msg, file=sys.stderr)
                else:
                    log(msg)
                _checkpoint.save(model, dict(meta, steps_completed=step + 1, history=history), out)
    except KeyboardInterrupt:
        raise CLIError(f"interrupted; the last checkpoint is in {out}", code=130) from None
    finally:
        if bar is not None:
            bar.close()
    final = history[-1]
    log(f"final: train_loss {final['train_loss']:.4f}"
        + (f"  val_loss {final['val_loss']:.4f}  (perplexity {math.exp(final['val_loss']):.2f})"
           if "val_loss" in final else ""))
    log(f"checkpoint: {os.path.join(out, _checkpoint.WEIGHTS)} (+ {_checkpoint.META})")
    return 0
