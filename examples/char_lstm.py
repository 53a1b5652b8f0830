"""Train a character-level LSTM language model on a text file and sample from it as it learns.

    python examples/char_lstm.py     # learns Python's argparse.py: loss 4.47 -> ~0.67 nats/char in ~55 s
    python examples/char_lstm.py --text my.txt --steps 2000 --hidden 256 --num-layers 2
    python examples/char_lstm.py --seed 1 --save char_lstm.safetensors
    python examples/char_lstm.py --seconds 120 --val-fraction 0.1   # the budget of examples/gpt_chars.py

Model: Embedding -> LSTM (1-2 layers) -> Linear over the vocabulary (forgegrad.models.CharLSTM).
Training: the text is cut into ``batch_size`` contiguous streams read ``seq_len`` characters at a
time (truncated back-propagation through time: the LSTM state is carried from one chunk to the next
but detached, so gradients flow back at most ``seq_len`` steps), Adam, gradient-norm clipping.
The loss is the mean cross entropy per character (nats); bits per character = loss / ln 2.
Samples are drawn with temperature sampling from a seed string (``--prime``), with a generator
seeded by ``--seed``, so a run is reproducible end to end.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time

import numpy as np

import forgegrad as fg
from forgegrad import nn, optim
from forgegrad.models import CharLSTM


def default_text_path() -> str:
    """The source of the standard library's argparse module: plain-text Python (~100 kB) that every
    CPython install ships."""
    import argparse as _argparse  # noqa: PLC0415

    path = inspect.getsourcefile(_argparse)
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError("this Python ships no source for argparse; pass --text PATH")
    return path


def read_text(path: str) -> str:
    """The file's text (UTF-8, undecodable bytes replaced). Raises OSError / ValueError with a message."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    if len(text) < 2:
        raise ValueError(f"{path} holds {len(text)} characters; need at least 2 to learn from")
    return text


