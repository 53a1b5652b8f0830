"""FullyShardedDataParallel's ``sharding_strategy`` (torch.distributed.fsdp.ShardingStrategy) and its groups.

Every strategy is the same machinery (fsdp.py, ZeRO stage 3) over two groups: the *shard group*, whose
ranks each hold a slice of every unit and gather the units from each other, and the *replicate group*,
the ranks holding the same slice, which allreduce their gradient shards (sum, x 1/size) once per step
in ``ZeroRedundancyOptimizer.step()``, after the shard group's reduce-scatters. The mean over both is the
mean over every rank. ``reshard`` says whether a unit is freed after its forward and gathered again for
its backward.

==========================  ===========================  ====================  =======
strategy                    shard group                  replicate group       reshard
==========================  ===========================  ====================  =======
FULL_SHARD (default)        process_group (None: job)    none                  yes
SHARD_GRAD_OP               process_group                none                  no
NO_SHARD                    this rank alone              process_group         no
HYBRID_SHARD                the pair's first, or a node  the pair's second     yes
_HYBRID_SHARD_ZERO2         the same                     the same              no
==========================  ===========================  ====================  =======

HYBRID_SHARD's default groups (``process_group=None``) follow torch's ``_init_intra_and_inter_node_groups``:
with L ranks per node, shard groups of L consecutive ranks (``new_subgroups(L)``) and replicate groups of
the ranks with the same local index, ``[i, i + L, i + 2L, ...]``. torch takes L from the GPUs per node;
here it is ``local_size()`` (MPI's shared-memory split: the ranks on this host), or the environment
variable ``FORGEGRAD_LOCAL_SIZE`` when set (to try hybrid sharding on one host, or where the nodes'
ranks are not what the launcher placed together). On one host and no variable, the shard group is the
whole job and HYBRID_SHARD trains as FULL_SHARD (as torch's on one machine).
"""
from __future__ import annotations

import enum
import os
from typing import Optional, Tuple

from . import comm as _c


class ShardingStrategy(enum.Enum):
    """What FullyShardedDataParallel shards (torch.distributed.fsdp.ShardingStrategy); see fsdp.py."""
    FULL_SHARD = "FULL_SHARD"
    SHARD_GRAD_OP = "SHARD_GRAD_OP"
    NO_SHARD = "NO_SHARD"
    HYBRID_SHARD = "HYBRID_SHARD"
    _HYBRID_SHARD_ZERO2 = "_HYBRID_SHARD_ZERO2"


_HYBRID = (ShardingStrategy.HYBRID_SHARD, ShardingStrategy._HYBRID_SHARD_ZERO2)
_RESHARDS = {ShardingStrategy.FULL_SHARD: True, ShardingStrategy.SHARD_GRAD_OP: False,
             ShardingStrategy.NO_SHARD: False, ShardingStrategy.HYBRID_SHARD: True,
             ShardingStrategy._HYBRID_SHARD_ZERO2: False}
WHO = "FullyShardedDataParallel"


def strategy_of(sharding_strategy, reshard_after_forward) -> Tuple[ShardingStrategy, bool]:
    """The strategy (None: FULL_SHARD, or SHARD_GRAD_OP for ``reshard_after_forward=False``) and whether
    it reshards after forward; ValueError for an unknown one or a contradicting ``reshard_after_forward``."""
    if reshard_after_forward is not None and not isinstance(reshard_after_forward, bool):
        raise TypeError(f"{WHO}: reshard_after_forward must be a bool or None, got {reshard_after_forward!r}")
    if sharding_strategy is None:
        strategy = ShardingStrategy.SHARD_GRAD_OP if reshard_after_forward is False else ShardingStrategy.FULL_SHARD
    elif isinstance(sharding_strategy, ShardingStrategy):
        strategy = sharding_strategy
    elif isinstance(sharding_strategy, str) and sharding_strategy in ShardingStrategy.__members__:
        strategy = ShardingStrategy[sharding_strategy]
    else:
        names = ", ".join(ShardingStrategy.__members__)
        raise ValueError(f"{WHO}: sharding_strategy must be a ShardingStrategy ({names}), its name, or None "
                         f"(FULL_SHARD), got {sharding_strategy!r}")
    reshard = _RESHARDS[strategy]
    if reshard_after_forward is not None and reshard_after_forward != reshard:
        raise ValueError(f"{WHO}: reshard_after_forward={reshard_after_forward} contradicts sharding_strategy="
                         f"{strategy.name}, which {'frees' if reshard else 'keeps'} a unit's parameters after its "
                         "forward; leave reshard_after_forward None")
    return strategy, reshard


