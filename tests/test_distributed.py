"""forgegrad.distributed on real MPI jobs (mpiexec -n 2, and -n 4 oversubscribed on this 2-core machine).

Each test starts the job scripts in tests/distributed_scripts/ with the mpiexec of the environment
(the mpich wheel's) and checks what they wrote against a one-process reference computed here.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import forgegrad as fg

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_scripts")
# the MPI jobs import the forgegrad this test run imports (the source tree in development, the installed
# package in CI, where the source tree has no compiled _C)
FORGEGRAD_PATH = os.path.dirname(os.path.dirname(os.path.abspath(fg.__file__)))

from forgegrad.distributed import comm  # noqa: E402  (importing it does not start MPI)

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


def _mpiexec():
    from forgegrad.distributed.launch import find_mpiexec
    return find_mpiexec()


def run_job(n, script, *args, timeout=60, check=True):
    """``mpiexec -n n python script args`` with one kernel thread per rank; n=0 runs it without mpiexec."""
    env = dict(os.environ, FORGEGRAD_NUM_THREADS="1", PYTHONPATH=FORGEGRAD_PATH)
    cmd = [sys.executable, os.path.join(SCRIPTS, script), *map(str, args)]
    if n:
        cmd = [_mpiexec(), "-n", str(n)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=SCRIPTS)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def reference_params():
    sys.path.insert(0, SCRIPTS)
    try:
        import common
    finally:
        sys.path.remove(SCRIPTS)
    model, _ = common.train_reference()
    return common.flat_params(model)


@pytest.mark.parametrize("ranks", [2, 4])
def test_ddp_matches_one_process_with_the_whole_batch(tmp_path, ranks):
    """N ranks x batch B == 1 process x batch N*B after 20 Adam steps; DistributedOptimizer, no_sync
    accumulation and ZeRO-1 match DDP step for step; ZeRO keeps ~1/N of Adam's state per rank."""
    run_job(ranks, "ddp_checks.py", tmp_path)
    res = json.loads((tmp_path / "result.json").read_text())
    params = np.load(tmp_path / "params.npy")
    assert res["size"] == ranks and res["ranks_identical"] and res["optimizer_state_broadcast"]
    assert res["buffers_identical"]
    np.testing.assert_allclose(params, reference_params(), rtol=0, atol=1e-6)
    assert res["hvd_max_diff"] <= 1e-6 and res["no_sync_max_diff"] <= 1e-6 and res["zero_max_diff"] <= 1e-6
    full = res["full_adam_state_bytes"]
    for b in res["zero_state_bytes"]:  # the shard's exp_avg/exp_avg_sq (+ padding and a step scalar)
        assert full / ranks <= b <= full / ranks + 8 * ranks + 64
    # several buckets, every one started from a gradient hook during backward, not after it
    assert res["buckets"] >= 2 and res["launched_in_backward"] == res["buckets"] * 20
    if ranks == 2:  # a second run gives the same bits
        again = tmp_path / "again"
        again.mkdir()
        run_job(2, "ddp_checks.py", again)
        assert np.array_equal(np.load(again / "params.npy"), params)


