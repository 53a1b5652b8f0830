"""The device seam: tensor storage per device, fg.device, moving tensors, dispatch by device."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import devices
from forgegrad.devices import MetaArray


def test_device_objects_compare_with_names():
    x = fg.randn(2, 3)
    assert x.device == "cpu" and x.device.type == "cpu" and str(x.device) == "cpu"
    assert fg.device("meta") == "meta" and fg.device("meta") == fg.device("meta")
    assert x.to("meta").device == "meta"


@pytest.mark.parametrize("bad, err", [("tpu", ValueError), (3, TypeError), ("", ValueError)])
def test_unknown_devices_are_refused(bad, err):
    with pytest.raises(err, match="device"):
        fg.device(bad)


def test_meta_tensors_have_shapes_and_no_data():
    m = fg.zeros(4, 5, device="meta")
    assert m.is_meta and m.shape == (4, 5) and m.dtype == np.float32
    assert isinstance(m._data, MetaArray) and m._data.nbytes == 0
    with pytest.raises(RuntimeError, match="no data"):
        m.numpy()
    with pytest.raises(RuntimeError, match="no values"):
        m.cpu()
    assert "device='meta'" in repr(m)


def test_default_device_context_applies_to_factories_and_restores():
    with fg.device("meta"):
        assert devices.default_device() == "meta"
        t = fg.randn(3, 4)
        assert t.is_meta
    assert devices.default_device() == "cpu" and not fg.randn(1).is_meta


def test_ops_dispatch_meta_inputs_to_shape_rules():
    x = fg.zeros(8, 16, device="meta")
    w = fg.randn(4, 16)  # real weights mixed with a meta input: the call is meta, the weight read for its shape
    y = fg.nn.functional.linear(x, w).relu().sum(dim=1)
    assert y.is_meta and y.shape == (8,)
    with pytest.raises(ValueError, match="linear"):
        fg.nn.functional.linear(fg.zeros(8, 15, device="meta"), w)


def test_meta_calls_record_no_graph():
    w = fg.randn(4, 16, requires_grad=True)
    y = fg.nn.functional.linear(fg.zeros(2, 16, device="meta"), w)
    assert y.grad_fn is None and not y.requires_grad


def test_transfer_table_refuses_unregistered_pairs():
    with pytest.raises(RuntimeError, match="no values"):
        devices.transfer(MetaArray((2,)), "cpu")
    arr = np.ones(3, np.float32)
    assert devices.transfer(arr, "cpu") is arr


@pytest.mark.skipif(fg.cuda.is_available(), reason="a CUDA device is present: the no-device error path does not apply")
def test_cuda_without_a_device_fails_clearly():
    for call in (lambda: fg.device("cuda"), lambda: fg.randn(2).to("cuda"), lambda: fg.randn(2).cuda()):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            call()


def test_ops_with_cuda_kernels_list_the_device():
    assert "cuda" in fg.ops.get("relu").devices and "cuda" in fg.ops.get("matmul").devices
    assert "cuda" in fg.ops.get("conv2d").devices and "cuda" in fg.ops.get("max_pool2d").devices
    assert "cuda" not in fg.ops.get("fake_quantize_per_tensor_affine").devices  # no CUDA kernel (yet)


@pytest.mark.skipif(not fg.cuda.is_available(), reason="no CUDA device on this machine")
def test_relu_and_matmul_on_cuda_tensors_match_the_cpu():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((33, 17)).astype(np.float32)
    b = rng.standard_normal((17, 9)).astype(np.float32)
    ga, gb = fg.tensor(a).cuda().requires_grad_(), fg.tensor(b).cuda().requires_grad_()
    y = (ga @ gb).relu()
    assert y.device == "cuda"
    np.testing.assert_allclose(y.cpu().numpy(), np.maximum(a @ b, 0), rtol=1e-4, atol=1e-5)
