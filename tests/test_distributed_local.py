"""forgegrad.distributed pieces that need no MPI job: DistributedSampler (against torch's), argument
checks, the launcher's helpers, and single-rank collectives (a one-process MPI world)."""
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler as TorchSampler

import forgegrad as fg
from forgegrad.data import DataLoader, TensorDataset
from forgegrad.distributed import DistributedSampler, comm
from forgegrad.distributed.launch import threads_per_rank

needs_mpi = pytest.mark.skipif(not comm.is_available(), reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


@pytest.mark.parametrize("n, replicas", [(10, 3), (12, 4), (7, 2), (5, 4), (3, 4)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_without_shuffle_equals_torch(n, replicas, drop_last):
    data = list(range(n))
    for r in range(replicas):
        ours = DistributedSampler(data, num_replicas=replicas, rank=r, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(data, num_replicas=replicas, rank=r, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.mark.parametrize("n, replicas", [(10, 3), (45, 2), (7, 4), (3, 4)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_with_shuffle_has_torchs_semantics(n, replicas, drop_last):
    data = list(range(n))
    previous = None
    for epoch in range(3):
        shards = []
        for r in range(replicas):
            s = DistributedSampler(data, num_replicas=replicas, rank=r, seed=5, drop_last=drop_last)
            s.set_epoch(epoch)
            t = TorchSampler(data, num_replicas=replicas, rank=r, seed=5, drop_last=drop_last)
            t.set_epoch(epoch)
            shards.append(list(s))
            assert len(s) == len(t) == len(shards[-1])  # equal shards of torch's length
        flat = sum(shards, [])
        if drop_last:
            assert len(set(flat)) == len(flat) == (n // replicas) * replicas  # no sample twice
        else:
            assert set(flat) == set(range(n))  # every sample, padding repeats a few
        if previous and len(flat) > 2:
            assert flat != previous  # a new order each epoch
        previous = flat
    again = DistributedSampler(data, num_replicas=replicas, rank=0, seed=5, drop_last=drop_last)
    again.set_epoch(2)
    assert list(again) == shards[0]  # the same seed and epoch give the same order


def test_sampler_errors():
    with pytest.raises(ValueError, match="Invalid rank 3"):
        DistributedSampler(range(5), num_replicas=3, rank=3)
    with pytest.raises(ValueError, match="num_replicas must be >= 1"):
        DistributedSampler(range(5), num_replicas=0, rank=0)
    with pytest.raises(TypeError, match="__len__"):
        DistributedSampler(iter(range(5)), num_replicas=1, rank=0)
    with pytest.raises(TypeError, match="epoch must be an int"):
        DistributedSampler(range(5), num_replicas=1, rank=0).set_epoch(1.5)


def test_dataloader_takes_a_sampler():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    ds = TensorDataset(x, np.arange(10))
    s = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(ds, batch_size=2, sampler=s)
    assert len(loader) == 3
    assert np.concatenate([b[1]._data for b in loader]).tolist() == [1, 3, 5, 7, 9]
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(ds, sampler=s, shuffle=True)
    with pytest.raises(TypeError, match="sampler must be an iterable"):
        DataLoader(ds, sampler=3)


def test_launched_size_reads_the_launchers_environment():
    assert comm.launched_size({}) == 1
    assert comm.launched_size({"PMI_SIZE": "4"}) == 4
    assert comm.launched_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert threads_per_rank(10**6) == 1


def test_calls_before_init_say_so(monkeypatch):
    monkeypatch.setitem(comm._state, "comm", None)  # as before init(), whatever earlier tests did
    for fn in (comm.rank, comm.size, comm.barrier, lambda: comm.allreduce(np.ones(2))):
        with pytest.raises(RuntimeError, match="call forgegrad.distributed.init"):
            fn()
    assert not comm.is_distributed()


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setattr(comm, "is_available", lambda: False)
    monkeypatch.setitem(comm._state, "MPI", None)
    with pytest.raises(ImportError, match=r'pip install "forgegrad\[mpi\]"'):
        comm._mpi()


@needs_mpi
def test_single_rank_collectives_work_in_place_on_arrays_and_tensors():
    comm.init()  # a one-rank world (MPI singleton)
    assert (comm.rank(), comm.size(), comm.local_rank()) == (0, 1, 0)
    a = np.arange(6, dtype=np.float32)
    assert comm.allreduce(a, op="mean") is a and a.tolist() == list(range(6))
    t = fg.tensor(np.ones(3, np.float32))
    assert comm.broadcast(t) is t
    g = comm.allgather(t)
    assert isinstance(g, fg.Tensor) and g.shape == (1, 3)
    assert comm.reduce_scatter(np.arange(4.0)).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.allreduce(np.ones((4, 4), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="op must be one of"):
        comm.allreduce(np.ones(2, np.float32), op="avg")
    with pytest.raises(TypeError, match="op='mean' needs a float array"):
        comm.allreduce(np.ones(2, np.int64), op="mean")
    with pytest.raises(ValueError, match="root must be a rank"):
        comm.broadcast(np.ones(2), root=1)
    with pytest.raises(TypeError, match="numpy array or a CPU forgegrad Tensor"):
        comm.allreduce([1.0, 2.0])
    comm.barrier()


@needs_mpi
def test_wrappers_check_their_arguments():
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()
    with pytest.raises(TypeError, match="must be a forgegrad.nn.Module"):
        dist.DistributedDataParallel(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="bucket_cap_mb must be a positive number"):
        dist.DistributedDataParallel(nn.Linear(2, 2), bucket_cap_mb=0)
    with pytest.raises(TypeError, match="optimizer_class must be a forgegrad.optim optimizer class"):
        dist.ZeroRedundancyOptimizer(nn.Linear(2, 2).parameters(), torch.optim.Adam)
    with pytest.raises(TypeError, match="expected a forgegrad optimizer"):
        dist.DistributedOptimizer(object())
    z = dist.ZeroRedundancyOptimizer(nn.Linear(2, 2).parameters(), optim.Adam)
    with pytest.raises(ValueError, match="1 parameter groups|parameter groups"):
        z.load_state_dict({"state": {}, "param_groups": []})


@needs_mpi
def test_zero_at_one_rank_equals_adam_with_a_scheduler_and_round_trips_its_state():
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()

    def run(make_opt, steps=6):
        fg.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2))
        opt = make_opt(model.parameters())
        sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        rng = np.random.default_rng(0)
        for _ in range(steps):
            x = fg.tensor(rng.standard_normal((4, 5)).astype(np.float32))
            opt.zero_grad()
            (model(x) ** 2).mean().backward()
            opt.step()
            sched.step()
        return model, opt

    ref_model, ref_opt = run(lambda p: optim.Adam(p, lr=1e-2, weight_decay=0.1))
    model, zero = run(lambda p: dist.ZeroRedundancyOptimizer(p, optim.Adam, lr=1e-2, weight_decay=0.1))
    for a, b in zip(model.parameters(), ref_model.parameters()):
        np.testing.assert_array_equal(a._data, b._data)
    assert zero.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"] == 1e-2 * 0.5 ** 3
    sd, ref_sd = zero.state_dict(), ref_opt.state_dict()  # the plain optimizer's layout
    assert sd["state"].keys() == ref_sd["state"].keys()
    for i in ref_sd["state"]:
        for k in ("step", "exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(sd["state"][i][k].data, ref_sd["state"][i][k].data)
    fresh = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, lr=1.0)
    fresh.load_state_dict(ref_sd)
    np.testing.assert_array_equal(fresh.state_dict()["state"][3]["exp_avg"].data, ref_sd["state"][3]["exp_avg"].data)
    assert fresh.param_groups[0]["lr"] == ref_sd["param_groups"][0]["lr"]
    assert 0 < zero.local_state_bytes() <= 2 * 4 * sum(p.numel() for p in model.parameters()) + 64


@needs_mpi
def test_zero_refuses_what_it_cannot_shard():
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()
    params = list(nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="LBFGS is not supported: each rank updates a slice"):
        dist.ZeroRedundancyOptimizer(params, optim.LBFGS)
    with pytest.raises(ValueError, match="stage 3 needs parameters sharded by FullyShardedDataParallel"):
        dist.ZeroRedundancyOptimizer(params, optim.Adam, stage=3)
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3, got True"):
        dist.ZeroRedundancyOptimizer(params, optim.Adam, stage=True)
    with pytest.raises(ValueError, match="bucket_cap_mb must be a positive number"):
        dist.ZeroRedundancyOptimizer(params, optim.Adam, stage=2, bucket_cap_mb=-1)
    with pytest.raises(ValueError, match="max_grad_norm must be a positive number or None"):
        dist.ZeroRedundancyOptimizer(params, optim.Adam, max_grad_norm=0)
    with pytest.raises(TypeError, match="parameter 0 has dtype float64; the flat shards are float32"):
        dist.ZeroRedundancyOptimizer(nn.Linear(2, 2).double().parameters(), optim.SGD, lr=0.1)


@needs_mpi
@pytest.mark.parametrize("stage", [1, 2])
def test_zero_clipping_at_one_rank_equals_clip_grad_norm(stage):
    """At one rank the shard is the whole gradient: clip_grad_norm_ (and max_grad_norm) must give what
    nn.utils.clip_grad_norm_ + AdamW give, to float32 rounding (the norm is summed in float64 here)."""
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()

    def run(kind, steps=5):
        fg.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2))
        if kind == "plain":
            opt = optim.AdamW(model.parameters(), lr=1e-2)
        else:
            opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.AdamW, stage=stage, bucket_cap_mb=1e-4,
                                               max_grad_norm=0.1 if kind == "max_grad_norm" else None, lr=1e-2)
        rng = np.random.default_rng(0)
        norms = []
        for _ in range(steps):
            x = fg.tensor(rng.standard_normal((4, 5)).astype(np.float32))
            opt.zero_grad()
            (model(x) ** 2).mean().backward()
            if kind == "plain":
                norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), 0.1).item()))
            elif kind == "method":
                norms.append(float(opt.clip_grad_norm_(0.1).item()))
            opt.step()
        return np.concatenate([p._data.reshape(-1) for p in model.parameters()]), norms

    ref, ref_norms = run("plain")
    assert min(ref_norms) > 0.1  # every step clips
    for kind in ("method", "max_grad_norm"):
        params, norms = run(kind)
        np.testing.assert_allclose(params, ref, rtol=0, atol=1e-6, err_msg=kind)
    np.testing.assert_allclose(run("method")[1], ref_norms, rtol=1e-6)


