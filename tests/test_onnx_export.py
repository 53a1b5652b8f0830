"""forgegrad.onnx.export on whole models: MLP, a VAE-style encoder/decoder, a custom functional
Module; dynamic axes, names, errors, the report, the saved file."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F
import forgegrad.onnx as fonnx
from forgegrad import nn
from forgegrad.autograd import Function

from test_onnx_common import Lambda, export_and_check


def mlp():
    fg.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 16), nn.GELU(),
                         nn.Linear(16, 5), nn.LogSoftmax(dim=-1))


class VAE(nn.Module):
    """Encoder -> (mu, logvar), reparameterisation with a given noise input, decoder."""

    def __init__(self, d=10, h=16, z=4):
        super().__init__()
        self.enc = nn.Linear(d, h)
        self.mu = nn.Linear(h, z)
        self.logvar = nn.Linear(h, z)
        self.dec1 = nn.Linear(z, h)
        self.dec2 = nn.Linear(h, d)

    def forward(self, x, noise):
        h = F.relu(self.enc(x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + (logvar * 0.5).exp() * noise
        recon = F.sigmoid(self.dec2(F.tanh(self.dec1(z))))
        return recon, mu, logvar


class Custom(nn.Module):
    """Functional ops only: attention-like mixing over a reshaped hidden state."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(fg.randn(8, 12)._data * 0.3)
        self.b = nn.Parameter(fg.randn(12)._data * 0.1)
        self.proj = nn.Linear(4, 4)
        self.register_buffer("scale", fg.tensor(np.float32([0.5])))

    def forward(self, x):
        h = x @ self.w + self.b                             # (B, 12)
        h = h.reshape(x.shape[0], 3, 4)                     # (B, 3, 4)
        att = F.softmax(h @ h.transpose(1, 2) * self.scale, dim=-1)  # (B, 3, 3)
        h = self.proj(att @ h)                               # Linear on 3-D input
        h = F.leaky_relu(h, 0.2).clamp(-2.0, 2.0)
        pooled = h.mean(dim=1) + h.amax(dim=1) - h[:, 0, :]
        return fg.cat([pooled, h.flatten(1)], dim=1).abs().sqrt()


@pytest.mark.parametrize("opset", [13, 17])
def test_mlp(tmp_path, opset):
    report, proto = export_and_check(mlp(), fg.randn(3, 12), tmp_path, opset=opset)
    assert report.ok and report.verified
    assert [r.sizes["batch"] for r in report.runs] == [3, 1, 64]
    params = {"0.weight", "0.bias", "3.weight", "3.bias", "5.weight", "5.bias"}
    assert params <= {i.name for i in proto.graph.initializer}  # plus GELU's constants
    assert [n.op_type for n in proto.graph.node].count("Gemm") == 3
    assert "Dropout" not in [n.op_type for n in proto.graph.node]
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"


@pytest.mark.parametrize("opset", [13, 17])
def test_vae_with_noise_input(tmp_path, opset):
    fg.manual_seed(1)
    report, proto = export_and_check(VAE(), (fg.randn(3, 10), fg.randn(3, 4)), tmp_path, opset=opset)
    assert report.input_names == ["x", "noise"]
    assert report.dynamic_axes == {"x": {0: "batch"}, "noise": {0: "batch"}}
    assert report.output_names == ["output_0", "output_1", "output_2"]


@pytest.mark.parametrize("opset", [13, 17])
def test_custom_functional_module(tmp_path, opset):
    fg.manual_seed(2)
    export_and_check(Custom(), fg.randn(3, 8), tmp_path, opset=opset)


@pytest.mark.parametrize("model_fn", [mlp, Custom])
def test_opset21_smoke(tmp_path, model_fn):
    fg.manual_seed(3)
    _, proto = export_and_check(model_fn(), fg.randn(3, 12 if model_fn is mlp else 8), tmp_path, opset=21)
    if model_fn is mlp:  # GELU is an operator from opset 20
        assert "Gelu" in [n.op_type for n in proto.graph.node]


