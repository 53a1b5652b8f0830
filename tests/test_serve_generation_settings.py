"""The completions server applies a checkpoint's whole generation_config.json as ``generate`` does, one at a time
and in the batched engines alike (decoders and encoder-decoders): a request's greedy tokens batched equal its tokens
alone and ``generate``'s with the checkpoint's settings, token for token; the checkpoint's stop_strings end a
completion (they used to make every request fail); vLLM's min_tokens, bad_words, stop_token_ids, allowed_token_ids,
ignore_eos and include_stop_str_in_output, and their 400s (real uvicorn, httpx, tiny random checkpoints that
transformers wrote)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf.tokenizer import ByteTokenizer

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, post_all, running_app  # noqa: E402

EOS = 299
# token ids (a word-level tokenizer.json: token i is the word "t{i}", so a text is its tokens)
PROMPTS = [[72, 105], [int(t) for t in np.random.default_rng(0).integers(2, 290, 30)], [97, 98, 99],
           list(range(30, 42))]
LENGTHS = [24, 9, 20, 16]


def _words(path) -> None:
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"t{i}": i for i in range(300)}, unk_token="t2"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))


def _text(tokens) -> str:
    return " ".join(f"t{t}" for t in tokens)


def _configure(src, dst, **settings):
    """A copy of checkpoint ``src`` whose generation_config.json also sets ``settings``."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "generation_config.json").read_text())
    (dst / "generation_config.json").write_text(json.dumps(dict(config, **settings)))
    return dst


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen-settings") / "tiny-gpt2"
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=256, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=298, eos_token_id=EOS, initializer_range=0.3)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gpt2_words(gpt2, tmp_path_factory):
    path = tmp_path_factory.mktemp("gen-settings-words") / "tiny-gpt2-words"
    shutil.copytree(gpt2, path)
    _words(path)
    return path


def _solo(model, prompt, n, start, ends=(EOS,), **kw):
    """generate's tokens for one prompt alone (before its first end token: one of ``ends``)."""
    out = [int(t) for t in generate(model, [prompt], max_new_tokens=n, **kw)[0, start:]]
    cut = [i for i, t in enumerate(out) if t in ends]
    return out[:cut[0]] if cut else out


def _app(path, **kw):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(str(path), **kw))


def _answers(url, bodies, together: bool):
    """(text, completion_tokens, finish_reason) of each body: sent all at once, or one after another."""
    if together:
        responses = post_all(url, bodies)
    else:
        with httpx.Client(base_url=url, timeout=120) as c:
            responses = [c.post("/v1/completions", json=b) for b in bodies]
    out = []
    for r in responses:
        assert r.status_code == 200, r.text
        choice, usage = r.json()["choices"][0], r.json()["usage"]
        out.append((choice["text"], usage["completion_tokens"], choice["finish_reason"]))
    return out


def _alone_and_batched(path, bodies):
    """The answers of a one-at-a-time server and of a batched one (the bodies sent together), and whether the
    batched server ran a decode step of more than one row."""
    with running_app(_app(path, max_batch=1)) as url:
        alone = _answers(url, bodies, together=False)
    with running_app(_app(path)) as url:
        batched = _answers(url, bodies, together=True)
        text = httpx.get(url + "/metrics").text
    steps = metric(text, "forgegrad_batch_size_count", model=path.name)
    single = metric(text, "forgegrad_batch_size_bucket", model=path.name, le="1.0")
    return alone, batched, steps > single


