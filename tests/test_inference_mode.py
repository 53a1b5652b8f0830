"""forgegrad.inference_mode against torch.inference_mode: a context manager and a decorator that records no
graph (as no_grad), ``mode=False``, nesting and is_inference_mode_enabled()."""
import numpy as np
import pytest
import torch

import forgegrad as fg


@pytest.mark.parametrize("lib", [torch, fg])
def test_context_manager_records_no_graph_and_restores(lib):
    x = lib.ones(3, requires_grad=True) if lib is torch else fg.tensor(np.ones(3, np.float32), requires_grad=True)
    with lib.inference_mode():
        assert lib.is_inference_mode_enabled() and not lib.is_grad_enabled()
        y = x * 2
        with lib.inference_mode(mode=False):  # grad mode on again, as torch's
            assert not lib.is_inference_mode_enabled() and lib.is_grad_enabled()
            assert (x * 2).requires_grad
        assert lib.is_inference_mode_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert lib.is_grad_enabled() and not lib.is_inference_mode_enabled()
    with lib.inference_mode(False):
        z = x * 2
    assert z.requires_grad
    np.testing.assert_array_equal(np.asarray(y.tolist()), [2, 2, 2])


@pytest.mark.parametrize("lib", [torch, fg])
def test_decorator_forms(lib):
    x = lib.ones(2, requires_grad=True) if lib is torch else fg.tensor(np.ones(2, np.float32), requires_grad=True)

    @lib.inference_mode()
    def called(v):
        return v * 3, lib.is_inference_mode_enabled()

    @lib.inference_mode
    def bare(v):
        return v * 3

    @lib.inference_mode(mode=False)
    def off(v):
        return v * 3

    out, enabled = called(x)
    assert enabled and not out.requires_grad and not bare(x).requires_grad and off(x).requires_grad
    assert lib.is_grad_enabled()


def test_state_is_restored_after_an_exception_and_mode_is_checked():
    with pytest.raises(ValueError):
        with fg.inference_mode():
            raise ValueError("inside")
    assert fg.is_grad_enabled() and not fg.is_inference_mode_enabled()
    with pytest.raises(TypeError, match="mode must be a bool"):
        fg.inference_mode(mode="yes")


def test_no_longer_a_missing_torch_name():
    assert "inference_mode" not in fg._TORCH_NAMES and fg.inference_mode is fg.autograd.inference_mode
