"""MPI job (2 ranks): forgegrad's Hugging Face models (GPT-2 with its tied head, Llama, T5, BART) wrapped with a plain
``FullyShardedDataParallel(model)``: the default units are the blocks each model declares (_no_split_modules),
the embeddings, the tied head and the final norm in the root unit. Usage: mpiexec -n 2 python
fsdp_hf_default_units_job.py OUT_DIR MODEL_DIR... (directories written by transformers' save_pretrained).

For each model and each of FULL_SHARD and SHARD_GRAD_OP, every rank compares the wrapped model's logits on its
own batch with the unwrapped model's, then takes one ZeRO-3 SGD step on its batch's loss and compares the
wrapped model's state_dict with the unwrapped model stepped on the mean of both ranks' losses (ZeRO averages
the gradients over the ranks). Rank 0 writes the largest differences and the units to OUT_DIR/result.json,
which tests/test_fsdp_hf_default_units.py checks.
"""
import sys

import numpy as np
from common import write_json

import forgegrad as fg
import forgegrad.distributed as dist
from forgegrad import optim
from forgegrad.models import from_pretrained

VOCAB, T, LR = 40, 6, 0.5


def batch(rank):
    return fg.tensor(np.random.default_rng(rank).integers(1, VOCAB, (2, T)).astype(np.int64))


def logits(model, ids):
    seq2seq = "decoder" in dict(getattr(model, "module", model).named_children())
    out = model(ids, decoder_input_ids=ids) if seq2seq else model(ids)
    return out.logits if hasattr(out, "logits") else out[0] if isinstance(out, tuple) else out


def loss(model, ids):
    return (logits(model, ids) ** 2).mean()


def check(path, strategy, rank, size):
    plain = from_pretrained(path)
    model = dist.FullyShardedDataParallel(from_pretrained(path), sharding_strategy=strategy)
    ids = batch(rank)
    with fg.no_grad():
        logit_diff = float(np.abs(logits(model, ids).numpy() - logits(plain, ids).numpy()).max())
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.SGD, stage=3, lr=LR)
    opt.zero_grad()
    loss(model, ids).backward()
    opt.step()
    ref = optim.SGD(plain.parameters(), lr=LR)
    ref.zero_grad()
    (sum(loss(plain, batch(r)) for r in range(size)) / size).backward()
    ref.step()
    got, want = model.state_dict(), plain.state_dict()
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    step_diff = max(float(np.abs(got[k].numpy() - want[k].numpy()).max()) for k in want)
    moved = max(float(np.abs(got[k].numpy() - v.numpy()).max()) for k, v in from_pretrained(path).state_dict().items())
    return {"logits": logit_diff, "step": step_diff, "moved": moved, "finite": bool(np.isfinite(step_diff)),
            "units": [type(u.module).__name__ for u in model.units]}


def main():
    dist.init()
    rank, size = dist.rank(), dist.size()
    result = {}
    for path in sys.argv[2:]:
        for strategy in ("FULL_SHARD", "SHARD_GRAD_OP"):
            result[f"{path.rstrip('/').rsplit('/', 1)[-1]}/{strategy}"] = check(path, strategy, rank, size)
    every = dist.allgather_object(result)
    if rank == 0:
        write_json(f"{sys.argv[1]}/result.json", {"ranks": every})


if __name__ == "__main__":
    main()
