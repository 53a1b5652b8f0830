"""Tool calls in ``/v1/chat/completions``: the reader of the model's ``<tool_call>`` blocks (whole and streamed
in any pieces), tools and earlier calls rendered as transformers' ``apply_chat_template(..., tools=...)`` renders
them, and the real server answering with ``tool_calls`` from a tiny GPT-2 that transformers trained to call two
tools."""
from __future__ import annotations

import json
import random

import pytest

from forgegrad.serve.tool_calls import ToolCallReader, read_tool_calls

CALL_W = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
CALL_T = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'


def _calls(calls):
    return [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize("text,content,calls", [
    ("plain text, no call\n", "plain text, no call\n", []),
    ("Checking.\n" + CALL_W + "\n" + CALL_T, "Checking.", [("get_weather", {"city": "Paris"}),
                                                           ("get_time", {"zone": "CET"})]),
    (CALL_W, None, [("get_weather", {"city": "Paris"})]),
    # the output ended inside the last block: a call when what it holds parses
    ("a\n" + CALL_W[:-len("</tool_call>")], "a", [("get_weather", {"city": "Paris"})]),
    # blocks that are not calls stay text, as written
    ("x <tool_call>{not json}</tool_call> y", "x <tool_call>{not json}</tool_call> y", []),
    ('<tool_call>{"arguments": {}}</tool_call>', '<tool_call>{"arguments": {}}</tool_call>', []),
    ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', '<tool_call>{"name": "f", "arguments": [1]}</tool_call>',
     []),
    ("cut <tool_call>{\"name\": \"f\", \"argu", "cut <tool_call>{\"name\": \"f\", \"argu", []),
    # arguments as a JSON string (some models), no arguments, text between and after calls
    ('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>', None, [("f", {"a": 1})]),
    ('<tool_call>{"name": "g"}</tool_call>\n\nthen text\n' + CALL_T + "\n", "then text",
     [("g", {}), ("get_time", {"zone": "CET"})]),
    ("<tool_calls are plain text> and <tool_call", "<tool_calls are plain text> and <tool_call", []),
    ("é unicode " + CALL_W.replace("Paris", "Zürich"), "é unicode", [("get_weather", {"city": "Zürich"})]),
])
def test_reader_reads_whole_and_streamed_replies_alike(text, content, calls):
    _whole_and_streamed_alike(text, content, calls, "hermes")


M_W = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
L_W = '{"name": "get_weather", "parameters": {"city": "Paris"}}'


@pytest.mark.parametrize("fmt,text,content,calls", [
    ("mistral", "[TOOL_CALLS][" + M_W + ', {"name": "g", "arguments": {}}]', None,
     [("get_weather", {"city": "Paris"}), ("g", {})]),
    ("mistral", "Sure.\n[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]g[ARGS]{}", "Sure.",
     [("get_weather", {"city": "Paris"}), ("g", {})]),
    ("mistral", "plain [TOOL words\n", "plain [TOOL words\n", []),
    ("mistral", "x [TOOL_CALLS][{broken", "x [TOOL_CALLS][{broken", []),
    ("llama3_json", L_W, None, [("get_weather", {"city": "Paris"})]),
    ("llama3_json", "<|python_tag|>" + L_W + "; " + M_W.replace("Paris", "Rome"), None,
     [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]),
    ("llama3_json", "  The weather is sunny {not a call}", "  The weather is sunny {not a call}", []),
    ("llama3_json", L_W + " and some text", L_W + " and some text", []),
    ("llama3_json", '{"name": "f", "parameters": [1]}', '{"name": "f", "parameters": [1]}', []),
    ("llama3_json", "<|python", "<|python", []),
])
def test_mistral_and_llama_replies_whole_and_streamed_alike(fmt, text, content, calls):
    _whole_and_streamed_alike(text, content, calls, fmt)
    if calls:
        from forgegrad.serve.tool_calls import reader
        r = reader(fmt, parallel=False)
        r.feed(text)
        r.finish()
        assert _calls(r.calls) == calls[:1]


