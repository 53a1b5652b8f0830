"""DeviceMesh (torch.distributed.device_mesh's API) on a real 4-rank MPI job
(tests/distributed_scripts/device_mesh_job.py): its groups, coordinates and sub-meshes; FSDP HYBRID_SHARD over
a 2-D mesh, FULL_SHARD over a 1-D one, DDP over a sub-mesh and HYBRID_SHARD over part of the job, each equal to
one process on the same global batch, with DistributedSampler over the group that trains the model; and the
errors, on every rank. Arguments are checked before any communication (tested here without MPI)."""
import json

import pytest
from test_distributed import run_job

from forgegrad.distributed import DeviceMesh, comm, init_device_mesh

needs_mpi = pytest.mark.skipif(not comm.is_available(), reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


@pytest.mark.parametrize("make, message", [
    (lambda: init_device_mesh("cuda", (2,)), "no GPU (NCCL) backend; use 'cpu'"),
    (lambda: DeviceMesh("tpu", [0, 1]), "device_type must be 'cpu', got 'tpu'"),
    (lambda: init_device_mesh("cpu", (2, 0)), "mesh_shape must be a non-empty tuple of positive ints"),
    (lambda: DeviceMesh("cpu", [[0, 1], [2]]), "mesh must be a rectangular array of global ranks"),
    (lambda: DeviceMesh("cpu", [0.5, 1.0]), "mesh must be a non-empty array of integer global ranks"),
    (lambda: DeviceMesh("cpu", [[0, 1], [2, 3]], mesh_dim_names=("dp",)), "one name per dimension of the mesh (2)"),
    (lambda: DeviceMesh("cpu", [[0, 1], [2, 3]], mesh_dim_names=("dp", "dp")), "each mesh_dim_name must be unique"),
    (lambda: DeviceMesh("cpu", [0, 1], mesh_dim_names="dp"), "mesh_dim_names must be a tuple of strings"),
])
def test_bad_arguments_are_value_errors_before_any_communication(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


@needs_mpi
def test_device_mesh_on_four_ranks(tmp_path):
    run_job(4, "device_mesh_job.py", tmp_path, timeout=90)
    res = json.loads((tmp_path / "result.json").read_text())
    for r, api in enumerate(res["api"]):
        i, j = divmod(r, 2)
        assert api["mesh"] == [[0, 1], [2, 3]] and api["ndim"] == 2 and api["size"] == 4 and api["size1"] == 2
        assert api["coordinate"] == [i, j] and api["local"] == [i, j] and api["group_ranks"] == [i, j]
        assert api["groups"] == [[j, 2 + j], [2 * i, 2 * i + 1]]  # dimension 0: the column, 1: the row
        assert api["sub"] == [[2 * i, 2 * i + 1], 1, j, True, ["shard"]]  # mesh["shard"] shares the row's group
        assert api["whole"] and api["world_reused"]
        assert api["sums"] == [float(j + 2 + j), float(4 * i + 1)]  # an allreduce pairs only within the group
        assert api["repr"] == "DeviceMesh('cpu', [[0, 1], [2, 3]], mesh_dim_names=('replicate', 'shard'))"
    errors = res["errors"]
    assert all(e == errors[0] for e in errors)  # the same error on every rank
    e = errors[0]
    assert "mesh_shape (3,) holds 3 ranks; the job has 4" in e["shape"]
    assert "one name per dimension" in e["names_length"] and "unique" in e["names_repeat"]
    assert "no GPU (NCCL) backend" in e["cuda"] and "must be 'cpu', got 'meta'" in e["meta"]
    assert "every rank must pass the same mesh" in e["disagree"] and "rank 3 passed ([[0, 2], [1, 3]]" in e["disagree"]
    assert e["bad_name"].startswith("KeyError: DeviceMesh: no dimension named 'nope'")
    assert e["get_group_bad"].startswith("KeyError") and "pass mesh_dim" in e["get_group_2d"]
    assert "expects a 1-D device_mesh (a 2-D one with sharding_strategy=HYBRID_SHARD), got ndim=2" in e["fsdp_2d_full"]
    assert "pass process_group or device_mesh, not both" in e["fsdp_both"]
    assert "HYBRID_SHARD expects a 2-D device_mesh" in e["hybrid_1d"]
    assert "DistributedDataParallel: expects a 1-D device_mesh, got ndim=2" in e["ddp_2d"]
    # HYBRID_SHARD over the mesh: shard along the rows, replicate along the columns (torch's layout)
    assert res["hybrid_groups"] == [[[0, 1], [0, 2]], [[0, 1], [1, 3]], [[2, 3], [0, 2]], [[2, 3], [1, 3]]]
    # on part of the job: ranks 0, 1 replicate a whole model (2 x 1), ranks 2, 3 shard theirs (1 x 2)
    assert res["part"] == [[[0, 1], [0], [0, 1], [0, 0], None], [[0, 1], [1], [0, 1], [1, 0], None],
                           [[2, 3], [2, 3], [2], None, [0, 0]], [[2, 3], [2, 3], [3], None, [0, 1]]]
    # every configuration on every rank equals one process on the same global batch after 3 Adam steps
    # (float32 rounding of another summation order: ~3e-8; a wrong group or sampler is off by ~lr = 1e-2)
    for diff in res["diff"]:
        assert set(diff) == {"hybrid_2x2", "full_shard_1d", "ddp_row", "hybrid_part"}
        assert all(d < 1e-6 for d in diff.values()), res["diff"]
