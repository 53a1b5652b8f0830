"""Beam search over HTTP (vLLM's ``use_beam_search``, serve/beam_completions.py) beyond its hypotheses under a grammar
(test_structured_serving.py): a client that goes away stops the search; ``length_penalty`` whose length ** penalty
leaves float32's range is a 400 (was a 500, or NaN scores that rank first); ``n`` more than the hypotheses the
request's constraints allow is a 400 naming ``n``, streamed or not; each choice's text, finish_reason, usage and
logprobs (the chosen tokens' log-probabilities, the same streamed) against ``generate``'s hypotheses; the batched
engine's KV blocks and the queue untouched afterwards; no BeamRun kept once a request is done. A dead beam's all
-inf row stays all -inf (never NaN) through every sampling warper. Real uvicorn on loopback; a tiny random GPT-2
transformers wrote."""
from __future__ import annotations

import gc
import json
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, running_app  # noqa: E402

END = 1  # <|im_end|> of hf_conformance.chat_tokenizer
CORPUS = ('{"name": "red", "color": "green", "age": 12, "member": true, "note": false} hello world 0123456789 blue '
          'yes no [1, 2]')
PROMPT = [98, 99]  # "hello world" as token ids


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(client, url, checkpoint path) of a server batching up to 8 rows on its paged KV cache, beams beside it."""
    from hf_conformance import chat_tokenizer

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path = tmp_path_factory.mktemp("beams") / "gpt2"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=300, n_positions=512, initializer_range=0.3,
        eos_token_id=END)).save_pretrained(path)
    chat_tokenizer("{% for m in messages %}{{ m['content'] }} {% endfor %}", CORPUS, every_byte=False).save_pretrained(
        path)
    app = create_completions_app(GenerationServeConfig(str(path), max_batch=8))
    with running_app(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client, url, path


def _settled(client):
    """/metrics once no request is queued or running (the worker is done with every request sent)."""
    deadline = time.monotonic() + 120
    while True:
        text = client.get("/metrics").text
        if metric(text, "forgegrad_queue_depth") == 0 or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _hypotheses(path, beams, n, max_tokens, **kw):
    """generate's n best hypotheses of PROMPT (token lists, each up to and with its end token)."""
    from forgegrad.models import from_pretrained, generate
    model = from_pretrained(path)
    out = generate(model, [PROMPT], max_new_tokens=max_tokens, num_beams=beams, num_return_sequences=n,
                   do_sample=False, eos_token_id=END, **kw)[:, len(PROMPT):]
    rows = [[int(t) for t in row] for row in out]
    return [r[:r.index(END) + 1] if END in r else r for r in rows]


def test_a_client_that_goes_away_stops_its_beam_search(served):
    """A streamed beam request whose client closes the connection before the search is done (nothing is streamed
    until then) stops at the search's next step: no hypothesis is completed and counted as generated (the whole search
    would be 16 beams of 500 tokens). The server answers the next beam request as before."""
    client, _, _ = served
    before = metric(_settled(client), "forgegrad_generated_tokens_total")
    body = {"prompt": PROMPT, "max_tokens": 500, "use_beam_search": True, "n": 4, "best_of": 16, "ignore_eos": True,
            "stream": True}  # 16 beams: seconds of search, against the milliseconds the disconnect takes to notice
    with client.stream("POST", "/v1/completions", json=body) as s:
        assert s.status_code == 200  # the stream opened; the client goes away without reading it
    after = metric(_settled(client), "forgegrad_generated_tokens_total")
    assert after == before, f"the search ran on after its client left: {after - before:g} tokens generated"
    r = client.post("/v1/completions", json=dict(body, stream=False, max_tokens=6, n=2, best_of=2))
    assert r.status_code == 200 and len(r.json()["choices"]) == 2, r.text


@pytest.mark.parametrize("penalty, max_tokens", [(150.0, 300), (-150.0, 300), (1e300, 5), (-1e300, 5), (40.0, 16)])
def test_a_length_penalty_out_of_float32s_range_is_a_400(served, penalty, max_tokens):
    """length ** length_penalty past float32's range gave a 500 (Python's OverflowError) or scores of -inf / inf =
    NaN, which rank first; the request is refused up front, naming the field, streamed or not."""
    client, _, _ = served
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "use_beam_search": True, "n": 2, "length_penalty": penalty}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "length_penalty", r.text
    assert "float32" in r.json()["error"]["message"]
    r = client.post("/v1/completions", json=dict(body, stream=True))
    assert r.status_code == 400 and r.json()["error"]["param"] == "length_penalty", r.text


