"""``POST /v1/chat/completions`` with vLLM's video_url parts on the real server (uvicorn on loopback, httpx) for
Qwen2-VL and Qwen2.5-VL checkpoints transformers wrote (a byte-level BPE tokenizer with Qwen's vision marks, a chat
template writing ``<|vision_start|><|video_pad|><|vision_end|>`` per video, a video_preprocessor_config.json): MP4s
written by PyAV, sent as base64 data: URLs; the answers equal transformers' greedy generate fed transformers' PyAV
reader's frames at Qwen2-VL's sampled indices (2 a second) made into pixel_values_videos / video_grid_thw /
second_per_grid_ts, alone, beside an image, streamed, while another request decodes on the batched engine, with beam
search and with logprobs; bad videos, too many, too long for the context and a model that takes no videos are 400s
naming messages."""
from __future__ import annotations

import json
import threading

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("jinja2")
av = pytest.importorskip("av", reason="PyAV decodes the video files: pip install 'forgegrad[video]'")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import png_image, running_app  # noqa: E402
from video_helpers import clip, data_url, encode, qwen_vl_video_checkpoint, reference_video_inputs  # noqa: E402


@pytest.fixture(scope="module", params=[False, True], ids=["qwen2_vl", "qwen2_5_vl"])
def served(request, tmp_path_factory):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path = tmp_path_factory.mktemp("qwen_vl_video_serve")
    hf, tok, marks = qwen_vl_video_checkpoint(path, request.param)
    with running_app(create_completions_app(GenerationServeConfig(str(path)))) as url:
        yield url, hf, tok, marks, request.param, tmp_path_factory.mktemp("reference")


def _want(hf, tok, ids, marks, video_kw, image_kw=None, max_tokens=8) -> str:
    _, pad, _, video = marks
    ids_t = torch.tensor([ids])
    kinds = torch.where(ids_t == pad, 1, torch.where(ids_t == video, 2, 0))
    with torch.no_grad():
        out = hf.generate(input_ids=ids_t, **video_kw, **(image_kw or {}), mm_token_type_ids=kinds,
                          max_new_tokens=max_tokens, do_sample=False)[0, len(ids):].tolist()
    return tok.decode(out[:out.index(1)] if 1 in out else out)


def _video_part(data: bytes) -> dict:
    return {"type": "video_url", "video_url": {"url": data_url(data)}}


def test_chat_with_videos_equals_transformers(served):
    url, hf, tok, marks, v2_5, ref_dir = served
    start, pad, end, video = marks
    first, second = encode(clip(0, 13), fps=10), encode(clip(5, 9, (36, 80)), fps=4)
    kw1, n1 = reference_video_inputs(first, 2.0, v2_5, ref_dir)
    kw2, n2 = reference_video_inputs(second, 2.0, v2_5, ref_dir)
    one = {"messages": [{"role": "user", "content": [_video_part(first), {"type": "text", "text": "say more"}]}],
           "max_tokens": 8, "temperature": 0}
    ids = tok.encode("<|im_start|>user\n") + [start] + [video] * n1 + [end] + tok.encode(
        "say more<|im_end|>\n<|im_start|>assistant\n")
    want_one = _want(hf, tok, ids, marks, kw1)
    assert len(want_one) >= 3, want_one  # text, not an end at once
    # an image, then two videos of other sizes and rates
    picture, picture_url = png_image(2, (50, 60))
    pixels = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)(
        [picture.convert("RGB")], return_tensors="pt")
    m = int(pixels["image_grid_thw"].prod()) // 4
    both = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "see "}, {"type": "image_url", "image_url": {"url": picture_url}},
        {"type": "text", "text": " and "}, _video_part(first), _video_part(second)]}], "max_tokens": 8,
        "temperature": 0}
    ids2 = tok.encode("<|im_start|>user\nsee ") + [start] + [pad] * m + [end] + tok.encode(" and ") + [start] + [
        video] * n1 + [end, start] + [video] * n2 + [end] + tok.encode("<|im_end|>\n<|im_start|>assistant\n")
    want_both = _want(hf, tok, ids2, marks, {k: torch.cat([kw1[k], kw2[k]]) for k in kw1}, pixels)
    with httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/chat/completions", json=one)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == want_one
        assert r.json()["usage"]["prompt_tokens"] == len(ids)
        r = c.post("/v1/chat/completions", json=both)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == want_both
        # streamed, while a text request decodes beside it on the engine
        answers = {}

        def text_request():
            answers["text"] = c.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 30, "temperature": 0,
                "ignore_eos": True})

        thread = threading.Thread(target=text_request)
        thread.start()
        with c.stream("POST", "/v1/chat/completions", json={**one, "stream": True}) as s:
            assert s.status_code == 200
            chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        thread.join()
        assert "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"]) == want_one
        assert answers["text"].status_code == 200, answers["text"].text


