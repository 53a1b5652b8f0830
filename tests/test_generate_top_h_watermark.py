"""generate's top_h, watermarking_config and guidance_scale (with negative_prompt_ids / negative_prompt_attention_mask)
as transformers 5 takes them: greedy and beam tokens equal transformers' on tiny GPT-2 and Llama (and T5 for the
watermark), the settings as arguments and from generation_config.json; the top-h warper and the watermark processor
against transformers' own on the same scores (sampling that keeps one token a step: transformers' tokens); the green
lists from torch's randperm reproduced exactly; WatermarkDetector's z-scores and predictions equal transformers'
WatermarkDetector's on the same token ids; the ONNX path applies top_h and the watermark as generate does and refuses
guidance; bad values named."""
import json

import numpy as np
import pytest

import forgegrad
import hf_conformance as hfc
from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf.sampling import Sampler, top_h_filter
from forgegrad.models.hf.watermarking import (Watermark, WatermarkDetector, in_torch_randperm, torch_randperm,
                                              torch_sort_head, watermark_settings)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

VOCAB = 90
NEW = 10
ENDS = dict(eos_token_id=VOCAB - 2, pad_token_id=VOCAB - 1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``get(name)``: (the transformers model, its checkpoint directory, the forgegrad model), made once each."""
    made = {}

    def get(name):
        if name not in made:
            hf = hfc.tiny_generator(name, VOCAB).eval()
            path = tmp_path_factory.mktemp("toph_wm") / name
            hf.save_pretrained(path)
            made[name] = hf, path, from_pretrained(path)
        return made[name]
    return get


def _prompts(seq2seq=False):
    ids = np.random.RandomState(1).randint(3, VOCAB - 3, (2, 7))
    mask = np.ones((2, 7), np.int64)
    mask[1, 5:] = 0 if seq2seq else 1
    mask[1, :2] = 1 if seq2seq else 0
    return ids, mask


def _hf(hf, ids, mask, **kw):
    for name in ("negative_prompt_ids", "negative_prompt_attention_mask"):
        if name in kw:
            kw[name] = torch.tensor(kw[name])
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).numpy()


def _with_config(path, tmp_path, **settings):
    config = json.loads((path / "generation_config.json").read_text())
    config.update(settings)
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    return from_pretrained(tmp_path)


NEGATIVE = np.random.RandomState(2).randint(3, VOCAB - 3, (2, 5))
NEGATIVE_MASK = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
CASES = {
    "watermark_lefthash": {"watermarking_config": {"bias": 3.0, "greenlist_ratio": 0.3}},
    "watermark_selfhash": {"watermarking_config": {"bias": 3.0, "seeding_scheme": "selfhash", "context_width": 2,
                                                   "hashing_key": 7}},
    "guidance": {"guidance_scale": 1.8},
    "guidance_below_1": {"guidance_scale": 0.5},
    "guidance_negative_prompt": {"guidance_scale": 1.5, "negative_prompt_ids": NEGATIVE,
                                 "negative_prompt_attention_mask": NEGATIVE_MASK},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_greedy_matches_transformers(checkpoints, tmp_path, name, case):
    """Greedy tokens with each setting as an argument and (but the negative prompt) from generation_config.json equal
    transformers'; the setting changes them; None given turns it off whatever the config says."""
    hf, path, model = checkpoints(name)
    ids, mask = _prompts()
    kw = CASES[case]
    want = _hf(hf, ids, mask, max_new_tokens=NEW, do_sample=False, **ENDS, **kw)
    got = generate(model, ids, attention_mask=mask, max_new_tokens=NEW, **ENDS, **kw)
    np.testing.assert_array_equal(got, want)
    plain = generate(model, ids, attention_mask=mask, max_new_tokens=NEW, **ENDS)
    assert not np.array_equal(got, plain)
    setting = {k: v for k, v in kw.items() if not k.startswith("negative")}
    configured = _with_config(path, tmp_path, **setting)
    extra = {k: v for k, v in kw.items() if k.startswith("negative")}
    np.testing.assert_array_equal(generate(configured, ids, attention_mask=mask, max_new_tokens=NEW, **ENDS, **extra),
                                  want)
    off = {k: None for k in setting}
    np.testing.assert_array_equal(generate(configured, ids, attention_mask=mask, max_new_tokens=NEW, **ENDS, **off),
                                  plain)


@pytest.mark.parametrize("case", ["watermark_lefthash", "watermark_selfhash", "guidance"])
def test_beam_search_matches_transformers(checkpoints, case):
    """Beam search with the watermark (on each beam's log-probabilities) and with guidance (its unconditional rows
    follow the rows as transformers' do: not reordered with the beams)."""
    hf, _, model = checkpoints("gpt2")
    ids, mask = _prompts()
    kw = dict(max_new_tokens=NEW, num_beams=3, num_return_sequences=2, **ENDS, **CASES[case])
    got = generate(model, ids, attention_mask=mask, **kw)
    np.testing.assert_array_equal(got, _hf(hf, ids, mask, do_sample=False, **kw))
    assert not np.array_equal(got, generate(model, ids, attention_mask=mask, **{k: v for k, v in kw.items()
                                                                                 if k not in CASES[case]}))


@pytest.mark.parametrize("beams", [1, 3])
def test_guidance_and_watermark_among_every_processor(checkpoints, beams):
    """Guidance first and the watermark after every processor (repetition and n-gram rules, min length, bad words,
    suppressed tokens, sequence bias) and before renormalize_logits, greedy and in beam search: transformers' tokens;
    guidance for one new token, and transformers' guidance without a cache (the unconditional input run whole each
    step) gives the same tokens as with one."""
    hf, _, model = checkpoints("gpt2")
    ids, mask = _prompts()
    kw = dict(max_new_tokens=NEW, num_beams=beams, num_return_sequences=beams, repetition_penalty=1.3,
              no_repeat_ngram_size=2, min_new_tokens=4, bad_words_ids=[[5], [6, 7]], suppress_tokens=[8, 9],
              sequence_bias={(10,): 2.0}, renormalize_logits=True, guidance_scale=1.5,
              watermarking_config={"bias": 3.0, "seeding_scheme": "selfhash", "context_width": 3}, **ENDS)
    want = _hf(hf, ids, mask, do_sample=False, **kw)
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, **kw), want)
    one = dict(max_new_tokens=1, num_beams=beams, guidance_scale=3.0, **ENDS)
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, **one),
                                  _hf(hf, ids, mask, do_sample=False, **one))
    uncached = dict(max_new_tokens=NEW, guidance_scale=2.0, negative_prompt_ids=NEGATIVE,
                    negative_prompt_attention_mask=NEGATIVE_MASK, **ENDS)
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, **uncached),
                                  _hf(hf, ids, mask, do_sample=False, use_cache=False, **uncached))


