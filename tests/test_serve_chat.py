"""Chat templates as transformers renders them, and ``/v1/chat/completions`` on the real server against
``generate`` on the rendered prompt, with a tokenizer (special tokens, chat template) that transformers
itself saved."""
from __future__ import annotations

import json
import shutil

import pytest

from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf.chat_template import ChatTemplate, load_chat_template
from forgegrad.models.hf.tokenizer import load_tokenizer

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("jinja2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

from hf_conformance import chat_tokenizer  # noqa: E402
from serve_helpers import running_app  # noqa: E402

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Llama-3-like: the bos token, a system default, roles checked with raise_exception, loop controls
STRICT = ("{{ bos_token }}{% if messages[0]['role'] != 'system' %}<|im_start|>system\nBe brief.<|im_end|>\n{% endif %}"
          "{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
          "{{ raise_exception('system messages go first') }}{% endif %}"
          "{% if m['content'] == '' %}{% continue %}{% endif %}"
          "<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MESSAGES = [{"role": "system", "content": "You are a tiny model."}, {"role": "user", "content": "hello world"},
            {"role": "assistant", "content": "a tiny corpus"}, {"role": "user", "content": " for a tiny tokenizer "}]


@pytest.fixture(scope="module")
def chat_checkpoint(tmp_path_factory):
    from hf_conformance import tiny_chat_gpt2
    return tiny_chat_gpt2(tmp_path_factory.mktemp("chat") / "tiny-chat", CHATML)


@pytest.mark.parametrize("template", [CHATML, STRICT])
def test_rendered_prompt_and_tokens_are_apply_chat_template_s(tmp_path, template):
    fast = chat_tokenizer(template)
    fast.save_pretrained(tmp_path)
    ours = load_chat_template(tmp_path)
    for messages in (MESSAGES, MESSAGES[1:2], [{"role": "user", "content": ""}, {"role": "user", "content": "hi"}]):
        for gen_prompt in (True, False):
            want = fast.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)
            assert ours.render(messages, add_generation_prompt=gen_prompt) == want
        ids = fast.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert load_tokenizer(tmp_path, 300).encode(ours.render(messages)) == list(ids)


