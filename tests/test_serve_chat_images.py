"""``POST /v1/chat/completions`` with image_url parts on the real server (uvicorn, httpx) for an image-text model
(Gemma 3 with images, byte tokens) that transformers wrote, with its image processor config and a chat template that
marks images as Gemma 3's does: the answer equals transformers' generate on the same prompt with transformers' own
image processor, streamed and not, with n choices and with beam search; text-only requests still batch; bad images
and unsupported options are 400s naming the field."""
from __future__ import annotations

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
from serve_helpers import png_image, running_app  # noqa: E402

IMG, BOI, EOI, EOS = BYTE_IMAGE_TOKENS

TEMPLATE = ("{% for m in messages %}<turn>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
            "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<start_of_image>{% else %}"
            "{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<end>\n{% endfor %}"
            "{% if add_generation_prompt %}<turn>model\n{% endif %}")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hf_conformance import tiny_byte_gemma3_vlm
    path = tmp_path_factory.mktemp("gemma3_serve")
    hf, processor = tiny_byte_gemma3_vlm(path)
    (path / "chat_template.jinja").write_text(TEMPLATE)
    return path, hf, processor


def _app(path):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    return create_completions_app(GenerationServeConfig(str(path)))


def _want(path, hf, processor, messages, images, max_tokens, penalty=1.0, beams=None, **processor_kwargs):
    """transformers' greedy answer to the rendered prompt, with transformers' image processor's pixel values (and
    pan-and-scan crops, where ``processor_kwargs`` ask for them; ``penalty``: generate's repetition_penalty);
    ``beams`` (width, answers): the beam search's answers, best first."""
    rendered = load_chat_template(path).render(messages, add_generation_prompt=True)
    processed = processor([im.convert("RGB") for im in images], return_tensors="pt", **processor_kwargs)
    ids, kinds = image_prompt(from_pretrained(path), ByteTokenizer(), rendered, len(images),
                              num_crops=processed["num_crops"].tolist())
    pixels = processed["pixel_values"]
    search = {} if beams is None else dict(num_beams=beams[0], num_return_sequences=beams[1])
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor([ids]), pixel_values=pixels, token_type_ids=torch.tensor([kinds]),
                          max_new_tokens=max_tokens, do_sample=False, repetition_penalty=penalty,
                          **search).numpy()[:, len(ids):].tolist()
    answers = [ByteTokenizer().decode(o[:o.index(EOS)] if EOS in o else o) for o in out]
    return answers if beams is not None else answers[0]


def test_chat_with_images_equals_transformers(checkpoint):
    path, hf, processor = checkpoint
    (first, first_url), (second, second_url) = png_image(0), png_image(1, (25, 60))
    body_messages = [{"role": "user", "content": [
        {"type": "text", "text": "Compare "}, {"type": "image_url", "image_url": {"url": first_url}},
        {"type": "text", "text": " and "}, {"type": "image_url", "image_url": {"url": second_url}}]}]
    template_messages = [{"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "image"},
                                                      {"type": "text", "text": " and "}, {"type": "image"}]}]
    want = _want(path, hf, processor, template_messages, [first, second], 8)
    assert len(want) >= 4  # the answer is text, not an immediate end
    body = {"messages": body_messages, "max_tokens": 8, "temperature": 0}
    with running_app(_app(path)) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == want
        streamed = ""
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    import json
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    streamed += delta.get("content") or ""
        assert streamed == want
        text = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                    "max_tokens": 4, "temperature": 0})
        assert text.status_code == 200, text.text


