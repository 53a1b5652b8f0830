"""The `embed` suite: sentence embeddings, forgegrad's /v1/embeddings path (``serve.embeddings.Embedder``:
tokenize, encode on the real tokens only, pool, normalize; the model frozen in place as the server loads it) against
sentence-transformers' ``encode`` on the same directory.

The model has all-MiniLM-L6-v2's shape (6 layers, 384 wide, 12 heads, 1536 feed-forward; random weights that
transformers initialised, mean pooling + Normalize, saved by sentence-transformers), the texts 10-60 words of a
fixed vocabulary (64 texts; 16 with --quick), in batches of 32 on both sides. Needs transformers, tokenizers and
sentence-transformers (the row is reported absent without them).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._timing import optional_import

WORDS = ("the model server answers each request with vectors that a search index compares by their cosine "
         "similarity so that texts about the same thing land near each other").split()
BATCH = 32


def texts(n: int) -> List[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, rng.integers(10, 61))) for _ in range(n)]


def minilm_directory(path: str) -> str:
    """A sentence-transformers directory of all-MiniLM-L6-v2's shape under ``path`` (written once)."""
    out = os.path.join(path, "st")
    if os.path.isdir(out):
        return out
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import BertWordPieceTokenizer
    transformers.logging.set_verbosity_error()
    base = os.path.join(path, "base")
    os.makedirs(base, exist_ok=True)
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator([" ".join(WORDS)] * 20, vocab_size=200)
    tok.save(os.path.join(base, "tokenizer.json"))
    transformers.BertTokenizerFast(tokenizer_file=os.path.join(base, "tokenizer.json")).save_pretrained(base)
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
        max_position_embeddings=512)).save_pretrained(base)
    t = Transformer(base, max_seq_length=256)
    SentenceTransformer(modules=[t, Pooling(384, "mean"), Normalize()], device="cpu").save(out)
    return out


def embed_fns(n_texts: int, tmp: str):
    """{"forgegrad", "sentence-transformers": embed the texts}, None for an absent side."""
    fns = {"forgegrad": None, "sentence-transformers": None}
    if any(optional_import(m) is None for m in ("torch", "transformers", "tokenizers", "sentence_transformers")):
        return fns
    from sentence_transformers import SentenceTransformer

    from ..serve.embeddings import Embedder
    from ..serve.encoder_app import EncoderServeConfig
    from ..serve.openai_routes import served_model
    path = minilm_directory(tmp)
    batch = texts(n_texts)
    ours = served_model(EncoderServeConfig(path, max_batch=BATCH), Embedder, (BATCH,))  # frozen, as served
    theirs = SentenceTransformer(path, device="cpu")
    fns["forgegrad"] = lambda: ours.embed([ours.token_ids(x, i) for i, x in enumerate(batch)])
    fns["sentence-transformers"] = lambda: theirs.encode(batch, batch_size=BATCH, convert_to_numpy=True)
    return fns


_TMP: List[str] = []


def _scratch() -> str:
    """A directory for the model (~90 MB), made on first use and removed when the process exits."""
    if not _TMP:
        _TMP.append(tempfile.mkdtemp(prefix="forgegrad-embed-"))
        atexit.register(shutil.rmtree, _TMP[0], True)
    return _TMP[0]


def workloads(quick: bool = False) -> List[Workload]:
    n = 16 if quick else 64
    return [Workload(f"embed MiniLM-L6 shape, {n} texts of 10-60 words, batch {BATCH}",
                     ("forgegrad", "sentence-transformers"), lambda _threads: embed_fns(n, _scratch()))]


@suite("embed")
def embed_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.0) if quick else (5, 0.5)
    return time_workloads(workloads(quick), threads, repeat, min_time)
