"""PEGASUS-X, NLLB-MoE and ProphetNet batched in the completions server: PEGASUS-X's block-local encoder before
Pegasus' decoder (its sinusoids computed at each row's place) and NLLB-MoE's sparse decoder layers in the lean step
(models/hf/_decode_nllb_moe.py; the checkpoints' routing, an eval capacity of every token, and a capacity fraction of
0.3, where routing a step's rows together would drop tokens that each row alone keeps) on the paged engine
(serve/paged_seq2seq.py); ProphetNet's main stream and first predicting stream (models/hf/_decode_prophetnet.py) on
the contiguous one (serve/seq2seq_batch.py). Concurrent requests of different lengths share decode steps and each
gets the tokens ``generate`` gives its prompt alone; seeded sampling (n choices, top_p / top_k), penalties and stop
strings answer what the one-at-a-time server answers; streamed chunks and logprobs equal the non-streamed ones; rows
preempted on a small pool answer as without preemption (real uvicorn, httpx, checkpoints transformers wrote)."""
from __future__ import annotations


import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, post_all, running_app, stream_all  # noqa: E402
from test_serve_seq2seq_batching import EOS, PROMPTS, _answer, _solo  # noqa: E402
from test_serve_seq2seq_batching import \
    test_batched_lean_step_equals_solo_steps_to_rounding as check_batched_step  # noqa: E402
from test_serve_seq2seq_batching import test_bfloat16_and_int8_weights_batch_too as check_weights  # noqa: E402

_NLLB = dict(vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
             decoder_attention_heads=4, encoder_ffn_dim=40, decoder_ffn_dim=24, max_position_embeddings=512,
             num_experts=4, encoder_sparse_step=2, decoder_sparse_step=1, dropout=0.0, attention_dropout=0.0,
             activation_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0, init_std=1.0, pad_token_id=1,
             bos_token_id=0, eos_token_id=EOS, decoder_start_token_id=EOS)


def _write(kind: str, path) -> None:
    torch.manual_seed(0)
    if kind == "pegasus_x":
        hf = transformers.PegasusXForConditionalGeneration(transformers.PegasusXConfig(
            vocab_size=300, d_model=32, encoder_layers=3, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=512,
            block_size=4, num_global_tokens=3, stagger_local_blocks=True, dropout=0.0, init_std=0.3, pad_token_id=0,
            eos_token_id=EOS, decoder_start_token_id=0))
    elif kind == "nllb_moe":  # nllb-moe-54b's routing: eval capacity of every token, outputs scaled by 1 - 0.2
        hf = transformers.NllbMoeForConditionalGeneration(transformers.NllbMoeConfig(**_NLLB))
    elif kind == "nllb_moe_capacity":  # capacity ceil(0.3 * a call's tokens): rows routed together lose choices
        hf = transformers.NllbMoeForConditionalGeneration(transformers.NllbMoeConfig(
            **dict(_NLLB, num_experts=3), moe_eval_capacity_token_fraction=0.3, batch_prioritized_routing=True,
            router_bias=True))
    else:  # buckets saturating early (6, max distance 9): the 40-token rows pass the last one
        hf = transformers.ProphetNetForConditionalGeneration(transformers.ProphetNetConfig(
            vocab_size=300, hidden_size=32, encoder_ffn_dim=48, decoder_ffn_dim=40, num_encoder_layers=2,
            num_decoder_layers=2, num_encoder_attention_heads=4, num_decoder_attention_heads=4,
            max_position_embeddings=512, ngram=3, num_buckets=6, relative_max_distance=9, dropout=0.0,
            attention_dropout=0.0, activation_dropout=0.0, init_std=0.3, pad_token_id=0, eos_token_id=EOS,
            bos_token_id=2, decoder_start_token_id=0))
    hf.save_pretrained(path)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"t{i}": i for i in range(300)}, unk_token="t2"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))


_WRITTEN = {}


def _checkpoint(kind, tmp_path_factory):
    """(directory, forgegrad's model) of ``kind``, written once per session."""
    if kind not in _WRITTEN:
        path = tmp_path_factory.mktemp("seq2seq-families") / kind
        _write(kind, path)
        _WRITTEN[kind] = path, from_pretrained(path)
    return _WRITTEN[kind]


@pytest.fixture(scope="module", params=["pegasus_x", "nllb_moe", "nllb_moe_capacity", "prophetnet"])
def pair(request, tmp_path_factory):
    return _checkpoint(request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=["pegasus_x", "nllb_moe_capacity"])
def paged(request, tmp_path_factory):
    return _checkpoint(request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=["nllb_moe", "nllb_moe_capacity"])
def nllb(request, tmp_path_factory):
    return _checkpoint(request.param, tmp_path_factory)


def _app(path, **kw):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(str(path), **kw))


def _steps(url, name):
    text = httpx.get(url + "/metrics").text
    return (metric(text, "forgegrad_batch_size_count", model=name),
            metric(text, "forgegrad_batch_size_bucket", model=name, le="1.0"),
            metric(text, "forgegrad_kv_cache_blocks", model=name))


