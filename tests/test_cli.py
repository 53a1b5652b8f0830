"""The forgegrad command, run in-process through ``main([...])`` with small, fast settings: every
subcommand, its outputs and its error paths (exit code 2 usage, 1 runtime, 130 interrupted; one line,
no traceback)."""
import json
import os
import sys

import numpy as np
import pytest

import forgegrad.models as zoo
from forgegrad.cli import main

FAST = ["--epochs", "2", "--batch-size", "128", "--no-progress"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err, *needles):
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1, err  # one line, no traceback
    assert lines[0].startswith("forgegrad: error: "), err
    for n in needles:
        assert n in lines[0], (n, err)


def expect_error(capsys, want_code, argv, *needles):
    """Runs `forgegrad ARGV`: it must exit with want_code and print one error line holding every needle."""
    code, _, err = run(capsys, *argv)
    assert code == want_code
    one_line_error(err, *needles)


@pytest.fixture(scope="module")
def mlp_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp")
    assert main(["train", "mlp", "--data", "digits", "--arg", "hidden=[32]", "--lr", "3e-3", "--out", str(out)]
                + FAST) == 0
    return out


# ---- top level -------------------------------------------------------------------------------------
def test_help_and_usage_errors(capsys):
    assert run(capsys, "--help")[0] == 0
    assert run(capsys, "--version")[0] == 0
    code, _, err = run(capsys)
    assert code == 2 and "COMMAND" in err
    code, _, err = run(capsys, "fly")
    assert code == 2 and "invalid choice" in err
    code, _, err = run(capsys, "train", "mlp", "--epochs", "0")
    assert code == 2 and "--epochs" in err


