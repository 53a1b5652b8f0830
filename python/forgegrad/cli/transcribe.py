"""``forgegrad transcribe AUDIO... --model WHISPER_DIR``: speech to text with a Whisper checkpoint directory, as
openai-whisper's and whisper.cpp's command lines: the text, JSON or subtitles of each file on stdout or in files.

The work is the audio API's (serve/speech_app.py's Transcriber, serve/speech_request.py's render): the same decoding
and resampling, features, generate call (timestamps for long audio and for verbose_json / srt / vtt, the prompt as
prompt_ids) and formats, so a file gives the text ``forgegrad serve`` answers for it. Files are transcribed one after
another; a file that cannot be read or decoded is reported and skipped, the others still transcribed (exit 2 at the
end).

Structured outputs take the audio API's fields as flags of the same names (``--guided-regex``, ``--guided-choice``,
``--guided-json``, ``--guided-grammar``: its guided_* fields, checked by the same code, serve/structured.py): each
window's transcript text matches the grammar, Whisper's special tokens outside it. The schema and the grammar are
read from files; a grammar is checked against the checkpoint's tokenizer once, before any audio is read, and a file
whose decoding the grammar cannot go on with is reported and skipped as an unreadable one.
"""
from __future__ import annotations

import json
import os
import sys
import time

from ._argtypes import non_negative_float, positive_int
from ._errors import CLIError, UsageError

FORMATS = ("text", "json", "verbose_json", "srt", "vtt")
EXTENSIONS = {"text": "txt", "json": "json", "verbose_json": "json", "srt": "srt", "vtt": "vtt"}
_FLAGS = {"language": "--language", "prompt": "--prompt", "model": "--task"}  # the API's field -> the flag
# the audio API's structured-output fields, each a flag of the same name (serve/structured.py's GUIDED)
GUIDED = ("guided_regex", "guided_choice", "guided_json", "guided_grammar")
_FROM_FILE = ("guided_json", "guided_grammar")  # read from a file (a schema, a grammar: long, multi-line texts)
_FLAGS.update({name: "--" + name.replace("_", "-") for name in GUIDED})


def add_parser(sub):
    p = sub.add_parser("transcribe", help="transcribe or translate audio files with a Whisper checkpoint directory",
                       description="Transcribe audio files with a Whisper checkpoint directory (as transformers' "
                                   "save_pretrained writes it: config.json, safetensors, preprocessor_config.json, "
                                   "tokenizer.json): WAV always; FLAC, MP3, Ogg and AIFF with the audio extra (pip "
                                   "install \"forgegrad[audio]\"). Audio longer than one window (30 s) is decoded "
                                   "window after window with timestamps. The result of each file goes to stdout "
                                   "(several files: text, srt and vtt each after a '==> FILE <==' line, json one "
                                   "object a line), or with --output to a file or to DIR/<stem>.<txt|json|srt|vtt>. "
                                   "The same transcription as forgegrad serve's /v1/audio/transcriptions.")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files; - reads one from stdin")
    p.add_argument("--model", required=True, metavar="WHISPER_DIR", help="the Whisper checkpoint directory")
    p.add_argument("--language", default=None, help="the audio's language: a code (fr), a name (french) or "
                   "Whisper's token (<|fr|>); default: detected from the first window (multilingual checkpoints)")
    p.add_argument("--task", choices=("transcribe", "translate"), default="transcribe",
                   help="transcribe (default: the text in the audio's language) or translate (the text in English)")
    p.add_argument("--format", choices=FORMATS, default="text", dest="response_format",
                   help="text (default), json ({\"text\"}), verbose_json (language, duration, timestamped segments "
                        "with avg_logprob and compression_ratio), srt or vtt subtitles")
    p.add_argument("--output", "-o", default=None, metavar="FILE|DIR",
                   help="write the result to FILE (one input) or to DIR/<stem>.<ext> for each input (an existing "
                        "directory, a path ending with '/', or several inputs: created if missing), each file "
                        "written atomically; default: stdout")
    p.add_argument("--temperature", type=non_negative_float, default=0.0,
                   help="0 (default): greedy decoding; > 0: sample at this temperature")
    p.add_argument("--num-beams", type=positive_int, default=None, metavar="K",
                   help="beam search with K beams (default: the checkpoint's generation_config.json, else 1)")
    p.add_argument("--prompt", default=None, metavar="TEXT",
                   help="a text the transcript follows (names, spelling, style): Whisper's previous-text prompt")
    g = p.add_argument_group("structured outputs", "each window's transcript text matches a grammar (the audio API's "
                             "guided_* fields, one of them; the checkpoint's tokenizer.json must be one llguidance "
                             "reads, a BPE's); a grammar's source may have at most 65536 characters")
    guided = g.add_mutually_exclusive_group()
    guided.add_argument("--guided-regex", default=None, metavar="REGEX",
                        help="the text is a whole match of REGEX (e.g. ' ?[0-9 ]+': digits and spaces)")
    guided.add_argument("--guided-choice", action="append", default=None, metavar="TEXT",
                        help="the text is exactly one of the TEXTs: give the flag once for each choice")
    guided.add_argument("--guided-json", default=None, metavar="FILE",
                        help="a JSON schema's file: the text is JSON that it accepts")
    guided.add_argument("--guided-grammar", default=None, metavar="FILE",
                        help="a Lark or GBNF grammar's file: the text is a sentence of it")
    p.add_argument("--threads", type=positive_int, default=None, help="forgegrad kernel threads")
    p.add_argument("--weights", choices=("float32", "bfloat16", "int8"), default="float32",
                   help="the Linear layers' weights: float32 (default), bfloat16 or int8 (weight-only)")
    p.add_argument("--no-freeze", dest="freeze", action="store_false",
                   help="run the model as loaded; by default it is frozen in place as forgegrad serve freezes it "
                        "(nn.utils.freeze(model, inplace=True): its float32 Linear weights packed once for the "
                        "GEMM, the same text; not where the packed copies would take more than half the available "
                        "memory)")
    p.set_defaults(run=run)
    return p


