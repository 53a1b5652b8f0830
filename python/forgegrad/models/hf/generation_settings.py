"""The generation settings ``generate`` reads beyond its first ones (length, beams, sampling, the end tokens): each
an argument of ``generate``, else the checkpoint's generation_config.json, checked and named when wrong, with
transformers 5's meaning. Processors: ``suppress_tokens``, ``begin_suppress_tokens``, ``bad_words_ids``,
``sequence_bias``, ``encoder_repetition_penalty``, ``encoder_no_repeat_ngram_size``, ``min_new_tokens``,
``exponential_decay_length_penalty``, ``remove_invalid_values`` (logits_processors.py); sampling warpers:
``typical_p``, ``epsilon_cutoff``, ``eta_cutoff``, ``top_h``, and ``renormalize_logits`` (sampling.py); the watermark
``watermarking_config`` (watermarking.py); classifier-free guidance ``guidance_scale`` (guidance.py); stopping:
``max_time`` and ``stop_strings`` (stopping.py; the stop strings need the tokenizer).

Settings of transformers' GenerationConfig that change the tokens but that forgegrad does not read (group beam
search, contrastive search, DoLa, constraints, token healing, an encoder-decoder's decoder_start_token_id other
than config.json's) are named in one warning when generation_config.json sets them; the rest (cache, output and
assistant settings) do not change the tokens. Keys transformers does not know are ignored, as transformers ignores them.

A checkpoint without generation_config.json: ``from_model_config`` builds its generation config from config.json as
transformers 5's ``from_pretrained`` does, so the legacy settings older checkpoints keep there (num_beams,
max_length, min_length, no_repeat_ngram_size, length_penalty, ...) apply alike in generate, the servers and exports.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["EXTRA_SETTINGS", "GENERATION_CONFIG_KEYS", "from_model_config", "read_settings", "config_settings",
           "given_settings", "warn_unread_settings"]

EXTRA_SETTINGS = ("suppress_tokens", "begin_suppress_tokens", "bad_words_ids", "sequence_bias", "typical_p",
                  "epsilon_cutoff", "eta_cutoff", "renormalize_logits", "exponential_decay_length_penalty",
                  "encoder_repetition_penalty", "encoder_no_repeat_ngram_size", "min_new_tokens",
                  "remove_invalid_values", "stop_strings", "max_time", "top_h", "watermarking_config",
                  "guidance_scale")

# GenerationConfig settings that change the generated tokens and that generate does not read, with the values
# that leave generation as it is (older transformers wrote every default into generation_config.json)
UNREAD_SETTINGS = {"num_beam_groups": (None, 1), "diversity_penalty": (None, 0, 0.0), "penalty_alpha": (None,),
                   "dola_layers": (None,), "constraints": (None,), "force_words_ids": (None,),
                   "token_healing": (None, False)}
_warned: set = set()

# The settings of transformers 5.24's GenerationConfig. Without generation_config.json, transformers' from_pretrained
# builds the generation config from config.json (GenerationConfig.from_pretrained(..., config_file_name="config.json",
# _from_model_config=True)): the values of these keys only, config.json's other keys ignored.
GENERATION_CONFIG_KEYS = (
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "early_stopping", "max_time", "stop_strings",
    "do_sample", "num_beams", "use_mtp", "use_cache", "cache_implementation", "cache_config", "max_cache_len",
    "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "encoder_repetition_penalty", "length_penalty", "no_repeat_ngram_size", "bad_words_ids",
    "renormalize_logits", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "sequence_bias", "token_healing",
    "guidance_scale", "watermarking_config", "num_return_sequences", "output_attentions", "output_hidden_states",
    "output_scores", "output_logits", "return_dict_in_generate", "pad_token_id", "bos_token_id", "eos_token_id",
    "encoder_no_repeat_ngram_size", "decoder_start_token_id", "is_assistant", "num_assistant_tokens",
    "num_assistant_tokens_schedule", "assistant_confidence_threshold", "prompt_lookup_num_tokens",
    "max_matching_ngram_size", "assistant_early_exit", "assistant_lookbehind", "target_lookbehind",
    "assistant_ensemble_weight", "speculation_type", "compile_config", "disable_compile",
    "continuous_batching_config", "low_memory", "penalty_alpha", "dola_layers", "diversity_penalty",
    "num_beam_groups", "constraints", "force_words_ids", "prefill_chunk_size")


def from_model_config(config: dict) -> dict:
    """The generation config transformers builds from a checkpoint's config.json ``config`` where the checkpoint has
    no generation_config.json: config.json's values of GENERATION_CONFIG_KEYS that are not None (a None leaves
    transformers' default), and BART's legacy ``force_bos_token_to_be_generated`` as ``forced_bos_token_id`` =
    ``bos_token_id``; marked ``"_from_model_config": True`` as transformers marks it (and writes it on saving). Its
    ``max_length`` (when set) bounds the whole sequence; unset, generate makes 20 new tokens (up to the model's
    positions), as transformers does."""
    if not isinstance(config, dict):
        raise TypeError(f"from_model_config: config must be a dict (config.json's contents), got "
                        f"{type(config).__name__}")
    out = {k: config[k] for k in GENERATION_CONFIG_KEYS if config.get(k) is not None}
    if config.get("force_bos_token_to_be_generated"):
        if config.get("bos_token_id") is None:
            out.pop("forced_bos_token_id", None)
        else:
            out["forced_bos_token_id"] = config["bos_token_id"]
    out["_from_model_config"] = True
    return out


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _token_ids(value, name: str, vocab: Optional[int] = None) -> List[int]:
    """A list of token ids (ints >= 0; below ``vocab`` when given)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(_int(t) and t >= 0 for t in value):
        raise ValueError(f"generate: {name} must be a list of token ids (ints >= 0), got {value!r}")
    if vocab is not None and any(t >= vocab for t in value):
        raise ValueError(f"generate: {name} holds token ids outside the vocabulary [0, {vocab}): "
                         f"{[t for t in value if t >= vocab]}")
    return [int(t) for t in value]


