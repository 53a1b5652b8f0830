"""Which backward passes a distributed wrapper observes (distributed/_passes.py), in a one-rank MPI world: a wrapper
kept alive but unused does not observe, change or break a pass over an unrelated model, nor any pass another thread
runs over a graph that is not its own; a dropped wrapper is collected at once (no reference cycle) and takes its
hooks with it; its own passes, several before a step, still reduce."""
import gc
import threading
import weakref

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import autograd, nn, optim
from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


def _x(seed=0, n=4, d=5):
    return fg.tensor(np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))


def _net(seed=0):
    fg.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def _armed_wrappers():
    """DDP after a forward without backward, DistributedOptimizer after zero_grad(), ZeRO-2 as built, FSDP + ZeRO-3
    after a forward without backward: each is armed (its next pass ends a round, see _passes) and left unused."""
    import forgegrad.distributed as dist
    comm.init()
    ddp = dist.DistributedDataParallel(_net(1))
    ddp(_x())
    hvd = dist.DistributedOptimizer(optim.SGD(_net(2).parameters(), lr=0.1))
    hvd.zero_grad()
    zero = dist.ZeroRedundancyOptimizer(_net(3).parameters(), optim.SGD, stage=2, lr=0.1)
    fsdp = dist.FullyShardedDataParallel(_net(4))
    zero3 = dist.ZeroRedundancyOptimizer(fsdp.parameters(), optim.SGD, stage=3, lr=0.1)
    fsdp(_x())
    return ddp, hvd, zero, fsdp, zero3


def _state(ddp, hvd, zero, fsdp, zero3):
    return (ddp._reducer.rounds, ddp._reducer.armed, ddp._reducer.active, hvd._reducer.rounds, hvd._reducer.armed,
            zero._reducer.rounds_since_step, zero._reducer.armed, zero._reducer.active, list(fsdp._live),
            fsdp._gathered, fsdp._in_backward, zero3._reducer.rounds_since_step, zero3._reducer.active)


def _broken(wrappers):
    """Put every wrapper in a state in which any of its end-of-pass code fails (the CI failure: a reduction whose
    MPI request is gone), so that a pass that ran any of it fails; returns the undo."""
    ddp, hvd, zero, fsdp, zero3 = wrappers
    saved = []
    for r in (zero._reducer, zero3._reducer):
        unit = r.order[0][1]
        saved.append((r, r.active, list(r.in_flight), unit.request))
        r.active, r.in_flight, unit.request = True, [0], None
    for r in (ddp._reducer, hvd._reducer):
        saved.append((r, r.active, None, None))
        r.active = True  # wait() would read bucket.request.Test() on None

    def undo():
        for r, active, in_flight, request in saved:
            r.active = active
            if in_flight is not None:
                r.in_flight, r.order[0][1].request = in_flight, request
    return undo


def _plain_step(model, x):
    (model(x) ** 2).mean().backward()
    return [p.grad.numpy().copy() for p in model.parameters()]


def test_an_unused_wrapper_neither_observes_nor_breaks_a_pass_over_an_unrelated_model():
    wrappers = _armed_wrappers()
    before = _state(*wrappers)
    want = _plain_step(_net(9), _x(1))
    undo = _broken(wrappers)
    try:
        got = _plain_step(_net(9), _x(1))  # an unwrapped model's pass, in the thread that armed them
        other = _net(9)
        grads = autograd.grad((other(_x(1)) ** 2).mean(), list(other.parameters()))  # autograd.grad too
    finally:
        undo()
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(grads, want):
        np.testing.assert_array_equal(a.numpy(), b)
    assert _state(*wrappers) == before


