"""Classify scikit-learn's real 8x8 handwritten digits with an MLP (64-256-128-10), Adam and forgegrad.train.fit.

    python examples/mlp_digits.py               # ~97-98 % test accuracy
    python examples/mlp_digits.py --epochs 5 --seed 1 --no-progress

Needs scikit-learn for the data: pip install "forgegrad[data]" (tqdm for the progress bar is optional).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import forgegrad as fg
from forgegrad import datasets, nn
from forgegrad.data import DataLoader, TensorDataset
from forgegrad.train import evaluate, fit


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(128, 10),
    )


def standardise(X_train: np.ndarray, *others: np.ndarray):
    """Zero mean / unit scale per pixel, with the training set's statistics (+0.1 keeps the always-blank
    border pixels from being blown up)."""
    mean, scale = X_train.mean(axis=0), X_train.std(axis=0) + 0.1
    return [((X - mean) / scale).astype(np.float32) for X in (X_train,) + others]


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from forgegrad import optim  # noqa: PLC0415 (kept next to its use)

    fg.manual_seed(args.seed)  # initialisation, dropout and shuffling
    (X_train, y_train), (X_test, y_test) = datasets.load_digits(return_split=True, test_size=0.2, seed=args.seed)
    X_train, X_test = standardise(X_train, X_test)
    train_loader = DataLoader(TensorDataset(X_train, y_train), batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(TensorDataset(X_test, y_test), batch_size=256)

    model = build_model()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    history = fit(model, loss_fn, optimizer, train_loader, epochs=args.epochs, val_loader=test_loader,
                  metrics=["accuracy"], progress=not args.no_progress)
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, loss_fn, test_loader, metrics=["accuracy"])["accuracy"]
    print(f"digits MLP: {len(X_train)} train / {len(X_test)} test samples, {len(history['loss'])} epochs in "
          f"{seconds:.1f} s, final train loss {history['loss'][-1]:.4f}")
    print(f"test accuracy: {accuracy * 100:.2f} %")
    return accuracy


if __name__ == "__main__":
    main()
