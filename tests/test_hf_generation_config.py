"""generate(..., num_return_sequences=R) and generation_config.json's sampling defaults (do_sample,
temperature, top_k, top_p) and num_return_sequences, as transformers' generate takes them: the R best beams
per prompt equal transformers' (GPT-2, Llama with left padding; T5), R draws per prompt when sampling, the
config's sampling settings when the caller passes none (top_k 50 where the config sets none), explicit
arguments winning, transformers' errors; and ``forgegrad generate --num-return-sequences``. The end and pad tokens
when the caller passes none: generation_config.json's, else (no such file) config.json's, an int or a list, pad
else the first end token, as transformers' generate takes them (greedy, beam search and sampling, a left-padded
batch whose rows end at different steps); None or [] given: no end token."""
import json

import numpy as np
import pytest

from forgegrad import manual_seed
from forgegrad.cli import main
from forgegrad.models import from_pretrained, generate, save_pretrained
from forgegrad.models.hf.tokenizer import ByteTokenizer
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

VOCAB = 90
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9}


def _make(name):
    return hfc.tiny_generator(name, VOCAB)


@pytest.fixture(scope="module", params=["gpt2", "llama", "t5"])
def pair(request, tmp_path_factory):
    hf = _make(request.param).eval()
    path = tmp_path_factory.mktemp("genconfig") / request.param
    hf.save_pretrained(path)
    return request.param, hf, from_pretrained(path), path


def _prompts(seq2seq):
    """Two prompts: a decoder's second one left-padded, an encoder's right-padded."""
    ids = np.random.RandomState(0).randint(3, VOCAB, (2, 7))
    mask = np.ones((2, 7), np.int64)
    if seq2seq:
        mask[1, 4:] = 0
    else:
        mask[1, :3] = 0
    return ids, mask


def _with_config(path, tmp_path, **settings):
    """A copy of the checkpoint at ``path`` whose generation_config.json also sets ``settings``."""
    config = json.loads((path / "generation_config.json").read_text()) if (path / "generation_config.json").exists() \
        else {}
    config.update(settings)
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    return tmp_path


def _ends(name):
    """The end and pad tokens given to both sides (T5: the checkpoint's, which both take when none is given)."""
    return {} if name == "t5" else {"eos_token_id": VOCAB - 2, "pad_token_id": VOCAB - 1}


def _hf_generate(hf, ids, mask, **kw):
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).numpy()


def test_beam_search_returns_transformers_best_beams(pair):
    name, hf, model, _ = pair
    ids, mask = _prompts(name == "t5")
    start = 1 if name == "t5" else ids.shape[1]
    # end tokens that some returned hypotheses produce and others do not (rows of different lengths)
    plain = generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=4, num_return_sequences=4,
                     pad_token_id=VOCAB - 1)
    mixed = False
    for eos in (None, int(plain[0, start + 4]), int(plain[3, start + 2]), int(plain[5, start + 6])):
        for K, R in ((3, 2), (4, 3), (4, 4)):
            kw = {"eos_token_id": eos, "pad_token_id": VOCAB - 1}
            if name == "t5":
                kw = {} if eos is None else {"eos_token_id": eos}
            want = _hf_generate(hf, ids, mask, max_new_tokens=12, do_sample=False, num_beams=K,
                                num_return_sequences=R, **kw)
            got = generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=K, num_return_sequences=R,
                           **kw)
            assert got.shape[0] == 2 * R
            np.testing.assert_array_equal(got, want, err_msg=f"eos {eos}, beams {K}, return {R}")
            # prompt-major, best first: row 0 of each prompt is the single best hypothesis
            best = generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=K, **kw)
            np.testing.assert_array_equal(got[::R, :best.shape[1]], best)
            assert len({tuple(r) for r in got[:R]}) == R and len({tuple(r) for r in got[R:]}) == R
            if eos is not None:
                ended = [(r[start:] == eos).any() for r in got]
                mixed |= any(ended) and not all(ended)
    assert mixed, "no setting returned hypotheses of different lengths: the test does not cover them"


