"""The op registry's own API: records, lookups, dispatch, and the mappings of new ops at every opset."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.autograd import Function
from forgegrad.ops import registry


def test_every_record_is_found_by_name_and_by_function():
    for op in fg.ops.all_ops():
        assert fg.ops.get(op.name) is op
        assert fg.ops.of_function(op.function) is op
        assert op.function.op is op


def test_unknown_names_list_the_registered_ops():
    with pytest.raises(KeyError, match="no op named 'nope'.*relu"):
        fg.ops.get("nope")


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        @registry.register_op("relu")
        class Again(Function):
            pass


def test_gaps_must_name_known_checks():
    with pytest.raises(ValueError, match="unknown checks"):
        registry.OpDef("x", Function, gaps={"speed": "n/a"})


def test_subclass_of_a_registered_function_inherits_no_record():
    class MyRelu(fg.ops.activation.ReluFunction):
        pass

    assert MyRelu.op is None and MyRelu.inference is None
    with pytest.raises(NotImplementedError, match="not a registered op"):
        MyRelu.apply(fg.zeros(2, device="meta"))


def test_inference_kernel_gives_the_graph_path_result():
    x = fg.randn(5, 7)
    w, b = fg.randn(3, 7, requires_grad=True), fg.randn(3)
    with_graph = fg.nn.functional.linear(x, w, b)
    with fg.no_grad():
        without = fg.nn.functional.linear(x, w, b)
    assert without.grad_fn is None and with_graph.grad_fn is not None
    assert np.array_equal(with_graph._data, without._data)


def test_functional_entry_points_come_from_records():
    F = fg.nn.functional
    assert F.layer_norm is fg.ops.get("layer_norm").functional
    assert {"silu", "layer_norm", "rms_norm"} <= set(dir(F))
    with pytest.raises(AttributeError, match="no attribute 'not_an_op'"):
        F.not_an_op


def test_new_layers_match_torch_and_load_its_state_dict():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((4, 6, 10)).astype(np.float32)
    for fg_layer, t_layer in ((nn.LayerNorm((6, 10)), torch.nn.LayerNorm((6, 10))),
                              (nn.RMSNorm(10, eps=1e-6), torch.nn.RMSNorm(10, eps=1e-6)),
                              (nn.SiLU(), torch.nn.SiLU())):
        with torch.no_grad():
            for p in t_layer.parameters():
                p.uniform_(-1, 1)
        fg_layer.load_state_dict({k: v.numpy() for k, v in t_layer.state_dict().items()})
        assert list(fg_layer.state_dict()) == list(t_layer.state_dict())
        got = fg_layer(fg.tensor(x)).numpy()
        want = t_layer(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_new_ops_export_at_every_opset(tmp_path, opset):
    pytest.importorskip("onnxruntime")
    model = nn.Sequential(nn.Linear(8, 12), nn.LayerNorm(12), nn.SiLU(), nn.RMSNorm(12), nn.Linear(12, 3))
    report = fg.onnx.export(model, fg.randn(5, 8), str(tmp_path / f"m{opset}.onnx"), opset=opset)
    assert report.ok


def test_sequential_fuses_silu_into_the_linear_kernel():
    model = nn.Sequential(nn.Linear(8, 12), nn.SiLU())
    x = fg.randn(3, 8)
    with fg.no_grad():
        fused = model(x)
    unfused = model[1](model[0](x))
    assert np.array_equal(fused._data, unfused._data)
