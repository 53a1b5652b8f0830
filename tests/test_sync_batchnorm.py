"""nn.SyncBatchNorm on real MPI jobs (tests/distributed_scripts/sync_batchnorm_job.py, 1, 2 and 3 ranks) against one
process's BatchNorm, forgegrad's and torch's, on the concatenated batch; and in one process, where it is BatchNorm."""
import sys

import numpy as np
import pytest
import torch
from test_distributed import SCRIPTS, run_job

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import nn, optim
from forgegrad.distributed import comm

mpi = pytest.mark.skipif(not comm.is_available(), reason='mpi4py is not installed (pip install "forgegrad[mpi]")')

sys.path.insert(0, SCRIPTS)
try:
    import sync_batchnorm_job as job
finally:
    sys.path.remove(SCRIPTS)


@pytest.fixture(scope="module", params=[1, 2, 3])
def world(request, tmp_path_factory):
    """The job's per-rank results at world size 1 (plain python, an initialised world of one rank), 2 and 3."""
    n = request.param
    out = tmp_path_factory.mktemp(f"syncbn{n}")
    run_job(0 if n == 1 else n, "sync_batchnorm_job.py", out, timeout=120)
    return n, [dict(np.load(out / f"rank{r}.npz")) for r in range(n)], [np.load(out / f"ddp{r}.npy") for r in range(n)]


def _bn(lib, ndim, kw):
    kw = dict(kw)
    double = kw.pop("dtype", None) is fg.float64
    if lib is torch:  # 6-D: torch's SyncBatchNorm, which is batch_norm in one process
        cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}
        m = cls.get(ndim, torch.nn.SyncBatchNorm)(job.C, **kw)
        return m.double() if double else m
    bias = kw.pop("bias", True)
    m = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(ndim, nn.SyncBatchNorm)(
        job.C, **kw)
    if not bias:
        m.register_parameter("bias", None)
    return m.double() if double else m


def reference(case, world, lib):
    """One process, the whole batch of every step: what the ranks' results concatenate to."""
    tensor = torch.from_numpy if lib is torch else fg.tensor
    kw = job.CASES[case][1]
    x0 = job.data(case, world, 0)[0]
    m = _bn(lib, x0.ndim, kw)
    if m.weight is not None:
        w, b = job.affine(case)
        with (torch.no_grad() if lib is torch else fg.no_grad()):
            m.weight.copy_(tensor(w))
            if m.bias is not None:
                m.bias.copy_(tensor(b))
    out = {}
    for step in range(job.STEPS):
        x, g, _ = job.data(case, world, step)
        xt = tensor(x.copy()).requires_grad_()
        y = m(xt)
        (y * tensor(g)).sum().backward()
        out[f"y{step}"], out[f"dx{step}"] = y.detach().numpy(), xt.grad.numpy()
        for name in ("weight", "bias"):
            p = getattr(m, name)
            if p is not None:
                out[f"d{name}{step}"] = p.grad.numpy().copy()
                p.grad = None
    if m.track_running_stats:
        out.update(running_mean=m.running_mean.numpy(), running_var=m.running_var.numpy(),
                   num_batches_tracked=np.asarray(m.num_batches_tracked.numpy()))
    m.eval()
    if m.track_running_stats:
        out["y_eval"] = m(tensor(x0)).detach().numpy()
    else:  # eval without running statistics: each rank normalises by its own rows (torch syncs only in training)
        sizes = job.data(case, world, 0)[2]
        out["y_eval"] = np.concatenate([m(tensor(job.rows(x0, sizes, r))).detach().numpy() for r in range(world)
                                        if sizes[r]])
    return out


def _check(ranks, prefix, case, ref, tol):
    for key, want in ref.items():
        got = [r[f"{prefix}{case}/{key}"] for r in ranks]
        if key.startswith(("y", "dx")):  # this rank's rows
            assert got[0].dtype == want.dtype, (case, key)
            np.testing.assert_allclose(np.concatenate(got), want, err_msg=(case, key), **tol)
        elif key.startswith("d"):  # weight / bias: each rank's share, which DDP's averaging sums
            np.testing.assert_allclose(sum(got), want, err_msg=(case, key), **tol)
        else:  # running statistics: the same on every rank
            for g in got:
                np.testing.assert_allclose(g, want, err_msg=(case, key), **tol)


@mpi
@pytest.mark.parametrize("case", list(job.CASES))
def test_ranks_equal_one_batchnorm_on_the_concatenated_batch(world, case):
    n, ranks, _ = world
    for lib in (fg, torch):
        _check(ranks, "", case, reference(case, n, lib), {"rtol": 1e-5, "atol": 2e-5})


