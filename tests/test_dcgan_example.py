"""examples/dcgan_digits.py end to end at a tiny budget (its defaults train ~40 epochs in about 100 s on 2 cores)."""
import sys

import pytest

from helpers import load_example


def test_dcgan_digits_writes_the_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the example writes a PNG with matplotlib")
    out = tmp_path / "grid.png"
    assert load_example("dcgan_digits").main(["--epochs", "3", "--seconds", "0", "--width", "8",
                                              "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "epoch   1  loss D" in text and "stopped after 1 epochs" in text and f"wrote {out}" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dcgan_digits_without_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert load_example("dcgan_digits").main(["--epochs", "1", "--out", str(tmp_path / "x.png")]) == 1
    assert 'pip install "forgegrad[plot]"' in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_dcgan_digits_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        load_example("dcgan_digits").main(["--seconds", "soon"])