def test_num_return_sequences_from_generation_config(pair, tmp_path):
    name, _, _, path = pair
    path = _with_config(path, tmp_path, num_beams=4, num_return_sequences=3, max_new_tokens=10)
    hf = type(_make(name)).from_pretrained(path).eval()
    model = from_pretrained(path)
    ids, mask = _prompts(name == "t5")
    kw = _ends(name)
    want = _hf_generate(hf, ids, mask, **kw)
    got = generate(model, ids, attention_mask=mask, **kw)
    assert got.shape == (6, (1 if name == "t5" else 7) + 10)
    np.testing.assert_array_equal(got, want)
    # the arguments win over the config's
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, num_return_sequences=1, **kw),
                                  _hf_generate(hf, ids, mask, num_return_sequences=1, **kw))


def test_sampling_defaults_from_generation_config(pair, tmp_path):
    name, _, plain, path = pair
    model = from_pretrained(_with_config(path, tmp_path, **SAMPLING))
    ids, mask = _prompts(name == "t5")
    manual_seed(5)
    got = generate(model, ids, max_new_tokens=16, attention_mask=mask)
    manual_seed(5)
    want = generate(plain, ids, max_new_tokens=16, attention_mask=mask, **SAMPLING)
    np.testing.assert_array_equal(got, want)
    greedy = generate(plain, ids, max_new_tokens=16, attention_mask=mask)
    assert not np.array_equal(got, greedy), "the config's sampling gave the greedy tokens: nothing was tested"
    # an argument given wins over the config's: here top_k
    manual_seed(5)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=16, attention_mask=mask, top_k=1), greedy)


def test_hot_config_samples_with_transformers_top_k_default_and_do_sample_false_is_greedy(pair, tmp_path):
    name, _, plain, path = pair
    path = _with_config(path, tmp_path, do_sample=True, temperature=4.0)  # no top_k: transformers' 50
    model = from_pretrained(path)
    ids, mask = _prompts(name == "t5")
    kw = _ends(name)
    greedy = generate(plain, ids, max_new_tokens=20, attention_mask=mask, **kw)
    manual_seed(9)
    hot = generate(model, ids, max_new_tokens=20, attention_mask=mask, **kw)
    assert not np.array_equal(hot, greedy)
    for top_k, same in ((50, True), (None, False)):  # None given: no top-k filter, as in transformers
        manual_seed(9)
        other = generate(plain, ids, max_new_tokens=20, attention_mask=mask, do_sample=True, temperature=4.0,
                         top_k=top_k, **kw)
        assert np.array_equal(hot, other) == same, f"top_k {top_k}"
    # do_sample=False given: greedy whatever the config says, transformers' greedy tokens
    hf = type(_make(name)).from_pretrained(path).eval()
    want = _hf_generate(hf, ids, mask, max_new_tokens=20, do_sample=False, **kw)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=20, attention_mask=mask, do_sample=False,
                                           **kw), want)
    np.testing.assert_array_equal(want, greedy)
    torch.manual_seed(0)  # transformers samples with that config too
    assert not np.array_equal(_hf_generate(hf, ids, mask, max_new_tokens=20, **kw), want)
    # the config's do_sample with beams: beam sampling, as transformers; a seed repeats it
    manual_seed(4)
    sampled = generate(model, ids, max_new_tokens=8, attention_mask=mask, num_beams=2, **kw)
    manual_seed(4)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=8, attention_mask=mask, num_beams=2, **kw),
                                  sampled)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=8, attention_mask=mask, num_beams=2,
                                           do_sample=False, **kw),
                                  _hf_generate(hf, ids, mask, max_new_tokens=8, num_beams=2, do_sample=False, **kw))