def test_checkpoint_stop_strings_end_a_completion_alone_and_batched(gpt2, tmp_path):
    """generation_config.json's stop_strings: every request used to fail (no tokenizer reached generate); now the
    completion ends after the token that completes the string (kept in the text, as transformers keeps it), with
    finish_reason "stop", alone and batched, as generate(..., tokenizer=) ends it."""
    prompt = "Hello there, how are you today?"
    plain = ByteTokenizer().decode(_solo(from_pretrained(gpt2), list(prompt.encode()), 30, len(prompt)))
    clean = [c for c in plain[2:] if c.isascii() and c.isprintable() and c != " "]  # (a random model's bytes)
    assert clean, f"no printable character in {plain!r}"
    stop = clean[0]
    path = _configure(gpt2, tmp_path / "tiny-gpt2-stops", stop_strings=[stop])
    want = _solo(from_pretrained(path), list(prompt.encode()), 30, len(prompt), tokenizer=ByteTokenizer())
    text = ByteTokenizer().decode(want)
    assert stop in text and len(text) < len(plain)
    others = [{"prompt": p, "max_tokens": 40, "temperature": 0} for p in ("abc", "Hi", "The quick brown fox")]
    alone, batched, shared = _alone_and_batched(path, [{"prompt": prompt, "max_tokens": 30, "temperature": 0}] + others)
    assert alone[0] == batched[0] == (text, len(want), "stop")
    assert alone[1:] == batched[1:] and shared


def test_checkpoint_processors_alone_batched_and_generate_agree(gpt2_words, tmp_path):
    """Every generation_config.json setting that changes greedy tokens, on a decoder: the same tokens alone,
    batched (four requests in shared steps, ending at different places) and from generate."""
    base = from_pretrained(gpt2_words)
    plain = [_solo(base, p, n, len(p)) for p, n in zip(PROMPTS, LENGTHS)]
    settings = dict(suppress_tokens=[plain[0][1]], begin_suppress_tokens=[plain[2][0]],
                    bad_words_ids=[[plain[1][2], plain[1][3]]], sequence_bias=[[[EOS], 2.0], [[plain[3][0]], -4.0]],
                    min_new_tokens=4, no_repeat_ngram_size=2, repetition_penalty=1.3, encoder_repetition_penalty=1.2,
                    encoder_no_repeat_ngram_size=3, exponential_decay_length_penalty=[5, 1.6],
                    remove_invalid_values=True, renormalize_logits=True, typical_p=0.7, epsilon_cutoff=0.01,
                    max_time=600.0)
    path = _configure(gpt2_words, tmp_path / "tiny-gpt2-settings", **settings)
    model = from_pretrained(path)
    want = [_solo(model, p, n, len(p)) for p, n in zip(PROMPTS, LENGTHS)]
    assert all(w != p for w, p in zip(want, plain)), "the settings changed nothing"
    assert len({len(w) for w in want}) > 1  # the rows end at different steps
    # sampled, seeded: the checkpoint's typical_p and epsilon_cutoff apply when the request samples
    sampled = {"prompt": PROMPTS[1], "max_tokens": 12, "temperature": 0.9, "seed": 5}
    fg.manual_seed(5)
    drawn = _solo(model, PROMPTS[1], 12, len(PROMPTS[1]), do_sample=True, temperature=0.9, top_k=None, top_p=None)

    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0} for p, n in zip(PROMPTS, LENGTHS)]
    alone, batched, shared = _alone_and_batched(path, bodies + [sampled])
    expected = [(_text(w), len(w), "stop" if len(w) < n else "length") for w, n in zip(want, LENGTHS)]
    assert alone[:4] == batched[:4] == expected
    assert alone[4][:2] == batched[4][:2] == (_text(drawn), len(drawn))
    assert shared, "no decode step ran more than one completion"


def _t5(path) -> None:
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                decoder_start_token_id=0, eos_token_id=EOS, pad_token_id=0, initializer_factor=2.0)
    transformers.T5ForConditionalGeneration(cfg).save_pretrained(path)
    _words(path)


