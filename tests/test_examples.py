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


@pytest.mark.slow
def test_compress_digits_prune_and_static_int8_keep_accuracy(capsys):
    # the claims of examples/compress_digits.py at reduced epochs (about 10 s on 2 cores): a 50 %
    # structurally pruned MLP fine-tuned back within 1 point; static-int8 LeNet within 0.5 points
    ex = load_example("compress_digits")
    prune = ex.main(["--part", "prune", "--epochs", "15"])["prune"]
    assert prune["fine_tuned"] >= prune["unpruned"] - 0.01
    assert prune["model"][0].weight.shape == (128, 64) and prune["model"][2].weight.shape == (64, 128)
    quant = ex.main(["--part", "quantize", "--epochs", "8"])["quantize"]
    assert quant["int8"] >= quant["float"] - 0.005 and quant["float"] > 0.9
    assert "static int8" in capsys.readouterr().out


@pytest.mark.slow
def test_compress_digits_static_int8_with_reduce_range_keeps_accuracy():
    # 7-bit activations (torch's x86 default, the faster AVX2 kernel): still within 0.5 points
    quant = load_example("compress_digits").main(["--part", "quantize", "--epochs", "8", "--reduce-range"])["quantize"]
    assert quant["int8"] >= quant["float"] - 0.005 and quant["float"] > 0.9
