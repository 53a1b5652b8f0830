"""Process groups on real 4-rank MPI jobs (tests/distributed_scripts/groups_job.py, groups_ddp_job.py): collectives
on sub-groups against numpy, ranks outside a group (torch's warning, no communication, and no waiting for the
group), the errors, and two models trained at once in two disjoint groups against one process per group."""
import json
import os
import sys

import numpy as np
import pytest
from test_distributed import SCRIPTS, run_job

from forgegrad import optim
from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


def _script(name):
    sys.path.insert(0, SCRIPTS)
    try:
        return __import__(name)
    finally:
        sys.path.remove(SCRIPTS)


@pytest.fixture(scope="module")
def collectives(tmp_path_factory):
    out = tmp_path_factory.mktemp("groups")
    run_job(4, "groups_job.py", out, timeout=90)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(4)]


def test_collectives_on_sub_groups_match_numpy(collectives):
    v = _script("groups_job").values
    x = {r: v(r) for r in range(4)}
    for me, res in enumerate(collectives):
        members = [0, 2] if me % 2 == 0 else [1, 3]
        stack = np.stack([x[r] for r in members])
        for op, ref in (("sum", stack.sum(0)), ("mean", stack.mean(0)), ("max", stack.max(0)), ("min", stack.min(0)),
                        ("prod", stack.prod(0))):
            np.testing.assert_allclose(res[f"allreduce_{op}"], ref, rtol=1e-6, err_msg=(me, op))
        np.testing.assert_allclose(res["allreduce_everyone"], sum(x.values()), rtol=1e-6)
        assert res["broadcast_root"] == x[members[1]].tolist()  # root: a global rank
        assert res["broadcast_group_src"] == x[members[0]].tolist()  # group_src: a rank in the group
        # reduce_scatter: group rank i gets row i of the sum (4 rows, 2 ranks: 2 rows each)
        i = members.index(me)
        np.testing.assert_allclose(res["reduce_scatter"], stack.sum(0)[2 * i:2 * i + 2], rtol=1e-6)
        pair = [0, 1] if me < 2 else [2, 3]
        mean = (x[pair[0]] + x[pair[1]]) / 2
        np.testing.assert_allclose(res["reduce_scatter_mean_cur"], mean[2 * pair.index(me):][:2], rtol=1e-6)
        assert res["allgather_object"] == [["rank", r] for r in pair]
        assert res["broadcast_object"] == {"from": members[1]}
        # sort_ranks=False: group [3, 1] gathers global rank 3's first
        assert res["allgather_rev"] == ([x[3].tolist(), x[1].tolist()] if me in (1, 3) else None)
        if me in (0, 3):  # new_subgroups_by_enumeration([[3, 0], [1]]): sorted, [0, 3]
            np.testing.assert_allclose(res["allreduce_cur_e"], x[0] + x[3], rtol=1e-6)
        if me in (0, 1):  # use_local_synchronization=True, which rank 3 never called
            np.testing.assert_allclose(res["allreduce_local"], x[0] + x[1], rtol=1e-6)
        np.testing.assert_allclose(res["pair_allreduce"], (x[pair[0]] + x[pair[1]]) * (1 if me < 2 else 4), rtol=1e-6)


def test_group_ranks_sizes_and_translation(collectives):
    r0, r1, r2, r3 = collectives
    assert [r["world"] for r in collectives] == [[r, 4, 4] for r in range(4)]
    assert r0["ranks"] == {"even": [0, 2], "odd": [-1, -1], "rev": [-1, -1], "everyone": [0, 4], "cur": [0, 2],
                           "cur_e": [0, 2], "local": [0, 2]}
    assert r1["ranks"]["rev"] == [1, 2] and r3["ranks"]["rev"] == [0, 2]  # [3, 1] unsorted: 3 is group rank 0
    assert r2["ranks"]["cur_e"] == [-1, -1] and r2["ranks"]["local"] == [-1, -1]
    assert r3["ranks"]["cur_e"] == [1, 2] and "local" not in r3["ranks"]
    assert r1["rev_translate"] == r3["rev_translate"] == [3, 1]  # get_global_rank(rev, 0), get_group_rank(rev, 1)
    assert r0["subs"] == r1["subs"] == [[0, 1], None] and r2["subs"] == r3["subs"] == [None, [2, 3]]
    assert r0["subs_e"] == r3["subs_e"] == [[0, 3], None] and r1["subs_e"] == [None, [1]]
    assert r2["subs_e"] == [None, None]
    assert all(r["non_member_is_sentinel"] for r in collectives)
    assert r1["heard_from_3"] == r3["pair_allreduce"]


