"""The choices of the decoding loops on exported graphs (``generate_onnx``, ``generate_onnx_seq2seq``, ``onnx_beam``),
made as ``generate`` makes them.

Every setting ``generate`` takes is resolved as ``generate`` resolves it: an argument given wins; one left out comes
from the generation config (a dict, a generation_config.json or the directory holding one; by default the
generation_config.json next to the .onnx file, where Hugging Face optimum and ``forgegrad export`` put the
checkpoint's); else generate's default. The length (``max_new_tokens``, else the config's ``max_new_tokens`` or its
``max_length`` less the prompt), the end and pad tokens, the sampling settings (the config's only when sampling;
``top_k`` 50 by default), the beam settings and the number of sequences, and the processors' settings
(``repetition_penalty``, ``no_repeat_ngram_size``, ``min_length``, the forced first / last tokens and
generate's further settings, generation_settings.py: top_h and the watermark too; classifier-free guidance,
which needs a second run of the model, is refused) go through generate's own functions: the same checks, the
same LogitsProcessors, Sampler and stopping criteria, and the errors name the function called. A graph has no
config.json: where generate falls back on the checkpoint's config.json (an end token, a forced token), the ONNX
paths read the generation config only.
"""
from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import NamedTuple, Optional, Sequence

import numpy as np

__all__ = ["Decoding", "TokenPicker", "check_prompt", "decoding", "generation_config_of", "logits_vocab",
           "processors", "save_generation_config", "session_of"]


class TokenPicker:
    """The choices of a decoding loop on exported graphs (generate_onnx, generate_onnx_seq2seq), as generate makes
    them: the scores processed (``process``, the LogitsProcessors of ``generation._processors``), then the Sampler's
    choice (greedy, or a draw after the warpers from forgegrad's generator); rows that ended (an end token, or
    ``stopping``: stop strings, max_time) continue with ``pad_token_id`` where there are end tokens.
    ``sequences``: ``first`` (B, P), the prompt or the decoder start, and the tokens chosen so far; ``finished``
    once every row has ended."""

    def __init__(self, first: np.ndarray, max_new_tokens: int, eos: Sequence[int], pad_token_id: Optional[int],
                 sampler, process, stopping):
        B, P = first.shape
        self.tokens = np.empty((B, P + int(max_new_tokens)), np.int64)
        self.tokens[:, :P] = first
        self.length = P
        self.eos, self.pad = list(eos), np.int64(0 if pad_token_id is None else pad_token_id)
        self.sampler, self.process, self.stopping = sampler, process, stopping
        self.done = np.zeros(B, bool)

    @property
    def sequences(self) -> np.ndarray:
        return self.tokens[:, :self.length]

    def __call__(self, last_logits: np.ndarray) -> np.ndarray:
        """The next token of each row from its last position's logits (B, V), appended to ``sequences``."""
        if self.process.active:
            last_logits = self.process(self.sequences, last_logits)
        nxt = self.sampler(last_logits, self.sequences)
        if self.eos:
            nxt = np.where(self.done, self.pad, nxt)
            self.done |= np.isin(nxt, self.eos)
        self.tokens[:, self.length] = nxt
        self.length += 1
        if self.stopping.active:  # as generate: a row stopped so gets the pad token only where there are eos ids
            self.done |= self.stopping(self.sequences)
        return nxt

    @property
    def finished(self) -> bool:
        return bool(self.done.all())


def generation_config_of(who: str, value, graph) -> dict:
    """The generation config the ONNX paths read generate's settings from: ``value`` a dict (a model's
    ``generation_config``), or the path of a generation_config.json or of the directory holding one (the
    checkpoint's; a checkpoint directory with config.json only: the one transformers builds from it); None: the
    generation_config.json next to ``graph`` (the .onnx file, when given as a path), as Hugging Face optimum and
    ``forgegrad export`` save it beside their exports, where there is one; else none ({})."""
    from ._files import read_json_object
    if isinstance(value, dict):
        return value
    if value is None:
        if not isinstance(graph, str) and not hasattr(graph, "__fspath__"):
            return {}  # a session: no file to look next to
        file = os.path.join(os.path.dirname(os.path.abspath(os.fspath(graph))), "generation_config.json")
        return read_json_object(file, who) if os.path.isfile(file) else {}
    if not isinstance(value, str) and not hasattr(value, "__fspath__"):
        raise TypeError(f"{who}: generation_config must be a dict, the path of a generation_config.json or of the "
                        f"directory holding one, or None, got {type(value).__name__}")
    file = os.fspath(value)
    if os.path.isdir(file):
        if not os.path.isfile(os.path.join(file, "generation_config.json")) and os.path.isfile(
                os.path.join(file, "config.json")):  # a checkpoint without one: transformers' from its config.json
            from .generation_settings import from_model_config
            return from_model_config(read_json_object(os.path.join(file, "config.json"), who))
        file = os.path.join(file, "generation_config.json")
    if not os.path.isfile(file):
        raise ValueError(f"{who}: generation_config: no such file {file!r}")
    return read_json_object(file, who)


