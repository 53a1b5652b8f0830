"""The examples run end to end (tiny epoch counts here; their defaults reach the accuracies they state)."""
import pytest

from helpers import load_example


def test_mlp_digits_runs(capsys):
    acc = load_example("mlp_digits").main(["--epochs", "2", "--seed", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "2 epochs" in out
    assert 0.5 < acc <= 1.0  # two epochs are already far above chance (0.1)


def test_keras_style_runs(capsys):
    acc = load_example("keras_style").main(["--epochs", "3", "--seed", "1", "--verbose", "2"])
    out = capsys.readouterr().out
    assert "Epoch 3/3" in out and "test accuracy:" in out
    assert 0.5 < acc <= 1.0


def test_examples_reject_bad_arguments():
    with pytest.raises(SystemExit):
        load_example("mlp_digits").main(["--epochs", "many"])
