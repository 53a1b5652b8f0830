"""forgegrad.datasets: scikit-learn's digits, seeded splits, IDX / MNIST, npz and CSV readers."""
import gzip
import struct
import sys

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import datasets


# ---- bundled datasets ---------------------------------------------------------------------------
def test_load_digits_real_data():
    from sklearn.datasets import load_digits as sk_digits
    X, y = datasets.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    ref = sk_digits()
    np.testing.assert_allclose(X, ref.data / 16.0, rtol=1e-6)
    np.testing.assert_array_equal(y, ref.target)


def test_load_digits_split_seeded_and_stratified():
    (Xtr, ytr), (Xte, yte) = datasets.load_digits(return_split=True, test_size=0.2, seed=0)
    assert len(Xtr) + len(Xte) == 1797 and len(Xte) == 360
    assert Xtr.dtype == np.float32 and ytr.dtype == np.int64
    counts = np.bincount(yte, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # every class ~20 %
    (Xtr2, _), (Xte2, _) = datasets.load_digits(return_split=True, test_size=0.2, seed=0)
    np.testing.assert_array_equal(Xte, Xte2)
    (_, _), (Xte3, _) = datasets.load_digits(return_split=True, test_size=0.2, seed=1)
    assert not np.array_equal(Xte, Xte3)
    assert len(Xtr) == 1437
    # the two parts together are the whole dataset (as a multiset of rows)
    X, _ = datasets.load_digits()
    key = lambda A: sorted(r.tobytes() for r in A)  # noqa: E731
    assert key(np.concatenate([Xtr, Xte])) == key(X)


def test_load_breast_cancer():
    X, y = datasets.load_breast_cancer()
    assert X.shape == (569, 30) and X.dtype == np.float32 and set(np.unique(y)) == {0, 1}


def test_missing_sklearn_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes "import sklearn" raise ImportError
    with pytest.raises(ImportError, match=r'pip install "forgegrad\[data\]"'):
        datasets.load_digits()


def test_train_test_split():
    X = np.arange(40).reshape(20, 2)
    y = np.arange(20)
    Xtr, Xte, ytr, yte = datasets.train_test_split(X, y, test_size=0.25, seed=3)
    assert len(Xte) == 5 and len(Xtr) == 15
    np.testing.assert_array_equal(Xtr[:, 0] // 2, ytr)  # rows stay paired
    assert sorted(np.concatenate([ytr, yte])) == list(range(20))
    again = datasets.train_test_split(X, y, test_size=0.25, seed=3)
    np.testing.assert_array_equal(again[3], yte)
    _, Xte_ns, _, yte_ns = datasets.train_test_split(X, y, test_size=4, shuffle=False)
    np.testing.assert_array_equal(yte_ns, [16, 17, 18, 19])
    fg.manual_seed(5)
    a = datasets.train_test_split(y, seed=None)[1]
    fg.manual_seed(5)
    np.testing.assert_array_equal(datasets.train_test_split(y, seed=None)[1], a)


def test_train_test_split_errors():
    with pytest.raises(ValueError, match="different numbers of samples"):
        datasets.train_test_split(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        datasets.train_test_split(np.zeros(5), test_size=1.5)
    with pytest.raises(ValueError, match="non-empty"):
        datasets.train_test_split(np.zeros(5), test_size=5)
    with pytest.raises(TypeError, match="test_size"):
        datasets.train_test_split(np.zeros(5), test_size="half")


# ---- IDX / MNIST --------------------------------------------------------------------------------
def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    be = arr.astype(arr.dtype.newbyteorder(">"))
    return bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + be.tobytes()


def _write(path, data: bytes, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C),
                                        (np.float32, 0x0D), (np.float64, 0x0E)])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_types(tmp_path, dtype, code, gz):
    arr = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5) if dtype != np.uint8 else \
        np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    p = _write(tmp_path / ("a.idx" + (".gz" if gz else "")), _idx_bytes(arr, code), gz)
    out = datasets.read_idx(p)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_errors(tmp_path):
    good = _idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4), 0x08)
    with pytest.raises(FileNotFoundError):
        datasets.read_idx(tmp_path / "missing")
    with pytest.raises(ValueError, match="magic number"):
        datasets.read_idx(_write(tmp_path / "m", b"\x01\x02" + good[2:]))
    with pytest.raises(ValueError, match="unknown IDX data type code 0x07"):
        datasets.read_idx(_write(tmp_path / "t", good[:2] + b"\x07" + good[3:]))
    with pytest.raises(ValueError, match="truncated IDX header"):
        datasets.read_idx(_write(tmp_path / "h", good[:6]))
    with pytest.raises(ValueError, match="shorter than the 4-byte"):
        datasets.read_idx(_write(tmp_path / "s", b"\x00\x00"))
    with pytest.raises(ValueError, match="size mismatch"):
        datasets.read_idx(_write(tmp_path / "d", good[:-1]))
    with pytest.raises(ValueError, match="size mismatch"):  # header claims more rows than present
        datasets.read_idx(_write(tmp_path / "r", good[:4] + struct.pack(">I", 30) + good[8:]))
    with pytest.raises(ValueError, match="0 dimensions"):
        datasets.read_idx(_write(tmp_path / "z", b"\x00\x00\x08\x00"))
    with pytest.raises(ValueError, match="corrupt gzip"):
        datasets.read_idx(_write(tmp_path / "g.gz", gzip.compress(good)[:-6]))


