"""``forgegrad serve MODEL_DIR_OR_FILE``: serve checkpoints and ONNX models over HTTP with dynamic
batching (forgegrad.serve on starlette + uvicorn; the ``serve`` extra)."""
from __future__ import annotations

import logging
import os

from ._argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from ._errors import CLIError, UsageError, require


def add_parser(sub):
    p = sub.add_parser("serve", help="serve models over HTTP (TF Serving / TorchServe REST) with dynamic batching",
                       description="Serve forgegrad checkpoints (on forgegrad's kernels) and ONNX files (on "
                                   "onnxruntime) over HTTP: TF Serving's REST API (POST /v1/models/NAME"
                                   "[/versions/N]:predict), TorchServe's (POST /predictions/NAME, GET /ping), JSON "
                                   "or .npy bodies, Prometheus metrics at /metrics. MODEL_DIR_OR_FILE is a "
                                   "directory of models in TF Serving's layout (NAME/1/, NAME/2/, ...), one model's "
                                   "directory of numbered versions, one checkpoint directory or one .onnx file. "
                                   "New version directories are picked up without a restart. A Hugging Face "
                                   "decoder directory (config.json + safetensors, as transformers writes it) is "
                                   "served for text generation instead: OpenAI's POST /v1/completions (streaming "
                                   "with \"stream\": true), POST /v1/chat/completions, GET /v1/models, with up to "
                                   "--max-batch completions decoded together; an encoder directory (BERT, RoBERTa, "
                                   "XLM-R, ModernBERT; sentence-transformers models) for OpenAI's POST "
                                   "/v1/embeddings; a one-label sequence classifier (a cross-encoder) for POST "
                                   "/v1/rerank; one of several labels for POST /v1/classify; a Whisper directory "
                                   "for speech to text: OpenAI's POST /v1/audio/transcriptions and "
                                   "/v1/audio/translations (WAV uploads; FLAC, MP3, Ogg with the audio extra).")
    p.add_argument("model", metavar="MODEL_DIR_OR_FILE", help="models root, model directory, checkpoint or .onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--max-batch", type=positive_int, default=32, help="most rows per model call (default 32)")
    p.add_argument("--max-delay-ms", type=non_negative_float, default=5.0,
                   help="longest a request waits for others to batch with (default 5)")
    p.add_argument("--max-queue", type=positive_int, default=512,
                   help="requests waiting per model version before 503 + Retry-After (default 512)")
    p.add_argument("--max-body-bytes", type=positive_int, default=16 * 1024 * 1024,
                   help="largest request body; larger ones get 413 (default 16 MiB)")
    p.add_argument("--backend", choices=("auto", "forgegrad", "onnxruntime"), default="auto",
                   help="auto (default): checkpoints on forgegrad, .onnx on onnxruntime; onnxruntime: the .onnx "
                        "file of each version; forgegrad: checkpoints only")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="kernel threads (forgegrad and onnxruntime intra-op; default: all cores)")
    p.add_argument("--poll-interval", type=non_negative_float, default=1.0, metavar="SECONDS",
                   help="rescan the model directory every SECONDS for new versions (default 1; 0: never)")
    p.add_argument("--model-name", default=None,
                   help="read MODEL_DIR as one model's directory of versions, served under this name")
    p.add_argument("--batching", choices=("auto", "full", "eager"), default="auto",
                   help="full: a batch runs when it has --max-batch rows or its oldest request waited "
                        "--max-delay-ms; eager: also once no other request for the model is being received; "
                        "auto (default): eager for models whose full batch computes for 1 ms or more, else full")
    p.add_argument("--eager", action="store_true", help="the same as --batching eager")
    p.add_argument("--allow-nonfinite", action="store_true", help="accept NaN and infinity in float inputs")
    p.add_argument("--weights", choices=("float32", "bfloat16", "int8"), default=None,
                   help="a Hugging Face checkpoint directory only: its Linear layers' weights (default float32; "
                        "bfloat16 keeps the checkpoint's bits at half the bytes, int8 is weight-only int8)")
    p.add_argument("--prefill-chunk", type=non_negative_int, default=None, metavar="TOKENS",
                   help="a Hugging Face checkpoint directory only: while others decode, prefill a new prompt this "
                        "many tokens at a time between their steps (default 128; 0: whole prompts at once)")
    p.add_argument("--prefix-cache-mb", type=non_negative_float, default=None, metavar="MIB",
                   help="a Hugging Face decoder directory only: keep up to this many MiB of prompts' prefilled keys "
                        "and values, so a prompt that starts like an earlier one (a system prompt, a chat's earlier "
                        "turns) prefills only the rest (default 1024; 0: no prefix cache)")
    p.add_argument("--kv-cache-mb", type=positive_float, default=None, metavar="MIB",
                   help="a Hugging Face decoder or encoder-decoder (BART's family, T5) directory only: the most MiB "
                        "of the paged KV cache every decoding row's keys and values (and the prefix cache's; an "
                        "encoder-decoder's encoder keys and values too) are kept in; a prompt waits for blocks while "
                        "it is full (default: room for --max-batch rows, at least 16, of the whole context, but no "
                        "more than half the memory free at start; memory is taken only as blocks are written)")
    p.add_argument("--max-rows-per-request", type=positive_int, default=None, metavar="ROWS",
                   help="a Hugging Face decoder or encoder-decoder directory only: the most decoding rows one "
                        "completions request may ask for (its prompts x n, x best_of where given); more is a 400 "
                        "naming prompt or n (default 256: 16 prompts at the highest n, 16)")
    p.add_argument("--no-freeze", dest="freeze", action="store_false",
                   help="a Hugging Face checkpoint directory only: serve the model as loaded; by default it is frozen "
                        "in place (nn.utils.freeze(model, inplace=True)): read-only, its float32 Linear weights "
                        "packed once for the GEMM (the same outputs, faster prompts and batches; the packed copies "
                        "take about as much memory again as those weights, and a model whose copies would take more "
                        "than half the available memory is served as loaded)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(run=run)
    return p


def run(args, log=print):
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if not os.path.exists(args.model):
        raise UsageError(f"model path not found: {args.model}")
    require("starlette", "serve", what="forgegrad serve")
    uvicorn = require("uvicorn", "serve", what="forgegrad serve")
    require("prometheus_client", "serve", what="forgegrad serve")
    from ..serve.completions import is_checkpoint_dir
    if is_checkpoint_dir(args.model):
        return _run_generation(args, uvicorn)
    for flag, value in (("--prefix-cache-mb", args.prefix_cache_mb), ("--kv-cache-mb", args.kv_cache_mb),
                        ("--max-rows-per-request", args.max_rows_per_request)):
        if value is not None:
            raise UsageError(f"{flag} applies to a Hugging Face decoder directory, and {args.model} is not one")
    for flag, value in (("--weights", args.weights), ("--prefill-chunk", args.prefill_chunk),
                        ("--no-freeze", None if args.freeze else True)):
        if value is not None:
            raise UsageError(f"{flag} applies to a Hugging Face checkpoint directory (config.json + safetensors), "
                             f"and {args.model} is not one")
    from ..serve import app as serve_app
    from ..serve.repository import layout
    try:
        layout(args.model, args.model_name)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    config = serve_app.ServeConfig(args.model, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                                   max_queue=args.max_queue, max_body_bytes=args.max_body_bytes,
                                   backend=args.backend, threads=args.threads, poll_s=args.poll_interval,
                                   model_name=args.model_name, allow_nonfinite=args.allow_nonfinite,
                                   batching="eager" if args.eager else args.batching)
    return _serve(serve_app.create_app(config), args, uvicorn)


def _run_generation(args, uvicorn):
    from ..serve.completions import GenerationServeConfig, create_completions_app
    from ..serve.encoder_app import EncoderServeConfig, create_encoder_app, encoder_kind
    from ..serve.speech_app import SpeechServeConfig, create_speech_app, is_speech_checkpoint
    if is_speech_checkpoint(args.model):
        if args.prefill_chunk is not None:
            raise UsageError(f"--prefill-chunk applies to text generation, and {args.model} is a Whisper checkpoint "
                             "(served at /v1/audio/transcriptions and /v1/audio/translations)")
        _no_prefix_cache(args, "a Whisper checkpoint")
        config = SpeechServeConfig(args.model, weights=args.weights or "float32", threads=args.threads,
                                   max_queue=args.max_queue, max_body_bytes=args.max_body_bytes,
                                   model_name=args.model_name, max_batch=args.max_batch, freeze=args.freeze)
        return _serve(create_speech_app(config), args, uvicorn)
    kind = encoder_kind(args.model)
    if kind is not None:
        if args.prefill_chunk is not None:
            raise UsageError(f"--prefill-chunk applies to text generation, and {args.model} is an encoder (served "
                             f"at /v1/{kind})")
        _no_prefix_cache(args, f"an encoder (served at /v1/{kind})")
        config = EncoderServeConfig(args.model, weights=args.weights or "float32", threads=args.threads,
                                    max_queue=args.max_queue, max_body_bytes=args.max_body_bytes,
                                    model_name=args.model_name, max_batch=args.max_batch, freeze=args.freeze)
        return _serve(create_encoder_app(config), args, uvicorn)
    config = GenerationServeConfig(args.model, weights=args.weights or "float32", threads=args.threads,
                                   max_queue=args.max_queue, max_body_bytes=args.max_body_bytes,
                                   model_name=args.model_name, max_batch=args.max_batch,
                                   prefix_cache_mb=args.prefix_cache_mb,
                                   prefill_chunk=128 if args.prefill_chunk is None else args.prefill_chunk,
                                   kv_cache_mb=args.kv_cache_mb, freeze=args.freeze)
    if args.max_rows_per_request is not None:
        config.max_rows_per_request = args.max_rows_per_request
    return _serve(create_completions_app(config), args, uvicorn)


def _no_prefix_cache(args, what: str) -> None:
    for flag, value in (("--prefix-cache-mb", args.prefix_cache_mb), ("--kv-cache-mb", args.kv_cache_mb),
                        ("--max-rows-per-request", args.max_rows_per_request)):
        if value is not None:
            raise UsageError(f"{flag} applies to text generation, and {args.model} is {what}")


def _serve(app, args, uvicorn):
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           access_log=False, lifespan="on"))
    try:
        server.run()
    except SystemExit:  # uvicorn exits when the app's startup fails; say why below
        pass
    if not server.started:
        raise CLIError(app.state.startup_error or f"the server did not start (see the messages above): {args.model}")
    return 0