def test_sampling_returns_each_prompt_num_return_sequences_times(pair, tmp_path):
    name, _, model, path = pair
    ids, mask = _prompts(name == "t5")
    start = 1 if name == "t5" else ids.shape[1]
    manual_seed(3)
    got = generate(model, ids, max_new_tokens=10, attention_mask=mask, do_sample=True, num_return_sequences=3)
    manual_seed(3)
    want = generate(model, np.repeat(ids, 3, axis=0), max_new_tokens=10, attention_mask=np.repeat(mask, 3, axis=0),
                    do_sample=True)
    np.testing.assert_array_equal(got, want)
    assert got.shape[0] == 6 and len({tuple(r) for r in got[:, start:]}) == 6
    if name != "t5":
        np.testing.assert_array_equal(got[:, :start], np.repeat(ids, 3, axis=0))
    config = from_pretrained(_with_config(path, tmp_path, num_return_sequences=2, **SAMPLING))
    manual_seed(3)
    got = generate(config, ids, max_new_tokens=10, attention_mask=mask)
    manual_seed(3)
    np.testing.assert_array_equal(got, generate(model, ids, max_new_tokens=10, attention_mask=mask,
                                                num_return_sequences=2, **SAMPLING))
    assert got.shape[0] == 4


def test_num_return_sequences_errors(pair, tmp_path):
    _, _, model, path = pair
    ids, _ = _prompts(False)
    with pytest.raises(ValueError, match=r"num_return_sequences \(5\) must be <= num_beams \(4\)"):
        generate(model, ids, num_beams=4, num_return_sequences=5)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="num_return_sequences must be an int >= 1"):
            generate(model, ids, do_sample=True, num_return_sequences=bad)
    for bad in (2.0, "2", True):
        with pytest.raises(TypeError, match="num_return_sequences must be an int >= 1"):
            generate(model, ids, num_beams=3, num_return_sequences=bad)
    with pytest.raises(ValueError, match="greedy decoding gives one sequence per prompt: num_return_sequences=2"):
        generate(model, ids, num_return_sequences=2)
    greedy_config = from_pretrained(_with_config(path, tmp_path, num_return_sequences=2))
    with pytest.raises(ValueError, match="num_return_sequences=2"):
        generate(greedy_config, ids)
    with pytest.raises(ValueError, match="top_k must be an int >= 0"):
        generate(model, ids, do_sample=True, top_k=-1)


def test_cli_num_return_sequences(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "bytes"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=300, n_positions=64, initializer_range=0.3, eos_token_id=299,
        bos_token_id=299)).save_pretrained(path)
    ids = list("Hi".encode())
    want = generate(from_pretrained(path), [ids], max_new_tokens=8, num_beams=3, num_return_sequences=2,
                    eos_token_id=299)
    assert main(["generate", str(path), "--prompt", "Hi", "--max-new-tokens", "8", "--num-beams", "3",
                 "--num-return-sequences", "2"]) == 0
    captured = capsys.readouterr()
    texts = []
    for row in want[:, len(ids):].tolist():
        texts.append("Hi" + ByteTokenizer().decode(row[:row.index(299)] if 299 in row else row))
    assert captured.out == "".join(f"=== GENERATED SEQUENCE {i + 1} ===\n{t}\n" for i, t in enumerate(texts))
    assert "2 sequences" in captured.err and "beam search with 3 beams" in captured.err
    args = ["generate", str(path), "--prompt", "Hi", "--max-new-tokens", "6", "--temperature", "2.0", "--seed", "1",
            "--num-return-sequences", "3"]
    assert main(args) == 0
    sampled = capsys.readouterr().out
    assert sampled.count("=== GENERATED SEQUENCE") == 3
    assert main(args) == 0 and capsys.readouterr().out == sampled  # the same seed, the same texts
    assert main(["generate", str(path), "--prompt", "Hi", "--num-return-sequences", "2"]) == 2
    assert "needs sampling" in capsys.readouterr().err
    assert main(["generate", str(path), "--prompt", "Hi", "--num-beams", "2", "--num-return-sequences", "3"]) == 2
    assert "num_return_sequences (3) must be <= num_beams (2)" in capsys.readouterr().err


