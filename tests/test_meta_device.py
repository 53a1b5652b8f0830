"""Modules on the meta device: parameters and buffers created under ``fg.device("meta")`` (no
memory, same shapes as on the CPU), nn.init leaving them alone, Module.to, load_state_dict into a
meta model, models running on meta inputs, and the ONNX exporter's shape checks on meta."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import models, nn
from forgegrad.devices import MetaArray
from forgegrad.nn import init


def _layers():
    """One of every layer that owns parameters or buffers (all built eagerly)."""
    return {
        "Linear": lambda: nn.Linear(7, 5),
        "Linear no bias": lambda: nn.Linear(7, 5, bias=False),
        "Dense": lambda: nn.Dense(5, activation="relu", input_dim=7),
        "Conv2d": lambda: nn.Conv2d(4, 6, 3, groups=2),
        "Conv2D": lambda: nn.Conv2D(6, (3, 2), in_channels=4),
        "BatchNorm1d": lambda: nn.BatchNorm1d(5),
        "BatchNorm2d": lambda: nn.BatchNorm2d(3, affine=False),
        "RNN": lambda: nn.RNN(4, 3, num_layers=2, bidirectional=True),
        "LSTM": lambda: nn.LSTM(4, 3, bias=False),
        "GRU": lambda: nn.GRU(4, 3, batch_first=True),
        "RNNCell": lambda: nn.RNNCell(4, 3),
        "LSTMCell": lambda: nn.LSTMCell(4, 3),
        "GRUCell": lambda: nn.GRUCell(4, 3, bias=False),
        "Embedding": lambda: nn.Embedding(10, 4, padding_idx=0),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_layers_built_on_meta_have_meta_parameters_and_buffers(name):
    build = _layers()[name]
    cpu = build()
    with fg.device("meta"):
        meta = build()
    assert fg.devices.default_device() == "cpu"  # the context restores the default
    cpu_state, meta_state = cpu.state_dict(keep_vars=True), meta.state_dict(keep_vars=True)
    assert list(meta_state) == list(cpu_state) and meta_state
    for k, t in meta_state.items():
        assert type(t._data) is MetaArray and t.is_meta, k
        assert (t.shape, t.dtype) == (cpu_state[k].shape, cpu_state[k].dtype), k
        assert t._data.nbytes == 0
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in meta.parameters())


def test_meta_construction_allocates_no_weights_and_draws_no_random_numbers():
    fg.manual_seed(3)
    with fg.device("meta"):
        big = nn.Sequential(nn.Linear(100_000, 100_000), nn.ReLU(), nn.Linear(100_000, 100_000))
    after_meta = fg.randn(4).numpy().copy()
    fg.manual_seed(3)
    assert np.array_equal(fg.randn(4).numpy(), after_meta)  # init skipped meta tensors: no draws
    assert sum(p.numel() for p in big.parameters()) == 20_000_200_000
    assert sum(p._data.nbytes for p in big.parameters()) == 0


def test_init_functions_leave_meta_tensors_alone():
    t = nn.Parameter(MetaArray((6, 4)))
    for fn in (init.uniform_, init.normal_, init.zeros_, init.ones_, init.kaiming_uniform_, init.kaiming_normal_,
               init.xavier_uniform_, init.xavier_normal_, lambda x: init.constant_(x, 2.0)):
        assert fn(t) is t and type(t._data) is MetaArray and t.shape == (6, 4)
    with pytest.raises(ValueError, match="at least 2 dimensions"):  # shapes are still checked
        init.kaiming_uniform_(nn.Parameter(MetaArray((3,))))


def test_parameter_accepts_meta_arrays_of_float32_only():
    p = nn.Parameter(MetaArray((2, 3)))
    assert p.is_meta and p.requires_grad and p.shape == (2, 3) and "device='meta'" in repr(p)
    with pytest.raises(TypeError, match="floating point"):
        nn.Parameter(MetaArray((2,), np.int64))


def test_embedding_on_cpu_is_unchanged_by_the_device_seam():
    """Embedding's init now goes through nn.init: same draws as torch-style N(0, 1) before."""
    fg.manual_seed(0)
    e = nn.Embedding(5, 3, padding_idx=1)
    fg.manual_seed(0)
    want = fg.random.generator().standard_normal((5, 3)).astype(np.float32)
    want[1] = 0
    np.testing.assert_array_equal(e.weight.numpy(), want)