def _whole_and_streamed_alike(text, content, calls, fmt):
    from forgegrad.serve.tool_calls import reader
    got_content, got_calls = read_tool_calls(text, fmt=fmt)
    assert got_content == content and _calls(got_calls) == calls
    for c in got_calls:
        assert (len(c.id) == 9 and c.id.isalnum()) if fmt == "mistral" else c.id.startswith("call_")
    assert len({c.id for c in got_calls}) == len(got_calls)
    rng = random.Random(0)
    for trial in range(60):  # streamed in random pieces (one character at a time first): the same reply
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12)))) if trial else \
            list(range(1, len(text)))
        r, pieces, streamed = reader(fmt), [], []
        for a, b in zip([0] + cuts, cuts + [len(text)]):
            piece, new = r.feed(text[a:b])
            pieces.append(piece)
            streamed += new
        piece, new = r.finish()
        pieces.append(piece)
        streamed += new
        whole = "".join(pieces)
        assert (whole or (None if streamed else "")) == content, (trial, cuts)
        assert _calls(streamed) == calls


def test_reader_holds_back_only_what_may_still_become_a_call():
    reader = ToolCallReader()
    assert reader.feed("Sure. <tool") == ("Sure.", [])  # " <tool" may open a block
    assert reader.feed("box is here ") == (" <toolbox is here", [])  # it did not; the trailing space waits
    assert reader.feed("<tool_call>") == ("", [])  # the space borders a block: dropped if it is a call
    content, calls = reader.feed('{"name": "f", "arguments": {}}</tool_call>')
    assert content == "" and _calls(calls) == [("f", {})]
    assert reader.finish() == ("", [])
    only_first = ToolCallReader(parallel=False)
    only_first.feed(CALL_W + CALL_T)
    assert _calls(only_first.calls) == [("get_weather", {"city": "Paris"})]


# Qwen2.5's chat template (tools in the system turn, calls as <tool_call> blocks, results as <tool_response>)
QWEN25 = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}"
    "{{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided "
    "with function signatures within <tools></tools> XML tags:\\n<tools>\" }}{%- for tool in tools %}{{- \"\\n\" }}"
    "{{- tool | tojson }}{%- endfor %}{{- \"\\n</tools>\\n\\nFor each function call, return a json object with "
    "function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": "
    "<function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}{%- else %}"
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- for message in messages %}{%- if (message.role == \"user\") or (message.role == \"system\" and "
    "not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}{{- '<|im_start|>' + "
    "message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- elif message.role == \"assistant\" %}"
    "{{- '<|im_start|>' + message.role }}{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}{%- if tool_call.function is defined %}"
    "{%- set tool_call = tool_call.function %}{%- endif %}{{- '\\n<tool_call>\\n{\"name\": \"' }}"
    "{{- tool_call.name }}{{- '\", \"arguments\": ' }}{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}{%- elif message.role == \"tool\" %}{%- if (loop.index0 == 0) or "
    "(messages[loop.index0 - 1].role != \"tool\") %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}{%- if loop.last or "
    "(messages[loop.index0 + 1].role != \"tool\") %}{{- '<|im_end|>\\n' }}{%- endif %}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
# the tiny served model's: the same format, short enough for its 512 positions
TINY = ("{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t['function']['name'] }} {% endfor %}</tools>"
        "<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m.tool_calls %}"
        "{% for c in m.tool_calls %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", \"arguments\": "
        "{{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}{% elif m.role == 'tool' %}<tool_response>"
        "{{ m.content }}</tool_response>{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Llama 3.1's shape: tools in the last user turn, earlier calls as <|python_tag|> JSON with "parameters", tool
# results in the ipython role
LLAMA31 = ("{{ bos_token }}{% if tools %}<|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython<|eot_id|>"
           "{% endif %}{% for m in messages %}{% if m.role == 'assistant' and m.tool_calls %}<|start_header_id|>"
           "assistant<|end_header_id|>\n\n{% for c in m.tool_calls %}<|python_tag|>{\"name\": \""
           "{{ c.function.name }}\", \"parameters\": {{ c.function.arguments | tojson }}}{% endfor %}<|eot_id|>"
           "{% elif m.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
           "{% else %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{% if tools and m.role == 'user' and "
           "loop.last %}Use: {% for t in tools %}{{ t.function.name }} {% endfor %}\n{% endif %}{{ m.content }}"
           "<|eot_id|>{% endif %}{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
           "<|end_header_id|>\n\n{% endif %}")
# Mistral's shape: tools before the last [INST], calls as a [TOOL_CALLS] JSON list whose ids must be 9 characters
MISTRAL = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{% if tools and loop.last %}"
           "[AVAILABLE_TOOLS]{% for t in tools %}{{ t.function.name }} {% endfor %}[/AVAILABLE_TOOLS]{% endif %}"
           "[INST]{{ m.content }}[/INST]{% elif m.role == 'assistant' and m.tool_calls %}[TOOL_CALLS][{% for c in "
           "m.tool_calls %}{% if c.id | length != 9 %}{{ raise_exception('Tool call IDs should be alphanumeric "
           "strings with length 9!') }}{% endif %}{\"name\": \"{{ c.function.name }}\", \"arguments\": "
           "{{ c.function.arguments | tojson }}, \"id\": \"{{ c.id }}\"}{% if not loop.last %}, {% endif %}"
           "{% endfor %}]{{ eos_token }}{% elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]"
           "{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {
             "zone": {"type": "string"}}}}}]