def _copy(path, tmp_path, generation=None, config=None):
    """A copy of the checkpoint at ``path``: generation_config.json updated with ``generation`` (the string
    "none": the file removed), config.json with ``config``."""
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    for name, settings in (("generation_config.json", generation), ("config.json", config)):
        if settings == "none":
            (tmp_path / name).unlink()
        elif settings:
            (tmp_path / name).write_text(json.dumps({**json.loads((tmp_path / name).read_text()), **settings}))
    return tmp_path


def _first(row, tokens):
    """The index of the first of ``tokens`` in ``row``, else len(row)."""
    return next((i for i, t in enumerate(row) if t in tokens), len(row))


def _end_tokens(free, start, j, need_b=True):
    """From a two-row run without end tokens: (a, b, c) with row 0 reaching a first at step j, row 1 reaching b
    first at another step (before a, which it may never reach), and c, which row 0 reaches first (step 0); None
    where row 0 reached a before step j or (``need_b``) there is no such b."""
    r0, r1 = free[0, start:].tolist(), free[1, start:].tolist()
    a = r0[j]
    b = next((t for k, t in enumerate(r1)
              if k != j and t not in r1[:k] and t not in r0[:j + 1] and a not in r1[:k + 1]), None)
    return None if a in r0[:j] or (need_b and b is None) else (a, b, r0[0])


def _eos_case(pair, kind="list", **kw):
    """(name, prompts, mask, start, a, b, c, j) from a run of 12 tokens with no end token (greedy, or ``kw``):
    end tokens (a, or a and b: ``kind``) with which row 0 ends at step j and row 1 at another step (or never)."""
    name, _, model, _ = pair
    ids, mask = _prompts(name == "t5")
    start = 1 if name == "t5" else ids.shape[1]
    free = generate(model, ids, max_new_tokens=12, attention_mask=mask, eos_token_id=None, **kw)
    assert free.shape[1] == start + 12
    for j in (*range(2, 11), 1):
        tokens = _end_tokens(free, start, j, need_b=kind == "list")
        if tokens is None:
            continue
        ends = tokens[:1] if kind == "int" else tokens[:2]
        out = generate(model, ids, max_new_tokens=12, attention_mask=mask, eos_token_id=list(ends), **kw)
        first = [_first(r, ends) for r in out[:, start:].tolist()]
        if first[0] != first[1] and min(first) < 11:
            return (name, ids, mask, start) + tokens + (j,)
    pytest.fail("no end tokens the two rows reach at different steps")


@pytest.mark.parametrize("where", ["generation_config", "config_only"])
@pytest.mark.parametrize("kind", ["int", "list"])
@pytest.mark.parametrize("beams", [1, 3])
def test_end_tokens_from_the_checkpoint_as_transformers(pair, tmp_path, where, kind, beams):
    """No eos_token_id given: the checkpoint's (generation_config.json's; config.json's where there is none, and
    else ignored: here it names a token row 0 reaches earlier), as transformers' generate takes them with no eos
    argument, greedy and beam search. The rows end at different steps (end tokens from a run without them), the
    one that ended first padded: with the first end token (these decoders' configs name no pad token; T5's
    pad 0, which beam search replaces by the first end token, as transformers)."""
    name, ids, mask, start, a, b, c, j = _eos_case(pair, kind, num_beams=beams, do_sample=False)
    eos = a if kind == "int" else [a, b]
    if where == "generation_config":
        path = _copy(pair[3], tmp_path, generation={"eos_token_id": eos}, config={"eos_token_id": c})
    else:
        path = _copy(pair[3], tmp_path, generation="none", config={"eos_token_id": eos})
    hf = type(_make(name)).from_pretrained(path).eval()
    model = from_pretrained(path)
    assert hf.generation_config.eos_token_id == eos
    assert hf.generation_config.pad_token_id == (0 if name == "t5" else None)
    got = generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=beams, do_sample=False)
    np.testing.assert_array_equal(got, _hf_generate(hf, ids, mask, max_new_tokens=12, num_beams=beams,
                                                    do_sample=False))
    ends = {a} if kind == "int" else {a, b}
    first = [_first(r, ends) for r in got[:, start:].tolist()]
    assert min(first) < 11 and first[0] != first[1], first  # the rows end at different steps (or one never)
    assert got.shape[1] == start + min(max(first) + 1, 12)
    pad = 0 if name == "t5" and beams == 1 else a
    early = int(np.argmin(first))
    np.testing.assert_array_equal(got[early, start + first[early] + 1:], pad)  # after its end: the pad
    if beams == 1:
        assert first[0] == j
        if kind == "list":
            assert got[1, start + first[1]] == b  # row 1 ended at the list's second token
    # given None (transformers' own meaning of a None it is given) or []: no end token, all 12 tokens
    free = _hf_generate(hf, ids, mask, max_new_tokens=12, num_beams=beams, do_sample=False, eos_token_id=None)
    assert free.shape[1] == start + 12
    for off in (None, []):
        np.testing.assert_array_equal(generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=beams,
                                               do_sample=False, eos_token_id=off), free)


