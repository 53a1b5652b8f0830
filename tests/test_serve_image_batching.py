"""Chat requests with images on the completions server's batched (paged) engine, on the real server (uvicorn,
httpx) for a tiny Gemma 3 with images that transformers wrote: concurrent image and text requests decode in the
same batched steps and each answer equals transformers' greedy generate on the same prompt and pixel values; two
requests with the same text and different images get their own answers with the prefix cache on (an image prompt's
blocks are never shared by token ids); an image row preempted on a small KV cache is recomputed with its images and
still gives transformers' answer."""
from __future__ import annotations

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf.chat_template import load_chat_template
from forgegrad.models.hf.image_prompts import image_prompt
from forgegrad.models.hf.tokenizer import ByteTokenizer

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("jinja2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")
transformers.logging.set_verbosity_error()

from hf_conformance import BYTE_IMAGE_TOKENS  # noqa: E402
from serve_helpers import (assert_same_decodes, engine_and_solo_results, metric, png_image,  # noqa: E402
                           post_all, running_app)

IMG, BOI, EOI, EOS = BYTE_IMAGE_TOKENS
NAME = "tiny-gemma3"
TEMPLATE = ("{% for m in messages %}<turn>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
            "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<start_of_image>{% else %}"
            "{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<end>\n{% endfor %}"
            "{% if add_generation_prompt %}<turn>model\n{% endif %}")
PENALTY = 2.0  # a repetition penalty keeps the tiny model from repeating one token (the texts then differ)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hf_conformance import tiny_byte_gemma3_vlm
    path = tmp_path_factory.mktemp("gemma3_batch") / NAME
    path.mkdir()
    hf, processor = tiny_byte_gemma3_vlm(path)
    (path / "chat_template.jinja").write_text(TEMPLATE)
    return path, hf, processor


def _parts(text, urls):
    """(the request's message content, the template's) for ``text`` then one image_url part per url."""
    body = [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return body, [{"type": "text", "text": text}] + [{"type": "image"}] * len(urls)


def _want(path, hf, processor, text, images, max_tokens):
    """transformers' greedy answer (with PENALTY) to the rendered chat prompt with its image processor's pixels, and
    each answer token's log-softmax of the raw logits it was drawn from (the tiny model's answers run into ids past
    the bytes, which all read as U+FFFD: the values tell the tokens apart, and the keys' values behind them)."""
    _, parts = _parts(text, [""] * len(images))
    rendered = load_chat_template(path).render([{"role": "user", "content": parts}], add_generation_prompt=True)
    tok = ByteTokenizer()
    if not images:
        ids = torch.tensor([tok.encode(rendered)])
        extra = {}
    else:
        processed = processor([im.convert("RGB") for im in images], return_tensors="pt")
        ids, kinds = image_prompt(from_pretrained(path), tok, rendered, len(images),
                                  num_crops=processed["num_crops"].tolist())
        ids = torch.tensor([ids])
        extra = dict(pixel_values=processed["pixel_values"], token_type_ids=torch.tensor([kinds]))
    with torch.no_grad():
        out = hf.generate(input_ids=ids, max_new_tokens=max_tokens, do_sample=False, repetition_penalty=PENALTY,
                          output_logits=True, return_dict_in_generate=True, **extra)
    tokens = out.sequences[0, ids.shape[1]:].tolist()
    values = [float(torch.log_softmax(step[0].double(), -1)[t]) for step, t in zip(out.logits, tokens)]
    n = tokens.index(EOS) if EOS in tokens else len(tokens)
    return tok.decode(tokens[:n]), values[:n]  # the end token gets no entry (its chunk carries none)


def _body(text, urls, max_tokens, **more):
    content, _ = _parts(text, urls)
    return {"messages": [{"role": "user", "content": content if urls else text}], "max_tokens": max_tokens,
            "temperature": 0, "repetition_penalty": PENALTY, "logprobs": True, **more}


def _app(path, **config):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(str(path), **config))


