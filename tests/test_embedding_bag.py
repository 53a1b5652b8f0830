"""nn.EmbeddingBag and F.embedding_bag against torch 2.13: values, gradients, state_dict, from_pretrained, max_norm,
ONNX in onnxruntime and errors. The op's generated checks (samples, float64, threads, meta) are in
tests/test_op_registry.py."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import nn


def _pair(num, dim, seed=0, **kw):
    t = torch.nn.EmbeddingBag(num, dim, **kw)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(np.random.default_rng(seed).standard_normal((num, dim)).astype(np.float32)))
    m = nn.EmbeddingBag(num, dim, **kw)
    m.load_state_dict({"weight": fg.tensor(t.weight.detach().numpy().copy())})
    return m, t


def _run(m, t, idx, offsets=None, psw=None, seed=1):
    """Outputs and weight (and per_sample_weights) gradients of both, for a random cotangent."""
    fx = [fg.tensor(idx), None if offsets is None else fg.tensor(offsets)]
    tx = [torch.from_numpy(idx), None if offsets is None else torch.from_numpy(offsets)]
    fp = tp = None
    if psw is not None:
        fp, tp = fg.tensor(psw, requires_grad=True), torch.from_numpy(psw.copy()).requires_grad_()
    y, yt = m(*fx, per_sample_weights=fp), t(*tx, per_sample_weights=tp)
    c = np.random.default_rng(seed).uniform(-1, 1, size=tuple(yt.shape)).astype(np.float32)
    (y * fg.tensor(c)).sum().backward()
    (yt * torch.from_numpy(c)).sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.weight.grad.numpy(), t.weight.grad.numpy(), rtol=1e-5, atol=1e-6)
    if psw is not None:
        np.testing.assert_allclose(fp.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-6)
    return y


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_offsets_match_torch(mode):
    rng = np.random.default_rng(3)
    m, t = _pair(13, 7, mode=mode)
    idx = rng.integers(0, 13, size=23).astype(np.int64)
    offsets = np.array([0, 0, 5, 6, 6, 17], np.int64)  # empty bags first, in the middle
    _run(m, t, idx, offsets)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_2d_input_padding_match_torch(mode):
    m, t = _pair(11, 5, seed=2, mode=mode, padding_idx=-2)
    idx = np.random.default_rng(4).integers(0, 11, size=(6, 3)).astype(np.int64)
    idx[2] = 9  # a bag of padding only
    idx[4, 0] = 9
    y = _run(m, t, idx)
    assert np.all(y.numpy()[2] == 0)


def test_include_last_offset_and_per_sample_weights_match_torch():
    m, t = _pair(9, 4, seed=5, mode="sum", include_last_offset=True, padding_idx=0)
    idx = np.random.default_rng(6).integers(0, 9, size=10).astype(np.int64)
    idx[3] = 0
    psw = np.random.default_rng(7).uniform(-1, 1, size=10).astype(np.float32)
    _run(m, t, idx, np.array([0, 4, 4, 10], np.int64), psw)


def test_int32_indices_and_max_ties():
    m, t = _pair(5, 3, seed=8, mode="max")
    with torch.no_grad():  # rows 1 and 3 equal: the gradient goes to the first position holding the max
        t.weight[3] = t.weight[1]
    m.weight._data[3] = m.weight._data[1]
    _run(m, t, np.array([3, 1, 1, 2, 3, 4], np.int32), np.array([0, 3], np.int32))


def test_weight_gradient_same_bits_at_any_thread_count():
    rng = np.random.default_rng(9)
    w = rng.standard_normal((50, 33)).astype(np.float32)
    idx = rng.integers(0, 50, size=4000).astype(np.int64)
    off = np.concatenate([[0], np.sort(rng.integers(0, 4000, size=63))]).astype(np.int64)
    before, grads = fg.get_num_threads(), []
    try:
        for n in (1, 2, 3):
            fg.set_num_threads(n)
            wt = fg.tensor(w, requires_grad=True)
            F.embedding_bag(fg.tensor(idx), wt, fg.tensor(off), mode="sum").pow(2).sum().backward()
            grads.append(wt.grad.numpy().tobytes())
    finally:
        fg.set_num_threads(before)
    assert grads[0] == grads[1] == grads[2]


def test_scale_grad_by_freq_is_embeddings_rule():
    """Each row's gradient divided by how often input holds it (F.embedding's rule). torch 2.13's CPU
    embedding_bag divides row 2 here by row 1's count (3): forgegrad follows the documented rule."""
    w = np.random.default_rng(10).standard_normal((6, 2)).astype(np.float32)
    idx, off = np.array([5, 2, 1, 1, 1, 3]), np.array([0, 3])
    wf = fg.tensor(w, requires_grad=True)
    F.embedding_bag(fg.tensor(idx), wf, fg.tensor(off), mode="sum", scale_grad_by_freq=True).sum().backward()
    want = np.zeros((6, 2), np.float32)
    want[[5, 2, 3]] = 1.0
    want[1] = 3.0 / 3.0
    np.testing.assert_allclose(wf.grad.numpy(), want, rtol=1e-6)
    # where the quirk does not show (sorted distinct rows each read as often as the first), torch agrees
    idx2, wt = np.array([0, 0, 1, 1, 4, 4]), torch.from_numpy(w.copy()).requires_grad_()
    torch.nn.functional.embedding_bag(torch.from_numpy(idx2), wt, torch.tensor([0, 3]), mode="mean",
                                      scale_grad_by_freq=True).sum().backward()
    wf = fg.tensor(w, requires_grad=True)
    F.embedding_bag(fg.tensor(idx2), wf, fg.tensor([0, 3]), mode="mean", scale_grad_by_freq=True).sum().backward()
    np.testing.assert_allclose(wf.grad.numpy(), wt.grad.numpy(), rtol=1e-6)


