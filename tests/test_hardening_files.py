"""Regression tests for checkpoint and ONNX file handling (issue #12, items 1, 3 and 4): nothing in a
checkpoint folder is imported, load reads only regular files and validates the header first with a
bounded peak, saves keep permissions and symlinks and clean up their temp files."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import forgegrad as fg
from forgegrad import _atomic_io, nn
from forgegrad.onnx import OnnxVerificationError, export
from forgegrad.onnx import _export
from forgegrad.onnx.__main__ import main as onnx_main
from forgegrad.serialization import load, load_metadata, save

from hardening_util import PYTHON_DIR, run_py

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes, FIFOs and signals")


# ---- 1. a checkpoint folder's model.json may only name zoo models -----------------------------------
def test_model_json_module_attr_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    (tmp_path / "model.json").write_text(json.dumps(
        {"name": "subprocess:run", "kwargs": {"args": ["touch", str(marker)]}, "input_shape": [4]}))
    rc = onnx_main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "'subprocess:run'" in err and "zoo" in err
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("name", [None, 3, ["mlp"], "os:system", "no_such_model"])
def test_model_json_bad_names_are_usage_errors(tmp_path, capsys, name):
    (tmp_path / "model.json").write_text(json.dumps({"name": name, "kwargs": {}}))
    assert onnx_main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "zoo" in capsys.readouterr().err


def test_model_json_kwargs_must_be_an_object(tmp_path, capsys):
    (tmp_path / "model.json").write_text(json.dumps({"name": "mlp", "kwargs": ["x"]}))
    assert onnx_main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "'kwargs' must be a JSON object" in capsys.readouterr().err


# ---- 3. the reserved safetensors key ------------------------------------------------------------------
def test_save_rejects_metadata_tensor_name_before_touching_the_file(tmp_path):
    path = tmp_path / "ck.safetensors"
    save({"w": np.ones(3, np.float32)}, path)
    before = path.read_bytes()
    for state in ({"__metadata__": np.ones(2, np.float32)},
                  {"__metadata__": np.ones(2, np.float32), "epoch": 1}):  # nested checkpoints too
        with pytest.raises(ValueError, match="'__metadata__' is reserved"):
            save(state, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ck.safetensors"]


# ---- 4. load: regular files only, header first, bounded memory ---------------------------------------
@posix_only
def test_load_refuses_devices_quickly():
    for fn in (load, load_metadata):
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="character device, not a regular file"):
            fn("/dev/zero")
        assert time.monotonic() - t0 < 5


@posix_only
def test_load_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "ck.safetensors"
    os.mkfifo(fifo)
    r = run_py(f"""
        from forgegrad.serialization import load, load_metadata
        for fn in (load, load_metadata):
            try:
                fn({str(fifo)!r})
            except ValueError as e:
                assert "FIFO, not a regular file" in str(e), e
        print("OK")
    """, timeout=30)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


@pytest.mark.parametrize("header", [
    (2**63).to_bytes(8, "little") + b"{}",                     # header length past the file
    (10).to_bytes(8, "little") + b'{"a": 1}  ',                # entry not an object
    (60).to_bytes(8, "little") + json.dumps(                   # claims 4 TB of data
        {"a": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}}).encode().ljust(60),
    (60).to_bytes(8, "little") + json.dumps(                   # shape and offsets disagree
        {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode().ljust(60) + bytes(8),
    (60).to_bytes(8, "little") + json.dumps(                   # unknown dtype
        {"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}).encode().ljust(60) + bytes(1),
])
def test_bad_headers_are_rejected_before_reading_data(tmp_path, header):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(header)
    with pytest.raises(ValueError, match="not a valid safetensors checkpoint"):
        load(path)


def test_load_peak_memory_is_about_the_file_size(tmp_path):
    path = tmp_path / "big.safetensors"
    save({"a": np.ones((1024, 1024), np.float32), "b": np.arange(1 << 20, dtype=np.int64)}, path)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        out = load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 1.1 * size, (peak, size)
    assert out["a"].flags.writeable and out["a"].flags.owndata and float(out["a"].sum()) == 1024 * 1024
    assert np.array_equal(out["b"], np.arange(1 << 20))


def test_roundtrip_all_dtypes_and_odd_shapes(tmp_path):
    import safetensors.numpy as stnp
    arrays = {"f64": np.linspace(0, 1, 5), "f16": np.ones((2, 3), np.float16), "i8": np.arange(-3, 3, dtype=np.int8),
              "u16": np.arange(4, dtype=np.uint16), "b": np.array([True, False, True]),
              "scalar": np.array(2.5, np.float32), "empty": np.zeros((0, 4), np.float32)}
    path = tmp_path / "d.safetensors"
    path.write_bytes(stnp.save(arrays, metadata={"k": "v"}))  # written by the reference library
    out = load(path)
    for k, v in arrays.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape and np.array_equal(out[k], v), k
    assert load_metadata(path) == {"k": "v"}


# ---- 4. save: permissions, symlinks, temp files ---------------------------------------------------------
def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def _tiny_onnx():
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph)


WRITERS = {
    "checkpoint": lambda p: save({"w": np.ones(2, np.float32)}, p),
    "onnx": lambda p: _export.atomic_save(_tiny_onnx(), p),
}


@posix_only
@pytest.mark.parametrize("kind", list(WRITERS))
def test_saved_files_get_umask_default_and_keep_existing_mode(tmp_path, kind):
    write = WRITERS[kind]
    old = os.umask(0o022)
    try:
        write(tmp_path / "new")
        assert _mode(tmp_path / "new") == 0o644
        os.umask(0o077)
        write(tmp_path / "new")  # overwriting keeps the file's mode, whatever the umask
        assert _mode(tmp_path / "new") == 0o644
        os.chmod(tmp_path / "new", 0o640)
        write(tmp_path / "new")
        assert _mode(tmp_path / "new") == 0o640
    finally:
        os.umask(old)


@posix_only
@pytest.mark.parametrize("kind", list(WRITERS))
def test_saving_to_a_symlink_writes_through(tmp_path, kind):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "file"
    target.write_bytes(b"old")
    link = tmp_path / "link"
    link.symlink_to(os.path.join("real", "file"))  # relative, resolved from the link's folder
    WRITERS[kind](link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("real", "file")
    assert target.read_bytes() != b"old"
    if kind == "checkpoint":
        assert np.array_equal(load(link)["w"], np.ones(2, np.float32))
    else:
        assert onnx.load(str(link)).graph.node[0].op_type == "Identity"
    assert sorted(os.listdir(tmp_path / "real")) == ["file"]


@posix_only
def test_stale_temp_files_of_dead_savers_are_removed(tmp_path):
    path = tmp_path / "ck.safetensors"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".ck.safetensors.{_atomic_io.TMP_TAG}.{dead.pid}.0123abcd"
    live = tmp_path / f".ck.safetensors.{_atomic_io.TMP_TAG}.{os.getppid()}.0123abcd"  # a running saver's
    other = tmp_path / f".other.safetensors.{_atomic_io.TMP_TAG}.{dead.pid}.0123abcd"  # another target's
    unrelated = tmp_path / ".ck.safetensors.tmp"                                         # not our pattern
    for p in (stale, live, other, unrelated):
        p.write_bytes(b"partial")
    save({"w": np.ones(2, np.float32)}, path)
    assert not stale.exists() and live.exists() and other.exists() and unrelated.exists()


def test_exceptions_remove_the_temp_file(tmp_path):
    def boom(f):
        f.write(b"half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        _atomic_io.atomic_write(tmp_path / "x", boom)
    assert os.listdir(tmp_path) == []


@posix_only
def test_sigkill_mid_save_keeps_old_file_and_next_save_cleans_up(tmp_path):
    path = tmp_path / "ck.safetensors"
    save({"w": np.zeros(4, np.float32)}, path)
    code = f"""
