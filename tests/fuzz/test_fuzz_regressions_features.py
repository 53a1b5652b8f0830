"""Defects the differential hypothesis probes of 2026-12-07 (seeds 6 and 9 on inference tensors; sparse @ sparse,
the int8 conv's fused pool and Module hooks ran clean) found in what the session before added, each with its
reproducer. The probes run the same random program in torch and forgegrad and compare every step's outcome."""

import numpy as np
import pytest

import forgegrad as fg

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("view", [lambda w: w.select(0, 1), lambda w: w[0], lambda w: w.view(-1), lambda w: w.t()])
@pytest.mark.parametrize("write", [lambda v: v.add_(1), lambda v: v.mul_(2), lambda v: v.zero_()])
def test_a_view_made_in_inference_mode_of_a_tensor_requiring_grad_refuses_writes_outside(view, write):
    """Probe steps [("mul_w", False), ("select", True), ("inplace_add", False)] (inference tensors, seed 6): a view
    made inside inference_mode() of a parameter did not require grad, so add_ on it outside the mode wrote into the
    parameter behind autograd's back; torch's view requires grad (a leaf) and the write raises."""
    results = {}
    for lib in (torch, fg):
        w = lib.ones(2, 3, requires_grad=True)
        with lib.inference_mode():
            v = view(w)
            assert v.requires_grad and not v.is_inference()
            write(v)  # inside the mode: allowed, as torch's
        with pytest.raises(RuntimeError):
            write(v)
        results[lib.__name__] = w.detach().numpy().copy()
    np.testing.assert_array_equal(results["forgegrad"], results["torch"])
    w = fg.ones(2, 3, requires_grad=True)
    with fg.inference_mode():
        d = w.detach()  # not a view op: no grad, as torch's detach
    assert not d.requires_grad


def test_a_view_made_in_inference_mode_takes_requires_grad_from_its_chains_base():
    """Probe steps [("squeeze", False), ("requires_grad_", True), ("permute", True)] (seed 9): torch's view made in
    the mode takes requires_grad from the tensor the view chain started from (its _base), not from an intermediate
    view given requires_grad_() later."""
    for lib in (torch, fg):
        y = lib.ones(2, 3)
        x = y.squeeze()
        x.requires_grad_()
        with lib.inference_mode():
            assert not x.permute(1, 0).requires_grad, lib.__name__
            assert (x * 2).requires_grad is False
