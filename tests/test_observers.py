"""Observers against torch.ao.quantization's: same ranges and the same scale / zero point bits."""
import numpy as np
import pytest
import torch
from torch.ao import quantization as tq

from forgegrad.quantization import observers as O

_TORCH_DT = {"quint8": torch.quint8, "qint8": torch.qint8}
_TORCH_QS = {"per_tensor_affine": torch.per_tensor_affine, "per_tensor_symmetric": torch.per_tensor_symmetric,
             "per_channel_affine": torch.per_channel_affine, "per_channel_symmetric": torch.per_channel_symmetric}


def _batches(seed=0, shape=(8, 5, 3)):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * s + o).astype(np.float32) for s, o in [(1.0, 0.3), (2.5, -1.0), (0.1, 2.0)]]


def _same(fg_obs, t_obs, batches):
    for b in batches:
        fg_obs(b)
        t_obs(torch.from_numpy(b))
    _same_range_and_qparams(fg_obs, t_obs)


def _same_range_and_qparams(fg_obs, t_obs):
    np.testing.assert_array_equal(fg_obs.min_val._data, t_obs.min_val.numpy())
    np.testing.assert_array_equal(fg_obs.max_val._data, t_obs.max_val.numpy())
    s, z = fg_obs.calculate_qparams()
    ts, tz = t_obs.calculate_qparams()
    np.testing.assert_array_equal(s, ts.numpy().reshape(-1))
    np.testing.assert_array_equal(z, tz.numpy().reshape(-1))


@pytest.mark.parametrize("dtype", ["quint8", "qint8"])
@pytest.mark.parametrize("qscheme", ["per_tensor_affine", "per_tensor_symmetric"])
@pytest.mark.parametrize("reduce_range", [False, True])
@pytest.mark.filterwarnings("ignore:Please use quant_min")
def test_minmax_and_moving_average_match_torch(dtype, qscheme, reduce_range):
    if reduce_range and dtype == "quint8" and qscheme == "per_tensor_symmetric":
        with pytest.raises(ValueError, match="reduce_range"):  # torch: NotImplementedError
            O.MinMaxObserver(dtype=dtype, qscheme=qscheme, reduce_range=True)
        return
    kw = dict(qscheme=qscheme, reduce_range=reduce_range)
    _same(O.MinMaxObserver(dtype=dtype, **kw), tq.MinMaxObserver(dtype=_TORCH_DT[dtype], qscheme=_TORCH_QS[qscheme],
                                                                   reduce_range=reduce_range), _batches())
    _same(O.MovingAverageMinMaxObserver(0.2, dtype=dtype, **kw),
          tq.MovingAverageMinMaxObserver(0.2, dtype=_TORCH_DT[dtype], qscheme=_TORCH_QS[qscheme],
                                         reduce_range=reduce_range), _batches(1))


@pytest.mark.parametrize("dtype,qscheme", [("qint8", "per_channel_symmetric"), ("quint8", "per_channel_affine"),
                                           ("qint8", "per_channel_affine")])
@pytest.mark.parametrize("ch_axis", [0, 1, 2])
def test_per_channel_observers_match_torch(dtype, qscheme, ch_axis):
    kw = dict(ch_axis=ch_axis, dtype=_TORCH_DT[dtype], qscheme=_TORCH_QS[qscheme])
    _same(O.PerChannelMinMaxObserver(ch_axis, dtype, qscheme), tq.PerChannelMinMaxObserver(**kw), _batches(2))
    _same(O.MovingAveragePerChannelMinMaxObserver(0.3, ch_axis, dtype, qscheme),
          tq.MovingAveragePerChannelMinMaxObserver(0.3, **kw), _batches(3))


def test_custom_range_and_all_positive_or_negative_data():
    for data in ([np.linspace(0.5, 3, 20, dtype=np.float32)], [np.linspace(-4, -1, 20, dtype=np.float32)]):
        _same(O.MinMaxObserver("quint8", quant_min=0, quant_max=15),
              tq.MinMaxObserver(dtype=torch.quint8, quant_min=0, quant_max=15), data)
        _same(O.MinMaxObserver("qint8", "per_tensor_symmetric", quant_min=-8, quant_max=7),
              tq.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-8, quant_max=7), data)
    zeros = [np.zeros((3, 3), np.float32)]  # scale falls back to eps, as torch
    _same(O.MinMaxObserver(), tq.MinMaxObserver(), zeros)


