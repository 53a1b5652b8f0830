"""Whisper's token-level timestamps with beam search (generate(..., num_beams=K, return_token_timestamps=True))
against transformers' generate: on a tiny checkpoint whose hypotheses end at different steps, so that a shorter
hypothesis is aligned, as transformers gathers the beams' cross-attention, on the first row's steps past its end;
short-form and long-form batches, with timestamps, an attention mask (a window past an input's frames included),
the temperature fallback's thresholds; and <|nocaptions|>'s probability read as transformers reads it with beams
after a single start token; greedy decoding's no-speech reading and windows past the frames too."""
import json
import shutil

import numpy as np
import pytest

from forgegrad.models import from_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from test_hf_whisper_timestamps import _same, pair  # noqa: E402,F401 (pair: the timestamps checkpoint's fixture)
from test_hf_whisper_token_timestamps import EOS, FRAMES, HEADS, MELS, _both, _features  # noqa: E402
from whisper_helpers import build_whisper  # noqa: E402


@pytest.fixture(scope="module")
def ended(tmp_path_factory):
    """test_hf_whisper_token_timestamps' checkpoint with <|endoftext|>'s embedding row (the head is tied) doubled:
    beam search ends some hypotheses after a few tokens, others at the token limit."""
    path = tmp_path_factory.mktemp("whisper_beam_tt") / "tiny"
    build_whisper(path, vocab_size=120 + 51, max_target_positions=40, suppress_tokens=[1, 5] + list(range(109, 120)),
                  timestamps=False, alignment_heads=HEADS, feature_extractor=False)
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
    with torch.no_grad():
        hf.model.decoder.embed_tokens.weight[EOS] *= 2
    hf.save_pretrained(path)
    return from_pretrained(path), hf


def _mask(lengths, frames=FRAMES):
    return (np.arange(frames)[None] < np.array(lengths)[:, None]).astype(np.int64)


