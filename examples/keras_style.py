"""The Keras-style binary classifier: Dense(64, relu) -> Dense(32, relu) -> Dense(1, sigmoid) with
compile / fit / evaluate / predict, on scikit-learn's real Wisconsin breast-cancer data (569 tumours,
30 features; label 1 = benign).

    python examples/keras_style.py              # about 96-97 % test accuracy
    python examples/keras_style.py --epochs 5 --seed 1

Needs scikit-learn for the data: pip install "forgegrad[data]".
"""
from __future__ import annotations

import argparse

import numpy as np

import forgegrad as fg
from forgegrad import datasets, nn
from forgegrad.train import EarlyStopping


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50, help="at most this many (early stopping on val_loss)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    args = parser.parse_args(argv)

    fg.manual_seed(args.seed)
    (X_train, y_train), (X_test, y_test) = datasets.load_breast_cancer(return_split=True, test_size=0.2,
                                                                       seed=args.seed)
    # standardise with the training set's statistics only
    mean, std = X_train.mean(axis=0), X_train.std(axis=0) + 1e-6
    X_train = ((X_train - mean) / std).astype(np.float32)
    X_test = ((X_test - mean) / std).astype(np.float32)

    model = nn.Sequential(
        nn.Dense(64, activation="relu"),      # input size inferred on the first batch
        nn.Dense(32, activation="relu"),
        nn.Dense(1, activation="sigmoid"),
    )
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size, validation_split=0.2,
                        verbose=args.verbose,
                        callbacks=[EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)])
    loss, accuracy = model.evaluate(X_test, y_test)
    probabilities = model.predict(X_test[:5]).ravel()
    print(f"trained {len(history['loss'])} epochs; test loss {loss:.4f}")
    print("first test probabilities:", np.round(probabilities, 3), "labels:", y_test[:5])
    print(f"test accuracy: {accuracy * 100:.2f} %")
    return accuracy


if __name__ == "__main__":
    main()
