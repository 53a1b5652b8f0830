"""Weight-only int8 Linear: float32 activations times int8 weights converted in the kernel."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C, nn
from forgegrad.quantization import WeightOnlyInt8Linear, dequantize, quantize_weight_only


# (1, 1030, 769), (2, 4099, 300): outputs in several runs per thread range (the AVX2 kernel reads the
# weight as 4 long streams; every output keeps its own arithmetic), split over threads.
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (1, 37, 100), (3, 70, 4096 + 5), (9, 33, 16), (2, 5, 7), (1, 1030, 769),
                                   (2, 4099, 300)])
def test_kernel_matches_dequantized_product(simd_path, threads, rng, M, N, K):
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.integers(-128, 128, (N, K), dtype=np.int8)
    scale = rng.uniform(0.001, 0.02, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    want = x.astype(np.float64) @ (w.astype(np.float64) * scale[:, None]).T + bias
    threads(1)
    y1 = _C.quant.linear_weight_only(x, w, scale, bias)
    np.testing.assert_allclose(y1, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    for t in (2, 3):
        threads(t)
        np.testing.assert_array_equal(_C.quant.linear_weight_only(x, w, scale, bias), y1)
    assert np.allclose(_C.quant.linear_weight_only(x, w, scale, None), want - bias, rtol=1e-4,
                       atol=1e-4 * np.abs(want).max())
    for n0, n1 in ((0, min(N, 7)), (N // 3, N)):  # an output does not depend on which others are computed
        part = _C.quant.linear_weight_only(x, np.ascontiguousarray(w[n0:n1]), scale[n0:n1], bias[n0:n1])
        np.testing.assert_array_equal(part, y1[:, n0:n1])


def test_module_against_torch_linear_with_dequantized_weights(rng):
    torch = pytest.importorskip("torch")
    model = nn.Sequential(nn.Linear(48, 64), nn.GELU(), nn.Linear(64, 8, bias=False))
    q = quantize_weight_only(model)
    assert isinstance(q[0], WeightOnlyInt8Linear) and isinstance(model[0], nn.Linear)
    x = rng.standard_normal((2, 5, 48)).astype(np.float32)  # (*, in_features)
    y = q(fg.tensor(x))._data
    w0 = dequantize(q[0].weight._data, q[0].weight_scale._data)
    w2 = dequantize(q[2].weight._data, q[2].weight_scale._data)
    with torch.no_grad():
        h = torch.nn.functional.gelu(torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w0),
                                                                torch.from_numpy(q[0].bias._data)))
        ref = torch.nn.functional.linear(h, torch.from_numpy(w2)).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    with fg.no_grad():
        fp32 = model(fg.tensor(x))._data
    assert np.abs(y - fp32).max() < 0.02 * np.abs(fp32).max()  # the int8 weight rounding


def test_weight_only_checkpoint_and_errors(tmp_path, rng):
    q = quantize_weight_only(nn.Linear(300, 200))
    fg.save(q.state_dict(), tmp_path / "wo.safetensors")
    fg.save(nn.Linear(300, 200).state_dict(), tmp_path / "fp32.safetensors")
    assert (tmp_path / "wo.safetensors").stat().st_size < 0.3 * (tmp_path / "fp32.safetensors").stat().st_size
    other = quantize_weight_only(nn.Linear(300, 200))
    other.load_state_dict(fg.load(tmp_path / "wo.safetensors"))
    x = fg.tensor(rng.standard_normal((1, 300)).astype(np.float32))
    np.testing.assert_array_equal(other(x)._data, q(x)._data)
    with pytest.raises(ValueError, match=r"shape \(\*, 300\)"):
        q(fg.tensor(np.ones((1, 299), np.float32)))
    with pytest.raises(ValueError, match="w must have shape"):
        _C.quant.linear_weight_only(np.ones((2, 4), np.float32), np.ones((3, 5), np.int8), np.ones(3, np.float32), None)
    with pytest.raises(TypeError, match="w must have dtype int8"):
        _C.quant.linear_weight_only(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32), np.ones(3, np.float32),
                                    None)
    with pytest.raises(ValueError, match="nn.Linear layers only"):
        quantize_weight_only(nn.Sequential(nn.Linear(3, 3)), {nn.LSTM})
