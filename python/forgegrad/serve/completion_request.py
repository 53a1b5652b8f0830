"""The body of ``POST /v1/completions`` (OpenAI's API) checked field by field, and the fields it shares with
``POST /v1/chat/completions`` (whose own fields chat_request.py checks).

Every field OpenAI defines is either honoured (prompt, max_tokens, temperature, top_p, seed, stop, stream,
stream_options, model, user, n, presence_penalty, frequency_penalty, logit_bias, logprobs, best_of (not with
stream: true unless equal to n), and echo, not while streaming: ``echo`` with ``max_tokens`` 0 scores a text) or
accepted only at its default value (suffix), so a client never gets silently different behaviour; ``top_k``,
``min_p`` and ``repetition_penalty`` are vLLM's extensions, as are its ``min_tokens``, ``bad_words``,
``stop_token_ids``, ``allowed_token_ids``, ``ignore_eos`` and ``include_stop_str_in_output`` (row_settings.py) and
``response_format`` and ``guided_json`` / ``guided_regex`` / ``guided_choice`` / ``guided_grammar`` here
(structured outputs: structured.py) and ``use_beam_search`` / ``length_penalty`` (beam_completions.py). A field nobody
defines is refused by name (a typo such as ``max_token`` would otherwise fall back to the default
unnoticed).
"""
from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from typing import List, Optional, Union

from ..models.hf.logits_processors import RequestPenalties
from ._errors import ServeError

Prompt = Union[str, List[int]]

# accepted only at these values (OpenAI's defaults): what forgegrad does not implement
_DEFAULT_ONLY = {"suffix": (None,)}
# presence_penalty, frequency_penalty and logit_bias as OpenAI's; repetition_penalty as vLLM's
PENALTY_FIELDS = {"presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias"}
# vLLM's sampling fields beyond those (both APIs; row_settings.py applies them)
VLLM_FIELDS = {"min_tokens", "bad_words", "stop_token_ids", "allowed_token_ids", "ignore_eos",
               "include_stop_str_in_output"}
BEAM_FIELDS = {"use_beam_search", "length_penalty"}  # vLLM's beam search (both APIs: beam_completions.py)
_FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stream",
           "stream_options", "user", "logprobs", "echo", "n", "best_of", "response_format", "guided_json",
           "guided_regex", "guided_choice", "guided_grammar"} | set(_DEFAULT_ONLY) | PENALTY_FIELDS | VLLM_FIELDS \
    | BEAM_FIELDS
MAX_LOGPROBS = 5  # as OpenAI's completions
MAX_N = 16  # choices (and best_of candidates) per prompt: each is a decoding row
MAX_STOP = 4  # as OpenAI
MIN_TEMPERATURE = 1e-5  # a lower temperature decodes greedily (vLLM's _SAMPLING_EPS)
MAX_TOKEN_LIST = 4096  # stop_token_ids, allowed_token_ids, bad_words: the most entries
MAX_BAD_WORD_CHARS = 65536  # bad_words: the most characters in all (4096 words of 3,600 took 22 s to tokenize)
# the default of --max-rows-per-request: the most decoding rows (prompts x n, x best_of) in one request; 16 prompts at
# the highest n, or 256 prompts of one choice. OpenAI caps n at 128 and vLLM caps nothing: a request of 50,000 prompts
# with n 2 was accepted and streamed for hours, every other request waiting behind its rows
MAX_ROWS_PER_REQUEST = 256


