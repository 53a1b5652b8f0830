"""``forgegrad generate`` and ``forgegrad transcribe`` freeze the Hugging Face model they load in place, as the servers
do (serve/openai_routes.freeze_in_place: the same memory check, the same log line); ``--no-freeze`` runs it as loaded.
Freezing promises the same outputs bit for bit, so each command's output must be the same both ways: a decoder's
greedy, sampled and beam-searched text, an encoder-decoder's, and Whisper's text and timestamped JSON (checkpoints
transformers wrote with save_pretrained)."""
from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from hf_conformance import tiny_byte_gpt2, tiny_generator  # noqa: E402
import whisper_helpers  # noqa: E402

from forgegrad.cli import main  # noqa: E402

whisper_dir = whisper_helpers.whisper_dir  # the checkpoint's fixture


def _both(argv, capsys, caplog):
    """stdout of ``forgegrad ARGV`` frozen (the default) and with --no-freeze, each run's freezing checked in the
    log: (frozen, loose)."""
    out = []
    for extra in ([], ["--no-freeze"]):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="forgegrad.serve"):
            assert main(argv + extra) == 0
        frozen = [r for r in caplog.records if "frozen in place" in r.getMessage()]
        assert len(frozen) == (0 if extra else 1), caplog.text
        out.append(capsys.readouterr().out)
    return tuple(out)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return tiny_byte_gpt2(tmp_path_factory.mktemp("freeze-cli") / "gpt2", n_positions=128)


@pytest.mark.parametrize("how", [[], ["--temperature", "0.8", "--top-k", "40", "--seed", "5"],
                                 ["--num-beams", "3", "--num-return-sequences", "2"]],
                         ids=["greedy", "sampled", "beams"])
def test_generate_writes_the_same_text_frozen_or_not(gpt2_dir, capsys, caplog, how):
    frozen, loose = _both(["generate", str(gpt2_dir), "--prompt", "Hello there, tell me", "--max-new-tokens", "16",
                           *how], capsys, caplog)
    assert frozen == loose and frozen.startswith("Hello there, tell me" if not how or "--seed" in how else "===")
    assert len(frozen) > len("Hello there, tell me") + 4


def test_generate_with_an_encoder_decoder_frozen_or_not(tmp_path, capsys, caplog):
    tiny_generator("t5", 300).save_pretrained(tmp_path / "t5")
    frozen, loose = _both(["generate", str(tmp_path / "t5"), "--prompt", "translate: a tiny sentence",
                           "--max-new-tokens", "10"], capsys, caplog)
    assert frozen == loose and frozen.strip()


def test_transcribe_writes_the_same_text_frozen_or_not(whisper_dir, tmp_path, capsys, caplog):
    data, _, _ = whisper_helpers.WAVS["16k-mono-float32"]()
    wav = tmp_path / "clip.wav"
    wav.write_bytes(data)
    for fmt in ("text", "verbose_json"):  # verbose_json: timestamps and each segment's avg_logprob
        frozen, loose = _both(["transcribe", str(wav), "--model", str(whisper_dir), "--format", fmt],
                              capsys, caplog)
        assert frozen == loose and frozen.strip()
