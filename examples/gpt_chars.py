"""Train a small character-level GPT on a text that ships with Python and sample from it.

    python examples/gpt_chars.py                   # Python's argparse.py, 120 s budget, validation loss
    python examples/gpt_chars.py --seconds 120 && python examples/char_lstm.py --seconds 120 --val-fraction 0.1
    python examples/gpt_chars.py --text my.txt --steps 2000 --n-layer 6 --n-embd 192

Text: the source of the standard library's argparse module (as examples/char_lstm.py), characters
as tokens (the same vocabulary and the same held-out last 10 % as char_lstm.py with
``--val-fraction 0.1``, so the two validation losses are comparable, in nats per character).
Model: forgegrad.models.GPT (token + position embeddings, pre-LN blocks with causal self-attention
on F.scaled_dot_product_attention, weight-tied head). Training: random windows of ``--block-size``
characters, AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), linear warm-up then cosine decay,
gradient clipping; stops after ``--seconds`` (wall clock) or ``--steps``. Samples use temperature
and top-k (forgegrad.models.sample).

Measured (2 shared vCPUs, --threads 2, 120 s each, one after the other): this GPT reached validation
loss 1.054 nats/char in 2360 steps, char_lstm.py 1.250 in 2964 steps (it overfits: train loss 0.21);
under a heavy load that allowed only 365 / 687 steps, 1.297 against the LSTM's 0.956
(docs/transformers.md).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

import forgegrad as fg
from forgegrad import models, nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from char_lstm import Vocab, default_text_path, read_text  # noqa: E402  (the same text and vocabulary)

from forgegrad.cli._lm import lr_at, make_optimizer  # noqa: E402  (the schedule of `forgegrad train gpt`)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", default=None, help="UTF-8 text file (default: Python's argparse.py)")
    p.add_argument("--seconds", type=float, default=120.0, help="training time budget, wall clock (default 120)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps instead (and set the schedule)")
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--n-layer", type=int, default=3)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=30, help="warm-up steps")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out tail of the text (default 0.1)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--prime", default="def ")
    p.add_argument("--sample-len", type=int, default=300)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="forgegrad kernel threads (default: all cores)")
    return p


def validation_loss(model, ids: np.ndarray, block: int, batch_size: int = 32) -> float:
    """Mean next-character loss over consecutive windows of ``block`` characters of ``ids``."""
    starts = np.arange(0, len(ids) - block, block)
    total, count = 0.0, 0
    model.eval()
    with fg.no_grad():
        for i in range(0, len(starts), batch_size):
            w = ids[starts[i:i + batch_size, None] + np.arange(block + 1)[None, :]]
            logits = model(fg.as_tensor(w[:, :-1]))
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), fg.as_tensor(w[:, 1:].reshape(-1)))
            total += float(loss.item()) * w[:, 1:].size
            count += w[:, 1:].size
    model.train()
    return total / count


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        fg.set_num_threads(args.threads)
    if not 0.0 < args.val_fraction < 1.0:
        parser.error("--val-fraction must be in (0, 1)")
    try:
        path = args.text or default_text_path()
        text = read_text(path)
    except (OSError, ValueError) as e:
        sys.exit(f"gpt_chars.py: error: cannot use --text: {e}")
    vocab = Vocab(text)
    ids = vocab.encode(text)
    n_val = int(len(ids) * args.val_fraction)
    train, val = ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    block = args.block_size
    if min(len(train), len(val)) < block + 1:
        parser.error(f"the text is too short for --block-size {block}")
    fg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    try:
        model = models.GPT(len(vocab), block, args.n_layer, args.n_head, args.n_embd, args.dropout)
    except ValueError as e:
        parser.error(str(e))
    opt = make_optimizer(model, args.lr, 0.1)
    # the schedule's length: --steps, or an estimate of the steps that fit the budget (updated as it runs)
    planned = args.steps or 1000
    print(f"text: {path} ({len(text):,} characters, vocabulary {len(vocab)}; last {n_val:,} held out)")
    print(f"model: GPT {args.n_layer} layers x {args.n_head} heads x {args.n_embd}, block {block}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; batch {args.batch_size}, "
          f"threads {fg.get_num_threads()}, budget {args.steps or 'inf'} steps / {args.seconds:g} s")
    print(f"uniform guess: loss {math.log(len(vocab)):.3f}")
    losses, start, step = [], time.perf_counter(), 0
    while True:
        elapsed = time.perf_counter() - start
        if (args.steps is not None and step >= args.steps) or (args.steps is None and elapsed >= args.seconds):
            break
        if args.steps is None and step >= 20:  # re-plan the cosine schedule to end with the budget
            planned = max(step + 1, int(step * args.seconds / elapsed))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, planned, args.warmup, args.lr)
        starts = rng.integers(0, len(train) - block, args.batch_size)
        w = train[starts[:, None] + np.arange(block + 1)[None, :]]
        logits = model(fg.as_tensor(w[:, :-1]))
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), fg.as_tensor(w[:, 1:].reshape(-1)))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        losses.append(float(loss.item()))
        step += 1
        if step % args.log_every == 0:
            mean = sum(losses[-args.log_every:]) / args.log_every
            print(f"step {step:5d}  loss {mean:.3f}  lr {opt.param_groups[0]['lr']:.2e}  "
                  f"{time.perf_counter() - start:6.1f} s", flush=True)
    seconds = time.perf_counter() - start
    val_loss = validation_loss(model, val, block)
    prime = [vocab.index[c] for c in args.prime if c in vocab.index] or [0]
    sample = vocab.decode(models.sample(model, prime, args.sample_len, args.temperature, args.top_k,
                                        np.random.default_rng(args.seed)))
    print(f"--- sample (temperature {args.temperature}, top-k {args.top_k}) ---\n{sample}\n---")
    print(f"trained {step} steps in {seconds:.1f} s: loss {losses[0]:.3f} -> "
          f"{sum(losses[-10:]) / len(losses[-10:]):.3f} (mean of the last {min(10, len(losses))} steps)")
    print(f"validation loss {val_loss:.4f} nats/char ({val_loss / math.log(2):.3f} bits/char) on the last "
          f"{n_val:,} characters")
    return {"losses": losses, "val_loss": val_loss, "sample": sample, "steps": step, "seconds": seconds}


if __name__ == "__main__":
    main()