def test_the_lean_step_serves_the_family(pair):
    """The server's batched engine applies (a lean step; PEGASUS-X and NLLB-MoE on the paged pool, ProphetNet on the
    contiguous engine, its relative bias being each row's query's); NLLB-MoE's random second-expert policies do not
    (one at a time: their draws are the process generator's, per call)."""
    from forgegrad.models.hf._decode_nllb_moe import NllbMoeLeanStep
    from forgegrad.models.hf._decode_seq2seq import lean_seq2seq_step
    from forgegrad.serve.generation_batch import batching_applies
    from forgegrad.serve.paged_seq2seq import paged_seq2seq_applies
    path, model = pair
    assert batching_applies(model) and paged_seq2seq_applies(model) == (path.name != "prophetnet")
    if path.name.startswith("nllb"):
        with fg.no_grad():
            assert isinstance(lean_seq2seq_step(model, [], None, None, rows_alone=True), NllbMoeLeanStep)
        for policy in ("sampling", "random"):
            cfg = dict(model.config, second_expert_policy=policy)
            assert not batching_applies(type(model)(cfg).eval())


def test_concurrent_requests_share_steps_with_their_solo_tokens(pair):
    path, model = pair
    lengths = [40, 7, 25, 33]
    want = [_solo(model, p, n) for p, n in zip(PROMPTS, lengths)]
    assert len(set(want)) == 4
    with running_app(_app(path)) as url:
        got = [_answer(a) for a in post_all(url, [{"prompt": p, "max_tokens": n, "temperature": 0}
                                                  for p, n in zip(PROMPTS, lengths)])]
        steps, single, blocks = _steps(url, path.name)
    assert got == want
    assert (blocks > 0) == (path.name != "prophetnet"), "not the engine the family decodes on"
    assert steps > 0 and single < steps, "no decode step ran more than one completion"


def test_the_contiguous_engine_routes_nllb_moe_rows_alone_too(tmp_path_factory, monkeypatch):
    """seq2seq_batch.py's engine (the paged one's reference) on the 0.3-capacity checkpoint: each row's tokens are
    generate's on its prompt alone as well."""
    from forgegrad.serve import completions
    path, model = _checkpoint("nllb_moe_capacity", tmp_path_factory)
    monkeypatch.setattr(completions, "paged_seq2seq_applies", lambda model: False)
    lengths = [12, 7, 9, 10]
    with running_app(_app(path)) as url:
        got = [_answer(a) for a in post_all(url, [{"prompt": p, "max_tokens": n, "temperature": 0}
                                                  for p, n in zip(PROMPTS, lengths)])]
        steps, single, blocks = _steps(url, path.name)
    assert got == [_solo(model, p, n) for p, n in zip(PROMPTS, lengths)]
    assert blocks == 0 and single < steps


def test_every_request_setting_matches_the_one_at_a_time_path(pair):
    """Seeded sampling (n choices, top_p, top_k), penalties and logit_bias, a stop string, several prompts in one
    request, sent at once to the batched server, answer what ``--max-batch 1`` (generate, one request at a time)
    answers."""
    path, model = pair
    stop = " " + _solo(model, PROMPTS[3], 25)[0].split()[5]
    bodies = [{"prompt": PROMPTS[3], "max_tokens": 16, "temperature": 0.9, "seed": 7, "n": 3},
              {"prompt": PROMPTS[1], "max_tokens": 12, "temperature": 1.3, "top_p": 0.8, "top_k": 20, "seed": 3},
              {"prompt": PROMPTS[0], "max_tokens": 20, "temperature": 0, "presence_penalty": 1.5,
               "frequency_penalty": 0.7, "logit_bias": {"7": 3, "40": -100}},
              {"prompt": PROMPTS[2], "max_tokens": 20, "temperature": 0, "repetition_penalty": 1.8},
              {"prompt": PROMPTS[3], "max_tokens": 25, "temperature": 0, "stop": ["never", stop]},
              {"prompt": [PROMPTS[2], PROMPTS[0]], "max_tokens": 5, "temperature": 0}]

    def choices(r):
        assert r.status_code == 200, r.text
        body = r.json()
        return [(ch["text"], ch["finish_reason"]) for ch in body["choices"]], body["usage"]

    with running_app(_app(path, max_batch=1)) as url, httpx.Client(base_url=url, timeout=120) as c:
        want = [choices(c.post("/v1/completions", json=b)) for b in bodies]
    assert want[4][0][0][1] == "stop"
    with running_app(_app(path)) as url:
        got = [choices(r) for r in post_all(url, bodies)]
        steps, single, _ = _steps(url, path.name)
    assert got == want
    assert single < steps
    assert len({text for text, _ in want[0][0]}) > 1, "the seeded choices should differ"