def test_zero_checkpoint_from_2_ranks_resumes_at_1_and_4(tmp_path):
    ckpt = tmp_path / "zero.safetensors"
    run_job(2, "zero_checkpoint.py", "save", ckpt, 10)
    ref = reference_params()  # 20 uninterrupted steps
    run_job(0, "zero_checkpoint.py", "resume", ckpt, 10, tmp_path / "one.npy", "plain")  # into a plain Adam
    run_job(4, "zero_checkpoint.py", "resume", ckpt, 10, tmp_path / "four.npy")
    for name in ("one.npy", "four.npy"):
        np.testing.assert_allclose(np.load(tmp_path / name), ref, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("ranks", [2, 3])
def test_zero_stages_2_and_3_match_ddp_with_clipping_accumulation_and_a_scheduler(tmp_path, ranks):
    """ZeRO-1, ZeRO-2 (several buckets) and ZeRO-3 (FullyShardedDataParallel) against DDP + the plain
    optimizer over 20 steps; with AdamW, global-norm clipping (every step clips), a StepLR and two
    micro-batches per step (accumulated in the shard, or under no_sync). Tolerance 1e-6: the
    reduce-scatter sums the ranks' float32 gradients in another order than DDP's allreduce (at 3 ranks
    bits can differ), Adam turns a last-bit gradient difference into an update difference of the same
    relative size, and the weights are O(1)."""
    run_job(ranks, "zero_stages.py", tmp_path)
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["size"] == ranks and res["zero1_ranks_identical"] and res["zero2_ranks_identical"]
    assert res["zero3_ranks_identical"]
    for key in ("zero1", "zero2", "zero3", "zero2_clip_accumulate", "zero2_clip_no_sync", "zero1_clip_no_sync",
                "zero1_clip_no_sync_norm_diff", "zero3_clip_accumulate", "zero3_clip_no_sync",
                "zero3_keep_clip_accumulate"):
        assert res[key] <= 1e-6, (key, res[key])
    assert res["clipped_steps"] == 20
    # FULL_SHARD: one unit (a Linear) gathered at a time, in forward and in backward, or two with backward
    # prefetch (the default); kept from forward to backward: all three at the end of the forward
    peak, largest = res["zero3_peak_gathered_no_prefetch"]
    assert peak == largest
    peak, largest = res["zero3_peak_gathered_reshard_True"]
    assert largest < peak <= 2 * largest
    peak, largest = res["zero3_peak_gathered_reshard_False"]
    assert largest < peak <= 3 * largest
    # prefetch on or off, forward or backward (PRE or POST): the same parameters, bit for bit, every step
    assert res["zero3_prefetch_identical"] == {k: True for k in ("none", "post", "forward_pre", "accumulate_none",
                                                                 "accumulate_forward_post", "keep_forward")}
    if ranks == 2:  # 2 ranks x 4 samples == one process on the 8: the same 20 Adam steps
        for stage in (2, 3):
            np.testing.assert_allclose(np.load(tmp_path / f"zero{stage}.npy"), reference_params(), rtol=0, atol=1e-6)
    full = res["full_params_bytes"]
    for one, two, three in zip(res["zero1_memory"], res["zero2_memory"], res["zero3_memory"]):
        # stage 1 keeps every full .grad; stage 2 only its shard of each bucket (padding: < ranks floats each)
        assert one["grads"] >= full
        assert full / ranks <= two["grads"] <= full / ranks + 4 * ranks * two["buckets"]
        assert 2 * full / ranks <= two["optimizer_state"] <= 2 * (full / ranks + 4 * ranks * two["buckets"]) + 64
        # every bucket's reduce-scatter started from a gradient hook during backward
        assert two["buckets"] >= 3 and two["launched_in_backward"] == two["buckets"] * 20
        # stage 3 between steps: only the parameter shards (nothing gathered), the gradient shards and the state
        assert one["params"] >= full and full / ranks <= three["params"] <= full / ranks + 4 * ranks * 3
        assert three["grads"] == three["params"] and three["launched_in_backward"] == 3 * 20


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_2_and_3_checkpoints_from_2_ranks_resume_at_1_and_4(tmp_path, stage):
    """Saved at 2 ranks (model and optimizer gathered, rank 0 writes), resumed into a plain model and Adam at
    1 process and resharded at 4 ranks: 10 + 10 steps == 20 uninterrupted ones."""
    ckpt = tmp_path / "zero.safetensors"
    run_job(2, "zero_checkpoint.py", "save", ckpt, 10, stage)
    ref = reference_params()
    run_job(0, "zero_checkpoint.py", "resume", ckpt, 10, tmp_path / "one.npy", "plain")
    run_job(4, "zero_checkpoint.py", "resume", ckpt, 10, tmp_path / "four.npy", stage)
    for name in ("one.npy", "four.npy"):
        np.testing.assert_allclose(np.load(tmp_path / name), ref, rtol=0, atol=1e-6, err_msg=name)


def test_fit_with_zero_2_and_3_a_scheduler_and_optimizer_checkpoints_equals_ddp(tmp_path):
    run_job(2, "zero_fit.py", tmp_path)
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["params_diff"] <= 1e-6 and res["loss_diff"] <= 1e-6 and res["state_diff"] <= 1e-6
    assert res["zero3_params_diff"] <= 1e-6 and res["zero3_loss_diff"] <= 1e-6 and res["zero3_checkpoint_diff"] <= 1e-6
    assert res["lr"] == [1e-2, 5e-3] and res["epoch"] == 2 and res["scheduler_epoch"] == 2 and res["same_keys"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp-1.safetensors", "ddp-2.safetensors", "result.json",
                                                          "zero-1.safetensors", "zero-2.safetensors",
                                                          "zero3-1.safetensors", "zero3-2.safetensors"]


def test_fit_under_mpi_averages_metrics_shards_data_and_writes_on_rank_0(tmp_path):
    proc = run_job(2, "fit_job.py", tmp_path)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["history"] == r1["history"] and len(r0["history"]["loss"]) == 3  # global values on every rank
    assert proc.stdout.count("Epoch ") == 3  # progress from rank 0 only
    for epoch in range(3):
        a, b = r0["seen"][epoch], r1["seen"][epoch]
        assert len(a) == len(b) == 23  # ceil(45 / 2): one padded sample
        assert set(a) | set(b) == set(range(45))
    assert r0["seen"][0] != r0["seen"][1]  # set_epoch reshuffles
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1.safetensors", "ckpt-2.safetensors", "ckpt-3.safetensors",
                                            "rank0.json", "rank1.json"]


