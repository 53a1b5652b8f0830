"""Whisper's decoder prompts, as transformers' generate builds them: the start, language and task tokens and
<|notimestamps|> (``decoder_prompts``: the languages by code, name or token, or detected), a text prompt
(``text_prompt``: ``prompt_ids`` and ``prompt_condition_type``) and the previous windows' tokens before a window
(``conditioned_prompt``). generate (whisper_generate.py) decodes after them."""
from __future__ import annotations

import numbers
from typing import List, Optional

import numpy as np

from ...tensor import Tensor

__all__ = ["LANGUAGES", "language_id", "token_list", "decoder_prompts", "text_prompt", "conditioned_prompt"]

# Whisper's languages (code -> name), the names generate accepts besides the codes and the tokens
LANGUAGES = dict(zip(
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi ml "
    "cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd gu am "
    "yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue".split(),
    ["english", "chinese", "german", "spanish", "russian", "korean", "french", "japanese", "portuguese", "turkish",
     "polish", "catalan", "dutch", "arabic", "swedish", "italian", "indonesian", "hindi", "finnish", "vietnamese",
     "hebrew", "ukrainian", "greek", "malay", "czech", "romanian", "danish", "hungarian", "tamil", "norwegian", "thai",
     "urdu", "croatian", "bulgarian", "lithuanian", "latin", "maori", "malayalam", "welsh", "slovak", "telugu",
     "persian", "latvian", "bengali", "serbian", "azerbaijani", "slovenian", "kannada", "estonian", "macedonian",
     "breton", "basque", "icelandic", "armenian", "nepali", "mongolian", "bosnian", "kazakh", "albanian", "swahili",
     "galician", "marathi", "punjabi", "sinhala", "khmer", "shona", "yoruba", "somali", "afrikaans", "occitan",
     "georgian", "belarusian", "tajik", "sindhi", "gujarati", "amharic", "yiddish", "lao", "uzbek", "faroese",
     "haitian creole", "pashto", "turkmen", "nynorsk", "maltese", "sanskrit", "luxembourgish", "myanmar", "tibetan",
     "tagalog", "malagasy", "assamese", "tatar", "hawaiian", "lingala", "hausa", "bashkir", "javanese", "sundanese",
     "cantonese"]))
_CODE_BY_NAME = {**{name: code for code, name in LANGUAGES.items()},
                 "burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht", "letzeburgesch": "lb",
                 "pushto": "ps", "panjabi": "pa", "moldavian": "ro", "moldovan": "ro", "sinhalese": "si",
                 "castilian": "es", "mandarin": "zh"}
_TASKS = ("translate", "transcribe")


def language_id(language, lang_to_id: dict) -> int:
    if not isinstance(language, str):
        raise TypeError(f"generate: language must be a string ('fr', 'french' or '<|fr|>'), got {language!r}")
    name = language.lower()
    if name in lang_to_id:
        token = name
    elif name in _CODE_BY_NAME:
        token = f"<|{_CODE_BY_NAME[name]}|>"
    elif name in LANGUAGES:
        token = f"<|{name}|>"
    else:
        raise ValueError(f"generate: unsupported language {language!r}: give a code ('fr'), a name ('french') or a "
                         "language token ('<|fr|>')")
    if token not in lang_to_id:
        raise ValueError(f"generate: language {language!r} ({token}) is not in this checkpoint's lang_to_id")
    return int(lang_to_id[token])


def token_list(value, vocab: int, name: str) -> List[int]:
    if value is None:
        return []
    tokens = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) and 0 <= t < vocab for t in tokens):
        raise ValueError(f"generate: {name} must be token ids in [0, {vocab}), got {value!r}")
    return [int(t) for t in tokens]