def test_length_penalties_within_range_rank_as_generate(served):
    """length_penalty 30 (about the largest the bound allows for 12 tokens) and -2 return generate's
    hypotheses, as 2 (longer ones favoured) does."""
    client, _, path = served
    from forgegrad.models.hf.tokenizer import load_tokenizer
    tok = load_tokenizer(str(path), 300, END)
    for penalty in (2.0, 30.0, -2.0):
        body = {"prompt": PROMPT, "max_tokens": 12, "use_beam_search": True, "n": 3, "length_penalty": penalty}
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        want = [tok.decode([t for t in h if t != END]) for h in _hypotheses(path, 3, 3, 12, length_penalty=penalty)]
        assert [c["text"] for c in r.json()["choices"]] == want, penalty


def test_n_more_than_the_hypotheses_found_is_a_400(served):
    """allowed_token_ids of two tokens and max_tokens 1 allow two hypotheses: n 2 returns them (the likelier first,
    as generate ranks them), n 3 is a 400 naming n, and streamed an error event naming n."""
    client, _, path = served
    body = {"prompt": PROMPT, "max_tokens": 1, "use_beam_search": True, "allowed_token_ids": [50, 60]}
    r = client.post("/v1/completions", json=dict(body, n=2, logprobs=1))
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    want = _hypotheses(path, 2, 2, 1, logits_processor=_only([50, 60]))
    assert sorted(want) == [[50], [60]]
    assert [c["logprobs"]["tokens"] for c in choices] == [[_text(path, h)] for h in want]
    assert all(c["finish_reason"] == "length" for c in choices)
    lp = [c["logprobs"]["token_logprobs"][0] for c in choices]
    assert lp[0] >= lp[1]  # best first: one token each, so by its log-probability
    r = client.post("/v1/completions", json=dict(body, n=3))
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "n", r.text
    assert "found 2 completion(s) of prompt 0" in error["message"] and "fewer than the 3" in error["message"]
    with client.stream("POST", "/v1/completions", json=dict(body, n=3, stream=True)) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    assert events[-1]["error"]["param"] == "n" and "fewer than the 3" in events[-1]["error"]["message"]


def _only(tokens):
    def process(sequences, scores):
        kept = np.full_like(scores, -np.inf)
        kept[:, tokens] = scores[:, tokens]
        return kept
    return process


def _text(path, tokens):
    from forgegrad.models.hf.tokenizer import load_tokenizer
    return load_tokenizer(str(path), 300, END).decode(tokens)


def test_choices_usage_finish_reasons_and_logprobs(served):
    """Each choice is a hypothesis of generate's beam search: its text up to a stop string (finish_reason "stop") or
    to max_tokens ("length"), usage counting the tokens each choice reported, logprobs the chosen tokens' own
    log-probabilities under the model (each one its top_logprobs' entry for it) and the same streamed, as the
    streamed usage. Afterwards the batched engine's KV blocks are all free, no request is queued, and no BeamRun
    is left alive in the process (the server keeps none of its searches)."""
    from forgegrad.models.hf.beam_search import BeamRun
    client, _, path = served
    want = _hypotheses(path, 3, 3, 20)
    texts = [_text(path, [t for t in h if t != END]) for h in want]
    body = {"prompt": PROMPT, "max_tokens": 20, "use_beam_search": True, "n": 3, "logprobs": 2}
    got = client.post("/v1/completions", json=body).json()
    assert [c["text"] for c in got["choices"]] == texts
    assert [c["finish_reason"] for c in got["choices"]] == ["stop" if END in h else "length" for h in want]
    assert got["usage"]["completion_tokens"] == sum(len(c["logprobs"]["tokens"]) for c in got["choices"])
    assert got["usage"]["prompt_tokens"] == len(PROMPT)  # once per prompt, as OpenAI counts n choices
    stop = texts[0][3:5]  # a stop string inside the best hypothesis
    cut = client.post("/v1/completions", json=dict(body, stop=[stop])).json()
    assert cut["choices"][0]["text"] == texts[0][:texts[0].index(stop)] and cut["choices"][0]["finish_reason"] == "stop"
    for c in got["choices"]:
        lp = c["logprobs"]
        assert "".join(lp["tokens"]) == c["text"]
        assert [top[t] for t, top in zip(lp["tokens"], lp["top_logprobs"])] == lp["token_logprobs"]
    ended = dict(body, stop_token_ids=[want[0][2]])  # hypotheses that end on an end token: generate's padding after
    for whole, asked in ((got, body), (cut, dict(body, stop=[stop])), (None, ended)):
        whole = whole or client.post("/v1/completions", json=asked).json()
        with client.stream("POST", "/v1/completions", json=dict(asked, stream=True,
                                                                stream_options={"include_usage": True})) as s:
            events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        assert events[-1]["usage"] == whole["usage"]
        assert asked is not ended or whole["choices"][0]["finish_reason"] == "stop"
        for i, c in enumerate(whole["choices"]):
            mine = [ch for e in events for ch in e.get("choices", []) if ch["index"] == i]
            assert "".join(ch["text"] for ch in mine) == c["text"] and mine[-1]["finish_reason"] == c["finish_reason"]
            # the same scoring forward, over the tokens the choice reports (not the padding after its end token, nor
            # the tokens of a stop string that cut it): the same numbers, streamed or not
            for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                assert [v for ch in mine if ch.get("logprobs") for v in ch["logprobs"][key]] == c["logprobs"][key]
    text = _settled(client)
    assert metric(text, "forgegrad_kv_cache_in_use") == 0 and metric(text, "forgegrad_kv_cache_reserved") == 0
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is BeamRun]


