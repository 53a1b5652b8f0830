"""Tool calls in chat completions (OpenAI's ``tools`` / ``tool_calls``): the request's tools checked, the
conversation's earlier calls and tool results passed to the chat template as transformers'
``apply_chat_template(..., tools=...)`` takes them, and the model's calls read out of its text.

The model writes its calls in its chat template's format. forgegrad reads the Hermes format, the one the
Qwen2.5 / Qwen3 / Hermes templates teach: each call a JSON object ``{"name": ..., "arguments": {...}}``
between ``<tool_call>`` and ``</tool_call>``, after any text::

    Let me look that up.
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

A template that renders ``tools`` and names ``<tool_call>`` is taken to use it. What the client gets:

* ``content``: the text outside the calls, with the whitespace next to a call dropped; null when nothing else
  is left (a reply without calls is its text, unchanged);
* ``tool_calls``: ``[{"id": "call_...", "type": "function", "function": {"name", "arguments"}}]``, arguments
  as a JSON string, as OpenAI's;
* a block whose JSON does not parse (or lacks a string ``name`` and an object ``arguments``) is not a call:
  it stays in ``content`` as the model wrote it. A last block the output ends inside (no ``</tool_call>``)
  is a call when what it holds parses.

Streaming runs the same reader on the text as it arrives (``ToolCallReader``): text goes out once no later
token can make it part of a call (a tail that could still grow into ``<tool_call>``, and whitespace that may
turn out to border one, wait), each call as one delta once its block closes, so the streamed content and
calls are always those of the whole text read at once.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import List, Optional, Tuple

START, END = "<tool_call>", "</tool_call>"
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


def _call(raw: str) -> Optional[ToolCall]:
    """The call a block holds, or None when it is not one."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string already
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False), "call_" + uuid.uuid4().hex[:24])


def _held_prefix(text: str, tag: str) -> int:
    """The length of the longest tail of ``text`` that is a proper prefix of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


class ToolCallReader:
    """Reads a reply's text piece by piece: ``feed(text)`` and, at the end, ``finish()`` each return
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


def read_tool_calls(text: str, parallel: bool = True) -> Tuple[Optional[str], List[ToolCall]]:
    """(content, calls) of a whole reply; content None when calls took all of it."""
    reader = ToolCallReader(parallel)
    content, _ = reader.feed(text)
    rest, _ = reader.finish()
    content += rest
    if reader.calls and not content:
        return None, reader.calls
    return content, reader.calls


def template_reads_calls(template_source: str) -> Optional[str]:
    """Why ``tools`` cannot be used with this chat template, or None when they can."""
    if "tools" not in template_source:
        return "this model's chat template does not render tools"
    if START not in template_source:
        return ("this model's chat template does not use the <tool_call>...</tool_call> (Hermes) format, the one "
                "forgegrad reads tool calls in")
    return None