def decoder_prompts(model, gc: dict, batch: int, language, task, detect, timestamps: bool) -> List[List[int]]:
    """transformers' ``_retrieve_init_tokens``: each row's decoder prompt (ending with <|notimestamps|> unless
    ``timestamps``)."""
    if gc.get("is_multilingual") is False and (task is not None or language is not None):
        raise ValueError("generate: language and task need a multilingual checkpoint (is_multilingual is false)")
    lang_to_id, task_to_id = gc.get("lang_to_id"), gc.get("task_to_id")
    if language is not None and not isinstance(lang_to_id, dict):
        raise ValueError("generate: language needs lang_to_id in the checkpoint's generation_config.json")
    if task is not None and not isinstance(task_to_id, dict):
        raise ValueError("generate: task needs task_to_id in the checkpoint's generation_config.json")
    if task is not None and task not in _TASKS:
        raise ValueError(f"generate: task must be 'transcribe' or 'translate', got {task!r}")
    init: List[Optional[int]] = [model.decoder_start_token_id]
    if task is None and language is None:
        forced = gc.get("forced_decoder_ids") or model.config.get("forced_decoder_ids")
        if forced and forced[0][0] == 1:
            for place, (i, token) in enumerate(forced, start=1):
                if i != place:
                    raise ValueError(f"generate: forced_decoder_ids {forced!r} do not follow Whisper's prompt "
                                     "(places 1, 2, ...)")
                init.append(token)
    lang_undefined = len(init) <= 1 or init[1] is None
    if isinstance(language, (list, tuple)):
        if len(language) != batch or any(lang is None for lang in language):
            raise ValueError(f"generate: a list of languages needs one (not None) per input ({batch}), "
                             f"got {language!r}")
        languages = list(language)
    else:
        languages = [language] * batch
    rows = [list(init) for _ in range(batch)]
    lang_ids = None
    if language is not None:
        lang_ids = [language_id(lang, lang_to_id) for lang in languages]
    elif isinstance(lang_to_id, dict) and lang_undefined:
        lang_ids = detect(sorted(int(v) for v in lang_to_id.values()))
    no_timestamps = gc.get("no_timestamps_token_id")
    for r, row in enumerate(rows):
        if lang_ids is not None:
            if len(row) > 1:
                row[1] = lang_ids[r]
            else:
                row.append(lang_ids[r])
        if task is not None:  # (forced_decoder_ids are ignored when a task is given: no task token yet)
            row.append(int(task_to_id[task]))
        elif language is not None and isinstance(task_to_id, dict):
            if not any(t in task_to_id.values() for t in row):
                row.append(int(task_to_id["transcribe"]))
        if not timestamps and no_timestamps is not None and row[-1] != no_timestamps:
            row.append(int(no_timestamps))
        elif timestamps and row[-1] == no_timestamps:
            row.pop()
        row[:] = [t for t in row if t is not None]
    return rows


def text_prompt(prompt_ids, prompt_condition_type, condition: bool, vocab: int):
    """``prompt_ids`` as a 1-D int64 array (or None), and whether it starts every window ("all-segments"), checked
    as transformers checks them (prompt_condition_type is checked with or without prompt_ids)."""
    kind = prompt_condition_type or "first-segment"
    if kind not in ("first-segment", "all-segments"):
        raise ValueError(f"generate: prompt_condition_type must be 'first-segment' or 'all-segments', got "
                         f"{prompt_condition_type!r}")
    if kind == "all-segments" and not condition:
        raise ValueError("generate: prompt_condition_type='all-segments' needs condition_on_prev_tokens=True (the "
                         "prompt then starts each window, before the previous tokens)")
    if prompt_ids is None:
        return None, False
    ids = prompt_ids.numpy() if isinstance(prompt_ids, Tensor) else np.asarray(prompt_ids)
    if (ids.ndim != 1 or ids.size == 0 or ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(f"generate: prompt_ids must be a non-empty 1-D sequence of token ids in [0, {vocab}) "
                         "(WhisperTokenizer.get_prompt_ids' <|startofprev|> and the text's tokens), got "
                         f"{prompt_ids!r}")
    return ids.astype(np.int64), kind == "all-segments"


def conditioned_prompt(prompt: np.ndarray, segments: List[Optional[List[dict]]], bos: Optional[np.ndarray],
                       cut_off: int, stamp_begin: int, pad: int):
    """transformers' prompt with condition_on_prev_tokens: ``bos`` (<|startofprev|>, or the whole ``prompt_ids``
    with "all-segments"), the last ``cut_off`` tokens of each input's segments so far (a segment ending in a
    timestamp pair without its last timestamp), left padded with ``pad`` to the longest, then the start tokens; and
    where it is not padding (the tokens other than ``pad``)."""
    prev = []
    for row in segments:
        tokens = [s["tokens"][:-1] if len(s["tokens"]) > 2 and s["tokens"][-2] >= stamp_begin else s["tokens"]
                  for s in row or []]  # (None: a row not conditioned, <|startofprev|> only)
        kept = np.concatenate(tokens)[-cut_off:].tolist() if tokens else []
        prev.append(([] if bos is None else [int(t) for t in bos]) + kept)
    width = max(len(p) for p in prev)
    ids = np.array([[pad] * (width - len(p)) + p for p in prev], np.int64).reshape(len(prev), width)
    ids = np.concatenate([ids, prompt], 1)
    return ids, ids != pad