def test_lazy_layers_create_their_weights_on_their_device():
    with fg.device("meta"):
        dense = nn.Dense(8, activation="relu")
        conv = nn.Conv2D(4, 3, padding="same")
    y = dense(fg.randn(2, 5))  # built outside the context, on the device the layer was made on
    assert dense.weight.is_meta and dense.weight.shape == (8, 5) and y.is_meta and y.shape == (2, 8)
    assert conv(fg.randn(1, 3, 6, 6)).shape == (1, 4, 6, 6) and conv.weight.is_meta
    moved = nn.Dense(3).to("meta")
    moved(fg.randn(2, 5))
    assert moved.weight.is_meta
    cpu = nn.Sequential(nn.Dense(3))
    assert cpu.summary((5,), print_summary=False).total_params == 18 and not cpu[0].weight.is_meta


# ---- Module.to -------------------------------------------------------------------------------------
def test_module_to_meta_drops_values_keeps_objects():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    params = list(model.parameters())
    model(fg.randn(5, 4)).sum().backward()
    assert model.to("meta") is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(t.is_meta for t in model.state_dict(keep_vars=True).values())
    assert all(p.grad is None for p in model.parameters())
    assert model.to(fg.device("meta")) is model and model.to("meta") is model  # already there
    y = model(fg.randn(2, 4))  # CPU input, meta weights: the op runs on meta
    assert y.is_meta and y.shape == (2, 3)


def test_module_to_errors_are_clear_and_change_nothing():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[1].to("meta")
    w0 = model[0].weight._data
    with pytest.raises(RuntimeError, match=r"'1.weight' is on the meta device.*load_state_dict"):
        model.to("cpu")
    assert model[0].weight._data is w0  # nothing moved
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        model.to("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        model.to("tpu")
    assert model.to(np.float32) is model and model.to(dtype="float32") is model
    with pytest.raises(TypeError, match="floating dtype"):  # (float16 and bfloat16 are taken, as torch's)
        model.to(np.int32)
    assert model[0].weight._data is w0  # nothing converted
    with pytest.raises(TypeError, match="a device"):
        model.to(object())
    assert nn.Linear(2, 2).cpu().weight.device == "cpu"


def test_load_state_dict_gives_a_meta_model_its_values():
    fg.manual_seed(1)
    ref = models.LeNet().eval()
    with fg.device("meta"):
        model = models.LeNet().eval()
    x = fg.randn(2, 1, 28, 28)
    assert model(x).is_meta
    model.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    assert not any(t.is_meta for t in model.state_dict().values())
    np.testing.assert_array_equal(model(x).numpy(), ref(x).numpy())
    with pytest.raises(RuntimeError, match="no values for 0.weight"):
        nn.Sequential(nn.Linear(2, 2)).load_state_dict(nn.Sequential(nn.Linear(2, 2)).to("meta").state_dict())


# ---- running on meta -------------------------------------------------------------------------------
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_cpu_model_on_meta_input_runs_every_layer_on_meta(grad):
    """Including Sequential's and Dense's fused inference paths, which take CPU arrays only."""
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Tanh(),
                          nn.Dense(3, activation="sigmoid", input_dim=4))
    x = fg.zeros(5, 8, device="meta")
    with fg.set_grad_enabled(grad):
        y = model(x)
    assert y.is_meta and y.shape == (5, 3) and y.grad_fn is None
    with pytest.raises(ValueError, match="linear"):
        with fg.no_grad():
            model(fg.zeros(5, 7, device="meta"))


