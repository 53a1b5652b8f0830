"""generate's sampling warpers (forgegrad.models.hf.sampling) against transformers' own: temperature, top-k, top-p and
min-p, alone and together, keeping 1 or 3 tokens a row (beam sampling keeps 1 + #eos); min_p in generate and from
generation_config.json; the draw without replacement that beam sampling uses."""
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models.hf import generate
from forgegrad.models.hf.sampling import Sampler, draw_without_replacement, select_next

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.generation import logits_process as lp  # noqa: E402


def _transformers_warp(scores, temperature, top_k, top_p, min_p, keep):
    x = torch.tensor(scores, dtype=torch.float64)
    warpers = [lp.TemperatureLogitsWarper(temperature)]
    if top_k:
        warpers.append(lp.TopKLogitsWarper(top_k, min_tokens_to_keep=keep))
    if top_p is not None:
        warpers.append(lp.TopPLogitsWarper(top_p, min_tokens_to_keep=keep))
    if min_p is not None:
        warpers.append(lp.MinPLogitsWarper(min_p, min_tokens_to_keep=keep))
    for w in warpers:
        x = w(None, x)
    return x.numpy()


@pytest.mark.parametrize("keep", [1, 3])
@pytest.mark.parametrize("settings", [(0.7, None, None, 0.1), (1.0, 5, None, None), (1.3, None, 0.8, None),
                                      (1.0, 40, 0.9, 0.05), (0.5, None, None, 0.9)])
def test_warpers_are_transformers(settings, keep):
    temperature, top_k, top_p, min_p = settings
    scores = np.random.RandomState(0).standard_normal((6, 97)) * 3
    got = Sampler(True, temperature, top_k, top_p, min_p).warp(scores, min_keep=keep)
    want = _transformers_warp(scores, temperature, top_k, top_p, min_p, keep)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-12)
    assert (np.isfinite(got).sum(-1) >= keep).all()


def test_min_p_in_generate_and_from_generation_config(tmp_path):
    """min_p 1.0 keeps only the most likely token, so sampling with it decodes greedily; generation_config.json's
    min_p applies when sampling, an argument wins; bad values name min_p."""
    from forgegrad.models import from_pretrained
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=60,
                                                              n_positions=32, initializer_range=0.5))
    hf.save_pretrained(tmp_path / "m")
    model = from_pretrained(tmp_path / "m")
    ids = np.random.RandomState(1).randint(0, 60, (2, 5))
    greedy = generate(model, ids, max_new_tokens=8, eos_token_id=None)
    fg.manual_seed(3)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=8, do_sample=True, min_p=1.0, eos_token_id=None),
                                  greedy)
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps({"do_sample": True, "min_p": 1.0}))
    configured = from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(generate(configured, ids, max_new_tokens=8, eos_token_id=None), greedy)
    draws = [generate(configured, ids, max_new_tokens=8, eos_token_id=None, min_p=0.0, temperature=3.0)
             for _ in range(3)]
    assert any(not np.array_equal(d, greedy) for d in draws)
    for bad in (-0.1, 1.5, "0.1", True):
        with pytest.raises(ValueError, match="min_p must be a number in \\[0, 1\\]"):
            generate(model, ids, do_sample=True, min_p=bad)


def test_select_next_keeps_its_draws_and_takes_min_p():
    logits = np.random.RandomState(2).standard_normal((4, 50)).astype(np.float32)
    a = select_next(logits, True, 0.9, 10, 0.95, np.random.default_rng(5))
    b = select_next(logits, True, 0.9, 10, 0.95, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(select_next(logits, True, 1.0, None, None, np.random.default_rng(0), min_p=1.0),
                                  logits.argmax(-1))


def test_draw_without_replacement_follows_the_probabilities():
    """Gumbel top-k: distinct indices, -inf last, and the first draw's frequencies are softmax(scores)'s."""
    rng = np.random.default_rng(0)
    scores = np.array([[np.log(0.5), np.log(0.3), np.log(0.2), -np.inf]])
    picks = draw_without_replacement(np.repeat(scores, 20000, axis=0), 4, rng)
    assert (np.sort(picks, axis=1) == np.arange(4)).all() and (picks[:, 3] == 3).all()
    np.testing.assert_allclose(np.bincount(picks[:, 0], minlength=4) / 20000, [0.5, 0.3, 0.2, 0.0], atol=0.015)
