"""``POST /v1/chat/completions`` with two image_url parts on the real server for a LLaVA-NeXT checkpoint that
transformers wrote (a chat template writing ``<image>`` per image, LLaVA-NeXT's image processor config): the answer
equals transformers' generate on its own processor's prompt (each ``<image>`` expanded to its image's size-dependent
count, the tiles and image_sizes)."""
from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("jinja2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")
transformers.logging.set_verbosity_error()

from serve_helpers import png_image, running_app  # noqa: E402

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
            "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}"
            "{% endif %}{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


def test_chat_with_two_images_equals_transformers(tmp_path):
    from hf_conformance import chat_tokenizer

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    tok = chat_tokenizer(TEMPLATE)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image = tok.convert_tokens_to_ids("<image>")
    torch.manual_seed(0)
    text = dict(model_type="llama", num_hidden_layers=2, hidden_size=48, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=40, vocab_size=len(tok), max_position_embeddings=256,
                initializer_range=0.2, eos_token_id=1)
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, image_size=28, patch_size=7)
    cfg = transformers.LlavaNextConfig(text_config=text, vision_config=vision, image_token_index=image,
                                       image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]])
    hf = transformers.LlavaNextForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(TEMPLATE)
    improc = transformers.LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                     image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]])
    improc.save_pretrained(tmp_path)
    (first, first_url), (second, second_url) = png_image(0, (20, 90)), png_image(1, (60, 35))
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Compare "}, {"type": "image_url", "image_url": {"url": first_url}},
        {"type": "text", "text": " and "}, {"type": "image_url", "image_url": {"url": second_url}}]}]
    processor = transformers.LlavaNextProcessor(image_processor=improc, tokenizer=tok, patch_size=7,
                                                vision_feature_select_strategy="default", image_token="<image>",
                                                num_additional_image_tokens=1)
    parts = [{"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " and "},
             {"type": "image"}]
    rendered = tok.apply_chat_template([{"role": "user", "content": parts}], tokenize=False,
                                       add_generation_prompt=True)
    inputs = processor(text=[rendered],
                       images=[first.convert("RGB"), second.convert("RGB")], return_tensors="pt")
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
    want = tok.decode(out[:out.index(1)] if 1 in out else out)
    assert len(want) >= 4, want  # the answer is text, not an immediate end
    body = {"messages": messages, "max_tokens": 8, "temperature": 0}
    with running_app(create_completions_app(GenerationServeConfig(str(tmp_path)))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == want