@needs_mpi
def test_fsdp_at_one_rank_trains_like_adam_frees_its_units_and_guards_misuse():
    """One rank: FullyShardedDataParallel + ZeroRedundancyOptimizer(stage=3) give Adam's steps exactly; the
    unit pages are zeros (freed) outside forward and backward; a tied weight goes to the root unit."""
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()

    def make():
        fg.manual_seed(0)
        m = nn.Sequential(nn.Embedding(11, 6), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 11))
        m[3].weight = m[0].weight  # tied: (11, 6) both
        return m

    ids = fg.tensor(np.array([[1, 2, 3], [4, 5, 6]]))
    ref = make()
    ref_opt = optim.Adam(ref.parameters(), lr=1e-2)
    model = dist.FullyShardedDataParallel(make())
    assert [type(u.module).__name__ for u in model.units] == ["Sequential", "Linear", "Linear"]
    assert len(model.units[0].params) == 1  # the tied weight, at the root
    with pytest.raises(RuntimeError, match=r"create forgegrad.distributed.ZeroRedundancyOptimizer\(model.parameters"):
        model(ids).sum().backward()
    with pytest.raises(ValueError, match="sharded by FullyShardedDataParallel: use stage=3"):
        dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=2)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=1e-2)
    for _ in range(4):
        for net, o in ((ref, ref_opt), (model, opt)):
            o.zero_grad()
            (net(ids) ** 2).mean().backward()
            o.step()
        # freed between steps: the parameters read NaN (a read outside its unit shows), the pages are gone
        assert model.gathered_bytes() == 0 and np.isnan(model.module[1].weight.numpy()).all()
        assert not model.units[1].full.any()
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    with fg.no_grad():  # a graph-free forward gathers and frees as it goes
        np.testing.assert_array_equal(model.eval()(ids).numpy(), ref.eval()(ids).numpy())
    assert model.gathered_bytes() == 0
    with pytest.raises(ValueError, match="already sharded by another FullyShardedDataParallel"):
        dist.FullyShardedDataParallel(model.module)
    with pytest.raises(ValueError, match="units must be submodules of the module"):
        dist.FullyShardedDataParallel(nn.Linear(2, 2), units=[nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="must be a forgegrad.nn.Module"):
        dist.FullyShardedDataParallel(torch.nn.Linear(2, 2))


@needs_mpi
@pytest.mark.parametrize("units", ["default", "layers"])
def test_fsdp_transformer_layers_train_like_adamw(units):
    """Units inside units (the encoder layers, their attention and its out_proj), a custom forward
    and several outputs: FullyShardedDataParallel + ZeRO-3 equal plain AdamW bit for bit at one rank."""
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()

    def make():
        fg.manual_seed(0)
        return nn.Sequential(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True),
                             nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), nn.Linear(16, 4))

    ref, net = make(), make()
    model = dist.FullyShardedDataParallel(net, units=None if units == "default" else [net[0], net[1]])
    assert len(model.units) == (13 if units == "default" else 3)
    ref_opt = optim.AdamW(ref.parameters(), lr=1e-2)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.AdamW, stage=3, lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = fg.tensor(rng.standard_normal((2, 5, 16)).astype(np.float32))
        for m, o in ((ref, ref_opt), (model, opt)):
            o.zero_grad()
            (m(x) ** 2).mean().backward()
            o.step()
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)


