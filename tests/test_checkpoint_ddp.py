"""DistributedDataParallel with activation checkpointing on a real 2-rank MPI job: the averaged gradients and the
parameters after SGD steps equal the plain DDP run's bit for bit (dropout inside the checkpoints, a layer used in
two of them), and every bucket's reduction still starts from the gradient hooks during backward."""
import json

import pytest

from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


def test_checkpointed_ddp_equals_plain_ddp_on_2_ranks(tmp_path):
    from test_distributed import run_job
    run_job(2, "checkpoint_ddp_job.py", tmp_path)
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["size"] == 2 and res["ranks_identical"]
    assert res["grad_max_diff"] == 0.0 and res["param_max_diff"] == 0.0
    assert res["buckets"] >= 2 and res["launched_in_backward"] == res["buckets"] * res["rounds"]
    assert res["rounds"] == 4