def save_generation_config(model, directory, who: str) -> Optional[str]:
    """The checkpoint's generation_config.json (``model.generation_config``, as ``from_pretrained`` read it) written
    atomically into ``directory``, beside the graphs an export wrote there, so that they decode as the checkpoint
    does (a checkpoint without one: the generation config built from its config.json). A model built from a config
    has generate take its end, pad and forced tokens and an encoder-decoder's start token from config.json: those
    are written instead; None (nothing written) when there are none either."""
    from ._files import write_generation_config
    config = getattr(model, "generation_config", None)
    if not isinstance(config, dict):
        config = _config_tokens(model)
    return write_generation_config(directory, config, who) if config else None


def _config_tokens(model) -> dict:
    """The tokens generate reads from config.json where a checkpoint has no generation_config.json
    (logits_processors.generation_source and token_setting; the decoder start: the model's)."""
    source = getattr(model, "config", None)
    if not isinstance(source, dict):
        return {}
    out = {k: source[k] for k in ("eos_token_id", "pad_token_id", "forced_bos_token_id", "forced_eos_token_id")
           if source.get(k) is not None}
    if getattr(model, "is_encoder_decoder", False):
        out["decoder_start_token_id"] = int(model.decoder_start_token_id)
    return out


def logits_vocab(session):
    """The vocabulary of a graph's ``logits`` (its last axis), or None where the graph leaves it open."""
    size = session.get_outputs()[0].shape[-1]
    return size if isinstance(size, int) else None


def session_of(s):
    """An onnxruntime CPU session for a path, or ``s`` itself (a session already)."""
    if isinstance(s, (str, bytes)) or hasattr(s, "__fspath__"):
        import onnxruntime as ort
        return ort.InferenceSession(str(s), providers=["CPUExecutionProvider"])
    return s


def check_prompt(who: str, input_ids, attention_mask):
    """(ids, mask) as int64 arrays of one (batch, tokens >= 1) shape."""
    ids = np.asarray(input_ids, np.int64)
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"{who}: input_ids must be (batch, tokens) with tokens >= 1, got shape {ids.shape}")
    mask = np.ones(ids.shape, np.int64) if attention_mask is None else np.asarray(attention_mask, np.int64)
    if mask.shape != ids.shape:
        raise ValueError(f"{who}: attention_mask must have input_ids' shape {ids.shape}, got {mask.shape}")
    return ids, mask


class Decoding(NamedTuple):
    """A decoding loop's resolved settings: ``beams`` (num_beams, length_penalty, early_stopping,
    num_return_sequences) as ``onnx_beam.beam_settings`` returns them; ``settings`` ``generation._processors``'
    (no_repeat_ngram_size, min_length, repetition_penalty, [], forced_bos, forced_eos); ``extra`` generate's
    further settings (read_settings'); ``start`` the decoder start token (encoder-decoders)."""
    max_new_tokens: int
    eos: list
    pad: Optional[int]
    sampler: object
    beams: tuple
    settings: tuple
    extra: dict
    stopping: object
    start: Optional[int]


