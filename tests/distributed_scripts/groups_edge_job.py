"""MPI job (4 ranks): process groups whose first rank is not global rank 0, subgroups of a group, and
destroy_process_group(). Usage: mpiexec -n 4 python groups_edge_job.py OUT_DIR.

* new_subgroups(group=g) is collective over g's ranks only: ranks 0 and 1 split their group [0, 1] while
  ranks 2 and 3 (outside it) are refused with a ValueError and go on with their own group's collectives.
  When it was collective over the job, ranks 0 and 1 waited forever for ranks 2 and 3.
* DDP, DistributedOptimizer, ZeRO-2 and FSDP + ZeRO-3 (groups_ddp_job.train) on group [3, 1] made with
  sort_ranks=False (group rank 0 is global rank 3) and on group [2, 0] (sorted: [0, 2]): the weights come
  from the group's rank 0 and each shard belongs to its group rank. broadcast_optimizer_state with a
  global root_rank of 3 within [3, 1].
* destroy_process_group() (no group, torch's end of a script) frees every group's communicator.

Every rank writes OUT_DIR/edge<r>.json; the training writes <name>_group<g>.npy as groups_ddp_job does
(group 2: [3, 1], group 3: [0, 2]). tests/test_distributed_groups.py checks them.
"""
import faulthandler
import sys

import numpy as np
from common import write_json
from groups_ddp_job import LR, train
from mpi4py import MPI

import forgegrad.distributed as dist
from forgegrad import nn, optim


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
    g01 = dist.new_group([0, 1])
    g23 = dist.new_group([2, 3])
    rev = dist.new_group([3, 1], sort_ranks=False)
    even = dist.new_group([2, 0])

    # subgroups of a group: only its ranks call; the others are refused and do not wait for them
    if me < 2:
        cur, subs = dist.new_subgroups(1, group=g01)
        res["subs_of_g01"] = [dist.get_process_group_ranks(cur), [isinstance(s, dist.ProcessGroup) for s in subs]]
        one = np.array([me + 1.0])
        dist.allreduce(one, group=cur)  # a group of one: this rank's value
        res["sub_allreduce"] = one.tolist()
    else:
        res["subs_outside"] = error_of(lambda: dist.new_subgroups(1, group=g01))
        y = np.array([float(me)])
        dist.allreduce(y, group=g23)
        res["g23_allreduce"] = y.tolist()
    if me in (1, 3):  # [3, 1] unsorted: group rank 0 is global rank 3; roots are global ranks, group_src not
        x = np.array([10.0 * me, 10.0 * me + 1])
        res["rev_collectives"] = [dist.broadcast_object({"from": me}, root=1, group=rev),
                                  dist.broadcast_object({"from": me}, group=rev, group_src=0),
                                  dist.broadcast(x.copy(), root=1, group=rev).tolist(),
                                  dist.broadcast(x.copy(), group=rev, group_src=0).tolist(),
                                  dist.reduce_scatter(x, group=rev).tolist(),
                                  dist.allgather_object(me, group=rev)]
        whole, whole_list = dist.new_subgroups(2, group=rev)  # one subgroup of [3, 1]: sorted, as torch's
        res["subs_of_rev"] = [dist.get_process_group_ranks(whole), len(whole_list)]
        singles, _ = dist.new_subgroups(1, group=rev)
        res["singles_of_rev"] = dist.get_process_group_ranks(singles)
        res["subs_size"] = error_of(lambda: dist.new_subgroups(3, group=rev))

    # wrappers on a group whose rank 0 is global rank 3, or global rank 0 of [0, 2]
    group, gi = (rev, 2) if me in (1, 3) else (even, 3)
    result = {"group": gi, "ranks": group.ranks}
    for name in ("ddp", "distributed_optimizer", "zero2", "zero3"):
        train(name, group, gi, out, result)
    if group.rank() == 0:
        write_json(f"{out}/result{gi}.json", result)
    if me in (1, 3):
        net = nn.Linear(2, 2)
        opt = optim.Adam(net.parameters(), lr=LR)
        if me == 3:  # only the root has stepped: its state reaches rank 1
            net.weight.grad = net.weight * 0 + 1
            net.bias.grad = net.bias * 0 + 1
            opt.step()
        dist.broadcast_optimizer_state(opt, 3, group=rev)
        res["optimizer_state_steps"] = sorted(int(np.asarray(s["step"]._data if hasattr(s["step"], "_data")
                                                              else s["step"])) for s in opt.state.values())

    # torch's destroy_process_group(): every group this rank holds is freed; the world goes on
    handles = [g.comm for g in (g01, g23, rev, even) if isinstance(g, dist.ProcessGroup)]
    dist.destroy_process_group()
    res["freed"] = [h == MPI.COMM_NULL for h in handles]
    res["after_destroy"] = error_of(lambda: dist.barrier(group=g01 if me < 2 else g23))
    y = np.array([1.0])
    dist.allreduce(y)
    res["world_after_destroy"] = float(y[0])
    dist.destroy_process_group()  # again: nothing left to free
    write_json(f"{out}/edge{me}.json", res)


if __name__ == "__main__":
    main(sys.argv[1])
