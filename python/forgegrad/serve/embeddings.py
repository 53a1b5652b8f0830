"""Text embeddings over HTTP: OpenAI's embeddings API for a Hugging Face encoder checkpoint (``BertModel``,
``RobertaModel``, ``XLMRobertaModel``, ``ModernBertModel``, ``DistilBertModel``, ``DebertaV2Model`` (DeBERTa-v2 and
v3), ``MPNetModel``, ``ElectraModel``, ``AlbertModel``, and the sentence-transformers models built on them, such as
all-MiniLM-L6-v2, paraphrase-multilingual-MiniLM-L12-v2 or all-mpnet-base-v2).

    forgegrad serve ENCODER_DIR   (the app: encoder_app.py)

    POST /v1/embeddings  {"input": "text" | ["text", ...] | [token ids] | [[token ids], ...],
                          "encoding_format": "float" | "base64", "model": ..., "dimensions": ..., "user": ...}
    GET  /v1/models  /ping  /health  /metrics

Each text is tokenized with the directory's tokenizer.json, its special tokens included ([CLS] ... [SEP]); token
ids are taken as given. An input longer than the model takes (sentence-transformers' max_seq_length: in
sentence_bert_config.json, or tokenizer_config.json's model_max_length; at most config.json's
max_position_embeddings) is refused with a 400 naming it, as OpenAI does, where sentence-transformers would cut it.

The vector is what sentence-transformers' ``encode`` gives for the directory: its ``modules.json`` pipeline, the
Pooling module's modes (``1_Pooling/config.json``: cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken;
several are concatenated) and a Normalize module's L2 normalization. A directory without modules.json (a plain
transformers save) is mean-pooled and not normalized, as sentence-transformers reads one. The inputs of the
requests waiting run through the model together (``encoder_app.EncoderQueue``: up to ``max_batch`` inputs, no
batching delay), in batches of similar lengths; only attention runs on the padded batch
(``BertModel.encode_packed``), the per-token layers on the real tokens.
"""
from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np

from .completion_request import CompletionError, bad, is_int, request_object, served_model

MAX_INPUTS = 2048  # as OpenAI's
# characters a token may need at most, as completions.py's: a text longer than context x this is tokenized only from
# its beginning (the tokenizer holds the GIL: a 14 MB input took the event loop 49 s to refuse, 37 s to rerank)
MAX_TOKEN_CHARS = 32
_WORD_END = re.compile(r"[^\W_](?=\s)")  # a letter or digit before a whitespace: where pre-tokenizers split
_ENCODERS = ("BertModel", "RobertaModel", "XLMRobertaModel", "ModernBertModel", "DistilBertModel", "DebertaV2Model",
             "MPNetModel", "ElectraModel", "AlbertModel",
             # decoders saved as base models: decoder embedding models (Qwen3-Embedding), last-token pooled
             "LlamaModel", "MistralModel", "Qwen2Model", "Qwen3Model")
