"""Structured outputs in the completions APIs: the request fields that ask for them, checked, and the grammar
each one makes (models/hf/constrained.py decodes with it; llguidance, the optional extra ``structured``).

* ``response_format`` (chat, and completions as vLLM takes it): ``{"type": "text"}`` (the default: none),
  ``{"type": "json_object"}`` (any JSON object), or ``{"type": "json_schema", "json_schema": {"name": ...,
  "schema": {...}, "strict": ..., "description": ...}}`` (a JSON value the schema accepts; no schema: any JSON
  object). ``strict`` changes nothing: the output always matches the schema.
* vLLM's ``guided_json`` (a JSON schema: an object, or one as a string), ``guided_regex`` (text the regex matches
  whole), ``guided_choice`` (exactly one of a list of strings) and ``guided_grammar`` (a Lark or GBNF grammar), in
  completions and chat alike; one of them, or ``response_format``, per request.
* ``tool_choice: "required"`` (chat): the reply is one call or more (one when ``parallel_tool_calls`` is false) of
  the offered tools, in the chat template's format and nothing else, each call's arguments matching its tool's
  ``parameters`` schema; ``{"type": "function", "function": {"name": ...}}``: a call of that function only. The
  calls are written as tool_calls.py reads them: Hermes ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n
  </tool_call>`` blocks separated by newlines, Mistral ``[TOOL_CALLS]`` and a JSON list of calls, Llama 3 JSON
  objects with ``"parameters"`` separated by ``"; "``.
"""
from __future__ import annotations

import json
from typing import List, Optional, Tuple

import numpy as np

from .completion_request import CompletionError, bad
from .tool_calls import END, MISTRAL_TAG, START, TOOL_NAME


def _grammar_class(param: str):
    """``Grammar``, or a 400 naming the missing extra."""
    try:
        from ..models.hf.constrained import MISSING, Grammar, _llguidance
        _llguidance()
    except ImportError:
        from ..models.hf.constrained import MISSING
        raise CompletionError(400, f"{param}: {MISSING} (the server was installed without the optional extra "
                                   "structured)", param) from None
    return Grammar


def _schema_grammar(schema, param: str):
    Grammar = _grammar_class(param)
    try:
        return Grammar.json_schema(schema)
    except ValueError as e:
        raise CompletionError(400, f"{param}: {_message(e)}", param) from None


# the most characters of a grammar's source (a regex, a Lark / GBNF grammar, a JSON schema's JSON, guided_choice's
# strings together): llguidance builds its lexer from the source, a 2 MB regex took 26 s of the model's thread (every
# other row waiting) to fail; real schemas and grammars are a few KiB
MAX_GRAMMAR_CHARS = 65536


def _check_size(param: str, value) -> None:
    """A 400 naming ``param`` where its grammar source has more than MAX_GRAMMAR_CHARS characters."""
    if isinstance(value, str):
        size = len(value)
    elif isinstance(value, list):
        size = sum(len(o) for o in value if isinstance(o, str))
    else:
        try:
            size = len(json.dumps(value))
        except (TypeError, ValueError, RecursionError):  # (RecursionError: nested too deep)
            raise bad(param, "a JSON schema object", value) from None
    if size > MAX_GRAMMAR_CHARS:
        raise CompletionError(400, f"{param} has {size} characters; a grammar (a regex, a Lark or GBNF grammar, a JSON "
                                   f"schema's text, the choices together) may have at most {MAX_GRAMMAR_CHARS}", param)


def _message(error: Exception) -> str:
    """llguidance's error, without the backtrace of a panic (kilobytes of '<unknown>' frames)."""
    text = str(error).split("\n<backtrace>")[0]
    return text if len(text) <= 500 else text[:500] + "..."