@pytest.mark.parametrize("warper", [{"top_p": 0.5}, {"min_p": 0.1}, {"typical_p": 0.5}, {"epsilon_cutoff": 1e-3},
                                    {"eta_cutoff": 1e-3}, {"top_h": 0.5}, {"top_k": 3}])
def test_a_dead_beams_row_stays_minus_inf_through_the_warpers(served, warper):
    """Beam sampling warps each beam's log-probabilities; a beam a grammar dropped is all -inf, and every warper
    (after the temperature) leaves it so: no NaN, which would rank first among the continuations."""
    from forgegrad.models import from_pretrained
    from forgegrad.models.hf.generation import _sampler
    _, _, path = served
    model = from_pretrained(path)
    scores = np.random.default_rng(0).normal(size=(2, 300)).astype(np.float32)
    scores[1] = -np.inf
    extra = {k: v for k, v in warper.items() if k not in ("top_k", "top_p", "min_p")}
    sampler = _sampler(model, True, 0.7, warper.get("top_k"), warper.get("top_p"), warper.get("min_p"), extra)
    with np.errstate(invalid="ignore"):
        out = sampler.warp(scores, min_keep=2)
    assert not np.isnan(out).any() and np.isneginf(out[1]).all() and np.isfinite(out[0]).sum() >= 2


def test_the_checkpoints_max_time_ends_the_search(served, tmp_path):
    """generation_config.json's max_time bounds a beam search as it bounds generate's (transformers' MaxTimeCriteria
    on every beam): with 1 microsecond every hypothesis ends after the first step, finish_reason "length", as a
    completion decoded one token at a time ends after its first token. (The search ignored it, and the replay of its
    hypotheses for their text cut them by the replay's own clock: the right length here only by chance.)"""
    import shutil
    _, _, path = served
    limited = tmp_path / "limited"
    shutil.copytree(path, limited)
    config = json.loads((limited / "generation_config.json").read_text())
    (limited / "generation_config.json").write_text(json.dumps(dict(config, max_time=1e-6)))
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    app = create_completions_app(GenerationServeConfig(str(limited), max_batch=1))
    with running_app(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        body = {"prompt": PROMPT, "max_tokens": 20, "logprobs": 0}
        for extra in ({"use_beam_search": True, "n": 3}, {"temperature": 0}):
            r = client.post("/v1/completions", json=dict(body, **extra))
            assert r.status_code == 200, r.text
            choices = r.json()["choices"]
            assert [len(c["logprobs"]["tokens"]) for c in choices] == [1] * len(choices), extra
            assert all(c["finish_reason"] == "length" for c in choices), extra


def test_one_beam_is_greedy_and_chat_beams_are_generates(served):
    """n 1 without best_of is a beam one wide: greedy decoding's text. Chat's n beams are generate's hypotheses of the
    prompt the chat template renders, each message's content cut at the request's stop string."""
    from forgegrad.models import from_pretrained, generate
    from forgegrad.models.hf.tokenizer import load_tokenizer
    client, _, path = served
    greedy = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "temperature": 0}).json()
    one = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "use_beam_search": True}).json()
    assert one["choices"][0]["text"] == greedy["choices"][0]["text"] and one["usage"] == greedy["usage"]
    tok = load_tokenizer(str(path), 300, END)
    ids = tok.encode("hello ")  # the template renders each message's content and a space
    out = generate(from_pretrained(path), [ids], max_new_tokens=16, num_beams=2, num_return_sequences=2,
                   do_sample=False, eos_token_id=END)[:, len(ids):]
    texts = [tok.decode(row[:row.index(END)] if END in row else row) for row in out.tolist()]
    stop = texts[1][2:4]
    want = [t[:t.index(stop)] if stop in t else t for t in texts]
    chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 16, "use_beam_search": True, "n": 2,
            "stop": [stop]}
    r = client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 200, r.text
    assert [c["message"]["content"] for c in r.json()["choices"]] == want
    assert r.json()["choices"][1]["finish_reason"] == "stop"


