"""max_unpool to an output_size below torch's default size (after a ceil_mode pool) exported to ONNX: onnxruntime's
MaxUnpool rejects such an output_shape, so the mapping scatters instead; checked in onnxruntime at two batch sizes."""
import numpy as np
import pytest
import torch

import forgegrad as fg

ort = pytest.importorskip("onnxruntime")


class _PoolUnpool(fg.nn.Module):
    def __init__(self, nd):
        super().__init__()
        pool = {1: fg.nn.MaxPool1d, 2: fg.nn.MaxPool2d, 3: fg.nn.MaxPool3d}[nd]
        unpool = {1: fg.nn.MaxUnpool1d, 2: fg.nn.MaxUnpool2d, 3: fg.nn.MaxUnpool3d}[nd]
        self.nd = nd
        self.pool = pool(3, 2, 1, ceil_mode=True, return_indices=True)
        self.unpool = unpool(3, 2, 1)

    def forward(self, x):
        y, i = self.pool(x)
        return self.unpool(y, i, output_size=x.shape[-self.nd:]) * 2.0


def _torch_ref(x, nd):
    F = torch.nn.functional
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    unpool = {1: F.max_unpool1d, 2: F.max_unpool2d, 3: F.max_unpool3d}[nd]
    t = torch.from_numpy(x)
    y, i = pool(t, 3, 2, 1, ceil_mode=True, return_indices=True)
    return (unpool(y, i, 3, 2, 1, output_size=t.shape[-nd:]) * 2.0).numpy()


@pytest.mark.parametrize("nd,shape", [(3, (2, 3, 9, 8, 7)), (2, (2, 3, 8, 6)), (1, (2, 3, 8))])
def test_unpool_after_ceil_mode_pool_exports(tmp_path, nd, shape):
    dtype = np.float32  # the exporter assumes float32 (README)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    model = _PoolUnpool(nd).eval()
    path = str(tmp_path / "unpool.onnx")
    fg.onnx.export(model, (fg.tensor(x),), path, rtol=1e-5, atol=1e-6)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x5 = rng.standard_normal((5,) + shape[1:]).astype(dtype)
    for inp in (x, x5):
        got = sess.run(None, {sess.get_inputs()[0].name: inp})[0]
        np.testing.assert_allclose(got, _torch_ref(inp, nd), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(model(fg.tensor(inp)).numpy(), got, rtol=1e-6, atol=1e-7)