def _sequences(value, name: str, vocab: int) -> List[Tuple[int, ...]]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(w, (list, tuple, np.ndarray)) and len(w)
                                                       for w in value):
        raise ValueError(f"generate: {name} must be a list of non-empty lists of token ids, got {value!r}")
    return [tuple(_token_ids(list(w), name, vocab)) for w in value]


def _sequence_bias(value, vocab: int) -> Dict[tuple, float]:
    """transformers' two spellings: [[[ids], bias], ...] (generation_config.json's) or {(ids): bias}."""
    expected = "a list of [[token ids], bias] pairs or a dict {(token ids): bias}"
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        pairs = [(p[0], p[1]) for p in value]
    else:
        raise ValueError(f"generate: sequence_bias must be {expected}, got {value!r}")
    out = {}
    for ids, bias in pairs:
        if not isinstance(ids, (list, tuple)) or not ids or not _real(bias) or np.isnan(bias) or bias == np.inf:
            raise ValueError(f"generate: sequence_bias must be {expected} (each sequence non-empty, each bias a "
                             f"number), got {value!r}")
        out[tuple(_token_ids(list(ids), "sequence_bias", vocab))] = float(bias)
    return out


def _check(name: str, value, vocab: int):
    """``value`` of setting ``name`` checked and normalised (None: the setting is off)."""
    if name in ("suppress_tokens", "begin_suppress_tokens"):
        return _token_ids(value, name) or None  # ids past the vocabulary ban nothing, as in transformers
    if name == "bad_words_ids":
        return _sequences(value, name, vocab) or None
    if name == "sequence_bias":
        return _sequence_bias(value, vocab) if value else None
    if name in ("renormalize_logits", "remove_invalid_values"):
        if not isinstance(value, bool):
            raise TypeError(f"generate: {name} must be a bool, got {value!r}")
        return value or None
    if name == "exponential_decay_length_penalty":
        if (not isinstance(value, (list, tuple)) or len(value) != 2 or not _int(value[0]) or value[0] < 0
                or not _real(value[1]) or not 0 < value[1] < float("inf")):
            raise ValueError("generate: exponential_decay_length_penalty must be (start_index, decay_factor): an int "
                             f">= 0 (new tokens before it grows) and a number > 0, got {value!r}")
        return int(value[0]), float(value[1])
    if name == "encoder_repetition_penalty":
        if not _real(value) or not 0 < value < float("inf"):
            raise ValueError(f"generate: encoder_repetition_penalty must be a number > 0 (1.0: none), got {value!r}")
        return None if value == 1 else float(value)
    if name in ("encoder_no_repeat_ngram_size", "min_new_tokens"):
        if not _int(value) or value < 0:
            raise ValueError(f"generate: {name} must be an int >= 0, got {value!r}")
        return int(value) or None
    if name == "stop_strings":
        strings = [value] if isinstance(value, str) else value
        if not isinstance(strings, (list, tuple)) or not strings or not all(isinstance(s, str) and s
                                                                            for s in strings):
            raise ValueError(f"generate: stop_strings must be a non-empty string or a list of them, got {value!r}")
        return list(strings)
    if name == "max_time":
        if not _real(value) or not value > 0:
            raise ValueError(f"generate: max_time must be a number of seconds > 0, got {value!r}")
        return float(value)
    if name == "watermarking_config":
        from .watermarking import watermark_settings
        return watermark_settings(value)
    if name == "guidance_scale":  # transformers applies any value but 1 (none); > 1 follows the prompt more
        if not _real(value) or not np.isfinite(value):
            raise ValueError(f"generate: guidance_scale must be a number (1: no guidance), got {value!r}")
        return None if value == 1 else float(value)
    # typical_p, epsilon_cutoff, eta_cutoff, top_h: sampling.check_sampling checks them with the other warpers
    return value