def test_a_rank_outside_the_group_warns_and_does_nothing_as_torch(collectives):
    for me, res in enumerate(collectives):
        nm = res["non_member"]
        assert nm["returned"] == [True] * 4 and nm["unchanged"]
        assert nm["warnings"] == [f"Running {op} on global rank {me} which does not belong to the given group."
                                  for op in ("allreduce", "broadcast", "allgather", "barrier")]


def test_errors_name_the_argument(collectives):
    for me, res in enumerate(collectives):
        e = res["errors"]
        assert e["duplicate"] == "ValueError: new_group: ranks must not contain duplicate entries, got [0, 2, 0]"
        assert e["out_of_range"].startswith("ValueError: new_group: ranks holds rank 4, out of range")
        assert e["negative"].startswith("ValueError: new_group: ranks holds rank -1, out of range")
        assert "ranks_per_subgroup_list has rank 1 in both subgroup 0 and subgroup 1" in e["overlap"]
        assert e["differ"] == ("ValueError: new_group: every rank must pass the same ranks (rank 0 passed [0, 1], "
                               "rank 1 passed [0, 2])")
        if me % 2 == 0:
            assert "broadcast: root 1 is not in ProcessGroup(ranks=[0, 2]); root is a global rank" in e["root_outside"]
        assert e["group_rank_outside"].startswith(f"ValueError: Global rank {1 - me % 2} is not part of group")
        assert "must be divisible by group_size=3" in e["group_size"]
        assert e["not_a_group"].startswith("TypeError: allreduce: group must be None")
        assert e["ddp_outside"] == (f"ValueError: DistributedDataParallel: process_group is "
                                    f"GroupMember.NON_GROUP_MEMBER: global rank {me} is not in the group; wrap the "
                                    "model only on the group's ranks")
        assert "HYBRID_SHARD" in e["fsdp_hybrid"] and e["fsdp_hybrid"].startswith("ValueError")
        if me in (1, 3):
            assert "has been destroyed" in e["destroyed"]


def _check_group_training(out, groups):
    """The wrappers' parameters in each (group index, global ranks) of ``groups`` equal one process that starts
    from the group's rank 0's weights and steps Adam on the mean of the group ranks' losses (their 8 samples)."""
    job = _script("groups_ddp_job")
    names = ["ddp", "distributed_optimizer", "zero2", "zero3"]
    refs = []
    for gi, ranks in groups:
        res = json.loads((out / f"result{gi}.json").read_text())
        assert res == {"group": gi, "ranks": ranks, **{n: True for n in names}}
        model = job.make_model(ranks[0])
        opt = optim.Adam(model.parameters(), lr=job.LR)
        for step in range(job.STEPS):
            opt.zero_grad()
            xs, ys = zip(*(job.data(gi, step, r) for r in range(len(ranks))))
            job.loss_of(model, np.concatenate(xs), np.concatenate(ys)).backward()
            opt.step()
        refs.append(job.flat_params(model))
        for name in names:
            got = np.load(os.path.join(out, f"{name}_group{gi}.npy"))
            np.testing.assert_allclose(got, refs[-1], rtol=0, atol=1e-6, err_msg=(gi, name))
    assert not np.allclose(refs[0], refs[1])  # two different models


def test_two_models_in_two_disjoint_groups_train_as_one_process_each(tmp_path):
    """DDP, DistributedOptimizer, ZeRO-2 and FSDP + ZeRO-3, each with process_group=, at 4 ranks in groups [0, 1]
    and [2, 3] at once: each group's parameters equal one process that starts from the group's first rank's
    weights and steps Adam on the mean of the group's two losses (its 8 samples)."""
    run_job(4, "groups_ddp_job.py", tmp_path, timeout=90)
    _check_group_training(tmp_path, [(0, [0, 1]), (1, [2, 3])])


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    out = tmp_path_factory.mktemp("groups_edge")
    run_job(4, "groups_edge_job.py", out, timeout=90)
    return out, [json.loads((out / f"edge{r}.json").read_text()) for r in range(4)]


