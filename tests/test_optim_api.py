"""forgegrad.optim API: state_dict (ours and torch's), error paths, kernel-level checks,
and nn.utils.clip_grad_norm_ / clip_grad_value_ against torch."""
import copy
import math

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import optim
from forgegrad.kernels import optim as kopt
from forgegrad.nn import Parameter
from forgegrad.nn import utils as nn_utils

from test_optim import RTOL, ATOL, SHAPES, assert_params_close, make_params, set_grads

STATE_CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, betas=(0.8, 0.99))),
]


def _grad_seq(rng, shapes, n):
    return [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(n)]


def _apply(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = fg.tensor(g.copy())
    opt.step()


# ---- state_dict ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,config", STATE_CASES)
def test_state_dict_round_trip_is_bit_identical(rng, name, config):
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    seq = _grad_seq(rng, SHAPES, 8)
    a = [Parameter(x.copy()) for x in init]
    opt_a = getattr(optim, name)(a, **config)
    for gs in seq:
        _apply(opt_a, a, gs)

    b = [Parameter(x.copy()) for x in init]
    opt_b = getattr(optim, name)(b, **config)
    for gs in seq[:4]:
        _apply(opt_b, b, gs)
    saved = copy.deepcopy(opt_b.state_dict())
    assert sorted(saved["state"]) == list(range(len(SHAPES)))
    assert saved["param_groups"][0]["params"] == list(range(len(SHAPES)))
    c = [Parameter(p._data.copy()) for p in b]
    opt_c = getattr(optim, name)(c, lr=123.0)
    opt_c.load_state_dict(saved)
    assert opt_c.param_groups[0]["lr"] == config["lr"]
    assert opt_c.param_groups[0]["params"][0] is c[0]
    for gs in seq[4:]:
        _apply(opt_c, c, gs)
    for x, y in zip(a, c):
        np.testing.assert_array_equal(x._data, y._data)


def _torch_sd_to_numpy(sd):
    return {"state": {k: {n: (v.numpy() if isinstance(v, torch.Tensor) else v) for n, v in s.items()}
                      for k, s in sd["state"].items()},
            "param_groups": copy.deepcopy(sd["param_groups"])}


@pytest.mark.parametrize("name,config", STATE_CASES)
def test_load_torch_state_dict_then_continue(rng, name, config):
    ours, theirs = make_params(rng)
    topt = getattr(torch.optim, name)(theirs, **config)
    for _ in range(5):
        set_grads(rng, ours, theirs)
        topt.step()
    for p, tp in zip(ours, theirs):
        p._data[...] = tp.detach().numpy()
    opt = getattr(optim, name)(ours, lr=1.0)
    opt.load_state_dict(_torch_sd_to_numpy(topt.state_dict()))
    assert opt.param_groups[0]["lr"] == config["lr"]
    for step in range(10):
        set_grads(rng, ours, theirs)
        opt.step()
        topt.step()
        assert_params_close(ours, theirs, step)


@pytest.mark.parametrize("name,config", STATE_CASES)
def test_torch_loads_our_state_dict(rng, name, config):
    ours, theirs = make_params(rng)
    opt = getattr(optim, name)(ours, **config)
    for _ in range(5):
        set_grads(rng, ours, theirs)
        opt.step()
    for p, tp in zip(ours, theirs):
        with torch.no_grad():
            tp.copy_(torch.from_numpy(p._data.copy()))
    sd = opt.state_dict()
    tsd = {"state": {k: {n: torch.tensor(np.array(v._data)) for n, v in s.items()} for k, s in sd["state"].items()},
           "param_groups": copy.deepcopy(sd["param_groups"])}
    topt = getattr(torch.optim, name)(theirs, lr=1.0)
    topt.load_state_dict(tsd)
    for step in range(5):
        set_grads(rng, ours, theirs)
        opt.step()
        topt.step()
        assert_params_close(ours, theirs, step)


def test_load_state_dict_mismatches():
    p, q = Parameter(np.ones(3, np.float32)), Parameter(np.ones(4, np.float32))
    opt = optim.Adam([p, q])
    one_group = optim.Adam([p]).state_dict()
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict(one_group)
    two_groups = optim.Adam([{"params": [p]}, {"params": [q]}]).state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict(two_groups)
    bad = opt.state_dict()
    bad = {"state": {0: {"step": np.float32(1), "exp_avg": np.zeros(5, np.float32)}},
           "param_groups": bad["param_groups"]}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)


