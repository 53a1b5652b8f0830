"""The HTTP side of the fuzz suite: hostile request bodies (hypothesis strategies), the checks every answer must
pass, and the tiny checkpoints the servers under test load (see test_fuzz_http.py).

A request is (route, raw body bytes, content type, the fields it broke, whether it streams). The rule checked on
every answer: a 4xx with a JSON error (naming the field it broke, where one was) or a 2xx of the route's shape,
never a 5xx, never an error inside a 200 stream, and never longer than the client's timeout (a hang)."""
from __future__ import annotations

import collections
import io
import json
import os
import re
import time
import wave

import numpy as np
from hypothesis import strategies as st

import fuzz_util

TIMEOUT = float(os.environ.get("FORGEGRAD_FUZZ_HTTP_TIMEOUT", "60"))  # seconds a request may take (else a hang)
# FORGEGRAD_FUZZ_HTTP_TRACE: a file each request is appended to before it is sent (the last one is a hang's)
SENT = collections.Counter()  # route -> requests sent (the report's count)
ERRORS = collections.Counter()  # (route, status, message with its digits masked) -> answers, for triage


def write_errors(path: str) -> None:
    """The distinct errors the servers answered, most frequent first (FORGEGRAD_FUZZ_HTTP_ERRORS names the file)."""
    with open(path, "w") as f:
        for (route, status, message), count in ERRORS.most_common():
            f.write(f"{count:6d} {status} {route} {message}\n")

# --- values -----------------------------------------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
NUMBERS = st.sampled_from([0, 1, 2, -1, 3, 17, 255, 299, 300, 2 ** 31, 2 ** 63, 2 ** 64, 10 ** 30, -10 ** 30,
                           -2 ** 63 - 1, 0.5, -0.0, 1.5, 2.0000001, 1e-320, 5e-324, 1e308, -1e308, NAN, INF, -INF])
STRINGS = st.sampled_from(["", " ", "\x00", "a", "1", "-1", "NaN", "true", "null", "\u00b2", "\u0661", "\ud7ff\ue000",
                           "<|im_end|>", "<|im_start|>", "<tool_call>", "\\u0000", "a" * 5000, "1" * 5000, "{", "[]",
                           "a\ud800", "\udfff", "\U0001F600", "\r\n--fuzzb0undary"])
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.integers(), st.floats(), STRINGS, st.text(max_size=12))


def _repeat(value_and_count):
    value, count = value_and_count
    return [value] * count


# lists of thousands of entries, objects whose keys are not token ids, and JSON nested deep
LONG_LISTS = st.tuples(SCALARS, st.sampled_from([0, 5, 4097, 20000])).map(_repeat)
BAD_KEYS = st.dictionaries(st.sampled_from(["\u00b2", "\u0661", "1" * 5000, "-1", " 5 ", "5.0", "0x10", "", "299",
                                            "300", "99999999999999999999"]), NUMBERS, min_size=1, max_size=3)
NESTED = st.integers(1, 3000).map(lambda depth: json.loads("[" * min(depth, 900) + "]" * min(depth, 900)))
VALUES = st.one_of(SCALARS, LONG_LISTS, BAD_KEYS, NESTED,
                   st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                                | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=8))

# structured outputs: regexes that backtrack catastrophically or blow up a DFA, grammars and schemas of wrong shapes
REGEXES = st.sampled_from(["(a+)+b", "(a|aa)*c", "(a|b)*a(a|b){30}", "a{100000}", "(((", "[", "\\", "(?<=a)b",
                           "\\1", "(?P<x>a)(?P=x)", "a**", ".*" * 50, "(x{1000}){1000}", "\\p{Unknown}", ""])
GRAMMARS = st.sampled_from(["start: start", "start: x\nx: x x |", "root ::= root", "start: /(a+)+b/", "start:",
                            "%import common.NUMBER\nstart: NUMBER", "root ::= [", "start: \"a\"{1000000}", "x: y"])
