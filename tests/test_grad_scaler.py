"""forgegrad.amp.GradScaler against torch.amp.GradScaler("cpu"): a float16 autocast training loop whose scale
backs off on overflowing gradients and grows after clean steps (the same scales, growth trackers, skipped steps and
parameters), unscaling bit for bit, the per-iteration rules and their errors, state_dict, a disabled scaler."""
import numpy as np
import pytest
import torch

import forgegrad as fg


def _pair(rng, shapes):
    """The same float32 parameters as forgegrad and torch leaves."""
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    return ([fg.nn.Parameter(fg.tensor(a.copy())) for a in arrays],
            [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays])


def _mlp(lib, weights):
    w1, b1, w2, b2 = weights

    def forward(x):
        return lib.nn.functional.linear(lib.relu(lib.nn.functional.linear(x, w1, b1)), w2, b2)
    return forward


def test_float16_autocast_loop_matches_torch(rng):
    fps, tps = _pair(rng, [(13, 7), (13,), (5, 13), (5,)])
    x = rng.standard_normal((9, 7)).astype(np.float32)
    y = rng.integers(0, 5, 9)
    runs = []
    for lib, ps in ((fg, fps), (torch, tps)):
        opt = lib.optim.SGD(ps, lr=0.05, momentum=0.9)
        # 2**20 overflows float16 gradients for a few iterations (backoff), growth_interval 3 then grows it
        scaler = lib.amp.GradScaler("cpu", init_scale=2.0 ** 20, growth_interval=3)
        f = _mlp(lib, ps)
        history = []
        for _ in range(12):
            opt.zero_grad()
            with lib.autocast("cpu", dtype=lib.float16):
                out = f(lib.from_numpy(x))
                loss = lib.nn.functional.cross_entropy(out, lib.from_numpy(y))
            assert out.dtype == lib.float16 and loss.dtype == lib.float32
            scaler.scale(loss).backward()
            before = [p.detach().numpy().copy() for p in ps]
            scaler.step(opt)
            stepped = not all(np.array_equal(b, p.detach().numpy()) for b, p in zip(before, ps))
            scaler.update()
            history.append((scaler.get_scale(), scaler._get_growth_tracker(), stepped))
        runs.append((history, [p.detach().numpy() for p in ps]))
    (fh, fw), (th, tw) = runs
    assert fh == th
    assert any(not s for _, _, s in fh) and any(s for _, _, s in fh)  # both skipped and taken steps
    scales = [s for s, _, _ in fh]
    assert any(b < a for a, b in zip(scales, scales[1:])) and any(b > a for a, b in zip(scales, scales[1:]))
    for a, b in zip(fw, tw):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("bad", [None, np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_unscale_is_torchs_bits_and_finds_infs(rng, bad, dtype):
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")
    grads = [rng.standard_normal(s).astype(np.float32) * 3e4 for s in ((4, 6), (6,))]
    if bad is not None:
        grads[1][2] = bad
    results = []
    for lib in (fg, torch):
        dt = getattr(lib, dtype)
        ps = [lib.zeros(g.shape, dtype=dt).requires_grad_() for g in grads]
        for p, g in zip(ps, grads):
            p.grad = lib.from_numpy(g.copy()).to(dt)
        opt = lib.optim.SGD(ps, lr=1.0)
        scaler = lib.amp.GradScaler("cpu", init_scale=3.0)  # 1/3: a rounded reciprocal
        scaler.scale(lib.ones(()))
        scaler.unscale_(opt)
        got = [p.grad.float().numpy().copy() for p in ps]
        scaler.step(opt)
        scaler.update()
        results.append((got, [p.detach().float().numpy() for p in ps], scaler.get_scale(),
                        scaler._get_growth_tracker()))
    (fg_g, fg_p, fg_s, fg_t), (t_g, t_p, t_s, t_t) = results
    for a, b in zip(fg_g + fg_p, t_g + t_p):
        np.testing.assert_array_equal(a, b)
    assert (fg_s, fg_t) == (t_s, t_t) == ((1.5, 0) if bad is not None else (3.0, 1))


def test_scale_keeps_dtype_and_structure():
    scaler = fg.amp.GradScaler("cpu", init_scale=4.0)
    h = fg.ones(3, dtype=fg.float16)
    out = scaler.scale([h, (fg.ones(2),)])
    assert isinstance(out, list) and isinstance(out[1], tuple)
    assert out[0].dtype == fg.float16 and out[0].tolist() == [4.0] * 3 and out[1][0].tolist() == [4.0, 4.0]
    assert list(map(lambda t: t.tolist(), scaler.scale(iter([fg.ones(1)])))) == [[4.0]]
    with pytest.raises(ValueError, match="outputs must be a Tensor"):
        scaler.scale(3.0)


def test_rules_between_updates_raise_as_torchs():
    for lib in (fg, torch):
        p = lib.nn.Parameter(lib.ones(3))
        p.grad = lib.ones(3)
        opt = lib.optim.SGD([p], lr=0.1)
        scaler = lib.amp.GradScaler("cpu")
        with pytest.raises(AssertionError, match="Attempted unscale_ but _scale is None"):
            scaler.unscale_(opt)
        scaler.scale(lib.ones(()))
        scaler.unscale_(opt)
        with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called"):
            scaler.unscale_(opt)
        with pytest.raises(RuntimeError, match="Closure use is not currently supported"):
            scaler.step(opt, closure=lambda: 0.0)
        scaler.step(opt)
        with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
            scaler.step(opt)
        with pytest.raises(RuntimeError, match="unscale_\\(\\) is being called after step"):
            scaler.unscale_(opt)
        scaler.update()
        with pytest.raises(AssertionError, match="No inf checks were recorded prior to update"):
            scaler.update()
        scaler.update(new_scale=8.0)
        assert scaler.get_scale() == 8.0
        scaler.update(lib.tensor(0.25))
        assert scaler.get_scale() == 0.25
        h = lib.ones(2, dtype=lib.float16).requires_grad_()
        h.grad = lib.ones(2, dtype=lib.float16)
        with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
            scaler.unscale_(lib.optim.SGD([h], lr=0.1))
        with pytest.raises(AssertionError, match="growth factor must be > 1.0"):
            lib.amp.GradScaler("cpu", growth_factor=1.0)
        with pytest.raises(AssertionError, match="backoff factor must be < 1.0"):
            lib.amp.GradScaler("cpu", backoff_factor=1.0)


def test_state_dict_round_trip_and_disabled_scaler():
    states = []
    for lib in (fg, torch):
        s = lib.amp.GradScaler("cpu", init_scale=128.0, growth_factor=3.0, backoff_factor=0.25, growth_interval=7)
        states.append(s.state_dict())
        s.scale(lib.ones(()))
        p = lib.nn.Parameter(lib.ones(2))
        p.grad = lib.ones(2)
        s.step(lib.optim.SGD([p], lr=0.1))
        s.update()
        states.append(s.state_dict())
        t = lib.amp.GradScaler("cpu")
        t.load_state_dict(s.state_dict())
        states.append(t.state_dict())
        off = lib.amp.GradScaler("cpu", enabled=False)
        x = lib.ones(2)
        assert off.scale(x) is x and off.get_scale() == 1.0 and off.state_dict() == {} and not off.is_enabled()
        with pytest.raises(RuntimeError, match="source state dict is empty"):
            t.load_state_dict({})
    assert states[:3] == states[3:]
    assert states[1] == {"scale": 128.0, "growth_factor": 3.0, "backoff_factor": 0.25, "growth_interval": 7,
                         "_growth_tracker": 1}
    with pytest.raises(ValueError, match="device='meta'"):
        fg.amp.GradScaler("meta")
