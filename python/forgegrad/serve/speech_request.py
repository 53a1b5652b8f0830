"""The bodies of OpenAI's ``POST /v1/audio/transcriptions`` and ``POST /v1/audio/translations`` (multipart/form-data)
checked field by field, and the answers in each ``response_format``.

Fields: ``file`` (required: the audio; forgegrad.data.audio.read_audio's formats), ``model`` (the served name, as the
other routes), ``language`` (the audio's language: ISO-639-1 code, name or Whisper's token; vLLM's extension on
translations), ``prompt`` (a text the transcript follows: spelling, names, style; Whisper's previous-text prompt),
``response_format`` (json, text, srt, verbose_json, vtt), ``temperature`` (0 to 1; 0 decodes greedily),
``timestamp_granularities[]`` ("segment" and/or "word": verbose_json's segments, its words with their times; word
alone leaves the segments out, as OpenAI's API) and ``stream`` (false only). Another field is refused by name: a
misspelt one would otherwise change nothing unnoticed.

forgegrad's extension fields: ``num_beams`` (beam search with that many beams, 1 to 16, at temperature 0; default
generation_config.json's, else 1: ``forgegrad transcribe --num-beams``) and the completions' structured-output fields
of vLLM (structured.py), which constrain each window's transcript text (Whisper's special tokens outside it):
``guided_regex`` (text the regex matches whole), ``guided_choice`` (exactly one of a JSON list of strings, given as
its JSON text), ``guided_json`` (a JSON schema's text) and ``guided_grammar`` (a Lark or GBNF grammar); one of them
per request. ``response_format`` stays OpenAI's output format here.

The multipart body is parsed while it arrives (python-multipart, through Starlette's parser), cut off with a 413
as soon as it passes the server's body limit; one file, a few small fields.
"""
from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .completion_request import CompletionError, bad, served_model

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_FIELDS = {"file", "model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]",
           "timestamp_granularities", "stream", "user", "num_beams", "guided_json", "guided_regex", "guided_choice",
           "guided_grammar"}
_MAX_LANGUAGE = 32  # characters of the language field (Whisper's longest name, "haitian creole", has 14)
MAX_BEAMS = 16  # num_beams: each beam is a row of the decoder's batch
_MAX_FIELD_BYTES = 64 * 1024  # a text field (the prompt is the longest: Whisper reads 224 tokens of it)


@dataclass
class SpeechRequest:
    task: str  # "transcribe" or "translate"
    audio: bytes
    filename: str
    model: Optional[str] = None
    language: Optional[str] = None
    prompt: Optional[str] = None
    response_format: str = "json"
    temperature: float = 0.0
    num_beams: Optional[int] = None  # forgegrad transcribe --num-beams; None: generation_config.json's, else 1
    granularities: Tuple[str, ...] = ()  # timestamp_granularities[]: "segment", "word" (verbose_json)
    grammar: Optional[object] = None  # structured outputs: the Grammar each window's text must match
    grammar_param: Optional[str] = None  # the field that asked for it (guided_regex, guided_choice, ...)


@dataclass
class Segment:
    """One stretch of the transcript, with OpenAI's (and Whisper's) fields."""
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: List[int]
    temperature: float
    avg_logprob: Optional[float]  # None: not computed (left out of the answer; see speech_app)
    compression_ratio: float
    no_speech_prob: Optional[float] = None

    def as_json(self) -> dict:
        out = {"id": self.id, "seek": self.seek, "start": round(self.start, 3), "end": round(self.end, 3),
               "text": self.text, "tokens": self.tokens, "temperature": self.temperature,
               "avg_logprob": self.avg_logprob, "compression_ratio": self.compression_ratio,
               "no_speech_prob": self.no_speech_prob}
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class Transcript:
    text: str
    duration: float  # seconds of audio
    language: Optional[str] = None  # Whisper's name ("english"), when known
    segments: List[Segment] = field(default_factory=list)
    words: Optional[List[dict]] = None  # [{word, start, end}] when timestamp_granularities asks for words


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: the text's UTF-8 bytes over their gzip size (high for looping output)."""
    data = text.encode("utf-8")
    return len(data) / len(gzip.compress(data)) if data else 0.0


async def read_form(request, limit: int):
    """The request's multipart form (Starlette's FormData), its body at most ``limit`` bytes (413 past it).
    Close it (``await form.close()``) when done: the file may be spooled to a temporary file."""
    from starlette.formparsers import MultiPartException, MultiPartParser
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise CompletionError(415, "the body must be multipart/form-data (the audio in a field named 'file'), got "
                                   f"content type {kind or 'none'!r}", "file")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise CompletionError(413, f"the body is larger than {limit} bytes")

    async def body():
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise CompletionError(413, f"the body is larger than {limit} bytes")
            yield chunk

    parser = MultiPartParser(request.headers, body(), max_files=1, max_fields=len(_FIELDS) + 4,
                             max_part_size=_MAX_FIELD_BYTES)
    try:
        return await parser.parse()
    except MultiPartException as e:
        raise CompletionError(400, f"malformed multipart body: {e.message}", "file") from None


def _text(form_items, name: str) -> Optional[str]:
    values = [v for k, v in form_items if k == name]
    if not values:
        return None
    if len(values) > 1:
        raise CompletionError(400, f"{name} is given {len(values)} times", name)
    if not isinstance(values[0], str):
        raise CompletionError(400, f"{name} must be a text field, got a file", name)
    return values[0]


