"""MPI job (2 ranks): FullyShardedDataParallel with two forwards, then two separate backwards, whose losses
reach different units on different ranks. Usage: mpiexec -n 2 python fsdp_two_backwards_job.py OUT_DIR.

Each step every rank runs its micro-batches' forwards first (``l1 = m(x1); l2 = m(x2)``), then their
backwards one by one, in ORDERS' order (the second first, on some steps). Which heads each loss uses differs
between the ranks (PLANS: "a", "b", "ab", "none"), so each backward pass reaches different units on each
rank. Every strategy, with backward prefetch and without, must end where one process does that steps Adam
on the mean over the ranks of the sum of their micro-batch losses (rank 0 trains that reference here, on
the plain model). The second backward used to gather its units on demand, in the order this rank's pass
reached them: rank 0's head a paired with rank 1's head b, a silently wrong gradient.

A backward through a forward made before the optimizer's step() is a RuntimeError on every rank that
reaches the model (torch's in-place-modification error), not gathers on demand.

Rank 0 writes OUT_DIR/result.json: the largest difference from the reference per configuration, whether
the ranks ended with identical parameters, each rank's error from the stale backward, and from a forward
through a module that reads a child unit's parameters without calling the child (the op reading them raises).
"""
import sys
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
from common import write_json
from unreached_job import LR, data, make_model

import forgegrad as fg
import forgegrad.distributed as dist
import forgegrad.nn.functional as F
from forgegrad import nn, optim

# (rank 0's micro-batches, rank 1's micro-batches) per step; every plan's forward runs before any backward
PLANS = [
    (["a", "b"], ["b", "a"]),
    (["ab", "a"], ["none", "b"]),
    (["b", "ab"], ["a", "none"]),
    (["a", "a", "b"], ["b", "ab", "a"]),
]
ORDERS = [[0, 1], [1, 0], [0, 1], [2, 0, 1]]  # the order the losses' backwards run in, per step
STRATEGIES = ["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"]


class Heads(OrderedDict):
    """A dict subclass of outputs (as transformers' ModelOutput): the wrapper cannot hang a re-gather on it."""


class ScaledHeads(nn.Module):
    """TwoHeads with a parameter of the root's own (its unit), returning Heads: that unit stays gathered
    from its forward to step(), for both backward passes (freed after the first, the second read zeros)."""

    def __init__(self):
        super().__init__()
        self.inner = make_model()
        self.scale = nn.Parameter(fg.tensor(np.linspace(0.5, 1.5, 3).astype(np.float32)))

    def forward(self, x):
        a, b = self.inner(x)
        return Heads(a=a * self.scale, b=b * self.scale)


class Pair(NamedTuple):
    a: object
    b: object


class Named(nn.Module):
    """ScaledHeads returning a NamedTuple (as forgegrad's transformers models do): read by field name, so
    the wrapper must give back the same NamedTuple (it used to rebuild a plain tuple)."""

    def __init__(self):
        super().__init__()
        self.inner = make_model()
        self.scale = nn.Parameter(fg.tensor(np.linspace(0.5, 1.5, 3).astype(np.float32)))

    def forward(self, x):
        a, b = self.inner(x)
        return Pair(a * self.scale, b * self.scale)


class Flipped(nn.Module):
    """Two blocks run p then q in even micro-batches, q then p in odd ones (the same on every rank): the
    first backward's graph reaches the units in another order than the plan's (the last forward's)."""

    def __init__(self):
        super().__init__()
        self.inner = make_model()
        self.p, self.q = nn.Linear(6, 6), nn.Linear(6, 6)
        self.flip = 0

    def forward(self, x):
        first, second = (self.q, self.p) if self.flip else (self.p, self.q)
        return self.inner(second(first(x).tanh()))


class ReadsChild(nn.Module):
    """Reads ``proj.weight`` without calling ``proj`` (the rule is: make this module the unit that holds it)."""

    def __init__(self):
        super().__init__()
        self.proj, self.head = nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.head(x @ self.proj.weight.T)


