"""``POST /v1/chat/completions`` with image_url parts on the real server for a Qwen2-VL checkpoint that transformers
wrote (a byte-level BPE tokenizer with Qwen's vision marks, a chat template writing
``<|vision_start|><|image_pad|><|vision_end|>`` per image, Qwen2-VL's image processor config): the answer equals
transformers' generate on the same prompt (its processor's pixel values and grids, M-RoPE positions), and a text-only
request still works."""
from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("jinja2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")
transformers.logging.set_verbosity_error()

from serve_helpers import QWEN_VL_MARKS, QWEN_VL_TEMPLATE, png_image, qwen_vl_tokenizer, running_app  # noqa: E402,E501

TEMPLATE, MARKS = QWEN_VL_TEMPLATE, QWEN_VL_MARKS

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2_vl_serve")
    tok, (start, pad, end) = qwen_vl_tokenizer()
    torch.manual_seed(0)
    text = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=40, vocab_size=300, max_position_embeddings=256, initializer_range=0.2,
                rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 2, 2]),
                eos_token_id=1)
    vision = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=4, mlp_ratio=2, patch_size=14, initializer_range=0.2)
    cfg = transformers.Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=pad,
                                     vision_start_token_id=start, vision_end_token_id=end)
    hf = transformers.Qwen2VLForConditionalGeneration(cfg).eval()
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "chat_template.jinja").write_text(TEMPLATE)
    processor = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    processor.save_pretrained(path)
    return path, hf, tok, processor


def test_chat_with_images_equals_transformers(checkpoint):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path, hf, tok, processor = checkpoint
    (first, first_url), (second, second_url) = png_image(0, (60, 90)), png_image(1, (70, 40))
    body_messages = [{"role": "user", "content": [
        {"type": "text", "text": "Compare "}, {"type": "image_url", "image_url": {"url": first_url}},
        {"type": "text", "text": " and "}, {"type": "image_url", "image_url": {"url": second_url}}]}]
    # transformers: the rendered prompt with each pad expanded to its image's merged patches
    pixels = processor([first.convert("RGB"), second.convert("RGB")], return_tensors="pt")
    start, pad, end = tok.convert_tokens_to_ids(MARKS)
    counts = (pixels["image_grid_thw"].prod(-1) // 4).tolist()
    ids = tok.encode("<|im_start|>user\nCompare ") + [start] + [pad] * counts[0] + [end] + tok.encode(" and ") + [
        start] + [pad] * counts[1] + [end] + tok.encode("<|im_end|>\n<|im_start|>assistant\n")
    ids_t = torch.tensor([ids])
    with torch.no_grad():
        out = hf.generate(input_ids=ids_t, **pixels, mm_token_type_ids=(ids_t == pad).long(), max_new_tokens=8,
                          do_sample=False)[0, len(ids):].tolist()
    want = tok.decode(out[:out.index(1)] if 1 in out else out)
    assert len(want) >= 4, want  # the answer is text, not an immediate end
    body = {"messages": body_messages, "max_tokens": 8, "temperature": 0}
    with running_app(create_completions_app(GenerationServeConfig(str(path)))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == want
        text = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                    "max_tokens": 4, "temperature": 0})
        assert text.status_code == 200, text.text


def test_beam_search_with_images_and_log_probabilities(checkpoint):
    """use_beam_search with images: transformers' two beams, best first, each with the log-softmax of transformers'
    logits over the prompt, its pixel values and that beam's tokens (the text after the images at their M-RoPE
    positions)."""
    import numpy as np

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path, hf, tok, processor = checkpoint
    first, first_url = png_image(0, (60, 90))
    pixels = processor([first.convert("RGB")], return_tensors="pt")
    start, pad, end = tok.convert_tokens_to_ids(MARKS)
    count = int(pixels["image_grid_thw"].prod(-1)[0]) // 4
    ids = tok.encode("<|im_start|>user\nDescribe ") + [start] + [pad] * count + [end] + tok.encode(
        "<|im_end|>\n<|im_start|>assistant\n")
    ids_t = torch.tensor([ids])
    with torch.no_grad():
        seqs = hf.generate(input_ids=ids_t, **pixels, mm_token_type_ids=(ids_t == pad).long(), max_new_tokens=6,
                           do_sample=False, num_beams=2, num_return_sequences=2, repetition_penalty=2.0)
    beams = []
    for row in seqs[:, len(ids):].tolist():
        tokens = row[:row.index(1)] if 1 in row else row
        seq = torch.tensor([ids + tokens])
        with torch.no_grad():
            logits = hf(input_ids=seq, **pixels, mm_token_type_ids=(seq == pad).long()).logits[0].double()
        beams.append((tok.decode(tokens), [float(torch.log_softmax(logits[len(ids) - 1 + i], -1)[t])
                                           for i, t in enumerate(tokens)]))
    assert beams[0][0] != beams[1][0]
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe "},
                                                      {"type": "image_url", "image_url": {"url": first_url}}]}],
            "max_tokens": 6, "temperature": 0, "repetition_penalty": 2.0, "n": 2, "use_beam_search": True,
            "logprobs": True}
    with running_app(create_completions_app(GenerationServeConfig(str(path)))) as url:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [ch["message"]["content"] for ch in choices] == [text for text, _ in beams]
    for ch, (_, want) in zip(choices, beams):
        np.testing.assert_allclose([e["logprob"] for e in ch["logprobs"]["content"]], want, rtol=1e-4, atol=1e-4)