def test_example_batch_one_stays_dynamic(tmp_path):
    """A batch-1 example must not bake 1 into Reshape/Expand targets."""
    model = Lambda(lambda m, x: (x.reshape(x.shape[0], 2, 6).sum(1) + fg.zeros(x.shape[0], 6)).flatten())
    report, _ = export_and_check(model, fg.randn(1, 12), tmp_path)
    assert report.ok


def test_metadata_reaches_onnxruntime_and_bad_metadata_is_refused(tmp_path):
    path = str(tmp_path / "meta.onnx")
    fonnx.export(mlp(), fg.randn(2, 12), path, metadata={"tokenizer": "gpt2", "note": "x"})
    assert ort.InferenceSession(path).get_modelmeta().custom_metadata_map == {"tokenizer": "gpt2", "note": "x"}
    for bad in ({"n": 3}, [("a", "b")]):
        with pytest.raises(TypeError, match="metadata must map str keys to str values"):
            fonnx.export(mlp(), fg.randn(2, 12), str(tmp_path / "bad.onnx"), metadata=bad)
    assert not os.path.exists(tmp_path / "bad.onnx")


def test_size_dependent_scalars_and_sequence_axis(tmp_path):
    """x.shape[...] used as a number, and slicing the sequence axis by a size-derived bound."""
    model = Lambda(lambda m, x: (x[:, : x.shape[1] - 1] * 2).sum(dim=(1, 2)) / x.shape[1])
    x = fg.randn(2, 6, 3)
    report = fonnx.export(model, x, str(tmp_path / "seq.onnx"), dynamic_axes={"input": {0: "batch", 1: "seq"}},
                          verify_sizes=[{"batch": 1, "seq": 1 + 1}, {"batch": 5, "seq": 50}])
    assert report.ok and len(report.runs) == 3
    assert report.runs[2].sizes == {"batch": 5, "seq": 50}


def test_static_export(tmp_path):
    report = fonnx.export(mlp(), fg.randn(2, 12), str(tmp_path / "s.onnx"), dynamic_axes={})
    proto = onnx.load(str(tmp_path / "s.onnx"))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 12]
    assert report.dynamic_axes == {} and len(report.runs) == 1


def test_names_and_dict_outputs(tmp_path):
    model = Lambda(lambda m, x: {"probs": F.softmax(x), "top": x.max(dim=1)[1]})
    report = fonnx.export(model, fg.randn(3, 5), str(tmp_path / "d.onnx"), input_names=["logits"])
    assert report.input_names == ["logits"] and report.output_names == ["probs", "top"]
    sess = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["probs", "top"]
    report = fonnx.export(model, fg.randn(3, 5), str(tmp_path / "d2.onnx"), output_names=["p", "i"])
    assert report.output_names == ["p", "i"]


def test_output_that_is_an_input_or_repeated(tmp_path):
    model = Lambda(lambda m, x: (x, F.relu(x), F.relu(x) * 1.0, x))
    export_and_check(model, fg.randn(3, 4), tmp_path)


def test_report_str_and_errors(tmp_path):
    report = fonnx.export(mlp(), fg.randn(3, 12), str(tmp_path / "r.onnx"))
    text = str(report)
    assert "opset 17" in text and "PASS" in text and "batch=7" in text and "max abs err" in text
    assert set(report.max_abs_error()) == {"output"} and report.max_rel_error()["output"] < 1e-3
    assert report.sizes_tried == [{"batch": 3}, {"batch": 1}, {"batch": 7}]


def test_atomic_save_leaves_no_temporaries(tmp_path):
    path = tmp_path / "sub" / "a.onnx"
    fonnx.export(mlp(), fg.randn(3, 12), str(path), verify=False)
    fonnx.export(mlp(), fg.randn(3, 12), str(path), verify=False)  # overwrite in place
    assert os.listdir(tmp_path / "sub") == ["a.onnx"]
    onnx.checker.check_model(onnx.load(str(path)))


def test_model_mode_restored(tmp_path):
    m = mlp()
    m.train()
    fonnx.export(m, fg.randn(3, 12), str(tmp_path / "t.onnx"))
    assert all(mod.training for mod in m.modules())