CASES = [
    dict(seed=0, num_beams=2, max_new_tokens=12),
    dict(seed=0, num_beams=3, language="de", max_new_tokens=10),
    dict(seed=1, num_beams=2, language="de", max_new_tokens=10),
    dict(seed=0, num_beams=3, return_timestamps=True, max_new_tokens=16),
    dict(seed=0, num_beams=2, language="fr", attention_mask=[60, 100], max_new_tokens=12),
    # the first input's second window starts past its 60 frames (timestamps moved seek to 84)
    dict(seed=2, num_beams=3, language="fr", attention_mask=[60, 100], max_new_tokens=12),
    # rows decoded again under the fallback's thresholds are aligned again, in the retried batch
    dict(seed=1, num_beams=2, language="de", max_new_tokens=10, temperature=(0.0, 0.0), logprob_threshold=-1.7),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_beam_token_timestamps_equal_transformers(ended, case):
    case = dict(case)
    x = _features(2, case.pop("seed"))
    if "attention_mask" in case:
        case["attention_mask"] = _mask(case["attention_mask"])
    ours, ref = _both(ended, x, **case)
    np.testing.assert_array_equal(ours["sequences"], ref["sequences"].numpy())
    assert (ours["sequences"] == EOS).any()  # a hypothesis ended before the other: its row padded
    assert ours["token_timestamps"].dtype == np.float32
    np.testing.assert_allclose(ours["token_timestamps"], ref["token_timestamps"].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_beams,condition", [(2, False), (2, True), (3, True)])
def test_beam_token_timestamps_long_form(ended, num_beams, condition):
    """Long-form windows by beam search: the rows' times and each segment's from the audio's start; conditioned on
    the previous tokens, the prompts left padded."""
    x = _features(2, 7, frames=260)
    ours, ref = _both(ended, x, num_beams=num_beams, attention_mask=_mask([260, 190], 260), return_timestamps=True,
                      max_new_tokens=10, return_segments=True, condition_on_prev_tokens=condition, language="en")
    np.testing.assert_array_equal(ours["sequences"], ref["sequences"].numpy())
    np.testing.assert_allclose(ours["token_timestamps"], ref["token_timestamps"].numpy(), rtol=0, atol=1e-6)
    for our_row, ref_row in zip(ours["segments"], ref["segments"]):
        assert len(our_row) == len(ref_row) > 0
        for a, b in zip(our_row, ref_row):
            np.testing.assert_allclose(a["token_timestamps"], b["token_timestamps"].numpy(), rtol=0, atol=1e-6)


def _without_languages(path, plain):
    """(forgegrad's, transformers' model) of a copy of the checkpoint at ``path`` in ``plain`` whose generation
    config has no languages or tasks (an English-only model)."""
    shutil.copytree(path, plain)
    settings = json.loads((plain / "generation_config.json").read_text())
    settings["is_multilingual"] = False
    del settings["lang_to_id"], settings["task_to_id"]
    (plain / "generation_config.json").write_text(json.dumps(settings))
    return from_pretrained(plain), transformers.WhisperForConditionalGeneration.from_pretrained(plain).eval()

def test_no_speech_after_one_start_token(pair, tmp_path):  # noqa: F811
    """A checkpoint without languages decodes with timestamps after <|startoftranscript|> alone; transformers then
    takes <|nocaptions|>'s probability from each attempt's first scores, by place: with beams, the first rows of
    the B x K (the first input's beams first). The skipped windows, and the retried ones, are transformers'."""
    model, hf = _without_languages(pair[2], tmp_path / "english")
    x = np.random.default_rng(0).standard_normal((2, 16, 350)).astype(np.float32)
    mask = _mask([350, 230], 350)
    for num_beams, threshold in ((2, 0.002), (3, 0.004)):
        kwargs = dict(max_new_tokens=16, return_segments=True, num_beams=num_beams, temperature=(0.0, 0.0),
                      logprob_threshold=-0.3, no_speech_threshold=threshold)
        ours = model.generate(x, attention_mask=mask, **kwargs)
        with torch.no_grad():
            theirs = hf.generate(torch.tensor(x), attention_mask=torch.tensor(mask), return_timestamps=True, **kwargs)
        _same(ours, theirs)


def test_greedy_no_speech_at_each_attempt_after_one_start_token(pair, tmp_path):  # noqa: F811
    """Greedy, after <|startoftranscript|> alone, transformers reads <|nocaptions|>'s probability from each
    attempt's first scores (the retried rows only, by place), not from the first attempt's whole batch: a retried
    window is skipped or kept as transformers decides."""
    model, hf = _without_languages(pair[2], tmp_path / "english")
    x = np.random.default_rng(1).standard_normal((2, MELS, FRAMES)).astype(np.float32)
    kwargs = dict(max_new_tokens=12, return_timestamps=True, temperature=(0.0, 0.0, 0.0), logprob_threshold=-0.3,
                  no_speech_threshold=0.004)
    ours = model.generate(x, **kwargs)
    with torch.no_grad():
        theirs = hf.generate(torch.tensor(x), **kwargs)
    np.testing.assert_array_equal(ours, theirs.numpy())


@pytest.mark.parametrize("lengths", [[60, 60], [40, 40]])
def test_greedy_window_past_an_inputs_frames(pair, tmp_path, lengths):  # noqa: F811
    """Greedy with timestamps: a short-form batch's second window starts past its inputs' frames (the attention
    mask's ones), a negative count; transformers cuts that many positions from the end once for the batch (every
    row's count the same) and again per row, and the token times follow."""
    _, _, path = pair
    aligned = tmp_path / "aligned"
    shutil.copytree(path, aligned)
    settings = json.loads((aligned / "generation_config.json").read_text())
    settings["alignment_heads"] = HEADS
    (aligned / "generation_config.json").write_text(json.dumps(settings))
    ours, ref = _both((from_pretrained(aligned), transformers.WhisperForConditionalGeneration.from_pretrained(aligned)
                       .eval()), _features(2, 0), attention_mask=_mask(lengths), return_timestamps=True,
                      max_new_tokens=12)
    np.testing.assert_array_equal(ours["sequences"], ref["sequences"].numpy())
    np.testing.assert_allclose(ours["token_timestamps"], ref["token_timestamps"].numpy(), rtol=0, atol=1e-6)
