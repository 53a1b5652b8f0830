"""forgegrad compress on tiny checkpoints: the written checkpoint + ONNX file, the before/after table,
compressed checkpoints that `eval` and `export` rebuild, and the usage errors."""
import json
import os

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.cli import _checkpoint, main

FAST = ["--epochs", "1", "--batch-size", "128", "--no-progress", "--no-plot"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    assert main(["train", "mlp", "--arg", "hidden=[32, 16]", "--lr", "3e-3", "--out", str(root / "mlp")] + FAST) == 0
    assert main(["train", "mlp", "--arg", "hidden=[64, 32]", "--lr", "3e-3", "--out", str(root / "teacher")]
                + FAST) == 0
    return root


def test_prune_distill_static_writes_checkpoint_onnx_and_table(ckpts, capsys):
    out = ckpts / "c1"
    code, text, err = run(capsys, "compress", str(ckpts / "mlp"), "--prune", "0.5", "--distill-from",
                          str(ckpts / "teacher"), "--quantize", "static", "--finetune-epochs", "1", "--out", str(out))
    assert code == 0, err
    assert "pruned 0 32->16, 2 16->8" in text and "distilling from" in text and "quantized (static)" in text
    for row in ("size on disk", "accuracy (held-out)", "latency batch 1", "latency batch 64"):
        assert row in text
    assert "onnxruntime max |error|" in text and (out / "model.onnx").is_file()
    meta = json.loads((out / "model.json").read_text())
    assert meta["compression"]["prune"] == 0.5 and meta["compression"]["quantize"] == "static"
    state = fg.load(str(out / "model.safetensors"))
    assert state["0.weight"].dtype == np.int8 and state["0.weight"].shape == (16, 64)
    assert os.path.getsize(out / "model.safetensors") < 0.3 * os.path.getsize(ckpts / "mlp" / "model.safetensors")
    # the compressed checkpoint loads (rebuilt) and evaluates to the accuracy the table printed
    model, _ = _checkpoint.load(str(out))
    acc_row = [line for line in text.splitlines() if line.startswith("accuracy")][0]
    code, text, _ = run(capsys, "eval", str(out), "--json")
    assert code == 0 and f"{json.loads(text)['accuracy'] * 100:.2f} %" == acc_row.split()[-4] + " %"
    assert type(model[0]).__name__ == "QuantizedLinear"


@pytest.mark.parametrize("mode", ["dynamic", "qat"])
def test_quantize_modes(ckpts, capsys, mode):
    out = ckpts / mode
    code, text, err = run(capsys, "compress", str(ckpts / "mlp"), "--quantize", mode, "--finetune-epochs", "1",
                          "--out", str(out))
    assert code == 0, err
    assert f"quantized ({mode})" in text
    assert (out / "model.onnx").is_file() and "onnxruntime max |error|" in text
    assert run(capsys, "eval", str(out))[0] == 0


def test_prune_only_exports_float_onnx(ckpts, capsys):
    out = ckpts / "pruned"
    code, text, err = run(capsys, "compress", str(ckpts / "mlp"), "--prune", "0.25", "--finetune-epochs", "1",
                          "--out", str(out))
    assert code == 0, err
    assert "verified in onnxruntime" in text
    assert run(capsys, "export", str(out), "--out", str(ckpts / "pruned.onnx"))[0] == 0


def test_usage_errors(ckpts, capsys):
    code, _, err = run(capsys, "compress", str(ckpts / "mlp"), "--out", str(ckpts / "x"))
    assert code == 2 and "nothing to do" in err
    code, _, err = run(capsys, "compress", str(ckpts / "mlp"), "--prune", "1.5", "--out", str(ckpts / "x"))
    assert code == 2 and "fraction" in err
    code, _, err = run(capsys, "compress", str(ckpts / "missing"), "--prune", "0.5", "--out", str(ckpts / "x"))
    assert code == 2 and "not found" in err
    run(capsys, "compress", str(ckpts / "mlp"), "--quantize", "dynamic", "--out", str(ckpts / "d2"))
    code, _, err = run(capsys, "compress", str(ckpts / "d2"), "--prune", "0.5", "--out", str(ckpts / "x"))
    assert code == 2 and "already compressed" in err


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_dynamic_int8_recurrent_checkpoint_compresses_and_exports_to_onnx(tmp_path, capsys, arch):
    pytest.importorskip("onnxruntime")
    assert main(["train", arch, "--arg", "hidden_size=24", "--out", str(tmp_path / arch)] + FAST) == 0
    out = tmp_path / "q"
    code, text, err = run(capsys, "compress", str(tmp_path / arch), "--quantize", "dynamic", "--out", str(out))
    assert code == 0, err
    assert "verified with onnxruntime" in text and (out / "model.onnx").is_file()
    import onnx
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"Loop", "MatMulInteger"} <= ops
    # `forgegrad export` rebuilds the compressed checkpoint and exports it the same way
    code, text, err = run(capsys, "export", str(out), "--out", str(tmp_path / "again.onnx"))
    assert code == 0, err
    assert "PASS" in text
