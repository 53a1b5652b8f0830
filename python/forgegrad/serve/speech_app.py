"""Speech to text over HTTP: OpenAI's audio API for a Whisper checkpoint directory (``forgegrad serve WHISPER_DIR``).

    POST /v1/audio/transcriptions   multipart/form-data: file (WAV; FLAC, MP3, Ogg with the audio extra), model,
                                    language, prompt, response_format, temperature (speech_request.py)
    POST /v1/audio/translations     the same, the text in English
    GET  /v1/models  /ping  /health  /metrics

The file is decoded (forgegrad.data.audio.read_audio) and resampled to the feature extractor's rate on a helper thread,
its channels averaged, and turned into log-mel features (WhisperFeatureExtractor). Requests then wait for the model's
thread (encoder_app.EncoderQueue): it takes every request waiting, up to ``max_batch``, and runs those of one task,
temperature and way of choosing the language (given, or detected) through one batched generate, whose rows are
decoded independently (each row's tokens are its solo tokens, to float32 rounding). The text is the generated tokens
decoded without special tokens, its surrounding spaces stripped.

Audio of up to one window (chunk_length in preprocessor_config.json: 30 s) is one window's features; longer audio is
decoded window after window with timestamps (generate's long-form: each window starts where the last one's final
timestamp pair put it), and a batch of such requests runs with each row's frames behind an attention mask. json and
text of short audio decode without timestamps (transformers' short-form default); verbose_json, srt and vtt use
them, so their segments carry Whisper's start and end times. verbose_json also reports the audio's language (given,
or detected from the model's most likely language token after the start token, as generate detects it: one more
encoder pass over the first window). A checkpoint without timestamp tokens answers with one segment, the whole clip,
with Whisper's ``avg_logprob`` (the tokens' log-probabilities and the end token's, averaged over tokens + 1) and
``no_speech_prob``; it refuses audio longer than a window.

A ``prompt`` (a text the transcript should follow: names, spelling, style) becomes generate's ``prompt_ids`` as
transformers' ``WhisperTokenizer.get_prompt_ids`` makes them (<|startofprev|>, then the text's tokens; a long text
keeps its last max_target_positions // 2 - 1 tokens, as OpenAI's Whisper); every window of the audio is decoded
behind it, and the answer holds only the new text. A checkpoint whose tokenizer has no <|startofprev|> refuses it.

forgegrad's extension fields (speech_request.py): ``num_beams`` decodes with beam search (requests of one number of
beams share a generate, as Whisper's generate takes one number per call, so each gets its solo result), and
``guided_regex`` / ``guided_choice`` / ``guided_json`` / ``guided_grammar`` constrain each window's transcript text to
a grammar (whisper_grammar.py: Whisper's special tokens outside it); such a request is decoded alone, and one whose
grammar cannot go on gets a 400 naming its field.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..tensor import Tensor
from .completion_request import CompletionError
from .completions import GenerationServeConfig
from .encoder_app import EncoderQueue
from .openai_routes import common_routes, load_served, log, not_found, post_route
from .speech_request import Segment, SpeechRequest, Transcript, compression_ratio, parse_form, read_form, render
from .token_logprobs import log_softmax as _log_softmax

ROUTES = {"/v1/audio/transcriptions": "transcribe", "/v1/audio/translations": "translate"}


def is_speech_checkpoint(path: str) -> bool:
    """A Hugging Face directory holding a Whisper checkpoint (config.json's model_type or architecture)."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(cfg, dict):
        return False
    arch = cfg.get("architectures")
    return cfg.get("model_type") == "whisper" or (isinstance(arch, list) and "WhisperForConditionalGeneration" in arch)


class Transcriber:
    """A Whisper model, its feature extractor and tokenizer. ``prepare`` runs on any thread; ``transcribe`` on the
    queue's one thread."""

    def __init__(self, path: str, weights: str = "float32"):
        from ..models.hf import WhisperFeatureExtractor, WhisperForConditionalGeneration, from_pretrained
        from ..models.hf.logits_processors import generation_source
        from ..models.hf.tokenizer import HFTokenizer
        model = from_pretrained(path, dtype="bfloat16" if weights == "bfloat16" else "float32")
        if not isinstance(model, WhisperForConditionalGeneration):
            raise ValueError(f"{type(model).__name__} is not a Whisper model: the audio API serves Whisper")
        if weights == "int8":
            from ..quantization import quantize_weight_only
            model = quantize_weight_only(model, inplace=True)
        self.model = model.eval()
        self.extractor = WhisperFeatureExtractor.from_pretrained(path)
        file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(file):
            raise ValueError(f"{path} has no tokenizer.json: the transcript's tokens cannot be decoded to text")
        self.tokenizer = HFTokenizer(file)
        gc = dict(generation_source(model))
        lang, tasks = gc.get("lang_to_id"), gc.get("task_to_id")
        self.multilingual = gc.get("is_multilingual") is not False and isinstance(lang, dict) and \
            isinstance(tasks, dict)
        self.lang_to_id = lang if self.multilingual else {}
        self.task_to_id = tasks if self.multilingual else {}
        self.no_timestamps = gc.get("no_timestamps_token_id")
        self.forced = gc.get("forced_decoder_ids") or model.config.get("forced_decoder_ids") or []
        self.suppress = list(gc.get("suppress_tokens", model.config.get("suppress_tokens")) or [])
        self.begin_suppress = list(gc.get("begin_suppress_tokens", model.config.get("begin_suppress_tokens")) or [])
        eos = gc.get("eos_token_id", model.config.get("eos_token_id"))
        self.eos = eos[0] if isinstance(eos, list) and eos else eos
        pad = gc.get("pad_token_id")
        self.pad = (self.eos if self.eos is not None else 0) if pad is None else pad  # generate's padding
        no_speech = [self.tokenizer.token_id(t) for t in ("<|nospeech|>", "<|nocaptions|>")]
        self.no_speech = next((t for t in no_speech if t is not None), None)
        self.context = int(model.max_positions)
        self.window_s = float(self.extractor.chunk_length)
        self.prev_sot = self.tokenizer.token_id("<|startofprev|>")
        special = self.tokenizer.special_ids()
        self.first_special = special[0] if special else None
        self.alignment = gc.get("alignment_heads")  # word timestamps need them (token-level timestamps)
        self.num_beams = gc.get("num_beams") or 1  # generate's default number of beams
        # transformers' generic processors and watermark of generation_config.json (repetition_penalty, ...), which
        # generate applies before Whisper's: avg_logprob reads the tokens under them too
        from ..models.hf.generation import _config_vocab
        from ..models.hf.watermarking import Watermark
        from ..models.hf.whisper_settings import read_settings
        self.settings = read_settings(model, gc, {})
        mark = self.settings["watermarking_config"]
        self.watermark = None if mark is None else Watermark(mark, _config_vocab(model))

    def describe(self) -> str:
        return (f"{'multilingual' if self.multilingual else 'English-only'}, {self.window_s:g} s windows, "
                f"{self.extractor.sampling_rate} Hz")

    # ---- the request's audio and language, checked before it waits for the model --------------------------------
    def prepare(self, req: SpeechRequest, language: Optional[str]) -> "Job":
        """The request's file as a Job: its log-mel features, one window's (audio up to one window: padded to it)
        or, for longer audio, all its frames, decoded window after window with timestamps (CompletionError: 400 for
        a prompt or word timestamps this checkpoint cannot take, checked before the audio is decoded; 415 for a
        format that is not decoded, 400 for a broken or empty file)."""
        from ..data.audio import UnsupportedAudioFormat, load_audio
        # the request's settings first: a refused request's audio is not decoded
        if "word" in req.granularities and self.alignment is None:
            raise CompletionError(400, "timestamp_granularities[]: word timestamps need alignment_heads in this "
                                       "checkpoint's generation_config.json (the cross-attention heads that follow "
                                       "the audio)", "timestamp_granularities[]")
        prompt = self.prompt_ids(req.prompt, req.task) if req.prompt else ()
        grammar = self.grammar(req) if req.grammar is not None else None
        rate = self.extractor.sampling_rate
        try:
            samples = load_audio(req.audio, rate)
        except UnsupportedAudioFormat as e:
            raise CompletionError(415, f"file {req.filename!r}: {e}", "file") from None
        except ValueError as e:
            raise CompletionError(400, f"file {req.filename!r}: {e}", "file") from None
        if samples.size == 0:
            raise CompletionError(400, f"file {req.filename!r}: the audio holds no samples", "file")
        if not np.isfinite(samples).all():
            raise CompletionError(400, f"file {req.filename!r}: the audio holds NaN or infinite samples", "file")
        duration = samples.size / rate
        longform = samples.size > self.extractor.n_samples
        if longform and self.no_timestamps is None:
            raise CompletionError(400, f"file {req.filename!r}: the audio lasts {duration:.2f} s, more than one "
                                       f"window ({self.window_s:g} s), and this checkpoint has no timestamp tokens "
                                       "(no_timestamps_token_id) to decode long audio with: split it", "file")
        # timestamps: long audio needs them; the formats that show segments use them where the checkpoint has them
        timestamps = longform or (req.response_format in ("verbose_json", "srt", "vtt")
                                  and self.no_timestamps is not None)
        features = self.extractor(samples, padding="longest", truncation=False)["input_features"] if longform \
            else self.extractor(samples)["input_features"]
        frames = min(-(-samples.size // self.extractor.hop_length), features.shape[2])
        return Job(features, duration, req, language, timestamps, prompt, frames, grammar)

    def grammar(self, req: SpeechRequest):
        """The request's grammar as generate's GrammarLogitsProcessor on this checkpoint's tokenizer, checked as the
        completions check it (CompletionError 400 naming the field: a tokenizer llguidance cannot read, a grammar
        whose start the vocabulary cannot spell)."""
        from ..models.hf.constrained import GrammarLogitsProcessor
        from .structured import check_grammar
        if self.eos is None:
            raise CompletionError(400, f"{req.grammar_param}: this checkpoint has no end token to end a constrained "
                                       "transcript with", req.grammar_param)
        check_grammar(req, self.tokenizer, self.model.vocab_size, [int(self.eos)])
        return GrammarLogitsProcessor(self.tokenizer, req.grammar, int(self.eos), self.model.vocab_size)

    def prompt_ids(self, text: str, task: str) -> Tuple[int, ...]:
        """The ``prompt`` field as generate's prompt_ids, as transformers' ``WhisperTokenizer.get_prompt_ids(text)``
        makes them: <|startofprev|>, then the tokens of " " + the stripped text, no special token among them; a longer
        text keeps its last max_target_positions // 2 - 1 tokens, as OpenAI's Whisper keeps them (the API reads the
        prompt's final 224 tokens). CompletionError 400 naming ``prompt`` otherwise."""
        if self.prev_sot is None:
            raise CompletionError(400, "prompt: this checkpoint's tokenizer has no <|startofprev|> token to put a "
                                       "prompt behind", "prompt")
        ids = self.tokenizer.encode(" " + text.strip())
        special = next((t for t in ids if self.first_special is not None and t >= self.first_special), None)
        if special is not None:
            raise CompletionError(400, f"prompt: the text holds the special token {self.tokenizer.decode([special])!r}"
                                       " (a prompt is plain text)", "prompt")
        ids = (int(self.prev_sot),) + tuple(ids[-(self.context // 2 - 1):])
        if self.context - len(self._prompt(None, task)) - len(ids) < 1:
            raise CompletionError(400, f"prompt: its {len(ids)} tokens leave the decoder ({self.context} positions) "
                                       "no room to transcribe", "prompt")
        return ids

    def language_token(self, req: SpeechRequest) -> Optional[str]:
        """The request's language as this checkpoint's language token ('<|fr|>'), None to detect it."""
        from ..models.hf.whisper_prompt import language_id
        if req.task == "translate" and not self.multilingual:
            raise CompletionError(400, "this checkpoint is English-only: it transcribes English and cannot "
                                       "translate", "model")
        if self.multilingual and req.task not in self.task_to_id:
            raise CompletionError(400, f"this checkpoint's task_to_id has no {req.task!r} task", "model")
        if req.language is None:
            return None
        if not self.multilingual:
            if req.language.lower() not in ("en", "english", "<|en|>"):
                raise CompletionError(400, f"language: this checkpoint is English-only, got {req.language!r}",
                                      "language")
            return None
        try:
            token = language_id(req.language, self.lang_to_id)
        except (TypeError, ValueError) as e:
            raise CompletionError(400, f"language: {str(e).replace('generate: ', '')}", "language") from None
        return next(k for k, v in self.lang_to_id.items() if v == token)

    # ---- the model, on the worker ------------------------------------------------------------------------------
    def _prompt(self, language: Optional[str], task: str) -> List[int]:
        """The decoder prompt generate builds for a language and task (multilingual) or from forced_decoder_ids."""
        row = [self.model.decoder_start_token_id]
        if self.multilingual:  # (language None: the prompt's length only, the language still to be detected)
            row += [int(self.lang_to_id.get(language, -1)), int(self.task_to_id[task])]
        elif self.forced and self.forced[0][0] == 1:
            row += [int(t) for _, t in self.forced]
        if self.no_timestamps is not None and row[-1] != self.no_timestamps:
            row.append(int(self.no_timestamps))
        return row

    def transcribe(self, jobs: List["Job"]) -> List[Transcript]:
        """The transcripts of ``jobs``: those of one task, temperature, way of choosing the language (given, or
        detected by generate), use of timestamps and form (one window, or long audio) run through one batched
        generate (long audio: each row's frames padded to the group's longest, with an attention mask). verbose_json's
        jobs first run the first window through the encoder and the step after the start token, together: their
        language detection (generate's, done here to report it) and, without timestamps, the states avg_logprob
        and no_speech_prob are scored on. A request's prompt (prompt_ids) goes with it: those of one prompt share a
        generate; so do those of one number of beams (SpeechRequest.num_beams: generate takes one per call), but for
        word times by beam search and for a grammar (guided_*), decoded one request at a time. A request whose grammar
        cannot go on gets its 400 (CompletionError) in place of its transcript."""
        from ..autograd import no_grad
        from ..models.hf.constrained import GrammarError
        from .structured import row_failed
        model = self.model
        window = model.num_frames
        extras = {}  # job index -> its encoder states (of the first window)
        verbose = [i for i, j in enumerate(jobs) if j.req.response_format == "verbose_json"
                   and (not j.timestamps or (j.language is None and self.multilingual))]
        groups: dict = {}
        with no_grad():
            if verbose:
                first = np.concatenate([jobs[i].features[:, :, :window] for i in verbose])
                states = model.encode(first).numpy()
                start = np.full((len(verbose), 1), model.decoder_start_token_id, np.int64)
                logits = model.decode(start, Tensor._stored(states)).numpy()[:, -1]
                names = sorted(self.lang_to_id, key=self.lang_to_id.get)
                ids = [int(self.lang_to_id[k]) for k in names]
                for r, i in enumerate(verbose):
                    extras[i] = states[r:r + 1]
                    if jobs[i].language is None and ids:
                        jobs[i].language = names[int(np.argmax(logits[r, ids]))]
            for i, job in enumerate(jobs):
                words = "word" in job.req.granularities
                # word times by beam search are decoded alone: transformers aligns a hypothesis shorter than its
                # batch's longest, past its end, on the batch's first row, which would tie one file's times to
                # another's
                alone = i if words and (job.req.num_beams or self.num_beams) > 1 else None
                # a grammar's request is decoded alone too: its own grammar, and a dead end fails it alone
                alone = i if job.grammar is not None else alone
                key = (job.req.task, job.req.temperature, job.language is None, job.timestamps,
                       job.features.shape[2] > window, job.prompt, job.req.num_beams, words, alone)
                groups.setdefault(key, []).append(i)
            rows = {}
            failed = {}  # job index -> the error its request gets (a grammar that cannot go on)
            times = {}  # job index -> each token's time (word timestamps)
            for (task, temperature, detect, timestamps, longform, prompt, beams, words, _), members in groups.items():
                max_new = self.context - len(self._prompt(None, task)) - len(prompt)  # all the room the decoder has
                language = None if detect or not self.multilingual else [jobs[i].language for i in members]
                frames = [jobs[i].features.shape[2] for i in members]
                features = np.zeros((len(members),) + jobs[members[0]].features.shape[1:2] + (max(frames),),
                                    np.float32)
                for r, i in enumerate(members):
                    features[r, :, :frames[r]] = jobs[i].features[0]
                if words and not longform:  # the audio's frames: token timestamps align those only
                    frames = [jobs[i].frames for i in members]
                mask = (np.arange(features.shape[2])[None, :] < np.array(frames)[:, None]).astype(np.int64) \
                    if longform or words else None
                try:
                    out = model.generate(features, language=language, task=task if self.multilingual else None,
                                         do_sample=temperature > 0,
                                         temperature=temperature if temperature > 0 else None,
                                         max_new_tokens=max_new, return_timestamps=timestamps,
                                         return_segments=timestamps, attention_mask=mask,
                                         condition_on_prev_tokens=False, prompt_ids=list(prompt) if prompt else None,
                                         num_beams=beams, return_token_timestamps=words or None,
                                         logits_processor=jobs[members[0]].grammar)
                except GrammarError as e:  # (a grammar's request is decoded alone) its grammar cannot go on: a 400
                    for i in members:
                        failed[i] = row_failed(jobs[i].req, e)
                    continue
                for r, i in enumerate(members):
                    if timestamps:
                        rows[i] = ([(float(g["start"]), float(g["end"]), g["tokens"].tolist())
                                    for g in out["segments"][r]], max_new)
                        if words:
                            times[i] = [float(v) for g in out["segments"][r] for v in g["token_timestamps"]]
                        continue
                    tokens = (out["sequences"] if words else out)[r].tolist()
                    while len(members) > 1 and tokens and tokens[-1] == self.pad:  # the batch's padding
                        tokens.pop()
                    rows[i] = ([(0.0, jobs[i].duration, tokens)], max_new)
                    if words:
                        times[i] = out["token_timestamps"][r, :len(tokens)].tolist()
            return [failed[i] if i in failed else self._transcript(job, *rows[i], extras.get(i), times.get(i))
                    for i, job in enumerate(jobs)]

    def _text(self, tokens: List[int]) -> str:
        """Tokens to text: special tokens skipped, timestamps too (whatever the tokenizer calls them)."""
        if self.no_timestamps is not None:
            tokens = [t for t in tokens if t <= self.no_timestamps]  # the timestamps close the vocabulary
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _transcript(self, job: "Job", pieces: List[Tuple[float, float, List[int]]], max_new: int,
                    extra, times: Optional[List[float]] = None) -> Transcript:
        """The transcript of ``pieces`` (start, end, tokens): without timestamps one piece, the whole clip; with
        ``times`` (each token's, in seconds) its words too."""
        req = job.req
        t = Transcript(self._text([tok for _, _, tokens in pieces for tok in tokens]).strip(), job.duration)
        if req.response_format in ("json", "text"):
            return t
        for k, (start, end, tokens) in enumerate(pieces):
            text = self._text(tokens)
            t.segments.append(Segment(k, int(round(start * 100)), start, end, text, tokens, req.temperature,
                                      None, compression_ratio(text)))
        if req.response_format == "verbose_json":
            from ..models.hf.whisper_prompt import LANGUAGES
            code = job.language.strip("<|>") if job.language else "en"  # an English-only checkpoint: no token
            t.language = LANGUAGES.get(code, code)
            if times is not None:
                from .speech_words import word_timestamps
                first = self.first_special if self.first_special is not None else self.eos
                t.words = word_timestamps(self.tokenizer.decode, [tok for _, _, toks in pieces for tok in toks],
                                          times, t.language, first)
            if not job.timestamps:  # Whisper's avg_logprob and no_speech_prob of the one window
                states = extra
                [(_, _, tokens)] = pieces
                segment = t.segments[0]
                segment.avg_logprob, start_logits = self._scores(states, list(job.prompt),
                                                                 self._prompt(job.language, req.task), tokens, max_new,
                                                                 job.grammar)
                if self.no_speech is not None:
                    segment.no_speech_prob = float(np.exp(_log_softmax(start_logits)[self.no_speech]))
        return t

    embed = transcribe  # encoder_app.EncoderQueue's call: the results of the requests waiting, one each

    def _scores(self, states, text_prompt: List[int], prompt: List[int], tokens: List[int],
                max_new: int, grammar=None) -> Tuple[float, np.ndarray]:
        """Whisper's avg_logprob: the generated tokens' log-probabilities (under the processors generate decoded
        them with: generation_config.json's generic ones (repetition_penalty, ...), the suppressed tokens' masks,
        the request's grammar and the watermark, before any temperature), and the end token's when the text ended
        with it, summed over len(tokens) + 1; and the logits after the start token (no_speech_prob's), all behind
        the text prompt where there is one."""
        from ..autograd import no_grad
        from ..models.hf.whisper_settings import window_processors
        prompt = text_prompt + prompt
        ids = np.array([prompt + tokens], np.int64)
        with no_grad():
            logits = self.model.decode(ids, Tensor._stored(states)).numpy()
        start = np.array(logits[0, len(text_prompt)])
        logits = logits[0, len(prompt) - 1:]
        scores = np.array(logits, np.float64)
        eos = [] if self.eos is None else [int(self.eos)]
        processors = window_processors(self.settings, eos, len(prompt), None, max_new)
        if processors is not None:  # step n's scores after the prompt and the first n tokens, as generate's
            for n in range(len(scores)):
                scores[n] = processors(ids[:, :len(prompt) + n], scores[n:n + 1].astype(np.float32))[0]
        if self.suppress:
            scores[:, self.suppress] = -np.inf
        if self.begin_suppress:
            scores[0, self.begin_suppress] = -np.inf
        ended = len(tokens) < max_new and self.eos is not None  # (else the window stopped at its length limit)
        if grammar is not None:  # the grammar's masks at each step generate took, as it decoded under them
            from ..models.hf.whisper_grammar import whisper_grammar
            window = whisper_grammar(grammar, int(self.eos), self.model.vocab_size).window()
            # not past a text cut off by the length limit: generate never asked the grammar there (a dead end
            # would raise)
            for n in range(len(tokens) + ended):
                window(np.array(tokens[:n], np.int64).reshape(1, n), scores[n:n + 1])
        if self.watermark is not None:  # last, after every processor (transformers' WatermarkLogitsProcessor)
            for n in range(len(scores)):
                scores[n] = self.watermark(ids[:, :len(prompt) + n], scores[n:n + 1])[0]
        logp = _log_softmax(scores)
        total = float(logp[np.arange(len(tokens)), tokens].sum())
        if ended:
            total += float(logp[len(tokens), self.eos])
        return total / (len(tokens) + 1), start


@dataclass
class Job:
    """One request's window on its way through the queue."""
    features: np.ndarray  # (1, mels, frames): one window, or more for long audio
    duration: float
    req: SpeechRequest
    language: Optional[str]  # the language token ('<|fr|>'); None: generate detects it
    timestamps: bool  # decoded with timestamp tokens (long audio; the formats that show segments)
    prompt: Tuple[int, ...] = ()  # the prompt field's prompt_ids (<|startofprev|> and its tokens), () without one
    frames: int = 0  # the audio's log-mel frames (without the window's padding)
    grammar: Optional[object] = None  # generate's GrammarLogitsProcessor for the request's guided_* field


@dataclass
class SpeechServeConfig(GenerationServeConfig):
    """Settings of ``forgegrad serve`` for a Whisper checkpoint directory: a generation server's (the flags of the same
    names; ``max_batch``: the requests taken together by the model's thread; ``prefill_chunk`` unused)."""


def create_speech_app(config: SpeechServeConfig):
    """The Starlette app serving ``config.model_path`` (a Whisper directory, loaded at startup) at OpenAI's
    ``/v1/audio/transcriptions`` and ``/v1/audio/translations``."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.responses import Response

    from .metrics import Metrics

    try:
        import python_multipart  # noqa: F401  (Starlette's form parser)
    except ImportError:
        raise ImportError('the audio API needs python-multipart: pip install "forgegrad[serve]"') from None
    config.validate()
    if not is_speech_checkpoint(config.model_path):
        raise ValueError(f"{config.model_path!r} holds no Whisper checkpoint (config.json's model_type 'whisper')")
    metrics = Metrics()
    name = config.model_name or os.path.basename(os.path.abspath(config.model_path).rstrip(os.sep))
    seconds = metrics._pc.Counter("forgegrad_audio_seconds", "seconds of audio transcribed or translated", ["model"],
                                  registry=metrics.registry).labels(name)
    loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="forgegrad-load")
    state = {"transcriber": None, "queue": None, "queued": 0}

    async def answer(request, task: str):
        form = await read_form(request, config.max_body_bytes)
        try:
            req = await parse_form(form, task, name)
        finally:
            await form.close()
        tr: Transcriber = state["transcriber"]
        language = tr.language_token(req)
        if state["queued"] >= config.max_queue:
            raise CompletionError(503, f"{state['queued']} requests are already waiting; retry later",
                                  headers={"Retry-After": "1"})
        state["queued"] += 1
        metrics.queue_depth(name, state["queued"])
        loop = asyncio.get_running_loop()
        try:
            job = await loop.run_in_executor(None, tr.prepare, req, language)  # off the loop, beside the model
            [transcript] = await asyncio.wrap_future(state["queue"].submit([job]))
        finally:
            state["queued"] -= 1
            metrics.queue_depth(name, state["queued"])
        if isinstance(transcript, Exception):  # this request alone failed (its grammar could not go on)
            raise transcript
        seconds.inc(job.duration)
        body, media = render(transcript, req)
        if isinstance(body, dict):
            body = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        return Response(body, 200, media_type=media)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            state["transcriber"] = await load_served(app, config, loader, Transcriber)
        finally:
            loader.shutdown(wait=False)
        state["queue"] = EncoderQueue(state["transcriber"], config.max_batch,
                                      lambda rows, seconds: metrics.batch(name, rows, seconds))
        log.info("serving %s (%s weights, %s) at %s, up to %d requests a batch", name, config.weights,
                 state["transcriber"].describe(), ", ".join(ROUTES), config.max_batch)
        try:
            yield
        finally:
            state["queue"].close()

    routes = [post_route(route, lambda request, task=task: answer(request, task), metrics, name)
              for route, task in ROUTES.items()]
    routes += common_routes(name, int(time.time()), lambda: state["transcriber"].context, metrics)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.config, app.state.metrics, app.state.startup_error = config, metrics, None
    return app