def _bart(path):
    """bart-large-cnn's kind of settings, scaled down (forced first and last tokens, no repeated trigrams, a minimum
    length), with a word-level tokenizer (token i is the word "t{i}")."""
    import tokenizers
    torch.manual_seed(0)
    hf = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=512, dropout=0.0,
        init_std=0.3, eos_token_id=299, decoder_start_token_id=299, pad_token_id=1, bos_token_id=0,
        forced_eos_token_id=299))
    hf.generation_config.forced_bos_token_id = 5
    hf.generation_config.no_repeat_ngram_size = 3
    hf.generation_config.min_length = 4
    hf.save_pretrained(path)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"t{i}": i for i in range(300)}, unk_token="t2"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))


def test_encoder_decoder_beams_and_their_logprobs(tmp_path):
    """BART (the checkpoint's forced first and last tokens): the n choices are generate's hypotheses, each ended by the
    forced end token ("stop"); their logprobs streamed are the non-streamed ones, with or without a stop string."""
    from forgegrad.models import from_pretrained, generate
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    _bart(tmp_path)
    prompt = [72, 105, 7, 9]
    out = generate(from_pretrained(tmp_path), [prompt], max_new_tokens=12, num_beams=3, num_return_sequences=3,
                   do_sample=False, eos_token_id=[299])[:, 1:].tolist()
    want = [" ".join(f"t{t}" for t in (row[:row.index(299)] if 299 in row else row)) for row in out]
    with running_app(create_completions_app(GenerationServeConfig(str(tmp_path), max_batch=4))) as url, \
            httpx.Client(base_url=url, timeout=120) as client:
        body = {"prompt": prompt, "max_tokens": 12, "use_beam_search": True, "n": 3, "logprobs": 2}
        whole = client.post("/v1/completions", json=body).json()["choices"]
        assert [c["text"].strip() for c in whole] == want and all(c["finish_reason"] == "stop" for c in whole)
        for asked in (body, dict(body, stop=[" ".join(want[0].split()[2:4])])):
            whole = client.post("/v1/completions", json=asked).json()["choices"]
            with client.stream("POST", "/v1/completions", json=dict(asked, stream=True)) as s:
                events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
            for i, c in enumerate(whole):
                mine = [ch for e in events for ch in e.get("choices", []) if ch["index"] == i and ch.get("logprobs")]
                for key in ("tokens", "token_logprobs", "top_logprobs"):
                    assert [v for ch in mine for v in ch["logprobs"][key]] == c["logprobs"][key], (asked, key)


def test_failed_searches_keep_nothing_alive(served, monkeypatch):
    """A search whose beams all die under the request's grammar (a 400, streamed an error event) and one whose
    survivors answer: afterwards no BeamRun and no GrammarError is alive in the server's process (a dropped beam's
    error, kept by its BeamRun, goes with the request). (The server's log is off here: pytest keeps the records of
    the streamed failure's log line, and with them its traceback's frames.)"""
    import logging
    pytest.importorskip("llguidance")
    from forgegrad.models.hf.beam_search import BeamRun
    from forgegrad.models.hf.constrained import GrammarError
    monkeypatch.setattr(logging.getLogger("forgegrad.serve"), "disabled", True)
    client, _, _ = served
    body = {"prompt": PROMPT, "max_tokens": 40, "use_beam_search": True, "guided_choice": ["red~", "blue"]}
    for n, status in ((2, 400), (3, 200)):
        r = client.post("/v1/completions", json=dict(body, n=n))
        assert r.status_code == status, r.text
        with client.stream("POST", "/v1/completions", json=dict(body, n=n, stream=True)) as s:
            s.read()
    _settled(client)
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) in (BeamRun, GrammarError)]
