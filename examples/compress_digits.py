"""Compress digits models three ways and print what each costs in accuracy.

    python examples/compress_digits.py                 # all three parts
    python examples/compress_digits.py --part prune    # or distill, quantize

- prune: an MLP 64-256-128-10, 50 % of the hidden units removed (L2-norm structured pruning, the
  layers really shrink: 64-128-64-10), fine-tuned a few epochs: within 1 point of the unpruned MLP.
- distill: a half-width student (64-128-64-10) trained with an MLP (with dropout 0.2) as teacher
  (DistillationLoss, T=2, alpha=0.5) against the same student from the same initialisation and
  batch order trained on the labels alone; mean test accuracy over 5 seeds.
- quantize: LeNet (8x8 input) quantized statically to int8 (prepare, calibrate on 10 training
  batches, convert): accuracy against float32.

Needs scikit-learn for the data: pip install "forgegrad[data]".
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import forgegrad as fg
from forgegrad import datasets, nn, optim
from forgegrad.data import DataLoader, TensorDataset
from forgegrad.nn.utils import shrink
from forgegrad.train import DistillationLoss, evaluate, fit


def mlp(h1=256, h2=128, dropout=0.0) -> nn.Module:
    drop = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(nn.Linear(64, h1), nn.ReLU(), *drop, nn.Linear(h1, h2), nn.ReLU(), *drop, nn.Linear(h2, 10))


def data(seed: int):
    (X_train, y_train), (X_test, y_test) = datasets.load_digits(return_split=True, test_size=0.2, seed=seed)
    mean, scale = X_train.mean(axis=0), X_train.std(axis=0) + 0.1
    X_train, X_test = (((X - mean) / scale).astype(np.float32) for X in (X_train, X_test))
    return X_train, y_train, X_test, y_test


def loaders(X_train, y_train, X_test, y_test, batch_size=32):
    return (DataLoader(TensorDataset(X_train, y_train), batch_size=batch_size, shuffle=True),
            DataLoader(TensorDataset(X_test, y_test), batch_size=256))


def accuracy(model, loader) -> float:
    return evaluate(model, None, loader, metrics=["accuracy"])["accuracy"]


def train(model, loader, epochs, lr=1e-3, teacher=None, loss_fn=None):
    loss_fn = loss_fn or (DistillationLoss(temperature=2.0, alpha=0.5) if teacher is not None
                          else nn.CrossEntropyLoss())
    fit(model, loss_fn, optim.Adam(model.parameters(), lr=lr), loader, epochs=epochs, progress=False,
        teacher=teacher)
    return model


def part_prune(seed: int, epochs: int) -> dict:
    fg.manual_seed(seed)
    train_loader, test_loader = loaders(*data(seed))
    model = train(mlp(), train_loader, epochs)
    before = accuracy(model, test_loader)
    report = shrink.prune_structured(model, amount=0.5)
    pruned = accuracy(model, test_loader)
    train(model, train_loader, max(1, epochs // 3), lr=5e-4)
    after = accuracy(model, test_loader)
    sizes = ", ".join(f"{k}: {a}->{b}" for k, b_a in report.items() for a, b in [b_a])
    print(f"prune   : MLP {before * 100:.2f} %; 50 % structurally pruned ({sizes}) {pruned * 100:.2f} %, "
          f"fine-tuned {after * 100:.2f} % ({(after - before) * 100:+.2f} points)")
    return {"unpruned": before, "pruned": pruned, "fine_tuned": after, "model": model}


def part_distill(seed: int, epochs: int, seeds: int, student_epochs: int) -> dict:
    fg.manual_seed(seed)
    X_train, y_train, X_test, y_test = data(seed)
    train_loader, test_loader = loaders(X_train, y_train, X_test, y_test)
    teacher = train(mlp(dropout=0.2), train_loader, epochs)
    t_acc = accuracy(teacher, test_loader)
    plain, distilled = [], []
    for s in range(seeds):
        fg.manual_seed(100 + s)
        init = mlp(128, 64).state_dict()
        for results, use_teacher in ((plain, None), (distilled, teacher)):
            student = mlp(128, 64)
            student.load_state_dict(init)  # the same start for both
            fg.manual_seed(200 + s)  # and the same batch order
            results.append(accuracy(train(student, train_loader, student_epochs, teacher=use_teacher), test_loader))
    print(f"distill : teacher {t_acc * 100:.2f} %; half-width student, {student_epochs} epochs, mean of {seeds} seeds: "
          f"labels only {np.mean(plain) * 100:.2f} %, distilled {np.mean(distilled) * 100:.2f} % "
          f"({(np.mean(distilled) - np.mean(plain)) * 100:+.2f} points)")
    return {"teacher": t_acc, "plain": plain, "distilled": distilled}


def part_quantize(seed: int, epochs: int, reduce_range: bool = False) -> dict:
    from forgegrad.quantization.static import calibrate, convert, get_default_qconfig, prepare

    fg.manual_seed(seed)
    X_train, y_train, X_test, y_test = data(seed)
    X_train, X_test = X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8)
    train_loader, test_loader = loaders(X_train, y_train, X_test, y_test)
    model = train(fg.models.LeNet(input_size=8, hidden=64), train_loader, epochs)
    f_acc = accuracy(model, test_loader)
    prepared = prepare(model, get_default_qconfig(reduce_range=reduce_range))
    calibrate(prepared, train_loader, num_batches=10)
    qmodel = convert(prepared)
    q_acc = accuracy(qmodel, test_loader)
    print(f"quantize: LeNet float32 {f_acc * 100:.2f} %, static int8 {q_acc * 100:.2f} % "
          f"({(q_acc - f_acc) * 100:+.2f} points)")
    return {"float": f_acc, "int8": q_acc, "model": qmodel}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["prune", "distill", "quantize", "all"], default="all")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of the full-size models")
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=5, help="distillation: students per side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reduce-range", action="store_true",
                        help="quantize: 7-bit activations (torch's x86 default; the faster AVX2 int8 kernel)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = {}
    if args.part in ("prune", "all"):
        out["prune"] = part_prune(args.seed, args.epochs)
    if args.part in ("distill", "all"):
        out["distill"] = part_distill(args.seed, args.epochs, args.seeds, args.student_epochs)
    if args.part in ("quantize", "all"):
        out["quantize"] = part_quantize(args.seed, args.epochs, args.reduce_range)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return out


if __name__ == "__main__":
    main()
