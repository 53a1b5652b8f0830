"""Qwen2-VL and Qwen2.5-VL chat requests with images on the completions server's batched (paged) engine, on the real
server (uvicorn, httpx) for tiny checkpoints that transformers wrote: after its images a row's text positions run on
from the images' M-RoPE positions (its rope delta), which each batched decode step, and the recomputed prefill of a
preempted row, apply to that row alone. Concurrent image and text requests (images of different sizes, two images in
one prompt, n > 1, streamed) decode in the same steps, each answer and its log-probabilities equal to transformers'
greedy generate on the same prompt and pixel values; the same text with other images gets its own answer with the
prefix cache on; an image row preempted on a small KV cache is recomputed with its images (its answer's tokens at
their delayed positions) and still gives transformers' answer."""
from __future__ import annotations

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("jinja2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")
transformers.logging.set_verbosity_error()

from serve_helpers import (QWEN_VL_MARKS, QWEN_VL_TEMPLATE, assert_same_decodes,  # noqa: E402
                           engine_and_solo_results, metric, png_image, post_all, running_app, stream_all,
                           tiny_qwen_vl)

TEMPLATE, MARKS = QWEN_VL_TEMPLATE, QWEN_VL_MARKS
EOS = 1  # <|im_end|>
# (height, width) of the images by seed: merged grids of 2 x 3, 4 x 4, 2 x 7 and 2 x 2 patches, so rope deltas of
# -3, -12, -7 and -2 per image (an image's tokens span max(rows, columns) positions)
SIZES = [(40, 90), (112, 112), (60, 200), (30, 30)]


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def checkpoint(request, tmp_path_factory):
    """(path, transformers' model, its tokenizer, its image processor) of a tiny Qwen2-VL or Qwen2.5-VL (a byte-level
    BPE with Qwen's vision marks and chat template); weights drawn wide enough that greedy answers vary."""
    kind = request.param
    path = tmp_path_factory.mktemp(kind) / f"tiny-{kind}"
    hf, tok, processor = tiny_qwen_vl(path, kind)
    return path, hf, tok, processor


def _pictures():
    return {s: png_image(s, size) for s, size in enumerate(SIZES)}


def _prompt(tok, processor, text, images):
    """(the rendered prompt's ids with each image's pads, transformers' image arguments) as transformers'
    Qwen2VLProcessor makes them: one pad per merged patch."""
    start, pad, end = tok.convert_tokens_to_ids(MARKS)
    ids, extra = tok.encode("<|im_start|>user\n" + text), {}
    if images:
        extra = dict(processor([im.convert("RGB") for im in images], return_tensors="pt"))
        for count in (extra["image_grid_thw"].prod(-1) // 4).tolist():
            ids += [start] + [pad] * count + [end]
    ids += tok.encode("<|im_end|>\n<|im_start|>assistant\n")
    if images:
        extra["mm_token_type_ids"] = (torch.tensor([ids]) == pad).long()
    return ids, extra


def _want(checkpoint, text, images, max_tokens):
    """transformers' greedy answer to the prompt with its images, and each answer token's log-softmax of the raw
    logits it was drawn from (up to the end token, which reports none: it ends the message)."""
    _, hf, tok, processor = checkpoint
    ids, extra = _prompt(tok, processor, text, images)
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                          output_logits=True, return_dict_in_generate=True, **extra)
    tokens = out.sequences[0, len(ids):].tolist()
    values = [float(torch.log_softmax(step[0].double(), -1)[t]) for step, t in zip(out.logits, tokens)]
    n = tokens.index(EOS) if EOS in tokens else len(tokens)
    return tok.decode(tokens[:n]), values[:n]


def _body(text, urls, max_tokens, **more):
    content = [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"messages": [{"role": "user", "content": content if urls else text}], "max_tokens": max_tokens,
            "temperature": 0, "logprobs": True, **more}


def _app(path, **config):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(str(path), **config))


def _answers(responses):
    """Each response's choices' (text, log-probabilities)."""
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [[(ch["message"]["content"], [e["logprob"] for e in ch["logprobs"]["content"]])
             for ch in r.json()["choices"]] for r in responses]