def test_encoder_decoder_applies_the_checkpoint_settings_batched_as_alone(tmp_path):
    """T5 with the encoder_* settings (on the source), suppression, bad words, sequence bias, min_new_tokens."""
    base_path = tmp_path / "tiny-t5"
    _t5(base_path)
    base = from_pretrained(base_path)
    plain = [_solo(base, p, n, 1, eos_token_id=[EOS]) for p, n in zip(PROMPTS, LENGTHS)]
    settings = dict(encoder_no_repeat_ngram_size=2, encoder_repetition_penalty=0.7, suppress_tokens=[plain[0][1]],
                    begin_suppress_tokens=[plain[2][0]], bad_words_ids=[[plain[3][1], plain[3][2]]],
                    sequence_bias=[[[EOS], 3.0]], min_new_tokens=3)
    path = _configure(base_path, tmp_path / "tiny-t5-settings", **settings)
    model = from_pretrained(path)
    want = [_solo(model, p, n, 1, eos_token_id=[EOS]) for p, n in zip(PROMPTS, LENGTHS)]
    assert all(w != p for w, p in zip(want, plain)), "the settings changed nothing"

    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0} for p, n in zip(PROMPTS, LENGTHS)]
    alone, batched, shared = _alone_and_batched(path, bodies)
    expected = [(_text(w), len(w), "stop" if len(w) < n else "length") for w, n in zip(want, LENGTHS)]
    assert alone == batched == expected and shared


def test_a_broken_checkpoint_setting_fails_the_load_naming_it(gpt2_words, tmp_path):
    from forgegrad.serve.completions import TextGenerator
    path = _configure(gpt2_words, tmp_path / "tiny-gpt2-broken", min_new_tokens=-2)
    with pytest.raises(ValueError, match="min_new_tokens"):
        TextGenerator(str(path))


def test_vllm_sampling_fields_alone_batched_and_generate(gpt2_words, tmp_path):
    """min_tokens, stop_token_ids, allowed_token_ids, bad_words, ignore_eos, include_stop_str_in_output: alone and
    batched alike, each as generate gives it with the matching arguments."""
    base = from_pretrained(gpt2_words)
    prompt, n = PROMPTS[1], 24
    plain = _solo(base, prompt, n, len(prompt))
    # a checkpoint whose second end token ends the plain completion after 5 tokens or more
    end = next(t for t in plain[5:] if t not in plain[:5])
    path = _configure(gpt2_words, tmp_path / "tiny-gpt2-vllm", eos_token_id=[EOS, end])
    model = from_pretrained(path)
    ends = plain[:plain.index(end)]
    assert len(ends) >= 4
    stop_id = ends[3]
    allowed = sorted(set(plain[:3]) | {5, 6, 7, EOS})

    def mask(sequences, scores):
        out = np.full_like(scores, -np.inf)
        out[:, allowed] = scores[:, allowed]
        return out

    cases = [  # (request fields, generate's tokens)
        ({}, ends),
        ({"ignore_eos": True}, _solo(model, prompt, n, len(prompt), eos_token_id=[])),
        ({"stop_token_ids": [stop_id]}, ends[:ends.index(stop_id)]),
        ({"stop_token_ids": [stop_id], "min_tokens": 5},
         _solo(model, prompt, n, len(prompt), (EOS, end, stop_id), eos_token_id=[EOS, end, stop_id],
               min_new_tokens=5)),
        ({"allowed_token_ids": allowed, "ignore_eos": True},
         _solo(model, prompt, n, len(prompt), eos_token_id=[], logits_processor=mask)),
    ]
    word, stop = ends[1:3], _text(ends[2:4])
    include = _text(ends)[:_text(ends).find(stop) + len(stop)]  # the stop string kept in the text
    bodies = [dict({"prompt": prompt, "max_tokens": n, "temperature": 0}, **f) for f, _ in cases]
    bodies += [{"prompt": prompt, "max_tokens": n, "temperature": 0, "bad_words": [_text(word)]},
               {"prompt": prompt, "max_tokens": n, "temperature": 0, "stop": stop, "include_stop_str_in_output": True}]
    alone, batched, shared = _alone_and_batched(path, bodies)
    assert alone == batched and shared
    for (fields, tokens), got in zip(cases, alone):
        assert got[:2] == (_text(tokens), len(tokens)), fields
    assert len(cases[3][1]) >= 5 and cases[1][1] != ends and len(cases[1][1]) == n
    assert set(cases[4][1]) <= set(allowed) and cases[4][1] != plain[:n]
    got = [int(t[1:]) for t in alone[len(cases)][0].split()]  # the bad word's two tokens never in a row
    assert list(word) not in [got[i:i + 2] for i in range(len(got) - 1)] and got != ends
    assert alone[len(cases) + 1][0] == include and alone[len(cases) + 1][2] == "stop"