# ---- constructor and hyper-parameter errors -----------------------------------------------------
def _p():
    return Parameter(np.ones(3, np.float32))


@pytest.mark.parametrize("make,message", [
    (lambda: optim.SGD([_p()], lr=-1), "Invalid learning rate: -1"),
    (lambda: optim.SGD([_p()], momentum=-0.1), "Invalid momentum value: -0.1"),
    (lambda: optim.SGD([_p()], weight_decay=-1e-3), "Invalid weight_decay value"),
    (lambda: optim.SGD([_p()], nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: optim.SGD([_p()], momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda: optim.Adam([_p()], lr=-1), "Invalid learning rate: -1"),
    (lambda: optim.Adam([_p()], eps=-1.0), "Invalid epsilon value: -1.0"),
    (lambda: optim.Adam([_p()], betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (lambda: optim.Adam([_p()], betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    (lambda: optim.AdamW([_p()], weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    (lambda: optim.Adam([]), "optimizer got an empty parameter list"),
    (lambda: optim.SGD([{"params": []}]), "optimizer got an empty parameter list"),
    (lambda: optim.Adam([{"params": [_p()], "lr": -0.5}]), "Invalid learning rate: -0.5"),
])
def test_bad_hyper_parameters(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_bad_params():
    with pytest.raises(TypeError, match="can only optimize forgegrad Tensors.*numpy.ndarray"):
        optim.SGD([np.ones(3, np.float32)], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize forgegrad Tensors.*torch"):
        optim.Adam([torch.nn.Parameter(torch.ones(3))])
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        optim.SGD(_p(), lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        optim.SGD(3, lr=0.1)
    with pytest.raises(TypeError, match="sets"):
        optim.SGD([{"params": {_p()}}], lr=0.1)
    with pytest.raises(TypeError, match="float32"):
        optim.SGD([fg.tensor(np.arange(3))], lr=0.1)
    p = _p()
    with pytest.raises(ValueError, match="duplicate"):
        optim.SGD([p, p], lr=0.1)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [p]})
    with pytest.raises(TypeError, match="param_group must be a dict"):
        opt.add_param_group([p])
    x = Parameter(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([x * 2], lr=0.1)


def test_named_parameters_are_accepted():
    model = fg.nn.Linear(3, 2)
    opt = optim.SGD(model.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert opt.param_groups[0]["params"][0] is model.weight


# ---- kernel-level checks (numpy API) --------------------------------------------------------------
def _adam_args(n=5):
    p, g, m, v = (np.zeros(n, np.float32) for _ in range(4))
    return p, g, m, v


def _adam(p, g, m, v, mx=None, steps=(1.0,)):
    kopt.adam_step([p], [g], [m], [v], None if mx is None else [mx], list(steps), lr=0.1, beta1=0.9, beta2=0.999,
                   eps=1e-8)


def test_kernel_argument_errors():
    p, g, m, v = _adam_args()
    with pytest.raises(TypeError, match=r"grads\[0\] must be a float32 array, got dtype float64"):
        _adam(p, g.astype(np.float64), m, v)
    with pytest.raises(TypeError, match=r"params\[0\] must be a numpy float32 array, got list"):
        _adam([0.0] * 5, g, m, v)
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] must have shape \(5,\), got \(6,\)"):
        _adam(p, g, np.zeros(6, np.float32), v)
    with pytest.raises(ValueError, match=r"exp_avg_sqs\[0\] must have shape"):
        _adam(p, g, m, np.zeros((5, 1), np.float32))
    ro = np.zeros(5, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] must be writeable"):
        _adam(ro, g, m, v)
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] must be writeable"):
        _adam(p, g, ro, v)
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] must be C-contiguous"):
        _adam(p, g, np.zeros(10, np.float32)[::2], v)
    with pytest.raises(ValueError, match="share memory"):
        _adam(p, g, p, v)
    big = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        _adam(big[:5], g, big[3:8], v)
    with pytest.raises(ValueError, match="steps must have 1 entries"):
        _adam(p, g, m, v, steps=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"steps\[0\] must be >= 1"):
        _adam(p, g, m, v, steps=(0.0,))
    with pytest.raises(ValueError, match=r"bias_correction2_sqrts\[0\] must be > 0"):
        fg._C.optim.adam_step([p], [g], [m], [v], None, [0.1], [0.0], beta1=0.9, beta2=0.999, eps=1e-8, lr=0.1,
                              weight_decay=0.0, decoupled=False, maximize=False)
    with pytest.raises(TypeError, match="params must be a list"):
        kopt.adam_step(p, [g], [m], [v], None, [1.0], lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    with pytest.raises(ValueError, match="grads must have 1 entries"):
        kopt.adam_step([p], [g, g], [m], [v], None, [1.0], lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    with pytest.raises(ValueError, match="momentum_buffers are required"):
        kopt.sgd_step([p], [g], None, [], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"momentum_buffers\[0\] must have shape"):
        kopt.sgd_step([p], [g], [np.zeros(4, np.float32)], [True], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="kind must be"):
        fg._C.optim.norms([p], "l3")


def test_kernel_zero_size_and_empty_lists():
    p, g, m, v = _adam_args(0)
    _adam(p, g, m, v)
    kopt.adam_step([], [], [], [], None, [], lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    kopt.sgd_step([], [], None, [], lr=0.1)
    assert kopt.vector_norms([p], 2) == [0.0]


def test_gradient_with_wrong_shape_is_rejected():
    p = _p()
    p.grad = fg.tensor(np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"grads\[0\] must have shape \(3,\), got \(4,\)"):
        optim.Adam([p]).step()
    p.grad = fg.tensor(np.ones(3, np.float64), dtype=np.float64)
    with pytest.raises(TypeError, match=r"grads\[0\] must be a float32 array"):
        optim.SGD([p], lr=0.1, momentum=0.9).step()


# ---- clip_grad_norm_ / clip_grad_value_ -------------------------------------------------------------
def _grad_pairs(rng, scale=1.0, shapes=SHAPES):
    ours, theirs = make_params(rng, shapes)
    for p, tp in zip(ours, theirs):
        g = (scale * rng.standard_normal(p.shape)).astype(np.float32)
        p.grad = fg.tensor(g.copy())
        tp.grad = torch.tensor(g.copy())
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5])
@pytest.mark.parametrize("max_norm", [0.5, 1e4])
def test_clip_grad_norm_matches_torch(simd_path, rng, norm_type, max_norm):
    ours, theirs = _grad_pairs(rng)
    total = nn_utils.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(total, fg.Tensor) and total.shape == ()
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=RTOL)
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.grad._data, tp.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_clip_grad_norm_skips_missing_grads_and_accepts_one_tensor(rng):
    ours, theirs = _grad_pairs(rng)
    ours[1].grad, theirs[1].grad = None, None
    total = nn_utils.clip_grad_norm_(ours, 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=RTOL)
    one = nn_utils.clip_grad_norm_(ours[0], 0.1)
    tone = torch.nn.utils.clip_grad_norm_(theirs[0], 0.1)
    np.testing.assert_allclose(one.item(), tone.item(), rtol=RTOL)
    assert nn_utils.clip_grad_norm_([Parameter(np.ones(2, np.float32))], 1.0).item() == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clip_grad_norm_nonfinite(rng, bad, norm_type):
    ours, theirs = _grad_pairs(rng)
    ours[2].grad._data.flat[3] = bad
    theirs[2].grad[1, 0] = bad
    before = ours[0].grad._data.copy()
    with pytest.raises(RuntimeError, match="non-finite"):
        nn_utils.clip_grad_norm_(ours, 1.0, norm_type=norm_type, error_if_nonfinite=True)
    np.testing.assert_array_equal(ours[0].grad._data, before)  # nothing scaled
    total = nn_utils.clip_grad_norm_(ours, 1.0, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type=norm_type)
    assert (math.isnan(total.item()) and math.isnan(ttotal.item())) or total.item() == ttotal.item()


def test_inf_norm_finds_nan_next_to_inf():
    g = np.zeros(40000, np.float32)
    g[100] = np.inf
    g[30000] = np.nan
    assert math.isnan(kopt.vector_norms([g], math.inf)[0])
    g[30000] = -5
    assert kopt.vector_norms([g], math.inf)[0] == math.inf


def test_norms_bit_identical_across_thread_counts(threads, rng):
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(1_000_003,), (17,), (300, 1001)]]
    for norm_type in (1.0, 2.0, math.inf):
        results = []
        for nt in (1, 2, 3):
            threads(nt)
            results.append(kopt.vector_norms(arrays, norm_type))
        assert results[0] == results[1] == results[2]
        ref = [np.linalg.norm(a.astype(np.float64).ravel(), norm_type) for a in arrays]
        np.testing.assert_allclose(results[0], ref, rtol=1e-7)


def test_clip_grad_value_matches_torch(rng):
    ours, theirs = _grad_pairs(rng, scale=2.0)
    nn_utils.clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, tp in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad._data, tp.grad.numpy())


def test_kernel_lists_with_empty_tensors_match_one_by_one(rng):
    shapes = [(0,), (5,), (0, 3), (20000,), (0,), (7, 3)]
    def arrays():
        r = np.random.default_rng(3)
        return [[r.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(4)]
    p1, g1, m1, v1 = arrays()
    p2, g2, m2, v2 = arrays()
    kw = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
    kopt.adam_step(p1, g1, m1, v1, None, [3.0] * len(shapes), **kw)
    for i in range(len(shapes)):
        kopt.adam_step([p2[i]], [g2[i]], [m2[i]], [v2[i]], None, [3.0], **kw)
    for a, b in zip(p1 + m1 + v1, p2 + m2 + v2):
        np.testing.assert_array_equal(a, b)
    norms = kopt.vector_norms(g1, 2)
    assert norms == [kopt.vector_norms([g], 2)[0] for g in g1]
    assert norms[0] == 0.0 and norms[2] == 0.0


def test_optimizer_step_pre_hooks_run_before_each_outermost_step_until_removed():
    """torch's register_optimizer_step_pre_hook: hook(optimizer, args, kwargs) before every optimizer's
    step(), subclasses that define their own step included; a step() inside another runs none."""
    from forgegrad.optim.optimizer import register_optimizer_step_pre_hook

    class Wrapper(optim.Optimizer):
        def __init__(self, inner):
            super().__init__(inner.param_groups[0]["params"], {})
            self.inner = inner

        def step(self, closure=None):
            return self.inner.step(closure)

    p = Parameter(fg.zeros(3))
    p.grad = fg.ones(3)
    calls = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: calls.append(
        (type(opt).__name__, args, kwargs, p._data.copy())))
    try:
        optim.SGD([p], lr=0.5).step()
        Wrapper(optim.Adam([p], lr=0.1)).step()
        optim.LBFGS([p], max_iter=1).step(closure=lambda: (p * 0).sum())
    finally:
        handle.remove()
    optim.SGD([p], lr=0.5).step()
    assert [c[0] for c in calls] == ["SGD", "Wrapper", "LBFGS"]
    np.testing.assert_array_equal(calls[0][3], 0.0)  # before the update
    np.testing.assert_array_equal(calls[1][3], -0.5)
    assert "closure" in calls[2][2]
    with pytest.raises(TypeError, match="hook must be callable"):
        register_optimizer_step_pre_hook(3)


def test_optimizer_step_pre_hooks_run_for_a_step_while_another_thread_is_stepping():
    """A step() in progress on one thread (here waiting in its closure) is no outer step of another
    thread's: that thread's step() runs the hooks too."""
    import threading

    from forgegrad.optim.optimizer import register_optimizer_step_pre_hook

    p, q = Parameter(fg.zeros(2)), Parameter(fg.zeros(2))
    p.grad, q.grad = fg.ones(2), fg.ones(2)
    inside, release = threading.Event(), threading.Event()

    def closure():
        inside.set()
        release.wait(10)

    calls = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: calls.append(opt))
    other = optim.SGD([q], lr=0.1)
    try:
        first = optim.SGD([p], lr=0.1)
        t = threading.Thread(target=first.step, args=(closure,))
        t.start()
        assert inside.wait(10)
        other.step()  # while first.step() is still running on the other thread
        release.set()
        t.join(10)
    finally:
        release.set()
        handle.remove()
    assert calls[0] is first and calls[1:] == [other]