@mpi
def test_a_subgroup_synchronises_only_its_ranks(world):
    n, ranks, _ = world
    if n != 3:  # only the 3-rank job makes a sub-group ([0, 2])
        assert not any(k.startswith("subgroup_") for r in ranks for k in r)
        return
    _check([ranks[0], ranks[2]], "subgroup_", "4d", reference("4d", 2, fg), {"rtol": 1e-5, "atol": 2e-5})
    assert "NON_GROUP_MEMBER" in str(ranks[1]["subgroup_error"]) and "global rank 1" in str(ranks[1]["subgroup_error"])
    assert ranks[0]["converted_group_ranks"].tolist() == [0, 2]


@mpi
def test_a_process_group_that_is_not_one_is_a_type_error(world):
    for r in world[1]:
        assert "process_group must be None (every rank) or a ProcessGroup" in str(r["bad_group_error"])


@mpi
def test_ddp_with_sync_batchnorm_trains_as_one_process(world):
    n, _, ddp = world
    for d in ddp[1:]:
        np.testing.assert_array_equal(d, ddp[0])  # parameters and running statistics identical on every rank
    model = job.ddp_model(sync=False)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(job.DDP_STEPS):
        x, y, _ = job.ddp_data(n, step)
        opt.zero_grad()
        F.cross_entropy(model(fg.tensor(x)), fg.tensor(y)).backward()
        opt.step()
    sd = model.state_dict()
    want = np.concatenate([sd[k].numpy().astype(np.float64).reshape(-1) for k in sorted(sd)])
    np.testing.assert_allclose(ddp[0], want, rtol=1e-5, atol=1e-5)


# ---- one process: no job, so no synchronisation -----------------------------------------------------------------
@pytest.mark.parametrize("shape,kw", [((6, 3, 4, 5), {"momentum": 0.2}), ((5, 3), {"momentum": None}),
                                      ((4, 3, 7), {"affine": False}), ((3, 3, 2, 2, 2), {"bias": False})])
def test_without_a_job_it_is_batchnorm_as_torch(shape, kw):
    """torch's SyncBatchNorm also falls back to batch_norm on the CPU when no process group is initialised."""
    rng = np.random.default_rng(0)
    m, t = nn.SyncBatchNorm(3, **kw), torch.nn.SyncBatchNorm(3, **kw)
    for step in range(2):
        x, g = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
        xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
        y, yt = m(xf), t(xt)
        (y * fg.tensor(g)).sum().backward()
        (yt * torch.from_numpy(g)).sum().backward()
        np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    for k, v in t.state_dict().items():
        np.testing.assert_allclose(m.state_dict()[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    for p, q in zip(m.parameters(), t.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-4)
    m.eval(), t.eval()
    np.testing.assert_allclose(m(fg.tensor(x)).numpy(), t(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_any_rank_from_2d_as_torch():
    x = np.random.default_rng(2).standard_normal((3, 2, 2, 3, 2, 2)).astype(np.float32)
    m, t = nn.SyncBatchNorm(2), torch.nn.SyncBatchNorm(2)
    xf, xt = fg.tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    y, yt = m(xf), t(xt)
    (y * y).sum().backward()
    (yt * yt).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(m.running_var.numpy(), t.running_var.numpy(), rtol=1e-5)


def test_module_surface_and_convert_sync_batchnorm_as_torch():
    m, t = nn.SyncBatchNorm(4, eps=1e-3, momentum=None), torch.nn.SyncBatchNorm(4, eps=1e-3, momentum=None)
    assert repr(m) == repr(t) and list(m.state_dict()) == list(t.state_dict())
    assert nn.SyncBatchNorm(4, bias=False).bias is None and list(nn.SyncBatchNorm(4, affine=False).state_dict()) == \
        list(torch.nn.SyncBatchNorm(4, affine=False).state_dict())
    assert nn.SyncBatchNorm(2, dtype=fg.float64).weight.dtype == fg.float64
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64)))
    tnet = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                               torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(64)))
    bn, weight = net[1], net[1].weight
    net[2][1].eval()
    out = nn.SyncBatchNorm.convert_sync_batchnorm(net, process_group="pg")
    tout = torch.nn.SyncBatchNorm.convert_sync_batchnorm(tnet)
    assert out is net and type(net[1]) is nn.SyncBatchNorm and type(net[2][1]) is nn.SyncBatchNorm
    assert list(out.state_dict()) == list(tout.state_dict())
    assert net[1].weight is weight and net[1].running_mean is bn.running_mean and net[1].process_group == "pg"
    assert net[1].training and not net[2][1].training
    single = nn.BatchNorm1d(5, affine=False)
    conv = nn.SyncBatchNorm.convert_sync_batchnorm(single)
    assert type(conv) is nn.SyncBatchNorm and conv is not single and conv.weight is None and not conv.affine
    # "pg" only marks what convert passes on: where an earlier test left a job initialised in this process, the
    # forward checks the group (a ProcessGroup or None)
    net[1].process_group = net[2][1].process_group = None
    y, ty = out(fg.randn(2, 3, 6, 6)), tout(torch.randn(2, 3, 6, 6))
    assert y.shape == tuple(ty.shape) and int(net[1].num_batches_tracked.item()) == 1


