"""5-D grid_sample's grid gradient at NaN / infinite / huge grid points, against torch: torch's scalar 5-D kernel adds
only the inside corners, so a NaN or inf coordinate on one axis leaves the other components' gradients at 0 (not
0 * NaN). float32 and float64, every padding mode and align_corners, 1 and 3 threads."""
import numpy as np
import pytest
import torch

import forgegrad as fg

_POINTS = [[0.1, np.nan, 0.0], [0.0, np.inf, 0.5], [0.2, -np.inf, -0.3], [1e30, 0.0, 1e30], [-1e30, 2.0, 0.0],
           [3e9, -3e9, 0.1], [0.5, 0.0, np.nan], [1e8, 0.2, 0.0], [-1e5, 0.7, 0.0], [0.3, -0.4, 0.9]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("threads", [1, 3])
def test_grid_sample_5d_grads_at_nonfinite_points(dtype, padding_mode, align_corners, mode, threads):
    before = fg.get_num_threads()
    fg.set_num_threads(threads)
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 4, 5, 6)).astype(dtype)
        g = np.tile(np.array(_POINTS, dtype).reshape(1, 2, 5, 1, 3), (2, 1, 1, 1, 1))
        go = rng.standard_normal((2, 3, 2, 5, 1)).astype(dtype)
        kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
        xt, gt = torch.tensor(x, requires_grad=True), torch.tensor(g, requires_grad=True)
        yt = torch.nn.functional.grid_sample(xt, gt, **kw)
        yt.backward(torch.tensor(go))
        xf, gf = fg.tensor(x).requires_grad_(True), fg.tensor(g).requires_grad_(True)
        yf = fg.nn.functional.grid_sample(xf, gf, **kw)
        yf.backward(fg.tensor(go))
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(yf.numpy(), yt.detach().numpy(), **tol)
        np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), **tol)
        np.testing.assert_allclose(gf.grad.numpy(), gt.grad.numpy(), **tol)  # NaN positions must agree too
    finally:
        fg.set_num_threads(before)