class Vocab:
    """Character <-> id table (ids in sorted character order, so it does not depend on the text's order)."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        return np.fromiter((self.index[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def batch_streams(ids: np.ndarray, batch_size: int, seq_len: int) -> np.ndarray:
    """Cut ids into ``batch_size`` contiguous streams: (batch_size, L + 1) with L a multiple of seq_len
    (the extra character gives the last chunk its targets); the text's tail that does not fill a chunk
    is dropped."""
    per_stream = (len(ids) - 1) // batch_size
    chunks = per_stream // seq_len
    if chunks < 1:
        raise ValueError(f"the text has {len(ids)} characters: too short for --batch-size {batch_size} x "
                         f"--seq-len {seq_len} (need at least {batch_size * seq_len + 1})")
    L = chunks * seq_len
    return np.stack([ids[b * per_stream: b * per_stream + L + 1] for b in range(batch_size)])


def sample(model: CharLSTM, vocab: Vocab, prime: str, length: int, temperature: float,
           rng: np.random.Generator) -> str:
    """``prime`` followed by ``length`` characters drawn one at a time from softmax(logits / temperature)."""
    was_training = model.training
    model.eval()
    out = []
    with fg.no_grad():
        logits = model(fg.as_tensor(vocab.encode(prime)[None, :]))
        state = model._last_state
        for _ in range(length):
            z = logits.numpy()[0, -1].astype(np.float64) / temperature
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(vocab), p=p / p.sum()))
            out.append(nxt)
            logits = model(fg.as_tensor(np.array([[nxt]], np.int64)), state)
            state = model._last_state
    model.train(was_training)
    return prime + vocab.decode(out)


def detach_state(state):
    h, c = state
    return h.detach(), c.detach()


# The recurrent kernels open a parallel region per time step, each only microseconds of work, so a
# second thread gains little at these sizes (forgegrad's thread pool keeps it from costing anything
# on a busy machine: 150 steps took 7.8-8.4 s at 2 threads and 7.7-8.1 s at 1 on a loaded 2-core
# machine; with OpenMP, 2 threads took 48-67 s): hence the default of 1.
THREADS_HELP = ("forgegrad kernel threads (default 1: the per-time-step work of a small recurrent batch is too "
                "small to split)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", default=None, help="UTF-8 text file to learn (default: Python's argparse.py)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimizer steps (default 800)")
    length.add_argument("--epochs", type=int, default=None, help="passes over the text (instead of --steps)")
    p.add_argument("--hidden", type=int, default=256, help="LSTM hidden size")
    p.add_argument("--embed", type=int, default=32, help="embedding size")
    p.add_argument("--num-layers", type=int, default=1, choices=(1, 2))
    p.add_argument("--seq-len", type=int, default=64, help="characters per truncated-BPTT chunk")
    p.add_argument("--batch-size", type=int, default=32, help="parallel streams through the text")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (> 0)")
    p.add_argument("--prime", default="def ", help="seed string the samples start from")
    p.add_argument("--sample-len", type=int, default=200, help="characters per printed sample")
    p.add_argument("--sample-every", type=int, default=200, help="print a sample every N steps (0: only at the end)")
    p.add_argument("--log-every", type=int, default=50, help="print the loss every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    p.add_argument("--save", default=None, metavar="PATH", help="write a checkpoint (forgegrad.save) at the end")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop training after this many seconds (wall clock; a time budget instead of --steps)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="hold out the text's last fraction and report the loss on it at the end (default 0)")
    return p


def validation_loss(model, ids: np.ndarray, seq_len: int, streams: int = 16) -> float:
    """Mean next-character loss over held-out ``ids``, read as contiguous streams with the state carried
    from chunk to chunk (as in training), without building a graph."""
    streams = max(1, min(streams, (len(ids) - 1) // seq_len))
    data = batch_streams(ids, streams, seq_len)
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    with fg.no_grad():
        for t0 in range(0, data.shape[1] - 1, seq_len):
            x, y = data[:, t0:t0 + seq_len], data[:, t0 + 1:t0 + seq_len + 1]
            logits = model(fg.as_tensor(x), state)
            state = model._last_state
            total += float(nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                       fg.as_tensor(y.reshape(-1))).item()) * y.size
            count += y.size
    model.train(was_training)
    return total / count


def _fail(message: str):
    """One line on stderr and exit status 1 (no traceback for a user error)."""
    sys.exit(f"char_lstm.py: error: {message}")


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("hidden", "embed", "seq_len", "batch_size", "sample_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps is not None and args.steps < 1 or args.epochs is not None and args.epochs < 1:
        parser.error("--steps / --epochs must be >= 1")
    if args.temperature <= 0:
        parser.error("--temperature must be > 0")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error("--val-fraction must be in [0, 1)")
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be > 0")
    fg.set_num_threads(args.threads)

    try:
        path = args.text if args.text is not None else default_text_path()
        text = read_text(path)
    except (OSError, ValueError) as e:
        _fail(f"cannot use --text {args.text!r}: {e.strerror or e}" if isinstance(e, OSError) and args.text
              else f"cannot use --text: {e}")
    vocab = Vocab(text)
    missing = sorted(set(args.prime) - set(vocab.chars))
    if not args.prime or missing:
        _fail(f"--prime {args.prime!r} must be non-empty and use only characters of the text "
              f"(not in it: {''.join(missing)!r})")
    ids = vocab.encode(text)
    n_val = int(len(ids) * args.val_fraction)
    val_ids, ids = ids[len(ids) - n_val:], ids[:len(ids) - n_val]
    try:
        if n_val and n_val < args.seq_len + 1:
            raise ValueError(f"--val-fraction {args.val_fraction} holds out {n_val} characters, fewer than "
                             f"--seq-len + 1")
        streams = batch_streams(ids, args.batch_size, args.seq_len)
    except ValueError as e:
        _fail(str(e))
    chunks = (streams.shape[1] - 1) // args.seq_len
    steps = args.steps if args.steps is not None else (args.epochs * chunks if args.epochs else 800)
    if args.seconds is not None and args.steps is None and args.epochs is None:
        steps = 10**9  # the time budget decides
    steps_label = f"{args.seconds:g} s of" if steps == 10**9 else str(steps)

    fg.manual_seed(args.seed)  # initial weights
    rng = np.random.default_rng(args.seed)  # sampling only, so samples do not depend on training's draws
    model = CharLSTM(len(vocab), embed_dim=args.embed, hidden_size=args.hidden, num_layers=args.num_layers)
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"text: {path} ({len(text):,} characters, vocabulary {len(vocab)})")
    print(f"model: CharLSTM embed {args.embed}, LSTM {args.num_layers}x{args.hidden}, {n_params:,} parameters; "
          f"{steps_label} steps of {args.batch_size} x {args.seq_len} characters ({chunks} chunks per epoch), "
          f"threads {fg.get_num_threads()}")
    print(f"uniform guess: loss {math.log(len(vocab)):.3f} ({math.log2(len(vocab)):.2f} bits/char)")

    losses, samples = [], []
    state = None
    window = []
    start = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        if args.seconds is not None and time.perf_counter() - start >= args.seconds:
            steps = step - 1
            print(f"time budget of {args.seconds:g} s reached after {steps} steps")
            s = sample(model, vocab, args.prime, args.sample_len, args.temperature, rng)
            samples.append(s)
            print(f"--- sample after step {steps} (temperature {args.temperature}) ---\n{s}\n---", flush=True)
            break
        k = (step - 1) % chunks
        if k == 0:
            state = None  # a new pass over the text starts from a zero state
        t0 = k * args.seq_len
        x = fg.as_tensor(streams[:, t0:t0 + args.seq_len])
        y = fg.as_tensor(streams[:, t0 + 1:t0 + args.seq_len + 1].reshape(-1))
        logits = model(x, state)
        state = detach_state(model._last_state)  # truncated BPTT: keep the state, cut the gradient
        loss = loss_fn(logits.reshape(-1, len(vocab)), y)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        losses.append(float(loss.item()))
        window.append(losses[-1])
        if step % args.log_every == 0 or step == steps:
            mean = sum(window) / len(window)
            window = []
            total = steps if steps != 10**9 else "?"
            print(f"step {step:5d}/{total}  loss {mean:.3f}  ({mean / math.log(2):.2f} bits/char)  "
                  f"{time.perf_counter() - start:6.1f} s", flush=True)
        if (args.sample_every and step % args.sample_every == 0) or step == steps:
            s = sample(model, vocab, args.prime, args.sample_len, args.temperature, rng)
            samples.append(s)
            print(f"--- sample after step {step} (temperature {args.temperature}) ---\n{s}\n---", flush=True)
    seconds = time.perf_counter() - start
    print(f"trained {steps} steps in {seconds:.1f} s: loss {losses[0]:.3f} -> "
          f"{sum(losses[-10:]) / len(losses[-10:]):.3f} (mean of the last {min(10, len(losses))} steps)")
    val_loss = None
    if n_val:
        val_loss = validation_loss(model, val_ids, args.seq_len)
        print(f"validation loss {val_loss:.4f} nats/char ({val_loss / math.log(2):.3f} bits/char) on the last "
              f"{n_val:,} characters")
    if args.save:
        meta = {"vocab": json.dumps(vocab.chars), "embed_dim": str(args.embed), "hidden_size": str(args.hidden),
                "num_layers": str(args.num_layers)}
        fg.save(model.state_dict(), args.save, metadata=meta)
        print(f"checkpoint: {args.save}")
    return {"losses": losses, "samples": samples, "vocab": vocab.chars, "seconds": seconds, "val_loss": val_loss}


if __name__ == "__main__":
    main()