def test_seq2seq_watermark_and_guidance(checkpoints):
    """An encoder-decoder's watermark (seeded by the decoder's tokens) gives transformers' tokens; guidance, which
    transformers runs through the model's forward alone, is refused naming it."""
    hf, _, model = checkpoints("t5")
    ids, mask = _prompts(seq2seq=True)
    kw = dict(max_new_tokens=NEW, **CASES["watermark_lefthash"])
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, **kw),
                                  _hf(hf, ids, mask, do_sample=False, **kw))
    with pytest.raises(ValueError, match="generate: guidance_scale needs a decoder-only model"):
        generate(model, ids, attention_mask=mask, max_new_tokens=NEW, guidance_scale=1.5)


def _logits():
    g = np.random.RandomState(3)
    logits = (g.randn(4, 150) * 2).astype(np.float32)
    logits[1, :10] = -np.inf  # tokens already dropped
    logits[2] *= 0.05  # a flat row: many tokens kept
    logits[3, :40] = (g.randn(40) * 0.3).astype(np.float32)
    return logits


@pytest.mark.parametrize("top_h", [0.05, 0.3, 0.6, 0.9])
def test_top_h_warper_matches_transformers(top_h):
    """top_h_filter equals TopHLogitsWarper on the same scores; the Sampler applies it after the temperature and
    before top-k, as transformers' warper list."""
    from transformers.generation import logits_process as lp
    logits = _logits()
    want = lp.TopHLogitsWarper(top_h)(None, torch.tensor(logits)).numpy()
    got = top_h_filter(logits.astype(np.float64), top_h)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    kept = ~np.isneginf(want)
    np.testing.assert_array_equal(got[kept], want[kept])
    assert (kept.sum(1) >= 1).all() and (kept.sum(1) < 150).all()
    chain = lp.LogitsProcessorList([lp.TemperatureLogitsWarper(0.7), lp.TopHLogitsWarper(top_h),
                                    lp.TopKLogitsWarper(5)])
    warped = Sampler(True, 0.7, top_k=5, top_h=top_h).warp(logits)
    np.testing.assert_array_equal(np.isneginf(warped), np.isneginf(chain(None, torch.tensor(logits)).numpy()))