def test_percentile_observer_clips_outliers():
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal(10000).astype(np.float32) for _ in range(3)]
    batches[1][7] = 1000.0  # one outlier
    obs = O.PercentileObserver(99.9)
    for b in batches:
        obs(b)
    lo = np.mean([np.percentile(b.astype(np.float64), 0.1) for b in batches])
    hi = np.mean([np.percentile(b.astype(np.float64), 99.9) for b in batches])
    np.testing.assert_allclose([obs.min_val._data, obs.max_val._data], [lo, hi], rtol=1e-6)
    # its qparams are torch's formula applied to that range
    ref = tq.MinMaxObserver()
    ref(torch.tensor([float(np.float32(lo)), float(np.float32(hi))]))
    s, z = obs.calculate_qparams()
    np.testing.assert_array_equal(s, ref.calculate_qparams()[0].numpy())
    np.testing.assert_array_equal(z, ref.calculate_qparams()[1].numpy())
    assert s[0] < 0.05  # the outlier would have made it ~4


def test_observer_errors():
    with pytest.raises(TypeError, match="float32"):
        O.MinMaxObserver()(np.ones(3))
    with pytest.raises(RuntimeError, match="no data observed"):
        O.MinMaxObserver().calculate_qparams()
    with pytest.raises(RuntimeError, match="no data observed"):
        O.PerChannelMinMaxObserver().calculate_qparams()
    with pytest.raises(TypeError, match="dtype"):
        O.MinMaxObserver(dtype="int4")
    with pytest.raises(ValueError, match="qscheme"):
        O.MinMaxObserver(qscheme="per_row")
    with pytest.raises(ValueError, match="is per tensor"):
        O.MinMaxObserver(qscheme="per_channel_affine")
    with pytest.raises(ValueError, match="include 0"):
        O.MinMaxObserver(quant_min=3, quant_max=10)
    obs = O.PerChannelMinMaxObserver()
    obs(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="channels"):
        obs(np.ones((3, 2), np.float32))


def _histogram_batches(seed):
    """Batches whose range grows (the histogram is re-spread over new bins), with an outlier and a
    constant batch."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(5):
        x = (rng.standard_normal((8, 50)) * rng.uniform(0.5, 3) + rng.uniform(-1, 1)).astype(np.float32)
        if i == 2:
            x[0, 0] = 25.0
        out.append(x)
    out.append(np.full((3, 4), 0.5, np.float32))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kw", [{}, {"reduce_range": True}, {"qscheme": "per_tensor_symmetric", "dtype": "qint8"},
                                {"bins": 256, "dtype": "qint8"}])
@pytest.mark.filterwarnings("ignore:Please use quant_min")
def test_histogram_observer_matches_torch_bit_for_bit(seed, kw):
    from forgegrad.quantization import HistogramObserver
    tkw = {k: (_TORCH_DT[v] if k == "dtype" else _TORCH_QS[v] if k == "qscheme" else v) for k, v in kw.items()}
    ours, theirs = HistogramObserver(**kw), tq.HistogramObserver(**tkw)
    for b in _histogram_batches(seed):
        ours(b)
        theirs(torch.from_numpy(b))
        np.testing.assert_array_equal(ours.histogram._data, theirs.histogram.numpy())
    _same_range_and_qparams(ours, theirs)


def test_histogram_observer_bad_input():
    from forgegrad.quantization import HistogramObserver
    obs = HistogramObserver()
    with pytest.raises(RuntimeError, match="no data observed"):
        obs.calculate_qparams()
    with pytest.raises(ValueError, match="NaN"):
        obs(np.array([1.0, np.nan], np.float32))
    with pytest.raises(TypeError, match="float32"):
        obs(np.ones(3))
    with pytest.warns(UserWarning, match="infinity"):
        obs(np.array([1.0, np.inf, -2.0], np.float32))
    assert obs.min_val._data == -2.0 and obs.max_val._data == 1.0
    with pytest.raises(ValueError, match="per tensor"):
        HistogramObserver(qscheme="per_channel_affine")
    with pytest.raises(ValueError, match="bins"):
        HistogramObserver(bins=0)
