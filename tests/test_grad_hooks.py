"""Tensor.register_post_accumulate_grad_hook and autograd.queue_callback, checked against torch."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import autograd, nn


def _record(tensors, lib_calls):
    seen = []
    handles = []
    for name, t in tensors:
        def hook(p, name=name):
            seen.append((name, np.array(p.grad.detach().numpy() if lib_calls == "torch" else p.grad._data)))
        handles.append(t.register_post_accumulate_grad_hook(hook))
    return seen, handles


def test_post_accumulate_hook_fires_once_with_the_final_grad_like_torch():
    rng = np.random.default_rng(0)
    w0, b0, x0 = (rng.standard_normal(s).astype(np.float32) for s in ((3, 3), (3,), (2, 3)))
    # w is used twice (a shared weight): the hook must fire once, with the sum of both contributions
    fw, fb = fg.tensor(w0.copy(), requires_grad=True), fg.tensor(b0.copy(), requires_grad=True)
    tw, tb = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    fseen, _ = _record([("w", fw), ("b", fb)], "fg")
    tseen, _ = _record([("w", tw), ("b", tb)], "torch")
    fx, tx = fg.tensor(x0), torch.tensor(x0)
    ((fx @ fw + fb).relu() @ fw).sum().backward()
    ((tx @ tw + tb).relu() @ tw).sum().backward()
    assert sorted(n for n, _ in fseen) == sorted(n for n, _ in tseen) == ["b", "w"]
    for name, g in fseen:
        ref = dict(tseen)[name]
        np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-6)


def test_post_accumulate_hook_sees_accumulated_grad_and_remove_works():
    p = fg.tensor(np.ones(3, np.float32), requires_grad=True)
    calls = []
    h = p.register_post_accumulate_grad_hook(lambda t: calls.append(t.grad._data.copy()))
    (p * 2).sum().backward()
    (p * 3).sum().backward()
    np.testing.assert_array_equal(calls[0], [2, 2, 2])
    np.testing.assert_array_equal(calls[1], [5, 5, 5])  # after accumulation, as torch
    h.remove()
    (p * 3).sum().backward()
    assert len(calls) == 2


def test_post_accumulate_hook_not_fired_for_unused_leaf_and_fired_for_leaf_root():
    a = fg.tensor(np.ones(2, np.float32), requires_grad=True)
    b = fg.tensor(np.ones(2, np.float32), requires_grad=True)
    fired = []
    a.register_post_accumulate_grad_hook(lambda t: fired.append("a"))
    b.register_post_accumulate_grad_hook(lambda t: fired.append("b"))
    (b * 2).sum().backward()
    assert fired == ["b"]
    b.backward(fg.tensor(np.ones(2, np.float32)))
    assert fired == ["b", "b"]


def test_post_accumulate_hook_errors():
    x = fg.tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        fg.tensor(np.ones(2, np.float32)).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(TypeError, match="callable"):
        x.register_post_accumulate_grad_hook(3)


def test_queue_callback_runs_after_every_leaf_got_its_grad():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    params = list(model.parameters())
    log = []

    def hook(p):
        if not log:
            autograd.queue_callback(lambda: log.append(("end", all(q.grad is not None for q in params))))
        log.append("grad")

    for p in params:
        p.register_post_accumulate_grad_hook(hook)
    model(fg.tensor(np.ones((3, 4), np.float32))).sum().backward()
    assert log[-1] == ("end", True) and log.count("grad") == len(params)
    with pytest.raises(RuntimeError, match="during a backward pass"):
        autograd.queue_callback(lambda: None)


def test_a_failing_backward_drops_its_queued_callbacks():
    p = fg.tensor(np.ones(2, np.float32), requires_grad=True)
    ran = []

    def hook(t):
        autograd.queue_callback(lambda: ran.append("end"))
        raise ValueError("hook failed")

    h = p.register_post_accumulate_grad_hook(hook)
    with pytest.raises(ValueError, match="hook failed"):
        (p * 2).sum().backward()
    h.remove()
    (p * 2).sum().backward()
    assert ran == [] and autograd._pass_state.callbacks == [] and autograd._pass_state.node_callbacks == []


def test_pass_observers_see_every_backward_pass_and_are_held_weakly():
    """autograd._pass_observers: called when each outermost pass starts, with the nodes it will visit,
    whether or not it reaches the observer's tensors; it may queue a callback for the pass's end."""
    class Watcher:
        def __init__(self):
            self.passes, self.ended = [], 0

        def on_pass(self, nodes):
            self.passes.append(len(nodes))
            autograd.queue_callback(self.end)

        def end(self):
            self.ended += 1

    w = Watcher()
    autograd._add_pass_observer(w.on_pass)
    x = fg.tensor(np.ones(3, np.float32), requires_grad=True)
    (x * 2).sum().backward()
    x.backward(fg.ones(3))  # a leaf as the root: no nodes
    assert w.passes == [2, 0] and w.ended == 2
    n = len(autograd._pass_observers)
    del w
    (x * 2).sum().backward()
    assert len(autograd._pass_observers) == n - 1  # the dead observer is dropped, not called


def test_a_pass_in_another_thread_sees_its_own_callbacks_and_observers_only():
    """Backward passes run from several Python threads at once (on separate graphs) keep their state apart: a pass
    started in another thread while one is in progress here is an outermost pass there (its observers see it), it
    neither runs nor takes this pass's node callbacks and end-of-pass callbacks, and outside a pass of its own a
    thread cannot queue one."""
    import threading

    class Watcher:
        def __init__(self):
            self.threads = []

        def on_pass(self, nodes):
            self.threads.append(threading.get_ident())

    w = Watcher()
    autograd._add_pass_observer(w.on_pass)
    polled, ended, other = [], [], {}

    def elsewhere():
        try:
            autograd.queue_callback(lambda: None)
        except RuntimeError as e:
            other["queue"] = str(e)
        y = fg.tensor(np.ones(3, np.float32), requires_grad=True)
        (y * 3).sum().backward()
        other["grad"] = y.grad.numpy().tolist()
        other["ident"] = threading.get_ident()

    def hook(p):
        autograd.queue_callback(lambda: ended.append(threading.get_ident()))
        autograd._pass_state.node_callbacks.append(poll)
        t = threading.Thread(target=elsewhere)  # runs its whole pass while this one is in progress
        t.start()
        t.join()

    def poll():
        polled.append(threading.get_ident())

    p = fg.tensor(np.ones(2, np.float32), requires_grad=True)
    h = p.register_post_accumulate_grad_hook(hook)
    try:
        ((p * 2) * 5).sum().backward()
    finally:
        h.remove()
        autograd._pass_state.node_callbacks.clear()
    me = threading.get_ident()
    assert "during a backward pass" in other["queue"] and other["grad"] == [3.0, 3.0, 3.0]
    assert w.threads == [me, other["ident"]]
    assert ended == [me] and set(polled) == {me}