@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (5, 3, 4)), ("BatchNorm2d", (4, 3, 2, 5)),
                                       ("BatchNorm3d", (3, 3, 2, 2, 3))])
def test_batchnorm_takes_torch_2_13s_bias_device_and_dtype(cls, shape):
    """BatchNorm1d/2d/3d(..., device=None, dtype=None, *, bias=True) as torch 2.13 (SyncBatchNorm had them, the
    classes it converts from did not); convert_sync_batchnorm keeps bias=False."""
    x = np.random.default_rng(3).standard_normal(shape)
    for kw in ({"bias": False}, {"dtype": fg.float64}, {"bias": False, "momentum": None, "device": "cpu"}):
        tkw = {k: torch.float64 if v is fg.float64 else v for k, v in kw.items()}
        m, t = getattr(nn, cls)(3, **kw), getattr(torch.nn, cls)(3, **tkw)
        assert repr(m) == repr(t) and list(m.state_dict()) == list(t.state_dict())
        assert m.num_batches_tracked.dtype == fg.int64
        dt = np.float64 if "dtype" in kw else np.float32
        assert m.weight.dtype == dt and m.running_var.dtype == dt
        with fg.no_grad(), torch.no_grad():
            m.weight.copy_(fg.tensor(np.array([0.5, 1.5, 2.0], dt)))
            t.weight.copy_(torch.tensor([0.5, 1.5, 2.0]))
        xf, xt = fg.tensor(x.astype(dt), requires_grad=True), torch.tensor(x.astype(dt), requires_grad=True)
        y, yt = m(xf), t(xt)
        (y * y).sum().backward()
        (yt * yt).sum().backward()
        np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(m.weight.grad.numpy(), t.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(m.running_var.numpy(), t.running_var.numpy(), rtol=1e-5)
        s, ts = nn.SyncBatchNorm.convert_sync_batchnorm(m), torch.nn.SyncBatchNorm.convert_sync_batchnorm(t)
        assert repr(s) == repr(ts) and s.weight is m.weight and (s.bias is None) == ("bias" in kw)
    with pytest.raises(TypeError, match="bias must be a bool"):
        getattr(nn, cls)(3, bias="no")


def test_a_checkpoint_without_num_batches_tracked_loads_as_torchs():
    """torch's _NormBase fills a missing num_batches_tracked (checkpoints from before torch 0.4.1) with the module's
    own; the other keys stay required."""
    t = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.InstanceNorm1d(3, track_running_stats=True))
    t[0](torch.randn(4, 3, 5, 5))  # running statistics that are not the initial ones
    old = {k: v.numpy() for k, v in t.state_dict().items() if not k.endswith("num_batches_tracked")}
    for m, mt in ((nn.Sequential(nn.BatchNorm2d(3), nn.InstanceNorm1d(3, track_running_stats=True)),
                   torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.InstanceNorm1d(3, track_running_stats=True))),
                  (nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3), nn.Identity())),
                   torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3),
                                                                                     torch.nn.Identity())))):
        keys = [k for k in old if k in m.state_dict()]
        m.load_state_dict({k: old[k] for k in keys})
        mt.load_state_dict({k: torch.from_numpy(old[k]) for k in keys})
        for k, v in mt.state_dict().items():
            np.testing.assert_array_equal(m.state_dict()[k].numpy(), v.numpy(), err_msg=k)
        with pytest.raises(RuntimeError, match='Missing key.*"0.running_var"'):
            m.load_state_dict({k: old[k] for k in keys if k != "0.running_var"})


def test_bad_input_raises_clear_errors():
    m = nn.SyncBatchNorm(3)
    with pytest.raises(ValueError, match="expected at least 2D input"):
        m(fg.randn(3))
    with pytest.raises(ValueError, match="channels should be non-zero"):
        m(fg.randn(2, 0, 4))
    with pytest.raises(ValueError, match="expected 3 channels"):
        m(fg.randn(2, 4))
    with pytest.raises(TypeError, match="forgegrad.Tensor"):
        m(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        nn.SyncBatchNorm(0)
    with pytest.raises(TypeError, match="bias must be a bool"):
        nn.SyncBatchNorm(3, bias="no")
    with pytest.raises(TypeError, match="module must be a forgegrad.nn.Module"):
        nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="not been initialised"):
        nn.SyncBatchNorm.convert_sync_batchnorm(nn.LazyBatchNorm1d())


def test_eval_mode_exports_to_onnx_as_batchnorm(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from forgegrad import onnx
    fg.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4))
    m(fg.randn(4, 3, 8, 8))  # a training step, so the running statistics are not the initial ones
    m.eval()
    onnx.export(m, fg.randn(1, 3, 8, 8), str(tmp_path / "m.onnx"))
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, m(fg.tensor(x)).numpy(), rtol=1e-5, atol=1e-5)