def test_max_norm_renorms_like_torch():
    m, t = _pair(8, 4, seed=11, mode="mean", max_norm=1.0)
    idx = np.array([1, 2, 2, 7, 0], np.int64)
    _run(m, t, idx, np.array([0, 2], np.int64))
    np.testing.assert_allclose(m.weight.numpy(), t.weight.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_state_dict_repr_from_pretrained():
    for kw in ({}, {"mode": "max", "padding_idx": 1, "max_norm": 1.0}, {"scale_grad_by_freq": True, "mode": "sum",
                                                                       "norm_type": 3.0}):
        m, t = nn.EmbeddingBag(5, 3, **kw), torch.nn.EmbeddingBag(5, 3, **kw)
        assert list(m.state_dict()) == list(t.state_dict())
        assert repr(m) == repr(t)
    m, t = nn.EmbeddingBag(6, 2, padding_idx=4), torch.nn.EmbeddingBag(6, 2, padding_idx=4)
    assert np.all(m.weight.numpy()[4] == 0) and m.weight.shape == tuple(t.weight.shape)
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    m, t = nn.EmbeddingBag.from_pretrained(fg.tensor(w)), torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(w))
    assert m.weight.requires_grad is t.weight.requires_grad is False
    assert nn.EmbeddingBag.from_pretrained(w, freeze=False, mode="sum").weight.requires_grad
    np.testing.assert_array_equal(m(fg.tensor([[0, 3]])).numpy(), t(torch.tensor([[0, 3]])).numpy())


@pytest.mark.parametrize("kw", [{"mode": "sum"}, {"mode": "mean", "padding_idx": 2},
                                {"mode": "max", "include_last_offset": True}])
def test_onnx_offsets_in_onnxruntime(kw, tmp_path):
    pytest.importorskip("onnxruntime")
    m = nn.EmbeddingBag(12, 5, **kw)
    idx = fg.tensor(np.array([2, 3, 2, 11, 0, 7, 2, 9], np.int64))
    off = fg.tensor(np.array([0, 3, 3, 8] if kw.get("include_last_offset") else [0, 3, 3, 5], np.int64))
    report = fg.onnx.export(m, (idx, off), str(tmp_path / "bag.onnx"), dynamic_axes={})
    assert report.ok, report
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "bag.onnx"))
    names = [i.name for i in sess.get_inputs()]
    # other indices and offsets of the same lengths than the traced ones
    idx2, off2 = np.array([1, 1, 4, 10, 2, 2, 6, 5], np.int64), np.array([0, 0, 6, 8 if kw.get(
        "include_last_offset") else 7], np.int64)
    got = sess.run(None, dict(zip(names, (idx2, off2))))[0]
    np.testing.assert_allclose(got, m(fg.tensor(idx2), fg.tensor(off2)).numpy(), rtol=1e-5, atol=1e-6)