def test_top_h_cut_inside_tied_scores():
    """Where top-h's cut falls inside a group of tied scores, the tied tokens kept are those torch.topk puts first
    (its unstable order), as TopHLogitsWarper keeps them."""
    from transformers.generation import logits_process as lp
    logits = np.full((2, 150), -3.0, np.float32) + (np.random.RandomState(0).randn(2, 150) * 0.1).astype(np.float32)
    logits[:, 7] = 4.0
    logits[0, 20:30] = 2.0
    logits[1, [3, 60, 61, 62, 140, 141, 149]] = 2.5
    for top_h in (0.4, 0.5, 0.7):
        kept = ~np.isneginf(lp.TopHLogitsWarper(top_h)(None, torch.tensor(logits)).numpy())
        assert 1 < kept[0, 20:30].sum() < 10  # the cut inside the tie
        np.testing.assert_array_equal(~np.isneginf(top_h_filter(logits.astype(np.float64), top_h)), kept)


def test_top_h_running_entropy_adds_a_long_tail():
    """The running entropy adds in float64 as torch's CPU cumsum does: a long tail of tiny terms, each below half a
    float32 step of the sum, still reaches a top_h just below 1 and is cut, as TopHLogitsWarper cuts it (float32 sums
    kept all 100). Where the cut falls within such a tail rests on torch's own rounding of the entropy."""
    from transformers.generation import logits_process as lp
    logits = np.full((1, 120), -40.0, np.float32)
    logits[0, :2] = 0.0
    logits[0, 2:100] = -20.7 + np.linspace(0, 0.01, 98, dtype=np.float32)
    for top_h in (0.999999, 0.9999995):
        want = (~np.isneginf(lp.TopHLogitsWarper(top_h)(None, torch.tensor(logits)).numpy())).sum()
        got = (~np.isneginf(top_h_filter(logits.astype(np.float64), top_h))).sum()
        assert 2 < want < 100 and 2 < got < 100


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_top_h_sampling_matches_transformers(checkpoints, tmp_path, name):
    """Sampling with generation_config.json's top_h small enough to keep one token a step (and the watermark after
    it, which cannot bring a dropped token back) is deterministic: transformers' tokens; greedy ignores top_h."""
    hf, path, _ = checkpoints(name)
    ids, mask = _prompts()
    settings = dict(do_sample=True, top_h=1e-6, watermarking_config={"bias": 50.0})
    model = _with_config(path, tmp_path, **settings)
    got = generate(model, ids, attention_mask=mask, max_new_tokens=NEW, **ENDS)
    np.testing.assert_array_equal(got, _hf(hf, ids, mask, max_new_tokens=NEW, **ENDS, **settings))
    greedy = generate(model, ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, watermarking_config=None,
                      **ENDS)
    np.testing.assert_array_equal(greedy, _hf(hf, ids, mask, max_new_tokens=NEW, do_sample=False, **ENDS))


def test_guidance_sampling_several_sequences_matches_transformers(checkpoints):
    """Guidance while sampling R sequences a prompt (each of the B * R rows its own unconditional row), with a top_h
    that keeps one token a step: transformers' tokens."""
    hf, _, model = checkpoints("llama")
    ids, mask = _prompts()
    kw = dict(max_new_tokens=NEW, do_sample=True, top_h=1e-6, num_return_sequences=2, guidance_scale=2.5, **ENDS)
    got = generate(model, ids, attention_mask=mask, **kw)
    np.testing.assert_array_equal(got, _hf(hf, ids, mask, **kw))
    assert not np.array_equal(got, generate(model, ids, attention_mask=mask, **dict(kw, guidance_scale=None)))


