"""BART's family and T5 on the paged KV cache in the completions server (serve/paged_seq2seq.py): the decoder's keys
and the encoder's keys/values in blocks of one pool. With a pool too small for every request at once, rows wait for
blocks and each still gets the tokens ``generate`` gives it alone, and what the contiguous engine gives it (greedy,
seeded sampling with n > 1, logprobs to float32 rounding; streamed and not, the same logprobs; BART's forced first and
last tokens; Marian; T5's relative-position bias through the paged kernel, rows longer than its last bucket's
distance); no block is held once they are done; a request that can never fit is a 400 (real uvicorn, httpx,
checkpoints transformers wrote)."""
from __future__ import annotations


import numpy as np
import pytest

from forgegrad.models import from_pretrained

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, post_all, running_app, stream_all  # noqa: E402
from test_serve_seq2seq_batching import EOS, PROMPTS, _answer, _solo, _write  # noqa: E402

LENGTHS = [40, 7, 25, 33]
BLOCKS = 10  # 16-token blocks: the four greedy requests' rows need 15 at once (source and max_tokens), so some wait


def _write_marian(path) -> None:
    torch.manual_seed(0)
    cfg = transformers.MarianConfig(
        vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=512, dropout=0.0,
        init_std=0.3, scale_embedding=True, activation_function="swish", pad_token_id=1, decoder_start_token_id=1,
        eos_token_id=EOS, forced_eos_token_id=EOS)
    hf = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():
        hf.final_logits_bias.normal_()
    hf.save_pretrained(path)
    tokenizers = pytest.importorskip("tokenizers")  # test_serve_seq2seq_batching's word-level tokenizer: "t{i}" is i
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"t{i}": i for i in range(300)}, unk_token="t2"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))


def _write_t5(path) -> None:
    """T5 whose buckets saturate early (8 buckets, max_distance 24): the 40-token rows pass the last bucket's
    distance, where the paged kernel reads its table's last column."""
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                relative_attention_num_buckets=8, relative_attention_max_distance=24,
                                decoder_start_token_id=0, eos_token_id=EOS, pad_token_id=0, initializer_factor=2.0)
    hf = transformers.T5ForConditionalGeneration(cfg)
    with torch.no_grad():  # a bias large enough to move tokens: each distance's weight matters
        hf.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.normal_(0.0, 1.0)
    hf.save_pretrained(path)
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"t{i}": i for i in range(300)}, unk_token="t2"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))


@pytest.fixture(scope="module", params=["bart", "marian", "t5"])
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("seq2seq-paged") / f"tiny-{request.param}"
    {"bart": lambda p: _write("bart", p), "marian": _write_marian, "t5": _write_t5}[request.param](path)
    return path, from_pretrained(path)


def _app(path, paged=True, monkeypatch=None, **kw):
    from forgegrad.serve import completions
    from forgegrad.serve.kv_pool import KVPool
    if not paged:  # the contiguous engine (seq2seq_batch.py)
        monkeypatch.setattr(completions, "paged_seq2seq_applies", lambda model: False)
    else:
        block = KVPool.for_model(from_pretrained(path), blocks=1).block_bytes
        kw.setdefault("kv_cache_mb", BLOCKS * block / 2 ** 20)
    return completions.create_completions_app(completions.GenerationServeConfig(str(path), **kw))


def _pool(url, name):
    text = httpx.get(url + "/metrics").text
    pool = {k: metric(text, f"forgegrad_kv_cache_{k}", model=name) for k in ("blocks", "in_use", "reserved", "peak")}
    return pool | {
        "waits": metric(text, "forgegrad_kv_cache_waits_total", model=name),
        "steps": metric(text, "forgegrad_batch_size_count", model=name),
        "single": metric(text, "forgegrad_batch_size_bucket", model=name, le="1.0")}


BODIES = [{"prompt": p, "max_tokens": n, "temperature": 0} for p, n in zip(PROMPTS, LENGTHS)] + [
    {"prompt": PROMPTS[3], "max_tokens": 12, "temperature": 1.0, "seed": 7, "n": 2, "logprobs": 3},
    {"prompt": PROMPTS[1], "max_tokens": 9, "temperature": 0.8, "top_p": 0.9, "seed": 11, "logprobs": 1}]


def _choices(response):
    body = response.json()
    assert response.status_code == 200, body
    return [(c["text"], c["logprobs"]) for c in body["choices"]]