async def parse_form(form, task: str, served_name: str) -> SpeechRequest:
    """The request in ``form`` (``read_form``'s) for ``task``, each field checked (CompletionError 400 naming it)."""
    items = form.multi_items()
    for key, _ in items:
        if key not in _FIELDS:
            raise CompletionError(400, f"unknown field {key!r} (the audio API takes {', '.join(sorted(_FIELDS))})",
                                  key)
    uploads = [v for k, v in items if k == "file"]
    if not uploads:
        raise CompletionError(400, "the field 'file' (the audio) is required", "file")
    upload = uploads[0]
    if isinstance(upload, str):
        raise CompletionError(400, "file must be a file upload (multipart with a filename), got a text field",
                              "file")
    text = {k: _text(items, k) for k in _FIELDS - {"file", "timestamp_granularities[]", "timestamp_granularities"}}
    model = served_model({"model": text["model"], "user": text["user"]}, served_name)
    fmt = text["response_format"] or "json"
    if fmt not in FORMATS:
        raise bad("response_format", f"one of {', '.join(FORMATS)}", fmt)
    temperature = 0.0
    if text["temperature"] is not None and text["temperature"].strip():
        try:
            temperature = float(text["temperature"])
        except ValueError:
            raise bad("temperature", "a number between 0 and 1", text["temperature"]) from None
        if not (math.isfinite(temperature) and 0.0 <= temperature <= 1.0):
            raise bad("temperature", "a number between 0 and 1", text["temperature"])
    if text["stream"] is not None and text["stream"].strip().lower() not in ("false", "0", ""):
        raise CompletionError(400, "stream: streamed transcriptions are not supported (send stream=false)", "stream")
    granularities = []
    for key in ("timestamp_granularities[]", "timestamp_granularities"):
        for v in (v for k, v in items if k == key):
            if v not in ("segment", "word"):
                raise CompletionError(400, f"{key}: 'segment' or 'word', got {v!r}", key)
            granularities.append(v)
            if fmt != "verbose_json":
                raise CompletionError(400, f"{key} needs response_format verbose_json", key)
    prompt = (text["prompt"] or "").strip() or None  # (tokenized by the Transcriber, which has the tokenizer)
    language = (text["language"] or "").strip() or None
    if language is not None and len(language) > _MAX_LANGUAGE:
        raise CompletionError(400, f"language: a code ('fr'), a name ('french') or a language token ('<|fr|>') of at "
                                   f"most {_MAX_LANGUAGE} characters, got {language[:16]!r}... ({len(language)} "
                                   "characters)", "language")
    beams = _num_beams(text["num_beams"], temperature)
    grammar, param = _grammar(text)
    audio = await upload.read()
    return SpeechRequest(task, audio, upload.filename or "", model, language, prompt, fmt, temperature, beams,
                         tuple(dict.fromkeys(granularities)), grammar, param)


def _num_beams(value: Optional[str], temperature: float) -> Optional[int]:
    """The ``num_beams`` field: None when absent, else a whole number from 1 to MAX_BEAMS (beam search is greedy:
    more than one beam needs temperature 0, as Whisper's generate samples with one beam)."""
    if value is None or not value.strip():
        return None
    expected = f"a whole number from 1 to {MAX_BEAMS}"
    digits = value.strip().lstrip("0")
    # ASCII digits only (int() also reads "1_6", "+3" and other scripts' digits, "١٦"), a few of them
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 3:
        raise bad("num_beams", expected, value)
    beams = int(digits)
    if not 1 <= beams <= MAX_BEAMS:
        raise bad("num_beams", expected, value)
    if beams > 1 and temperature > 0:
        raise CompletionError(400, f"num_beams: beam search decodes at temperature 0 (a sampled transcription has one "
                                   f"beam), got num_beams={beams} with temperature={temperature:g}", "num_beams")
    return beams


def _grammar(text: dict):
    """(the Grammar the guided_* fields ask for, the field), or (None, None): structured.py's checks, the form's
    text read as the completions' JSON values (guided_choice a JSON list, guided_json a schema's text)."""
    from .structured import request_grammar
    given = {k: text[k] for k in ("guided_json", "guided_regex", "guided_choice", "guided_grammar")
             if text[k] is not None and text[k].strip()}
    if "guided_choice" in given:
        try:
            given["guided_choice"] = json.loads(given["guided_choice"])
        except (ValueError, RecursionError):  # RecursionError: nested too deep for json.loads (was a 500)
            raise bad("guided_choice", 'a JSON list of strings (["yes", "no"])', given["guided_choice"]) from None
    return request_grammar(given)


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render(t: Transcript, req: SpeechRequest) -> Tuple[object, str]:
    """(the answer, its media type) in the request's response_format: a dict for json and verbose_json (the caller
    serializes it), text for the others."""
    fmt = req.response_format
    if fmt == "json":
        return {"text": t.text}, "application/json"
    if fmt == "verbose_json":
        out = {"task": req.task, "language": t.language, "duration": round(t.duration, 3), "text": t.text,
               "segments": [s.as_json() for s in t.segments]}
        if "word" in req.granularities:
            out["words"] = t.words
            if "segment" not in req.granularities:  # (OpenAI's API: words alone, without the segments)
                del out["segments"]
        if t.language is None:
            del out["language"]
        return out, "application/json"
    if fmt == "text":
        return t.text + "\n", "text/plain; charset=utf-8"
    cues = [(s.start, s.end, s.text.strip()) for s in t.segments]
    if fmt == "srt":
        return "".join(f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{line}\n\n"
                       for i, (a, b, line) in enumerate(cues, start=1)), "text/plain; charset=utf-8"
    return "WEBVTT\n\n" + "".join(f"{_clock(a, '.')} --> {_clock(b, '.')}\n{line}\n\n"
                                  for a, b, line in cues), "text/vtt; charset=utf-8"