def test_bad_videos_are_400s_naming_messages(served):
    url = served[0]
    good = encode(clip(1, 6), fps=10)
    long = encode(clip(3, 200, (56, 56)), fps=1)  # 200 frames at 1 fps: all sampled, 100 groups of 4 tokens

    def body(*parts):
        return {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "hi"}]}], "max_tokens": 2}

    def video(url_text):
        return {"type": "video_url", "video_url": {"url": url_text}}

    cases = [(body(video("https://example.com/a.mp4")), "video URLs are not fetched"),
             (body(video("data:video/mp4,abc")), "must be base64"),
             (body(video("data:video/mp4;base64,@@@")), "not valid base64"),
             (body(video(data_url(b"\x89PNG\r\n\x1a\n" + bytes(40)))), "a PNG image, not a video container"),
             (body(video(data_url(good[:60]))), "MP4/MOV: FFmpeg could not open"),
             (body(*[video(data_url(good))] * 5), "5 videos; this server takes up to 4"),
             (body(video(data_url(long))), "maximum context length is 256 tokens, however the messages' videos "
                                           "alone make 400"),
             (body({"type": "video_url", "video_url": "x"}), "must be a string or a list of text parts")]
    with httpx.Client(base_url=url, timeout=120) as c:
        for payload, message in cases:
            r = c.post("/v1/chat/completions", json=payload)
            assert r.status_code == 400, (message, r.text)
            assert message in r.json()["error"]["message"] and r.json()["error"]["param"] == "messages", r.text
        assert c.post("/v1/chat/completions", json=body(video(data_url(good)))).status_code == 200


def test_videos_for_a_model_without_them_are_400s(tmp_path):
    """Gemma 3 takes images, not videos."""
    from hf_conformance import tiny_byte_gemma3_vlm

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    tiny_byte_gemma3_vlm(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
        "{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}{% endfor %}")
    body = {"messages": [{"role": "user", "content": [_video_part(encode(clip(1, 4), fps=10)),
                                                      {"type": "text", "text": "hi"}]}], "max_tokens": 2}
    with running_app(create_completions_app(GenerationServeConfig(str(tmp_path)))) as url:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text
    assert "Gemma3ForConditionalGeneration takes none (videos: Qwen2-VL, Qwen2.5-VL)" in r.json()["error"]["message"]


