"""Review of the small-op fast paths against torch 2.13, bit for bit: histogram's bin where float32 edges repeat
(torch searches only next to its guess), constant data whose range rounds to one edge value (histc crashed),
float64 linspace edges where long double rounding is not the FMA's, and isin refusing bool as torch does."""
import numpy as np
import pytest
import torch

import forgegrad as fg


def _both(fn, x, *args, **kw):
    return (fn(fg, fg.from_numpy(x), *args, **kw), fn(torch, torch.from_numpy(x), *args, **kw))


@pytest.mark.parametrize("rng_", [(1e6, 1e6 + 1), (16777216.0, 16777226.0), (-1e-40, 1e-40)])
@pytest.mark.parametrize("bins", [3, 100, 4097])
def test_histogram_repeated_float32_edges_match_torch(rng_, bins):
    # float32 edges over a narrow range for its magnitude repeat: torch's local search next to the equal-width guess
    # picks a different bin than a search over all edges (the last of the equal edges) would
    lo, hi = rng_
    gen = np.random.default_rng(bins)
    edges = np.linspace(lo, hi, bins + 1)
    x = np.concatenate([gen.uniform(lo, hi, 3000), edges, np.nextafter(edges, np.inf)]).astype(np.float32)
    (h, e), (th, te) = _both(lambda m, t: tuple(m.histogram(t, bins, range=rng_)), x)
    assert h.numpy().tobytes() == th.numpy().tobytes() and e.numpy().tobytes() == te.numpy().tobytes()


@pytest.mark.parametrize("dtype,value", [(np.float32, 1e8), (np.float32, -3e30), (np.float64, 1e17)])
@pytest.mark.parametrize("bins", [1, 2, 3, 4, 7])
def test_constant_data_whose_range_rounds_to_one_edge(dtype, value, bins):
    # value -/+ 1 (histc) or 0.5 (histogram) rounds back to value: every edge is equal and torch's guess is 0/0
    x = np.full(6, value, dtype)
    cases = [lambda m, t: m.histc(t, bins), lambda m, t: m.histc(t, bins, min=value - 1, max=value + 1),
             lambda m, t: m.histogram(t, bins).hist,
             lambda m, t: m.histogram(t, bins, range=(value - 1, value + 1)).hist]
    for fn in cases:
        ours, ref = _both(fn, x)  # histc raised numpy's "'list' argument must have no negative elements"
        assert ours.numpy().tobytes() == ref.numpy().tobytes()


@pytest.mark.parametrize("lo,hi,bins", [(0.1, 0.7, 4097), (-5.0, -2.0, 10000), (0.0, 1.0, 10000), (0.3, 0.35, 4097)])
def test_histogram_float64_edges_are_torch_linspace_bits(lo, hi, bins):
    x = np.linspace(lo, hi, 5000)
    (h, e), (th, te) = _both(lambda m, t: tuple(m.histogram(t, bins, range=(lo, hi))), x)
    assert e.numpy().tobytes() == te.numpy().tobytes()
    assert h.numpy().tobytes() == th.numpy().tobytes()


@pytest.mark.parametrize("elements,test_elements", [(np.array([True, False]), np.array([1])),
                                                    (np.array([1, 2]), np.array([True])), (np.array([1]), True)])
def test_isin_refuses_bool_as_torch(elements, test_elements):
    with pytest.raises(RuntimeError, match="Bool"):
        torch.isin(torch.from_numpy(elements), torch.tensor(test_elements) if isinstance(test_elements, np.ndarray)
                   else test_elements)
    with pytest.raises(TypeError, match="bool"):
        fg.isin(fg.from_numpy(elements), fg.from_numpy(test_elements) if isinstance(test_elements, np.ndarray)
                else test_elements)


@pytest.mark.parametrize("call", [lambda m, t: m.histogram(t, 4, range=(-1e300, 1e300)),
                                  lambda m, t: m.histc(t, 4, min=-1e39, max=1.0)])
def test_range_past_float32_is_refused_as_torch(call):
    x = np.zeros(3, np.float32)
    with pytest.raises(RuntimeError, match="overflow"):
        call(torch, torch.from_numpy(x))
    with pytest.raises(ValueError, match="overflows"):  # edges were inf / NaN and every count 0
        call(fg, fg.from_numpy(x))


@pytest.mark.parametrize("bins", [1, 3, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histogram_of_no_data_has_torchs_edges(dtype, bins):
    """no data and no range: torch's bins span [0, 1] (histc's counts are zeros either way)."""
    x = np.zeros(0, dtype)
    (h, e), (th, te) = _both(lambda m, t: tuple(m.histogram(t, bins)), x)
    assert h.numpy().tobytes() == th.numpy().tobytes() and e.numpy().tobytes() == te.numpy().tobytes()
    h, th = _both(lambda m, t: m.histc(t, bins), x)
    assert h.numpy().tobytes() == th.numpy().tobytes()
