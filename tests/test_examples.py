"""The examples run end to end (tiny epoch counts here; their defaults reach the accuracies they state)."""
import importlib.util
import os

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mlp_digits_runs(capsys):
    acc = _load("mlp_digits").main(["--epochs", "2", "--seed", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "2 epochs" in out
    assert 0.5 < acc <= 1.0  # two epochs are already far above chance (0.1)


def test_keras_style_runs(capsys):
    acc = _load("keras_style").main(["--epochs", "3", "--seed", "1", "--verbose", "2"])
    out = capsys.readouterr().out
    assert "Epoch 3/3" in out and "test accuracy:" in out
    assert 0.5 < acc <= 1.0


def test_examples_reject_bad_arguments():
    with pytest.raises(SystemExit):
        _load("mlp_digits").main(["--epochs", "many"])
