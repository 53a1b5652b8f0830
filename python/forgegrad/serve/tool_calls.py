"""Tool calls in chat completions (OpenAI's ``tools`` / ``tool_calls``): the request's tools checked, the
conversation's earlier calls and tool results passed to the chat template as transformers'
``apply_chat_template(..., tools=...)`` takes them, and the model's calls read out of its text.

The model writes its calls in the format its chat template teaches; forgegrad reads three, chosen from the template
(``tool_format``):

* ``hermes`` (Qwen2.5, Qwen3, Hermes: the template names ``<tool_call>``): each call a JSON object
  ``{"name": ..., "arguments": {...}}`` between ``<tool_call>`` and ``</tool_call>``, after any text::

      Let me look that up.
      <tool_call>
      {"name": "get_weather", "arguments": {"city": "Paris"}}
      </tool_call>

* ``mistral`` (the template names ``[TOOL_CALLS]``): text, then ``[TOOL_CALLS]`` and either a JSON list of
  ``{"name", "arguments"}`` objects or, in newer templates, ``name[ARGS]{...}`` per call;
* ``llama3_json`` (Llama 3.1-3.3: the template names ``<|python_tag|>``): a reply that is only JSON,
  ``{"name": ..., "parameters": {...}}`` (or ``"arguments"``), maybe after ``<|python_tag|>``, several separated
  by ``;``; any other reply is text.

What the client gets:

* ``content``: the text outside the calls, with the whitespace next to a call dropped; null when nothing else
  is left (a reply without calls is its text, unchanged);
* ``tool_calls``: ``[{"id": "call_...", "type": "function", "function": {"name", "arguments"}}]``, arguments
  as a JSON string, as OpenAI's (Mistral's templates want ids of 9 letters and digits: those are);
* what does not parse as calls (a block whose JSON does not, or lacks a string ``name`` and an object of
  arguments) is not a call: it stays in ``content`` as the model wrote it. A Hermes block the output ends inside
  (no ``</tool_call>``) is a call when what it holds parses.

Streaming runs the same reader on the text as it arrives: text goes out once no later token can make it part of
a call (a tail that could still grow into a call's tag, whitespace that may turn out to border one, and a Llama
reply until its first character says whether it is JSON), each call as one delta once it is complete (for the
formats without an end tag, at the end of the reply), so the streamed content and calls are always those of the
whole text read at once.
"""
from __future__ import annotations

import json
import re
import secrets
import string
import uuid
from dataclasses import dataclass
from typing import List, Optional, Tuple