_FIELDS = {"input", "model", "encoding_format", "dimensions", "user"}
# sentence-transformers' pooling modes; its older configs' flags, in the order it concatenates them
_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
                 "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def checkpoint_kind(path: str) -> Tuple[Optional[str], Optional[str]]:
    """(the one architecture config.json lists, or None; its model_type) of a checkpoint directory; (None, None)
    when config.json does not read as an object."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None, None
    if not isinstance(cfg, dict):
        return None, None
    arch = cfg.get("architectures")
    one = arch[0] if isinstance(arch, list) and len(arch) == 1 and isinstance(arch[0], str) else None
    return one, cfg.get("model_type") if not arch else None


def is_embedding_checkpoint(path: str) -> bool:
    """Whether a checkpoint directory holds an encoder that forgegrad serves as embeddings (BERT, RoBERTa, XLM-R,
    ModernBERT, DistilBERT, DeBERTa-v2/v3, MPNet, ELECTRA, ALBERT)."""
    arch, model_type = checkpoint_kind(path)
    return arch in _ENCODERS or model_type in ("bert", "roberta", "xlm-roberta", "modernbert", "distilbert",
                                               "deberta-v2", "mpnet", "electra",
                                               "albert")


def read_json(path: str, what: str) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{what}: cannot read {path}: {e}") from None


def _pooling_modes(cfg) -> Tuple[str, ...]:
    """A Pooling module's modes: ``pooling_mode`` (a name or a list, sentence-transformers 6) or the older
    ``pooling_mode_*`` flags (none on: mean), in the order the vector concatenates them."""
    if not isinstance(cfg, dict):
        raise ValueError("the Pooling module's config.json must be an object")
    modes = cfg.get("pooling_mode")
    if modes is None:
        modes = tuple(mode for key, mode in _LEGACY_MODES.items() if cfg.get(key)) or ("mean",)
    elif isinstance(modes, str):
        modes = (modes,)
    if not isinstance(modes, (list, tuple)) or not modes or any(m not in _MODES for m in modes):
        raise ValueError(f"the Pooling module's pooling_mode must be one or more of {', '.join(_MODES)}, "
                         f"got {cfg.get('pooling_mode')!r}")
    return tuple(modes)


def _check_modalities(path: str) -> None:
    """sentence-transformers 6 feeds a text through the chat template when the directory's Transformer module lists
    the "message" modality (a tokenizer with a chat template): not done here yet, so refused rather than embedding
    other tokens."""
    file = os.path.join(path, "sentence_bert_config.json")
    cfg = read_json(file, "sentence_bert_config.json") if os.path.isfile(file) else {}
    if isinstance(cfg, dict) and "message" in (cfg.get("modality_config") or {}):
        raise ValueError("sentence_bert_config.json lists the 'message' modality (texts rendered with the chat "
                         "template before tokenizing), which forgegrad does not run yet")


def max_length(path: str) -> Optional[int]:
    """The most tokens sentence-transformers feeds the model: sentence_bert_config.json's max_seq_length
    (sentence-transformers 2-5), else tokenizer_config.json's model_max_length (6), when set."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            v = read_json(file, name)
            v = v.get(key) if isinstance(v, dict) else None
            if is_int(v) and 0 < v < 10 ** 6:  # transformers writes a huge sentinel for "no limit"
                return int(v)
    return None


def read_pipeline(path: str) -> Tuple[Tuple[str, ...], bool, Optional[int]]:
    """(pooling modes, normalize, max tokens) of a checkpoint directory as sentence-transformers reads it: its
    modules.json (types by their last name, so both its older ``sentence_transformers.models.*`` and its newer
    module paths), or mean pooling without normalization when there is none."""
    modules = os.path.join(path, "modules.json")
    max_len = max_length(path)
    if not os.path.isfile(modules):
        return ("mean",), False, max_len
    listed = read_json(modules, "modules.json")
    if not isinstance(listed, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str)
                                               for m in listed):
        raise ValueError("modules.json must be a list of {\"type\": ..., \"path\": ...} objects")
    modes: Tuple[str, ...] = ()
    normalize = False
    for m in listed:
        kind = m["type"].rsplit(".", 1)[-1]
        if kind == "Transformer":
            continue
        if kind == "Pooling" and not modes:
            modes = _pooling_modes(read_json(os.path.join(path, str(m.get("path", "")), "config.json"),
                                              "the Pooling module"))
        elif kind == "Normalize" and modes and not normalize:
            normalize = True
        else:
            raise ValueError(f"modules.json lists {m['type']} here, which forgegrad does not run yet (it runs "
                             "Transformer, Pooling, then optionally Normalize)")
    if not modes:
        raise ValueError("modules.json lists no Pooling module")
    return modes, normalize, max_len


def pool(hidden: np.ndarray, lengths: np.ndarray, modes: Tuple[str, ...], normalize: bool) -> np.ndarray:
    """Sentence vectors (B, len(modes) * H) of ``hidden`` (B, T, H), row b's tokens ``[0, lengths[b])`` (right
    padding), as sentence-transformers' Pooling and Normalize compute them."""
    B, T, _ = hidden.shape
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)[:, :, None]
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(np.where(mask > 0, hidden, np.float32(-np.inf)).max(axis=1))
        elif mode == "lasttoken":
            parts.append(hidden[np.arange(B), lengths - 1])
        else:
            w = mask * np.arange(1, T + 1, dtype=np.float32)[None, :, None] if mode == "weightedmean" else mask
            total, count = (hidden * w).sum(axis=1), np.maximum(w.sum(axis=1), np.float32(1e-9))
            parts.append(total / (np.sqrt(count) if mode == "mean_sqrt_len_tokens" else count))
    out = np.concatenate(parts, axis=1).astype(np.float32)
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
    return out