class CompletionError(ServeError):
    """A request error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 headers=None):
        super().__init__(status, message, headers)
        self.param, self.code = param, code

    def body(self) -> dict:
        kind = {404: "not_found_error", 413: "invalid_request_error", 503: "server_error"}.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def bad(param: str, expected: str, value) -> CompletionError:
    shown = json.dumps(value)[:80] if _jsonable(value) else repr(value)[:80]
    return CompletionError(400, f"{param} must be {expected}, got {shown}", param)


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _is_default(value, allowed) -> bool:
    # None and booleans by identity (so n: true is not n: 1), numbers and {} by value
    return any(value is a if (a is None or isinstance(a, bool) or isinstance(value, bool)) else value == a
               for a in allowed)


def flag(obj: dict, name: str) -> bool:
    """A boolean field (absent or null: false)."""
    v = obj.get(name)
    if v is not None and not isinstance(v, bool):
        raise bad(name, "true or false", v)
    return bool(v)


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


@dataclass
class CompletionRequest:
    prompts: List[Prompt]  # chat: filled in by the server from messages and the chat template
    messages: Optional[List[dict]] = None  # chat: the messages as the chat template takes them (chat_request.py)
    images: List[str] = field(default_factory=list)  # chat: the image parts' data URLs, in order (image models)
    videos: List[str] = field(default_factory=list)  # chat: the video parts' data URLs, in order (Qwen2-VL)
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: Optional[int] = None
    min_p: Optional[float] = None  # vLLM's: drop tokens less likely than min_p times the most likely one
    seed: Optional[int] = None
    stop: List[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    model: Optional[str] = None
    logprobs: Optional[int] = None  # completions: each token's log-probability and this many alternatives
    echo: bool = False  # completions: the prompt's tokens come back too (with their log-probabilities)
    penalties: RequestPenalties = field(default_factory=RequestPenalties)
    n: int = 1  # choices per prompt (choice i of the response continues prompt i // n)
    best_of: Optional[int] = None  # completions: candidates generated per prompt, the n most likely returned
    tools: Optional[List[dict]] = None  # chat: the functions the model may call (rendered by the chat template)
    read_tool_calls: bool = False  # chat: read the model's calls out of its text (tool_choice "auto")
    tool_format: str = "hermes"  # chat: the format the calls are read in (the chat template's: tool_calls.py)
    parallel_tool_calls: bool = True  # chat: False keeps only the model's first call
    forced_tools: Optional[List[str]] = None  # chat: tool_choice "required" (every tool) or a named function
    grammar: Optional[object] = None  # structured outputs: the Grammar the completion must match (structured.py)
    grammar_param: Optional[str] = None  # the field that asked for it (response_format, guided_*, tool_choice)
    # vLLM's fields (row_settings.py): no end token before min_tokens tokens (None: the checkpoint's min_new_tokens),
    # words never completed, more end tokens, the only tokens allowed, the model's end tokens ignored, a stop string
    # kept in the text
    min_tokens: Optional[int] = None
    bad_words: List[str] = field(default_factory=list)
    stop_token_ids: List[int] = field(default_factory=list)
    allowed_token_ids: Optional[List[int]] = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    token_rules: Optional[object] = None  # allowed_token_ids and bad_words' tokens: set by the server (TokenRules)
    num_beams: Optional[int] = None  # use_beam_search: the beam width (best_of, else n; beam_completions.py)
    length_penalty: Optional[float] = None  # beam search's (None: the checkpoint's, else 1)

    @property
    def greedy(self) -> bool:
        """temperature 0 is greedy decoding (OpenAI's convention; top_p and top_k then do nothing)."""
        return self.temperature == 0

    @property
    def candidates(self) -> int:
        """Rows generated per prompt: ``best_of`` when given, else ``n``. Greedy candidates would all be the
        same text, so greedy decoding generates only the ``n`` returned."""
        return self.n if self.best_of is None or self.greedy else self.best_of

    @property
    def ranked(self) -> bool:
        """Whether the candidates are ranked by their cumulative log-probability (best_of, not streamed)."""
        return self.best_of is not None and self.candidates > 1 and not self.stream and self.max_tokens > 0


def _prompts(value) -> List[Prompt]:
    """A string, a list of token ids, or a list of either (one completion each)."""
    expected = "a string, a list of token ids, or a list of strings or of token-id lists"
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise bad("prompt", expected, value)
    if all(is_int(v) for v in value):
        return [[int(v) for v in value]]
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list) and item and all(is_int(v) for v in item):
            out.append([int(v) for v in item])
        else:
            raise bad("prompt", expected, value)
    return out