def groups_for(strategy: ShardingStrategy, process_group, over=None):
    """(data-parallel group, shard group, replicate group or None) for ``strategy`` and ``process_group``.
    The data-parallel group holds every rank training the model (the weights are broadcast over it, fit
    averages over it); collective over it. ``over``: HYBRID_SHARD's data-parallel group when it is not the
    job (a device mesh over some of its ranks), which the pair must then tile."""
    _same_strategy(strategy, process_group, over)
    if strategy in _HYBRID:
        return _hybrid_groups(strategy, process_group, over or _c.GroupMember.WORLD)
    if isinstance(process_group, (tuple, list)):
        raise ValueError(f"{WHO}: process_group is a pair of groups, torch's form for HYBRID_SHARD (shard within "
                         f"the first, replicate across the second); with sharding_strategy={strategy.name} pass "
                         "one ProcessGroup, or pass sharding_strategy=ShardingStrategy.HYBRID_SHARD")
    group = _c._member_group(process_group, WHO)
    if strategy is ShardingStrategy.NO_SHARD:
        from .groups import new_subgroups
        (alone,) = _derived(("NO_SHARD", id(group)), (group,), lambda: new_subgroups(
            1, group=None if group is _c.GroupMember.WORLD else group, group_desc="NO_SHARD")[:1])
        return group, alone, group
    return group, group, None


def _same_strategy(strategy: ShardingStrategy, process_group, over=None) -> None:
    """ValueError on every rank unless all passed the same strategy and form of ``process_group``, checked
    before any strategy makes groups: ranks taking different paths met in unrelated collectives (a TypeError
    from another rank's data, or a wait). Over ``process_group`` when it is one group, else over the job."""
    pair = isinstance(process_group, (tuple, list))
    if process_group is None or pair or strategy in _HYBRID:
        over = over or _c.GroupMember.WORLD
    else:
        over = _c._member_group(process_group, WHO)
    mine = (strategy.name, "a pair of groups" if pair else "None" if process_group is None else "one group")
    everyone = _c.allgather_object(mine, group=over)
    for r, theirs in zip(over.ranks, everyone):
        if theirs != everyone[0]:
            raise ValueError(f"{WHO}: every rank must pass the same sharding_strategy (reshard_after_forward=False "
                             "alone is SHARD_GRAD_OP) and form of process_group (rank "
                             f"{over.ranks[0]} passed {everyone[0][0]} with {everyone[0][1]}, rank {r} passed "
                             f"{theirs[0]} with {theirs[1]})")


def _hybrid_groups(strategy, process_group, over):
    if process_group is None:
        shard, replicate = _node_groups()
    elif isinstance(process_group, tuple) and len(process_group) == 2 and \
            all(isinstance(g, _c.ProcessGroup) or g is _c.NON_GROUP_MEMBER for g in process_group):
        shard, replicate = _members_everywhere(process_group, over)
    else:
        raise ValueError(f"{WHO}: sharding_strategy={strategy.name} expects process_group None or a tuple "
                         f"(shard_group, replicate_group) of ProcessGroups, got {type(process_group).__name__}")
    _check_tiling(shard, replicate, over)
    return over, shard, replicate


def _members_everywhere(pair, over):
    """The pair's groups; a rank outside either (NON_GROUP_MEMBER, a destroyed group) is a ValueError on every
    rank of ``over`` (the job), not on that rank alone: the others would wait for it in the tiling check forever."""
    problem = None
    try:
        shard = _c._member_group(pair[0], WHO, "process_group[0] (the shard group)",
                                 "every rank must be in one shard group")
        replicate = _c._member_group(pair[1], WHO, "process_group[1] (the replicate group)",
                                     "every rank must be in one replicate group")
    except ValueError as e:
        problem = str(e)
    problems = [p for p in _c.allgather_object(problem, group=over) if p is not None]
    if problems:
        raise ValueError(problem if problem is not None else f"{problems[0]} (every rank gets this error)")
    return shard, replicate


