"""The body of ``POST /v1/chat/completions`` (OpenAI's chat API), checked field by field: the messages, the tools, and
the fields it shares with completions (completion_request.py).

Honoured: messages (roles system / developer (read as system) / user / assistant / tool; content as a string or text
parts, image_url parts (base64 data: URLs) for an image-text model and vLLM's video_url parts for Qwen2-VL /
Qwen2.5-VL; an assistant's earlier ``tool_calls`` and the
``tool`` results that answer them), max_tokens / max_completion_tokens, logprobs and top_logprobs, tools, tool_choice
("auto", "none", "required" or a named function: the last two decode constrained to the template's call format,
structured.py), parallel_tool_calls, response_format (text, json_object, json_schema) or vLLM's guided_json /
guided_regex / guided_choice / guided_grammar (structured.py), and the shared fields (vLLM's min_tokens, bad_words,
stop_token_ids, allowed_token_ids, ignore_eos and include_stop_str_in_output among them).

The messages go to the chat template as transformers' ``apply_chat_template`` takes them: an earlier call's
``arguments`` (OpenAI sends a JSON string) as the object it encodes, a null content as "".
"""
from __future__ import annotations

import json
from typing import List, Optional

from .beam_completions import beam_settings
from .completion_request import (BEAM_FIELDS, PENALTY_FIELDS, VLLM_FIELDS, CompletionError, CompletionRequest,
                                 _lone_surrogate, bad, flag, is_int, request_object, sampling)
from .structured import forced_tools, request_grammar
from .tool_calls import MAX_TOOLS, TOOL_NAME

MAX_TOP_LOGPROBS = 20  # as OpenAI's
_DEFAULT_ONLY: dict = {}
_FIELDS = ({"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
            "seed", "stop", "stream", "stream_options", "user", "n", "logprobs", "top_logprobs", "tools", "tool_choice",
            "parallel_tool_calls", "response_format", "guided_json", "guided_regex", "guided_choice",
            "guided_grammar"} | PENALTY_FIELDS | VLLM_FIELDS | BEAM_FIELDS)
ROLES = ("system", "developer", "user", "assistant", "tool")


MAX_IMAGES = 8  # per request: each is decoded, resized and run through the vision tower
MAX_VIDEOS = 4  # per request: each is decoded (every frame up to the last one sampled) and its frames run through it


def _text(content, where: str, nullable: bool = False):
    """A message's content: a string or a list of text parts (null allowed where ``nullable``: ""); a list with
    image parts (``{"type": "image_url", "image_url": {"url": "data:image/...;base64,..."}}``) or video parts (vLLM's
    ``{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}}``) stays a list of transformers'
    content parts, ``{"type": "image", "data": url}``, ``{"type": "video", "data": url}`` and ``{"type": "text",
    "text": ...}`` (the server takes the data out before the template sees them)."""
    if content is None and nullable:
        return ""
    expected = ("a string or a list of text parts (and image_url parts {\"type\": \"image_url\", \"image_url\": "
                "{\"url\": \"data:image/...;base64,...\"}} for a model that takes images, video_url parts "
                "{\"type\": \"video_url\", \"video_url\": {\"url\": \"data:video/mp4;base64,...\"}} for Qwen2-VL)")
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = []
        for p in content:
            if p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append({"type": "text", "text": p["text"]})
            elif p.get("type") == "image_url" and isinstance(p.get("image_url"), dict) and isinstance(
                    p["image_url"].get("url"), str):
                parts.append({"type": "image", "data": p["image_url"]["url"]})
            elif p.get("type") == "video_url" and isinstance(p.get("video_url"), dict) and isinstance(
                    p["video_url"].get("url"), str):
                parts.append({"type": "video", "data": p["video_url"]["url"]})
            else:
                raise CompletionError(400, f"{where}.content must be {expected}", "messages")
        if all(p["type"] == "text" for p in parts):
            return "".join(p["text"] for p in parts)
        return parts
    if not isinstance(content, str):
        raise CompletionError(400, f"{where}.content must be {expected}", "messages")
    return content


def take_images(messages: List[dict], kind: str = "image") -> List[str]:
    """The image (``kind`` "video": video) parts' data URLs, in order, taken out of the messages (the template sees
    ``{"type": "image"}``, ``{"type": "video"}``)."""
    images = []
    for m in messages:
        if isinstance(m.get("content"), list):
            for part in m["content"]:
                if part["type"] == kind:
                    images.append(part.pop("data"))
    most = MAX_IMAGES if kind == "image" else MAX_VIDEOS
    if len(images) > most:
        raise CompletionError(400, f"messages hold {len(images)} {kind}s; this server takes up to {most} per "
                                   "request", "messages")
    return images


def _earlier_calls(value, where: str) -> List[dict]:
    """An assistant message's tool_calls, their arguments decoded for the template."""
    expected = 'a list of {"id": ..., "type": "function", "function": {"name": ..., "arguments": "{...}"}}'
    if not isinstance(value, list) or not value:
        raise CompletionError(400, f"{where}.tool_calls must be {expected}", "messages")
    calls = []
    for j, c in enumerate(value):
        fn = c.get("function") if isinstance(c, dict) else None
        if (not isinstance(fn, dict) or c.get("type", "function") != "function" or not isinstance(c.get("id"), str)
                or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str)):
            raise CompletionError(400, f"{where}.tool_calls[{j}] must be {expected[10:-1]}", "messages")
        try:
            args = json.loads(fn["arguments"])
        except (ValueError, RecursionError):  # (RecursionError: nested too deep)
            args = None
        if not isinstance(args, dict) or _lone_surrogate(args):
            raise CompletionError(400, f"{where}.tool_calls[{j}].function.arguments must be a JSON object as a "
                                       f"string, got {fn['arguments'][:80]!r}", "messages")
        calls.append({"id": c["id"], "type": "function", "function": {"name": fn["name"], "arguments": args}})
    return calls