class Double(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2


class Inner(nn.Module):
    def forward(self, x):
        return Double.apply(F.relu(x))


def test_unsupported_op_names_op_and_module(tmp_path):
    model = nn.Sequential(nn.Linear(4, 6), nn.Sequential(nn.Tanh(), Inner()))
    with pytest.raises(fonnx.UnsupportedOpError) as exc:
        fonnx.export(model, fg.randn(3, 4), str(tmp_path / "u.onnx"))
    msg = str(exc.value)
    assert "Double" in msg and "op #3" in msg and "'1.1'" in msg and "(Inner)" in msg and "(3, 6)" in msg
    assert "register_mapping" in msg
    assert not (tmp_path / "u.onnx").exists()
    assert isinstance(exc.value, RuntimeError)


def test_verification_error_past_tolerance(tmp_path):
    class Triple(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 3

    @fonnx.register_mapping(Triple)
    def _wrong(ctx, op):  # deliberately maps x*3 to x*2
        return [ctx.node("Mul", [op.input("x"), ctx.const(np.float32(2))])]

    try:
        with pytest.raises(fonnx.OnnxVerificationError) as exc:
            fonnx.export(Lambda(lambda m, x: Triple.apply(x)), fg.randn(3, 4), str(tmp_path / "v.onnx"))
    finally:
        del fonnx.REGISTRY[Triple]
    assert isinstance(exc.value, RuntimeError)
    assert not exc.value.report.ok and "over tolerance" in str(exc.value)


def test_unsupported_indexing_and_random_constants(tmp_path):
    idx = fg.tensor(np.array([0, 2]))
    cases = [
        (lambda m, x: x[idx, idx], "advanced indexing"),
        (lambda m, x: x[x._data > 0], "boolean"),
        (lambda m, x: x + fg.randn(*x.shape), "pass it to the model as an input"),
        (lambda m, x: F.dropout(x, 0.5), "training=True"),
    ]
    for fn, needle in cases:
        with pytest.raises(fonnx.UnsupportedOpError, match=needle):
            fonnx.export(Lambda(fn), fg.randn(3, 4), str(tmp_path / "x.onnx"))


def test_size_dependent_control_flow_is_reported(tmp_path):
    model = Lambda(lambda m, x: F.relu(x) if x.shape[0] < 4 else F.tanh(x))
    with pytest.raises(fonnx.OnnxExportError, match="different ops"):
        fonnx.export(model, fg.randn(3, 4), str(tmp_path / "c.onnx"))
    fonnx.export(model, fg.randn(3, 4), str(tmp_path / "c.onnx"), dynamic_axes={})  # static is fine


def test_index_built_in_numpy_for_the_length_is_reported_naming_the_axis(tmp_path):
    """An index array made in numpy from the length (a relative-position table, say) would be baked in at the
    example's length: the export refuses it, naming the dynamic axis its shape follows; a static export is fine."""
    model = Lambda(lambda m, x: x[:, np.arange(x.shape[1])[::-1].copy()] * 2)
    with pytest.raises(fonnx.UnsupportedOpError, match=r"index array made in numpy .* shape \(tokens\) follows"):
        fonnx.export(model, fg.randn(2, 5), str(tmp_path / "i.onnx"), dynamic_axes={"input": {0: "batch", 1: "tokens"}})
    fonnx.export(model, fg.randn(2, 5), str(tmp_path / "i.onnx"), dynamic_axes={})


def test_constant_that_fails_in_onnxruntime_at_other_sizes_names_them(tmp_path):
    """An index equal at the traced lengths (5, 6, 7) but not at the verification's length 1: onnxruntime's
    index error comes back as an OnnxVerificationError naming the dynamic axis and its sizes."""
    model = Lambda(lambda m, x: x[:, np.arange(min(x.shape[1], 4))] * 2)
    with pytest.raises(fonnx.OnnxVerificationError, match=r"failed with the dynamic axes at other sizes, "
                                                          r"tokens=1 \(example: 5\)"):
        fonnx.export(model, fg.randn(2, 5), str(tmp_path / "o.onnx"), dynamic_axes={"input": {1: "tokens"}})


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="opset"):
        fonnx.export(mlp(), fg.randn(3, 12), str(tmp_path / "b.onnx"), opset=12)
    with pytest.raises(ValueError, match="input_names"):
        fonnx.export(mlp(), fg.randn(3, 12), str(tmp_path / "b.onnx"), input_names=["a", "b"])
    with pytest.raises(ValueError, match="out of range"):
        fonnx.export(mlp(), fg.randn(3, 12), str(tmp_path / "b.onnx"), dynamic_axes={"input": {2: "x"}})
    with pytest.raises(ValueError, match="neither inputs"):
        fonnx.export(mlp(), fg.randn(3, 12), str(tmp_path / "b.onnx"), dynamic_axes={"x": {0: "batch"}})


@pytest.mark.parametrize("kwargs, error, needle", [
    # a tolerance that is no number had failed inside the verification's numpy (after the file was written), a
    # negative or NaN one as a verification error; a list of one as the number
    ({"rtol": "x"}, TypeError, "rtol must be None or a number"), ({"atol": [1e-5]}, TypeError, "atol"),
    ({"rtol": -1.0}, ValueError, "rtol must be a finite number >= 0"), ({"atol": float("nan")}, ValueError, "atol"),
    ({"rtol": float("inf")}, ValueError, "rtol"), ({"rtol": True}, TypeError, "rtol"),
    # verify=None / "yes" / 1 had been read as their truth value
    ({"verify": None}, TypeError, "verify must be True or False"), ({"verify": 1}, TypeError, "verify"),
    # a str of names had been split into one name per character
    ({"input_names": "input"}, TypeError, "input_names must be a list of non-empty strs"),
    ({"output_names": "output"}, TypeError, "output_names"), ({"input_names": [1]}, TypeError, "input_names"),
    # dynamic_axes=[0] had raised AttributeError, an axis 0.5 or a symbol 1 had been taken
    ({"dynamic_axes": [0]}, TypeError, "dynamic_axes must be a dict"),
    ({"dynamic_axes": {"input": {0.5: "b"}}}, TypeError, "axes must be ints"),
    ({"dynamic_axes": {"input": {0: 1}}}, TypeError, r"dynamic_axes\['input'\]\[0\] must be a non-empty str"),
    ({"dynamic_axes": {"input": "b"}}, TypeError, "must be a dict .* or a list of axes"),
    # verify_sizes of another form had failed in numpy or the meta device
    ({"verify_sizes": [{"batch": 2.5}]}, TypeError, "verify_sizes.*must be an int"),
    ({"verify_sizes": [{"batch": -1}]}, ValueError, "verify_sizes.*must be >= 0"),
    ({"verify_sizes": [5]}, TypeError, "verify_sizes must be a list"),
    ({"verify_sizes": "x"}, TypeError, "verify_sizes"),
])
def test_bad_arguments_are_named_before_anything_is_written(tmp_path, kwargs, error, needle):
    path = tmp_path / "b.onnx"
    with pytest.raises(error, match=needle):
        fonnx.export(mlp(), fg.randn(3, 12), str(path), **kwargs)
    assert not path.exists()


def test_axis_that_cannot_be_dynamic_is_reported(tmp_path):
    """A model that only runs at the example's batch size: the re-run at another size fails."""
    with pytest.raises(fonnx.OnnxExportError, match="cannot be dynamic"):
        fonnx.export(Lambda(lambda m, x: x.reshape(2, -1, 4).sum(0)), fg.randn(6, 4), str(tmp_path / "r.onnx"))
    fonnx.export(Lambda(lambda m, x: x.reshape(2, -1, 4).sum(0)), fg.randn(6, 4), str(tmp_path / "r.onnx"),
                 dynamic_axes={})


def test_unsolvable_dynamic_size_is_reported(tmp_path):
    """x.shape[0] // 2 is neither c*batch nor batch+k: the Slice bound cannot be computed."""
    with pytest.raises(fonnx.OnnxExportError, match="cannot express") as exc:
        fonnx.export(Lambda(lambda m, x: x[: x.shape[0] // 2]), fg.randn(6, 4), str(tmp_path / "h.onnx"))
    assert "GetItem" in str(exc.value)


def test_plain_function_and_numpy_inputs(tmp_path):
    report = fonnx.export(lambda x, y: F.relu(x) * y, (np.ones((3, 4), np.float32), fg.randn(3, 4)),
                          str(tmp_path / "f.onnx"))
    assert report.input_names == ["x", "y"] and report.ok


def test_constant_from_parameter_data_and_detach(tmp_path):
    """detach(), Tensor(t._data) and as_tensor(t._data) are not ops: they alias the traced value or the parameter
    (tensor() copies, as torch.tensor: a constant)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            h = self.lin(x).detach()
            return fg.Tensor(h._data) + fg.as_tensor(h._data) + self.lin.weight.detach().sum(0)

    report, proto = export_and_check(M(), fg.randn(3, 4), tmp_path)
    assert {"lin.weight", "lin.bias"} <= {i.name for i in proto.graph.initializer}


def test_scalar_outputs_and_constants_keep_rank_zero(tmp_path):
    model = Lambda(lambda m, x: (x.sum() * 2 + 1, x.mean() - x.amax(), (x - 0.5).abs().sum(dim=1)))
    report, proto = export_and_check(model, fg.randn(3, 4), tmp_path)
    assert [len(o.type.tensor_type.shape.dim) for o in proto.graph.output] == [0, 0, 1]


def _joined(m, past, new, mask):
    """A KV-cache-like model: mask covers past + new; the Reshape target is read off mask's run-time shape."""
    joined = fg.cat([past, new], 1) * mask.unsqueeze(-1)
    return joined.reshape(mask.shape[0] * mask.shape[1], -1)


_SUMMED = {"past": {0: "batch", 1: "past"}, "new": {0: "batch", 1: "new"}, "mask": {0: "batch", 1: "past+new"}}


def test_an_axis_named_as_a_sum_follows_its_parts(tmp_path):
    """'past+new' is traced at past + new in every trace, verified at a size with past 0, and is a symbol of
    its own at run time (batch * (past+new) from the mask's shape)."""
    path = str(tmp_path / "s.onnx")
    report = fonnx.export(Lambda(_joined), (fg.randn(2, 3, 4), fg.randn(2, 5, 4), fg.randn(2, 8)), path,
                          input_names=["past", "new", "mask"], dynamic_axes=_SUMMED,
                          verify_sizes=[{"batch": 1, "past": 0, "new": 2}, {"batch": 3, "past": 6, "new": 1}])
    assert report.ok and {r.sizes["past+new"] for r in report.runs} == {8, 2, 7}
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[2].shape == ["batch", "past+new"]
    past, new, mask = (np.random.rand(*s).astype(np.float32) for s in ((4, 9, 4), (4, 2, 4), (4, 11)))
    got = sess.run(None, {"past": past, "new": new, "mask": mask})[0]
    np.testing.assert_allclose(got, (np.concatenate([past, new], 1) * mask[..., None]).reshape(44, 4), rtol=1e-6)


def test_a_summed_axis_that_does_not_add_up_is_refused(tmp_path):
    args = (fg.randn(2, 3, 4), fg.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"'past\+new' has size 7 on input 'mask' but past \(3\) \+ new \(5\) = 8"):
        fonnx.export(Lambda(_joined), (*args, fg.randn(2, 7)), str(tmp_path / "a.onnx"),
                     input_names=["past", "new", "mask"], dynamic_axes=_SUMMED)
    with pytest.raises(ValueError, match=r"sums \['old'\], which name no axis"):
        fonnx.export(Lambda(_joined), (*args, fg.randn(2, 8)), str(tmp_path / "a.onnx"),
                     input_names=["past", "new", "mask"], dynamic_axes={**_SUMMED, "mask": {1: "past+old"}})
    with pytest.raises(ValueError, match="verify_sizes names"):
        fonnx.export(Lambda(_joined), (*args, fg.randn(2, 8)), str(tmp_path / "a.onnx"),
                     input_names=["past", "new", "mask"], dynamic_axes=_SUMMED, verify_sizes=[{"past+new": 4}])