def test_recurrent_and_conv_models_on_meta_match_cpu_shapes():
    fg.manual_seed(0)
    for build, shape in [(lambda: models.LeNet(), (2, 1, 28, 28)),
                         (lambda: nn.LSTM(4, 3, num_layers=2, bidirectional=True, batch_first=True), (2, 5, 4)),
                         (lambda: nn.GRUCell(4, 3), (2, 4))]:
        cpu = build().eval()
        with fg.device("meta"):
            meta = build().eval()
        want = cpu(fg.randn(*shape))
        got = meta(fg.zeros(*shape, device="meta"))
        flat = lambda o: [o] if isinstance(o, fg.Tensor) else [t for v in o for t in flat(v)]  # noqa: E731
        assert [t.shape for t in flat(got)] == [t.shape for t in flat(want)]
        assert all(t.is_meta for t in flat(got))


# ---- the exporter's shape checks ---------------------------------------------------------------------
class _FixedBatch(nn.Module):
    """Runs only at batch 6: its head flattens the batch into the features."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(0), nn.Linear(48, 2))

    def forward(self, x):
        return self.head(self.body(x))


def test_export_fails_fast_naming_module_and_shapes(tmp_path, monkeypatch):
    fonnx = pytest.importorskip("forgegrad.onnx")
    from forgegrad.onnx import _export

    traced = []
    real_run_traced = _export.run_traced
    monkeypatch.setattr(_export, "run_traced", lambda *a: traced.append(1) or real_run_traced(*a))
    with pytest.raises(fonnx.OnnxExportError) as exc:
        fonnx.export(_FixedBatch(), fg.randn(6, 4), str(tmp_path / "m.onnx"))  # batch axis dynamic by default
    msg = str(exc.value)
    assert traced == []  # failed before any trace
    assert "dynamic axes at {'batch': 7}" in msg and "inputs of shape (7, 4)" in msg
    assert "module 'head.1' (Linear) on input of shape (56,)" in msg and "cannot be dynamic" in msg
    assert not (tmp_path / "m.onnx").exists()
    # at the example's own sizes
    with pytest.raises(fonnx.OnnxExportError, match=r"at the example's sizes: on inputs of shape \(5, 4\).*'head.1'"):
        fonnx.export(_FixedBatch(), fg.randn(5, 4), str(tmp_path / "m.onnx"), dynamic_axes={})
    assert traced == []
    # static export at the one batch it runs at is fine
    report = fonnx.export(_FixedBatch(), fg.randn(6, 4), str(tmp_path / "m.onnx"), dynamic_axes={})
    assert report.ok and traced


def test_export_checks_verify_sizes_before_writing(tmp_path):
    fonnx = pytest.importorskip("forgegrad.onnx")

    class Second(nn.Module):
        def forward(self, x):
            return x - x[1]  # needs a batch of at least 2

    with pytest.raises(fonnx.OnnxExportError, match=r"\{'batch': 1\} \(to be verified there.*verify_sizes="):
        fonnx.export(Second(), fg.randn(6, 4), str(tmp_path / "s.onnx"))
    assert not (tmp_path / "s.onnx").exists()
    assert fonnx.export(Second(), fg.randn(6, 4), str(tmp_path / "s.onnx"), verify_sizes=[{"batch": 3}]).ok


def test_export_of_a_model_the_meta_device_cannot_judge_still_works(tmp_path):
    """A forward that reads values fails on meta but runs for real: the traces decide, as before."""
    fonnx = pytest.importorskip("forgegrad.onnx")

    class ReadsValues(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            n_positive = int((x.numpy() > 0).sum())  # reads values: impossible on meta
            return self.lin(x) * (1.0 if n_positive >= 0 else 0.0)

    model = ReadsValues()
    with pytest.raises(RuntimeError, match="no data"):
        model(fg.zeros(3, 4, device="meta"))
    assert fonnx.export(model, fg.randn(3, 4), str(tmp_path / "v.onnx")).ok


def test_export_refuses_meta_parameters(tmp_path):
    fonnx = pytest.importorskip("forgegrad.onnx")
    with fg.device("meta"):
        model = nn.Linear(4, 2)
    with pytest.raises(fonnx.OnnxExportError, match="'weight' of the model is on the meta device"):
        fonnx.export(model, fg.randn(3, 4), str(tmp_path / "p.onnx"))
