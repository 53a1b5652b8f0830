"""generate(..., repetition_penalty=p): transformers' RepetitionPenaltyLogitsProcessor (prompt included, left
padding not), checked against transformers' generate on checkpoints it wrote, greedy and in beam search, for
decoders and encoder-decoders; the caller's own logits_processor; and the server's per-request penalties
(logit_bias, presence_penalty, frequency_penalty, repetition_penalty) against their published formulas."""
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf.logits_processors import LogitsProcessors, RequestPenalties
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 60


def _make(name):
    return hfc.tiny_generator(name, VOCAB)


@pytest.fixture(scope="module", params=["gpt2", "llama", "t5"])
def pair(request, tmp_path_factory):
    hf = _make(request.param).eval()
    path = tmp_path_factory.mktemp("penalties") / request.param
    hf.save_pretrained(path)
    return request.param, hf, from_pretrained(path), path


def _prompts(seq2seq):
    rng = np.random.RandomState(1)
    ids = rng.randint(3, 12, (3, 9))  # a small alphabet: the prompts repeat tokens the model may pick
    mask = np.ones((3, 9), np.int64)
    if seq2seq:
        mask[1, 6:], mask[2, 3:] = 0, 0
    else:
        mask[1, :3], mask[2, :5] = 0, 0
        ids[1, :3], ids[2, :5] = 4, 5  # padding ids that also occur in the other rows' prompts: not penalized
    return ids, mask


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("penalty", [4.0, 0.3])
def test_repetition_penalty_is_transformers(pair, num_beams, penalty):
    name, hf, model, _ = pair
    ids, mask = _prompts(name == "t5")
    kw = {} if name == "t5" else {"eos_token_id": VOCAB - 2, "pad_token_id": VOCAB - 1}
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=16,
                           do_sample=False, num_beams=num_beams, repetition_penalty=penalty, **kw).numpy()
        plain = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=16,
                            do_sample=False, num_beams=num_beams, **kw).numpy()
    got = generate(model, ids, max_new_tokens=16, attention_mask=mask, num_beams=num_beams,
                   repetition_penalty=penalty, **kw)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(want, plain), "the penalty changed nothing: the test does not exercise it"


def test_repetition_penalty_from_generation_config(pair, tmp_path):
    name, hf, model, path = pair
    config = json.loads((path / "generation_config.json").read_text()) if (path / "generation_config.json").exists() \
        else {}
    config["repetition_penalty"] = 1.9
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    model = from_pretrained(tmp_path)
    ids, mask = _prompts(name == "t5")
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=10, attention_mask=mask),
                                  generate(from_pretrained(path), ids, max_new_tokens=10, attention_mask=mask,
                                           repetition_penalty=1.9))


def test_repetition_processor_equals_transformers_processor():
    from transformers.generation import logits_process as lp
    rng = np.random.RandomState(0)
    for L in (1, 4, 9):
        seqs = rng.randint(0, 8, (4, L))
        scores = (rng.standard_normal((4, 8)) * 3).astype(np.float32)
        pad = np.array([0, 1, 0, min(3, L - 1)])
        want = lp.RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=torch.tensor(pad))(
            torch.tensor(seqs), torch.tensor(scores)).numpy()
        got = LogitsProcessors(repetition_penalty=1.3, padding=pad)(seqs, scores)
        np.testing.assert_array_equal(got, want, err_msg=f"length {L}")


def test_logits_processor_runs_after_the_builtin_ones(pair):
    name, _, model, _ = pair
    ids, mask = _prompts(name == "t5")
    seen = []

    def ban_seven(sequences, scores):
        seen.append(sequences.shape)
        scores = scores.copy()
        scores[:, 7] = -np.inf
        return scores

    out = generate(model, ids, max_new_tokens=8, attention_mask=mask, logits_processor=ban_seven)
    start = 1 if name == "t5" else ids.shape[1]
    assert not (out[:, start:] == 7).any() and len(seen) == out.shape[1] - start
    with pytest.raises(TypeError, match="logits_processor must be a callable"):
        generate(model, ids, logits_processor=[ban_seven, 3])
    for bad in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="repetition_penalty must be a number > 0"):
            generate(model, ids, repetition_penalty=bad)


def test_request_penalties_follow_their_formulas():
    rng = np.random.RandomState(0)
    logits = (rng.standard_normal(10) * 2).astype(np.float32)
    prompt, output = [1, 2, 2], [3, 3, 3, 2, 9]
    got = RequestPenalties(presence=0.5, frequency=0.25, repetition=1.5, logit_bias={4: -100, 0: 3.5}).apply(
        logits[None], prompt, output)
    want = logits.astype(np.float64)
    want[[4, 0]] += [-100, 3.5]
    for t in {1, 2, 3, 9}:  # repetition: prompt and output tokens
        want[t] = want[t] * 1.5 if want[t] < 0 else want[t] / 1.5
    counts = np.bincount(output, minlength=10)
    want -= 0.25 * counts + 0.5 * (counts > 0)  # frequency and presence: output tokens only
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (1, 10)
    assert not RequestPenalties().active
    np.testing.assert_array_equal(RequestPenalties(presence=1.0).apply(logits, prompt, []), logits)