def losses(model, plans, step, rank):
    out = []
    for micro, plan in enumerate(plans):
        x, y = data(step, rank, micro)
        plain = getattr(model, "module", model)
        if isinstance(plain, Flipped):
            plain.flip = micro % 2
        heads = model(fg.tensor(x))
        a, b = heads.values() if isinstance(heads, dict) else (heads.a, heads.b) if isinstance(
            getattr(model, "module", model), Named) else heads
        t = fg.tensor(y)
        loss = fg.zeros(1, requires_grad=True).sum()  # "none": requires grad, reaches no parameter
        if "a" in plan:
            loss = loss + F.cross_entropy(a, t)
        if "b" in plan:
            loss = loss + F.cross_entropy(b, t)
        out.append(loss)
    return out


def train(model, opt, ranks_of_this_process):
    for step, plans in enumerate(PLANS):
        opt.zero_grad()
        pending = []  # every forward first, then the backwards
        for r in ranks_of_this_process:
            pending += [(r, loss) for loss in losses(model, plans[r], step, r)]
        for i in ORDERS[step]:
            for r, loss in pending[i::len(plans[0])] if len(ranks_of_this_process) > 1 else [pending[i]]:
                # one process stands for both ranks: the mean over them (the ranks' reducer averages)
                (loss * (1.0 / (len(plans[r]) * len(ranks_of_this_process)))).backward()
        opt.step()


def flat(sd):
    return np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])


def main():
    dist.init()
    rank, out = dist.rank(), sys.argv[1]
    pair = (dist.new_subgroups(1)[0], dist.new_group([0, 1]))  # HYBRID_SHARD: 1 x 2 (shard alone, replicate both)
    diff, identical = {}, {}
    reference = {}
    if rank == 0:
        for make in (make_model, ScaledHeads, Flipped, Named):
            fg.manual_seed(0)
            plain = make()
            train(plain, optim.Adam(plain.parameters(), lr=LR), [0, 1])
            reference[make.__name__] = flat(plain.state_dict())
    configs = [(make_model, strategy, prefetch) for strategy in STRATEGIES for prefetch in ("BACKWARD_PRE", None)]
    configs += [(ScaledHeads, "FULL_SHARD", "BACKWARD_PRE"), (ScaledHeads, "SHARD_GRAD_OP", None),
                (Flipped, "FULL_SHARD", "BACKWARD_PRE"), (Flipped, "SHARD_GRAD_OP", None),
                (Named, "FULL_SHARD", "BACKWARD_PRE")]
    for make, strategy, prefetch in configs:
        group = pair if strategy in ("HYBRID_SHARD", "_HYBRID_SHARD_ZERO2") else None
        fg.manual_seed(0)
        model = dist.FullyShardedDataParallel(make(), sharding_strategy=strategy, process_group=group,
                                              backward_prefetch=prefetch)
        train(model, dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR), [rank])
        mine = flat(model.state_dict())
        everyone = dist.allgather(mine)
        name = f"{make.__name__}/{strategy}/{prefetch}"
        identical[name] = bool((everyone == everyone[0]).all())
        if rank == 0:
            diff[name] = float(np.abs(mine - reference[make.__name__]).max())
    # a backward through a graph made before step(): the RuntimeError torch gives (an in-place update), not
    # gathers on demand that pair with whatever the other rank gathers
    model = dist.FullyShardedDataParallel(make_model())
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR)
    stale = losses(model, ["ab"], 0, rank)[0]
    opt.step()
    try:
        stale.backward()
        error = None
    except RuntimeError as e:
        error = str(e)
    errors = dist.allgather_object(error)
    # a module reading a child's parameters without calling the child, which is a unit of its own (never gathered
    # here): the op reading them raises an error naming the parameter instead of computing with freed values
    model = dist.FullyShardedDataParallel(ReadsChild())
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR)
    try:
        model(fg.tensor(data(0, rank, 0)[0])).sum().backward()
        error = None
    except RuntimeError as e:
        error = str(e)
    unread = dist.allgather_object(error)
    if rank == 0:
        write_json(f"{out}/result.json", {"diff": diff, "identical": identical, "stale": errors, "unread": unread})


if __name__ == "__main__":
    main()
