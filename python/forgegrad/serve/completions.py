"""Text generation over HTTP: OpenAI's completions and chat completions APIs for a Hugging Face decoder
checkpoint.

    forgegrad serve CHECKPOINT_DIR [--weights float32|bfloat16|int8]

CHECKPOINT_DIR is what transformers' ``save_pretrained`` writes (config.json + safetensors; its
tokenizer.json if present, else byte tokens), any decoder ``forgegrad.models.from_pretrained`` loads.

    POST /v1/completions   {"prompt": "...", "max_tokens": 16, "temperature": 1, "top_p": 1, "top_k": null,
                            "seed": null, "stop": null, "stream": false}   (completion_request.py)
    POST /v1/chat/completions  {"messages": [{"role": "user", "content": "..."}], ...the same fields}: the
                           messages rendered with the checkpoint's chat template (models/hf/chat_template.py);
                           "tools": the model's calls read out of its text (tool_calls.py)
    GET  /v1/models        the served model
    GET  /ping  /health    liveness
    GET  /metrics          Prometheus: requests, latency, queue depth, tokens generated

Completions decode together, up to ``max_batch`` of them in one batched step, and a new request joins at the next step
(continuous batching: generation_batch.py; chat requests with images too, their prompts prefilled in one call with the
images, or from the prefix cache where its blocks, keyed by the images, hold every image token (image_prefix.py;
Qwen2-VL's rows at their own M-RoPE offset), save beam searches, which decode alone; encoder-decoders:
seq2seq_batch.py, each request's encoder run once as it joins); models the batched step does not cover (Phi-3's
longrope, modified modules) and ``max_batch=1`` generate one request at a time, in arrival order.
The decoder-only engine keeps every row's keys and values in one pool of blocks (a paged KV cache: paged_batch.py,
kv_pool.py, up to ``kv_cache_mb``; rows take blocks as they grow, and when it is full the row that came last is
preempted: its keys are recomputed once blocks are free, its stream only pauses); so does the
encoder-decoders' (BART's family with PEGASUS-X and NLLB-MoE, and T5's: paged_seq2seq.py, the decoder's keys and the
encoder's, rows preempted and encoded again when it is full; T5's relative-position bias a table by distance in the
paged kernel; ProphetNet, whose bias is each row's query's, on seq2seq_batch.py's contiguous cache). The
server keeps prompts' prefilled keys and values by block (prefix_cache.py, up to ``prefix_cache_mb``; batched, as
blocks of that pool shared by reference, or one at a time alike), so a prompt that starts like an earlier one (a
chat's system prompt and turns) prefills only the rest; ``usage.prompt_tokens_details.cached_tokens`` says how many it
reused. A model it does not apply to (an encoder-decoder, a length-dependent rope) is served without one, and the
startup log says why. Up to ``max_queue`` requests wait or run; more get 503 + Retry-After. ``stream: true`` answers
with server-sent events (``data: {...}`` chunks, then ``data: [DONE]``), each chunk with its tokens' log-probabilities
when ``logprobs`` asks for them (token_logprobs.py); a client that disconnects stops its generation at the next token.

Text is streamed only once it is final: a trailing incomplete UTF-8 character, or a tail that could
still become one of the ``stop`` strings, is held back until the next token decides it. A stop string
ends the completion before it (finish_reason "stop"), as does the model's end-of-sequence token;
``max_tokens`` reached gives "length". ``seed`` makes sampling repeatable (the worker reseeds
forgegrad's generator for that request); temperature 0 is greedy decoding.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from dataclasses import replace
from typing import Callable, List, Optional

from .beam_completions import complete_beams
from .completion_format import ChatShape, TextShape, event
from .chat_images import image_inputs
from .chat_request import parse_chat
from .completion_request import CompletionError, CompletionRequest, Prompt, check_rows, choice_seed, parse
from .engine_setup import paged_engine, prefix_cache_for
from .generation_config import WEIGHTS, GenerationServeConfig, is_checkpoint_dir  # noqa: F401  (imported from here)
from .generation_batch import Job, batching_applies, image_batching_applies
from .paged_batch import PagedBatchEngine
from .paged_seq2seq import paged_seq2seq_applies
from .openai_routes import common_routes, load_served, not_found, ok, post_route, read_body
from .row_settings import ServedGeneration
from .seq2seq_batch import Seq2SeqBatchEngine
from .text_stream import Completion, TextStream
from .tool_calls import tool_format
from .token_logprobs import (StreamLogprobs, chat_logprobs, completion_logprobs, entry, log_softmax, step_entry,
                             token_logprob)

log = logging.getLogger("forgegrad.serve")
# a prompt text longer than this many characters per token of the context is tokenized only that far first (no
# tokenizer's tokens average more, save runs of one character: those texts are then tokenized whole)
MAX_TOKEN_CHARS = 32


class _Finished(Exception):
    """Raised from generate's streamer to end a completion early (stop string, end of sequence, or the
    client went away)."""


class TextGenerator:
    """A decoder and its tokenizer; ``complete`` runs on one thread at a time (the server's worker)."""

    def __init__(self, path: str, weights: str = "float32"):
        from ..models.hf import from_pretrained
        from ..models.hf.chat_template import load_chat_template
        from ..models.hf.logits_processors import output_vocab_size
        from ..models.hf.tokenizer import eos_token_ids, load_tokenizer
        self.model = from_pretrained(path, dtype="bfloat16" if weights == "bfloat16" else "float32")
        if weights == "int8":
            from ..quantization import quantize_weight_only
            self.model = quantize_weight_only(self.model, inplace=True)
        if not hasattr(self.model, "new_cache"):
            raise ValueError(f"{type(self.model).__name__} is an encoder: text generation needs a decoder")
        self.model.eval()
        # an encoder-decoder (T5, BART, Marian): its prompt is the encoder's input (with the tokenizer's special
        # tokens), its output text has no special tokens, and its prompt is not part of its output
        self.seq2seq = bool(getattr(self.model, "is_encoder_decoder", False))
        # the generated tokens' vocabulary: an encoder-decoder's decoder's (Marian's target vocabulary may differ
        # from the source's, which the prompt's ids are checked against)
        self.eos = eos_token_ids(path, self.model.config, output_vocab_size(self.model))
        self.tokenizer = load_tokenizer(path, self.model.vocab_size, next(iter(sorted(self.eos)), None))
        # generation_config.json's settings, read once, applied alike alone and batched (row_settings.py)
        self.generation = ServedGeneration(self.model, self.tokenizer, self.eos, self.seq2seq)
        self.context = int(self.model.max_positions)
        # an image-text model's image processor (its preprocessor_config.json), for chat messages with images
        self.image_processor = None
        processor = os.path.join(path, "preprocessor_config.json")
        if getattr(self.model, "takes_images", False) and os.path.isfile(processor):
            from ..models.hf.image_processing import load_image_processor
            self.image_processor = load_image_processor(processor)
        # Qwen2-VL's and Qwen2.5-VL's video processor (its config as transformers finds it), for chat messages with
        # videos
        self.video_processor = None
        if getattr(self.model, "architecture", None) in ("Qwen2VLForConditionalGeneration",
                                                         "Qwen2_5_VLForConditionalGeneration"):
            from ..models.hf.qwen2_vl_video import load_video_processor
            try:
                self.video_processor = load_video_processor(path)
            except FileNotFoundError:
                pass
        # chat: the checkpoint's template; a broken one leaves /v1/completions working and says why on chat
        self.chat = None
        self.chat_error = "this model has no chat template (chat_template.jinja or tokenizer_config.json)"
        try:
            self.chat = load_chat_template(path)
        except (ValueError, ImportError) as e:
            self.chat_error = str(e)
            log.warning("%s: chat completions unavailable: %s", path, e)

    def chat_prompt(self, req: CompletionRequest) -> str:
        """The prompt text of a chat request: its messages (and tools) rendered by the chat template."""
        if self.chat is None:
            raise CompletionError(400, self.chat_error, "messages")
        if req.read_tool_calls:
            req.tool_format, why = tool_format(self.chat.source)
            if why is not None:
                raise CompletionError(400, f"tools: {why}", "tools")
        if req.forced_tools is not None:  # tool_choice "required" or a named function: only calls, as read
            from .structured import tool_call_grammar
            req.grammar = tool_call_grammar(req.tools, req.forced_tools, req.tool_format, req.parallel_tool_calls,
                                            self.tokenizer)
        try:
            return self.chat.render(req.messages, add_generation_prompt=True, tools=req.tools)
        except ValueError as e:
            raise CompletionError(400, str(e), "messages") from None

    def constraint(self, req: CompletionRequest):
        """A new row constraint for a request with structured outputs (``req.grammar``), else None (a CompletionError
        400 naming the field where the grammar does not fit this model's tokenizer)."""
        from ..models.hf.logits_processors import output_vocab_size
        from .structured import check_grammar
        return check_grammar(req, self.tokenizer, output_vocab_size(self.model), sorted(self.eos))

    def token_ids(self, prompt: Prompt, index: int) -> List[int]:
        """The prompt's token ids, checked against the vocabulary (CompletionError 400)."""
        param = "prompt"
        limit = self.context * MAX_TOKEN_CHARS
        if isinstance(prompt, str) and len(prompt) > limit:
            # a text this long is tokenized only as far as it can fit (the tokenizer holds the GIL: a 14 MB prompt took
            # the event loop 45 s to refuse): past the context already, it is refused without the rest
            head = self.tokenizer.encode(prompt[:limit], add_special_tokens=self.seq2seq)
            if len(head) > self.context + 1:  # (+1: the cut may have split a token)
                raise CompletionError(400, f"this model's maximum context length is {self.context} tokens, however "
                                           f"prompt {index} has more than {len(head) - 1} tokens ({len(prompt)} "
                                           "characters)", param, "context_length_exceeded")
        ids = self.tokenizer.encode(prompt, add_special_tokens=self.seq2seq) if isinstance(prompt, str) else prompt
        if not ids:
            raise CompletionError(400, f"prompt {index} gives no tokens", param)
        bad = [t for t in ids if not 0 <= t < self.model.vocab_size]
        if bad:
            raise CompletionError(400, f"prompt {index}: token id {bad[0]} is outside the vocabulary "
                                       f"[0, {self.model.vocab_size})", param)
        return list(ids)

    def check_length(self, n_prompt: int, max_tokens: int) -> None:
        if self.seq2seq:  # the source on the encoder's positions, the answer on the decoder's (as generate checks)
            if n_prompt > self.context:
                raise CompletionError(400, f"this model's maximum source length is {self.context} tokens, however "
                                           f"your prompt has {n_prompt}", "prompt", "context_length_exceeded")
            if max_tokens > self.context:
                raise CompletionError(400, f"this model's decoder has {self.context} positions, however you "
                                           f"requested {max_tokens} tokens for the completion", "max_tokens",
                                      "context_length_exceeded")
            return
        if n_prompt + max_tokens > self.context:
            raise CompletionError(400, f"this model's maximum context length is {self.context} tokens, however you "
                                       f"requested {n_prompt + max_tokens} tokens ({n_prompt} in your prompt; "
                                       f"{max_tokens} for the completion)", "max_tokens", "context_length_exceeded")

    def _log_softmax(self, prompt_ids: List[int], gen: List[int], echo: bool, images: Optional[dict] = None):
        """(shown tokens, target tokens, float64 log-probabilities (len(targets), V)) from one forward over the
        whole sequence: row i is the distribution target i was drawn from. ``images`` (a chat prompt's pixel values
        and token kinds, not with echo): the prompt prefilled with them, then the tokens as one text call on its
        cache, as generate computed them (a PaliGemma answer attends causally, a Qwen2-VL answer runs at the rope
        delta its images left)."""
        import numpy as np

        from .. import no_grad
        model = self.model
        with no_grad():
            if images:
                T = len(prompt_ids)
                cache = model.new_cache(1, T + len(gen))
                logits = model(np.array([prompt_ids]), np.ones((1, T), bool), np.arange(T)[None], cache=cache,
                               logits_to_keep=1, **images).numpy()[0]
                if len(gen) > 1:
                    later = model(np.array([gen[:-1]]), np.ones((1, T + len(gen) - 1), bool),
                                  np.arange(T, T + len(gen) - 1)[None], cache=cache).numpy()[0]
                    logits = np.concatenate([logits, later])
                return list(gen), list(gen), log_softmax(logits[:len(gen)])
            if self.seq2seq:
                dec = [model.decoder_start_token_id] + gen
                logits = model(np.array([prompt_ids]), None, np.array([dec[:-1] or dec])).numpy()[0][:len(gen)]
                shown, targets = list(gen), list(gen)
            else:
                seq = prompt_ids + gen
                logits = model(np.array([seq])).numpy()[0][:-1]  # place i predicts seq[i + 1]
                shown, targets = (seq, seq[1:]) if echo else (gen, gen)
                logits = logits if echo else logits[len(prompt_ids) - 1:]
        return shown, targets, log_softmax(logits)

    def score(self, prompt_ids: List[int], completion: Completion, top: int, echo: bool) -> Completion:
        """``completion`` with OpenAI's logprobs object (and, with ``echo``, the prompt's text and tokens in front):
        each token's log-probability under the model given the tokens before it (one forward over the whole
        sequence), the ``top`` most likely alternatives at each place (and the chosen one), character offsets.
        Tokens that only spelled a stop string are left out (``Completion.reported_ids``)."""
        tok = self.tokenizer
        shown, targets, logp = self._log_softmax(prompt_ids, completion.reported_ids, echo)
        prompt_text = tok.decode(prompt_ids)
        entries = [None] if (echo and not self.seq2seq) else []
        entries += [entry(row, t, top) for row, t in zip(logp, targets)]
        logprobs, _ = completion_logprobs(tok, entries, 0 if echo else len(prompt_text), shown)
        text = (prompt_text + completion.text) if echo else completion.text
        return replace(completion, text=text, logprobs=logprobs)

    def score_chat(self, prompt_ids: List[int], completion: Completion, top: int) -> Completion:
        """``completion`` with chat's logprobs object: ``{"content": [{"token", "logprob", "bytes",
        "top_logprobs": [the ``top`` most likely, each {"token", "logprob", "bytes"}]}], "refusal": None}``."""
        _, targets, logp = self._log_softmax(prompt_ids, completion.reported_ids, False)
        return replace(completion, logprobs=chat_logprobs(self.tokenizer, [entry(row, t, top)
                                                                            for row, t in zip(logp, targets)]))

    def with_entries(self, prompt_ids: List[int], completion: Completion, chat: bool) -> Completion:
        """``completion`` with the logprobs object (completions' or chat's) of the entries its decode steps gave it
        (``Completion.entries``: each token's log-softmax of the logits it was drawn from, as a stream reports them and
        transformers' ``compute_transition_scores`` of generate's raw logits)."""
        if chat:
            return replace(completion, logprobs=chat_logprobs(self.tokenizer, completion.entries))
        logprobs, _ = completion_logprobs(self.tokenizer, completion.entries, self.prompt_chars(prompt_ids))
        return replace(completion, logprobs=logprobs)

    def stream(self, req: CompletionRequest, ids: List[int],
               on_text: Optional[Callable[[str, Optional[list]], None]]) -> TextStream:
        """The completion's text stream; it collects each token's log-probability entry when the request asks for
        them (``stream.top`` not None: the decoder then passes ``push`` the entries, from the step's logits that
        drew the token, streamed or not, so both answers report the same numbers). With ``echo`` the answer is
        scored in one forward instead (the prompt's tokens have no decode step)."""
        top = req.logprobs if (req.logprobs is not None and not req.echo) else None
        return TextStream(self.tokenizer, self.generation.end_ids(req), req.stop, req.max_tokens, len(ids), on_text,
                          skip_special_tokens=self.seq2seq, top=top, ranked=req.ranked,
                          include_stop=req.include_stop_str_in_output, min_tokens=req.min_tokens or 0)

    def prompt_chars(self, ids: List[int]) -> int:
        """Where a completion's text starts in prompt + completion (the logprobs' ``text_offset``)."""
        return len(self.tokenizer.decode(ids))

    def complete(self, req: CompletionRequest, ids: List[int], on_text: Optional[Callable[[str, Optional[list]], None]],
                 cancelled: threading.Event, seed: Optional[int] = None, prefix_cache=None,
                 images: Optional[dict] = None) -> Completion:
        """Generate one completion of ``ids`` alone; ``on_text(text, entries)`` gets each piece of final text as it
        is decided (and its tokens' log-probability entries when a streamed request asks for them); ``images``:
        generate's pixel_values and token_type_ids for an image-text model's prompt (chat_images.py). With
        ``prefix_cache`` (a PrefixCache), the prompt's prefill starts after its longest cached block prefix, the
        completion's ``cached_tokens`` says how many tokens that was, and the prompt and answer are kept there."""
        import numpy as np

        from .. import manual_seed
        from ..models.hf import generate
        from ..models.hf.constrained import GrammarError
        text = self.stream(req, ids, on_text)
        choice = self.generation.row(req, ids)  # its stopping (generate applies its processors and sampler)
        logits = []  # this step's logits, when the stream takes log-probabilities

        def step(tokens) -> None:
            if cancelled.is_set():
                text.cancel()
                raise _Finished
            token = int(tokens[0])
            raw = logits.pop()[0] if logits else None
            lp = None if text.top is None else step_entry(raw, token, text.top)
            value = None if not text.ranked else lp.logprob if lp is not None else token_logprob(raw, token)
            if text.push(token, lp, value):
                raise _Finished
            reason = choice.stopped(text.tokens)
            if reason is not None:
                text.end(reason)
                raise _Finished

        start = 1 if self.seq2seq else len(ids)  # where the output begins in generate's sequences

        constraint = self.constraint(req)

        def penalize(sequences, scores):
            out = sequences[0, start:]
            if req.token_rules is not None:
                scores = req.token_rules.apply(scores, out)
            if req.penalties.active:
                scores = req.penalties.apply(scores, ids, out)
            if constraint is not None:  # structured outputs: the grammar's allowed tokens only
                if len(out):
                    constraint.advance(out[-1])
                scores = constraint.mask(np.array(scores, np.float32))
            return scores

        if seed is not None:
            manual_seed(seed)
        read = None if prefix_cache is None else prefix_cache.hit_tokens
        try:
            # one beam and one sequence whatever generation_config.json asks for: the text streams as it is generated.
            # The end tokens are the text stream's (config.json's and generation_config.json's, the request's
            # stop_token_ids, not the model's with ignore_eos); the rest of generation_config.json applies as generate
            # reads it, as the batched engine applies it (row_settings.py)
            active = req.penalties.active or constraint is not None or req.token_rules is not None
            generate(self.model, [ids], max_new_tokens=req.max_tokens, do_sample=not req.greedy,
                     temperature=req.temperature if not req.greedy else 1.0, top_k=req.top_k,
                     top_p=req.top_p if req.top_p < 1 else None, min_p=req.min_p, streamer=step, num_beams=1,
                     num_return_sequences=1,
                     logits_processor=penalize if active else None, **self.generation.generate_kwargs(req),
                     on_logits=logits.append if (text.top is not None or text.ranked) else None,
                     prefix_cache=prefix_cache, **(images or {}))
        except _Finished:
            pass
        except GrammarError as e:  # this request's grammar cannot go on with this model: a 400 for it
            from .structured import row_failed
            raise row_failed(req, e) from None
        finally:
            if prefix_cache is not None:  # the tokens generate read from the cache (it reads once, before the first)
                text.cached_tokens = prefix_cache.hit_tokens - read
        return text.result()


def best_of(prompt_ids: List[List[int]], results: List[Completion], rows: int, n: int):
    """Each prompt's ``n`` candidates of the highest cumulative log-probability, best first (ties: the earlier
    candidate first), and their prompts; the results come ``rows`` candidates per prompt, prompt-major."""
    keep = []
    for start in range(0, len(results), rows):
        keep += sorted(range(start, start + rows), key=lambda i: -results[i].cumulative_logprob)[:n]
    return [prompt_ids[i] for i in keep], [results[i] for i in keep]


def create_completions_app(config: GenerationServeConfig):
    """The Starlette app serving ``config.model_path`` for text generation (loaded at startup)."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse

    from .metrics import Metrics

    config.validate()
    metrics = Metrics()
    name = config.model_name or os.path.basename(os.path.abspath(config.model_path).rstrip(os.sep))
    generated = metrics._pc.Counter("forgegrad_generated_tokens", "tokens generated (completions)", ["model"],
                                    registry=metrics.registry).labels(name)
    prefill_calls = metrics._pc.Counter("forgegrad_prefill_chunks", "prompt prefill calls of the batched engine (a "
                                        "prompt longer than --prefill-chunk takes several while others decode)",
                                        ["model"], registry=metrics.registry).labels(name)
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="forgegrad-generate")
    state = {"generator": None, "engine": None, "prefix": None, "queued": 0, "images_batch": False}

    def run_all(req, prompt_ids, on_text, cancelled, images=None):
        """On the worker: every prompt (or choice) of the request in turn; ``images``: a chat request's pixel values
        when no engine takes them (max_batch 1, a model the batched step does not cover), given to each prefill
        (then no prefix cache)."""
        gen = state["generator"]
        results = []
        for i, ids in enumerate(prompt_ids):
            if cancelled.is_set():
                break
            results.append(gen.complete(req, ids, None if on_text is None else (lambda t, lp, i=i: on_text(i, t, lp)),
                                        cancelled, choice_seed(req, i), state["prefix"] if images is None else None,
                                        images))
        return results

    async def answer(request, chat):
        body = await read_body(request, config.max_body_bytes)
        gen = state["generator"]
        if chat:
            req = parse_chat(body, name)
            req.prompts = [gen.chat_prompt(req)]
        else:
            req = parse(body, name)
        check_rows(req, config.max_rows_per_request)  # before any prompt is tokenized
        prompt_ids, images = [], None
        if chat and (req.images or req.videos):  # decoded and processed off the event loop
            ids, images = await asyncio.get_running_loop().run_in_executor(None, image_inputs, gen, req,
                                                                           req.prompts[0])
            prompt_ids.append(ids)
            gen.check_length(len(ids), req.max_tokens)
        for i, p in enumerate(req.prompts if images is None else []):  # each checked as it is tokenized
            prompt_ids.append(gen.token_ids(p, i))
            gen.check_length(len(prompt_ids[-1]), req.max_tokens)
        from ..models.hf.logits_processors import output_vocab_size
        vocab = output_vocab_size(gen.model)  # the generated tokens'
        bad = [t for t in req.penalties.bias if t >= vocab]
        if bad:
            raise CompletionError(400, f"logit_bias: token id {bad[0]} is outside the vocabulary "
                                       f"[0, {vocab})", "logit_bias")
        gen.generation.check(req)  # stop_token_ids, allowed_token_ids, bad_words against the vocabulary
        rows = req.candidates  # a row per choice (per best_of candidate)
        prompt_ids = [ids for ids in prompt_ids for _ in range(rows)]
        if req.grammar is not None:  # checked here on the tokenizer (a 400 naming the field), then made per row
            if not gen.eos:
                raise CompletionError(400, "structured outputs need a model with an end-of-sequence token",
                                      req.grammar_param)
            await asyncio.get_running_loop().run_in_executor(None, gen.constraint, req)  # off the event loop
        if req.echo and gen.seq2seq:
            raise CompletionError(400, "echo needs a decoder-only model (an encoder-decoder's prompt is not part of "
                                       "its output)", "echo")
        if state["queued"] >= config.max_queue:
            raise CompletionError(503, f"{state['queued']} requests are already waiting; retry later",
                                  headers={"Retry-After": "1"})
        shape = ChatShape(name, rows, (req.tool_format, req.parallel_tool_calls) if req.read_tool_calls else None) \
            if chat else TextShape(name, rows)
        loop = asyncio.get_running_loop()
        if req.max_tokens == 0:  # echo with max_tokens 0 scores the prompts: nothing to generate
            return ok(shape.response([await loop.run_in_executor(
                worker, gen.score, ids, Completion("", "length", len(ids), 0), req.logprobs or 0, True)
                for ids in prompt_ids]))
        if isinstance(state["engine"], PagedBatchEngine) and not req.num_beams:  # rows that can never fit: a 400
            state["engine"].check_fits(prompt_ids, req.max_tokens)
        cancelled = threading.Event()
        pieces: asyncio.Queue = asyncio.Queue()
        on_text = None
        if req.stream:
            def on_text(i, t, lp):
                loop.call_soon_threadsafe(pieces.put_nowait, (i, (t, lp)))
        # counted until the worker is done with it, however the response ends
        state["queued"] += 1
        metrics.queue_depth(name, state["queued"])
        if req.num_beams:  # use_beam_search: decoded alone on the worker (beam_completions.py), with any images
            future = loop.run_in_executor(worker, complete_beams, gen, req, prompt_ids, on_text, cancelled, images)
        elif images is not None and not state["images_batch"]:  # decoded alone on the worker, with its pixel values
            future = loop.run_in_executor(worker, run_all, req, prompt_ids, on_text, cancelled, images)
        elif state["engine"] is not None:  # a prompt with images too: its prefill takes them (generation_batch.py)
            future = asyncio.wrap_future(state["engine"].submit(Job(req, prompt_ids, on_text, cancelled,
                                                                    images=images)))
        else:
            future = loop.run_in_executor(worker, run_all, req, prompt_ids, on_text, cancelled)

        def done(f):
            state["queued"] -= 1
            metrics.queue_depth(name, state["queued"])
            if not f.cancelled() and f.exception() is None:
                generated.inc(sum(r.completion_tokens for r in f.result()))

        future.add_done_callback(done)
        if not req.stream:
            results = counted = await future
            if req.ranked:  # best_of: each prompt's n most likely candidates, best first
                prompt_ids, results = best_of(prompt_ids, results, rows, req.n)
            if req.logprobs is not None and all(r.entries is not None for r in results):  # the decode steps'
                results = [gen.with_entries(ids, r, chat) for ids, r in zip(prompt_ids, results)]
            elif chat and req.logprobs is not None:  # one scoring forward per choice, on the worker
                results = [await loop.run_in_executor(worker, gen.score_chat, ids, r, req.logprobs)
                           for ids, r in zip(prompt_ids, results)]
            elif req.logprobs is not None or req.echo:
                results = [await loop.run_in_executor(worker, gen.score, ids, r, req.logprobs or 0, req.echo)
                           for ids, r in zip(prompt_ids, results)]
            return ok(shape.response(results, counted))
        future.add_done_callback(lambda f: pieces.put_nowait((None, f)))
        # streamed log-probabilities: each piece's tokens, formatted here (completions' offsets run on)
        logprobs = StreamLogprobs(gen.tokenizer, chat, [] if chat or req.logprobs is None else
                                  [gen.prompt_chars(ids) for ids in prompt_ids])

        async def events():
            opened = set()
            try:
                while True:
                    index, item = await pieces.get()
                    if index is not None:
                        if index not in opened and shape.opening(index) is not None:
                            opened.add(index)
                            yield event(shape.opening(index))
                        text, entries = item
                        for chunk in shape.pieces(index, text, logprobs.piece(index, entries)):
                            yield event(chunk)
                        continue
                    if item.exception() is not None:
                        log.error("generation failed", exc_info=item.exception())
                        failed = item.exception()
                        yield event(failed.body() if isinstance(failed, CompletionError) else CompletionError(
                            500, f"internal error ({type(failed).__name__})").body())
                        break
                    results = item.result()
                    for i, r in enumerate(results):
                        if i not in opened and shape.opening(i) is not None:
                            yield event(shape.opening(i))
                        for chunk in shape.closing(i, r.finish_reason):
                            yield event(chunk)
                    if req.include_usage:
                        yield event(shape.usage_chunk(results))
                    break
                yield "data: [DONE]\n\n"
            finally:
                cancelled.set()  # a client that went away stops its generation at the next token

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            state["generator"] = await load_served(app, config, worker, TextGenerator)
        except RuntimeError:
            worker.shutdown(wait=False)  # the generation thread: kept while the model is served
            raise
        prefix = prefix_cache_for(config, state["generator"].model, name)
        if config.max_batch > 1 and batching_applies(state["generator"].model):
            kw = dict(on_step=lambda rows, seconds: metrics.batch(name, rows, seconds),
                      prefill_chunk=config.prefill_chunk, on_prefill=prefill_calls.inc)
            if state["generator"].seq2seq and not paged_seq2seq_applies(state["generator"].model):
                state["engine"] = Seq2SeqBatchEngine(state["generator"], config.max_batch, **kw)
            else:
                state["engine"] = paged_engine(state["generator"], config, name, metrics, kw, prefix)
                prefix = state["engine"].prefix  # the same size, its blocks the pool's
        if config.kv_cache_mb is not None and not isinstance(state["engine"], PagedBatchEngine):
            log.warning("%s: no paged KV cache (--kv-cache-mb has no effect): %s", name,
                        "an encoder-decoder without a paged decode step: its batched rows share one contiguous cache"
                        if state["engine"] else
                        "it is served one at a time, each request on a cache of its own")
        state["prefix"] = prefix
        # chat requests with images join the decoder-only engine (Qwen2-VL's rows each at its own rope delta)
        state["images_batch"] = isinstance(state["engine"], PagedBatchEngine) and \
            image_batching_applies(state["generator"].model)
        if prefix is not None:
            metrics.prefix_cache(name, prefix)
        log.info("serving %s (%s weights, %d positions) at /v1/completions, %s%s", name, config.weights,
                 state["generator"].context,
                 f"up to {config.max_batch} completions decoded together" if state["engine"] else "one at a time",
                 "" if prefix is None else f", a prefix cache of up to {prefix.max_bytes / 2 ** 20:g} MiB")
        try:
            yield
        finally:
            if state["engine"] is not None:
                state["engine"].close()
            worker.shutdown(wait=False, cancel_futures=True)

    routes = [post_route("/v1/completions", lambda request: answer(request, False), metrics, name),
              post_route("/v1/chat/completions", lambda request: answer(request, True), metrics, name)]
    routes += common_routes(name, int(time.time()), lambda: state["generator"].context, metrics)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.config, app.state.metrics, app.state.startup_error = config, metrics, None
    return app