@pytest.mark.parametrize("n,seed", [(1, 3), (2, 5), (90, 15485863 * 17), (1000, 2 ** 40 + 3), (50257, 123),
                                    (50257, 15485863 * 50256)])
def test_randperm_is_torch_randperm(n, seed):
    """torch_randperm's prefixes (read off the swaps' targets, vectorized) are torch.randperm's, whole and in part."""
    g = torch.Generator()
    g.manual_seed(seed)
    want = torch.randperm(n, generator=g).tolist()
    assert torch_randperm(n, seed).tolist() == want
    for k in {0, 1, n // 4, n - 1}:
        assert torch_randperm(n, seed, k).tolist() == want[:k]
    # the membership the selfhash scheme and the detector ask, without the shuffle
    tokens = range(n) if n <= 1000 else np.random.RandomState(0).randint(0, n, 300).tolist()
    for k in {0, 1, n // 4, n - 1, n}:
        prefix = set(want[:k])
        assert [in_torch_randperm(n, seed, k, t) for t in tokens] == [t in prefix for t in tokens]


@pytest.mark.parametrize("scheme,width", [("lefthash", 1), ("lefthash", 3), ("selfhash", 1), ("selfhash", 4)])
def test_watermark_processor_matches_transformers(scheme, width):
    """Watermark equals WatermarkLogitsProcessor on the same sequences and scores (a sequence shorter than the
    context width left as it is)."""
    from transformers.generation.logits_process import WatermarkLogitsProcessor
    g = np.random.RandomState(width)
    for length in (width - 1, width, width + 3):
        seqs, scores = g.randint(0, 97, (3, length)), g.randn(3, 97).astype(np.float32)
        theirs = WatermarkLogitsProcessor(97, "cpu", 0.4, 1.5, 99991, scheme, width)
        want = theirs(torch.tensor(seqs), torch.tensor(scores)).numpy()
        ours = Watermark(watermark_settings({"greenlist_ratio": 0.4, "bias": 1.5, "hashing_key": 99991,
                                             "seeding_scheme": scheme, "context_width": width}), 97)
        np.testing.assert_array_equal(ours(seqs, scores), want)
        assert np.array_equal(want, scores) == (length < width)


def test_selfhash_candidates_with_tied_scores():
    """The selfhash scheme's 40 candidates where scores tie across the 40th place (a flat row, coarse scores as a
    half-precision model gives, NaN, -inf) are the tokens torch's unstable sort puts first: transformers' scores."""
    from transformers.generation.logits_process import WatermarkLogitsProcessor
    g = np.random.RandomState(0)
    for V in (97, 300):
        seqs, scores = g.randint(0, V, (5, 3)), (np.round(g.randn(5, V) * 2) / 2).astype(np.float32)
        scores[0] = 0.0
        scores[1, 60:] = -np.inf
        scores[2, [3, 50]] = np.nan
        theirs = WatermarkLogitsProcessor(V, "cpu", 0.25, 2.0, 15485863, "selfhash", 2)
        want = theirs(torch.tensor(seqs), torch.tensor(scores)).numpy()
        ours = Watermark(watermark_settings({"seeding_scheme": "selfhash", "context_width": 2}), V)
        np.testing.assert_array_equal(ours(seqs, scores), want)
    row = (np.round(np.random.RandomState(2).randn(5000) * 2) / 2).astype(np.float32)
    assert set(torch_sort_head(row, 40).tolist()) == set(torch.tensor(row).sort(descending=True).indices[:40].tolist())


@pytest.mark.parametrize("scheme,width,ignore", [("lefthash", 1, False), ("lefthash", 2, True),
                                                 ("selfhash", 1, False), ("selfhash", 3, True)])
def test_detector_matches_transformers(checkpoints, scheme, width, ignore):
    """WatermarkDetector on watermarked and plain texts (and with the leading bos token) gives transformers'
    WatermarkDetector's counts, z-scores (to 1e-5), p-values and predictions; the watermarked texts are detected."""
    from transformers.generation import WatermarkDetector as HFDetector, WatermarkingConfig
    hf, _, model = checkpoints("llama")
    config = {"bias": 4.0, "seeding_scheme": scheme, "context_width": width, "greenlist_ratio": 0.25}
    ids, mask = _prompts()
    marked = generate(model, ids, attention_mask=mask, max_new_tokens=24, eos_token_id=None,
                      watermarking_config=config, no_repeat_ngram_size=2)[:, ids.shape[1]:]
    plain = np.random.RandomState(4).randint(3, VOCAB, (2, 24))
    bos = np.concatenate([np.full((2, 1), hf.config.bos_token_id), marked], axis=1)
    theirs = HFDetector(hf.config, "cpu", WatermarkingConfig(**config), ignore_repeated_ngrams=ignore)
    ours = WatermarkDetector(model if scheme == "lefthash" else hf.config, config, ignore_repeated_ngrams=ignore)
    for text in (marked, plain, bos):
        want = theirs(torch.tensor(text), z_threshold=2.0, return_dict=True)
        got = ours(text, z_threshold=2.0, return_dict=True)
        for field in ("num_tokens_scored", "num_green_tokens", "green_fraction", "prediction"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
        np.testing.assert_allclose(got.z_score, want.z_score, atol=1e-5)
        np.testing.assert_allclose(got.p_value, want.p_value, atol=1e-7)
        np.testing.assert_array_equal(ours(text, z_threshold=2.0), theirs(torch.tensor(text), z_threshold=2.0))
    assert ours(marked, z_threshold=2.0).all()
    with pytest.raises(ValueError, match="WatermarkDetector: some rows start with the bos token"):
        ours(np.concatenate([bos[:1, :-1], marked[1:]]))


def test_onnx_applies_top_h_and_watermark_and_refuses_guidance(checkpoints, tmp_path):
    """generate_onnx: the watermark greedy and in beam search gives generate's (transformers') tokens, seeded top-h
    sampling draws generate's, both from a generation config too; guidance_scale is refused naming it."""
    from forgegrad.models.hf import export_with_past, generate_onnx
    hf, path, model = checkpoints("gpt2")
    graph = tmp_path / "decoder.onnx"
    export_with_past(model, graph, verify=False)
    ids, mask = _prompts()
    mark = CASES["watermark_selfhash"]
    for beams in (1, 3):
        kw = dict(max_new_tokens=NEW, num_beams=beams, **ENDS)
        want = _hf(hf, ids, mask, do_sample=False, **kw, **mark)
        np.testing.assert_array_equal(generate_onnx(graph, ids, mask, **kw, **mark), want)
        np.testing.assert_array_equal(generate_onnx(graph, ids, mask, generation_config=dict(mark), **kw), want)
    sampled = dict(max_new_tokens=NEW, do_sample=True, top_h=0.8, top_k=None, **ENDS, **mark)
    forgegrad.manual_seed(5)
    want = generate(model, ids, attention_mask=mask, **sampled)
    forgegrad.manual_seed(5)
    np.testing.assert_array_equal(generate_onnx(graph, ids, mask, **sampled), want)
    with pytest.raises(ValueError, match="generate_onnx: guidance_scale is not supported on exported graphs"):
        generate_onnx(graph, ids, mask, max_new_tokens=NEW, guidance_scale=1.5)
    np.testing.assert_array_equal(generate_onnx(graph, ids, mask, max_new_tokens=NEW, guidance_scale=1.0, **ENDS),
                                  generate(model, ids, attention_mask=mask, max_new_tokens=NEW, **ENDS))


@pytest.mark.parametrize("name,value", [
    ("top_h", 0.0), ("top_h", 1.5), ("top_h", "0.5"), ("watermarking_config", "lefthash"),
    ("watermarking_config", {"seeding_scheme": "middlehash"}), ("watermarking_config", {"greenlist_ratio": 1.0}),
    ("watermarking_config", {"context_width": 0}), ("watermarking_config", {"bias": "x"}),
    ("watermarking_config", {"salt": 1}), ("guidance_scale", "2"), ("guidance_scale", float("inf"))])
def test_bad_values_are_named(checkpoints, tmp_path, name, value):
    """Each bad value a ValueError or TypeError naming the setting, as an argument and from generation_config.json
    (top_h only when sampling, as transformers checks it)."""
    _, path, model = checkpoints("gpt2")
    ids = np.array([[5, 6, 7]])
    kw = {"do_sample": True} if name == "top_h" else {}
    with pytest.raises((ValueError, TypeError), match=f"generate: {name}"):
        generate(model, ids, max_new_tokens=2, **kw, **{name: value})
    if not (isinstance(value, float) and np.isinf(value)):  # JSON has no inf
        with pytest.raises((ValueError, TypeError), match=f"generate: {name}"):
            generate(_with_config(path, tmp_path, **{name: value}), ids, max_new_tokens=2, **kw)


def test_negative_prompt_checks(checkpoints):
    """negative_prompt_ids: one row per decoded row (transformers' guidance is unbatched), token ids of the
    vocabulary, its mask of its shape; the selfhash watermark needs 40 tokens to try."""
    _, _, model = checkpoints("gpt2")
    ids, mask = _prompts()
    cases = [(dict(negative_prompt_ids=NEGATIVE[:1]), "negative_prompt_ids has 1 rows but generate decodes 2"),
             (dict(negative_prompt_ids=NEGATIVE, num_beams=2), "negative_prompt_ids has 2 rows but generate decodes 4"),
             (dict(negative_prompt_ids=NEGATIVE + VOCAB), "negative_prompt_ids must be"),
             (dict(negative_prompt_ids=NEGATIVE, negative_prompt_attention_mask=NEGATIVE_MASK[:, 1:]),
              "negative_prompt_attention_mask must have negative_prompt_ids' shape")]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            generate(model, ids, attention_mask=mask, max_new_tokens=2, guidance_scale=1.5, **kw)
    small = Watermark(watermark_settings({"seeding_scheme": "selfhash"}), None)
    with pytest.raises(ValueError, match="selfhash.*at least 40"):
        small(np.zeros((1, 2), np.int64), np.zeros((1, 30), np.float32))


def test_server_applies_the_checkpoint_watermark_and_top_h(tmp_path):
    """A served checkpoint whose generation_config.json sets watermarking_config and top_h: greedy completions (the
    watermark) and a seeded sampled one (top_h too) alone and batched equal generate's tokens."""
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from test_serve_generation_settings import LENGTHS, PROMPTS, _alone_and_batched, _solo, _text, _words
    torch.manual_seed(0)
    path = tmp_path / "tiny-gpt2-watermark"
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=256, n_embd=32, n_layer=2, n_head=4, bos_token_id=298,
                                  eos_token_id=299, initializer_range=0.3)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    _words(path)
    base = from_pretrained(path)
    plain = [_solo(base, p, n, len(p)) for p, n in zip(PROMPTS, LENGTHS)]
    config = json.loads((path / "generation_config.json").read_text())
    config.update(watermarking_config={"bias": 3.0, "seeding_scheme": "selfhash"}, top_h=0.6)
    (path / "generation_config.json").write_text(json.dumps(config))
    model = from_pretrained(path)
    want = [_solo(model, p, n, len(p)) for p, n in zip(PROMPTS, LENGTHS)]
    assert want != plain
    forgegrad.manual_seed(5)
    drawn = _solo(model, PROMPTS[1], 12, len(PROMPTS[1]), do_sample=True, temperature=0.9, top_k=None, top_p=None)
    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0} for p, n in zip(PROMPTS, LENGTHS)]
    alone, batched, _ = _alone_and_batched(path, bodies + [{"prompt": PROMPTS[1], "max_tokens": 12,
                                                            "temperature": 0.9, "seed": 5}])
    expected = [(_text(w), len(w), "stop" if len(w) < n else "length") for w, n in zip(want, LENGTHS)]
    assert alone[:4] == batched[:4] == expected
    assert alone[4][:2] == batched[4][:2] == (_text(drawn), len(drawn))


def test_server_names_the_guidance_it_does_not_apply(checkpoints, tmp_path):
    """The served loops run no second model: a checkpoint's guidance_scale is named in a warning at load, not
    applied (batched or alone)."""
    from forgegrad.serve.row_settings import ServedGeneration
    _, path, _ = checkpoints("gpt2")
    model = _with_config(path, tmp_path, guidance_scale=1.5)
    with pytest.warns(UserWarning, match="guidance_scale=1.5, which the server does not apply"):
        served = ServedGeneration(model, None, [VOCAB - 2], False)
    assert served.extra["guidance_scale"] is None