ASK = [{"role": "user", "content": "weather in Paris?"}]
REPLY = "Checking.\n" + CALL_W + "\n" + CALL_T
# the conversation after the calls, as an OpenAI client sends it (arguments as JSON strings)
FOLLOW_UP = ASK + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "CET"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "14:05"}]}]


def _as_transformers_takes_them(messages):
    """OpenAI's messages as transformers' chat templates document them (arguments as objects)."""
    out = []
    for m in messages:
        m = dict(m, content="".join(p["text"] for p in m["content"]) if isinstance(m["content"], list)
                 else m["content"] or "")
        if "tool_calls" in m:
            m["tool_calls"] = [dict(c, function=dict(c["function"], arguments=json.loads(c["function"]["arguments"])))
                               for c in m["tool_calls"]]
        out.append(m)
    return out


@pytest.mark.parametrize("template", [QWEN25, TINY, LLAMA31])
def test_tools_and_earlier_calls_render_as_apply_chat_template(tmp_path, template):
    pytest.importorskip("jinja2")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from hf_conformance import chat_tokenizer

    from forgegrad.models.hf.chat_template import load_chat_template
    from forgegrad.serve.chat_request import messages
    fast = chat_tokenizer(template)
    fast.save_pretrained(tmp_path)
    ours = load_chat_template(tmp_path)
    transformers.logging.set_verbosity_error()
    for conversation in (ASK, FOLLOW_UP, [{"role": "system", "content": "Be terse."}] + FOLLOW_UP):
        for tools in (TOOLS, None):
            want = fast.apply_chat_template(_as_transformers_takes_them(conversation), tools=tools, tokenize=False,
                                            add_generation_prompt=True)
            assert ours.render(messages(conversation), tools=tools) == want