def request_object(body: bytes, fields, default_only) -> dict:
    """The body's JSON object; a field outside ``fields`` or one of ``default_only`` at another value is refused."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; RecursionError: nested too deep
        raise CompletionError(400, f"the body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise CompletionError(400, "the body must be a JSON object")
    if b"\\ud" in body or b"\\uD" in body:  # only a \u escape gives a str a lone surrogate (raw, it is not UTF-8)
        for name, value in obj.items():
            if _lone_surrogate(name) or _lone_surrogate(value):
                raise CompletionError(400, f"{name[:40]!r} holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape "
                                           "without its pair), which is not text", name[:40])
    unknown = sorted(set(obj) - fields)
    if unknown:
        raise CompletionError(400, f"unknown field {unknown[0]!r} (accepted: {', '.join(sorted(fields))})", unknown[0])
    for name, allowed in default_only.items():
        if name in obj and not _is_default(obj[name], allowed):
            raise CompletionError(400, f"{name} is not supported (only its default, {allowed[0]!r})", name)
    return obj


def _lone_surrogate(value) -> bool:
    """Whether a JSON value holds a string (or object key) with a lone surrogate, which tokenizers and UTF-8 refuse
    (walked without recursion: the value may be nested as deep as json.loads goes)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
    return False


def parse(body: bytes, served_name: str) -> CompletionRequest:
    """A completions request, or CompletionError (400/404) naming the field and what it must be."""
    obj = request_object(body, _FIELDS, _DEFAULT_ONLY)
    if "prompt" not in obj:
        raise CompletionError(400, "prompt is required", "prompt")
    req = CompletionRequest(_prompts(obj["prompt"]))
    req.echo = flag(obj, "echo")
    v = obj.get("logprobs")
    if v is not None:
        if not is_int(v) or not 0 <= v <= MAX_LOGPROBS:
            raise bad("logprobs", f"an integer in [0, {MAX_LOGPROBS}] or null", v)
        req.logprobs = int(v)
    if req.echo and obj.get("max_tokens") == 0:  # scoring a text: its log-probabilities, nothing generated
        obj = dict(obj, max_tokens=None)
        req = sampling(obj, req, served_name)
        req.max_tokens = 0
    else:
        req = sampling(obj, req, served_name)
    if req.stream and req.echo:
        raise CompletionError(400, "echo is not supported with stream: true", "echo")
    v = obj.get("best_of")
    if v is not None:
        if not is_int(v) or not 1 <= v <= MAX_N:
            raise bad("best_of", f"an integer in [1, {MAX_N}] or null", v)
        if v < req.n:
            raise CompletionError(400, f"best_of must be greater than or equal to n, got best_of {v} and n {req.n}",
                                  "best_of")
        if req.stream and v > req.n and not obj.get("use_beam_search"):  # as OpenAI: ranked once all are done
            raise CompletionError(400, "best_of greater than n is not supported with stream: true", "best_of")
        # scoring a text (echo, max_tokens 0) generates nothing: its n choices are the prompt's
        req.best_of = int(v) if req.max_tokens > 0 else None
    from .beam_completions import beam_settings
    beam_settings(obj, req)
    from .structured import request_grammar
    req.grammar, req.grammar_param = request_grammar(obj)
    return req


def served_model(obj: dict, served_name: str) -> Optional[str]:
    """The body's ``model`` (None when absent), which must name the served model (else a 404), its ``user``
    checked to be a string (OpenAI's fields every API has)."""
    v = obj.get("user")
    if v is not None and not isinstance(v, str):
        raise bad("user", "a string", v)
    model = obj.get("model")
    if model is None:
        return None
    if not isinstance(model, str):
        raise bad("model", "a string", model)
    if model != served_name:
        raise CompletionError(404, f"the model {model!r} does not exist (served: {served_name!r})", "model",
                              "model_not_found")
    return model


