"""FullyShardedDataParallel over blocks run under utils.checkpoint (their forward runs again inside the
backward pass), with gradient accumulation, and a backward through a graph made before step(), on a real
MPI job of 2 ranks (tests/distributed_scripts/fsdp_recompute_job.py)."""
import json

import pytest
from test_distributed import run_job

from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


def test_checkpointed_units_accumulate_and_a_stale_graph_is_refused(tmp_path):
    run_job(2, "fsdp_recompute_job.py", tmp_path, timeout=90)
    res = json.loads((tmp_path / "result.json").read_text())
    # 3 Adam steps of 1 or 3 micro-batches each equal one process on the mean of the ranks' losses
    assert len(res["diff"]) == 4 and all(res["identical"].values()), res
    assert all(d < 1e-6 for d in res["diff"].values()), res["diff"]
    # a recomputed block is consumed by the pass that recomputes it: step() gathers nothing (it used to gather
    # every unit once more as unreached), and accumulating micro-batches gathers no more at once than one
    assert all(b == 0 for b in res["in_step"].values()), res["in_step"]
    for strategy in ("FULL_SHARD", "SHARD_GRAD_OP"):
        assert res["peak"][f"{strategy}/3"] == res["peak"][f"{strategy}/1"], res["peak"]
    # the old graph's backward after step() and a new forward: torch's error on both ranks (it used to read the
    # updated parameters); the new graph then trains as one process does
    assert all(e is not None and "before the optimizer's last step()" in e for e in res["stale"]), res["stale"]
    assert res["after_stale"] < 1e-6, res["after_stale"]
