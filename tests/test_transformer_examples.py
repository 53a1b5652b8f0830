"""The Transformer examples (examples/gpt_chars.py, examples/text_classifier.py) and char_lstm.py's
time budget and validation loss run end to end with tiny settings. (The defaults' stated results
are checked by running them.)"""
import numpy as np
import pytest

from helpers import load_example

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
pytestmark = pytest.mark.usefixtures("keep_num_threads")


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "fox.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def test_gpt_chars_learns_reports_validation_loss_and_samples(text_file, capsys):
    gpt_chars = load_example("gpt_chars")
    r = gpt_chars.main(["--text", text_file, "--steps", "40", "--block-size", "16", "--batch-size", "8",
                        "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--lr", "0.01", "--warmup", "5",
                        "--sample-len", "30", "--log-every", "20", "--threads", "1", "--prime", "the "])
    out = capsys.readouterr().out
    assert r["steps"] == 40 and "validation loss" in out and "--- sample" in out
    assert r["sample"].startswith("the ") and len(r["sample"]) == 34
    assert np.mean(r["losses"][-5:]) < 0.6 * r["losses"][0]
    assert r["val_loss"] < np.log(len(set(TEXT)))  # better than a uniform guess on the held-out tail


def test_char_lstm_time_budget_and_validation_loss(text_file, capsys):
    char_lstm = load_example("char_lstm")
    r = char_lstm.main(["--text", text_file, "--seconds", "0.5", "--val-fraction", "0.2", "--hidden", "16",
                        "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--sample-len", "10",
                        "--threads", "1", "--prime", "the "])
    out = capsys.readouterr().out
    assert "time budget of 0.5 s reached" in out and "validation loss" in out
    assert r["val_loss"] is not None and np.isfinite(r["val_loss"]) and r["seconds"] < 5


def test_text_classifier_beats_chance(capsys):
    clf = load_example("text_classifier")
    r = clf.main(["--limit", "400", "--epochs", "6", "--d-model", "32", "--nhead", "2", "--num-layers", "1",
                  "--max-len", "48", "--threads", "1", "--lr", "3e-3", "--dropout", "0"])
    out = capsys.readouterr().out
    assert int(out.split("data: ")[1].split()[0]) == 400 and "confusion" in out and r["confusion"].sum() == 81
    majority = float(out.split("majority-class test accuracy ")[1].split()[0])
    assert r["accuracy"] > majority + 0.1
