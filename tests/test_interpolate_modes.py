"""F.interpolate's modes trilinear, area and lanczos, antialias=True (bilinear, bicubic) and 5-D nearest against torch:
values and gradients on odd shapes, downscale and upscale, float64, the gradient as the transposed forward (also
where torch's antialiased backward is not), double backward, nn.Upsample, ONNX (trilinear Resize, area as the
adaptive pools' nodes, antialias as Resize antialias=1 at opset 18, verified in onnxruntime) and its refusals.

The op's generated checks (threads, SIMD paths, meta, errors, opset-17 ONNX) are in tests/test_op_registry.py."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

CASES = [  # (input shape, kwargs)
    ((2, 3, 5, 7, 4), dict(size=(3, 8, 9), mode="trilinear")),
    ((2, 3, 5, 7, 4), dict(size=(3, 8, 9), mode="trilinear", align_corners=True)),
    ((1, 2, 6, 5, 9), dict(scale_factor=0.37, mode="trilinear")),
    ((1, 2, 3, 5, 4), dict(scale_factor=2.5, mode="trilinear", align_corners=True)),
    ((1, 2, 3, 5, 4), dict(scale_factor=(1.1, 2.0, 0.5), mode="trilinear")),  # 3 * 1.1 keeps 3: copied
    ((1, 2, 3, 5, 4), dict(scale_factor=1.7, mode="trilinear", recompute_scale_factor=True)),
    ((2, 3, 5, 7, 4), dict(size=(3, 8, 9), mode="nearest")),
    ((2, 3, 5, 7, 4), dict(scale_factor=(0.5, 2.0, 1.5), mode="nearest-exact")),
    ((2, 3, 17), dict(size=5, mode="area")),
    ((2, 3, 17), dict(size=30, mode="area")),
    ((2, 3, 17, 23), dict(size=(5, 9), mode="area")),
    ((2, 3, 17, 23), dict(scale_factor=0.37, mode="area")),
    ((2, 3, 17, 23), dict(scale_factor=(2.5, 1.3), mode="area")),
    ((2, 3, 5, 7, 4), dict(size=(3, 8, 9), mode="area")),
    ((1, 2, 9, 8, 10), dict(scale_factor=0.5, mode="area")),
]
for _mode in ("bilinear", "bicubic"):
    CASES += [((2, 3, 17, 23), dict(size=(5, 9), mode=_mode, antialias=True)),
              ((2, 3, 17, 23), dict(scale_factor=0.37, mode=_mode, antialias=True)),
              ((1, 2, 9, 11), dict(scale_factor=2.5, mode=_mode, antialias=True)),
              ((1, 2, 13, 6), dict(size=(4, 19), mode=_mode, antialias=True)),  # down one axis, up the other
              ((2, 3, 17, 23), dict(size=(40, 6), mode=_mode, antialias=True, align_corners=True)),
              ((2, 2, 64, 48), dict(size=(24, 24), mode=_mode, antialias=True)),
              ((1, 1, 9, 9), dict(size=(1, 1), mode=_mode, antialias=True))]
CASES += [((2, 3, 17, 23), dict(size=(5, 9), mode="lanczos", antialias=True)),
          ((1, 2, 9, 11), dict(scale_factor=2.5, mode="lanczos", antialias=True)),
          ((2, 2, 64, 48), dict(size=(24, 30), mode="lanczos", antialias=True))]


def _ids(cases):
    return [f"{shape}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for shape, kw in cases]


def _both(shape, kw, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    xf, xt = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yf, yt = F.interpolate(xf, **kw), TF.interpolate(xt, **kw)
    c = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    (yf * fg.tensor(c)).sum().backward()
    (yt * torch.tensor(c)).sum().backward()
    return (yf.numpy(), xf.grad.numpy()), (yt.detach().numpy(), xt.grad.numpy())


@pytest.mark.parametrize("shape,kw", CASES, ids=_ids(CASES))
def test_values_and_gradients_match_torch(shape, kw):
    (y, g), (yt, gt) = _both(shape, kw)
    assert y.shape == yt.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, yt, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(g, gt, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("shape,kw", CASES[::2], ids=_ids(CASES[::2]))
def test_float64_matches_torch_float64(shape, kw):
    (y, g), (yt, gt) = _both(shape, kw, np.float64, seed=1)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, yt, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g, gt, rtol=1e-12, atol=1e-12)


def test_antialias_upscale_equals_plain_bilinear_but_not_bicubic():
    """torch's antialiased bilinear upscale (align_corners=False) is plain bilinear (the triangle is not widened);
    its bicubic one is not plain bicubic (Keys a = -0.5, not -0.75). forgegrad: the same."""
    x = fg.tensor(np.random.default_rng(2).standard_normal((1, 2, 7, 9)).astype(np.float32))
    for mode, same in (("bilinear", True), ("bicubic", False)):
        aa = F.interpolate(x, scale_factor=2.5, mode=mode, antialias=True).numpy()
        plain = F.interpolate(x, scale_factor=2.5, mode=mode).numpy()
        assert np.allclose(aa, plain, atol=1e-5) == same, mode
        ref = TF.interpolate(torch.tensor(x.numpy()), scale_factor=2.5, mode=mode, antialias=True).numpy()
        np.testing.assert_allclose(aa, ref, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("kw", [dict(size=(5, 9), mode="bicubic", antialias=True), dict(size=(6, 7), mode="area"),
                                dict(scale_factor=2, mode="bicubic")], ids=["aa", "area", "bicubic"])
def test_an_inf_spreads_only_over_its_windows_as_in_torch(kw):
    """The dense products would multiply the inf by every zero of its row (nan everywhere); such inputs take the
    per-tap path."""
    x = np.random.default_rng(10).standard_normal((1, 2, 17, 23)).astype(np.float32)
    x[0, 1, 8, 11] = np.inf
    y = F.interpolate(fg.tensor(x), **kw).numpy()
    yt = TF.interpolate(torch.tensor(x), **kw).numpy()
    np.testing.assert_array_equal(np.isfinite(y), np.isfinite(yt))
    assert np.isfinite(y[0, 0]).all() and not np.isfinite(y[0, 1]).all()
    np.testing.assert_allclose(y[np.isfinite(yt)], yt[np.isfinite(yt)], rtol=1e-5, atol=2e-5)


def _jacobian(fn, shape):
    n = int(np.prod(shape))
    return np.stack([fn(fg.tensor(np.eye(n)[i].reshape(shape))).numpy().ravel() for i in range(n)], axis=1)


@pytest.mark.parametrize("shape,kw", [
    ((1, 1, 7, 9), dict(scale_factor=(1.05, 0.4), mode="bilinear", antialias=True)),
    ((1, 1, 7, 9), dict(scale_factor=(1.05, 0.4), mode="bicubic", antialias=True)),
    ((1, 1, 7, 9), dict(scale_factor=(0.6, 1.5), mode="lanczos", antialias=True)),
    ((1, 1, 3, 7, 4), dict(scale_factor=2.1, mode="nearest")),
    ((1, 1, 3, 5, 4), dict(size=(2, 7, 3), mode="trilinear", align_corners=True)),
    ((1, 1, 7, 9), dict(size=(3, 4), mode="area")),
], ids=["aa-bilinear-copied-axis", "aa-bicubic-copied-axis", "lanczos", "nearest-5d-2.1", "trilinear", "area"])
def test_gradient_is_the_transposed_forward(shape, kw):
    """float64: the gradient is the transposed Jacobian of the forward. torch's antialiased backward resamples an
    axis its forward copies (7 * 1.05 keeps 7), and its 3-D nearest backward takes the i // 2 shortcut on a
    doubled size its forward does not, so there torch's gradients are not its forward's; forgegrad's are."""
    call = lambda t: F.interpolate(t, **kw)  # noqa: E731
    jac = _jacobian(call, shape)
    x = fg.tensor(np.random.default_rng(3).standard_normal(shape), requires_grad=True)
    y = call(x)
    c = np.random.default_rng(4).standard_normal(tuple(y.shape))
    (y * fg.tensor(c)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy().ravel(), jac.T @ c.ravel(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y.numpy(), TF.interpolate(torch.tensor(x.numpy()), **kw).numpy(), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("shape,kw", [
    ((1, 2, 3, 5, 4), dict(size=(4, 3, 7), mode="trilinear")),
    ((1, 2, 9, 7), dict(size=(4, 3), mode="area")),
    ((1, 2, 13, 11), dict(size=(5, 4), mode="bicubic", antialias=True)),
], ids=["trilinear", "area", "aa-bicubic"])
def test_double_backward_matches_torch(shape, kw):
    """A gradient penalty through the op (linear: its double backward is the op again) and a tanh, in float64."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(shape), rng.standard_normal(shape)

    def run(lib, fn):
        mk = fg.tensor if lib is fg else torch.tensor
        xs, ws = mk(x, requires_grad=True), mk(w, requires_grad=True)
        out = (fn.interpolate(xs * ws, **kw).tanh() ** 2).sum()
        (g,) = (fg.autograd.grad if lib is fg else torch.autograd.grad)(out, [xs], create_graph=True)
        penalty = (g * g).sum()
        penalty.backward()
        return ws.grad.numpy()

    np.testing.assert_allclose(run(fg, F), run(torch, TF), rtol=1e-9, atol=1e-11)


def test_overlapping_backward_has_the_same_bits_at_any_thread_count(threads):
    x = np.random.default_rng(6).standard_normal((2, 3, 37, 29)).astype(np.float32)
    x5 = np.random.default_rng(7).standard_normal((1, 2, 9, 11, 7)).astype(np.float32)

    def run():
        out = []
        for arr, kw in ((x, dict(size=(11, 7), mode="bicubic", antialias=True)), (x, dict(size=(10, 9), mode="area")),
                        (x5, dict(size=(4, 5, 3), mode="trilinear"))):
            t = fg.tensor(arr, requires_grad=True)
            (F.interpolate(t, **kw) ** 2).sum().backward()
            out.append(t.grad.numpy().copy())
        return out

    from helpers import assert_same_bits_across_threads
    assert_same_bits_across_threads(run, threads)


def test_upsample_trilinear_module_matches_torch():
    for args in (dict(scale_factor=2, mode="trilinear"), dict(size=(3, 8, 9), mode="trilinear", align_corners=True),
                 dict(scale_factor=0.5, mode="area")):
        ours, theirs = nn.Upsample(**args), torch.nn.Upsample(**args)
        assert repr(ours) == repr(theirs)
        x = np.random.default_rng(8).standard_normal((2, 3, 5, 7, 4)).astype(np.float32)
        np.testing.assert_allclose(ours(fg.tensor(x)).numpy(), theirs(torch.tensor(x)).numpy(), rtol=1e-5,
                                   atol=1e-5)


BAD = [  # (input shape, kwargs, error, message) torch raises the same error type for each
    ((1, 2, 4, 5), dict(scale_factor=2.0, mode="trilinear"), NotImplementedError, "mode 'trilinear' needs a 5-D"),
    ((1, 2, 3, 4, 5), dict(scale_factor=2.0, mode="bilinear"), NotImplementedError, "mode 'bilinear' needs a 4-D"),
    ((1, 2, 4, 5), dict(size=3, mode="area", align_corners=True), ValueError, "align_corners"),
    ((1, 2, 4, 5), dict(scale_factor=2.0, mode="nearest", antialias=True), ValueError, "antialias"),
    ((1, 2, 4, 5), dict(scale_factor=2.0, mode="area", antialias=True), ValueError, "antialias"),
    ((1, 2, 4, 5, 3), dict(scale_factor=2.0, mode="trilinear", antialias=True), ValueError, "antialias"),
    ((1, 2, 5), dict(size=(2, 2), mode="area"), ValueError, "size"),
    ((1, 2, 4, 5), dict(size=3, mode="lanczos"), ValueError, "requires antialias=True"),
    ((1, 2, 4, 5), dict(size=3, mode="lanczos", antialias=True, align_corners=True), ValueError, "align_corners"),
    ((1, 2, 5), dict(size=3, mode="lanczos", antialias=True), ValueError, "mode 'lanczos' needs a 4-D"),
]


@pytest.mark.parametrize("shape,kw,error,match", BAD, ids=[b[3] for b in BAD])
def test_bad_arguments_raise_torch_errors_naming_them(shape, kw, error, match):
    with pytest.raises(error, match=match):
        F.interpolate(fg.zeros(*shape), **kw)
    with pytest.raises(error):
        TF.interpolate(torch.zeros(*shape), **kw)


# ---- ONNX ---------------------------------------------------------------------------------------------------------
def _export(kw, shape, tmp_path, **export_kw):
    class Up(nn.Module):
        def forward(self, input):
            return F.interpolate(input, **kw)

    x = fg.tensor(np.random.default_rng(9).standard_normal(shape).astype(np.float32))
    return fg.onnx.export(Up(), (x,), str(tmp_path / "up.onnx"), rtol=1e-4, atol=2e-5, **export_kw)


ONNX_CASES = [
    ((2, 3, 5, 7, 4), dict(size=(3, 8, 9), mode="trilinear"), 17),
    ((1, 2, 3, 5, 4), dict(scale_factor=2.5, mode="trilinear", align_corners=True), 13),
    ((1, 2, 3, 5, 4), dict(scale_factor=(1.1, 2.0, 0.5), mode="trilinear"), 17),
    ((2, 3, 17), dict(size=5, mode="area"), 17),
    ((2, 3, 17, 23), dict(scale_factor=0.37, mode="area"), 17),
    ((2, 3, 5, 7, 4), dict(size=(3, 8, 2), mode="area"), 17),
]
for _mode in ("bilinear", "bicubic"):
    ONNX_CASES += [((2, 3, 17, 23), dict(size=(5, 9), mode=_mode, antialias=True), 18),
                   ((2, 3, 17, 23), dict(scale_factor=0.37, mode=_mode, antialias=True), 18),
                   ((1, 2, 9, 11), dict(scale_factor=2.5, mode=_mode, antialias=True), 19),
                   ((1, 2, 13, 6), dict(size=(4, 19), mode=_mode, antialias=True), 21),
                   ((2, 3, 17, 23), dict(scale_factor=(1.01, 0.5), mode=_mode, antialias=True), 18)]


@pytest.mark.parametrize("shape,kw,opset", ONNX_CASES, ids=_ids([(s, dict(k, opset=o)) for s, k, o in ONNX_CASES]))
def test_onnx_export_matches_torch_in_onnxruntime(shape, kw, opset, tmp_path):
    """The exporter checks onnxruntime against forgegrad; forgegrad equals torch (above), and here directly."""
    ort = pytest.importorskip("onnxruntime")
    report = _export(kw, shape, tmp_path, opset=opset, dynamic_axes={})
    assert report.ok, report
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "up.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, TF.interpolate(torch.tensor(x), **kw).numpy(), rtol=1e-4, atol=2e-5)


def test_area_and_trilinear_export_with_dynamic_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    report = _export(dict(size=(5, 4), mode="area"), (2, 3, 17, 23), tmp_path, opset=17,
                     dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}},
                     verify_sizes=[{"batch": 1, "height": 9, "width": 31}])
    assert report.ok, report
    report = _export(dict(scale_factor=(2.0, 1.5, 0.5), mode="trilinear"), (1, 2, 4, 6, 8), tmp_path, opset=17,
                     dynamic_axes={"input": {0: "batch", 2: "depth", 3: "height", 4: "width"}},
                     verify_sizes=[{"batch": 2, "depth": 3, "height": 7, "width": 10}])
    assert report.ok, report


@pytest.mark.parametrize("kw,opset,match", [
    (dict(size=(5, 9), mode="bilinear", antialias=True), 17, "opset 18"),
    (dict(size=(5, 9), mode="bicubic", antialias=True, align_corners=True), 18, "align_corners=True"),
    (dict(size=(5, 9), mode="lanczos", antialias=True), 21, "no Lanczos filter"),
], ids=["aa-opset-17", "aa-align-corners", "lanczos"])
def test_antialias_exports_it_cannot_match_are_refused(kw, opset, match, tmp_path):
    with pytest.raises(Exception, match=match):
        _export(kw, (1, 2, 17, 23), tmp_path, opset=opset, dynamic_axes={})