def response_format(value, param: str = "response_format"):
    """The grammar ``response_format`` asks for, or None (absent, null, or ``{"type": "text"}``)."""
    if value is None:
        return None
    expected = ('{"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {"name": ..., '
                '"schema": {...}}}')
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise bad(param, expected, value)
    extra = sorted(set(value) - {"type", "json_schema"} if kind == "json_schema" else set(value) - {"type"})
    if extra:
        raise CompletionError(400, f"{param}: unknown field {extra[0]!r} for type {kind!r}", param)
    if kind == "text":
        return None
    if kind == "json_object":
        return _schema_grammar({"type": "object"}, param)
    spec = value.get("json_schema")
    where = f"{param}.json_schema"
    if not isinstance(spec, dict):
        raise bad(where, '{"name": ..., "schema": {...}, "strict": true|false}', spec)
    unknown = sorted(set(spec) - {"name", "schema", "strict", "description"})
    if unknown:
        raise CompletionError(400, f"{where}: unknown field {unknown[0]!r} (accepted: description, name, schema, "
                                   "strict)", where)
    name = spec.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise CompletionError(400, f"{where}.name must be 1-64 letters, digits, _ or -, got "
                                   f"{json.dumps(name)[:80]}", f"{where}.name")
    if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
        raise bad(f"{where}.strict", "true or false", spec["strict"])
    schema = spec.get("schema", {"type": "object"})
    if not isinstance(schema, dict):
        raise bad(f"{where}.schema", "a JSON schema object", schema)
    _check_size(f"{where}.schema", schema)
    return _schema_grammar(schema, f"{where}.schema")


def guided_json(value):
    """vLLM's ``guided_json``: a JSON schema (an object or its text), or None."""
    if value is None:
        return None
    _check_size("guided_json", value)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # (RecursionError: nested too deep)
            raise bad("guided_json", "a JSON schema (an object, or one as a string)", value) from None
    if not isinstance(value, dict):
        raise bad("guided_json", "a JSON schema (an object, or one as a string)", value)
    return _schema_grammar(value, "guided_json")


MAX_CHOICES = 1999  # guided_choice: llguidance's parser holds 2,000 items in a row (the alternatives and the start)


def _guided(name: str, value):
    """The grammar of vLLM's ``guided_regex``, ``guided_choice`` or ``guided_grammar``."""
    Grammar = _grammar_class(name)
    if name == "guided_choice":
        # at most MAX_CHOICES: llguidance's parser refused more after the prefill, and built 200,000 in minutes
        if (not isinstance(value, list) or not value or len(value) > MAX_CHOICES
                or not all(isinstance(o, str) and o for o in value)):
            raise bad(name, f"a non-empty list of up to {MAX_CHOICES} non-empty strings", value)
        make = Grammar.choice
    else:
        if not isinstance(value, str) or not value.strip():
            raise bad(name, "a regex" if name == "guided_regex" else "a Lark or GBNF grammar", value)
        make = Grammar.regex if name == "guided_regex" else Grammar.ebnf
    _check_size(name, value)
    try:
        return make(value)
    except ValueError as e:
        raise CompletionError(400, f"{name}: {_message(e)}", name) from None


GUIDED = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


def request_grammar(obj: dict) -> Tuple[Optional[object], Optional[str]]:
    """(the grammar a request body asks for, the field that asked for it), or (None, None): ``response_format`` or
    one of vLLM's ``guided_*`` fields (a 400 when two constrain it)."""
    grammar, param = response_format(obj.get("response_format")), "response_format"
    for name in GUIDED:
        if obj.get(name) is None:
            continue
        if grammar is not None:
            raise CompletionError(400, f"{param} and {name} both constrain the completion: give one", name)
        grammar = guided_json(obj[name]) if name == "guided_json" else _guided(name, obj[name])
        param = name
    return grammar, (param if grammar is not None else None)


def forced_tools(value, tools: Optional[List[dict]]) -> Optional[List[str]]:
    """The functions ``tool_choice`` forces a call of (None: it forces none): every tool's name for "required",
    one for a named function (which must be among the tools)."""
    names = [t["function"]["name"] for t in tools or []]
    if value == "required":
        if not names:
            raise CompletionError(400, 'tool_choice "required" needs tools', "tool_choice")
        return names
    if isinstance(value, dict) and value.get("type") == "function":
        fn = value.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or set(value) - {"type", "function"}:
            raise bad("tool_choice", '{"type": "function", "function": {"name": ...}}', value)
        if name not in names:
            raise CompletionError(400, f"tool_choice names the function {name!r}, which is not among the tools "
                                       f"({', '.join(names) or 'none'})", "tool_choice")
        return [name]
    return None


