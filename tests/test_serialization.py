"""forgegrad.save / load: safetensors checkpoints, atomic writes, clear errors."""
import os

import numpy as np
import pytest
import safetensors.numpy as stnp

import forgegrad as fg
from forgegrad import nn
from forgegrad.serialization import load, load_metadata, save


def _model():
    fg.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


def test_roundtrip_state_dict_and_load_state_dict(tmp_path):
    m = _model()
    path = tmp_path / "m.safetensors"
    save(m.state_dict(), path)
    loaded = load(path)
    assert set(loaded) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for k, v in m.state_dict().items():
        assert loaded[k].dtype == np.float32
        np.testing.assert_array_equal(loaded[k], v._data)
    m2 = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    m2.load_state_dict(load(path))
    x = fg.randn(4, 5)
    np.testing.assert_array_equal(m2(x)._data, m(x)._data)


def test_values_may_be_tensors_parameters_arrays(tmp_path):
    sd = {"t": fg.tensor([1.0, 2.0]), "p": nn.Parameter(np.ones((2, 3), np.float32)),
          "a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.array([True, False]),
          "s": np.float32(3.5), "f64": np.linspace(0, 1, 3)}
    save(sd, str(tmp_path / "x.safetensors"))
    out = load(tmp_path / "x.safetensors")
    np.testing.assert_array_equal(out["t"], [1.0, 2.0])
    np.testing.assert_array_equal(out["p"], np.ones((2, 3)))
    assert out["a"].dtype == np.int64 and out["b"].dtype == bool and out["f64"].dtype == np.float64
    assert out["s"].shape == () and out["s"] == 3.5
    out["a"][0, 0] = 99  # loaded arrays are writable and independent of the file
    assert load(tmp_path / "x.safetensors")["a"][0, 0] == 0


def test_noncontiguous_arrays_saved_by_value(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    save({"t": a.T, "s": a[:, ::2]}, tmp_path / "c.safetensors")
    out = load(tmp_path / "c.safetensors")
    np.testing.assert_array_equal(out["t"], a.T)
    np.testing.assert_array_equal(out["s"], a[:, ::2])


def test_file_is_plain_safetensors_readable_by_torch(tmp_path):
    import safetensors.torch as sttorch
    m = _model()
    save(m.state_dict(), tmp_path / "m.safetensors", metadata={"format": "pt", "epoch": "3"})
    raw = stnp.load_file(str(tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(raw["0.weight"], m[0].weight._data)
    tt = sttorch.load_file(str(tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(tt["2.bias"].numpy(), m[2].bias._data)
    assert load_metadata(tmp_path / "m.safetensors") == {"format": "pt", "epoch": "3"}


def test_overwrite_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ck.safetensors"
    save({"w": np.zeros(3, np.float32)}, path)
    save({"w": np.ones(3, np.float32)}, path)
    np.testing.assert_array_equal(load(path)["w"], np.ones(3))
    assert os.listdir(tmp_path) == ["ck.safetensors"]


# (lists, python scalars and nested dicts are saved as nested checkpoints: test_serialization_nested.py)
@pytest.mark.parametrize("bad", [{"w": {1.0, 2.0}}, {"w": object()}, {"w": np.array(["a", "b"])},
                                 {"w": {"nested": {1, 2}}}])
def test_bad_value_fails_and_keeps_old_file(tmp_path, bad):
    path = tmp_path / "ck.safetensors"
    save({"w": np.arange(3, dtype=np.float32)}, path)
    with pytest.raises(TypeError, match="'w'"):
        save(bad, path)
    np.testing.assert_array_equal(load(path)["w"], [0, 1, 2])
    assert os.listdir(tmp_path) == ["ck.safetensors"]


def test_non_str_int_key_rejected(tmp_path):
    with pytest.raises(TypeError, match="keys must be str or int"):
        save({1.5: np.zeros(2)}, tmp_path / "k.safetensors")
    with pytest.raises(TypeError, match="dict"):
        save([np.zeros(2)], tmp_path / "k.safetensors")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_exception_mid_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch, where, exc):
    path = tmp_path / "ck.safetensors"
    save({"w": np.arange(4, dtype=np.float32)}, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise exc

    if where == "write":  # the temp file is opened via os.fdopen: fail its write part-way
        real_fdopen = os.fdopen

        def fdopen(fd, mode="r", *a, **k):
            f = real_fdopen(fd, mode, *a, **k)

            class Half:
                def __enter__(self):
                    return self

                def __exit__(self, *e):
                    f.close()
                    return False

                def write(self, data):
                    f.write(data[: len(data) // 2])
                    raise exc

                def __getattr__(self, name):
                    return getattr(f, name)

            return Half()

        monkeypatch.setattr(os, "fdopen", fdopen)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    else:
        monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(type(exc)):
        save({"w": np.full(1000, 7, np.float32)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.safetensors"]


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save({"w": np.zeros(1)}, tmp_path / "no_dir" / "x.safetensors")
    with pytest.raises(IsADirectoryError):
        load(tmp_path)


@pytest.mark.parametrize("cut", [3, 8, 20, -1])
def test_truncated_file_clear_error(tmp_path, cut):
    path = tmp_path / "ck.safetensors"
    save({"w": np.arange(50, dtype=np.float32)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="not a valid safetensors checkpoint"):
        load(path)


def test_corrupt_file_clear_error(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a valid"):
        load(path)
    with pytest.raises(ValueError, match="not a valid"):
        load_metadata(path)


def test_load_state_dict_shape_mismatch_from_file(tmp_path):
    save({"0.weight": np.zeros((2, 2), np.float32), "0.bias": np.zeros(2, np.float32)}, tmp_path / "s.safetensors")
    m = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="size mismatch"):
        m.load_state_dict(load(tmp_path / "s.safetensors"))
