"""MPI job (2 ranks): a transformers BERT (forgegrad.models.from_pretrained) under FullyShardedDataParallel,
two forwards, then two separate backwards whose losses reach different units on the two ranks: rank 0's
first loss reads the pooler's output and its second the last hidden state, rank 1's the other way round
(so each pass skips the pooler's units on one rank). Usage: mpiexec -n 2 python fsdp_hf_bert_job.py OUT_DIR
MODEL_DIR. One ZeRO-3 SGD step (lr 1: the update is the averaged gradient); rank 0 writes the plain
model's state_dict to OUT_DIR/params.npz, which tests/test_fsdp_two_backwards.py compares with transformers
stepping on the mean of both ranks' losses. The model returns a NamedTuple (BertOutput), read by field name.
"""
import sys

import numpy as np

import forgegrad.distributed as dist
from forgegrad import optim
from forgegrad.models import from_pretrained

VOCAB, T = 64, 7


def ids(rank, micro):
    return np.random.default_rng(10 * rank + micro).integers(1, VOCAB, (2, T)).astype(np.int64)


def losses(out_of, rank):
    """[l1, l2] from the two forwards' outputs: (pooler, hidden) on rank 0, (hidden, pooler) on rank 1."""
    first, second = out_of(ids(rank, 0)), out_of(ids(rank, 1))
    pool = lambda o: (o.pooler_output ** 2).mean()  # noqa: E731
    hidden = lambda o: (o.last_hidden_state ** 2).mean()  # noqa: E731
    return [pool(first), hidden(second)] if rank == 0 else [hidden(first), pool(second)]


def main():
    dist.init()
    rank = dist.rank()
    net = from_pretrained(sys.argv[2]).train()
    # a unit per block (BertEmbeddings reads position_embeddings.weight without calling that Embedding)
    model = dist.FullyShardedDataParallel(net, units=[net.embeddings, *net.encoder.layer, net.pooler])
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.SGD, stage=3, lr=1.0)
    opt.zero_grad()
    l1, l2 = losses(lambda x: model(x), rank)
    l1.backward()
    l2.backward()
    opt.step()
    sd = model.state_dict()
    if rank == 0:
        np.savez(f"{sys.argv[1]}/params.npz", **{k: v._data for k, v in sd.items()})


if __name__ == "__main__":
    main()