def test_beam_search_and_logprobs_with_a_video(served):
    """use_beam_search with a video: transformers' two beams, best first; a greedy answer's logprobs equal the
    log-softmax of transformers' logits over the prompt, its video and the answer's tokens."""
    import numpy as np
    url, hf, tok, marks, v2_5, ref_dir = served
    start, _, end, video = marks
    data = encode(clip(0, 13), fps=10)
    kw, n = reference_video_inputs(data, 2.0, v2_5, ref_dir)
    ids = tok.encode("<|im_start|>user\n") + [start] + [video] * n + [end] + tok.encode(
        "say more<|im_end|>\n<|im_start|>assistant\n")
    ids_t = torch.tensor([ids])
    kinds = (ids_t == video).long() * 2
    with torch.no_grad():
        seqs = hf.generate(input_ids=ids_t, **kw, mm_token_type_ids=kinds, max_new_tokens=6, do_sample=False,
                           num_beams=2, num_return_sequences=2, repetition_penalty=2.0)[:, len(ids):].tolist()
        greedy = hf.generate(input_ids=ids_t, **kw, mm_token_type_ids=kinds, max_new_tokens=6,
                             do_sample=False)[0, len(ids):].tolist()
    beams = [tok.decode(row[:row.index(1)] if 1 in row else row) for row in seqs]
    assert seqs[0] != seqs[1]  # two beams (their text may still read alike: byte-level pieces)
    tokens = greedy[:greedy.index(1)] if 1 in greedy else greedy
    seq = torch.tensor([ids + tokens])
    with torch.no_grad():
        logits = hf(input_ids=seq, **kw, mm_token_type_ids=(seq == video).long() * 2).logits[0].double()
    want = [float(torch.log_softmax(logits[len(ids) - 1 + i], -1)[t]) for i, t in enumerate(tokens)]
    messages = [{"role": "user", "content": [_video_part(data), {"type": "text", "text": "say more"}]}]
    with httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 6, "temperature": 0,
                                                 "repetition_penalty": 2.0, "n": 2, "use_beam_search": True})
        assert r.status_code == 200, r.text
        assert [ch["message"]["content"] for ch in r.json()["choices"]] == beams
        r = c.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 6, "temperature": 0,
                                                 "logprobs": True})
        assert r.status_code == 200, r.text
    got = [e["logprob"] for e in r.json()["choices"][0]["logprobs"]["content"]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_without_pyav_a_video_request_is_a_501(served, monkeypatch):
    import sys
    body = {"messages": [{"role": "user", "content": [_video_part(encode(clip(1, 4), fps=10)),
                                                      {"type": "text", "text": "hi"}]}], "max_tokens": 2}
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    r = httpx.post(served[0] + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 501, r.text
    assert 'pip install "forgegrad[video]"' in r.json()["error"]["message"]


def test_a_second_turn_about_the_same_video_reads_the_prefix_cache(tmp_path):
    """The prefix cache keys a video's blocks by its digest as an image's (serve/image_prefix.py): a chat's second turn
    re-sending the video reads the first turn's blocks past the video's last token (the rest prefilled as text at the
    video's rope delta), the same turn with another video reads none; both answers equal transformers'."""
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    hf, tok, marks = qwen_vl_video_checkpoint(tmp_path / "ckpt", True)
    start, _, end, video = marks
    first, other = encode(clip(0, 13), fps=10), encode(clip(7, 13), fps=10)
    kw_first, n = reference_video_inputs(first, 2.0, True, tmp_path)
    kw_other, n_other = reference_video_inputs(other, 2.0, True, tmp_path)
    assert n == n_other

    def ids_of(answer):
        return tok.encode("<|im_start|>user\n") + [start] + [video] * n + [end] + tok.encode(
            "say more<|im_end|>\n<|im_start|>assistant\n" + answer + "<|im_end|>\n<|im_start|>user\nand then?"
            "<|im_end|>\n<|im_start|>assistant\n")

    def body(data, answer):
        return {"messages": [{"role": "user", "content": [_video_part(data), {"type": "text", "text": "say more"}]},
                             {"role": "assistant", "content": answer},
                             {"role": "user", "content": "and then?"}], "max_tokens": 6, "temperature": 0}

    first_turn = {"messages": [{"role": "user", "content": [_video_part(first), {"type": "text", "text": "say more"}]}],
                  "max_tokens": 6, "temperature": 0}
    app = create_completions_app(GenerationServeConfig(str(tmp_path / "ckpt"), prefix_block=8))
    with running_app(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/chat/completions", json=first_turn)
        assert r.status_code == 200, r.text
        answer = r.json()["choices"][0]["message"]["content"]
        results = []
        for data, kw in ((first, kw_first), (other, kw_other)):
            r = c.post("/v1/chat/completions", json=body(data, answer))
            assert r.status_code == 200, r.text
            results.append((r.json()["choices"][0]["message"]["content"],
                            r.json()["usage"]["prompt_tokens_details"]["cached_tokens"],
                            _want(hf, tok, ids_of(answer), marks, kw, max_tokens=6)))
    video_end = len(tok.encode("<|im_start|>user\n")) + 1 + n
    (same, cached_same, want_same), (changed, cached_changed, want_changed) = results
    assert same == want_same and changed == want_changed
    assert cached_same >= video_end and cached_changed == 0