def sampling(obj: dict, req: CompletionRequest, served_name: str) -> CompletionRequest:
    """The fields both APIs share."""
    req.model = served_model(obj, served_name)
    v = obj.get("max_tokens")
    if v is not None:
        if not is_int(v) or v < 1:
            raise bad("max_tokens", "an integer >= 1", v)
        req.max_tokens = int(v)
    v = obj.get("temperature")
    if v is not None:
        if not is_number(v) or not 0 <= v <= 2:
            raise bad("temperature", "a number in [0, 2]", v)
        # below 1e-5: greedy, as vLLM (the logits over a temperature such as 5e-324 overflow to inf, and the sampler
        # then drew the vocabulary's last token every time)
        req.temperature = float(v) if v >= MIN_TEMPERATURE else 0.0
    v = obj.get("top_p")
    if v is not None:
        if not is_number(v) or not 0 < v <= 1:
            raise bad("top_p", "a number in (0, 1]", v)
        req.top_p = float(v)
    v = obj.get("top_k")
    if v is not None and v != -1:  # -1: no top-k (vLLM's spelling)
        if not is_int(v) or v < 1:
            raise bad("top_k", "an integer >= 1, or -1 / null for none", v)
        req.top_k = int(v)
    v = obj.get("min_p")
    if v is not None:
        if not is_number(v) or not 0 <= v <= 1:
            raise bad("min_p", "a number in [0, 1] (0: none)", v)
        req.min_p = float(v) or None
    v = obj.get("seed")
    if v is not None:
        if not is_int(v) or not -2 ** 63 <= v < 2 ** 64:
            raise bad("seed", "an integer in [-2**63, 2**64)", v)
        req.seed = int(v) % 2 ** 64  # a negative seed as its 64-bit two's complement (the generators take >= 0)
    v = obj.get("stop")
    if v is not None:
        stops = [v] if isinstance(v, str) else v
        if (not isinstance(stops, list) or len(stops) > MAX_STOP
                or not all(isinstance(s, str) and s for s in stops)):
            raise bad("stop", f"a non-empty string or a list of up to {MAX_STOP} of them", v)
        req.stop = list(stops)
    req.stream = flag(obj, "stream")
    v = obj.get("stream_options")
    if v is not None:
        if not req.stream:
            raise CompletionError(400, "stream_options needs stream: true", "stream_options")
        if not isinstance(v, dict) or set(v) - {"include_usage"} or not isinstance(v.get("include_usage", False), bool):
            raise bad("stream_options", '{"include_usage": true|false}', v)
        req.include_usage = v.get("include_usage", False)
    req.penalties = _penalties(obj)
    _vllm_fields(obj, req)
    v = obj.get("n")
    if v is not None:
        if not is_int(v) or not 1 <= v <= MAX_N:
            raise bad("n", f"an integer in [1, {MAX_N}]", v)
        req.n = int(v)
    return req


def check_rows(req: CompletionRequest, limit: int) -> None:
    """Refuse a request of more than ``limit`` decoding rows (each prompt's n choices, or its best_of candidates or
    beams) with a 400 naming prompt (too many prompts alone) or the field that multiplies them past the limit."""
    per_prompt = max(req.candidates, req.num_beams or 0)
    rows = len(req.prompts) * per_prompt
    if rows <= limit:
        return
    if len(req.prompts) > limit or per_prompt == 1:
        raise CompletionError(400, f"prompt holds {len(req.prompts)} prompts of {per_prompt} row(s) each: "
                                   f"{rows} rows, and this server takes at most {limit} a request (split the "
                                   "prompts over several requests)", "prompt")
    param = "best_of" if per_prompt > req.n else "n"  # a width past n (candidates or beams) comes from best_of
    raise CompletionError(400, f"{len(req.prompts)} prompts x {param} {per_prompt} is {rows} rows, and this server "
                               f"takes at most {limit} a request (fewer prompts or a smaller {param})", param)