def test_pad_token_from_the_checkpoint_else_the_first_end_token(pair, tmp_path):
    """A pad token in generation_config.json pads the finished rows (transformers' too); given eos_token_id
    with the config's pad; pad_token_id=None given: the first end token, as transformers takes a None."""
    name, ids, mask, start, a, b, _, j = _eos_case(pair)
    pad = VOCAB - 1
    path = _copy(pair[3], tmp_path, generation={"eos_token_id": [a, b], "pad_token_id": pad})
    hf = type(_make(name)).from_pretrained(path).eval()
    model = from_pretrained(path)
    got = generate(model, ids, max_new_tokens=12, attention_mask=mask)
    np.testing.assert_array_equal(got, _hf_generate(hf, ids, mask, max_new_tokens=12, do_sample=False))
    np.testing.assert_array_equal(got[0, start + j + 1:], pad)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=12, attention_mask=mask, eos_token_id=[a, b]),
                                  got)
    for kw in ({"pad_token_id": None}, {"eos_token_id": [b, a], "pad_token_id": None}):
        first = kw.get("eos_token_id", [a])[0]
        got = generate(model, ids, max_new_tokens=12, attention_mask=mask, **kw)
        np.testing.assert_array_equal(got, _hf_generate(hf, ids, mask, max_new_tokens=12, do_sample=False, **kw))
        np.testing.assert_array_equal(got[0, start + j + 1:], first)


def test_generation_config_without_end_token_takes_none_from_config_json(pair, tmp_path):
    """generation_config.json present but naming no end token: none, though config.json names one (transformers
    builds its generation config from config.json only where there is no generation_config.json)."""
    name, ids, mask, start, a, _, _, _ = _eos_case(pair)
    generation = json.loads((pair[3] / "generation_config.json").read_text())
    generation.pop("eos_token_id", None)
    path = _copy(pair[3], tmp_path, config={"eos_token_id": a})
    (path / "generation_config.json").write_text(json.dumps(generation))
    hf = type(_make(name)).from_pretrained(path).eval()
    got = generate(from_pretrained(path), ids, max_new_tokens=12, attention_mask=mask)
    assert got.shape[1] == start + 12
    np.testing.assert_array_equal(got, _hf_generate(hf, ids, mask, max_new_tokens=12, do_sample=False))