def _same(got, want):
    """The same texts, and log-probabilities equal to float32 rounding (a batched row's logits are its solo logits
    to rounding)."""
    assert [t for t, _ in got] == [t for t, _ in want]
    for (_, a), (_, b) in zip(got, want):
        assert len(a) == len(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# (text, images by seed, max_tokens): the same text with images of other sizes, two images in a prompt, text alone
CASES = [("Describe ", [0], 12), ("Describe ", [1], 10), ("Compare them: ", [2, 3], 14), ("hello world", [], 11)]


def test_concurrent_image_and_text_requests_batch_and_equal_transformers(checkpoint):
    path = checkpoint[0]
    pictures = _pictures()
    want = [_want(checkpoint, t, [pictures[s][0] for s in seeds], n) for t, seeds, n in CASES]
    assert len({t for t, _ in want}) == len(want) and all(len(v) >= 6 for _, v in want), want  # each its own
    bodies = [_body(t, [pictures[s][1] for s in seeds], n) for t, seeds, n in CASES]
    bodies[2]["n"] = 2  # two choices of the two-image prompt: one prefill, two rows with its delta
    with running_app(_app(path)) as url:
        answers = _answers(post_all(url, bodies, route="/v1/chat/completions"))
        # streamed, together: an image request and a text one
        streamed = stream_all(url, [bodies[1], bodies[3]], route="/v1/chat/completions")
        # the same text with the other image after the first's request ended (its blocks, had they been kept by
        # token ids, would be read here), then a text request reading its own earlier blocks from the prefix cache
        again = _answers(post_all(url, [bodies[1]], route="/v1/chat/completions")
                         + post_all(url, [bodies[0]], route="/v1/chat/completions")
                         + post_all(url, [bodies[3]], route="/v1/chat/completions"))
        text = httpx.get(url + "/metrics").text
    _same([a[0] for a in answers], want)
    assert answers[2][1] == answers[2][0]  # the second choice: the same greedy answer
    _same([a[0] for a in again], [want[1], want[0], want[3]])
    for chunks, w in zip(streamed, [want[1], want[3]]):
        pieces = chunks[0]
        _same([("".join(p["delta"].get("content") or "" for p in pieces),
                [e["logprob"] for p in pieces for e in (p.get("logprobs") or {}).get("content") or []])], [w])
    name = path.name
    steps = metric(text, "forgegrad_batch_size_count", model=name)
    # steps of more rows than the text requests alone could make: the image requests' rows were in them
    assert steps > 0 and metric(text, "forgegrad_batch_size_bucket", model=name, le="2.0") < steps
    assert metric(text, "forgegrad_prefix_cache_hit_tokens_total", model=name) > 0, [
        line for line in text.splitlines() if "prefix" in line]


@pytest.mark.parametrize("prefix_cache_mb", [0, None])
def test_a_preempted_image_request_is_recomputed_at_its_positions(checkpoint, prefix_cache_mb):
    """A KV cache of a few blocks: three concurrent image requests (images of three sizes, so three rope deltas) all
    join, then need more blocks than are left: the last to arrive is preempted, prefilled again once another has
    ended, and each answer is still transformers'. Without a prefix cache its prompt with its images is prefilled
    again in one call, then its answer's tokens in chunks at their text positions plus its delta; with one, its full
    blocks kept as it left (keyed by its image) are read back where they still hold every image token, and only the
    rest is prefilled, as text at its positions plus the delta its image gives."""
    from forgegrad.models import from_pretrained
    from forgegrad.serve.kv_pool import KVPool
    path, _, tok, processor = checkpoint
    pictures = _pictures()
    cases = [("Describe ", [0], 40), ("Describe ", [1], 40), ("Describe ", [2], 40)]
    want = [_want(checkpoint, t, [pictures[s][0] for s in seeds], n) for t, seeds, n in cases]
    assert all(len(v) > 20 for _, v in want), want  # long answers: the rows outgrow the pool
    bt = 16
    lengths = [len(_prompt(tok, processor, t, [pictures[s][0] for s in seeds])[0]) for t, seeds, _ in cases]
    joins = sum(-(-(P + 1 + bt) // bt) for P in lengths)  # each row's prompt, next token and a block's look-ahead
    assert sum(-(-(P + 40) // bt) for P in lengths) > joins  # all of them cannot finish in the pool of `joins`
    block = KVPool.for_model(from_pretrained(path), blocks=1, block_tokens=bt).block_bytes
    with running_app(_app(path, kv_cache_mb=joins * block / 2 ** 20, prefill_chunk=8, prefix_block=bt,
                          prefix_cache_mb=prefix_cache_mb)) as url:
        answers = _answers(post_all(url, [_body(t, [pictures[s][1] for s in seeds], n) for t, seeds, n in cases],
                                    route="/v1/chat/completions"))
        text = httpx.get(url + "/metrics").text
    name = path.name
    assert metric(text, "forgegrad_kv_cache_preemptions_total", model=name) > 0, [
        line for line in text.splitlines() if "kv_cache" in line]
    recomputed = metric(text, "forgegrad_kv_cache_recomputed_tokens_total", model=name)
    if prefix_cache_mb == 0:  # a prompt with its images and answer tokens
        assert recomputed > max(lengths), [line for line in text.splitlines() if "kv_cache" in line]
    else:
        assert recomputed > 0
    _same([a[0] for a in answers], want)


def test_the_contiguous_engine_decodes_image_rows_at_their_positions(checkpoint):
    """BatchEngine (the contiguous cache, rows right-aligned) with Qwen2-VL image and text jobs together: each row's
    tokens and log-probabilities are its lone decode's (TextGenerator.complete: generate on the images, the cache's
    rope deltas applied)."""
    from forgegrad.serve.completions import TextGenerator
    path = checkpoint[0]
    pictures = _pictures()
    results, solos, _ = engine_and_solo_results(
        TextGenerator(str(path)), [_body(t, [pictures[s][1] for s in seeds], n) for t, seeds, n in CASES], path.name,
        prefill_chunk=16)
    assert_same_decodes(results, solos)