def test_wrappers_on_a_group_whose_rank_0_is_not_global_rank_0(edge):
    """Group [3, 1] with sort_ranks=False (group rank 0 is global rank 3) and [2, 0] (group rank 0 is global 0,
    rank 2 the second): the wrappers broadcast group rank 0's weights and shard by group rank."""
    out, res = edge
    _check_group_training(out, [(2, [3, 1]), (3, [0, 2])])
    assert res[1]["optimizer_state_steps"] == res[3]["optimizer_state_steps"] == [1, 1]  # root_rank=3: global
    for me in (1, 3):
        assert res[me]["rev_collectives"] == [{"from": 1}, {"from": 3}, [10.0, 11.0], [30.0, 31.0],
                                              [[40.0], [42.0]][0 if me == 3 else 1], [3, 1]]


def test_new_subgroups_of_a_group_is_collective_over_its_ranks_only(edge):
    """new_subgroups(group=g) on g's ranks only, while the other ranks are refused and go on (was: g's ranks
    waited forever for the rest of the job); subgroups of an unsorted group are sorted, as torch's."""
    _, (r0, r1, r2, r3) = edge
    assert r0["subs_of_g01"] == [[0], [True, False]] and r1["subs_of_g01"] == [[1], [False, True]]
    assert r0["sub_allreduce"] == [1.0] and r1["sub_allreduce"] == [2.0]
    for r in (r2, r3):
        assert r["subs_outside"] == (f"ValueError: new_subgroups: group is GroupMember.NON_GROUP_MEMBER: global "
                                     f"rank {r['rank']} is not in it; only the group's ranks call "
                                     "new_subgroups(group=...)")
        assert r["g23_allreduce"] == [5.0]
    assert r1["subs_of_rev"] == r3["subs_of_rev"] == [[1, 3], 1]
    assert r1["singles_of_rev"] == [1] and r3["singles_of_rev"] == [3]
    assert "group_size (3) must not exceed the group's size (2)" in r1["subs_size"]


def test_a_rank_in_two_overlapping_groups_backwards_each_model_apart(tmp_path):
    """Groups [0, 1] and [0, 2]: rank 0 trains a model of each (DDP, DistributedOptimizer, ZeRO-2, FSDP + ZeRO-3),
    one backward pass per model; its pass for one group's model is no round of the other's wrapper (was: that
    wrapper reduced zeros with rank 2's real gradients, then waited forever for a round rank 2 never ran)."""
    run_job(3, "groups_overlap_job.py", tmp_path, timeout=90)
    _check_group_training(tmp_path, [(4, [0, 1]), (5, [0, 2])])


def test_destroy_process_group_without_a_group_frees_every_group(edge):
    """torch's destroy_process_group() at the end of a script: every group's communicator is freed (MPI_Comm_free),
    its collectives are then refused, and the world still works until MPI ends with the process."""
    _, res = edge
    for me, r in enumerate(res):
        assert r["freed"] == [True, True]
        assert "has been destroyed" in r["after_destroy"]
        assert r["world_after_destroy"] == 4.0


def test_fit_averages_over_the_model_group_and_its_rank_0_checkpoints(tmp_path):
    """fit on a DDP model of group [0, 1] and another of [2, 3] at once: each group's history is its own model's on
    its own data (was: summed over the job, both groups logging the mean of two different models), its
    progress printed by its rank 0, and each group's rank 0 writes its checkpoints (was: global rank 0 only)."""
    import forgegrad as fg
    import forgegrad.nn.functional as F
    job = _script("fit_groups_job")
    common = _script("common")
    proc = run_job(4, "fit_groups_job.py", tmp_path, timeout=90)
    res = [json.loads((tmp_path / f"rank{r}.json").read_text())["history"] for r in range(4)]
    assert res[0] == res[1] and res[2] == res[3] and res[0]["val_loss"] != res[2]["val_loss"]
    assert proc.stdout.count("Epoch ") == 2 * job.EPOCHS  # one line per epoch from each group's rank 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors") == [
        f"g{g}-{e}.safetensors" for g in (0, 1) for e in range(1, job.EPOCHS + 1)]
    for gi in (0, 1):
        _, _, vx, vy = job.group_data(gi)
        model = common.make_model()
        saved = fg.load(str(tmp_path / f"g{gi}-{job.EPOCHS}.safetensors"))  # DDP's names: module.<name>
        model.load_state_dict({k[len("module."):]: v for k, v in saved.items()})
        model.eval()
        with fg.no_grad():
            logits = model(fg.tensor(vx))
            val_loss = float(F.cross_entropy(logits, fg.tensor(vy)).item())
        np.testing.assert_allclose(res[2 * gi]["val_loss"][-1], val_loss, rtol=1e-5)
        assert res[2 * gi]["val_accuracy"][-1] == pytest.approx(float(np.mean(logits.numpy().argmax(1) == vy)))