def read_settings(model, given: dict, vocab: int) -> dict:
    """Each of EXTRA_SETTINGS: ``given[name]`` where the caller gave it (None: off), else generation_config.json's,
    checked; None where off."""
    return config_settings(getattr(model, "generation_config", None) or {}, given, vocab)


def config_settings(config: dict, given: dict, vocab: int) -> dict:
    """read_settings' of a generation_config.json's contents ``config`` (the ONNX paths': no model)."""
    out = {}
    for name in EXTRA_SETTINGS:
        value = given[name] if name in given else config.get(name)
        out[name] = None if value is None else _check(name, value, vocab)
    return out


def given_settings(who: str, settings: dict) -> dict:
    """``settings`` (keyword arguments of ``who``), each the name of one of EXTRA_SETTINGS, else a TypeError."""
    unknown = sorted(set(settings) - set(EXTRA_SETTINGS))
    if unknown:
        raise TypeError(f"{who}: unexpected keyword argument {', '.join(map(repr, unknown))} (the generation settings "
                        f"it takes as keywords: {', '.join(EXTRA_SETTINGS)})")
    return dict(settings)


def warn_unread_settings(model) -> None:
    """One warning (once per set of names) naming the settings generation_config.json sets that would change
    transformers' tokens and that generate does not read."""
    config = getattr(model, "generation_config", None) or {}
    names = [n for n, neutral in UNREAD_SETTINGS.items() if n in config
             and not any(config[n] is v or (v is not None and config[n] == v) for v in neutral)]
    # an encoder-decoder's decoder starts with config.json's decoder_start_token_id
    start = config.get("decoder_start_token_id")
    if getattr(model, "is_encoder_decoder", False) and start is not None and start != model.decoder_start_token_id:
        names.append("decoder_start_token_id")
    names = tuple(sorted(names))
    if names and names not in _warned:
        _warned.add(names)
        warnings.warn(f"generate: generation_config.json sets {', '.join(names)}, which forgegrad's generate does not "
                      "read (the tokens can differ from transformers')", UserWarning, stacklevel=3)