def test_streamed_choices_and_logprobs_equal_the_non_streamed_ones(pair):
    path, _ = pair
    bodies = [{"prompt": PROMPTS[1], "max_tokens": 14, "temperature": 1.0, "seed": 5, "n": 2, "logprobs": 2},
              {"prompt": PROMPTS[3], "max_tokens": 10, "temperature": 0, "logprobs": 0},
              {"prompt": PROMPTS[0], "max_tokens": 30, "temperature": 0}]

    with running_app(_app(path)) as url:
        streamed = stream_all(url, bodies)
        whole = [r.json()["choices"] for r in post_all(url, bodies)]
    for chunks, answer in zip(streamed, whole):
        assert len(chunks) == len(answer)
        for choice in answer:
            mine = chunks[choice["index"]]
            assert "".join(c["text"] for c in mine) == choice["text"]
            if choice["logprobs"] is None:
                continue
            for key in ("tokens", "token_logprobs", "top_logprobs"):
                got = [v for c in mine for v in (c.get("logprobs") or {}).get(key, [])]
                assert got == choice["logprobs"][key], key
            assert len(choice["logprobs"]["tokens"]) > 3


def test_preempted_rows_answer_as_without_preemption(paged):
    """The engine on a pool of 9 blocks (rows preempted, their sources encoded again and their decoder tokens
    prefilled again: NLLB-MoE's one per call, as its steps routed them) against one with room for all."""
    from test_serve_seq2seq_paged_preempt import BODIES, _assert_clean, _engine, _run
    path, model = paged
    want, _ = _run(_engine(path, 256), BODIES)
    tight = _engine(path, 9)
    got, streamed = _run(tight, BODIES)
    assert tight.pool.preemptions > 0 and tight.pool.recomputed_tokens > 0
    for a, b in zip(want, got):
        assert [c.token_ids for c in b] == [c.token_ids for c in a]
    for body, (c,) in ((b, r) for b, r in zip(BODIES, got) if b["temperature"] == 0 and not b.get("ignore_eos")):
        assert (c.text, c.completion_tokens) == _solo(model, body["prompt"], body["max_tokens"])
    _assert_clean(tight.pool)


def test_nllb_moe_rows_route_alone_in_the_step(nllb):
    """The lean step at the array level on four rows of different sources (their encoder keys padded behind the cross
    bias), two steps: with ``rows_alone`` each row's logits are its solo steps' (to float32 rounding); routed
    together (generate's batch, as transformers routes it), the 0.3 capacity drops choices and moves the logits."""
    from forgegrad.models.hf._decode_seq2seq import lean_seq2seq_step
    from forgegrad.models.hf.t5 import _padding_mask
    path, model = nllb
    start, B, S = model.decoder_start_token_id, len(PROMPTS), max(map(len, PROMPTS))
    tokens = np.array([11, 13, 17, 19])
    solo, cross = [], None
    with fg.no_grad():
        for b, src in enumerate(PROMPTS):
            kv = [(k.numpy(), v.numpy()) for k, v in model.cross_kv(model.encode(np.array([src])))]
            if cross is None:
                cross = [tuple(np.zeros((B, a.shape[1], S, a.shape[3]), np.float32) for a in pair_) for pair_ in kv]
            for (K, V), (k, v) in zip(cross, kv):
                K[b, :, :len(src)], V[b, :, :len(src)] = k[0], v[0]
            one = lean_seq2seq_step(model, kv, None, model.new_cache(1, 2))
            solo.append(np.concatenate([one(np.array([start])), one(tokens[b:b + 1])]))
        bias = _padding_mask(np.array([[s < len(p) for s in range(S)] for p in PROMPTS]))
        outs = {}
        for alone in (True, False):
            step = lean_seq2seq_step(model, [], None, None, rows_alone=alone)
            step.rebind(model.new_cache(B, 2), cross, bias)
            first = step(np.full(B, start), np.zeros(B, np.int64))
            outs[alone] = np.stack([first, step(tokens, np.ones(B, np.int64))], axis=1)  # (B, 2, vocab)
    np.testing.assert_allclose(outs[True], np.stack(solo), rtol=1e-5, atol=1e-5)
    if path.name == "nllb_moe_capacity":
        assert np.abs(outs[False] - outs[True]).max() > 1e-2


@pytest.mark.parametrize("kind", ["pegasus_x", "prophetnet"])
def test_batched_lean_step_equals_solo_steps(kind, tmp_path_factory):
    """Rows of different sources (encoder keys padded behind the cross bias) and decoder lengths (keys right-aligned
    behind padding, each row's own positions: PEGASUS-X's sinusoids, ProphetNet's position rows and its relative
    buckets of a right-aligned key) give each row's solo logits to float32 rounding (test_serve_seq2seq_batching's
    check)."""
    check_batched_step(_checkpoint(kind, tmp_path_factory))


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
@pytest.mark.parametrize("kind", ["pegasus_x", "nllb_moe_capacity", "prophetnet"])
def test_bfloat16_and_int8_weights_batch_too(kind, weights, tmp_path_factory):
    """--weights bfloat16 / int8 (NLLB-MoE's experts and routers among the layers): requests share decode steps, each
    with the tokens generate gives the same weights alone (test_serve_seq2seq_batching's check)."""
    check_weights(_checkpoint(kind, tmp_path_factory), weights)
