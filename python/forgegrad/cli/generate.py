"""``forgegrad generate PATH --prompt TEXT``: continue a prompt with a Hugging Face checkpoint directory
(GPT-2 or Llama-style), streaming the text as it is generated, then the prefill and decode speeds."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ._argtypes import positive_int
from ._errors import CLIError, UsageError


def _unit_interval(text):
    import argparse
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _positive_float(text):
    import argparse
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parser(sub):
    p = sub.add_parser("generate", help="generate text with a Hugging Face checkpoint directory",
                       description="Load a decoder (GPT-2, Llama-style) or T5 checkpoint directory (config.json + "
                                   "safetensors, tokenizer.json if present, else byte tokens), stream the "
                                   "continuation of --prompt (T5: its output for --prompt), and report prefill and "
                                   "decode tokens/s.")
    p.add_argument("path", help="checkpoint directory (as written by transformers' save_pretrained)")
    p.add_argument("--prompt", required=True, help="the text to continue (with --chat: the user's message)")
    p.add_argument("--chat", action="store_true", help="send --prompt as a user message through the checkpoint's "
                   "chat template (instruct models), and stop at the end of the assistant's turn")
    p.add_argument("--system", default=None, help="with --chat: a system message before the user's")
    p.add_argument("--image", action="append", default=None, metavar="FILE",
                   help="an image for an image-text model (Gemma 3, LLaVA, PaliGemma; repeat for several): it goes "
                        "where --prompt marks it (<start_of_image>, <image>; with --chat the template places it), "
                        "else before the text; made into pixel values by the checkpoint's preprocessor_config.json")
    p.add_argument("--video", action="append", default=None, metavar="FILE",
                   help="a video file (MP4/MOV, WebM/MKV, AVI; needs PyAV: pip install \"forgegrad[video]\") for "
                        "Qwen2-VL / Qwen2.5-VL (repeat for several): it goes where --prompt marks it "
                        "(<|video_pad|>; with --chat the template places it, after any --image), else before the "
                        "text; its frames sampled as transformers' Qwen2-VL video processor samples them")
    p.add_argument("--fps", type=_positive_float, default=None, help="with --video: frames sampled per second of "
                   "video (default: the checkpoint's video processor config's if it samples frames, else 2)")
    p.add_argument("--max-new-tokens", type=positive_int, default=50, help="tokens to generate (default 50)")
    p.add_argument("--temperature", type=_positive_float, default=None, help="sample at this temperature "
                   "(default: greedy decoding unless --top-k/--top-p is given)")
    p.add_argument("--top-k", type=positive_int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=_unit_interval, default=None, help="nucleus sampling: the smallest set of "
                   "tokens whose probability reaches p")
    p.add_argument("--min-p", type=_unit_interval, default=None, help="sample among the tokens at least p times as "
                   "likely as the most likely one")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--repetition-penalty", type=_positive_float, default=None, help="transformers' repetition "
                   "penalty: > 1 discourages tokens already in the text (default: the checkpoint's "
                   "generation_config.json, else 1.0, none)")
    p.add_argument("--target-lang", default=None, metavar="TOKEN", help="the token forced as the first generated "
                   "one, by name or id: an encoder-decoder's target language (mBART-50: fr_XX, NLLB: fra_Latn); "
                   "default: the checkpoint's forced_bos_token_id, if any")
    p.add_argument("--source-lang", default=None, metavar="TOKEN", help="an encoder-decoder's source-language "
                   "token (mBART-50: de_DE, NLLB: deu_Latn), by name or id, in place of the one tokenizer.json's "
                   "template adds")
    p.add_argument("--num-beams", type=positive_int, default=1, help="beam search with this many beams (beam "
                   "sampling with --temperature, --top-k, --top-p or --min-p; the text is written when the search "
                   "ends, not streamed)")
    p.add_argument("--num-return-sequences", type=positive_int, default=1, help="write this many sequences, each "
                   "after a '=== GENERATED SEQUENCE i ===' line (not streamed): the best ones of beam search "
                   "(at most --num-beams), or independent samples (with --temperature, --top-k or --top-p)")
    p.add_argument("--threads", type=positive_int, default=None, help="forgegrad kernel threads")
    p.add_argument("--weights", choices=("float32", "bfloat16", "int8"), default="float32",
                   help="the Linear layers' weights: float32 (default), bfloat16 (kept as the checkpoint stores "
                        "them: the float32 model's outputs with half the bytes per token) or int8 (weight-only, per "
                        "output channel: other numerics, a quarter of the bytes)")
    p.add_argument("--no-freeze", dest="freeze", action="store_false",
                   help="run the model as loaded; by default it is frozen in place as forgegrad serve freezes it "
                        "(nn.utils.freeze(model, inplace=True): its float32 Linear weights packed once for the "
                        "GEMM, the same text, faster prompts; not where the packed copies would take more than half "
                        "the available memory)")
    p.set_defaults(run=run)
    return p


def run(args, out=None):
    out = sys.stdout if out is None else out
    from .. import manual_seed
    from .._runtime import set_num_threads
    from ..models.hf import CheckpointError, from_pretrained, generate
    from ..models.hf.tokenizer import eos_token_ids, load_tokenizer
    if not os.path.isdir(args.path):
        raise UsageError(f"{args.path!r} is not a checkpoint directory")
    if args.threads is not None:
        set_num_threads(args.threads)
    try:
        model = from_pretrained(args.path, dtype="bfloat16" if args.weights == "bfloat16" else "float32")
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    if args.weights == "int8":
        from ..quantization import quantize_weight_only
        model = quantize_weight_only(model, inplace=True)
    if not hasattr(model, "new_cache"):
        raise UsageError(f"{type(model).__name__} is an encoder; generate needs a decoder (GPT-2, Llama-style)")
    if args.freeze:
        from ..serve.openai_routes import freeze_in_place
        freeze_in_place(model, args.path)
    eos = model.config.get("eos_token_id")
    eos = eos if isinstance(eos, int) and 0 <= eos < model.vocab_size else None
    try:
        tok = load_tokenizer(args.path, model.vocab_size, eos)
    except (ValueError, ImportError) as e:
        raise CLIError(str(e)) from None
    prompt = args.prompt
    if args.system is not None and not args.chat:
        raise UsageError("--system needs --chat")
    if args.chat:
        prompt = _chat_prompt(args)
    seq2seq = getattr(model, "is_encoder_decoder", False)  # T5: the prompt is the encoder's input
    images = {}
    if args.fps is not None and not args.video:
        raise UsageError("--fps needs --video")
    if args.image or args.video:
        ids, images = _image_inputs(args, model, tok, prompt)
    elif args.source_lang is not None:
        if not seq2seq:
            raise UsageError("--source-lang is for encoder-decoders (mBART, NLLB), whose input is the source text")
        try:
            ids = tok.encode_source(prompt, _token(args.source_lang, tok, model.vocab_size, "--source-lang"))
        except ValueError as e:
            raise UsageError(f"--source-lang: {e}") from None
    else:
        ids = tok.encode(prompt, add_special_tokens=seq2seq)
    if not ids:
        raise UsageError("--prompt gives no tokens")
    if max(ids) >= model.vocab_size:
        raise UsageError(f"the tokenizer gives token {max(ids)}, outside the model's vocabulary ({model.vocab_size})")
    forced = _target_token(args.target_lang, tok, model.vocab_size)
    if args.seed is not None:
        manual_seed(args.seed)
    sample = any(v is not None for v in (args.temperature, args.top_k, args.top_p, args.min_p))
    if args.num_return_sequences > 1:
        return _several(args, out, model, tok, ids, prompt, sample, seq2seq, forced, images)
    new, shown, times = [], "", [time.perf_counter()]
    if not seq2seq:  # a decoder continues the prompt; an encoder-decoder writes its own text
        out.write(prompt)

    def stream(step):
        nonlocal shown
        times.append(time.perf_counter())
        new.append(int(step[0]))
        text = tok.decode(new, skip_special_tokens=seq2seq)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            out.write(text[len(shown):])
            out.flush()
            shown = text

    # the text ends at any of config.json's and generation_config.json's end tokens: generate gets all of them
    eos = eos_token_ids(args.path, model.config, model.vocab_size)

    def step(tokens):
        if int(tokens[0]) in eos:  # the end of the text (or of the assistant's turn): not part of it
            raise _Ended
        stream(tokens)

    if args.num_beams > 1:
        try:
            out_ids = generate(model, [ids], max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                               do_sample=sample, temperature=args.temperature or 1.0, top_k=args.top_k,
                               top_p=args.top_p, min_p=args.min_p, num_return_sequences=1, eos_token_id=sorted(eos),
                               repetition_penalty=args.repetition_penalty, tokenizer=tok, **forced, **images)
        except ValueError as e:
            raise UsageError(str(e)) from None
        for token in out_ids[0, 1 if seq2seq else len(ids):]:  # as if streamed, up to the end token
            try:
                step(np.array([token]))
            except _Ended:
                break
    else:
        try:
            # streamed: one beam whatever generation_config.json asks for
            generate(model, [ids], max_new_tokens=args.max_new_tokens, do_sample=sample,
                     temperature=args.temperature or 1.0, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                     streamer=step,
                     num_beams=1, num_return_sequences=1, repetition_penalty=args.repetition_penalty,
                     eos_token_id=sorted(eos), tokenizer=tok, **forced, **images)
        except _Ended:
            pass
        except ValueError as e:
            raise UsageError(str(e)) from None
    out.write(tok.decode(new, skip_special_tokens=seq2seq)[len(shown):] + "\n")
    if args.num_beams > 1:
        print(f"[{len(ids)} prompt tokens, {len(new)} generated ({tok.name}); beam search with {args.num_beams} beams "
              f"in {times[-1] - times[0]:.2f} s]", file=sys.stderr)
        return 0
    times = times if len(times) > 1 else times + [time.perf_counter()]
    prefill = times[1] - times[0]
    decode = (times[-1] - times[1]) / max(len(times) - 2, 1)
    speed = f"{1 / decode:.1f} tokens/s" if decode > 0 else "none"  # (an answer that ends at once decodes nothing)
    print(f"[{len(ids)} prompt tokens, {len(new)} generated ({tok.name}); prefill {len(ids) / prefill:.1f} tokens/s, "
          f"decode {speed}]", file=sys.stderr)
    return 0


def _target_token(name, tok, vocab_size: int) -> dict:
    """generate's forced_bos_token_id argument for --target-lang (a token name or id), or none (the checkpoint's)."""
    return {} if name is None else {"forced_bos_token_id": _token(name, tok, vocab_size, "--target-lang")}


def _token(name: str, tok, vocab_size: int, flag: str) -> int:
    token = int(name) if name.isdigit() else tok.token_id(name)
    if token is None or not 0 <= token < vocab_size:
        raise UsageError(f"{flag} {name!r} is not a token of the model's vocabulary ({vocab_size} tokens; "
                         f"tokenizer: {tok.name})")
    return token


def _several(args, out, model, tok, ids, prompt, sample, seq2seq, forced, images) -> int:
    """--num-return-sequences R > 1: generate's R rows (each on the --image images), each written up to its end
    token."""
    from ..models.hf import generate
    from ..models.hf.tokenizer import eos_token_ids
    eos = eos_token_ids(args.path, model.config, model.vocab_size)
    R = args.num_return_sequences
    if not sample and args.num_beams == 1:
        raise UsageError(f"--num-return-sequences {R} needs sampling (--temperature, --top-k, --top-p) or "
                         f"--num-beams >= {R}: greedy decoding gives one sequence")
    start = time.perf_counter()
    try:
        rows = generate(model, [ids], max_new_tokens=args.max_new_tokens, do_sample=sample,
                        temperature=args.temperature or 1.0, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                        num_beams=args.num_beams, num_return_sequences=R, eos_token_id=sorted(eos),
                        repetition_penalty=args.repetition_penalty, tokenizer=tok, **forced, **images)
    except ValueError as e:
        raise UsageError(str(e)) from None
    seconds = time.perf_counter() - start
    lengths = []
    for i, row in enumerate(rows):
        new = [int(t) for t in row[1 if seq2seq else len(ids):]]
        end = next((j for j, t in enumerate(new) if t in eos), len(new))  # up to the end token, not part of it
        lengths.append(end)
        out.write(f"=== GENERATED SEQUENCE {i + 1} ===\n" + ("" if seq2seq else prompt)
                  + tok.decode(new[:end], skip_special_tokens=seq2seq) + "\n")
    how = f"beam search with {args.num_beams} beams" if args.num_beams > 1 else "sampled"
    print(f"[{len(ids)} prompt tokens, {R} sequences of {min(lengths)}-{max(lengths)} generated tokens ({tok.name}); "
          f"{how} in {seconds:.2f} s]", file=sys.stderr)
    return 0


class _Ended(Exception):
    """Raised from the streamer at the end-of-sequence token."""


def _chat_prompt(args) -> str:
    from ..models.hf.chat_template import load_chat_template
    try:
        template = load_chat_template(args.path)
    except (ValueError, ImportError) as e:
        raise CLIError(f"--chat: {e}") from None
    if template is None:
        raise UsageError(f"--chat: {args.path} has no chat template (chat_template.jinja or tokenizer_config.json)")
    content = args.prompt  # with images: transformers' content parts, which the template marks
    if args.image or args.video:
        content = [{"type": "image"} for _ in args.image or ()] + [{"type": "video"} for _ in args.video or ()] + [
            {"type": "text", "text": args.prompt}]
    messages = ([{"role": "system", "content": args.system}] if args.system is not None else []) + [
        {"role": "user", "content": content}]
    try:
        return template.render(messages, add_generation_prompt=True)
    except ValueError as e:
        raise UsageError(f"--chat: {e}") from None


def _image_inputs(args, model, tok, prompt: str):
    """--image / --video: (the prompt's ids with each image's and video's tokens, generate's pixel values, grids and
    token types)."""
    from ..models.hf.image_prompts import PLACEHOLDERS, image_inputs
    if not getattr(model, "takes_images", False):
        raise UsageError(f"--{'image' if args.image else 'video'}: {type(model).__name__} takes text only "
                         f"(image-text models: {', '.join(PLACEHOLDERS)})")
    processor, pictures = None, []
    if args.image:
        processor, pictures = _pictures(args)
    videos, video_processor, fps = _videos(args, model)
    try:
        return image_inputs(model, tok, prompt, pictures, processor, videos=videos, video_processor=video_processor,
                            fps=fps)
    except ValueError as e:
        raise UsageError(f"--{'video' if args.video else 'image'}: {e}") from None


def _pictures(args):
    """--image: the checkpoint's image processor and the images, upright RGB."""
    from ..models.hf.image_processing import load_image_processor
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise CLIError("--image needs Pillow (pip install pillow)") from None
    try:
        processor = load_image_processor(args.path)
    except (FileNotFoundError, ValueError, NotImplementedError) as e:
        raise UsageError(f"--image: {e}") from None
    pictures = []
    for name in args.image:
        try:
            with Image.open(name) as image:
                pictures.append(ImageOps.exif_transpose(image).convert("RGB"))
        except (OSError, ValueError) as e:  # a missing file, not an image (UnidentifiedImageError is an OSError)
            raise UsageError(f"--image {name!r}: not an image Pillow reads ({type(e).__name__}: {e})") from None
    return processor, pictures


def _videos(args, model):
    """--video: (the decoded, sampled videos, the checkpoint's video processor, each video's sampled frames per
    second for Qwen2.5-VL's second_per_grid_ts (None for Qwen2-VL, which reads none)), or (None, None, None)."""
    if not args.video:
        return None, None, None
    from ..models.hf.image_prompts import PLACEHOLDERS
    from ..models.hf.qwen2_vl_video import load_video_processor
    if PLACEHOLDERS.get(getattr(model, "architecture", None)) != "<|image_pad|>":
        raise UsageError(f"--video: videos are Qwen2-VL's and Qwen2.5-VL's; {type(model).__name__} takes images only")
    try:
        processor = load_video_processor(args.path)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--video: {e}") from None
    videos = []
    for name in args.video:
        try:
            videos.append(processor.load(name, fps=args.fps))
        except ImportError as e:
            raise CLIError(f"--video: {e}") from None
        except (OSError, ValueError) as e:  # a missing file, not a video, a broken one
            raise UsageError(f"--video {name!r}: {e}") from None
    seconds = model.architecture == "Qwen2_5_VLForConditionalGeneration"
    return videos, processor, [v.sampled_fps for v in videos] if seconds else None
