"""Review of the torch.nn additions (lazy modules, nn.Buffer, pdist, fractional max pooling): regressions against
torch 2.13 for what the review found."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn


# ---- lazy modules: the state_dict of an uninitialised one ------------------------------------------------------
def test_uninitialized_lazy_state_dict_holds_placeholders_as_torch():
    m = nn.LazyLinear(4)
    sd = m.state_dict()
    t = torch.nn.LazyLinear(4).state_dict()
    assert [type(v).__name__ for v in sd.values()] == [type(v).__name__ for v in t.values()]
    assert all(isinstance(v, nn.UninitializedParameter) for v in sd.values())


def test_uninitialized_state_dict_loads_into_a_lazy_module_which_stays_lazy():
    src, dst = nn.LazyLinear(4), nn.LazyLinear(4)
    res = dst.load_state_dict(src.state_dict())  # was: IndexError (materialised at shape (0,))
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert dst.has_uninitialized_params()
    y = dst(fg.randn(2, 3))
    assert y.shape == (2, 4) and type(dst) is nn.Linear and dst.weight.shape == (4, 3)


def test_uninitialized_state_dict_into_an_initialized_module_raises():
    with pytest.raises(RuntimeError, match="uninitialized"):
        torch.nn.Linear(3, 4).load_state_dict(torch.nn.LazyLinear(4).state_dict())
    m = nn.Linear(3, 4)
    w = m.weight.detach().numpy().copy()
    with pytest.raises(RuntimeError, match="uninitialized parameter or buffer of a lazy module"):
        m.load_state_dict(nn.LazyLinear(4).state_dict())
    np.testing.assert_array_equal(m.weight.detach().numpy(), w)  # nothing changed


def test_lazy_batchnorm_uninitialized_state_dict_round_trip():
    src, dst = nn.LazyBatchNorm1d(), nn.LazyBatchNorm1d()
    dst.load_state_dict(src.state_dict())
    assert dst.has_uninitialized_params()
    x = np.random.RandomState(0).randn(4, 3).astype(np.float32)
    t = torch.nn.LazyBatchNorm1d()
    np.testing.assert_allclose(dst(fg.tensor(x)).detach().numpy(), t(torch.tensor(x)).detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(dst.running_var.numpy(), t.running_var.numpy(), atol=1e-6)


def test_state_dict_taken_before_the_first_forward_sees_the_materialised_values():
    m = nn.LazyLinear(4)
    sd = m.state_dict()
    m(fg.randn(2, 3))
    assert tuple(sd["weight"].shape) == (4, 3)
    np.testing.assert_array_equal(sd["weight"].detach().numpy(), m.weight.detach().numpy())


def test_save_of_an_uninitialized_lazy_module_raises_clearly(tmp_path):
    # safetensors has no "no shape yet": an empty array would load as a (0,)-shaped parameter
    with pytest.raises(ValueError, match="uninitialized parameter or buffer of a lazy module"):
        fg.save(nn.Sequential(nn.LazyLinear(5), nn.ReLU(), nn.LazyLinear(2)).state_dict(), tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_save_load_after_the_first_forward(tmp_path):
    m = nn.Sequential(nn.LazyLinear(5), nn.ReLU(), nn.LazyLinear(2))
    x = fg.randn(3, 4)
    y = m(x).detach().numpy()
    fg.save(m.state_dict(), tmp_path / "m.safetensors")
    m2 = nn.Sequential(nn.LazyLinear(5), nn.ReLU(), nn.LazyLinear(2))
    m2.load_state_dict(fg.load(tmp_path / "m.safetensors"))
    np.testing.assert_allclose(m2(x).detach().numpy(), y, rtol=1e-6)
    assert type(m2[0]) is nn.Linear and m2[0].in_features == 4


# ---- nn.Buffer -------------------------------------------------------------------------------------------------
def test_register_buffer_takes_its_own_persistent_argument_as_torch():
    # torch: register_buffer(name, Buffer(..., persistent=False)) uses the call's persistent (default True)
    t = torch.nn.Module()
    t.register_buffer("x", torch.nn.Buffer(torch.ones(2), persistent=False))
    m = nn.Module()
    m.register_buffer("x", nn.Buffer(fg.ones(2), persistent=False))
    assert list(m.state_dict()) == list(t.state_dict()) == ["x"]
    m.register_buffer("y", nn.Buffer(fg.ones(2)), persistent=False)
    assert list(m.state_dict()) == ["x"]


def test_buffer_attribute_persistent_false_is_not_in_state_dict():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Buffer(fg.ones(2))
            self.b = nn.Buffer(fg.ones(2), persistent=False)

    m = M()
    assert list(m.state_dict()) == ["a"]
    assert [n for n, _ in m.named_buffers()] == ["a", "b"]


# ---- pdist -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0, float("inf")])
def test_pdist_gradient_with_equal_rows_and_ties(p):
    # rows 0 and 1 equal (zero distance); row 2's |difference| ties at the max for p = inf, where torch gives every
    # tied element its full sign (vector_norm's inf gradient splits it)
    x = np.array([[1.0, 2.0, 0.5], [1.0, 2.0, 0.5], [3.0, 0.0, 0.5], [0.0, 1.0, -1.5]])
    g = np.random.RandomState(1).randn(6)
    tx = torch.tensor(x, requires_grad=True)
    fx = fg.tensor(x, requires_grad=True)
    a = torch.nn.functional.pdist(tx, p)
    b = fg.nn.functional.pdist(fx, p)
    np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-12)
    a.backward(torch.tensor(g))
    b.backward(fg.tensor(g))
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_pdist_inf_float32_value():
    x = np.random.RandomState(2).randn(5, 4).astype(np.float32)
    np.testing.assert_array_equal(fg.nn.functional.pdist(fg.tensor(x), float("inf")).numpy(),
                                  torch.nn.functional.pdist(torch.tensor(x), float("inf")).numpy())


# ---- fractional max pooling ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, 2, 8, 8), (0, 2, 7, 9)])
def test_fractional_max_pool2d_empty_batch(shape):
    x = fg.randn(*shape, requires_grad=True)
    y, i = fg.nn.functional.fractional_max_pool2d(x, 2, output_size=(4, 3), return_indices=True)
    ty = torch.nn.functional.fractional_max_pool2d(torch.randn(*shape), 2, output_size=(4, 3))
    assert y.shape == tuple(ty.shape) and i.shape == tuple(ty.shape)
    y.sum().backward()
    assert x.grad.shape == shape


# ---- EmbeddingBag scale_grad_by_freq ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_scale_grad_by_freq_divides_by_the_batch_count(mode):
    # torch's documented rule (and F.embedding's): each row's gradient divided by how often its index occurs in the
    # batch. torch 2.13's CPU embedding_bag kernel looks the count up as counts[sorted_indices[unique_segment]], so
    # a row after a repeated one gets the wrong count (here row 3: 1/2 though it occurs once); forgegrad follows
    # the rule, checked against F.embedding's gradient summed per bag.
    inp = np.array([1, 2, 4, 5, 4, 3, 2, 9, 1])
    offsets = [0, 2, 2, 6]
    w0 = np.random.RandomState(0).randn(10, 3).astype(np.float32)
    g = np.random.RandomState(1).randn(4, 3).astype(np.float32)
    tw = torch.tensor(w0, requires_grad=True)
    emb = torch.nn.functional.embedding(torch.tensor(inp), tw, scale_grad_by_freq=True)
    bags = [emb[a:b] for a, b in zip(offsets, offsets[1:] + [len(inp)])]
    ref = torch.stack([(b.sum(0) if mode == "sum" else b.mean(0)) if len(b) else torch.zeros(3) for b in bags])
    ref.backward(torch.tensor(g))
    fw = fg.tensor(w0, requires_grad=True)
    out = fg.nn.functional.embedding_bag(fg.tensor(inp), fw, fg.tensor(np.array(offsets)), mode=mode,
                                         scale_grad_by_freq=True)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-6, atol=1e-6)
    out.backward(fg.tensor(g))
    np.testing.assert_allclose(fw.grad.numpy(), tw.grad.numpy(), rtol=1e-6, atol=1e-6)