def test_a_pass_from_another_thread_leaves_an_armed_wrapper_untouched():
    """A graph of plain tensors (no parameter): in the arming thread such a pass would be the wrapper's (a rank
    whose loss reaches none of its parameters); from another thread it is not, however the wrapper stands."""
    wrappers = _armed_wrappers()
    before = _state(*wrappers)
    undo = _broken(wrappers)
    out, errors = [], []

    def work():
        try:
            for _ in range(3):
                w = fg.tensor(np.arange(6, dtype=np.float32), requires_grad=True)
                (w * w).sum().backward()
                out.append(w.grad.numpy().tolist())
        except Exception as e:  # reported below: an exception in a thread does not fail the test by itself
            errors.append(e)

    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        undo()
    assert not errors, errors
    assert out == [[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]] * 12
    assert _state(*wrappers) == before


def test_an_armed_wrapper_still_joins_a_pass_of_its_thread_that_reaches_no_parameter():
    """The rank whose loss reaches none of the model's parameters (tests/test_distributed_unreached.py at 2 ranks):
    in the arming thread, a pass over plain tensors ends a round of zeros; a disarmed wrapper stays out."""
    ddp, hvd, zero, fsdp, zero3 = _armed_wrappers()
    rounds = ddp._reducer.rounds, hvd._reducer.rounds, zero._reducer.rounds_since_step
    fg.zeros(1, requires_grad=True).sum().backward()
    assert (ddp._reducer.rounds, hvd._reducer.rounds, zero._reducer.rounds_since_step) == \
        (rounds[0] + 1, rounds[1] + 1, rounds[2] + 1)
    assert not ddp._reducer.armed and not fsdp._in_backward and fsdp.gathered_bytes() == 0
    fg.zeros(1, requires_grad=True).sum().backward()
    assert ddp._reducer.rounds == rounds[0] + 1  # no forward since its round: not its pass


def test_a_dropped_wrapper_is_collected_at_once_with_its_hooks_and_observer():
    import forgegrad.distributed as dist
    comm.init()
    gc.collect()
    observers = sum(r() is not None for r in autograd._pass_observers)
    gc.disable()  # collected by reference counting alone: no cycle through the hooks
    try:
        net = _net(5)
        ddp = dist.DistributedDataParallel(net)
        hvd = dist.DistributedOptimizer(optim.SGD(net.parameters(), lr=0.1))
        zero = dist.ZeroRedundancyOptimizer(net.parameters(), optim.SGD, stage=2, lr=0.1)
        fsdp = dist.FullyShardedDataParallel(_net(6))
        zero3 = dist.ZeroRedundancyOptimizer(fsdp.parameters(), optim.SGD, stage=3, lr=0.1)
        (fsdp(_x()) ** 2).mean().backward()
        zero3.step()
        refs = [weakref.ref(o) for o in (ddp, ddp._reducer, hvd._reducer, zero._reducer, fsdp, zero3._reducer)]
        ddp(_x())
        del ddp, hvd, zero, fsdp, zero3
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        gc.enable()
    assert all(not getattr(p, "_post_hooks", None) for p in net.parameters())  # its hooks went with it
    fg.zeros(1, requires_grad=True).sum().backward()  # prunes the dead observers
    assert len(autograd._pass_observers) == observers  # only the live ones of earlier tests
    g = _plain_step(net, _x(2))  # the plain model trains alone again
    assert all(np.isfinite(a).all() for a in g)


def test_ddp_accumulates_over_passes_while_another_thread_runs_backward():
    """Two passes (one under no_sync) before step(), an unrelated backward from another thread between them: the
    same parameters as plain SGD over the summed gradients."""
    import forgegrad.distributed as dist
    comm.init()
    ref, model = _net(7), dist.DistributedDataParallel(_net(7))
    ref_opt, opt = optim.SGD(ref.parameters(), lr=0.1), optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        for net, o in ((ref, ref_opt), (model, opt)):
            o.zero_grad()
            if net is model:
                with model.no_sync():
                    (net(_x(step)) ** 2).mean().backward()
            else:
                (net(_x(step)) ** 2).mean().backward()
            t = threading.Thread(target=lambda: (fg.ones(3, requires_grad=True) * 2).sum().backward())
            t.start()
            t.join()
            (net(_x(step + 10)) ** 2).mean().backward()
            o.step()
    for a, b in zip(model.module.parameters(), ref.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert model._reducer.rounds == 2
