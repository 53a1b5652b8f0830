"""Whisper generate with a text prompt (``prompt_ids``, ``prompt_condition_type``) against transformers' generate,
token for token and segment for segment: short-form with and without timestamps, long-form with and without
condition_on_prev_tokens under both condition types, a batch of different lengths, and the errors."""
import numpy as np
import pytest
from test_hf_whisper_timestamps import FRAMES, PREV, _features, _same, pair  # noqa: F401 (pair: the fixture)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPT = [PREV, 7, 42, 13, 99, 5]  # get_prompt_ids' shape: <|startofprev|>, then the text's tokens


def _differ(a, b):
    return a.shape != b.shape or (a != b).any()


@pytest.mark.parametrize("kwargs", [
    dict(language="en", max_new_tokens=12),
    dict(language="fr", max_new_tokens=12, return_timestamps=True),
    dict(task="translate"),  # the config's max_length, grown by the prompt's length
], ids=["plain", "timestamps", "max-length"])
def test_short_form_prompt_matches_transformers(pair, kwargs):  # noqa: F811
    model, hf, _ = pair
    x = _features(2, FRAMES, seed=1)
    ours = model.generate(x, prompt_ids=np.array(PROMPT), **kwargs)
    theirs = hf.generate(torch.tensor(x), prompt_ids=torch.tensor(PROMPT), **kwargs).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert _differ(ours, model.generate(x, **kwargs))  # the prompt mattered
    # the returned rows hold no prompt: they start after the decoder prompt
    assert not np.isin(ours, PROMPT[:1]).any()


@pytest.mark.parametrize("kwargs", [
    dict(),  # every window starts with the prompt
    dict(condition_on_prev_tokens=True),  # the prompt's text is the oldest previous tokens
    dict(condition_on_prev_tokens=True, prompt_condition_type="all-segments"),
    dict(condition_on_prev_tokens=True, temperature=(0.0, 0.0), compression_ratio_threshold=1.4,
         logprob_threshold=-0.5),  # rows decoded again keep their prompt
], ids=["first-segment", "conditioned", "all-segments", "fallback"])
def test_long_form_prompt_matches_transformers(pair, kwargs):  # noqa: F811
    model, hf, _ = pair
    batch = 2 if kwargs else 1  # (the prompts of a batch conditioned on its previous tokens are left padded)
    x = _features(2, 450, seed=5)[:batch]
    mask = np.ones((batch, 450), np.int64)
    mask[1:, 310:] = 0  # the second input is 3.1 seconds long
    kwargs = dict(language="en", max_new_tokens=16, return_segments=True, **kwargs)
    ours = model.generate(x, attention_mask=mask, prompt_ids=PROMPT, **kwargs)
    theirs = hf.generate(torch.tensor(x), attention_mask=torch.tensor(mask), return_timestamps=True,
                         prompt_ids=torch.tensor(PROMPT), **kwargs)
    _same(ours, theirs)
    assert ours["segments"][0][0]["start"] == 0.0  # the prompt is not a segment of the answer
    assert _differ(ours["sequences"], model.generate(x, attention_mask=mask, **kwargs)["sequences"])


def test_prompt_errors(pair):  # noqa: F811
    model, hf, _ = pair
    x = _features(1, FRAMES)
    with pytest.raises(ValueError, match="prompt_condition_type='all-segments' needs condition_on_prev_tokens"):
        model.generate(x, prompt_ids=PROMPT, prompt_condition_type="all-segments")
    with pytest.raises(ValueError, match="condition_on_prev_tokens=True"):  # transformers refuses it too
        hf.generate(torch.tensor(x), prompt_ids=torch.tensor(PROMPT), prompt_condition_type="all-segments")
    with pytest.raises(ValueError, match="prompt_condition_type must be 'first-segment' or 'all-segments'"):
        model.generate(x, prompt_ids=PROMPT, prompt_condition_type="every-window")
    for bad in ([], [[PREV, 7]], [PREV, 10 ** 6], [1.5, 2.0], [PREV, -1]):
        with pytest.raises(ValueError, match="prompt_ids must be a non-empty 1-D sequence of token ids"):
            model.generate(x, prompt_ids=bad)
    with pytest.raises(ValueError, match=r"decoder prompt \(\d+ tokens\) \+ max_new_tokens \(60\)"):
        model.generate(x, prompt_ids=PROMPT, max_new_tokens=60)  # 64 positions in all