def decoding(who: str, graph, generation_config, vocab: Optional[int], tokenizer, prompt_length: int,
             arguments: dict, settings: dict, seq2seq: bool = False) -> Decoding:
    """The settings of a decoding loop on ``graph`` (the .onnx path or session whose folder may hold the
    generation_config.json), resolved as generate resolves them (the module docstring). ``arguments``: generate's
    first settings by name (max_new_tokens, eos_token_id, pad_token_id, do_sample, temperature, top_k, top_p, min_p,
    num_beams, length_penalty, early_stopping, num_return_sequences, repetition_penalty, no_repeat_ngram_size,
    min_length, forced_bos_token_id, forced_eos_token_id; with ``seq2seq`` decoder_start_token_id), each None, or
    ``generation.UNSET`` where generate's own default is UNSET, when left out; ``settings``: the keyword arguments
    naming generate's further settings. ``prompt_length``: what the config's ``max_length`` counts before the new
    tokens (the prompt, an encoder-decoder's start token). The config's settings that change the tokens but are not
    read are named in one warning."""
    from .generation import (_check_arguments, _max_new_tokens, _sampler, processor_settings, resolve,
                             special_tokens)
    from .generation_settings import config_settings, given_settings, warn_unread_settings
    from .onnx_beam import beam_settings
    from .stopping import Stopping
    given = given_settings(who, settings)
    config = generation_config_of(who, generation_config, graph)
    warn_unread_settings(SimpleNamespace(generation_config=config))
    # what generate reads of a model, for a graph: its generation config (no config.json) and vocabulary
    model = SimpleNamespace(generation_config=config, config=config, vocab_size=sys.maxsize if vocab is None else vocab)
    a = arguments
    try:
        extra = config_settings(config, given, vocab)
        if extra["guidance_scale"] is not None:
            raise ValueError(f"{who}: guidance_scale is not supported on exported graphs (classifier-free guidance "
                             f"runs the model a second time on its own cache); give guidance_scale=None to decode "
                             f"without it, "
                             f"got {extra['guidance_scale']!r}")
        stopping = Stopping(extra["max_time"], extra["stop_strings"], tokenizer)
        sampler = _sampler(model, a["do_sample"], a["temperature"], a["top_k"], a["top_p"], a["min_p"], extra)
        beams = beam_settings(who, resolve(model, "num_beams", a["num_beams"], 1),
                              resolve(model, "length_penalty", a["length_penalty"], 1.0),
                              resolve(model, "early_stopping", a["early_stopping"], False),
                              resolve(model, "num_return_sequences", a["num_return_sequences"], 1), sampler.do_sample)
        max_new_tokens = _max_new_tokens(model, a["max_new_tokens"], prompt_length)
        _check_arguments(model, max_new_tokens, a["eos_token_id"], a["pad_token_id"], None)
        eos, pad = special_tokens(model, a["eos_token_id"], a["pad_token_id"])
        processing = processor_settings(model, a["no_repeat_ngram_size"], a["min_length"], a["repetition_penalty"],
                                        None, a["forced_bos_token_id"], a["forced_eos_token_id"])
        start = _decoder_start(who, config, a["decoder_start_token_id"], vocab) if seq2seq else None
    except (ValueError, TypeError) as e:  # generate's checks, named after the function called
        text = str(e)
        if text.startswith("generate: "):
            raise type(e)(f"{who}: {text[len('generate: '):]}") from None
        raise
    return Decoding(int(max_new_tokens), eos, pad, sampler, beams, processing, extra, stopping, start)


def _decoder_start(who: str, config: dict, value, vocab: Optional[int]) -> int:
    """An encoder-decoder's first decoder token: as given, else the generation config's decoder_start_token_id."""
    source = "" if value is not None else " (left out, and the generation config sets none)"
    value = config.get("decoder_start_token_id") if value is None else value
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0
            or (vocab is not None and value >= vocab)):
        raise ValueError(f"{who}: decoder_start_token_id must be a token id"
                         f"{'' if vocab is None else f' in [0, {vocab})'}{source}, got {value!r}")
    return int(value)


def processors(d: Decoding, max_length: int, encoder_ids: np.ndarray, padding=None, prompt_length: int = 1):
    """generate's LogitsProcessors (``generation._processors``, the one list) of ``d``'s settings, for sequences
    that start with ``prompt_length`` tokens and end at ``max_length`` (the forced last token's place);
    ``encoder_ids``: the prompts (an encoder-decoder's encoder input) before any repeat."""
    from .generation import _processors
    return _processors(None, d.settings, d.eos, max_length, padding=padding, extra=d.extra,
                       prompt_length=prompt_length, encoder_ids=encoder_ids)