SCHEMAS = st.sampled_from([{"type": 5}, {"$ref": "#/nope"}, {"$ref": "#"}, {"type": "string", "pattern": "(a+)+b"},
                           {"type": "string", "minLength": 10 ** 9}, {"type": "array", "minItems": 10 ** 6},
                           {"type": "integer", "minimum": 5, "maximum": 1}, {"enum": []}, {"anyOf": []},
                           {"type": "object", "required": ["x"], "properties": {"x": False}}, {"not": {}},
                           {"type": "string", "format": "nope"},
                           {"properties": {"a": {"$ref": "#"}}, "required": ["a"]},
                           json.loads('{"items":' * 300 + "{}" + "}" * 300)])
TOOLS = st.one_of(VALUES, st.lists(st.one_of(
    VALUES, st.fixed_dictionaries({"type": st.sampled_from(["function", "fn", None]), "function": st.one_of(
        VALUES, st.fixed_dictionaries({"name": st.one_of(STRINGS, VALUES),
                                       "parameters": st.one_of(SCHEMAS, VALUES)}))}),
), max_size=3))
MESSAGES = st.one_of(VALUES, st.lists(st.one_of(VALUES, st.fixed_dictionaries({
    "role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool", "developer", "robot"]), VALUES),
    "content": st.one_of(STRINGS, VALUES, st.just([{"type": "text", "text": 5}]), st.just([{"type": "image_url"}]))},
    optional={"tool_calls": VALUES, "tool_call_id": VALUES})), max_size=3))
# bodies of megabytes: texts far past any context, thousands of long words, lists past every limit
HUGE = st.sampled_from(["x" * 1_000_000, "hello world " * 100_000, ["hello world " * 300] * 2000,
                        [f"x{i}" for i in range(50_000)], ["a" * 3_000_000]])
FIELD_VALUES = {name: st.one_of(VALUES, HUGE) for name in ("prompt", "stop", "bad_words", "input", "documents", "query",
                                                            "text_1", "text_2")}
FIELD_VALUES.update({
    "guided_regex": st.one_of(REGEXES, VALUES), "guided_grammar": st.one_of(GRAMMARS, VALUES),
    "guided_json": st.one_of(SCHEMAS, SCHEMAS.map(json.dumps), VALUES),
    "response_format": st.one_of(VALUES, SCHEMAS.map(lambda s: {"type": "json_schema", "json_schema": {
        "name": "x", "schema": s}})),
    "guided_choice": st.one_of(VALUES, LONG_LISTS, HUGE), "tools": TOOLS,
    "messages": st.one_of(MESSAGES, HUGE.map(lambda h: [{"role": "user", "content": h}])),
    "tool_choice": st.one_of(VALUES, st.sampled_from(["required", "auto", "none", {"type": "function"}, {
        "type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": 5}}]))})