def _targets(args) -> list:
    """Where each input's result goes: None for stdout, else a path; UsageError for a clash, before any work."""
    inputs, out = args.audio, args.output
    if out is None:
        return [None] * len(inputs)
    into_dir = os.path.isdir(out) or out.endswith(("/", os.sep)) or len(inputs) > 1
    if not into_dir:
        return [out]
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--output {out!r} is a file; several inputs need a directory")
    ext = EXTENSIONS[args.response_format]
    targets, seen = [], {}
    for name in inputs:
        stem = "stdin" if name == "-" else os.path.splitext(os.path.basename(name))[0]
        target = os.path.join(out, f"{stem}.{ext}")
        if target in seen:
            raise UsageError(f"--output {out!r}: {seen[target]!r} and {name!r} would both be written to "
                             f"{target!r}; transcribe them separately")
        seen[target] = name
        targets.append(target)
    return targets


def _check_inputs(args) -> None:
    if args.audio.count("-") > 1:
        raise UsageError("AUDIO: '-' (stdin) can be given once")
    for name in args.audio:
        if name != "-" and not os.path.isfile(name):
            raise UsageError(f"AUDIO {name!r}: " + ("is a directory" if os.path.isdir(name) else "no such file"))


def _load(args):
    """The Transcriber of --model, its model frozen in place unless --no-freeze (UsageError: not a Whisper
    directory, or one that cannot be read)."""
    from ..models.hf import CheckpointError
    from ..serve.speech_app import Transcriber, is_speech_checkpoint
    if not os.path.isdir(args.model):
        raise UsageError(f"--model {args.model!r} is not a directory (a Whisper checkpoint, as transformers' "
                         "save_pretrained writes it)")
    if not is_speech_checkpoint(args.model):
        raise UsageError(f"--model {args.model!r} holds no Whisper checkpoint (config.json's model_type 'whisper')")
    try:
        tr = Transcriber(args.model, args.weights)
    except (CheckpointError, ValueError, OSError) as e:
        raise UsageError(f"--model {args.model!r}: {e}") from None
    if args.freeze:  # as the audio API's server does (openai_routes.served_model)
        from ..serve.openai_routes import freeze_in_place
        freeze_in_place(tr.model, args.model)
    return tr


def _message(e) -> str:
    """A CompletionError's message naming the command's argument in place of the API's field."""
    text = e.message
    if e.param not in _FLAGS:
        return text
    if text.startswith(e.param + ": "):
        text = text[len(e.param) + 2:]
    elif text.startswith(e.param + " "):  # "guided_json has 70000 characters; ..."
        return _FLAGS[e.param] + text[len(e.param):]
    return f"{_FLAGS[e.param]}: {text}"