def test_group_queries_before_init_say_so(monkeypatch):
    """get_process_group_ranks(), get_group_rank(None, 0) ... before init(): the RuntimeError of rank() (was a
    TypeError saying the group is a NoneType, GroupMember.WORLD being None then)."""
    import forgegrad.distributed as dist
    monkeypatch.setitem(comm._state, "comm", None)
    for fn in (lambda: dist.get_process_group_ranks(None), lambda: dist.get_group_rank(None, 0),
               lambda: dist.get_global_rank(None, 0), lambda: dist.get_world_size(None), dist.destroy_process_group,
               lambda: dist.new_subgroups(1)):
        with pytest.raises(RuntimeError, match="call forgegrad.distributed.init"):
            fn()


def test_group_arguments_at_one_rank():
    """A one-process MPI world: groups of it work, and bad arguments are refused before any communication."""
    import pickle

    import forgegrad as fg
    import forgegrad.distributed as dist
    from forgegrad import nn
    dist.init()
    world = dist.GroupMember.WORLD
    assert world.ranks == [0] and dist.get_world_size(world) == 1 and dist.get_group_rank(world, 0) == 0
    g = dist.new_group([0], group_desc="solo")
    assert isinstance(g, dist.ProcessGroup) and (g.rank(), g.size(), repr(g)) == (0, 1, "ProcessGroup(ranks=[0], "
                                                                                      "desc='solo')")
    a = np.arange(4, dtype=np.float32)
    assert dist.allreduce(a, op="mean", group=g) is a and a.tolist() == [0, 1, 2, 3]
    t = fg.tensor(a.copy())
    assert dist.broadcast(t, group=g, group_src=0) is t
    non = dist.GroupMember.NON_GROUP_MEMBER
    assert pickle.loads(pickle.dumps(non)) is non and repr(non) == "GroupMember.NON_GROUP_MEMBER"
    assert dist.get_rank(non) == -1 and dist.get_world_size(non) == -1
    cases = [
        (lambda: dist.new_group([1]), ValueError, "ranks holds rank 1, out of range: the job's ranks are 0 to 0"),
        (lambda: dist.new_group([]), ValueError, "ranks must not be empty"),
        (lambda: dist.new_group([True]), TypeError, "ranks must hold integer global ranks"),
        (lambda: dist.new_group(backend="nccl"), ValueError, "backend must be None or 'mpi'"),
        (lambda: dist.new_group(timeout=5), ValueError, "timeout is not supported"),
        (lambda: dist.new_subgroups(), ValueError, "pass group_size"),
        (lambda: dist.new_subgroups(2), ValueError, r"group_size \(2\) must not exceed the group's size \(1\)"),
        (lambda: dist.new_subgroups_by_enumeration([]), ValueError, "must not be empty"),
        (lambda: dist.broadcast(a, root=0, group_src=0), ValueError, "not both"),
        (lambda: dist.broadcast(a, group=g, group_src=1), ValueError, r"group_src must be a rank in the group"),
        (lambda: dist.get_global_rank(g, 1), ValueError, "Group rank 1 is not part of group"),
        (lambda: dist.get_group_rank(non, 0), ValueError, "NON_GROUP_MEMBER"),
        (lambda: dist.new_subgroups(1, group=non), ValueError, "only the group's ranks call new_subgroups"),
        (lambda: dist.broadcast_parameters([a], 0, group=non), ValueError,
         "broadcast_parameters: group is GroupMember.NON_GROUP_MEMBER: global rank 0 is not in the group; call it "
         "on the group's ranks only"),
    ]
    for fn, kind, message in cases:
        with pytest.raises(kind, match=message):
            fn()
    model = dist.FullyShardedDataParallel(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="stage 3 shards over FullyShardedDataParallel's process_group"):
        dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, process_group=g)
    assert dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3).process_group is world
    dist.destroy_process_group(g)
    with pytest.raises(ValueError, match="has been destroyed"):
        dist.barrier(group=g)
    h, (h1,) = dist.new_subgroups(1)
    assert h is h1 and h.ranks == [0]
    dist.destroy_process_group()  # torch's end of a script: every group, not the world
    assert h.comm is None and world.comm is not None
    dist.barrier()