START, END = "<tool_call>", "</tool_call>"
MISTRAL_TAG, MISTRAL_ARGS = "[TOOL_CALLS]", "[ARGS]"
PYTHON_TAG = "<|python_tag|>"
FORMATS = ("hermes", "mistral", "llama3_json")
MAX_TOOLS = 128
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text
    id: str

    def message(self) -> dict:
        """The call as OpenAI's assistant message lists it."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def _call_id(fmt: str) -> str:
    if fmt == "mistral":  # its templates refuse other ids in the conversation that follows
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))
    return "call_" + uuid.uuid4().hex[:24]


def _named(name, args, fmt: str = "hermes") -> Optional[ToolCall]:
    """A call of ``name`` with ``args`` (an object, or one as a JSON string), or None when they are not one."""
    if isinstance(args, str):  # some models write the arguments as a JSON string already
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):  # (RecursionError: nested too deep)
            return None
    if not isinstance(name, str) or not name or not isinstance(args, dict):
        return None
    return ToolCall(name, json.dumps(args, ensure_ascii=False), _call_id(fmt))


def _call(raw: str, fmt: str = "hermes") -> Optional[ToolCall]:
    """The call a JSON object holds ({"name", "arguments"}; Llama's "parameters"), or None when it is not one."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return _from_object(obj, fmt)


def _from_object(obj, fmt: str) -> Optional[ToolCall]:
    if not isinstance(obj, dict):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    return _named(obj.get("name"), args, fmt)


def _json_calls(text: str, fmt: str) -> Optional[List[ToolCall]]:
    """Llama 3's reply of calls: JSON objects separated by ';' (whitespace around them), nothing else; or None."""
    decoder, calls, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and (text[i].isspace() or (calls and text[i] == ";")):
            i += 1
        if i == len(text):
            return calls or None
        try:
            obj, i = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            return None
        call = _from_object(obj, fmt)
        if call is None:
            return None
        calls.append(call)


def _mistral_calls(text: str) -> Optional[List[ToolCall]]:
    """What follows Mistral's first [TOOL_CALLS]: a JSON list of calls, or name[ARGS]{...} per [TOOL_CALLS]."""
    parts = [p.strip() for p in text.split(MISTRAL_TAG)]
    calls: List[ToolCall] = []
    for part in parts:
        if MISTRAL_ARGS in part:
            name, _, args = part.partition(MISTRAL_ARGS)
            call = _named(name.strip(), args.strip(), "mistral")
            if call is None:
                return None
            calls.append(call)
            continue
        try:
            listed = json.loads(part)
        except (ValueError, RecursionError):
            return None
        listed = listed if isinstance(listed, list) else [listed]
        for obj in listed:
            call = _from_object(obj, "mistral")
            if call is None:
                return None
            calls.append(call)
    return calls or None


def _held_prefix(text: str, tag: str) -> int:
    """The length of the longest tail of ``text`` that is a proper prefix of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


class ToolCallReader:
    """Reads a Hermes reply's text piece by piece: ``feed(text)`` and, at the end, ``finish()`` each return
    ``(content, calls)``, the content that is now final and the calls whose blocks closed. ``parallel=False``
    keeps only the first call (OpenAI's ``parallel_tool_calls: false``)."""

    def __init__(self, parallel: bool = True):
        self.parallel = parallel
        self.calls: List[ToolCall] = []
        self._buf = ""  # text not decided yet
        self._in_call = False
        self._ws = ""  # whitespace before an open block: dropped if the block is a call
        self._after_call = False  # whitespace right after a call is dropped

    def _content(self, text: str) -> str:
        if self._after_call:
            text = text.lstrip()
            if text:
                self._after_call = False
        return text

    def _took(self, call: Optional[ToolCall], raw: str, out: List[str], calls: List[ToolCall]) -> None:
        if call is None:  # not a call: the block is text
            out.append(self._content(self._ws + raw))
        else:
            if self.parallel or not self.calls:
                self.calls.append(call)
                calls.append(call)
            self._after_call = True
        self._ws = ""

    def feed(self, text: str) -> Tuple[str, List[ToolCall]]:
        self._buf += text
        out: List[str] = []
        calls: List[ToolCall] = []
        while True:
            if self._in_call:
                j = self._buf.find(END)
                if j < 0:
                    break
                raw, self._buf, self._in_call = self._buf[:j], self._buf[j + len(END):], False
                self._took(_call(raw), START + raw + END, out, calls)
                continue
            i = self._buf.find(START)
            if i >= 0:
                before = self._buf[:i]
                body = before.rstrip()
                out.append(self._content(body))
                self._ws = before[len(body):]
                self._buf, self._in_call = self._buf[i + len(START):], True
                continue
            # no block opens here: everything but a tail that may still open one, and trailing whitespace
            keep = _held_prefix(self._buf, START)
            head = self._buf[:len(self._buf) - keep]
            body = head.rstrip()
            out.append(self._content(body))
            self._buf = head[len(body):] + self._buf[len(head):]
            break
        return "".join(out), calls

    def finish(self) -> Tuple[str, List[ToolCall]]:
        out: List[str] = []
        calls: List[ToolCall] = []
        if self._in_call:  # the output ended inside a block
            raw, self._buf, self._in_call = self._buf, "", False
            self._took(_call(raw), START + raw, out, calls)
        else:
            out.append(self._content(self._buf))
            self._buf = ""
        return "".join(out), calls


class TailCallsReader:
    """Reads a Mistral or Llama 3 reply piece by piece (as ``ToolCallReader``): calls that run to the end of the
    reply, read there. Mistral: text until ``[TOOL_CALLS]`` (a tail that may grow into it and trailing whitespace
    held back), the calls after it. Llama 3: the reply is calls when it starts (after whitespace) with ``{`` or
    ``<|python_tag|>``, held until the end; else it is text, passed on as it comes."""

    def __init__(self, fmt: str, parallel: bool = True):
        self.fmt, self.parallel = fmt, parallel
        self.calls: List[ToolCall] = []
        self._buf = ""
        self._tail = False  # in the calls' part (Mistral: after its tag; Llama: a JSON reply)
        self._text = False  # Llama: the reply is text

    def feed(self, text: str) -> Tuple[str, List[ToolCall]]:
        if self._text:
            return text, []
        self._buf += text
        if self._tail:
            return "", []
        if self.fmt == "llama3_json":
            head = self._buf.lstrip()
            if head.startswith("{") or head.startswith(PYTHON_TAG):
                self._tail = True
                return "", []
            if not head or PYTHON_TAG.startswith(head):
                return "", []  # undecided: whitespace, or the start of the tag
            out, self._buf, self._text = self._buf, "", True
            return out, []
        i = self._buf.find(MISTRAL_TAG)
        if i >= 0:
            body = self._buf[:i].rstrip()
            self._buf, self._tail = self._buf[len(body):], True  # the whitespace before the tag stays with it
            return body, []
        keep = _held_prefix(self._buf, MISTRAL_TAG)
        head = self._buf[:len(self._buf) - keep]
        body = head.rstrip()
        self._buf = self._buf[len(body):]
        return body, []

    def finish(self) -> Tuple[str, List[ToolCall]]:
        rest, self._buf = self._buf, ""
        if not self._tail:
            return rest, []
        if self.fmt == "llama3_json":
            head = rest.lstrip()
            calls = _json_calls(head[len(PYTHON_TAG):] if head.startswith(PYTHON_TAG) else head, self.fmt)
        else:
            start = rest.find(MISTRAL_TAG)
            calls = _mistral_calls(rest[start + len(MISTRAL_TAG):])
        if calls is None:
            return rest, []  # not calls: the text as written
        self.calls = calls if self.parallel else calls[:1]
        return "", list(self.calls)


def reader(fmt: str = "hermes", parallel: bool = True):
    """The reader of a format's replies (see the module's docstring)."""
    if fmt == "hermes":
        return ToolCallReader(parallel)
    if fmt in FORMATS:
        return TailCallsReader(fmt, parallel)
    raise ValueError(f"tool-call format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def read_tool_calls(text: str, parallel: bool = True, fmt: str = "hermes") -> Tuple[Optional[str], List[ToolCall]]:
    """(content, calls) of a whole reply; content None when calls took all of it."""
    r = reader(fmt, parallel)
    content, _ = r.feed(text)
    rest, _ = r.finish()
    content += rest
    if r.calls and not content:
        return None, r.calls
    return content, r.calls


def tool_format(template_source: str) -> Tuple[Optional[str], Optional[str]]:
    """(the format the chat template teaches, None) or (None, why tools cannot be used with it)."""
    if "tools" not in template_source:
        return None, "this model's chat template does not render tools"
    for fmt, tag in (("hermes", START), ("mistral", MISTRAL_TAG), ("llama3_json", PYTHON_TAG)):
        if tag in template_source:
            return fmt, None
    return None, ("this model's chat template writes tool calls in a format forgegrad does not read (it reads "
                  "Hermes' <tool_call> blocks, Mistral's [TOOL_CALLS] and Llama 3's JSON replies)")
