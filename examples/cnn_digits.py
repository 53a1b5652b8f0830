"""Train a small CNN (forgegrad.models.LeNet: conv32-pool-conv64-pool-fc128-fc10) on handwritten digits,
with random shift and rotation augmentation from forgegrad.data.transforms.

    python examples/cnn_digits.py                       # scikit-learn's real 8x8 digits: ~99 % test accuracy, ~10 s
    python examples/cnn_digits.py --mnist ~/data/mnist  # a folder of MNIST-format IDX files (1x28x28)
    python examples/cnn_digits.py --epochs 5 --seed 1 --threads 2 --no-progress

The digits data needs scikit-learn (pip install "forgegrad[data]"); --mnist needs only the 4 standard
files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte,
optionally .gz).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import forgegrad as fg
from forgegrad import datasets, nn
from forgegrad.data import DataLoader, TensorDataset
from forgegrad.data import transforms as T
from forgegrad.models import LeNet
from forgegrad.train import evaluate, fit


def load_data(mnist_dir, seed: int):
    """(x_train, y_train), (x_test, y_test) as (N, 1, S, S) float32 images in [0, 1] and int64 labels."""
    if mnist_dir is not None:
        (x_tr, y_tr), (x_te, y_te) = datasets.load_mnist(mnist_dir)
    else:
        (x_tr, y_tr), (x_te, y_te) = datasets.load_digits(return_split=True, test_size=0.2, seed=seed)
    side = int(round(np.sqrt(x_tr[0].size)))
    return (x_tr.reshape(-1, 1, side, side), y_tr), (x_te.reshape(-1, 1, side, side), y_te)


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", metavar="DIR", help="folder of MNIST-format IDX files (default: 8x8 digits)")
    parser.add_argument("--epochs", type=int, default=None, help="default 40 for digits, 3 for --mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="forgegrad kernel threads (default: 1 for the 8x8 digits, whose per-batch work is "
                             "too small to split, all cores for --mnist)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-shift", type=int, default=None,
                        help="largest random shift in pixels (default 1 for 8x8 digits, 2 for 28x28)")
    parser.add_argument("--rotate", type=float, default=10.0,
                        help="largest random rotation in degrees (default 10; 0 for shifts only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.rotate < 0:
        parser.error("--rotate must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    threads = args.threads if args.threads is not None else (None if args.mnist else 1)
    if threads is not None:
        fg.set_num_threads(threads)

    from forgegrad import optim  # noqa: PLC0415 (kept next to its use)

    fg.manual_seed(args.seed)  # initialisation, shuffling and augmentation draws
    (x_train, y_train), (x_test, y_test) = load_data(args.mnist, args.seed)
    side = x_train.shape[-1]
    epochs = args.epochs if args.epochs is not None else (3 if args.mnist else 40)
    max_shift = args.max_shift if args.max_shift is not None else (1 if side <= 8 else 2)
    # statistics of the training images (one channel); shifts fill with 0 = background before normalising
    mean, std = float(x_train.mean()), float(x_train.std())
    augment = [T.RandomShift(max_shift)] + ([T.RandomRotation(args.rotate)] if args.rotate > 0 else [])
    train_aug = T.Compose(augment + [T.Normalize([mean], [std])])
    test_norm = T.Normalize([mean], [std])
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch_size, shuffle=True,
                              transform=train_aug)
    test_loader = DataLoader(TensorDataset(x_test, y_test), batch_size=512, transform=test_norm)

    model = LeNet(in_channels=1, num_classes=10, input_size=side)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    # cosine decay over the epochs: the last ones settle without a validation-based schedule
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    start = time.perf_counter()
    history = fit(model, loss_fn, optimizer, train_loader, epochs=epochs, metrics=["accuracy"],
                  progress=not args.no_progress, scheduler=scheduler)
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, loss_fn, test_loader, metrics=["accuracy"])["accuracy"]
    name = "MNIST-format" if args.mnist else "digits"
    print(f"{name} CNN ({side}x{side}): {len(x_train)} train / {len(x_test)} test images, {epochs} epochs in "
          f"{seconds:.1f} s, final train loss {history['loss'][-1]:.4f}")
    print(f"test accuracy: {accuracy * 100:.2f} %")
    return accuracy


if __name__ == "__main__":
    main()
