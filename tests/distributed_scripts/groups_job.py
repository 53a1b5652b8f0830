"""MPI job (4 ranks): collectives on process groups. Usage: mpiexec -n 4 python groups_job.py OUT_DIR.

Every rank writes what it computed to OUT_DIR/rank<r>.json; tests/test_distributed_groups.py checks it
against numpy on the ranks' inputs (``values`` below). The groups: [0, 2] and [1, 3] (given unsorted),
[3, 1] with sort_ranks=False (group rank 0 is global rank 3), new_group() (every rank), new_subgroups(2)
([0, 1], [2, 3]), new_subgroups_by_enumeration([[0, 3], [1]]) (rank 2 in none), and [0, 1] made with
use_local_synchronization=True, which rank 3 never calls.

"Does not block ranks outside it": rank 1 enters its group [0, 1]'s allreduce only after a message from
rank 3, which rank 3 sends after group [2, 3]'s collectives are done, while rank 0 already waits in
[0, 1]'s allreduce. If [2, 3]'s collectives needed ranks 0 or 1 the job would hang (the test's timeout).
"""
import faulthandler
import sys
import warnings

import numpy as np
from common import write_json
from mpi4py import MPI

import forgegrad as fg
import forgegrad.distributed as dist


def values(rank):
    """Rank ``rank``'s input: a (4, 3) float32 array."""
    return (np.arange(12, dtype=np.float32).reshape(4, 3) - 5.0) * (rank + 1) + rank


def error_of(fn):
    try:
        fn()
    except (ValueError, TypeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def main(out):
    faulthandler.dump_traceback_later(40, exit=True)  # a hang shows where it waits
    dist.init()
    me = dist.rank()
    res = {"rank": me}
    even = dist.new_group([2, 0])
    odd = dist.new_group([3, 1], group_desc="odd")
    rev = dist.new_group([3, 1], sort_ranks=False)
    everyone = dist.new_group()
    cur, subs = dist.new_subgroups(2)
    cur_e, subs_e = dist.new_subgroups_by_enumeration([[3, 0], [1]])
    local = dist.new_group([0, 1], use_local_synchronization=True) if me != 3 else None
    mine = even if me % 2 == 0 else odd
    other = odd if me % 2 == 0 else even
    res["non_member_is_sentinel"] = other is dist.GroupMember.NON_GROUP_MEMBER
    res["world"] = [dist.get_rank(), dist.get_world_size(), dist.GroupMember.WORLD.size()]
    res["ranks"] = {name: [dist.get_rank(g), dist.get_world_size(g)]
                    for name, g in (("even", even), ("odd", odd), ("rev", rev), ("everyone", everyone), ("cur", cur),
                                    ("cur_e", cur_e), ("local", local)) if g is not None}
    res["subs"] = [dist.get_process_group_ranks(g) if isinstance(g, dist.ProcessGroup) else None for g in subs]
    res["subs_e"] = [dist.get_process_group_ranks(g) if isinstance(g, dist.ProcessGroup) else None for g in subs_e]
    res["rev_translate"] = [dist.get_global_rank(rev, 0), dist.get_group_rank(rev, 1)] if me in (1, 3) else None

    x = values(me)
    for op in ("sum", "mean", "max", "min", "prod"):
        y = x.copy()
        assert dist.allreduce(y, op=op, group=mine) is y
        res[f"allreduce_{op}"] = y.tolist()
    t = fg.tensor(x.copy())
    dist.allreduce(t, group=everyone)
    res["allreduce_everyone"] = t.numpy().tolist()
    y = x.copy()
    dist.broadcast(y, root=2 if me % 2 == 0 else 3, group=mine)  # a global rank, the group's second
    res["broadcast_root"] = y.tolist()
    y = x.copy()
    dist.broadcast(y, group=mine, group_src=0)
    res["broadcast_group_src"] = y.tolist()
    res["allgather_rev"] = dist.allgather(x, group=rev).tolist() if me in (1, 3) else None
    res["reduce_scatter"] = dist.reduce_scatter(x, op="sum", group=mine).tolist()
    res["reduce_scatter_mean_cur"] = dist.reduce_scatter(fg.tensor(x), op="mean", group=cur).numpy().tolist()
    res["allgather_object"] = dist.allgather_object(("rank", me), group=cur)
    res["broadcast_object"] = dist.broadcast_object({"from": me}, root=2 + me % 2, group=mine)
    dist.barrier(group=mine)
    if cur_e is not dist.GroupMember.NON_GROUP_MEMBER:
        y = x.copy()
        dist.allreduce(y, group=cur_e)
        res["allreduce_cur_e"] = y.tolist()
    if local is not None and local is not dist.GroupMember.NON_GROUP_MEMBER:
        y = x.copy()
        dist.allreduce(y, group=local)
        res["allreduce_local"] = y.tolist()

    # a rank outside a group: torch's warning, nothing done, None returned
    y = x.copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        returned = [dist.allreduce(y, group=other), dist.broadcast(y, group=other),
                    dist.allgather(y, group=other), dist.barrier(group=other)]
    res["non_member"] = {"returned": [r is None for r in returned], "unchanged": bool(np.array_equal(y, x)),
                         "warnings": [str(w.message) for w in caught]}

    # errors (raised on every rank before any communication, or by a consistency check every rank runs)
    res["errors"] = {
        "duplicate": error_of(lambda: dist.new_group([0, 2, 0])),
        "out_of_range": error_of(lambda: dist.new_group([1, 4])),
        "negative": error_of(lambda: dist.new_group([-1, 1])),
        "overlap": error_of(lambda: dist.new_subgroups_by_enumeration([[0, 1], [1, 2]])),
        "differ": error_of(lambda: dist.new_group([0, 1 + me % 2])),
        "root_outside": error_of(lambda: dist.broadcast(x.copy(), root=1, group=even)) if me % 2 == 0 else None,
        "group_rank_outside": error_of(lambda: dist.get_group_rank(mine, 1 - me % 2)),
        "group_size": error_of(lambda: dist.new_subgroups(3)),
        "not_a_group": error_of(lambda: dist.allreduce(x.copy(), group="even")),
        "ddp_outside": error_of(lambda: dist.DistributedDataParallel(fg.nn.Linear(2, 2), process_group=other)),
        "fsdp_hybrid": error_of(lambda: dist.FullyShardedDataParallel(fg.nn.Linear(2, 2), process_group=(cur, mine))),
    }
    if me in (1, 3):
        dist.destroy_process_group(rev)
        res["errors"]["destroyed"] = error_of(lambda: dist.allreduce(x.copy(), group=rev))

    # a group's collectives leave the other ranks free: see the module docstring
    world = MPI.COMM_WORLD
    pair = cur  # [0, 1] or [2, 3]
    y = x.copy()
    if me == 0:
        dist.allreduce(y, group=pair)  # waits for rank 1, which waits for rank 3
    elif me == 1:
        res["heard_from_3"] = world.recv(source=3, tag=7).tolist()
        dist.allreduce(y, group=pair)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dist.allreduce(x.copy(), group=subs[0])  # NON_GROUP_MEMBER here: returns at once
        for _ in range(3):
            dist.allreduce(y, group=pair)
        dist.barrier(group=pair)
        if me == 3:
            world.send(y, dest=1, tag=7)
    res["pair_allreduce"] = y.tolist()
    write_json(f"{out}/rank{me}.json", res)


if __name__ == "__main__":
    main(sys.argv[1])