def test_module_entry_point_runs(tmp_path):
    import subprocess
    import forgegrad
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(forgegrad.__file__)))
    r = subprocess.run([sys.executable, "-m", "forgegrad.cli", "train", "nosuch"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("forgegrad: error: unknown model 'nosuch'") and "Traceback" not in r.stderr


# ---- train -------------------------------------------------------------------------------------------
def test_train_writes_a_rebuildable_checkpoint_and_curve(mlp_ckpt):
    files = set(os.listdir(mlp_ckpt))
    assert {"model.safetensors", "model.json", "training_curve.png"} <= files
    meta = json.loads((mlp_ckpt / "model.json").read_text())
    assert meta["name"] == "mlp"
    assert meta["kwargs"] == {"in_features": 64, "out_features": 10, "hidden": [32]}
    assert meta["epochs_completed"] == 2 and len(meta["history"]) == 2
    assert meta["history"][-1]["val_accuracy"] > 0.5
    model = zoo.from_config(meta)
    from safetensors.numpy import load_file
    model.load_state_dict(load_file(str(mlp_ckpt / "model.safetensors")))


def test_train_prints_progress_and_metrics(capsys, tmp_path):
    code, out, _ = run(capsys, "train", "mlp", "--arg", "hidden=[16]", "--out", str(tmp_path), "--no-plot",
                       "--threads", "1", "--optimizer", "sgd", "--lr", "0.05", *FAST)
    assert code == 0
    assert "epoch 1/2" in out and "epoch 2/2" in out and "val_accuracy" in out
    assert "checkpoint:" in out
    assert not (tmp_path / "training_curve.png").exists()


def test_train_vae_then_eval(capsys, tmp_path):
    code, out, _ = run(capsys, "train", "vae", "--arg", "hidden=[32]", "--arg", "latent=4", "--out", str(tmp_path),
                       "--no-plot", *FAST)
    assert code == 0 and "val_recon_mse" in out
    code, out, _ = run(capsys, "eval", str(tmp_path), "--json")
    assert code == 0
    m = json.loads(out)
    assert m["model"] == "vae" and m["split"] == "val" and m["loss"] > 0 and 0 < m["recon_mse"] < 1
    # a VAE exports its deterministic reconstruction x -> decode(mu(x))
    code, out, err = run(capsys, "export", str(tmp_path), "--out", str(tmp_path / "vae.onnx"))
    assert code == 0, err
    import onnxruntime as ort
    from forgegrad.cli import _checkpoint
    model, _ = _checkpoint.load(str(tmp_path))
    sess = ort.InferenceSession(str(tmp_path / "vae.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    (recon,) = sess.run(None, {sess.get_inputs()[0].name: x})
    np.testing.assert_allclose(recon, model.reconstruct(x).numpy(), rtol=1e-5, atol=1e-6)


def test_train_on_npz_and_csv_files(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.savetxt(tmp_path / "d.csv", np.column_stack([x, y]), delimiter=",")
    for f in ("d.npz", "d.csv"):
        out = tmp_path / (f + ".run")
        code, stdout, err = run(capsys, "train", "mlp", "--data", str(tmp_path / f), "--out", str(out), "--no-plot",
                                *FAST)
        assert code == 0, err
        assert json.loads((out / "model.json").read_text())["kwargs"]["out_features"] == 2
        code, stdout, _ = run(capsys, "eval", str(out), "--split", "all")
        assert code == 0 and "60 samples" in stdout


def test_train_unknown_model_lists_valid_ones(capsys):
    expect_error(capsys, 2, ["train", "resnet", *FAST], "unknown model 'resnet'", *zoo.available())


def test_train_unknown_dataset_and_bad_paths(capsys, tmp_path):
    expect_error(capsys, 2, ["train", "mlp", "--data", "mnist", *FAST], "unknown data set 'mnist'", "digits")
    expect_error(capsys, 2, ["train", "mlp", "--data", str(tmp_path / "missing.npz"), *FAST],
                 "data file not found", "missing.npz")
    expect_error(capsys, 2, ["train", "mlp", "--data", str(tmp_path), *FAST], "is a directory")
    (tmp_path / "x.json").write_text("{}")
    expect_error(capsys, 2, ["train", "mlp", "--data", str(tmp_path / "x.json"), *FAST],
                 "unsupported data file type '.json'")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    expect_error(capsys, 2, ["train", "mlp", "--data", str(tmp_path / "bad.npz"), *FAST], "cannot read data file")
    (tmp_path / "file").write_text("x")
    expect_error(capsys, 2, ["train", "mlp", "--out", str(tmp_path / "file"), *FAST], "not a directory")


def test_train_data_that_does_not_fit_the_model(capsys, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((20, 7), dtype=np.float32),
             y=np.arange(20) % 2)
    expect_error(capsys, 2, ["train", "lenet8", "--data", str(tmp_path / "d.npz"), *FAST],
                 "cannot view samples of shape (7,) as square images")
    np.savez(tmp_path / "big.npz", x=np.full((20, 4), 3.0, np.float32))
    expect_error(capsys, 2, ["train", "vae", "--data", str(tmp_path / "big.npz"), *FAST], "needs inputs in [0, 1]")
    expect_error(capsys, 2, ["train", "mlp", "--data", str(tmp_path / "big.npz"), *FAST], "has no labels")
    (tmp_path / "t.txt").write_text("hello world " * 20)
    expect_error(capsys, 2, ["train", "mlp", "--data", str(tmp_path / "t.txt"), *FAST], "only char_lstm trains on text")
    expect_error(capsys, 2, ["train", "char_lstm", *FAST], "give it a text file")


def test_train_char_lstm_on_text(capsys, tmp_path):
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog. " * 12)
    code, out, err = run(capsys, "train", "char_lstm", "--data", str(tmp_path / "t.txt"), "--out", str(tmp_path / "r"),
                         "--arg", "hidden_size=16", "--arg", "embed_dim=8", "--no-plot", *FAST)
    assert code == 0, err
    assert "val_perplexity" in out
    meta = json.loads((tmp_path / "r" / "model.json").read_text())
    assert meta["vocab"] == "".join(sorted(set("the quick brown fox jumps over the lazy dog. ")))
    assert meta["kwargs"]["vocab_size"] == len(meta["vocab"])
    code, out, err = run(capsys, "eval", str(tmp_path / "r"), "--json")
    assert code == 0, err
    assert json.loads(out)["perplexity"] > 1
    (tmp_path / "other.txt").write_text("ZZZ " * 100)
    expect_error(capsys, 2, ["eval", str(tmp_path / "r"), "--data", str(tmp_path / "other.txt")],
                 "characters the model's vocabulary lacks", "Z")


def test_train_bad_model_arguments(capsys):
    expect_error(capsys, 2, ["train", "mlp", "--arg", "units=3", *FAST],
                 "unexpected keyword argument 'units'", "in_features")
    expect_error(capsys, 2, ["train", "mlp", "--arg", "no_equals_sign", *FAST], "KEY=VALUE")
    expect_error(capsys, 2, ["train", "mlp", "--arg", "activation=swish", *FAST], "unknown activation 'swish'")


@pytest.mark.parametrize("name", ["lenet8", "gru", "conv_vae"])
def test_train_models_that_need_other_layers(capsys, tmp_path, name):
    # 80 real digits as 8x8 images keep this fast: the point is the plumbing (shapes, checkpoint, eval)
    from forgegrad.datasets import load_digits
    x, y = load_digits()
    np.savez(tmp_path / "d.npz", x=x[:80].reshape(80, 8, 8), y=y[:80])
    extra = {"lenet8": ["--arg", "hidden=16"], "gru": ["--arg", "hidden_size=8"],
             "conv_vae": ["--arg", "hidden=16", "--arg", "latent=4"]}[name]
    code, out, err = run(capsys, "train", name, "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"),
                         "--no-plot", "--epochs", "1", "--batch-size", "32", "--no-progress", *extra)
    assert code == 0, err
    assert (tmp_path / "run" / "model.safetensors").exists()
    code, out, err = run(capsys, "eval", str(tmp_path / "run"), "--json")
    assert code == 0, err
    assert json.loads(out)["samples"] == 16


def test_train_without_matplotlib_says_which_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, _ = run(capsys, "train", "mlp", "--arg", "hidden=[8]", "--out", str(tmp_path), *FAST)
    assert code == 0
    assert 'pip install "forgegrad[plot]"' in out
    assert not (tmp_path / "training_curve.png").exists()


def test_ctrl_c_during_training_keeps_the_last_checkpoint(capsys, tmp_path, monkeypatch):
    from forgegrad.cli import train as train_cmd
    real = train_cmd.build_optimizer
    steps_per_epoch = -(-int(1797 * 0.8 + 0.5) // 128)

    def interrupting(name, params, lr):
        opt = real(name, params, lr)
        step, calls = opt.step, [0]

        def step_then_interrupt():
            calls[0] += 1
            if calls[0] == steps_per_epoch + 3:  # in the middle of epoch 2
                raise KeyboardInterrupt
            step()

        opt.step = step_then_interrupt
        return opt

    monkeypatch.setattr(train_cmd, "build_optimizer", interrupting)
    code, _, err = run(capsys, "train", "mlp", "--arg", "hidden=[8]", "--out", str(tmp_path), "--no-plot",
                       "--epochs", "3", "--batch-size", "128", "--no-progress")
    assert code == 130
    one_line_error(err, "interrupted during epoch 2", "epoch 1 is kept")
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["epochs_completed"] == 1
    assert main(["eval", str(tmp_path)]) == 0


def test_ctrl_c_in_the_first_epoch_says_nothing_was_saved(capsys, tmp_path, monkeypatch):
    from forgegrad.cli import train as train_cmd
    real = train_cmd.build_optimizer

    def interrupting(name, params, lr):
        opt = real(name, params, lr)

        def interrupt():
            raise KeyboardInterrupt

        opt.step = interrupt
        return opt

    monkeypatch.setattr(train_cmd, "build_optimizer", interrupting)
    code, _, err = run(capsys, "train", "mlp", "--out", str(tmp_path), *FAST)
    assert code == 130
    one_line_error(err, "interrupted during epoch 1", "no checkpoint was written")
    assert not (tmp_path / "model.safetensors").exists()


# ---- eval --------------------------------------------------------------------------------------------
def test_eval_accepts_the_directory_json_or_weights(capsys, mlp_ckpt):
    results = []
    for target in (mlp_ckpt, mlp_ckpt / "model.json", mlp_ckpt / "model.safetensors"):
        code, out, _ = run(capsys, "eval", str(target), "--json")
        assert code == 0
        results.append(json.loads(out))
    assert results[0] == results[1] == results[2]
    m = results[0]
    assert m["split"] == "val" and m["samples"] == 359 and 0.5 < m["accuracy"] <= 1
    meta = json.loads((mlp_ckpt / "model.json").read_text())
    assert m["accuracy"] == pytest.approx(meta["history"][-1]["val_accuracy"])
    code, out, _ = run(capsys, "eval", str(mlp_ckpt), "--split", "all")
    assert code == 0 and "1797 samples" in out and "accuracy" in out


def test_eval_errors(capsys, tmp_path, mlp_ckpt):
    expect_error(capsys, 2, ["eval", str(tmp_path / "nope")], "checkpoint not found")
    expect_error(capsys, 2, ["eval", str(tmp_path)], "is not a forgegrad checkpoint")
    (tmp_path / "model.json").write_text("[1, 2]")
    expect_error(capsys, 2, ["eval", str(tmp_path)], "is not a forgegrad checkpoint")
    # weights that do not fit the model
    bad = tmp_path / "bad"
    bad.mkdir()
    meta = json.loads((mlp_ckpt / "model.json").read_text())
    meta["kwargs"]["hidden"] = [5]
    (bad / "model.json").write_text(json.dumps(meta))
    (bad / "model.safetensors").write_bytes((mlp_ckpt / "model.safetensors").read_bytes())
    expect_error(capsys, 1, ["eval", str(bad)], "cannot load weights", "size mismatch")
    (bad / "model.safetensors").write_bytes(b"garbage")
    expect_error(capsys, 1, ["eval", str(bad)], "cannot load weights")
    expect_error(capsys, 2, ["eval", str(mlp_ckpt), "--data", "mnist"], "unknown data set 'mnist'")


# ---- export ------------------------------------------------------------------------------------------
def test_export_verifies_in_onnxruntime(capsys, tmp_path, mlp_ckpt):
    path = tmp_path / "model.onnx"
    code, out, err = run(capsys, "export", str(mlp_ckpt), "--out", str(path))
    assert code == 0, err
    assert path.stat().st_size > 0
    assert "parity report" in out
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    (logits,) = sess.run(None, {sess.get_inputs()[0].name: x})
    assert logits.shape == (3, 10)


def test_export_errors(capsys, tmp_path, mlp_ckpt, monkeypatch):
    expect_error(capsys, 2, ["export", str(mlp_ckpt), "--out", str(tmp_path / "no" / "dir" / "m.onnx")],
                 "does not exist")
    expect_error(capsys, 2, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "m.onnx")],
                 "checkpoint not found")
    code, _, err = run(capsys, "export", str(mlp_ckpt))
    assert code == 2 and "--out" in err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    expect_error(capsys, 1, ["export", str(mlp_ckpt), "--out", str(tmp_path / "m.onnx")],
                 'pip install "forgegrad[onnx]"')


# ---- quickstart ----------------------------------------------------------------------------------------
def test_quickstart_quick(capsys, tmp_path):
    code, out, err = run(capsys, "quickstart", "--quick", "--out", str(tmp_path))
    assert code == 0, err
    assert "validation accuracy" in out and "parity" in out.lower()
    assert "GEMM" in out and "MLP step" in out and "torch" in out
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "model.safetensors").exists()


# ---- bench ---------------------------------------------------------------------------------------------
def test_bench_train_suite_writes_a_report(capsys, tmp_path):
    code, out, err = run(capsys, "bench", "train", "--quick", "--threads", "1", "--report", str(tmp_path))
    assert code == 0, err
    assert "== train" in out and "VAE 784-400-20" in out and "MLP 784-256-10" in out
    assert {"report.md", "results.json", "speedup_train.png", "summary.png"} <= set(os.listdir(tmp_path))
    report = (tmp_path / "report.md").read_text()
    assert "| suite | workload | threads | forgegrad |" in report and "vs torch" in report
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["results"]
    assert {r["workload"].split(" ")[0] for r in rows} == {"MLP", "VAE"}
    assert all(r["threads"] == 1 and r["seconds"]["forgegrad"] > 0 and r["seconds"]["torch"] > 0 for r in rows)
    assert all(len(r["samples"]["forgegrad"]) == len(r["samples"]["torch"]) >= 3 for r in rows)
    fp = results["fingerprint"]
    assert fp["versions"]["torch"] and fp["cpu"]["logical_cores"] >= 1 and "active_isa" in fp["forgegrad_runtime"]
    assert "## Machine" in report and "![speedup_train.png](speedup_train.png)" in report


def test_bench_reports_missing_runtimes_as_absent(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    code, out, err = run(capsys, "bench", "vae", "--quick", "--report", str(tmp_path))
    assert code == 0, err
    assert "absent" in out
    assert "VAE 784-400-20" in out and "MLP" not in out  # the alias keeps the train suite's VAE rows
    report = (tmp_path / "report.md").read_text()
    assert "absent" in report and "torch absent" in report


def test_bench_errors(capsys, tmp_path):
    expect_error(capsys, 2, ["bench", "nosuch"], "unknown benchmark suite 'nosuch'", "train", "all")
    expect_error(capsys, 2, ["bench", "train", "--threads", "0"], "--threads")
    code, _, err = run(capsys, "bench", "train", "--threads", "one")
    assert code == 2
    code, _, err = run(capsys, "bench", "train", "--threads", "1", "0")
    assert code == 2
    from forgegrad.cli.bench import parse_threads
    assert parse_threads(["1", "2"]) == parse_threads("1,2") == parse_threads(["1,2"]) == [1, 2]
    (tmp_path / "f").write_text("x")
    expect_error(capsys, 2, ["bench", "train", "--report", str(tmp_path / "f")], "not a directory")


def test_quickstart_usage_errors_and_table_format(capsys):
    assert run(capsys, "quickstart", "--threads", "0")[0] == 2
    assert run(capsys, "quickstart", "--epochs", "-1")[0] == 2
    from forgegrad.cli.quickstart import format_table
    lines = format_table([("w", {"forgegrad": 0.002, "torch": None}), ("v", {"forgegrad": 0.001, "torch": 0.003})])
    assert "absent" in lines[2] and "-" in lines[2]  # torch not installed; numpy not measured
    assert lines[3].rstrip().endswith("3.00x")