def choice_seed(req: CompletionRequest, index: int) -> Optional[int]:
    """The seed of row ``index`` (choice, or best_of candidate: ``req.candidates`` rows a prompt) of a seeded
    request: ``seed`` itself for each prompt's first row (as a request with n = 1 gets), a seed derived from it for
    the others, so they differ (best_of = k's candidates are n = k's choices)."""
    if req.seed is None:
        return None
    j = index % req.candidates
    if j == 0:
        return req.seed
    import numpy as np
    return int(np.random.SeedSequence([req.seed % 2 ** 64, j]).generate_state(1, np.uint64)[0] >> 1)


def _token_list(obj: dict, name: str, allow_empty: bool = True) -> Optional[List[int]]:
    v = obj.get(name)
    if v is None:
        return None
    if (not isinstance(v, list) or not (v or allow_empty) or len(v) > MAX_TOKEN_LIST
            or not all(is_int(t) and t >= 0 for t in v)):
        raise bad(name, f"a list of up to {MAX_TOKEN_LIST} token ids (integers >= 0)"
                  + ("" if allow_empty else ", not empty"), v)
    return [int(t) for t in v]


def _vllm_fields(obj: dict, req: CompletionRequest) -> None:
    """vLLM's min_tokens, bad_words, stop_token_ids, allowed_token_ids, ignore_eos and include_stop_str_in_output
    (their token ids are checked against the vocabulary by the server: row_settings.py)."""
    v = obj.get("min_tokens")
    if v is not None:
        if not is_int(v) or v < 0:
            raise bad("min_tokens", "an integer >= 0", v)
        if v > req.max_tokens:
            raise CompletionError(400, f"min_tokens must be less than or equal to max_tokens ({req.max_tokens}), "
                                       f"got {v}", "min_tokens")
        req.min_tokens = int(v)
    v = obj.get("bad_words")
    if v is not None:
        words = [v] if isinstance(v, str) else v
        if (not isinstance(words, list) or len(words) > MAX_TOKEN_LIST
                or not all(isinstance(w, str) and w.strip() for w in words)
                or sum(len(w) for w in words) > MAX_BAD_WORD_CHARS):  # each is tokenized twice, holding the GIL
            raise bad("bad_words", f"a list of up to {MAX_TOKEN_LIST} non-blank strings of up to {MAX_BAD_WORD_CHARS} "
                                   "characters in all", v)
        req.bad_words = list(words)
    req.stop_token_ids = _token_list(obj, "stop_token_ids") or []
    req.allowed_token_ids = _token_list(obj, "allowed_token_ids", allow_empty=False)
    req.ignore_eos = flag(obj, "ignore_eos")
    req.include_stop_str_in_output = flag(obj, "include_stop_str_in_output")


def _penalties(obj: dict) -> RequestPenalties:
    """presence_penalty / frequency_penalty in [-2, 2] (OpenAI), repetition_penalty in (0, 2] (vLLM),
    logit_bias {"token id": bias in [-100, 100]} (the ids are checked against the vocabulary later)."""
    values = {}
    for name in ("presence_penalty", "frequency_penalty"):
        v = obj.get(name)
        if v is not None and (not is_number(v) or not -2 <= v <= 2):
            raise bad(name, "a number in [-2, 2]", v)
        values[name] = float(v or 0)
    v = obj.get("repetition_penalty")
    if v is not None and (not is_number(v) or not 0 < v <= 2):
        raise bad("repetition_penalty", "a number in (0, 2] (1: none)", v)
    repetition = 1.0 if v is None else float(v)
    bias = {}
    v = obj.get("logit_bias")
    if v is not None:
        expected = 'an object of token ids to numbers in [-100, 100], e.g. {"50256": -100}'
        if not isinstance(v, dict):
            raise bad("logit_bias", expected, v)
        for key, b in v.items():
            # ASCII digits only ("²" is a digit to str.isdigit but not to int), and few of them (int() refuses more
            # than 4300; a token id has at most 19)
            if (not (key.strip().isascii() and key.strip().isdigit() and len(key.strip()) <= 19) or not is_number(b)
                    or not -100 <= b <= 100):
                raise bad("logit_bias", expected, {key[:40]: b})
            bias[int(key)] = float(b)
    return RequestPenalties(values["presence_penalty"], values["frequency_penalty"], repetition, bias)