def _trained(path, template, reply_text):
    """A 2-layer GPT-2 that transformers trained (torch, seeded) to answer ASK with TOOLS offered, rendered with
    ``template``, by ``reply_text``, with a tokenizer carrying the template; saved at ``path``."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    pytest.importorskip("jinja2")
    from hf_conformance import chat_tokenizer
    transformers.logging.set_verbosity_error()
    tok = chat_tokenizer(template)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    text = tok.apply_chat_template(ASK, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    prompt, both = (tok.encode(t, add_special_tokens=False) for t in (text, text + reply_text))
    assert both[:len(prompt)] == prompt
    reply = both[len(prompt):] + [end]  # as they follow the prompt (no space in front, as alone)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=512,
                                  eos_token_id=end, bos_token_id=end)
    hf = transformers.GPT2LMHeadModel(cfg)
    ids = torch.tensor([prompt + reply])
    labels = ids.clone()
    labels[0, :len(prompt)] = -100  # learn the reply only
    opt = torch.optim.Adam(hf.parameters(), lr=3e-3)
    for _ in range(400):
        opt.zero_grad()
        loss = hf(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        if loss.item() < 2e-3:
            break
    hf.eval()
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=len(reply) + 4, do_sample=False, pad_token_id=end)
    assert tok.decode(out[0, len(prompt):], skip_special_tokens=True) == reply_text, "the tiny model did not learn it"
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tool_checkpoint(tmp_path_factory):
    """The tiny model trained on the Hermes template TINY to answer with REPLY: some text and two calls."""
    return _trained(tmp_path_factory.mktemp("tools") / "tiny-tools", TINY, REPLY)


def _chunks(client, body):
    with client.stream("POST", "/v1/chat/completions", json=dict(body, stream=True)) as s:
        assert s.status_code == 200
        return [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]


def test_served_model_calls_tools(tool_checkpoint):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from serve_helpers import running_app

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    body = {"messages": ASK, "tools": TOOLS, "temperature": 0, "max_tokens": 300}
    want = [{"name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"name": "get_time", "arguments": '{"zone": "CET"}'}]
    with running_app(create_completions_app(GenerationServeConfig(str(tool_checkpoint)))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        got = c.post("/v1/chat/completions", json=body).json()
        choice = got["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        message = choice["message"]
        assert message["role"] == "assistant" and message["content"] == "Checking."
        assert [call["function"] for call in message["tool_calls"]] == want
        assert all(call["type"] == "function" and call["id"].startswith("call_") for call in message["tool_calls"])
        # streamed: the content, then each call as one delta once its block closes, then the reason
        events = _chunks(c, body)
        deltas = [e["choices"][0]["delta"] for e in events]
        assert "".join(d.get("content", "") for d in deltas) == "Checking."
        calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
        assert [(k["index"], k["function"]) for k in calls] == [(0, want[0]), (1, want[1])]
        assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
        # parallel_tool_calls false: the first call only; tool_choice none: the text as the model wrote it
        first = c.post("/v1/chat/completions", json=dict(body, parallel_tool_calls=False)).json()["choices"][0]
        assert [call["function"] for call in first["message"]["tool_calls"]] == want[:1]
        assert [k["function"] for e in _chunks(c, dict(body, parallel_tool_calls=False))
                for k in e["choices"][0]["delta"].get("tool_calls", [])] == want[:1]
        plain = c.post("/v1/chat/completions", json=dict(body, tool_choice="none")).json()["choices"][0]
        assert plain["message"] == {"role": "assistant", "content": REPLY} and plain["finish_reason"] == "stop"
        # max_tokens cutting the second call: the first is a call, the cut one text, and the reason "length"
        fast = pytest.importorskip("transformers").AutoTokenizer.from_pretrained(tool_checkpoint)
        text = fast.apply_chat_template(ASK, tools=TOOLS, tokenize=False, add_generation_prompt=True)
        upto = len(fast.encode(text + REPLY[:REPLY.index("get_time")], add_special_tokens=False)) - len(
            fast.encode(text, add_special_tokens=False))
        cut = c.post("/v1/chat/completions", json=dict(body, max_tokens=upto)).json()["choices"][0]
        assert cut["finish_reason"] == "length"
        assert [call["function"] for call in cut["message"].get("tool_calls", [])] == want[:1]
        assert cut["message"]["content"].startswith("Checking.<tool_call>")
        # the conversation after the calls: its prompt is transformers' rendering of it
        r = c.post("/v1/chat/completions", json=dict(body, messages=FOLLOW_UP, max_tokens=4))
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == len(fast.encode(fast.apply_chat_template(
            _as_transformers_takes_them(FOLLOW_UP), tools=TOOLS, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False))


BAD = [
    ({"tools": {"type": "function"}}, "tools", "a list of"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools", "letters, digits"),
    ({"tools": TOOLS + TOOLS[:1]}, "tools", "two tools are named 'get_weather'"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}, "tools", "JSON schema"),
    ({"tool_choice": {"type": "function", "function": {"name": "get_date"}}}, "tool_choice", "not among the tools"),
    ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice", '"function": {"name": ...}'),
    ({"tool_choice": "sometimes"}, "tool_choice", '"auto", "none", "required"'),
    ({"tools": None, "tool_choice": "auto"}, "tool_choice", "needs tools"),
    ({"parallel_tool_calls": 1}, "parallel_tool_calls", "true or false"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages", "tool_call_id"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages", "only assistant"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}, "messages",
     "JSON object as a string"),
    ({"messages": [{"role": "assistant", "content": None}]}, "messages", "must be a string"),
]


def test_bad_tool_requests_get_400_naming_the_field(tool_checkpoint):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from serve_helpers import running_app

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    with running_app(create_completions_app(GenerationServeConfig(str(tool_checkpoint)))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        for change, param, message in BAD:
            r = c.post("/v1/chat/completions", json=dict({"messages": ASK, "tools": TOOLS, "max_tokens": 2}, **change))
            error = r.json()["error"]
            assert r.status_code == 400 and error["param"] == param and message in error["message"], (change, r.text)


def test_the_format_comes_from_the_template():
    from forgegrad.serve.tool_calls import tool_format
    assert "does not render tools" in tool_format("{% for m in messages %}{{ m.content }}{% endfor %}")[1]
    assert "format forgegrad does not read" in tool_format("{% if tools %}<function_calls>{% endif %}")[1]
    assert tool_format(QWEN25) == ("hermes", None) and tool_format(TINY) == ("hermes", None)
    assert tool_format(LLAMA31) == ("llama3_json", None) and tool_format(MISTRAL) == ("mistral", None)


@pytest.mark.parametrize("fmt,template,reply,content", [
    ("mistral", MISTRAL, 'Checking.\n[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
                         '{"name": "get_time", "arguments": {"zone": "CET"}}]', "Checking."),
    ("llama3_json", LLAMA31, '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
                             '{"name": "get_time", "parameters": {"zone": "CET"}}', None)])
def test_mistral_and_llama_models_call_tools(tmp_path, fmt, template, reply, content):
    """A tiny model trained to call two tools in its template's format: the calls, streamed or not, and the
    conversation that sends them back (Mistral's template refuses ids that are not 9 characters)."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from serve_helpers import running_app

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    path = _trained(tmp_path / fmt, template, reply)
    body = {"messages": ASK, "tools": TOOLS, "temperature": 0, "max_tokens": 300}
    want = [{"name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"name": "get_time", "arguments": '{"zone": "CET"}'}]
    with running_app(create_completions_app(GenerationServeConfig(str(path)))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        choice = c.post("/v1/chat/completions", json=body).json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == content
        calls = choice["message"]["tool_calls"]
        assert [k["function"] for k in calls] == want
        deltas = [e["choices"][0]["delta"] for e in _chunks(c, body)]
        assert "".join(d.get("content", "") for d in deltas) == (content or "")
        assert [d["tool_calls"][0]["function"] for d in deltas if "tool_calls" in d] == want
        follow_up = ASK + [{"role": "assistant", "content": None, "tool_calls": calls},
                           {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
                           {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:05"}]
        r = c.post("/v1/chat/completions", json=dict(body, messages=follow_up, max_tokens=3))
        assert r.status_code == 200, r.text
        plain = c.post("/v1/chat/completions", json=dict(body, tool_choice="none")).json()["choices"][0]
        assert plain["message"] == {"role": "assistant", "content": reply}
