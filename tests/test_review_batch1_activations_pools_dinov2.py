"""Regression tests from reviewing the activations, pools and DINOv2 work against torch 2.13, transformers 5.24 and
onnxruntime: NaN through softshrink (eager and ONNX), hardshrink's and threshold's ONNX mappings, the reprs and
size attributes of AvgPool1d / MaxUnpool1d / MaxUnpool2d, a DINOv2 (and ViT) classifier saved with num_labels=0,
and the image servers' check of a thin .npy array's resized size."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F

_EXTREMES = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 0.25, -0.25, 0.5, -0.5, 3.0, -3.0, 1e30]], np.float32)


def test_softshrink_keeps_nan_as_torch():
    got = F.softshrink(fg.tensor(_EXTREMES), 0.5).numpy()
    want = torch.nn.functional.softshrink(torch.tensor(_EXTREMES), 0.5).numpy()
    assert np.isnan(want[0, 0])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("opset", [13, 17, 21])
@pytest.mark.parametrize("name,module", [("softshrink", lambda: fg.nn.Softshrink(0.5)),
                                         ("hardshrink", lambda: fg.nn.Hardshrink(0.25)),
                                         ("threshold", lambda: fg.nn.Threshold(0.1, -2.0))])
def test_onnx_keeps_nan_and_inf_as_eager(tmp_path, name, module, opset):
    ort = pytest.importorskip("onnxruntime")
    m = module()
    path = str(tmp_path / f"{name}.onnx")
    fg.onnx.export(m, fg.tensor(np.ones((1, 12), np.float32)), path, opset=opset, dynamic_axes={},
                   input_names=["x"], verify=False)
    got = ort.InferenceSession(path).run(None, {"x": _EXTREMES})[0]
    want = getattr(torch.nn, type(m).__name__)(*{"softshrink": (0.5,), "hardshrink": (0.25,),
                                                  "threshold": (0.1, -2.0)}[name])(torch.tensor(_EXTREMES)).numpy()
    np.testing.assert_array_equal(m(fg.tensor(_EXTREMES)).numpy(), want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name,args", [("AvgPool1d", (3,)), ("AvgPool1d", (3, 2, 1, True, False)),
                                       ("MaxUnpool1d", (2,)), ("MaxUnpool1d", ((3,), 2, 1)), ("MaxUnpool2d", (2,)),
                                       ("MaxUnpool2d", ((2, 3), (1, 2), 1))])
def test_pool_size_attributes_and_repr_as_torch(name, args):
    ours, theirs = getattr(fg.nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(ours) == repr(theirs)
    for attr in ("kernel_size", "stride", "padding"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr


def test_pool_modules_with_tuple_sizes_run_as_torch():
    x = np.random.default_rng(0).standard_normal((2, 3, 11)).astype(np.float32)
    np.testing.assert_allclose(fg.nn.AvgPool1d(3, 2, 1)(fg.tensor(x)).numpy(),
                               torch.nn.AvgPool1d(3, 2, 1)(torch.tensor(x)).numpy(), rtol=1e-6, atol=1e-6)
    v, i = torch.nn.functional.max_pool2d(torch.tensor(x[:, :, :8].reshape(2, 3, 2, 4)), (1, 2), return_indices=True)
    want = torch.nn.MaxUnpool2d((1, 2))(v, i).numpy()
    np.testing.assert_array_equal(fg.nn.MaxUnpool2d((1, 2))(fg.tensor(v.numpy()), fg.tensor(i.numpy())).numpy(), want)


@pytest.mark.parametrize("cls", ["Dinov2ForImageClassification", "ViTForImageClassification"])
def test_classifier_with_no_labels_loads_as_transformers(tmp_path, cls):
    """num_labels=0: transformers saves "id2label": {} and puts an Identity where the head would be."""
    transformers = pytest.importorskip("transformers")
    from forgegrad.models import from_pretrained
    kind = cls.removesuffix("ForImageClassification")
    cfg = getattr(transformers, f"{kind}Config")(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=32, image_size=16, patch_size=8, num_labels=0)
    torch.manual_seed(0)
    hf = getattr(transformers, cls)(cfg).eval()
    hf.save_pretrained(tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = hf(torch.tensor(x)).logits.numpy()
    got = from_pretrained(tmp_path)(fg.tensor(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_served_thin_array_refused_before_resize(tmp_path, monkeypatch):
    """A .npy array 2 px high resized by its shortest edge would be thousands of times its size (a 2 x 65535 array,
    131 KB, took 20 GB and minutes): refused from its shape, as an image's header is."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("PIL")
    import base64
    import io

    from forgegrad.serve import image_embeddings
    from forgegrad.serve.completion_request import CompletionError
    from forgegrad.serve.vision_embeddings import ImageEmbedder
    cfg = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=16,
                                    patch_size=8)
    transformers.Dinov2Model(cfg).save_pretrained(tmp_path)
    processor = transformers.BitImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 24, "width": 24})
    processor.save_pretrained(tmp_path)
    worker = ImageEmbedder(str(tmp_path))
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 400), np.uint8))
    item = ("array", base64.b64encode(buf.getvalue()).decode("ascii"))
    assert worker._prepare([item])[0].shape == (3, 24, 24)  # 28 x 5600 before the crop: within the limit
    monkeypatch.setattr(image_embeddings, "MAX_PIXELS", 100_000)
    with pytest.raises(CompletionError, match="would resize to 5600 x 28"):
        worker._prepare([item])


@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_max_pools_keep_nan_as_torch(tmp_path, dynamic):
    """onnxruntime's MaxPool and ReduceMax skip a NaN that is not its window's first element; torch's max is NaN."""
    ort = pytest.importorskip("onnxruntime")

    class Net(fg.nn.Module):
        def forward(self, x):
            row = x[:, :, 1]
            return (F.max_pool1d(row, 3, 2, 1), F.max_pool1d(row, 2, 1, ceil_mode=True),
                    F.adaptive_max_pool2d(x, (4, 3)), F.adaptive_max_pool2d(x, (3, 4)), F.adaptive_max_pool1d(row, 3))

    x = np.random.default_rng(0).standard_normal((1, 2, 6, 8)).astype(np.float32)
    x[0, 0, 1, 1] = x[0, 0, 4, 6] = np.nan
    x[0, 1, 3, 5], x[0, 1, 0, 0] = np.inf, -np.inf
    path = str(tmp_path / "p.onnx")
    axes = {"x": {0: "b", 2: "h", 3: "w"}} if dynamic else {}
    fg.onnx.export(Net(), fg.tensor(np.ones((1, 2, 6, 8), np.float32)), path, dynamic_axes=axes, input_names=["x"],
                   verify=False, nan_exact_pooling=True)
    t = torch.tensor(x)
    tf = torch.nn.functional
    want = [tf.max_pool1d(t[:, :, 1], 3, 2, 1), tf.max_pool1d(t[:, :, 1], 2, 1, ceil_mode=True),
            tf.adaptive_max_pool2d(t, (4, 3)), tf.adaptive_max_pool2d(t, (3, 4)), tf.adaptive_max_pool1d(t[:, :, 1], 3)]
    got = ort.InferenceSession(path).run(None, {"x": x})
    for g, e, w in zip(got, Net()(fg.tensor(x)), want, strict=True):
        np.testing.assert_array_equal(e.numpy(), w.numpy())
        np.testing.assert_array_equal(g, w.numpy())