def test_templates_from_tokenizer_config_and_their_errors(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": STRICT}],
         "bos_token": {"content": "<s>", "lstrip": False}}))
    t = load_chat_template(tmp_path)
    assert t.render([{"role": "user", "content": "hi"}]).startswith("<s><|im_start|>system\nBe brief.")
    with pytest.raises(ValueError, match="system messages go first"):
        t.render([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    assert load_chat_template(tmp_path) is None
    with pytest.raises(ValueError, match="does not parse"):
        ChatTemplate("{% for m in messages %}")


def test_templates_run_in_the_sandbox():
    """A checkpoint's template is untrusted: no way out to Python's internals."""
    for escape in ("{{ ''.__class__.__mro__[1].__subclasses__() }}",
                   "{{ messages.__class__.__init__.__globals__ }}",
                   "{% set x = messages.append(1) %}{{ messages }}"):
        with pytest.raises(ValueError):
            ChatTemplate(escape).render([{"role": "user", "content": "hi"}])


def _direct(path, prompt_text, n, eos):
    tok = load_tokenizer(path, 300)
    ids = tok.encode(prompt_text)
    new = [int(t) for t in generate(from_pretrained(path), [ids], max_new_tokens=n)[0, len(ids):]]
    if eos in new:
        return tok.decode(new[:new.index(eos)]), "stop", len(ids)
    return tok.decode(new), "length", len(ids)


def test_chat_completion_is_generate_on_the_rendered_prompt(chat_checkpoint):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    fast = transformers.AutoTokenizer.from_pretrained(chat_checkpoint)
    prompt = fast.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    text, finish, n_prompt = _direct(chat_checkpoint, prompt, 24, fast.convert_tokens_to_ids("<|im_end|>"))
    body = {"messages": MESSAGES, "max_completion_tokens": 24, "temperature": 0}
    with running_app(create_completions_app(GenerationServeConfig(str(chat_checkpoint)))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["object"] == "chat.completion" and got["id"].startswith("chatcmpl-")
        assert got["choices"] == [{"index": 0, "message": {"role": "assistant", "content": text},
                                   "finish_reason": finish, "logprobs": None}]
        assert got["usage"]["prompt_tokens"] == n_prompt
        # developer is OpenAI's newer name for system; content may come as text parts
        parts = [{"role": "developer", "content": [{"type": "text", "text": "You are a "},
                                                   {"type": "text", "text": "tiny model."}]}] + MESSAGES[1:]
        same = c.post("/v1/chat/completions", json=dict(body, messages=parts)).json()
        assert same["choices"][0]["message"]["content"] == text
        with c.stream("POST", "/v1/chat/completions", json=dict(body, stream=True)) as s:
            events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        assert all(e["object"] == "chat.completion.chunk" for e in events)
        assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == text
        assert events[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None}
        # the penalties apply to chat too: banning the answer's first token changes it
        first = load_tokenizer(chat_checkpoint, 300).encode(text)[0]
        banned = c.post("/v1/chat/completions", json=dict(body, logit_bias={str(first): -100}, presence_penalty=0.5))
        assert banned.status_code == 200, banned.text
        assert banned.json()["choices"][0]["message"]["content"] != text
        two = c.post("/v1/chat/completions", json=dict(body, n=2)).json()  # greedy: both choices are the text
        assert [(ch["index"], ch["message"]["content"]) for ch in two["choices"]] == [(0, text), (1, text)]
        assert two["usage"]["prompt_tokens"] == n_prompt
        for bad, param in (({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
                           ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
                           ({"messages": []}, "messages"), ({}, "messages"),
                           ({"messages": MESSAGES, "tools": [{"type": "function"}]}, "tools"),
                           ({"messages": MESSAGES, "max_tokens": 3, "max_completion_tokens": 4}, "max_tokens"),
                           ({"messages": MESSAGES, "prompt": "x"}, "prompt")):
            r = c.post("/v1/chat/completions", json=bad)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, (bad, r.text)


def test_chat_needs_a_template_and_completions_still_work_without(chat_checkpoint, tmp_path):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path = tmp_path / "no-template"
    shutil.copytree(chat_checkpoint, path)
    (path / "chat_template.jinja").unlink()
    with running_app(create_completions_app(GenerationServeConfig(str(path)))) as url:
        r = httpx.post(url + "/v1/chat/completions", json={"messages": MESSAGES}, timeout=60)
        assert r.status_code == 400 and "no chat template" in r.json()["error"]["message"]
        assert httpx.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 2},
                          timeout=60).status_code == 200


def test_chat_logprobs_are_transformers_log_softmax(chat_checkpoint):
    import numpy as np

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    fast = transformers.AutoTokenizer.from_pretrained(chat_checkpoint)
    prompt = fast.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt_ids = fast.encode(prompt, add_special_tokens=False)
    body = {"messages": MESSAGES, "max_completion_tokens": 8, "temperature": 0, "logprobs": True, "top_logprobs": 3}
    with running_app(create_completions_app(GenerationServeConfig(str(chat_checkpoint)))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        got = c.post("/v1/chat/completions", json=body).json()["choices"][0]
        bare = c.post("/v1/chat/completions", json=dict(body, top_logprobs=None)).json()["choices"][0]
        for bad, param in (({"top_logprobs": 21}, "top_logprobs"), ({"logprobs": False}, "top_logprobs"),
                           ({"stream": True, "top_logprobs": -1}, "top_logprobs"), ({"logprobs": 1}, "logprobs")):
            r = c.post("/v1/chat/completions", json=dict(body, **bad))
            assert r.status_code == 400 and r.json()["error"]["param"] == param, (bad, r.text)
    content = got["logprobs"]["content"]
    hf = transformers.GPT2LMHeadModel.from_pretrained(chat_checkpoint).eval()
    # the served tokens, re-derived greedily from transformers itself: their log-softmax at each step
    seq = list(prompt_ids)
    with torch.no_grad():
        for entry in content:
            logp = torch.log_softmax(hf(torch.tensor([seq])).logits[0, -1].double(), -1).numpy()
            best = np.argsort(-logp, kind="stable")[:3]
            assert entry["logprob"] == pytest.approx(logp[best[0]], abs=1e-4)
            assert [e["logprob"] for e in entry["top_logprobs"]] == pytest.approx(list(logp[best]), abs=1e-4)
            assert entry["token"] == fast.decode([int(best[0])]) == entry["top_logprobs"][0]["token"]
            assert entry["bytes"] == list(entry["token"].encode())
            seq.append(int(best[0]))
    assert len(content) == 8 or content[-1]["token"] == "<|im_end|>"
    # the decode steps' numbers; the second request's prompt and keys came from the prefix cache: float32 rounding
    assert [e["logprob"] for e in bare["logprobs"]["content"]] == pytest.approx([e["logprob"] for e in content],
                                                                                abs=1e-5)
    assert all(e["top_logprobs"] == [] for e in bare["logprobs"]["content"])
