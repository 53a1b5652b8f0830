"""The answers of the completions server in OpenAI's shapes: ``text_completion`` objects for
/v1/completions, ``chat.completion`` and ``chat.completion.chunk`` for /v1/chat/completions."""
from __future__ import annotations

import json
import time
import uuid
from typing import Dict, List, Optional, Tuple

from .tool_calls import read_tool_calls, reader


def usage(results, n: int = 1) -> dict:
    """Token counts; a prompt with n rows (choices, or best_of candidates: all of them count) counts once, and so
    do its ``cached_tokens`` (OpenAI's ``prompt_tokens_details``: those read from the prefix cache)."""
    p = sum(r.prompt_tokens for r in results[::n])
    c = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": sum(r.cached_tokens for r in results[::n])}}


def event(obj) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(obj)}\n\n"


class TextShape:
    """/v1/completions."""
    object, chunk_object, prefix = "text_completion", "text_completion", "cmpl-"

    def __init__(self, model: str, n: int = 1):
        self.model, self.id, self.n = model, self.prefix + uuid.uuid4().hex, n

    def _head(self, obj_type: str, choices: List[dict]) -> dict:
        return {"id": self.id, "object": obj_type, "created": int(time.time()), "model": self.model, "choices": choices}

    def _choice(self, index: int, text: str, finish: Optional[str]) -> dict:
        return {"index": index, "text": text, "finish_reason": finish, "logprobs": None}

    def response(self, results, counted=None) -> dict:
        """The answer with ``results`` as its choices; ``counted``: what usage counts (default the results;
        best_of: every candidate generated, ``self.n`` of them per prompt)."""
        choices = [self._choice(i, r.text, r.finish_reason) for i, r in enumerate(results)]
        for choice, r in zip(choices, results):
            choice["logprobs"] = r.logprobs
        out = self._head(self.object, choices)
        out["usage"] = usage(results if counted is None else counted, self.n)
        return out

    def opening(self, index: int) -> Optional[dict]:
        """The chunk that opens a choice's stream, if the API has one."""
        return None

    def piece(self, index: int, text: str, logprobs: Optional[dict] = None) -> dict:
        """A streamed piece of text (and, when asked for, the logprobs of the tokens it completes)."""
        choice = self._choice(index, text, None)
        choice["logprobs"] = logprobs
        return self._head(self.chunk_object, [choice])

    def finish(self, index: int, reason: str) -> dict:
        return self._head(self.chunk_object, [self._choice(index, "", reason)])

    def pieces(self, index: int, text: str, logprobs: Optional[dict] = None) -> List[dict]:
        """The chunks a streamed piece of text makes."""
        return [self.piece(index, text, logprobs)]

    def closing(self, index: int, reason: str) -> List[dict]:
        """The chunks that end a choice's stream."""
        return [self.finish(index, reason)]

    def usage_chunk(self, results) -> dict:
        out = self._head(self.chunk_object, [])
        out["usage"] = usage(results, self.n)
        return out


class ChatShape(TextShape):
    """/v1/chat/completions: the assistant's message, or its deltas. ``tool_calls``: None, or (the format, whether
    parallel calls are kept): the model's calls are then read out of its text (tool_calls.py)."""
    object, chunk_object, prefix = "chat.completion", "chat.completion.chunk", "chatcmpl-"

    def __init__(self, model: str, n: int = 1, tool_calls: Optional[Tuple[str, bool]] = None):
        super().__init__(model, n)
        self.tool_calls = tool_calls
        self._readers: Dict[int, object] = {}

    def _message(self, r) -> dict:
        if self.tool_calls is None:
            return {"role": "assistant", "content": r.text}
        fmt, parallel = self.tool_calls
        content, calls = read_tool_calls(r.text, parallel, fmt)
        message = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [c.message() for c in calls]
        return message

    def _reason(self, reason: str, called: bool) -> str:
        # a reply that called tools ends for that reason, unless max_tokens cut it
        return "tool_calls" if called and reason == "stop" else reason

    def response(self, results, counted=None) -> dict:
        choices = []
        for i, r in enumerate(results):
            message = self._message(r)
            choices.append({"index": i, "message": message,
                            "finish_reason": self._reason(r.finish_reason, "tool_calls" in message),
                            "logprobs": r.logprobs})
        out = self._head(self.object, choices)
        out["usage"] = usage(results if counted is None else counted, self.n)
        return out

    def _delta(self, index: int, delta: dict, finish: Optional[str], logprobs: Optional[dict] = None) -> dict:
        return self._head(self.chunk_object, [{"index": index, "delta": delta, "finish_reason": finish,
                                                "logprobs": logprobs}])

    def opening(self, index: int) -> dict:
        return self._delta(index, {"role": "assistant", "content": ""}, None)

    def piece(self, index: int, text: str, logprobs: Optional[dict] = None) -> dict:
        return self._delta(index, {"content": text}, None, logprobs)

    def finish(self, index: int, reason: str) -> dict:
        return self._delta(index, {}, reason)

    def _read(self, index: int, read, logprobs: Optional[dict]) -> List[dict]:
        r = self._readers.get(index)
        if r is None:
            r = self._readers[index] = reader(*self.tool_calls)
        first = len(r.calls)
        content, calls = read(r)
        chunks = [self.piece(index, content, logprobs)] if content or logprobs is not None else []
        for k, call in enumerate(calls, first):
            chunks.append(self._delta(index, {"tool_calls": [dict(call.message(), index=k)]}, None))
        return chunks

    def pieces(self, index: int, text: str, logprobs: Optional[dict] = None) -> List[dict]:
        if self.tool_calls is None:
            return super().pieces(index, text, logprobs)
        return self._read(index, lambda r: r.feed(text), logprobs)

    def closing(self, index: int, reason: str) -> List[dict]:
        if self.tool_calls is None:
            return super().closing(index, reason)
        chunks = self._read(index, lambda r: r.finish(), None)
        return chunks + [self.finish(index, self._reason(reason, bool(self._readers[index].calls)))]
