"""MPI job (3 ranks): one rank in two overlapping groups, a wrapper of each, one backward pass per model.
Usage: mpiexec -n 3 python groups_overlap_job.py OUT_DIR.

Groups a = [0, 1] and b = [0, 2]: rank 0 trains a model of each (DDP, DistributedOptimizer, ZeRO-2 or
FSDP + ZeRO-3, with process_group=), running both forwards, then loss_a.backward() and loss_b.backward()
apart; ranks 1 and 2 train their group's model only. A wrapper joins its group's reduction at every
backward pass after its forward (so that a rank whose loss reaches none of its parameters still takes
part); rank 0's pass for model a alone must not count as one for model b (ranks 2 never runs it): that
paired rank 2's real gradients with zeros, then left rank 0 waiting for a round rank 2 never started.

Group rank 0 (global rank 0) of each writes <name>_group<g>.npy and result<g>.json as groups_ddp_job
does (group 4: a, group 5: b); tests/test_distributed_groups.py checks them against one process per group.
"""
import faulthandler
import sys

from common import write_json
from groups_ddp_job import STEPS, build, data, finish, loss_of

import forgegrad.distributed as dist

NAMES = ("ddp", "distributed_optimizer", "zero2", "zero3")


def main(out):
    faulthandler.dump_traceback_later(40, exit=True)  # a hang shows where it waits
    dist.init()
    a, b = dist.new_group([0, 1]), dist.new_group([0, 2])
    mine = [(g, gi) for g, gi in ((a, 4), (b, 5)) if isinstance(g, dist.ProcessGroup)]
    results = {gi: {"group": gi, "ranks": g.ranks} for g, gi in mine}
    for name in NAMES:
        built = [(g, gi) + build(name, g) for g, gi in mine]
        for step in range(STEPS):
            for *_, opt, _ in built:
                opt.zero_grad()
            losses = [loss_of(model, *data(gi, step, g.rank())) for g, gi, model, _, _ in built]
            for loss in losses:  # one backward pass per model
                loss.backward()
            for *_, opt, _ in built:
                opt.step()
        for g, gi, model, _, net in built:
            finish(name, model, net, g, gi, out, results[gi])
    for g, gi in mine:
        if g.rank() == 0:
            write_json(f"{out}/result{gi}.json", results[gi])


if __name__ == "__main__":
    main(sys.argv[1])