def test_sampling_ends_at_the_checkpoint_end_tokens(pair, tmp_path):
    """Sampling with the checkpoint's end tokens draws what it draws with them given, and pads the row that ended
    (the draws of every row go on, so the seed gives the same tokens up to the end)."""
    name, _, plain, path = pair
    ids, mask = _prompts(name == "t5")
    start = 1 if name == "t5" else ids.shape[1]
    manual_seed(11)
    free = generate(plain, ids, max_new_tokens=12, attention_mask=mask, do_sample=True, eos_token_id=None)
    j, (a, b, _) = next((j, t) for j in range(2, 11) if (t := _end_tokens(free, start, j)))
    model = from_pretrained(_copy(path, tmp_path, generation={"eos_token_id": [a, b], "pad_token_id": None}))
    manual_seed(11)
    got = generate(model, ids, max_new_tokens=12, attention_mask=mask, do_sample=True)
    manual_seed(11)
    want = generate(plain, ids, max_new_tokens=12, attention_mask=mask, do_sample=True, eos_token_id=[a, b],
                    pad_token_id=a)
    np.testing.assert_array_equal(got, want)
    first = [_first(r, {a, b}) for r in got[:, start:].tolist()]
    assert first[0] == j and first[1] != j
    np.testing.assert_array_equal(got[0, start + j + 1:], a)
    for r, end in enumerate(first):  # the free run's tokens up to each row's end
        np.testing.assert_array_equal(got[r, :start + end + 1], free[r, :start + end + 1])


def test_end_token_errors(pair):
    _, _, model, _ = pair
    ids, _ = _prompts(False)
    for bad in (VOCAB, -1, [1, VOCAB], [True], "2", 2.0):
        with pytest.raises(ValueError, match="eos_token_id must be a token id"):
            generate(model, ids, max_new_tokens=2, eos_token_id=bad)
    with pytest.raises(ValueError, match="pad_token_id must be a token id"):
        generate(model, ids, max_new_tokens=2, pad_token_id=VOCAB)


def test_cli_beam_search_ends_at_every_end_token_of_the_checkpoint(tmp_path, capsys):
    """forgegrad generate --num-beams: the search ends hypotheses at any of the checkpoint's end tokens (all of
    them given to it, not only the lowest), as generate does with none given; the text stops at the first."""
    torch.manual_seed(0)
    base = tmp_path / "base"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=300, n_positions=64, initializer_range=0.3, eos_token_id=299,
        bos_token_id=299)).save_pretrained(base)
    ids = list("Hi".encode())
    free = generate(from_pretrained(base), [ids], max_new_tokens=8, num_beams=3, eos_token_id=None)[0, 2:].tolist()
    reached = max(free[:3])
    ends = [min(set(range(300)) - set(free)), reached]  # the lowest never reached
    assert ends[0] < ends[1]
    (tmp_path / "copy").mkdir()
    path = _copy(base, tmp_path / "copy", generation={"eos_token_id": ends}, config={"eos_token_id": ends})
    want = generate(from_pretrained(path), [ids], max_new_tokens=8, num_beams=3)[0, 2:].tolist()
    assert reached in want and len(want) < 8
    assert main(["generate", str(path), "--prompt", "Hi", "--max-new-tokens", "8", "--num-beams", "3"]) == 0
    text = ByteTokenizer().decode(want[:_first(want, set(ends))])
    assert capsys.readouterr().out == "Hi" + text + "\n"


def test_save_pretrained_keeps_generation_config(pair, tmp_path):
    """A checkpoint's generation_config.json travels through save_pretrained: forgegrad and transformers read the
    saved one's settings back (and a model built from a config alone writes none)."""
    name, _, _, path = pair
    (tmp_path / "src").mkdir()
    src = _with_config(path, tmp_path / "src", num_beams=3, max_new_tokens=7, **SAMPLING)
    model = from_pretrained(src)
    save_pretrained(model, tmp_path / "out")
    assert from_pretrained(tmp_path / "out").generation_config == model.generation_config
    loaded = transformers.GenerationConfig.from_pretrained(tmp_path / "out")
    assert (loaded.num_beams, loaded.max_new_tokens, loaded.top_k, loaded.do_sample) == (3, 7, 20, True)
    bare = type(model)(model.config)
    save_pretrained(bare, tmp_path / "bare")
    assert not (tmp_path / "bare" / "generation_config.json").exists()
