"""torch's factories added in forgegrad/_torch_random.py against torch: linspace, logspace, tril/triu_indices (values,
dtypes), and the random ones from forgegrad's generator (shapes, dtypes, statistics, seeding, thread counts)."""
import numpy as np
import pytest
import torch

import forgegrad as fg


@pytest.mark.parametrize("start,end,steps", [(0, 1, 5), (-3.5, 7.25, 11), (2, -2, 4), (1.0, 1.0, 3), (0, 10, 1),
                                             (0, 1, 0), (-1, 1, 1000)])
def test_linspace_logspace(start, end, steps):
    np.testing.assert_allclose(fg.linspace(start, end, steps).numpy(), torch.linspace(start, end, steps).numpy(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fg.logspace(start / 4, end / 4, steps).numpy(),
                               torch.logspace(start / 4, end / 4, steps).numpy(), rtol=1e-5)
    np.testing.assert_allclose(fg.logspace(start, end, steps, base=2).numpy(),
                               torch.logspace(start, end, steps, base=2).numpy(), rtol=1e-5)
    assert fg.linspace(start, end, steps).dtype == fg.float32


def test_linspace_dtypes_and_errors():
    got = fg.linspace(0, 1, 4, dtype=fg.float64)
    assert got.dtype == fg.float64
    np.testing.assert_array_equal(got.numpy(), torch.linspace(0, 1, 4, dtype=torch.float64).numpy())
    assert fg.linspace(0, 10, 4, dtype=fg.int64).tolist() == torch.linspace(0, 10, 4, dtype=torch.int64).tolist()
    assert fg.linspace(0, 1, 3, requires_grad=True).requires_grad
    assert fg.linspace(0, 1, 3, device="meta").is_meta
    with pytest.raises(ValueError, match="steps"):
        fg.linspace(0, 1, -1)
    with pytest.raises(TypeError, match="start"):
        fg.linspace("0", 1, 3)


@pytest.mark.parametrize("row,col,offset", [(3, 3, 0), (4, 6, 1), (5, 3, -2), (0, 3, 0), (3, 4, 10), (4, 4, -10)])
def test_tril_triu_indices(row, col, offset):
    for name in ("tril_indices", "triu_indices"):
        got, want = getattr(fg, name)(row, col, offset), getattr(torch, name)(row, col, offset)
        assert got.dtype == fg.int64 and got.shape == tuple(want.shape)
        assert got.tolist() == want.tolist()
    assert fg.tril_indices(3, 3, dtype=fg.int32).dtype == fg.int32


def test_randperm_seeded_and_thread_independent():
    fg.manual_seed(5)
    p = fg.randperm(50)
    assert p.dtype == fg.int64 and sorted(p.tolist()) == list(range(50))
    before = fg.get_num_threads()
    try:
        fg.set_num_threads(1)
        fg.manual_seed(5)
        again = fg.randperm(50)
        fg.set_num_threads(3)
        fg.manual_seed(5)
        third = fg.randperm(50)
    finally:
        fg.set_num_threads(before)
    assert p.tolist() == again.tolist() == third.tolist()
    assert fg.randperm(0).shape == (0,) and fg.randperm(4, dtype=fg.int32).dtype == fg.int32
    with pytest.raises(ValueError, match="n must"):
        fg.randperm(-1)


def test_bernoulli_statistics():
    fg.manual_seed(0)
    probs = fg.tensor(np.array([0.0, 0.2, 0.7, 1.0], np.float32)).expand(20000, 4)
    draws = fg.bernoulli(probs)
    assert draws.shape == (20000, 4) and draws.dtype == fg.float32
    np.testing.assert_allclose(draws.numpy().mean(0), [0.0, 0.2, 0.7, 1.0], atol=0.015)
    assert set(np.unique(draws.numpy())) <= {0.0, 1.0}
    x = fg.zeros(10000)
    assert x.bernoulli_(0.3) is x
    assert abs(x.numpy().mean() - 0.3) < 0.02
    assert abs(fg.full((10000,), 0.6).bernoulli().numpy().mean() - 0.6) < 0.02
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fg.bernoulli(fg.tensor([1.5]))


def test_normal_overloads():
    fg.manual_seed(1)
    means, stds = fg.tensor(np.array([0.0, 10.0, -5.0], np.float32)), fg.tensor(np.array([1.0, 0.1, 3.0], np.float32))
    draws = np.stack([fg.normal(means, stds).numpy() for _ in range(4000)])
    np.testing.assert_allclose(draws.mean(0), [0.0, 10.0, -5.0], atol=0.15)
    np.testing.assert_allclose(draws.std(0), [1.0, 0.1, 3.0], rtol=0.06)
    assert fg.normal(means, 2.0).shape == (3,) and fg.normal(1.0, stds).shape == (3,)
    big = fg.normal(3.0, 2.0, size=(200, 100))
    assert big.shape == (200, 100) and big.dtype == fg.float32
    assert abs(big.numpy().mean() - 3.0) < 0.05 and abs(big.numpy().std() - 2.0) < 0.05
    assert fg.normal(means.reshape(3, 1), stds.reshape(1, 3)).shape == (3, 3)
    t = fg.empty(5000)
    assert t.normal_(2.0, 0.5) is t and abs(t.numpy().mean() - 2.0) < 0.05
    u = fg.empty(5000).uniform_(-1, 3)
    assert u.numpy().min() >= -1 and u.numpy().max() < 3 and abs(u.numpy().mean() - 1.0) < 0.1
    with pytest.raises(TypeError, match="size"):
        fg.normal(0.0, 1.0)
    with pytest.raises(ValueError, match="std"):
        fg.normal(means, -1.0)


def test_poisson_and_multinomial():
    fg.manual_seed(2)
    rates = fg.tensor(np.array([0.5, 4.0, 20.0], np.float32))
    draws = np.stack([fg.poisson(rates).numpy() for _ in range(3000)])
    assert draws.dtype == np.float32
    np.testing.assert_allclose(draws.mean(0), [0.5, 4.0, 20.0], rtol=0.06)
    np.testing.assert_allclose(draws.var(0), [0.5, 4.0, 20.0], rtol=0.12)
    w = fg.tensor([[0.0, 1.0, 3.0], [1.0, 1.0, 0.0]])
    s = fg.multinomial(w, 4000, replacement=True)
    assert s.shape == (2, 4000) and s.dtype == fg.int64
    np.testing.assert_allclose(np.bincount(s.numpy()[0], minlength=3) / 4000, [0.0, 0.25, 0.75], atol=0.03)
    no_rep = fg.multinomial(fg.ones(6), 6)
    assert sorted(no_rep.tolist()) == list(range(6))


def test_random_factories_repeat_with_the_seed():
    def draw():
        fg.manual_seed(11)
        return (fg.normal(0.0, 1.0, size=(3,)).tolist(), fg.bernoulli(fg.full((4,), 0.5)).tolist(),
                fg.poisson(fg.ones(3)).tolist(), fg.randperm(6).tolist())
    assert draw() == draw()