@pytest.mark.parametrize("fields,param", [
    ({"min_tokens": 30}, "min_tokens"),  # more than max_tokens
    ({"min_tokens": -1}, "min_tokens"),
    ({"stop_token_ids": [300]}, "stop_token_ids"),  # outside the vocabulary
    ({"stop_token_ids": "7"}, "stop_token_ids"),
    ({"allowed_token_ids": []}, "allowed_token_ids"),
    ({"allowed_token_ids": [5, 1000]}, "allowed_token_ids"),
    ({"bad_words": [""]}, "bad_words"),
    ({"bad_words": [7]}, "bad_words"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
    ({"include_stop_str_in_output": 1}, "include_stop_str_in_output"),
])
def test_vllm_fields_are_checked_at_the_boundary(fields, param, vllm_server):
    r = httpx.post(vllm_server + "/v1/completions", json=dict({"prompt": [5, 6], "max_tokens": 20}, **fields),
                   timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


@pytest.fixture(scope="module")
def vllm_server(gpt2_words):
    with running_app(_app(gpt2_words)) as url:
        yield url


def test_chat_takes_the_vllm_fields():
    from forgegrad.serve.chat_request import parse_chat
    req = parse_chat(json.dumps({"messages": [{"role": "user", "content": "hi"}], "min_tokens": 2, "bad_words": ["x"],
                                 "stop_token_ids": [3], "allowed_token_ids": [3, 4], "ignore_eos": True,
                                 "include_stop_str_in_output": True}).encode(), "m")
    assert (req.min_tokens, req.bad_words, req.stop_token_ids, req.allowed_token_ids, req.ignore_eos,
            req.include_stop_str_in_output) == (2, ["x"], [3], [3, 4], True, True)


def test_min_tokens_defers_the_stop_strings_as_vllm_does(gpt2_words):
    """vLLM's min_tokens holds the stop strings too: none ends the completion within its first min_tokens tokens
    (a stop string that straddles them still counts, as vLLM's search overlaps the text before), alone and batched
    alike. A stop string in those tokens had ended it, min_tokens notwithstanding."""
    prompt, n = PROMPTS[1], 24
    ends = _solo(from_pretrained(gpt2_words), prompt, n, len(prompt))
    assert len(ends) >= 5
    straddle = _text(ends[1:3])  # spans the second and third tokens
    bodies = [{"prompt": prompt, "max_tokens": n, "temperature": 0, "stop": " ", "min_tokens": 3},
              {"prompt": prompt, "max_tokens": n, "temperature": 0, "stop": " "},
              {"prompt": prompt, "max_tokens": n, "temperature": 0, "stop": straddle, "min_tokens": 2},
              {"prompt": prompt, "max_tokens": n, "temperature": 0, "stop": " ", "min_tokens": 3,
               "include_stop_str_in_output": True}]
    alone, batched, _ = _alone_and_batched(gpt2_words, bodies)
    assert alone == batched
    assert [(text, reason) for text, _, reason in alone] == [
        (_text(ends[:3]), "stop"), (_text(ends[:1]), "stop"), (_text(ends[:1]) + " ", "stop"),
        (_text(ends[:3]) + " ", "stop")]