def _mnist_folder(folder, n_train=5, n_test=3, gz=False, dotted=False):
    rng = np.random.default_rng(0)
    parts = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        sep = "." if dotted else "-"
        suffix = ".gz" if gz else ""
        _write(folder / f"{split}-images{sep}idx3-ubyte{suffix}", _idx_bytes(imgs, 0x08), gz)
        _write(folder / f"{split}-labels{sep}idx1-ubyte{suffix}", _idx_bytes(labels, 0x08), gz)
        parts[split] = (imgs, labels)
    return parts


@pytest.mark.parametrize("gz,dotted", [(False, False), (True, False), (False, True)])
def test_load_mnist(tmp_path, gz, dotted):
    parts = _mnist_folder(tmp_path, gz=gz, dotted=dotted)
    (xtr, ytr), (xte, yte) = datasets.load_mnist(tmp_path)
    assert xtr.shape == (5, 28, 28) and xtr.dtype == np.float32 and ytr.dtype == np.int64
    np.testing.assert_allclose(xtr, parts["train"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(yte, parts["t10k"][1])
    (xtr2, _), _ = datasets.load_mnist(str(tmp_path), normalize=False, flatten=True)
    assert xtr2.shape == (5, 784) and xtr2.dtype == np.uint8


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        datasets.load_mnist(tmp_path / "nope")
    _mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        datasets.load_mnist(tmp_path)
    _write(tmp_path / "t10k-labels-idx1-ubyte", _idx_bytes(np.zeros(4, np.uint8), 0x08))
    with pytest.raises(ValueError, match="differ in count"):
        datasets.load_mnist(tmp_path)
    _write(tmp_path / "t10k-labels-idx1-ubyte", b"\x00\x00\x08\x01\x00\x00")  # corrupt header
    with pytest.raises(ValueError, match="truncated IDX header"):
        datasets.load_mnist(tmp_path)


# ---- npz ----------------------------------------------------------------------------------------
def test_load_npz(tmp_path):
    X = np.random.default_rng(0).standard_normal((6, 4))
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    np.savez(tmp_path / "d.npz", features=X, labels=y)
    Xo, yo = datasets.load_npz(tmp_path / "d.npz", x_key="features", y_key="labels")
    assert Xo.dtype == np.float32 and yo.dtype == np.int64
    np.testing.assert_allclose(Xo, X, rtol=1e-6)
    np.savez(tmp_path / "e.npz", x=X, y=np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0]))
    assert datasets.load_npz(tmp_path / "e.npz")[1].dtype == np.int64  # integral floats are labels
    np.savez(tmp_path / "r.npz", x=X, y=np.linspace(0, 1, 6))
    assert datasets.load_npz(tmp_path / "r.npz")[1].dtype == np.float32  # regression targets
    assert datasets.load_npz(tmp_path / "r.npz", y_key=None).shape == (6, 4)


def test_load_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        datasets.load_npz(tmp_path / "none.npz")
    np.savez(tmp_path / "d.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(KeyError, match=r"no array 'x'.*\['a', 'b'\]"):
        datasets.load_npz(tmp_path / "d.npz")
    np.savez(tmp_path / "m.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(ValueError, match="3 samples"):
        datasets.load_npz(tmp_path / "m.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ValueError, match="not a valid .npz"):
        datasets.load_npz(tmp_path / "bad.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        datasets.load_npz(tmp_path / "one.npy")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(ValueError, match="cannot read"):  # pickled objects are refused
        datasets.load_npz(tmp_path / "obj.npz")


# ---- csv ----------------------------------------------------------------------------------------
def test_load_csv_header_autodetect_and_target(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n1,2,0\n3.5,4,1\n\n5,6,2\n")
    X, y = datasets.load_csv(p)
    assert X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(X, [[1, 2], [3.5, 4], [5, 6]])
    np.testing.assert_array_equal(y, [0, 1, 2])
    X0, y0 = datasets.load_csv(p, target_column=0)
    np.testing.assert_array_equal(y0, [1, 3.5, 5])
    assert y0.dtype == np.float32
    _, yn = datasets.load_csv(p, target_column="b")
    np.testing.assert_array_equal(yn, [2, 4, 6])
    assert datasets.load_csv(p, target_column=None).shape == (3, 3)


def test_load_csv_no_header_and_delimiter(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("1\t2\t1\n3\t4\t0\n")
    X, y = datasets.load_csv(p, delimiter="\t", skip_header=False)
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [1, 0])
    X, y = datasets.load_csv(p, delimiter="\t", skip_header=True)  # first row dropped on request
    assert X.shape == (1, 2)


@pytest.mark.parametrize("text,match", [
    ("", "empty"),
    ("a,b\n1,2,3\n4,5,6\n", "malformed header.*2 column names.*3 columns"),
    ("a,b,c\n", "no data rows"),
    ("a,b,c\n1,2,3\n4,5\n", "line 3 has 2 columns, expected 3"),
    ("1,2,3\n4,x,6\n", "line 2: 'x' is not a number"),
])
def test_load_csv_malformed(tmp_path, text, match):
    p = tmp_path / "x.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        datasets.load_csv(p)


def test_load_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        datasets.load_csv(tmp_path / "none.csv")
    p = tmp_path / "x.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="skip_header=True"):
        datasets.load_csv(p, skip_header=False)
    with pytest.raises(ValueError, match="no column named 'z'"):
        datasets.load_csv(p, target_column="z")
    with pytest.raises(ValueError, match="out of range"):
        datasets.load_csv(p, target_column=3)
    p.write_text("1,2\n")
    with pytest.raises(ValueError, match="is a name but"):
        datasets.load_csv(p, target_column="a")