class Embedder:
    """An encoder, its tokenizer and its pooling; ``embed`` runs on one thread at a time (the server's worker)."""

    def __init__(self, path: str, weights: str = "float32", max_batch: int = 32):
        self.model, self.tokenizer = load_encoder(path, weights)
        _check_modalities(path)
        self.modes, self.normalize, _ = read_pipeline(path)
        cfg = self.model.config
        self.context = context(path, self.model.max_tokens)
        self.vocab = int(cfg["vocab_size"])
        self.dim = len(self.modes) * int(cfg["hidden_size"])
        self.max_batch = max_batch

    def describe(self) -> str:
        return f"{self.dim}-dimensional vectors, up to {self.context} tokens"

    async def answer(self, body: bytes, name: str, run) -> Tuple[dict, int]:
        return await embeddings_answer(self, body, name, run)

    async def score(self, body: bytes, name: str, run) -> Tuple[dict, int]:
        """The score API's answer (vLLM's ``/v1/score``) for an embedding model: each text pair's cosine similarity,
        in the request's order."""
        from .rerank import parse_score, score_response
        pairs = parse_score(body, name)
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))  # each distinct text embedded once
        ids = [self.token_ids(t, i) for i, t in enumerate(texts)]
        vectors = np.asarray(await run(ids), np.float64)
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        row = {t: i for i, t in enumerate(texts)}
        return score_response(name, [unit[row[a]] @ unit[row[b]] for a, b in pairs], sum(len(x) for x in ids))

    def token_ids(self, item, index: int) -> List[int]:
        ids = encode_checked(self.tokenizer, item, index, self.context) if isinstance(item, str) else item
        if not ids:
            raise CompletionError(400, f"input {index} gives no tokens", "input")
        bad_id = next((t for t in ids if not 0 <= t < self.vocab), None)
        if bad_id is not None:
            raise CompletionError(400, f"input {index}: token id {bad_id} is outside the vocabulary [0, "
                                       f"{self.vocab})", "input")
        return checked_length(ids, index, self.context)

    def embed(self, ids: List[List[int]]) -> np.ndarray:
        """(len(ids), dim) float32 vectors. Rows of similar lengths run together, up to max_batch at a time,
        through ``BertModel.encode_packed``: only attention sees the padding."""
        out = np.empty((len(ids), self.dim), np.float32)
        for rows in length_batches([len(x) for x in ids], self.max_batch):
            lengths = np.array([len(ids[i]) for i in rows])
            packed = self.model.encode_packed([ids[i] for i in rows])
            hidden = np.zeros((len(rows), int(lengths.max()), packed.shape[1]), np.float32)
            hidden[np.arange(hidden.shape[1])[None, :] < lengths[:, None]] = packed
            out[rows] = pool(hidden, lengths, self.modes, self.normalize)
        return out