@needs_mpi
def test_zero_2_rebuilt_over_the_same_parameters_takes_their_gradients_over():
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()
    fg.manual_seed(0)
    model, ref = nn.Linear(4, 3), nn.Linear(4, 3)
    ref.load_state_dict(model.state_dict())
    old = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=2, lr=1e-2)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=2, lr=1e-2)
    ref_opt = optim.Adam(ref.parameters(), lr=1e-2)
    x = fg.tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    for _ in range(3):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            (m(x) ** 2).mean().backward()
            o.step()
    np.testing.assert_array_equal(model.weight.numpy(), ref.weight.numpy())
    assert not old.groups[0].grad.any() and old._reducer.handles == []


@needs_mpi
@pytest.mark.parametrize("reshard", [True, False])
def test_fsdp_units_returning_dicts_train_on_the_updated_parameters(reshard):
    """A unit whose module returns a dict (of Tensors) is freed after its forward and gathered for its backward
    like one returning a Tensor, and no unit stays gathered across a step: the next forward reads the updated
    parameters (a unit left gathered would compute with the old ones), equal to Adam's steps."""
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 4)

        def forward(self, x):
            return {"hidden": self.proj(x).tanh()}

    class Outer(nn.Module):  # the root unit (its own head) returns a dict too
        def __init__(self):
            super().__init__()
            self.inner, self.head = Inner(), nn.Linear(4, 2)

        def forward(self, x):
            return {"out": self.head(self.inner(x)["hidden"])}

    def make():
        fg.manual_seed(0)
        return Outer()

    x = fg.tensor(np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32))
    ref = make()
    ref_opt = optim.Adam(ref.parameters(), lr=1e-1)
    net = make()
    model = dist.FullyShardedDataParallel(net, units=[net.inner], reshard_after_forward=reshard)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=1e-1)
    for _ in range(3):
        for m, o in ((ref, ref_opt), (model, opt)):
            o.zero_grad()
            out = m(x)["out"]
            if m is model:  # both units freed after their forwards, or (reshard False) kept for the backward
                assert (model.gathered_bytes() == 0) == reshard
            (out ** 2).mean().backward()
            o.step()
        assert model.gathered_bytes() == 0
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)

    # one unit, the whole model, whose forward returns a dict
    class Single(nn.Module):
        def __init__(self):
            super().__init__()
            fg.manual_seed(1)
            self.w = nn.Linear(3, 2).weight

        def forward(self, x):
            return {"out": x @ self.w.T}

    ref, model = Single(), dist.FullyShardedDataParallel(Single(), reshard_after_forward=reshard)
    ref_opt = optim.Adam(ref.parameters(), lr=1e-1)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=1e-1)
    for _ in range(3):
        for m, o in ((ref, ref_opt), (model, opt)):
            o.zero_grad()
            (m(x)["out"] ** 2).mean().backward()
            o.step()
    np.testing.assert_array_equal(model.state_dict()["w"].numpy(), ref.w.numpy())
    assert model.gathered_bytes() == 0


@needs_mpi
def test_fsdp_forward_between_backward_and_step_keeps_no_stale_unit():
    """reshard_after_forward=False keeps a unit gathered from its forward to its backward: a forward with grad
    enabled between backward and step (a metric, no backward) leaves units gathered across the step, which frees
    them, so the next forward reads the updated parameters (Adam's steps exactly)."""
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()

    def make():
        fg.manual_seed(0)
        return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))

    x = fg.tensor(np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32))
    ref = make()
    ref_opt = optim.Adam(ref.parameters(), lr=1e-1)
    model = dist.FullyShardedDataParallel(make(), reshard_after_forward=False)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=1e-1)
    for _ in range(3):
        for m, o in ((ref, ref_opt), (model, opt)):
            o.zero_grad()
            (m(x) ** 2).mean().backward()
            m(x)  # kept gathered (no backward follows)
            o.step()
        assert model.gathered_bytes() == 0
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)
