"""examples/cnn_digits.py runs end to end: on the real 8x8 digits (tiny settings) and with --mnist on a
fake IDX folder (the default settings reach >= 98 % on digits; see the example's docstring)."""

import numpy as np
import pytest

from helpers import load_example

pytestmark = pytest.mark.usefixtures("keep_num_threads")  # the example's --threads sets the global count


def _write_idx(path, arr: np.ndarray):
    """IDX file: 00 00, type 0x08 (uint8), ndim, big-endian uint32 dims, then the data."""
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_cnn_digits_runs(capsys):
    acc = load_example("cnn_digits").main(["--epochs", "2", "--seed", "1", "--threads", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert "digits CNN (8x8)" in out and "2 epochs" in out and "test accuracy:" in out
    assert 0.3 < acc <= 1.0  # two epochs are far above chance (0.1)


def test_cnn_digits_with_fake_mnist_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)

    def images_and_labels(n):
        # class k lights up a 6x6 block at a class-dependent place: learnable, 28x28 like MNIST
        labels = rng.integers(0, 10, n).astype(np.uint8)
        imgs = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            r, c = 2 + (k // 5) * 12, 1 + (k % 5) * 5
            imgs[i, r:r + 6, c:c + 5] = 255
        return imgs, labels

    for prefix, n in (("train", 96), ("t10k", 32)):
        imgs, labels = images_and_labels(n)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", imgs)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels)
    acc = load_example("cnn_digits").main(["--mnist", str(tmp_path), "--epochs", "1", "--batch-size", "32",
                                           "--threads", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert "MNIST-format CNN (28x28): 96 train / 32 test images, 1 epochs" in out
    assert 0.0 <= acc <= 1.0


def test_cnn_digits_rejects_bad_arguments(tmp_path):
    mod = load_example("cnn_digits")
    with pytest.raises(SystemExit):
        mod.main(["--epochs", "0"])
    with pytest.raises(SystemExit):
        mod.main(["--threads", "0"])
    with pytest.raises(SystemExit):
        mod.main(["--rotate", "-1"])
    with pytest.raises(FileNotFoundError):
        mod.main(["--mnist", str(tmp_path / "missing"), "--no-progress"])