def _derived(key, parents, make):
    """The groups ``make()`` returns, made once per job for ``key`` (the same on every rank that asks) and
    reused by later wrappers while none of them is destroyed: MPI has few communicators (2048 in MPICH),
    and a new NO_SHARD or HYBRID_SHARD group per wrapper ran out of them after about a thousand wrappers.
    ``parents`` (the groups ``key`` names by id) are held so that their ids are not reused."""
    hit = _DERIVED.get(key)
    if hit is not None and all(g.comm is not None for g in hit[0] + hit[1]):
        return hit[1]
    made = make()
    _DERIVED[key] = (tuple(parents), tuple(made))
    return made


_DERIVED: dict = {}


def _node_groups():
    """torch's default intra-node (shard) and inter-node (replicate) groups; see the module docstring."""
    from .groups import new_subgroups, new_subgroups_by_enumeration
    n = _c.size()
    env = os.environ.get("FORGEGRAD_LOCAL_SIZE")
    if env is not None:
        try:
            local = int(env)
        except ValueError:
            local = 0
        if local <= 0:
            raise ValueError(f"{WHO}: FORGEGRAD_LOCAL_SIZE (the ranks per node HYBRID_SHARD shards over) must be a "
                             f"positive integer, got {env!r}")
        what = f"FORGEGRAD_LOCAL_SIZE={local}"
    else:
        local = _c.local_size()
        what = f"local_size()={local} (the ranks on this node)"
    sizes = _c.allgather_object(local)
    if len(set(sizes)) != 1 or n % local:
        raise ValueError(f"{WHO}: HYBRID_SHARD's default groups need the same number of ranks on every node, "
                         f"dividing the job's {n} ranks; got {what} (every rank's: {sizes}): set "
                         "FORGEGRAD_LOCAL_SIZE or pass process_group=(shard_group, replicate_group)")

    def make():
        shard, _ = new_subgroups(local, group_desc="HYBRID_SHARD shard")
        replicate, _ = new_subgroups_by_enumeration([list(range(i, n, local)) for i in range(local)],
                                                    group_desc="HYBRID_SHARD replicate")
        return shard, replicate
    return _derived(("HYBRID_SHARD", n, local), (), make)


def _check_tiling(shard, replicate, over) -> None:
    """ValueError on every rank unless the shard groups cut ``over``'s ranks (the job's) into groups of one
    size and each replicate group holds the ranks at this rank's place in every shard group (collective
    over ``over``)."""
    n, me = over.size(), _c.rank()
    everyone = _c.allgather_object((list(shard.ranks), list(replicate.ranks)), group=over)
    shards = {tuple(s) for s, _ in everyone}
    sizes = {len(s) for s in shards}
    covered = sorted(r for s in shards for r in s)
    problem: Optional[str] = None
    if covered != sorted(over.ranks) or len(sizes) != 1:
        problem = (f"the shard groups must cut the job's {n} ranks into disjoint groups of one size, got "
                   f"{sorted(list(s) for s in shards)}")
    else:
        place = {r: (s, s.index(r)) for s in shards for r in s}
        for r, (_, rep) in zip(over.ranks, everyone):
            expected = sorted(s[place[r][1]] for s in shards)
            if sorted(rep) != expected:
                problem = (f"rank {r}'s replicate group is {sorted(rep)}; it must hold the ranks at its place in "
                           f"every shard group (holding the same shard): {expected}")
                break
    if problem is not None:
        raise ValueError(f"{WHO}: process_group=(shard_group, replicate_group) must tile the job's ranks (every "
                         f"rank of the job wraps the model under HYBRID_SHARD): {problem} (seen on rank {me})")


class BackwardPrefetch(enum.Enum):
    """When backward starts gathering the next unit (torch.distributed.fsdp.BackwardPrefetch).

    ``BACKWARD_PRE``: when the current unit's backward starts (its gather is done), before its gradients
    are computed: the most overlap, two units gathered at once. ``BACKWARD_POST``: once the current unit's
    gradients are final and it is freed: less overlap, and no more than one unit gathered at a time."""
    BACKWARD_PRE = "BACKWARD_PRE"
    BACKWARD_POST = "BACKWARD_POST"


def backward_prefetch_of(value) -> Optional[BackwardPrefetch]:
    """``backward_prefetch`` as a BackwardPrefetch or None; ValueError for anything else."""
    if value is None or isinstance(value, BackwardPrefetch):
        return value
    if isinstance(value, str) and value in BackwardPrefetch.__members__:
        return BackwardPrefetch[value]
    raise ValueError(f"{WHO}: backward_prefetch must be BackwardPrefetch.BACKWARD_PRE, "
                     f"BACKWARD_POST (or their names) or None, got {value!r}")
