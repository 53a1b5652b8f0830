"""python -m forgegrad.onnx: rebuild a model (module:factory, zoo name, or the checkpoint's
model.json), load safetensors weights, export, print the report."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
from safetensors.numpy import save_file

import forgegrad as fg
from forgegrad import nn
from forgegrad.onnx.__main__ import main


def make(d=8, h=16):
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, 3))


def _checkpoint(tmp_path, d=5):
    fg.manual_seed(7)
    model = make(d=d)
    path = tmp_path / "model.safetensors"
    save_file({k: np.ascontiguousarray(v._data) for k, v in model.state_dict().items()}, str(path))
    return model, path


def _ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_factory_and_checkpoint(tmp_path, capsys):
    model, ckpt = _checkpoint(tmp_path)
    out = tmp_path / "m.onnx"
    rc = main(["--model", "test_onnx_cli:make", "--kwarg", "d=5", "--checkpoint", str(ckpt),
               "--input-shape", "2,5", "--out", str(out), "--opset", "13"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "PASS" in text and "opset 13" in text
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    with fg.no_grad():
        want = model(fg.tensor(x))._data  # the checkpoint's weights, not a fresh init
    np.testing.assert_allclose(_ort(out, x), want, rtol=1e-5, atol=1e-6)


def test_sidecar_model_json(tmp_path, capsys):
    from forgegrad import models
    fg.manual_seed(7)
    model = models.create("mlp", in_features=4, out_features=3)
    save_file({k: np.ascontiguousarray(v._data) for k, v in model.state_dict().items()},
              str(tmp_path / "model.safetensors"))
    (tmp_path / "model.json").write_text(json.dumps({"name": "mlp", "kwargs": {"in_features": 4, "out_features": 3},
                                                     "input_shape": [4]}))
    out = tmp_path / "s.onnx"
    assert main(["--checkpoint", str(tmp_path), "--out", str(out), "--static"]) == 0
    x = np.ones((1, 4), np.float32)
    model.eval()
    with fg.no_grad():
        np.testing.assert_allclose(_ort(out, x), model(fg.tensor(x))._data, rtol=1e-5, atol=1e-6)


def test_sidecar_model_json_names_zoo_models_only(tmp_path, capsys):
    # model.json is data from the checkpoint folder: a module:factory name there is never imported
    _checkpoint(tmp_path, d=4)
    (tmp_path / "model.json").write_text(json.dumps({"name": "test_onnx_cli:make", "kwargs": {"d": 4},
                                                     "input_shape": [4]}))
    assert main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "s.onnx"), "--static"]) == 2
    assert "zoo" in capsys.readouterr().err and not (tmp_path / "s.onnx").exists()


def test_zoo_name(tmp_path, capsys):
    rc = main(["--model", "mlp", "--kwarg", "in_features=6", "--kwarg", "out_features=3",
               "--input-shape", "2,6", "--out", str(tmp_path / "z.onnx")])
    assert rc == 0 and "PASS" in capsys.readouterr().out


def test_usage_errors(tmp_path, capsys):
    out = str(tmp_path / "e.onnx")
    assert main(["--model", "test_onnx_cli:make", "--input-shape", "2,abc", "--out", out]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["--input-shape", "2,5", "--out", out]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main(["--model", "test_onnx_cli:nope", "--input-shape", "2,8", "--out", out]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert main(["--model", "test_onnx_cli:make", "--input-shape", "2,8", "--out", out, "--opset", "9"]) == 2
    assert "opset" in capsys.readouterr().err


def test_dynamic_axes_option(tmp_path, capsys):
    out = tmp_path / "dyn.onnx"
    assert main(["--model", "test_onnx_cli:make", "--kwarg", "d=5", "--input-shape", "2,5", "--out", str(out),
                 "--dynamic-axes", '{"input": {"0": "n"}}']) == 0
    assert "n=7" in capsys.readouterr().out
    assert main(["--model", "test_onnx_cli:make", "--input-shape", "2,8", "--out", str(out),
                 "--dynamic-axes", "{nope"]) == 2
    assert "--dynamic-axes" in capsys.readouterr().err
