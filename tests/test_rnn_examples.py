"""The recurrent examples (examples/char_lstm.py, examples/sequence_classifier.py) run end to end with
tiny settings: the loss falls, accuracy beats chance, --text / --save work, errors are one clear line,
and sampling is reproducible from --seed. (The defaults' stated results are checked by running them.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

import forgegrad as fg
from helpers import load_example

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
EXAMPLES = os.path.join(ROOT, "examples")
TEXT = "the quick brown fox jumps over the lazy dog. " * 40
# A small model over a small repetitive text: enough to learn within 40 steps, < 1 s per run.
TINY_LM = ["--steps", "40", "--hidden", "32", "--embed", "8", "--seq-len", "16", "--batch-size", "4",
           "--lr", "0.01", "--sample-len", "40", "--sample-every", "20", "--log-every", "20", "--prime", "the ",
           "--threads", "1"]


pytestmark = pytest.mark.usefixtures("keep_num_threads")  # the examples' --threads sets the global count


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "fox.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def test_char_lstm_learns_and_samples_reproducibly(text_file, tmp_path, capsys):
    char_lstm = load_example("char_lstm")
    ckpt = str(tmp_path / "lm.safetensors")
    first = char_lstm.main(["--text", text_file, "--seed", "3", "--save", ckpt] + TINY_LM)
    out = capsys.readouterr().out
    assert f"text: {text_file}" in out and "bits/char" in out and "--- sample after step 40" in out
    losses = first["losses"]
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert losses[0] > np.log(len(first["vocab"])) - 0.5  # starts near the uniform guess
    assert np.mean(losses[-5:]) < 0.6 * losses[0]  # and falls well below it
    assert len(first["samples"]) == 2 and all(s.startswith("the ") and len(s) == 44 for s in first["samples"])
    assert set("".join(first["samples"])) <= set(TEXT)

    # Same seed: identical training and identical samples, whatever the thread count (the kernels are
    # bit-identical for any count); another seed: different samples.
    assert TINY_LM[-2:] == ["--threads", "1"]
    again = char_lstm.main(["--text", text_file, "--seed", "3"] + TINY_LM[:-1] + ["2"])
    assert again["losses"] == losses and again["samples"] == first["samples"]
    other = char_lstm.main(["--text", text_file, "--seed", "4"] + TINY_LM)
    assert other["samples"] != first["samples"]

    # The checkpoint holds the model's weights and the vocabulary needed to decode it.
    state = fg.load(ckpt)
    assert state["embed.weight"].shape == (len(first["vocab"]), 8)
    assert state["lstm.weight_hh_l0"].shape == (4 * 32, 32)
    assert fg.serialization.load_metadata(ckpt)["vocab"].startswith("[")


def test_char_lstm_epochs_and_two_layers(text_file, capsys):
    tiny = [a for a in TINY_LM]
    i = tiny.index("--steps")
    del tiny[i:i + 2]
    run = load_example("char_lstm").main(["--text", text_file, "--epochs", "1", "--num-layers", "2"] + tiny)
    # 1800 characters in 4 streams of 449 -> 28 chunks of 16: one epoch is 28 steps
    assert len(run["losses"]) == 28 and "LSTM 2x32" in capsys.readouterr().out
    assert np.mean(run["losses"][-5:]) < run["losses"][0]
    with pytest.raises(SystemExit):
        load_example("char_lstm").main(["--text", text_file, "--epochs", "1", "--steps", "3"])


def test_char_lstm_missing_text_is_one_clear_line(tmp_path):
    missing = str(tmp_path / "no_such_file.txt")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fg.__file__)))
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "char_lstm.py"), "--text", missing],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("char_lstm.py: error:") and missing in lines[0] and "No such file" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_char_lstm_rejects_unusable_inputs(text_file, tmp_path):
    char_lstm = load_example("char_lstm")
    short = tmp_path / "short.txt"
    short.write_text("abcdef", encoding="utf-8")
    with pytest.raises(SystemExit, match="too short"):
        char_lstm.main(["--text", str(short), "--prime", "abc", "--batch-size", "4", "--seq-len", "16"])
    with pytest.raises(SystemExit, match="--prime"):
        char_lstm.main(["--text", text_file, "--prime", "XYZ"])
    with pytest.raises(SystemExit):
        char_lstm.main(["--text", text_file, "--temperature", "0"])


def test_char_lstm_streams_and_default_text():
    char_lstm = load_example("char_lstm")
    assert os.path.isfile(char_lstm.default_text_path())  # ships with every CPython
    ids = np.arange(23, dtype=np.int64)
    streams = char_lstm.batch_streams(ids, batch_size=2, seq_len=5)
    # 2 contiguous streams of 11 characters, each cut to 2 chunks of 5 plus the last chunk's target
    np.testing.assert_array_equal(streams, [np.arange(0, 11), np.arange(11, 22)])
    vocab = char_lstm.Vocab("hello")
    assert vocab.chars == ["e", "h", "l", "o"] and vocab.decode(vocab.encode("hole")) == "hole"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sequence_classifier_beats_chance(cell, capsys):
    seqcls = load_example("sequence_classifier")
    hist = seqcls.main(["--cell", cell, "--epochs", "3", "--train-size", "800", "--test-size", "300",
                        "--hidden", "16", "--seed", "0", "--threads", "1"])
    out = capsys.readouterr().out
    assert "A somewhere *before* B" in out and "example:" in out and "epoch   3/3" in out
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["test_acc"][-1] > 0.8  # chance (majority class) is ~0.5


def test_sequence_classifier_data_and_padding():
    seqcls = load_example("sequence_classifier")
    tokens, lengths, labels = seqcls.make_dataset(300, np.random.default_rng(0))
    assert tokens.shape == (300, seqcls.MAX_LEN) and lengths.min() >= seqcls.MIN_LEN
    for t, L, y in zip(tokens, lengths, labels):
        seq = list(t[:L])
        a = seq.index(seqcls.A) if seqcls.A in seq else None
        b = seq.index(seqcls.B) if seqcls.B in seq else None
        assert y == int(a is not None and b is not None and a < b)
        assert not t[L:].any()
    assert 0.35 < labels.mean() < 0.65
    # Padding must not matter: a sequence classified alone equals it classified inside a padded batch.
    fg.manual_seed(0)
    model = seqcls.LastStepClassifier(len(seqcls.ALPHABET), 8, 2, "lstm")
    with fg.no_grad():
        batch = model(seqcls.one_hot(tokens[:5]), lengths[:5])._data
        alone = model(seqcls.one_hot(tokens[2:3, :lengths[2]]), lengths[2:3])._data
    np.testing.assert_allclose(batch[2:3], alone, rtol=1e-5, atol=1e-6)


def test_examples_reject_bad_arguments():
    with pytest.raises(SystemExit):
        load_example("sequence_classifier").main(["--cell", "rnn"])
    with pytest.raises(SystemExit):
        load_example("char_lstm").main(["--steps", "0"])