def test_onnx_2d_dynamic_batch_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    m = nn.EmbeddingBag(10, 6, mode="mean", padding_idx=0)
    idx = fg.tensor(np.random.default_rng(12).integers(0, 10, size=(4, 3)).astype(np.int64))
    report = fg.onnx.export(m, (idx,), str(tmp_path / "bag2d.onnx"))
    assert report.ok, report


@pytest.mark.parametrize("call,error,match", [
    (lambda w: F.embedding_bag(fg.tensor([1, 2, 3]), w, fg.tensor([1, 2])), ValueError, r"offsets\[0\]"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2, 3]), w, fg.tensor([0, 2, 1])), ValueError, "non-decreasing"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2, 30]), w, fg.tensor([0])), IndexError, r"input\[2\]"),
    (lambda w: F.embedding_bag(fg.tensor([1, -1]), w, fg.tensor([0])), IndexError, "input"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2]), w), ValueError, "offsets"),
    (lambda w: F.embedding_bag(fg.tensor([[1, 2]]), w, fg.tensor([0])), ValueError, "offsets"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2]), w, fg.tensor([0]), mode="min"), ValueError, "mode"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2]), w, fg.tensor([0]), per_sample_weights=fg.ones(2)),
     NotImplementedError, "per_sample_weights"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2]), w, fg.tensor([0]), mode="max", sparse=True), ValueError,
     "sparse"),
    (lambda w: F.embedding_bag(fg.tensor([1, 2]), w, fg.tensor([0, 1]), include_last_offset=True), ValueError,
     r"offsets\[-1\]"),
    (lambda w: F.embedding_bag(fg.tensor([1.0, 2.0]), w, fg.tensor([0])), TypeError, "input"),
    (lambda w: nn.EmbeddingBag(4, 2, mode="max", scale_grad_by_freq=True), ValueError, "scale_grad_by_freq"),
    (lambda w: nn.EmbeddingBag(4, 2, padding_idx=4), ValueError, "padding_idx"),
    (lambda w: nn.EmbeddingBag(0, 2), ValueError, "num_embeddings"),
])
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call(fg.randn(10, 3))


def test_onnx_offsets_dynamic_length_in_onnxruntime(tmp_path):
    """A dynamic input length with the recipe docs/torch_compat.md gives (the default verification would feed random
    offsets); the graph then takes other lengths and bag sizes."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    m = nn.EmbeddingBag(12, 5, mode="mean", padding_idx=3)
    idx, off = fg.tensor(np.array([2, 3, 2, 11, 0, 7, 2, 9], np.int64)), fg.tensor(np.array([0, 3, 3, 5], np.int64))
    report = fg.onnx.export(m, (idx, off), str(tmp_path / "dyn.onnx"), dynamic_axes={"input": {0: "n"}},
                            verify_sizes=[])
    assert report.ok, report
    sess = ort.InferenceSession(str(tmp_path / "dyn.onnx"))
    i2, o2 = np.array([1, 4, 3, 6, 0, 11, 3, 3, 2, 2, 5], np.int64), np.array([0, 0, 4, 9], np.int64)
    got = sess.run(None, {"input": i2, "offsets": o2})[0]
    np.testing.assert_allclose(got, m(fg.tensor(i2), fg.tensor(o2)).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [fg.nn.Embedding, fg.nn.EmbeddingBag])
def test_float64_tables_stay_float64_as_torch(cls):
    """from_pretrained and _weight with a float64 tensor give a float64 weight (torch's); float32 data stays
    float32 and _weight's memory is shared (they went through Parameter(ndarray), which stores float32)."""
    t64 = fg.tensor(np.arange(12.0).reshape(4, 3), dtype=fg.float64)
    for m in (cls.from_pretrained(t64), cls.from_pretrained(t64, freeze=False), cls(4, 3, _weight=t64)):
        assert m.weight.dtype == fg.float64
        np.testing.assert_array_equal(m.weight.detach().numpy(), t64.numpy())
    m = cls.from_pretrained(t64, freeze=False)
    y = m(fg.tensor([[0, 3]]))
    y.sum().backward()
    assert y.dtype == fg.float64 and m.weight.grad.dtype == fg.float64
    t32 = fg.ones(4, 3)
    m = cls(4, 3, _weight=t32)
    assert m.weight.dtype == fg.float32 and np.shares_memory(m.weight._data, t32._data)
    assert cls.from_pretrained(np.ones((4, 3))).weight.dtype == fg.float32