@pytest.mark.parametrize("mode, message", [
    # Hydra kills the others, or (a race on a loaded machine) rank 0 sees the dead peer first and aborts
    ("kill", ("BAD TERMINATION", "rank 0 failed with")),
    ("raise", "rank 1 failed with RuntimeError; aborting the job"),
    ("exit", "rank 1 exited with status 3; aborting the job"),
    ("mismatch", "the model differs between ranks (rank 0 has 0.weight (16, 6) float32, rank 1 has 0.weight "
                 "(17, 6) float32)"),
    ("zero_mismatch", "ZeroRedundancyOptimizer: the model differs between ranks (rank 0 has parameter 0 (16, 6) "
                      "float32, rank 1 has parameter 0 (17, 6) float32)"),
    ("zero_stage_mismatch", "ZeroRedundancyOptimizer: the model differs between ranks (rank 0 has settings stage=2 "
                            "bucket_cap_mb=25, rank 1 has settings stage=1 bucket_cap_mb=25)"),
    ("fsdp_mismatch", "FullyShardedDataParallel: every rank must pass the same sharding_strategy "
                      "(reshard_after_forward=False alone is SHARD_GRAD_OP) and form of process_group (rank 0 passed "
                      "SHARD_GRAD_OP with None, rank 1 passed FULL_SHARD with None)"),
])
def test_a_failing_rank_ends_the_job_with_a_clear_error(mode, message):
    # the timeout is the "never a hang" check: subprocess.run raises TimeoutExpired after 60 s
    proc = run_job(2, "failing_job.py", mode, timeout=60, check=False)
    assert proc.returncode != 0
    messages = message if isinstance(message, tuple) else (message,)
    assert any(m in proc.stdout + proc.stderr for m in messages), proc.stdout + proc.stderr
    assert "finished although" not in proc.stdout


def test_cli_train_ranks_relaunches_under_mpiexec(tmp_path):
    env = dict(os.environ, PYTHONPATH=FORGEGRAD_PATH)
    env.pop("FORGEGRAD_NUM_THREADS", None)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "forgegrad.cli", "train", "mlp", "--epochs", "2", "--ranks", "2",
                           "--out", str(out), "--no-plot", "--no-progress"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("epoch 2/2") == 1  # rank 0 logs for the job
    assert "2 MPI ranks" in proc.stdout
    meta = json.loads((out / "model.json").read_text())
    assert meta["epochs_completed"] == 2 and len(meta["history"]) == 2


def test_mpiexec_is_found_next_to_python():
    assert os.path.basename(_mpiexec()) in ("mpiexec", "mpirun")
    assert shutil.which(_mpiexec())