def text_head(text: str, tokens: int, count) -> str:
    """``text``, or where it is longer than ``tokens`` tokens could need (MAX_TOKEN_CHARS characters each) a beginning
    of it that tokenizes to the same first tokens and still to more than ``tokens`` (``count``: a text's number of
    tokens): cut just before a whitespace that follows a letter or digit, where every tokenizer's pre-tokenizer splits
    (BERT's whitespace and punctuation, byte-level BPE's regexes, SentencePiece's metaspace), so the tokens before
    the cut are the whole text's. A text without such a place in the second half of its first ``tokens`` x
    MAX_TOKEN_CHARS characters (a text of no spaces) is kept whole."""
    limit = tokens * MAX_TOKEN_CHARS
    if len(text) <= limit:
        return text
    cut = max((m.start() + 1 for m in _WORD_END.finditer(text, limit // 2, limit + 1)), default=None)
    if cut is None:
        return text
    head = text[:cut]
    return head if count(head) > tokens else text


def load_served_model(path: str, weights: str):
    """The checkpoint's model in eval mode, its Linear weights float32, bfloat16 or weight-only int8."""
    from ..models.hf import from_pretrained
    model = from_pretrained(path, dtype="bfloat16" if weights == "bfloat16" else "float32")
    if weights == "int8":
        from ..quantization import quantize_weight_only
        model = quantize_weight_only(model, inplace=True)
    return model.eval()


def load_encoder(path: str, weights: str):
    """(``load_served_model``'s model; its tokenizer)."""
    from ..models.hf.tokenizer import load_tokenizer
    model = load_served_model(path, weights)
    return model, load_tokenizer(path, int(model.config["vocab_size"]))


def context(path: str, max_tokens: int) -> int:
    """The most tokens an input may have: the model's (``max_tokens``), or sentence-transformers' less."""
    return int(min(max_tokens, max_length(path) or max_tokens))


def length_batches(lengths: List[int], max_batch: int) -> Iterator[List[int]]:
    """The indices of inputs of ``lengths``, shortest first, up to ``max_batch`` at a time: inputs of similar
    lengths run together, so little padding reaches attention."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for start in range(0, len(order), max_batch):
        yield order[start:start + max_batch]


def encode_checked(tokenizer, text: str, index: int, limit: int) -> List[int]:
    """The tokens of input ``index`` (its special tokens included); one past ``limit`` tokens from its beginning
    already is refused (400) without tokenizing the rest."""
    chars = limit * MAX_TOKEN_CHARS
    if len(text) > chars:
        head = tokenizer.encode(text[:chars], add_special_tokens=True)
        if len(head) > limit + 1:  # (+1: the cut may have split a token)
            raise CompletionError(400, f"input {index} has more than {len(head) - 1} tokens ({len(text)} characters); "
                                       f"this model takes at most {limit}", "input", "context_length_exceeded")
    return tokenizer.encode(text, add_special_tokens=True)


def checked_length(ids: List[int], index: int, limit: int) -> List[int]:
    if len(ids) > limit:
        raise CompletionError(400, f"input {index} has {len(ids)} tokens; this model takes at most {limit}", "input",
                              "context_length_exceeded")
    return list(ids)


def _inputs(value) -> list:
    """A string, a list of strings, a list of token ids, or a list of token-id lists (one vector each)."""
    expected = (f"a non-empty string, a list of up to {MAX_INPUTS} of them, a list of token ids, or a list of "
                "token-id lists")
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, list) and value and all(is_int(v) for v in value):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_INPUTS:
        raise bad("input", expected, value)
    for item in value:
        ok_item = (isinstance(item, str) and item) or (isinstance(item, list) and item and all(is_int(v) for v in item))
        if not ok_item:
            raise bad("input", expected, item)
    return [item if isinstance(item, str) else [int(v) for v in item] for item in value]


@dataclass
class EmbeddingRequest:
    inputs: list
    base64: bool = False


def parse(body: bytes, served_name: str, dim: int) -> EmbeddingRequest:
    obj = request_object(body, _FIELDS, {})
    if "input" not in obj:
        raise CompletionError(400, "input is required", "input")
    req = EmbeddingRequest(_inputs(obj["input"]))
    served_model(obj, served_name)
    fmt = obj.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise bad("encoding_format", '"float" or "base64"', fmt)
    req.base64 = fmt == "base64"
    v = obj.get("dimensions")
    if v is not None and (not is_int(v) or v != dim):
        raise bad("dimensions", f"this model's size, {dim} (shortened vectors are not supported)", v)
    return req


async def embeddings_answer(emb: Embedder, body: bytes, name: str, run) -> Tuple[dict, int]:
    """The /v1/embeddings answer to ``body`` and the tokens it embedded; ``await run(items)`` embeds them with the
    requests waiting (encoder_app.EncoderQueue)."""
    req = parse(body, name, emb.dim)
    ids = [emb.token_ids(item, i) for i, item in enumerate(req.inputs)]
    vectors = await run(ids)
    tokens = sum(len(x) for x in ids)
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") if req.base64 else v.tolist()}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, tokens
