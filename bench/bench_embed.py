"""Sentence embeddings on all-MiniLM-L6-v2's shape (64 texts of 10-60 words, batches of 32): forgegrad's
/v1/embeddings path (serve.embeddings.Embedder) vs sentence-transformers' encode. Threads pinned on every side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_embed.py --benchmark-only --benchmark-group-by=group

The workloads are forgegrad.bench.embed's (`forgegrad bench embed` times them in interleaved rounds).
"""
import numpy as np
import pytest

from forgegrad.bench import embed

pytest.importorskip("sentence_transformers")

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py
WORKLOADS = embed.workloads()


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in WORKLOADS for r in w.runtimes], ids=str)
def test_embed(run_workload, workload, runtime):
    run_workload(workload, runtime)


def test_both_sides_compute_the_same_vectors(tmp_path):
    fns = embed.embed_fns(8, str(tmp_path))
    np.testing.assert_allclose(fns["forgegrad"](), fns["sentence-transformers"](), rtol=1e-4, atol=1e-5)