def _answers(responses):
    """Each response's (text, log-probabilities)."""
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [(r.json()["choices"][0]["message"]["content"],
             [e["logprob"] for e in r.json()["choices"][0]["logprobs"]["content"]]) for r in responses]


def _same(got, want):
    """The same texts, and log-probabilities equal to float32 rounding (a batched row's logits are its solo logits
    to rounding)."""
    assert [t for t, _ in got] == [t for t, _ in want]
    for (_, a), (_, b) in zip(got, want):
        assert len(a) == len(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# (text, images by png_image seed, max_tokens): two with the same text and other images
REQUESTS = [("Describe ", [0], 12), ("Describe ", [1], 10), ("Compare ", [2, 3], 14), ("hello there", [], 11),
            ("what now?", [], 9)]


def test_concurrent_image_and_text_requests_batch_and_equal_transformers(checkpoint):
    path, hf, processor = checkpoint
    pictures = {s: png_image(s, (30 + 5 * s, 40)) for s in range(4)}
    want = [_want(path, hf, processor, t, [pictures[s][0] for s in seeds], n) for t, seeds, n in REQUESTS]
    assert len({t for t, _ in want}) == len(want) and all(len(t) >= 4 for t, _ in want), want  # each its own
    bodies = [_body(t, [pictures[s][1] for s in seeds], n) for t, seeds, n in REQUESTS]
    with running_app(_app(path)) as url:
        answers = _answers(post_all(url, bodies, route="/v1/chat/completions"))
        # the same text with the other image after the first's blocks went to the prefix cache (kept there for text:
        # an image prompt's must not be read by token ids), then a text request reading that cache
        again = _answers(post_all(url, [bodies[1]], route="/v1/chat/completions")
                         + post_all(url, [bodies[0]], route="/v1/chat/completions")
                         + post_all(url, [bodies[3]], route="/v1/chat/completions"))
        text = httpx.get(url + "/metrics").text
    _same(answers, want)
    _same(again, [want[1], want[0], want[3]])
    steps = metric(text, "forgegrad_batch_size_count", model=NAME)
    # steps of more rows than the two text requests: the image requests were in them
    assert steps > 0 and metric(text, "forgegrad_batch_size_bucket", model=NAME, le="2.0") < steps
    # the text request's prompt was read from the cache (its own earlier blocks): the cache was on
    assert metric(text, "forgegrad_prefix_cache_hit_tokens_total", model=NAME) > 0, [
        line for line in text.splitlines() if "prefix" in line]


def test_image_choices_share_the_prefill_and_report_log_probabilities(checkpoint):
    """n choices of an image request are one prefill (the engine's prefill counter) and each is the greedy answer;
    logprobs come from the decode steps' logits, as a lone request's."""
    path, hf, processor = checkpoint
    picture, url_ = png_image(7, (32, 36))
    want, values = _want(path, hf, processor, "Say ", [picture], 8)
    with running_app(_app(path)) as url, httpx.Client(base_url=url, timeout=120) as c:
        before = metric(c.get("/metrics").text, "forgegrad_prefill_chunks_total", model=NAME)
        r = c.post("/v1/chat/completions", json=_body("Say ", [url_], 8, n=3, top_logprobs=1))
        after = metric(c.get("/metrics").text, "forgegrad_prefill_chunks_total", model=NAME)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [ch["message"]["content"] for ch in choices] == [want] * 3
    assert after - before == 1  # one prefill call for the three rows: the whole prompt with its image at once
    logprobs = [[e["logprob"] for e in ch["logprobs"]["content"]] for ch in choices]
    assert logprobs[0] == logprobs[1] == logprobs[2]
    np.testing.assert_allclose(logprobs[0], values, rtol=1e-4, atol=1e-4)


def test_a_preempted_image_request_is_recomputed_with_its_images(checkpoint):
    """A KV cache of a few blocks: three concurrent image requests cannot all hold their rows, rows are preempted and
    prefilled again (their prompts with the images, then their answers' tokens), and each answer is still
    transformers'."""
    from forgegrad.serve.kv_pool import KVPool
    path, hf, processor = checkpoint
    pictures = {s: png_image(s, (30 + 5 * s, 40)) for s in range(4)}
    # three prompts of one length (48 tokens: 3 blocks): each reserves 5 blocks as it joins (its prompt's and its
    # next 17 tokens'), all three join a pool of 15, and each needs a sixth at its 33rd token: the last one to arrive
    # is preempted then, and recomputed once another has ended
    cases = [("Describe ", [0], 40), ("Describe ", [1], 40), ("Describe ", [2], 40)]
    want = [_want(path, hf, processor, t, [pictures[s][0] for s in seeds], n) for t, seeds, n in cases]
    block = KVPool.for_model(from_pretrained(path), blocks=1).block_bytes
    blocks = 15
    with running_app(_app(path, kv_cache_mb=blocks * block / 2 ** 20)) as url:
        answers = _answers(post_all(url, [_body(t, [pictures[s][1] for s in seeds], n)
                                          for t, seeds, n in cases], route="/v1/chat/completions"))
        text = httpx.get(url + "/metrics").text
    assert metric(text, "forgegrad_kv_cache_preemptions_total", model=NAME) > 0, [
        line for line in text.splitlines() if "kv_cache" in line]
    _same(answers, want)


# LLaVA (a Llama decoder, a CLIP tower and its processor, ``<image>`` in the template) and PaliGemma (a Gemma decoder,
# a SigLIP tower and its processor; its images go first, then BOS, the text and "\n", a bidirectional prefix): byte
# tokens, image token 290, weights drawn wide enough that greedy decoding does not settle on one token
PALI_TEMPLATE = ("{% for m in messages %}{% if m['content'] is string %}{{ m['content'] }}{% else %}"
                 "{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"
                 "{% endif %}{% endfor %}")
LLAVA_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
                  "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}"
                  "{% endif %}{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


def _other_checkpoint(kind, path):
    """(transformers' model, its image processor) of a tiny LLaVA or PaliGemma written at ``path``."""
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=14,
                  patch_size=7)
    if kind == "llava":
        text = dict(model_type="llama", num_hidden_layers=2, hidden_size=48, num_attention_heads=4,
                    num_key_value_heads=2, intermediate_size=40, vocab_size=300, max_position_embeddings=256,
                    initializer_range=0.5, eos_token_id=EOS)
        cfg = transformers.LlavaConfig(text_config=text, vision_config=dict(vision, model_type="clip_vision_model"),
                                       image_token_index=IMG)
        hf = transformers.LlavaForConditionalGeneration(cfg).eval()
        processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 14},
                                                       crop_size={"height": 14, "width": 14})
        template = LLAVA_TEMPLATE
    else:
        text = dict(model_type="gemma", num_hidden_layers=2, hidden_size=48, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=12, intermediate_size=40, vocab_size=300,
                    max_position_embeddings=256, initializer_range=1.0, eos_token_id=EOS)
        cfg = transformers.PaliGemmaConfig(text_config=text, vision_config=dict(vision, projection_dim=48),
                                           image_token_index=IMG, projection_dim=48)
        hf = transformers.PaliGemmaForConditionalGeneration(cfg).eval()
        processor = transformers.SiglipImageProcessorPil(size={"height": 14, "width": 14})
        template = PALI_TEMPLATE
    hf.save_pretrained(path)
    processor.save_pretrained(path)
    (path / "chat_template.jinja").write_text(template)
    return hf, processor