def test_chat_images_use_the_checkpoints_pan_and_scan_setting(checkpoint, tmp_path):
    """A preprocessor_config.json with do_pan_and_scan: a wide picture (30 x 80: 3 crops) and a square one (none)
    go in as transformers' processor crops them, and the answer equals transformers' generate on those crops."""
    from hf_conformance import PAN_AND_SCAN as settings, with_pan_and_scan
    path, hf, processor = checkpoint
    pas = with_pan_and_scan(path, tmp_path / "pas")
    (wide, wide_url), (square, square_url) = png_image(5, (30, 80)), png_image(6, (32, 32))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " or "}, {"type": "image"}]}]
    assert processor([wide, square], do_pan_and_scan=True, **settings)["num_crops"] == [3, 0]
    # a repetition penalty (vLLM's, as transformers') keeps the tiny model from repeating one token
    want = _want(pas, hf, processor, messages, [wide, square], 8, 2.0, do_pan_and_scan=True, **settings)
    assert want != _want(pas, hf, processor, messages, [wide, square], 8, 2.0)  # the crops change the answer
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": wide_url}}, {"type": "text", "text": " or "},
        {"type": "image_url", "image_url": {"url": square_url}}]}], "max_tokens": 8, "temperature": 0,
        "repetition_penalty": 2.0}
    with running_app(_app(pas)) as url:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == want


def test_chat_with_images_gives_several_choices_and_beam_search(checkpoint):
    """n choices (each on the images: greedy, so each is the answer) and use_beam_search (n beams: transformers
    on the images, best first)."""
    path, hf, processor = checkpoint
    (first, first_url), (second, second_url) = png_image(3), png_image(4, (40, 20))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " vs "}, {"type": "image"}]}]
    want = _want(path, hf, processor, messages, [first, second], 6, 2.0)
    beams = _want(path, hf, processor, messages, [first, second], 6, 2.0, beams=(2, 2))
    assert len(set(beams)) == 2
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": first_url}}, {"type": "text", "text": " vs "},
        {"type": "image_url", "image_url": {"url": second_url}}]}], "max_tokens": 6, "temperature": 0,
        "repetition_penalty": 2.0}
    with running_app(_app(path)) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/chat/completions", json={**body, "n": 2})
        assert r.status_code == 200, r.text
        assert [ch["message"]["content"] for ch in r.json()["choices"]] == [want, want]
        r = c.post("/v1/chat/completions", json={**body, "n": 2, "use_beam_search": True})
        assert r.status_code == 200, r.text
        assert [ch["message"]["content"] for ch in r.json()["choices"]] == beams


def test_chat_with_images_reports_log_probabilities_as_transformers(checkpoint):
    """logprobs with images: each answer token's log-softmax of the logits it was drawn from, as transformers'
    generate's raw logits on the same prompt and pixel values give them; streamed and not."""
    import json

    import numpy as np
    path, hf, processor = checkpoint
    (first, first_url), (second, second_url) = png_image(3), png_image(4, (40, 20))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " vs "}, {"type": "image"}]}]
    rendered = load_chat_template(path).render(messages, add_generation_prompt=True)
    processed = processor([first.convert("RGB"), second.convert("RGB")], return_tensors="pt")
    ids, kinds = image_prompt(from_pretrained(path), ByteTokenizer(), rendered, 2,
                              num_crops=processed["num_crops"].tolist())
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor([ids]), pixel_values=processed["pixel_values"],
                          token_type_ids=torch.tensor([kinds]), max_new_tokens=5, min_new_tokens=5, do_sample=False,
                          repetition_penalty=2.0, output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(ids):].tolist()
    want = [float(torch.log_softmax(step[0].double(), -1)[t]) for step, t in zip(out.logits, tokens)]
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": first_url}}, {"type": "text", "text": " vs "},
        {"type": "image_url", "image_url": {"url": second_url}}]}], "max_tokens": 5, "temperature": 0,
        "repetition_penalty": 2.0, "logprobs": True, "top_logprobs": 2, "ignore_eos": True}
    with running_app(_app(path)) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        content = r.json()["choices"][0]["logprobs"]["content"]
        streamed = []
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    part = json.loads(line[6:])["choices"][0].get("logprobs")
                    streamed += (part or {}).get("content") or []
    assert len(content) == len(tokens) == 5
    np.testing.assert_allclose([e["logprob"] for e in content], want, rtol=1e-4, atol=1e-4)
    assert all(len(e["top_logprobs"]) == 2 for e in content)
    # the streamed request reads the first one's blocks from the prefix cache (its image's too) and prefills only
    # the rest: its values equal to float32 rounding
    np.testing.assert_allclose([e["logprob"] for e in streamed], [e["logprob"] for e in content], rtol=1e-5,
                               atol=1e-6)