def _guided(args) -> dict:
    """The guided_* field the flags give ({} for none), as the audio API's form gives it: --guided-json's and
    --guided-grammar's files read as UTF-8 text (UsageError naming the flag: missing, a directory, unreadable, not
    UTF-8, too large to be a grammar, or for a schema not JSON), --guided-choice's TEXTs as the list."""
    from ..serve.structured import MAX_GRAMMAR_CHARS
    given = {name: getattr(args, name) for name in GUIDED if getattr(args, name) is not None}
    for name in _FROM_FILE:
        if name not in given:
            continue
        path, flag = given[name], _FLAGS[name]
        if os.path.isdir(path):
            what = "schema" if name == "guided_json" else "grammar"
            raise UsageError(f"{flag} {path!r} is a directory (give the {what}'s file)")
        if not os.path.isfile(path):
            raise UsageError(f"{flag} {path!r}: no such file")
        size = os.path.getsize(path)
        if size > 4 * MAX_GRAMMAR_CHARS:  # more characters than the limit whatever the encoding: not read
            raise UsageError(f"{flag} {path!r} has {size} bytes; a grammar (a regex, a Lark or GBNF grammar, a JSON "
                             f"schema's text, the choices together) may have at most {MAX_GRAMMAR_CHARS} characters")
        try:
            with open(path, "rb") as f:
                given[name] = f.read().decode("utf-8")
        except OSError as e:
            raise UsageError(f"{flag} {path!r}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise UsageError(f"{flag} {path!r} is not UTF-8 text (byte {e.start})") from None
        if name == "guided_json":
            try:
                json.loads(given[name])
            except (ValueError, RecursionError) as e:  # (RecursionError: nested too deep)
                raise UsageError(f"{flag} {path!r} is not JSON (a JSON schema's file): {e}") from None
    return given


def run(args, out=None):
    out = sys.stdout if out is None else out
    from ..serve.completion_request import CompletionError
    from ..serve.speech_request import SpeechRequest, render
    _check_inputs(args)
    targets = _targets(args)
    if args.threads is not None:
        from .._runtime import set_num_threads
        set_num_threads(args.threads)
    if args.num_beams is not None and args.num_beams > 1 and args.temperature > 0:  # as the audio API refuses it
        raise UsageError(f"--num-beams: beam search decodes at temperature 0 (a sampled transcription has one beam), "
                         f"got --num-beams {args.num_beams} with --temperature {args.temperature:g}")
    language = (args.language or "").strip() or None
    prompt = (args.prompt or "").strip() or None
    from ..serve.structured import request_grammar
    try:  # the grammar's source, before the model is loaded
        grammar, param = request_grammar(_guided(args))
    except CompletionError as e:
        raise UsageError(_message(e)) from None
    tr = _load(args)
    probe = SpeechRequest(args.task, b"", "", language=language, prompt=prompt, grammar=grammar,
                          grammar_param=param)
    try:  # the language, task, prompt and grammar are checked once, before any file is read
        token = tr.language_token(probe)
        if prompt:
            tr.prompt_ids(prompt, args.task)
        if grammar is not None:
            tr.grammar(probe)
    except CompletionError as e:
        raise UsageError(_message(e)) from None
    for folder in {os.path.dirname(t) for t in targets if t is not None and os.path.dirname(t)}:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--output: cannot create the directory {folder!r}: {e.strerror or e}") from None
    progress = sys.stderr.isatty()
    failed = 0
    for k, (name, target) in enumerate(zip(args.audio, targets), start=1):
        shown = "stdin" if name == "-" else name
        start = time.perf_counter()
        try:
            data = sys.stdin.buffer.read() if name == "-" else _read(name)
            req = SpeechRequest(args.task, data, shown, language=language, prompt=prompt,
                                response_format=args.response_format, temperature=args.temperature,
                                num_beams=args.num_beams, grammar=grammar, grammar_param=param)
            job = tr.prepare(req, token)
        except CompletionError as e:
            print(f"forgegrad: error: {e.message}", file=sys.stderr)
            failed += 1
            continue
        except OSError as e:
            print(f"forgegrad: error: AUDIO {name!r}: {e.strerror or e}", file=sys.stderr)
            failed += 1
            continue
        try:
            [transcript] = tr.transcribe([job])
        except ValueError as e:  # generate's refusal of a setting (e.g. beams with sampling's options)
            raise UsageError(str(e)) from None
        if isinstance(transcript, CompletionError):  # its grammar could not go on (the API's 400): this file only
            print(f"forgegrad: error: AUDIO {shown!r}: {_message(transcript)}", file=sys.stderr)
            failed += 1
            continue
        body, _ = render(transcript, req)
        if isinstance(body, dict):
            body = json.dumps(body, ensure_ascii=False) + "\n"
        _emit(body, target, out, shown if len(args.audio) > 1 and not args.response_format.endswith("json")
              else None)
        if progress:
            where = f" -> {target}" if target else ""
            print(f"[{k}/{len(args.audio)}] {shown}{where}: {job.duration:.1f} s of audio in "
                  f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    if failed:
        raise UsageError(f"{failed} of {len(args.audio)} files could not be transcribed (above)")
    return 0


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _emit(body: str, target, out, header) -> None:
    """The result on stdout (several text, srt or vtt results each after a '==> FILE <==' line, as head's), or
    written atomically to ``target``."""
    if target is None:
        if header is not None:
            out.write(f"==> {header} <==\n")
        out.write(body)
        out.flush()
        return
    from .._atomic_io import atomic_write
    data = body.encode("utf-8")
    try:
        atomic_write(target, lambda f: f.write(data), who="--output")
    except OSError as e:
        raise CLIError(f"--output: cannot write {target!r}: {e.strerror or e}") from None