def test_rows_wait_for_blocks_and_get_generate_and_the_contiguous_engines_tokens(pair, monkeypatch):
    path, model = pair
    want = [_solo(model, p, n) for p, n in zip(PROMPTS, LENGTHS)]
    assert len(set(want)) == 4
    with running_app(_app(path)) as url:
        responses = post_all(url, BODIES)
        pool = _pool(url, path.name)
    assert [_answer(r) for r in responses[:4]] == want
    if path.name == "tiny-bart":  # the forced first token, and the forced end at the last place
        assert all(text.startswith("t5 ") for text, _ in want) and want[1][1] == LENGTHS[1] - 1
    assert pool["blocks"] == BLOCKS and 1 <= pool["waits"] and pool["peak"] <= BLOCKS
    assert pool["in_use"] == 0 and pool["reserved"] == 0, pool  # every row's blocks came back
    assert pool["single"] < pool["steps"], "no decode step ran more than one completion"

    with running_app(_app(path, paged=False, monkeypatch=monkeypatch)) as url:
        contiguous = post_all(url, BODIES)
        assert "forgegrad_kv_cache_blocks" not in httpx.get(url + "/metrics").text
    for got, ref in zip(responses, contiguous):
        got, ref = _choices(got), _choices(ref)
        assert [t for t, _ in got] == [t for t, _ in ref]
        for (_, g), (_, w) in zip(got, ref):
            if w is None:
                continue
            assert g["tokens"] == w["tokens"]
            np.testing.assert_allclose(g["token_logprobs"], w["token_logprobs"], atol=1e-5)
            for a, b in zip(g["top_logprobs"], w["top_logprobs"]):
                assert list(a) == list(b)
                np.testing.assert_allclose(list(a.values()), list(b.values()), atol=1e-5)
    sampled = _choices(responses[4])
    assert len(sampled) == 2 and sampled[0][0] != sampled[1][0]  # n = 2: two rows on one source's blocks


def test_streamed_choices_equal_the_non_streamed_ones(pair):
    """n = 2 seeded streams asking for logprobs, beside a greedy one, on the small pool: each choice's chunks put
    together are the non-streamed answer's."""
    path, _ = pair
    bodies = [{"prompt": PROMPTS[1], "max_tokens": 14, "temperature": 1.0, "seed": 5, "n": 2, "logprobs": 2},
              {"prompt": PROMPTS[0], "max_tokens": 30, "temperature": 0}]

    with running_app(_app(path)) as url:
        streamed = stream_all(url, bodies)
        whole = [_choices(r) for r in post_all(url, bodies)]
        pool = _pool(url, path.name)
    assert pool["in_use"] == 0 and pool["reserved"] == 0, pool
    for chunks, answer in zip(streamed, whole):
        assert len(chunks) == len(answer)
        for i, (text, logprobs) in enumerate(answer):
            assert "".join(c["text"] for c in chunks[i]) == text
            if logprobs is None:
                continue
            got = {key: [v for c in chunks[i] for v in (c.get("logprobs") or {}).get(key, [])]
                   for key in ("token_logprobs", "top_logprobs")}
            assert len(got["token_logprobs"]) > 3
            # the same numbers: both from the decode steps' logits, the whole answer's not from a scoring forward
            # (whose float32 logits differ in their last bits: ~1e-5 for T5's larger ones)
            assert got["token_logprobs"] == logprobs["token_logprobs"]
            assert got["top_logprobs"] == logprobs["top_logprobs"]


def test_a_request_that_can_never_fit_is_a_400_and_the_pool_serves_on(pair):
    """Its source's blocks and every choice's max_tokens blocks exceed the whole pool: refused as it arrives, naming
    max_tokens; a request that fits is served after it."""
    path, model = pair
    with running_app(_app(path)) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/completions", json={"prompt": PROMPTS[1], "max_tokens": 60, "n": 3, "temperature": 0})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
        assert _answer(c.post("/v1/completions", json=BODIES[1])) == _solo(model, PROMPTS[1], LENGTHS[1])
        pool = _pool(url, path.name)
    assert pool["in_use"] == 0 and pool["reserved"] == 0, pool


def test_a_client_that_hangs_up_gives_its_blocks_back(pair):
    """A stream closed after its first chunk: its row leaves at its next step, its source's and decoder's blocks back
    in the pool, and the next request is served."""
    import time
    path, model = pair
    with running_app(_app(path)) as url, httpx.Client(base_url=url, timeout=120) as c:
        body = {"prompt": PROMPTS[1], "max_tokens": 100, "temperature": 0, "stream": True, "stop": "never"}
        with c.stream("POST", "/v1/completions", json=body) as r:
            next(line for line in r.iter_lines() if line.startswith("data: {"))
        deadline = time.monotonic() + 60
        while (pool := _pool(url, path.name))["in_use"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool["in_use"] == 0 and pool["reserved"] == 0, pool
        assert _answer(c.post("/v1/completions", json=BODIES[2])) == _solo(model, PROMPTS[2], LENGTHS[2])