def _other_want(path, hf, processor, text, images, max_tokens):
    """transformers' greedy answer and its log-probabilities (as ``_want``; a PaliGemma text prompt causal: token
    type 1, as forgegrad computes a prompt without token types)."""
    _, parts = _parts(text, [""] * len(images))
    rendered = load_chat_template(path).render([{"role": "user", "content": parts if images else text}],
                                               add_generation_prompt=True)
    tok = ByteTokenizer()
    if images:
        ids, kinds = image_prompt(from_pretrained(path), tok, rendered, len(images))
        extra = dict(pixel_values=processor([im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"])
    else:
        ids, kinds = tok.encode(rendered), None
        extra = {}
    if isinstance(hf, transformers.PaliGemmaForConditionalGeneration):
        extra["token_type_ids"] = torch.tensor([kinds if kinds is not None else [1] * len(ids)])
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                          output_logits=True, return_dict_in_generate=True, **extra)
    tokens = out.sequences[0, len(ids):].tolist()
    values = [float(torch.log_softmax(step[0].double(), -1)[t]) for step, t in zip(out.logits, tokens)]
    n = tokens.index(EOS) if EOS in tokens else len(tokens)
    return tok.decode(tokens[:n]), values[:n]  # the end token gets no entry (its chunk carries none)


@pytest.mark.parametrize("kind", ["llava", "paligemma"])
def test_llava_and_paligemma_image_requests_batch_and_equal_transformers(kind, tmp_path):
    """Concurrent image and text chat requests on LLaVA and PaliGemma: batched steps, each answer transformers',
    the same text with other images its own answer, also after the first's blocks could have been cached."""
    path = tmp_path / f"tiny-{kind}"
    path.mkdir()
    hf, processor = _other_checkpoint(kind, path)
    pictures = {s: png_image(s, (30 + 5 * s, 40)) for s in range(4)}
    cases = [("Describe it", [0], 12), ("Describe it", [1], 10), ("Compare them", [2, 3], 14), ("hello there", [], 11)]
    # no repetition penalty here: these wider weights vary on their own
    want = [_other_want(path, hf, processor, t, [pictures[s][0] for s in seeds], n) for t, seeds, n in cases]
    assert len({t for t, _ in want}) == len(want) and all(len(t) >= 4 for t, _ in want), want
    bodies = [dict(_body(t, [pictures[s][1] for s in seeds], n), repetition_penalty=1.0) for t, seeds, n in cases]
    with running_app(_app(path)) as url:
        answers = _answers(post_all(url, bodies, route="/v1/chat/completions"))
        again = _answers(post_all(url, [bodies[1]], route="/v1/chat/completions"))
        text = httpx.get(url + "/metrics").text
    _same(answers, want)
    _same(again, [want[1]])
    name = f"tiny-{kind}"
    steps = metric(text, "forgegrad_batch_size_count", model=name)
    assert steps > 0 and metric(text, "forgegrad_batch_size_bucket", model=name, le="1.0") < steps


def test_the_contiguous_engine_prefills_images_on_its_own_cache(checkpoint):
    """BatchEngine (the contiguous cache, rows right-aligned) with image and text jobs: each image prompt is one
    prefill call whatever prefill_chunk says (a text prompt takes its chunks), and each row's tokens and
    log-probabilities are its lone decode's (TextGenerator.complete: generate on the images)."""
    from forgegrad.serve.completions import TextGenerator
    path, _, _ = checkpoint
    pictures = {s: png_image(s, (30 + 5 * s, 40)) for s in range(4)}
    calls = []
    results, solos, jobs = engine_and_solo_results(
        TextGenerator(str(path)), [_body(t, [pictures[s][1] for s in seeds], n) for t, seeds, n in REQUESTS[:4]],
        NAME, prefill_chunk=16, on_prefill=lambda: calls.append(1))
    assert_same_decodes(results, solos)
    text_calls = -(-len(jobs[3].prompt_ids[0]) // 16)
    assert len(calls) == 3 + text_calls and text_calls > 1
