"""nn.EmbeddingBag (sum / mean / max, fwd+bwd) and nn.Embedding's backward against torch, alternated, the best of
each taken, at 1 and 2 threads on both sides. Figures on a shared machine are rough.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_embedding_bag.py [threads ...]
"""
import sys

import numpy as np
import torch

import forgegrad as fg
from torch_ops_interleaved import compare


def bag_step(module, idx, offsets, psw=None):
    def run():
        module.weight.grad = None
        (module(idx, offsets) if psw is None else module(idx, offsets, psw)).sum().backward()
    return run


def main(threads):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 10000, 20000)
    offsets = np.concatenate([[0], np.sort(rng.choice(np.arange(1, 20000), 511, replace=False))])
    weight = rng.standard_normal((10000, 64)).astype(np.float32)
    psw = rng.random(20000).astype(np.float32)
    tok = rng.integers(0, 50257, (8, 1024))
    wte = rng.standard_normal((50257, 768)).astype(np.float32)
    grad = rng.standard_normal((8, 1024, 768)).astype(np.float32)
    for n in threads:
        fg.set_num_threads(n)
        torch.set_num_threads(n)
        print(f"-- {n} thread(s)")
        for mode in ("sum", "mean", "max"):
            ours, theirs = fg.nn.EmbeddingBag(10000, 64, mode=mode), torch.nn.EmbeddingBag(10000, 64, mode=mode)
            ours.weight.data, theirs.weight.data = fg.tensor(weight), torch.tensor(weight)
            compare(f"EmbeddingBag {mode} fwd+bwd 10000x64 20k idx 512 bags",
                    bag_step(ours, fg.tensor(idx), fg.tensor(offsets)),
                    bag_step(theirs, torch.tensor(idx), torch.tensor(offsets)))
        ours, theirs = fg.nn.EmbeddingBag(10000, 64, mode="sum"), torch.nn.EmbeddingBag(10000, 64, mode="sum")
        ours.weight.data, theirs.weight.data = fg.tensor(weight), torch.tensor(weight)
        compare("EmbeddingBag sum+per_sample_weights fwd+bwd",
                bag_step(ours, fg.tensor(idx), fg.tensor(offsets), fg.tensor(psw)),
                bag_step(theirs, torch.tensor(idx), torch.tensor(offsets), torch.tensor(psw)))

        ours, theirs = fg.nn.Embedding(50257, 768), torch.nn.Embedding(50257, 768)
        ours.weight.data, theirs.weight.data = fg.tensor(wte), torch.tensor(wte)
        ft, tt, fgr, tgr = fg.tensor(tok), torch.tensor(tok), fg.tensor(grad), torch.tensor(grad)

        def emb(module, t, g):
            def run():
                module.weight.grad = None
                module(t).backward(g)
            return run
        compare("Embedding fwd+bwd 50257x768, 8x1024 tokens", emb(ours, ft, fgr), emb(theirs, tt, tgr), 5)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 2])
