"""forgegrad.optim SGD / Adam / AdamW against torch.optim, step for step, on every SIMD path."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import optim
from forgegrad.nn import Parameter

# Odd shapes: a scalar-like parameter, primes, sizes that are not multiples of 8 or 16, and one
# that spans several kernel blocks (8192 elements) with a ragged tail.
SHAPES = [(1,), (7,), (13, 5), (3, 17, 2), (2, 8197)]
STEPS = 20
RTOL, ATOL = 1e-5, 1e-6

SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.1, maximize=True),
    dict(lr=0.01, weight_decay=0.1, maximize=True),
]
ADAM_CONFIGS = [
    dict(),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, amsgrad=True),
    # beta1 < 0.5 takes the other branch of torch's lerp (end + (w - 1) * (end - start))
    dict(lr=0.01, betas=(0.3, 0.9), eps=1e-6, maximize=True),
    dict(lr=0.02, weight_decay=0.05, amsgrad=True, maximize=True),
]
ADAMW_CONFIGS = [
    dict(),
    dict(lr=0.01, weight_decay=0.1, amsgrad=True),
    dict(lr=0.01, betas=(0.5, 0.99), maximize=True),
]
CASES = ([("SGD", c) for c in SGD_CONFIGS] + [("Adam", c) for c in ADAM_CONFIGS]
         + [("AdamW", c) for c in ADAMW_CONFIGS])


def make_params(rng, shapes=SHAPES):
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ours = [Parameter(a.copy()) for a in arrays]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in arrays]
    return ours, theirs


def set_grads(rng, ours, theirs, skip=()):
    for i, (p, tp) in enumerate(zip(ours, theirs)):
        if i in skip:
            p.grad, tp.grad = None, None
            continue
        g = rng.standard_normal(p.shape).astype(np.float32)
        p.grad = fg.tensor(g.copy())
        tp.grad = torch.tensor(g.copy())


def assert_params_close(ours, theirs, step):
    for i, (p, tp) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(p._data, tp.detach().numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"param {i} after step {step}")


def assert_state_close(opt, topt, ours, theirs):
    for p, tp in zip(ours, theirs):
        s, ts = opt.state[p], topt.state[tp]
        assert set(s) == set(ts)
        for k in ts:
            if ts[k] is None:
                assert s[k] is None
                continue
            np.testing.assert_allclose(np.asarray(s[k]._data), ts[k].numpy(), rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("name,config", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_torch_step_for_step(simd_path, rng, name, config):
    ours, theirs = make_params(rng)
    opt = getattr(optim, name)(ours, **config)
    topt = getattr(torch.optim, name)(theirs, **config)
    for step in range(STEPS):
        set_grads(rng, ours, theirs)
        opt.step()
        topt.step()
        assert_params_close(ours, theirs, step)
    assert_state_close(opt, topt, ours, theirs)


@pytest.mark.parametrize("name,config", [("SGD", SGD_CONFIGS[3]), ("Adam", ADAM_CONFIGS[4]),
                                         ("AdamW", ADAMW_CONFIGS[1])])
def test_params_without_grad_are_skipped_and_steps_count_per_param(rng, name, config):
    ours, theirs = make_params(rng)
    opt = getattr(optim, name)(ours, **config)
    topt = getattr(torch.optim, name)(theirs, **config)
    frozen = ours[1]._data.copy()
    for step in range(12):
        # param 1 never has a grad; param 2 only every third step (its own step count lags)
        skip = {1} | ({2} if step % 3 else set())
        set_grads(rng, ours, theirs, skip=skip)
        opt.step()
        topt.step()
        assert_params_close(ours, theirs, step)
    np.testing.assert_array_equal(ours[1]._data, frozen)
    assert ours[1] not in opt.state
    if name != "SGD":
        assert float(opt.state[ours[2]]["step"].item()) == 4.0
        assert float(opt.state[ours[0]]["step"].item()) == 12.0
    assert_state_close(opt, topt, [ours[0], ours[2]], [theirs[0], theirs[2]])


def test_param_groups_and_add_param_group_match_torch(rng):
    ours, theirs = make_params(rng)
    opt = optim.Adam([{"params": ours[:2]}, {"params": ours[2:4], "lr": 0.05, "amsgrad": True}], lr=0.01)
    topt = torch.optim.Adam([{"params": theirs[:2]}, {"params": theirs[2:4], "lr": 0.05, "amsgrad": True}], lr=0.01)
    for step in range(10):
        if step == 4:
            opt.add_param_group({"params": [ours[4]], "weight_decay": 0.1})
            topt.add_param_group({"params": [theirs[4]], "weight_decay": 0.1})
        set_grads(rng, ours, theirs)
        opt.step()
        topt.step()
        assert_params_close(ours, theirs, step)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.05, 0.01]


@pytest.mark.parametrize("name,config", [("SGD", SGD_CONFIGS[2]), ("Adam", ADAM_CONFIGS[4]),
                                         ("AdamW", ADAMW_CONFIGS[1])])
def test_foreach_false_is_bit_identical(rng, name, config):
    a, _ = make_params(rng)
    b = [Parameter(p._data.copy()) for p in a]
    opt_a = getattr(optim, name)(a, **config)
    opt_b = getattr(optim, name)(b, **config, foreach=False)
    for _ in range(5):
        for p, q in zip(a, b):
            g = rng.standard_normal(p.shape).astype(np.float32)
            p.grad, q.grad = fg.tensor(g.copy()), fg.tensor(g.copy())
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p._data, q._data)


@pytest.mark.parametrize("name,config", [("SGD", SGD_CONFIGS[3]), ("Adam", ADAM_CONFIGS[4]),
                                         ("AdamW", ADAMW_CONFIGS[1])])
def test_bit_identical_across_thread_counts(threads, rng, name, config):
    # 330 kB-sized params: several blocks each, so 2 and 3 threads really split the work.
    shapes = [(301, 701), (3, 17), (65537,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    results = []
    for nt in (1, 2, 3):
        threads(nt)
        params = [Parameter(a.copy()) for a in init]
        opt = getattr(optim, name)(params, **config)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = fg.tensor(g.copy())
            opt.step()
        results.append([p._data.copy() for p in params])
    for r in results[1:]:
        for x, y in zip(results[0], r):
            np.testing.assert_array_equal(x, y)


def test_non_contiguous_param_and_grad(rng):
    base = rng.standard_normal((9, 14)).astype(np.float32)
    p = Parameter(np.asfortranarray(base))  # column-major storage
    tp = torch.nn.Parameter(torch.tensor(base.copy()))
    opt = optim.Adam([p], lr=0.01, amsgrad=True)
    topt = torch.optim.Adam([tp], lr=0.01, amsgrad=True)
    for step in range(5):
        g = rng.standard_normal((14, 9)).astype(np.float32)
        p.grad = fg.Tensor._wrap(g.T)  # a transposed (non-contiguous) view
        tp.grad = torch.tensor(g.T.copy())
        opt.step()
        topt.step()
        np.testing.assert_allclose(p._data, tp.detach().numpy(), rtol=RTOL, atol=ATOL)
    assert not p._data.flags.c_contiguous  # updated in place through its own layout


def test_step_with_closure_returns_loss():
    w = Parameter(np.array([1.0, -2.0], np.float32))
    opt = optim.SGD([w], lr=0.1)
    calls = []

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        calls.append(1)
        return loss

    loss = opt.step(closure)
    assert calls == [1]
    np.testing.assert_allclose(float(loss.item()), 5.0)
    np.testing.assert_allclose(w._data, [0.8, -1.6], rtol=1e-6)


def test_zero_grad():
    w = Parameter(np.ones(3, np.float32))
    opt = optim.SGD([w], lr=0.1)
    w.grad = fg.tensor(np.ones(3, np.float32))
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(w.grad._data, 0)
    opt.zero_grad()
    assert w.grad is None


def test_training_a_small_mlp_lowers_the_loss(rng):
    model = fg.nn.Sequential(fg.nn.Linear(4, 16), fg.nn.ReLU(), fg.nn.Linear(16, 1))
    opt = optim.AdamW(model.parameters(), lr=0.01)
    x = fg.tensor(rng.standard_normal((64, 4)).astype(np.float32))
    y = fg.tensor((x._data.sum(axis=1, keepdims=True) ** 2).astype(np.float32))
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = fg.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("name,config", [("SGD", SGD_CONFIGS[2]), ("SGD", SGD_CONFIGS[3]), ("Adam", ADAM_CONFIGS[4]),
                                         ("AdamW", ADAMW_CONFIGS[1])])
def test_step_streaming_from_memory_is_bit_identical_to_cached_steps(simd_path, threads, rng, name, config):
    # One step over > 2**21 elements runs, in the AVX-512 build, the 256-bit loop (a stream from DRAM);
    # each parameter alone (< 2**21) runs the 512-bit one: the same bits, and torch's values.
    shapes = [(1_500_001,), (700, 1001)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    for nt in (1, 2):
        threads(nt)
        together = [Parameter(a.copy()) for a in init]
        alone = [Parameter(a.copy()) for a in init]
        opts = [getattr(optim, name)(together, **config)] + [getattr(optim, name)([p], **config) for p in alone]
        for gs in grads:
            for ps in (together, alone):
                for p, g in zip(ps, gs):
                    p.grad = fg.tensor(g.copy())
            for opt in opts:
                opt.step()
        for x, y in zip(together, alone):
            np.testing.assert_array_equal(x._data, y._data)
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in init]
    topt = getattr(torch.optim, name)(theirs, **config)
    for gs in grads:
        for p, g in zip(theirs, gs):
            p.grad = torch.tensor(g.copy())
        topt.step()
    assert_params_close(together, theirs, len(grads))