def test_beam_search_with_images_reports_each_beam_s_log_probabilities(checkpoint):
    """use_beam_search with logprobs and images: each returned beam's tokens with the log-softmax of transformers'
    logits over the prompt, its pixel values and that beam's tokens (the raw model's, as a text request's beams)."""
    import numpy as np
    path, hf, processor = checkpoint
    (first, first_url), (second, second_url) = png_image(3), png_image(4, (40, 20))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " vs "}, {"type": "image"}]}]
    beams = _want(path, hf, processor, messages, [first, second], 6, 2.0, beams=(2, 2))
    rendered = load_chat_template(path).render(messages, add_generation_prompt=True)
    processed = processor([first.convert("RGB"), second.convert("RGB")], return_tensors="pt")
    ids, kinds = image_prompt(from_pretrained(path), ByteTokenizer(), rendered, 2,
                              num_crops=processed["num_crops"].tolist())
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": first_url}}, {"type": "text", "text": " vs "},
        {"type": "image_url", "image_url": {"url": second_url}}]}], "max_tokens": 6, "temperature": 0,
        "repetition_penalty": 2.0, "n": 2, "use_beam_search": True, "logprobs": True, "top_logprobs": 1}
    with running_app(_app(path)) as url:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [ch["message"]["content"] for ch in choices] == beams
    for ch in choices:
        tokens = [ByteTokenizer().encode(e["token"]) for e in ch["logprobs"]["content"]]
        assert all(len(t) == 1 for t in tokens)  # byte tokens: one id each
        tokens = [t[0] for t in tokens]
        seq = torch.tensor([ids + tokens])
        with torch.no_grad():
            logits = hf(input_ids=seq, pixel_values=processed["pixel_values"],
                        token_type_ids=torch.tensor([kinds + [0] * len(tokens)])).logits[0].double()
        want = [float(torch.log_softmax(logits[len(ids) - 1 + i], -1)[t]) for i, t in enumerate(tokens)]
        np.testing.assert_allclose([e["logprob"] for e in ch["logprobs"]["content"]], want, rtol=1e-4, atol=1e-4)
        assert all(len(e["top_logprobs"]) == 1 for e in ch["logprobs"]["content"])


@pytest.mark.parametrize("change,param,message", [
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                                                           "bm90IGFuIGltYWdl"}}]}]),
     "messages", "messages: image 0: not an image"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "https://example.com/a.png"}}]}]),
     "messages", "image URLs are not fetched"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]),
     "messages", "content must be a string or a list of text parts"),
])
def test_bad_image_requests_are_400s_naming_the_field(checkpoint, change, param, message):
    path, _, _ = checkpoint
    _, png = png_image(2)
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png}}]}],
            "max_tokens": 2, **change}
    with running_app(_app(path)) as url:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and message in err["message"], err


def test_a_text_model_refuses_images(tmp_path):
    from hf_conformance import tiny_chat_gpt2
    path = tiny_chat_gpt2(tmp_path / "text", TEMPLATE)
    _, png = png_image(3)
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png}}]}]}
    with running_app(_app(path)) as url:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    assert "GPT2LMHeadModel takes text only" in r.json()["error"]["message"]


def test_message_parsing_keeps_the_image_order_and_bounds_the_count():
    from forgegrad.serve.chat_request import MAX_IMAGES, parse_chat
    import json
    parts = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{i}"}} for i in range(2)]
    body = {"messages": [{"role": "user", "content": [parts[0], {"type": "text", "text": "and"}]},
                         {"role": "assistant", "content": "ok"}, {"role": "user", "content": [parts[1]]}]}
    req = parse_chat(json.dumps(body).encode(), "m")
    assert req.images == ["data:image/png;base64,0", "data:image/png;base64,1"]
    assert req.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "and"}]
    assert req.messages[1]["content"] == "ok" and req.messages[2]["content"] == [{"type": "image"}]
    too_many = {"messages": [{"role": "user", "content": [parts[0]] * (MAX_IMAGES + 1)}]}
    with pytest.raises(Exception, match=f"messages hold {MAX_IMAGES + 1} images; this server takes up to"):
        parse_chat(json.dumps(too_many).encode(), "m")
