"""Whisper's token-level timestamps (generate(..., return_token_timestamps=True): the alignment heads'
cross-attention, median filter and dynamic time warping) against transformers' generate on a tiny checkpoint whose
generation_config.json names alignment heads; the warping's vectorised fill against transformers' loop."""

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf.whisper_alignment import (dynamic_time_warping, dynamic_time_warping_reference,
                                                   median_filter)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from transformers.models.whisper import generation_whisper as hf_generation  # noqa: E402
from whisper_helpers import build_whisper  # noqa: E402

EOS, START, EN, FR, DE, TRANSLATE, TRANSCRIBE, NO_TIMESTAMPS = 100, 101, 102, 103, 104, 105, 106, 107
MELS, FRAMES = 16, 100
HEADS = [[0, 1], [1, 0], [1, 1]]


def _checkpoint(path, alignment_heads, median_filter_width=7):
    build_whisper(path, vocab_size=120 + 51, max_target_positions=40, suppress_tokens=[1, 5] + list(range(109, 120)),
                  timestamps=False, alignment_heads=alignment_heads, feature_extractor=False,
                  median_filter_width=median_filter_width)
    return from_pretrained(path), transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("whisper_tt") / "tiny", HEADS)


def _features(batch, seed=0, frames=FRAMES):
    return np.random.default_rng(seed).standard_normal((batch, MELS, frames)).astype(np.float32)


def _both(pair, x, **kw):
    model, hf = pair
    with fg.no_grad():
        ours = model.generate(x, return_token_timestamps=True, **kw)
    hf_kw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    with torch.no_grad():
        ref = hf.generate(torch.tensor(x), return_token_timestamps=True, **hf_kw)
    return ours, ref


CASES = [
    dict(batch=1, max_new_tokens=12),
    dict(batch=2, max_new_tokens=12),
    dict(batch=1, language="de", max_new_tokens=12),
    dict(batch=2, language="de", max_new_tokens=12),
    dict(batch=2, language="en", task="translate", max_new_tokens=8),
    dict(batch=2, return_timestamps=True, max_new_tokens=16),
    dict(batch=2, max_new_tokens=1),
    dict(batch=2, language="fr", attention_mask=[60, 100], max_new_tokens=12),
    dict(batch=2, language="fr", attention_mask=[24, 24], max_new_tokens=12),
    dict(batch=1, attention_mask=[50], max_new_tokens=12),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_token_timestamps_equal_transformers(pair, case):
    case = dict(case)
    batch = case.pop("batch")
    x = _features(batch, seed=batch)
    if "attention_mask" in case:
        case["attention_mask"] = (np.arange(FRAMES)[None] < np.array(case["attention_mask"])[:, None]).astype(np.int64)
    ours, ref = _both(pair, x, **case)
    assert set(ours) == {"sequences", "token_timestamps"}
    np.testing.assert_array_equal(ours["sequences"], ref["sequences"].numpy())
    assert ours["token_timestamps"].dtype == np.float32
    np.testing.assert_allclose(ours["token_timestamps"], ref["token_timestamps"].numpy(), rtol=0, atol=1e-6)
    if ours["sequences"].shape[1] > 4:
        assert ours["token_timestamps"].max() > 0  # the alignment moved along the audio


@pytest.mark.parametrize("condition", [False, True])
def test_token_timestamps_long_form_and_segments(pair, condition):
    """Long-form: each window's times (not offset, as transformers joins them), and each segment's from the start;
    conditioned on the previous tokens, the prompt left padded."""
    x = _features(2, seed=5, frames=260)
    mask = (np.arange(260)[None] < np.array([[260], [190]])).astype(np.int64)
    ours, ref = _both(pair, x, attention_mask=mask, return_timestamps=True, max_new_tokens=10, return_segments=True,
                      condition_on_prev_tokens=condition)
    np.testing.assert_array_equal(ours["sequences"], ref["sequences"].numpy())
    np.testing.assert_allclose(ours["token_timestamps"], ref["token_timestamps"].numpy(), rtol=0, atol=1e-6)
    for our_row, ref_row in zip(ours["segments"], ref["segments"]):
        assert len(our_row) == len(ref_row) > 0
        for a, b in zip(our_row, ref_row):
            np.testing.assert_allclose(a["token_timestamps"], b["token_timestamps"].numpy(), rtol=0, atol=1e-6)


def test_missing_or_bad_alignment_heads(tmp_path, pair):
    model, hf = _checkpoint(tmp_path / "plain", None)
    x = _features(1)
    with pytest.raises(ValueError, match="alignment_heads"):
        hf.generate(torch.tensor(x), return_token_timestamps=True)
    with pytest.raises(ValueError, match="alignment_heads"):
        model.generate(x, return_token_timestamps=True)
    assert model.generate(x, max_new_tokens=3).shape == (1, 3)  # only token timestamps need them
    bad, _ = _checkpoint(tmp_path / "bad", [[2, 0]])
    with pytest.raises(ValueError, match="alignment_heads"):
        bad.generate(x, return_token_timestamps=True)
    with pytest.raises(TypeError, match="return_token_timestamps"):
        pair[0].generate(x, return_token_timestamps="yes")


def test_dynamic_time_warping_matches_transformers_loop():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 7), (6, 1), (5, 9), (12, 40), (30, 17)]:
        m = rng.standard_normal(shape)
        m[rng.random(shape) < 0.2] = 0.5  # ties
        want = hf_generation._dynamic_time_warping(m)
        for got in (dynamic_time_warping(m), dynamic_time_warping_reference(m)):
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


def test_median_filter_matches_transformers():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 20)).astype(np.float32)
    for width in (1, 3, 7):
        want = hf_generation._median_filter(torch.tensor(x), width).numpy()
        np.testing.assert_array_equal(median_filter(x, width), want)
    short = x[..., :3]
    np.testing.assert_array_equal(median_filter(short, 7), short)
    with pytest.raises(ValueError, match="odd"):
        median_filter(x, 4)


def test_token_timestamps_with_int8_weights(pair):
    """The alignment pass projects its queries with the layer's own q_proj, so int8 weights (quantize_weight_only)
    give times along the audio as the float model's (the int8 codes read as floats had given NaN rows and -0.02)."""
    import copy

    from forgegrad.quantization import quantize_weight_only
    model, _ = pair
    lean = quantize_weight_only(copy.deepcopy(model))
    x = _features(2, seed=2)
    with fg.no_grad():
        full = model.generate(x, return_token_timestamps=True, max_new_tokens=12)
        ours = lean.generate(x, return_token_timestamps=True, max_new_tokens=12)
    for out in (full, ours):  # (int8 rounding may pick other tokens: each is checked on its own)
        times = out["token_timestamps"]
        assert np.isfinite(times).all() and (times >= 0).all() and (np.diff(times, axis=1) >= 0).all()
        assert times.max() > 0 and times.shape == out["sequences"].shape
