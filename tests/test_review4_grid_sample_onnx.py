"""grid_sample exported to ONNX with grid values far outside [-1, 1] (1e5 .. 1e30, as a degenerate homography gives):
onnxruntime's GridSample goes wrong past about 1e8, so the mapping clamps the grid where that is exact (zeros padding,
and border padding but for bicubic). Compared with torch in onnxruntime at opsets 16 and 20. NaN / inf points and
reflection padding with such values still differ in onnxruntime (README)."""
import numpy as np
import pytest
import torch

import forgegrad as fg

ort = pytest.importorskip("onnxruntime")


class _Sample(fg.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, x, g):
        return fg.nn.functional.grid_sample(x, g, **self.kw)


def _grid(nd):
    far = np.array([1e5, -1e5, 1e8, -1e8, 3e9, -3e9, 1e30, -1e30, 0.3, -0.7, 1.0, -1.0, 4.0, -8.0, 9.0], np.float32)
    rng = np.random.default_rng(0)
    return np.stack([rng.permutation(far) for _ in range(nd)], -1).reshape((1, 3, 5) + (1,) * (nd - 2) + (nd,))


_CASES = [(opset, nd, mode, pad, ac) for opset in (16, 20) for nd in (2, 3)
          for mode in ("bilinear", "nearest", "bicubic")
          for pad in ("zeros", "border") for ac in (False, True)
          # 5-D needs opset 20 and has no bicubic (as torch); bicubic border is not clamped (torch's own value at
          # 1e30 is float rounding of the tap weights)
          if not (nd == 3 and (opset < 20 or mode == "bicubic")) and not (mode == "bicubic" and pad == "border")]


@pytest.mark.parametrize("opset,nd,mode,padding_mode,align_corners", _CASES)
def test_grid_sample_far_points_export(tmp_path, opset, nd, mode, padding_mode, align_corners):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 6) if nd == 2 else (2, 3, 3, 4, 5)).astype(np.float32)
    g = np.concatenate([_grid(nd)] * 2)
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    path = str(tmp_path / "gs.onnx")
    fg.onnx.export(_Sample(**kw), (fg.tensor(x), fg.tensor(g)), path, opset=opset, rtol=1e-4, atol=1e-5)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for n in (2, 3):  # the example's batch and another
        xi, gi = np.concatenate([x] * 2)[:n], np.concatenate([g] * 2)[:n]
        got = sess.run(None, dict(zip(names, (xi, gi))))[0]
        want = torch.nn.functional.grid_sample(torch.from_numpy(xi), torch.from_numpy(gi), **kw).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_Sample(**kw)(fg.tensor(xi), fg.tensor(gi)).numpy(), want, rtol=1e-5, atol=1e-5)