import numpy as np, forgegrad._atomic_io as io
def slow(f):
    f.write(b"x" * 4096); f.flush(); print("writing", flush=True)
    import time; time.sleep(60)
io.atomic_write({str(path)!r}, slow)
"""
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.stdout.close()
    leftovers = [n for n in os.listdir(tmp_path) if n != "ck.safetensors"]
    assert len(leftovers) == 1 and _atomic_io.TMP_TAG in leftovers[0]
    assert np.array_equal(load(path)["w"], np.zeros(4, np.float32))  # the old file is intact
    save({"w": np.ones(4, np.float32)}, path)
    assert os.listdir(tmp_path) == ["ck.safetensors"]


# ---- 3. ONNX verification and NaN ----------------------------------------------------------------------
def test_onnx_verification_fails_for_an_all_nan_model(tmp_path):
    model = nn.Linear(3, 2)
    model.weight._data[...] = np.nan
    with pytest.raises(OnnxVerificationError, match="not verified: forgegrad's output is NaN/inf everywhere"):
        export(model, (fg.randn(2, 3),), str(tmp_path / "nan.onnx"))


def test_onnx_compare_nan_rules():
    from forgegrad.onnx._verify import _compare
    w = np.array([1.0, np.nan, np.inf], np.float32)
    assert _compare("y", w.copy(), w, 1e-5, 1e-6).ok                       # same NaN/inf at the same places
    assert not _compare("y", np.array([np.nan, np.nan, np.inf], np.float32), w, 1e-5, 1e-6).ok
    assert not _compare("y", np.array([1.0, 0.0, np.inf], np.float32), w, 1e-5, 1e-6).ok
    assert not _compare("y", np.array([1.0, np.nan, 5.0], np.float32), w, 1e-5, 1e-6).ok  # inf vs finite