def _call_schema(tool: dict, args_key: str) -> dict:
    fn = tool["function"]
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "object", "properties": {"name": {"const": fn["name"]}, args_key: params},
            "required": ["name", args_key], "additionalProperties": False}


def _styled(schema: dict) -> str:
    """A schema embedded in Lark (``%json``), written as json.dumps writes JSON (constrained.JSON_STYLE)."""
    from ..models.hf.constrained import JSON_STYLE
    return json.dumps(dict(schema, **{"x-guidance": JSON_STYLE}))


def _tag(tokenizer, tag: str) -> str:
    """The Lark of a tag: its token (``<[id]>``) where the tokenizer has it as one special token (then its text
    would not match it), else its text."""
    special = getattr(tokenizer, "special_ids", None)
    tid = tokenizer.token_id(tag) if hasattr(tokenizer, "token_id") else None
    if tid is not None and special is not None and tid in special():
        return f"<[{tid}]>"
    return json.dumps(tag)


def tool_call_grammar(tools: List[dict], names: List[str], fmt: str, parallel: bool, tokenizer):
    """The grammar of a reply that is only calls of the functions ``names`` in the chat template's format ``fmt``
    (one call, or one or more when ``parallel``), each call's arguments matching its tool's parameters."""
    Grammar = _grammar_class("tool_choice")
    chosen = [t for t in tools if t["function"]["name"] in names]
    args_key = "parameters" if fmt == "llama3_json" else "arguments"
    one = {"anyOf": [_call_schema(t, args_key) for t in chosen]} if len(chosen) > 1 else _call_schema(chosen[0],
                                                                                                      args_key)
    if fmt == "mistral":
        listed = dict({"type": "array", "items": one, "minItems": 1}, **({} if parallel else {"maxItems": 1}))
        lark = f"start: {_tag(tokenizer, MISTRAL_TAG)} %json {_styled(listed)}"
    else:
        sep, call = ('"; "', f"%json {_styled(one)}") if fmt == "llama3_json" else \
            ('"\\n"', f'{_tag(tokenizer, START)} "\\n" %json {_styled(one)} "\\n" {_tag(tokenizer, END)}')
        lark = f"start: call ({sep} call)*\ncall: {call}" if parallel else f"start: {call}"
    try:
        return Grammar.lark(lark)
    except ValueError as e:  # a tool's parameters schema llguidance cannot take
        raise CompletionError(400, f"tools: the parameters of {', '.join(names)} cannot be enforced: {e}",
                              "tools") from None


def check_grammar(req, tokenizer, vocab_size: int, eos: List[int]):
    """A new row constraint of the request's grammar on the served model's tokenizer (None: the request has no
    grammar), checked at the request boundary: a grammar the tokenizer cannot take (a special token it lacks), or one
    that no token of the vocabulary can start, is a 400 naming the field that asked for it."""
    if req.grammar is None:
        return None
    from ..models.hf.constrained import GrammarError, RowConstraint, grammar_tokenizer
    param = req.grammar_param or "response_format"
    try:
        row = RowConstraint(req.grammar, grammar_tokenizer(tokenizer, vocab_size, eos))
        allowed = row.allowed()
        if not allowed.any():
            raise GrammarError(row._dead_end(False))
        # the first allowed token consumed on a copy: a grammar whose lexer blows up there ((a{1000}){1000}: "too
        # many expressions constructed") fails here, off the model's thread, not after the prefill with every row
        # waiting (what may follow is the rows' to find: a dead end later fails its request alone, as before)
        first = next((t for t in np.flatnonzero(allowed).tolist() if t not in eos), None)
        if first is not None:
            row.fork().advance(first)
    except (ValueError, GrammarError) as e:
        raise CompletionError(400, f"{param}: {e}", param) from None
    return row


def row_failed(req, error: Exception) -> Exception:
    """What a request gets when decoding one of its rows fails: where its grammar cannot go on (GrammarError: the
    tokenizer cannot spell what it requires next, the other settings rule out every token it allows, its matcher
    failed), a 400 naming the field that asked for the grammar; anything else as it is (a 500)."""
    from ..models.hf.constrained import GrammarError
    if isinstance(error, GrammarError):
        param = getattr(req, "grammar_param", None) or "response_format"
        return CompletionError(400, f"{param}: {error}", param, "grammar_failed")
    return error