def messages(value) -> List[dict]:
    """The chat messages as the template takes them."""
    if not isinstance(value, list) or not value:
        raise bad("messages", "a non-empty list of {\"role\": ..., \"content\": ...} objects", value)
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise CompletionError(400, f"{where} must be an object with a role in {', '.join(ROLES)}", "messages")
        role = "system" if m["role"] == "developer" else m["role"]
        calls = m.get("tool_calls")
        if calls is not None and role != "assistant":
            raise CompletionError(400, f"{where}: only assistant messages have tool_calls", "messages")
        msg = {"role": role, "content": _text(m.get("content"), where, nullable=calls is not None)}
        if calls is not None:
            msg["tool_calls"] = _earlier_calls(calls, where)
        if role == "tool":
            if not isinstance(m.get("tool_call_id"), str):
                raise CompletionError(400, f"{where}: a tool message needs tool_call_id (the id of the call it "
                                           "answers)", "messages")
            msg["tool_call_id"] = m["tool_call_id"]
            if isinstance(m.get("name"), str):
                msg["name"] = m["name"]
        out.append(msg)
    return out


def tools(value) -> Optional[List[dict]]:
    """The request's tools (None for none), each ``{"type": "function", "function": {"name", "description",
    "parameters", ...}}``, passed to the template as given."""
    if value is None or value == []:
        return None
    expected = (f'a list of up to {MAX_TOOLS} {{"type": "function", "function": {{"name": ..., "description": ..., '
                f'"parameters": {{JSON schema}}}}}}')
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise bad("tools", expected, value)
    names = set()
    for i, t in enumerate(value):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or t.get("type") != "function":
            raise bad("tools", expected, t)
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise CompletionError(400, f"tools[{i}].function.name must be 1-64 letters, digits, _ or -, got "
                                       f"{json.dumps(name)[:80]}", "tools")
        if name in names:
            raise CompletionError(400, f"tools[{i}]: two tools are named {name!r}", "tools")
        names.add(name)
        if fn.get("description") is not None and not isinstance(fn["description"], str):
            raise CompletionError(400, f"tools[{i}].function.description must be a string", "tools")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise CompletionError(400, f"tools[{i}].function.parameters must be a JSON schema object", "tools")
    return value


def _tool_choice(value, offered: bool) -> bool:
    """Whether the model's calls are read ("auto", the default with tools; "required" and a named function) or not
    ("none")."""
    if value is None:
        return offered
    if value == "none":
        return False
    if value in ("auto", "required") or (isinstance(value, dict) and value.get("type") == "function"):
        if not offered:
            raise CompletionError(400, f"tool_choice {json.dumps(value)[:80]} needs tools", "tool_choice")
        return True
    raise bad("tool_choice", '"auto", "none", "required" or {"type": "function", "function": {"name": ...}}', value)


def parse_chat(body: bytes, served_name: str) -> CompletionRequest:
    """A chat completions request (``prompts`` left empty: the server renders the messages)."""
    obj = request_object(body, _FIELDS, _DEFAULT_ONLY)
    if "messages" not in obj:
        raise CompletionError(400, "messages is required", "messages")
    if obj.get("max_completion_tokens") is not None:  # OpenAI's newer name wins
        if obj.get("max_tokens") is not None and obj["max_tokens"] != obj["max_completion_tokens"]:
            raise CompletionError(400, "max_tokens and max_completion_tokens disagree: give one", "max_tokens")
        obj = dict(obj, max_tokens=obj["max_completion_tokens"])
    req = sampling(obj, CompletionRequest([], messages=messages(obj["messages"])), served_name)
    req.images = take_images(req.messages)
    req.videos = take_images(req.messages, "video")
    # logprobs: true asks for each token's log-probability, top_logprobs for that many alternatives too
    top = obj.get("top_logprobs")
    if top is not None and (not is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise bad("top_logprobs", f"an integer in [0, {MAX_TOP_LOGPROBS}] or null", top)
    if flag(obj, "logprobs"):
        req.logprobs = int(top or 0)
    elif top is not None:
        raise CompletionError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    req.tools = tools(obj.get("tools"))
    req.read_tool_calls = _tool_choice(obj.get("tool_choice"), req.tools is not None)
    v = obj.get("parallel_tool_calls")
    if v is not None and not isinstance(v, bool):
        raise bad("parallel_tool_calls", "true or false", v)
    req.parallel_tool_calls = v is not False
    req.forced_tools = forced_tools(obj.get("tool_choice"), req.tools)
    beam_settings(obj, req)  # vLLM's use_beam_search: n beams
    req.grammar, req.grammar_param = request_grammar(obj)
    if req.grammar is not None and req.forced_tools is not None:
        raise CompletionError(400, f"{req.grammar_param} and a tool_choice that forces a call cannot both constrain "
                                   "the reply: give one", req.grammar_param)
    if req.forced_tools is not None:
        req.grammar_param = "tool_choice"
    return req