# valid values at the edges of their ranges, so that requests also get past the checks, into the engines, with
# settings that fight each other (every token banned, only an end token allowed, a grammar and logit_bias, ...)
VALID = {"max_tokens": [1, 2, 40, 300], "temperature": [0, 1e-9, 0.01, 2], "top_p": [1e-9, 0.01, 1], "n": [1, 2, 16],
         "top_k": [1, 2, -1, 10 ** 6], "min_p": [0, 0.999, 1], "seed": [0, -1, 2 ** 63], "best_of": [1, 2, 16],
         "stop": ["\n", ["a", "b", "c", "d"], "\u00e9", "<|im_end|>", " ", "hello"], "logprobs": [0, 5, True],
         "top_logprobs": [0, 20], "echo": [True], "presence_penalty": [-2, 2], "frequency_penalty": [-2, 2],
         "repetition_penalty": [1e-9, 2], "logit_bias": [{"0": 100}, {"1": 100}, {str(i): -100 for i in range(280)}],
         "min_tokens": [0, 4, 40], "bad_words": [["hello"], ["a", "b"], ["<|im_end|>"]], "stream": [True],
         "stop_token_ids": [[0], [1], list(range(280))], "allowed_token_ids": [[1], [0], [5], list(range(280))],
         "ignore_eos": [True], "include_stop_str_in_output": [True], "stream_options": [{"include_usage": True}],
         "guided_choice": [["yes", "no"], ["\u00e9"], ["<|im_end|>"]], "guided_regex": ["[0-9]{3}", "a|b", "\\w+"],
         "guided_json": [{"type": "integer"}, {"type": "object", "properties": {"a": {"type": "string"}}}],
         "response_format": [{"type": "json_object"}, {"type": "text"}], "parallel_tool_calls": [False],
         "prompt": [[0, 1, 5], [[5, 6], [7]], " ", "\x00", "<|im_end|>", "a" * 600, [279] * 3],
         "max_completion_tokens": [1, 50], "tool_choice": ["none", "auto", "required", {
             "type": "function", "function": {"name": "f"}}],
         "messages": [[{"role": "user", "content": ""}], [{"role": "system", "content": "s"}, {
             "role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {
                 "name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "1", "content": "3"}],
             [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]],
         "input": [["hello"] * 100, "", [[1, 2, 3]], [""], "x" * 3000], "documents": [[], [""] * 50, ["a"]],
         "top_n": [0, 1, 100], "dimensions": [1, 32, 33], "encoding_format": ["base64", "float"],
         "return_documents": [True, False], "query": ["", "x" * 3000], "text_1": [[], ["a"] * 3, ""],
         "text_2": [[], ["a"] * 2], "use_beam_search": [True], "length_penalty": [-1e9, 0, 2, 1e300]}


def field_value(name: str):
    hostile = FIELD_VALUES.get(name, VALUES)
    return st.one_of(st.sampled_from(VALID[name]), hostile) if name in VALID else hostile


# --- requests ---------------------------------------------------------------------------------------------------------
JSON_TYPE = "application/json"
RAW = ("truncate", "not utf-8", "bom", "deep", "no content type", "text/plain", "form", "empty", "trailing", "nan")


def raw_body(body: bytes, how: str, cut: int) -> tuple:
    """(bytes, content type) of ``body`` broken as ``how`` says."""
    if how == "truncate":
        return body[:cut % max(1, len(body))], JSON_TYPE
    if how == "not utf-8":
        i = cut % max(1, len(body))
        return body[:i] + b"\xff\xfe\xc3" + body[i:], JSON_TYPE
    if how == "bom":
        return b"\xef\xbb\xbf" + body, JSON_TYPE
    if how == "deep":
        depth = 1000 + cut * 1000
        return b'{"x": ' + b"[" * depth + b"]" * depth + b"}", JSON_TYPE
    if how == "no content type":
        return body, None
    if how == "form":
        return b"prompt=hi&max_tokens=2", "application/x-www-form-urlencoded"
    if how == "empty":
        return b"", JSON_TYPE
    if how == "trailing":
        return body + b" {}", JSON_TYPE
    if how == "nan":
        return body.replace(b"}", b', "temperature": NaN}', 1), JSON_TYPE
    return body, "text/plain"


def json_requests(route: str, base: dict, fields, stream_field: bool = False):
    """Requests to ``route``: ``base`` with one to three fields (of ``fields``, or a misspelt one) set to hostile
    values or removed, sometimes sent as broken bytes."""
    names = st.sampled_from(sorted(fields) + ["max_token", "__proto__"])
    hostile = names.flatmap(lambda n: st.tuples(st.just(n), st.one_of(field_value(n), st.just(_DELETE))))
    valid = st.sampled_from(sorted(set(fields) & set(VALID))).flatmap(
        lambda n: st.tuples(st.just(n), st.sampled_from(VALID[n])))
    edit = st.one_of(hostile, valid)

    def build(args):
        edits, how, cut = args
        body = dict(base)
        for name, value in edits:
            if value is _DELETE:
                body.pop(name, None)
            else:
                body[name] = value
        raw = json.dumps(body).encode()
        stream = stream_field and body.get("stream") is True
        if how is None:
            return route, raw, JSON_TYPE, tuple(n for n, _ in edits), stream
        data, ctype = raw_body(raw, how, cut)
        return route, data, ctype, (), False

    return st.tuples(st.lists(edit, min_size=1, max_size=4),
                     st.one_of(st.none(), st.none(), st.none(), st.sampled_from(RAW)), st.integers(0, 4)).map(build)


_DELETE = object()


# --- checks -----------------------------------------------------------------------------------------------------------
def send(client, request, headers=None):
    """POSTs ``request`` (with more ``headers``); (status, content type, body, the stream's data lines or None). A
    timeout fails the test (a hang)."""
    route, data, ctype, broken, stream = request
    SENT[route] += 1
    if os.environ.get("FORGEGRAD_FUZZ_HTTP_TRACE"):  # each request before it is sent: the last one is a hang's
        with open(os.environ["FORGEGRAD_FUZZ_HTTP_TRACE"], "ab") as f:
            f.write(route.encode() + b" " + data[:2000] + b" ... " + data[-2000:] + b"\n")
    headers = dict(headers or {}, **({} if ctype is None else {"content-type": ctype}))
    if not stream:
        r = client.post(route, content=data, headers=headers, timeout=TIMEOUT)
        fuzz_util.STATS[f"http {r.status_code // 100}xx"] += 1
        return r.status_code, r.headers.get("content-type", ""), r.content, None
    start = time.monotonic()
    with client.stream("POST", route, content=data, headers=headers, timeout=TIMEOUT) as r:
        fuzz_util.STATS[f"http {r.status_code // 100}xx"] += 1
        lines = [] if r.status_code == 200 else None
        for line in r.iter_lines() if r.status_code == 200 else ():
            lines.append(line)  # a stream that keeps sending for longer than TIMEOUT is a hang too
            assert time.monotonic() - start < TIMEOUT, f"{route}: a stream going on after {TIMEOUT} s: {data[:300]!r}"
        lines = None if lines is None else [line for line in lines if line]
        body = r.read() if r.status_code != 200 else b""
        return r.status_code, r.headers.get("content-type", ""), body, lines


def check(request, answer, openai: bool = True) -> None:
    """The answer keeps the rule (see the module's docstring); an AssertionError names the request."""
    route, data, ctype, broken, stream = request
    status, content_type, body, events = answer
    shown = data[:300]
    assert status < 500, f"{route} answered {status} to {shown!r}: {body[:400]!r}"
    if status >= 400:
        assert content_type.startswith(JSON_TYPE), f"{route}: a {status} that is not JSON for {shown!r}: {body[:200]!r}"
        err = json.loads(body)["error"]
        message = err["message"] if openai else err
        assert isinstance(message, str) and message, f"{route}: an error without a message: {body[:200]!r}"
        ERRORS[route, status, re.sub(r"\d+", "N", message)[:160]] += 1
        if openai and broken and status == 400:  # the error names a field the request broke, or a field it needs
            named = err.get("param") or ""
            assert named or any(f in message for f in broken), \
                f"{route}: the error names no field ({broken}) for {shown!r}: {message[:300]}"
        return
    if events is not None:  # a stream: data events, [DONE] last, no server error on the way
        assert events and events[-1] == "data: [DONE]", f"{route}: a stream without [DONE] for {shown!r}: {events[-3:]}"
        for line in events[:-1]:
            assert line.startswith("data: "), line
            event = json.loads(line[6:])
            err = event.get("error") if isinstance(event, dict) else None
            assert err is None or err.get("type") != "server_error", f"{route}: {err} in the stream of {shown!r}"


# --- model-serving bodies (.npy and JSON tensors) ---------------------------------------------------------------------
def npy(arr, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def _header(descr: str, fortran: bool, shape: tuple, data: bytes) -> bytes:
    text = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode()
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def npy_bodies(width: int):
    """.npy bodies for a model of one (N, width) float32 input: good ones, and object dtype, wrong shapes, Fortran
    order, big-endian, truncated data, lying headers, huge declared shapes, strings, complex and structured dtypes."""
    good = np.random.default_rng(0).random((2, width), dtype=np.float32)
    cases = [npy(good), npy(np.asfortranarray(good)), npy(good.astype(">f4")), npy(good.astype(np.float64)),
             npy(good[:, :3]), npy(good[0]), npy(good[None]), npy(np.zeros((0, width), np.float32)),
             npy(np.array([[object()] * width], dtype=object), allow_pickle=True), npy(good.astype(np.complex64)),
             npy(np.array([["a"] * width])), npy(np.zeros((2,), dtype=[("a", "<f4"), ("b", "<i4")])),
             npy(np.full((2, width), np.nan, np.float32)), npy(np.full((2, width), 1e300)),
             npy(good.astype(np.float16)), npy(good > 0.5), npy(np.float32(1.0)), npy(good)[:-7], npy(good)[:20],
             npy(good) + b"\x00" * 9, b"\x93NUMPY\x09\x00" + npy(good)[8:], b"\x93NUMPY" + b"\xff" * 50,
             _header("<f4", False, (2 ** 40, width), b"\x00" * 64), _header("<f4", False, (-1, width), b"\x00" * 64),
             _header("<f4", True, (2, width), good.tobytes()), _header("|O", False, (2, width), b"\x00" * 64),
             _header("<f4", False, (2, width), b""), _header("<f4", False, (2 ** 62, 2 ** 62), b""),
             _header("<V9999999999", False, (1,), b""), _header("<f4", False, (), b"\x00" * 4),
             b"\x93NUMPY\x01\x00\xff\xff{'descr': " + b"x" * 100, npy(np.zeros((3, 4))) * 2,
             b"PK\x03\x04" + b"\x00" * 40]
    return st.sampled_from(cases)


def tensor_json(width: int):
    """JSON tensor values for the same model: hostile numbers and shapes inside good envelopes."""
    row = st.lists(st.one_of(NUMBERS, SCALARS), min_size=width, max_size=width)
    return st.one_of(VALUES, st.lists(row, min_size=1, max_size=3), st.lists(st.lists(NUMBERS, max_size=width + 2),
                                                                             max_size=3))


# --- audio uploads ----------------------------------------------------------------------------------------------------
def wav(rate: int, channels: int, width: int, frames: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    full = 2 ** (8 * width - 1)
    x = np.clip(np.round(rng.uniform(-0.3, 0.3, (frames, channels)) * full), -full, full - 1).astype("<i4")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"".join(int(v).to_bytes(4, "little", signed=True)[:width] for v in x.reshape(-1)))
    return buf.getvalue()


def _patched(data: bytes, offset: int, value: int, size: int) -> bytes:
    return data[:offset] + (value % 2 ** (8 * size)).to_bytes(size, "little") + data[offset + size:]


def audio_files():
    """Audio files: good WAVs, and garbage, empty, truncated ones, headers with zero or huge rates, channels, sizes
    and sample widths, other containers' magic numbers."""
    good = wav(16000, 1, 2, 4000)
    cases = [good, wav(8000, 2, 3, 800), wav(16000, 1, 2, 0), wav(16000, 1, 2, 1), wav(1, 1, 2, 10),
             wav(4000000, 1, 1, 100), b"", b"\x00" * 100, b"RIFF", good[:44], good[:30], good[:-1],
             _patched(good, 22, 0, 2), _patched(good, 22, 65535, 2), _patched(good, 24, 0, 4),
             _patched(good, 24, 2 ** 32 - 1, 4), _patched(good, 34, 7, 2), _patched(good, 34, 64, 2),
             _patched(good, 40, 2 ** 32 - 1, 4), _patched(good, 4, 2 ** 32 - 1, 4), _patched(good, 20, 3, 2),
             _patched(good, 20, 0xFFFE, 2), b"fLaC" + b"\x00" * 60, b"OggS" + b"\xff" * 60, b"ID3" + b"\x00" * 60,
             b"\xff\xfb" + b"\x11" * 200, os.urandom(0) + bytes(range(256)) * 4]
    return st.sampled_from(cases)


def multipart(fields: dict, file_value, filename: str = "a.wav", boundary: str = "fuzzb0undary") -> tuple:
    """(body, content type) of a multipart/form-data upload."""
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                     + (value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")) + b"\r\n")
    if file_value is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + file_value + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"

