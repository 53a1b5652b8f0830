"""FullyShardedDataParallel's sharding strategies at their edges, on real MPI jobs
(tests/distributed_scripts/fsdp_strategy_edges_job.py): HYBRID_SHARD groups that leave a rank out, and ranks
passing different strategies, are a ValueError on every rank (no hang, no stray TypeError); a graph-free
forward between a forward and its backward changes nothing under any strategy; and wrappers built one after
another do not run MPI out of communicators."""
import json

import pytest
from test_distributed import run_job

from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


def _run(n, case, tmp_path):
    run_job(n, "fsdp_strategy_edges_job.py", tmp_path, case, timeout=90)
    return json.loads((tmp_path / "result.json").read_text())


def test_hybrid_groups_leaving_a_rank_out_raise_on_every_rank(tmp_path):
    """Rank 3 is in no shard group: it and the three ranks that are all get the ValueError."""
    errors = _run(4, "nonmember", tmp_path)["errors"]
    assert all(e is not None and "process_group[0] (the shard group)" in e for e in errors), errors
    assert all("global rank 3" in e for e in errors), errors


def test_ranks_passing_different_strategies_get_the_error_that_says_so(tmp_path):
    """Rank 0 and rank 1 pass different strategies: both get the ValueError naming each one's."""
    for pair, errors in _run(2, "mismatch", tmp_path)["errors"].items():
        first, second = pair.split("/")
        for e in errors:
            assert e is not None and e.startswith("ValueError: FullyShardedDataParallel: every rank must pass the "
                                                  "same sharding_strategy"), (pair, errors)
            assert f"rank 0 passed {first}" in e and f"rank 1 passed {second}" in e, (pair, errors)


@pytest.mark.parametrize("ranks", [2, 4])
def test_graph_free_forward_before_backward_changes_nothing(tmp_path, ranks):
    """Every strategy, prefetch on and off: a no_grad forward between a forward and its backward (the ranks'
    losses reaching different heads) leaves the training bit for bit as without it."""
    same = _run(ranks, "nograd", tmp_path)["same"]
    assert same == {k: True for k in same} and len(same) == 10, same


def test_a_rank_whose_last_forward_has_no_backward_under_each_strategy(tmp_path):
    """Micro-batches where one rank's last forward has no backward and the other's has: every strategy ends
    where FULL_SHARD does (without resharding the ranks ran different numbers of reduction rounds: a hang)."""
    diff = _run(2, "skip", tmp_path)["diff"]
    # NO_SHARD / HYBRID_SHARD (shard groups of one rank here) sum in another order: rounding, which Adam's
    # normalisation lifts to ~2e-6 over 4 steps; a wrong gradient moves a parameter by ~lr = 1e-2
    assert len(diff) == 5 and all(d < 1e-5 for d in diff.values()), diff


def test_no_sync_accumulation_and_clipping_under_each_strategy(tmp_path):
    """4 ranks (HYBRID_SHARD 2 x 2), max_grad_norm, ranks reaching different heads and one whose last forward
    has no backward: with the first micro-batch under no_sync() or not, every strategy ends where FULL_SHARD
    does (the gradient shards are allreduced across the replicas before the norm is taken)."""
    diff = _run(4, "nosync", tmp_path)["diff"]
    assert len(diff) == 10 and all(d < 1e-6 for d in diff.values()), diff


def test_one_optimizer_over_two_wrappers_under_each_strategy(tmp_path):
    """NO_SHARD, HYBRID_SHARD (2 x 2) and SHARD_GRAD_OP: two wrapped models, one ZeRO-3 optimizer, the same
    parameters as FULL_SHARD's after 3 steps (each wrapper's groups were distinct, and the optimizer refused)."""
    diff = _run(4, "two", tmp_path)["diff"]
    assert set(diff) == {"FULL_SHARD", "NO_SHARD", "HYBRID_SHARD", "SHARD_GRAD_OP"}
    assert all(d < 1e-6 for d in diff.values()), diff


def test_many_wrappers_do_not_exhaust_communicators(tmp_path):
    """2100 FULL_SHARD, 1100 NO_SHARD and 700 HYBRID_SHARD wrappers, one after another (MPICH has 2048
    communicators): each dropped wrapper gives its communicator back, and the strategies' groups are made once."""
    assert _run(2, "many", tmp_path)["built"] == {"FULL_SHARD": 2100, "NO_SHARD": 1100, "HYBRID_SHARD": 700}
