"""nn.utils.prune against torch.nn.utils.prune: same masks for the same weights, same state_dict keys,
the forward pre-hook, gradients through weight_orig, re-pruning (PruningContainer), global and remove."""
import math

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune

import forgegrad as fg
from forgegrad import nn
from forgegrad.nn.utils import prune


def _pair_linear(seed=0, i=7, o=5):
    t = torch.nn.Linear(i, o)
    f = nn.Linear(i, o)
    w = np.random.default_rng(seed).standard_normal((o, i)).astype(np.float32)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(w))
    f.weight._data[...] = w
    f.bias._data[...] = t.bias.detach().numpy()
    return f, t


def _pair_conv(seed=0):
    t = torch.nn.Conv2d(3, 6, 3)
    f = nn.Conv2d(3, 6, 3)
    w = np.random.default_rng(seed).standard_normal((6, 3, 3, 3)).astype(np.float32)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(w))
    f.weight._data[...] = w
    f.bias._data[...] = t.bias.detach().numpy()
    return f, t


def _same_masks(f, t, name="weight"):
    np.testing.assert_array_equal(getattr(f, name + "_mask")._data, getattr(t, name + "_mask").numpy())
    np.testing.assert_array_equal(getattr(f, name)._data, getattr(t, name).detach().numpy())


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 1.0, 4, 35])
def test_l1_unstructured_matches_torch(amount):
    f, t = _pair_linear()
    prune.l1_unstructured(f, "weight", amount=amount)
    tprune.l1_unstructured(t, "weight", amount=amount)
    _same_masks(f, t)
    assert list(f.state_dict()) == list(t.state_dict()) == ["bias", "weight_orig", "weight_mask"]
    assert [n for n, _ in f.named_parameters()] == [n for n, _ in t.named_parameters()]
    assert prune.is_pruned(f) and tprune.is_pruned(t)


@pytest.mark.parametrize("n,dim,amount", [(1, 0, 0.4), (2, 0, 2), (2, 1, 0.5), (math.inf, -1, 3), (3, 1, 0.2)])
def test_ln_structured_matches_torch_conv(n, dim, amount):
    f, t = _pair_conv()
    prune.ln_structured(f, "weight", amount=amount, n=n, dim=dim)
    tprune.ln_structured(t, "weight", amount=amount, n=n, dim=dim)
    _same_masks(f, t)


def test_repruning_combines_like_pruning_container():
    f, t = _pair_linear(1, 9, 8)
    for fn_f, fn_t, kw in [(prune.l1_unstructured, tprune.l1_unstructured, dict(amount=0.3)),
                           (prune.ln_structured, tprune.ln_structured, dict(amount=0.25, n=2, dim=0)),
                           (prune.l1_unstructured, tprune.l1_unstructured, dict(amount=5))]:
        fn_f(f, "weight", **kw)
        fn_t(t, "weight", **kw)
        _same_masks(f, t)
    hooks = [h for h in f._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
    assert len(hooks) == 1 and isinstance(hooks[0], prune.PruningContainer) and len(hooks[0]) == 3


def test_global_unstructured_matches_torch():
    f1, t1 = _pair_linear(2, 6, 4)
    f2, t2 = _pair_conv(3)
    prune.l1_unstructured(f1, "weight", amount=0.25)  # earlier pruning counts as pruned
    tprune.l1_unstructured(t1, "weight", amount=0.25)
    prune.global_unstructured([(f1, "weight"), (f2, "weight"), (f2, "bias")], prune.L1Unstructured, amount=0.6)
    tprune.global_unstructured([(t1, "weight"), (t2, "weight"), (t2, "bias")], tprune.L1Unstructured, amount=0.6)
    _same_masks(f1, t1)
    _same_masks(f2, t2)
    _same_masks(f2, t2, "bias")


def test_forward_gradient_and_remove_match_torch():
    f, t = _pair_linear(4)
    prune.l1_unstructured(f, "weight", amount=0.5)
    tprune.l1_unstructured(t, "weight", amount=0.5)
    x = np.random.default_rng(5).standard_normal((3, 7)).astype(np.float32)
    # the hook runs on every call, so a training step that changes weight_orig is seen next forward
    yf = f(fg.tensor(x))
    yt = t(torch.from_numpy(x))
    np.testing.assert_allclose(yf._data, yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    yf.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(f.weight_orig.grad._data, t.weight_orig.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(f.weight_orig.grad._data[f.weight_mask._data == 0] == 0)
    f.weight_orig._data -= 1.0
    with torch.no_grad():
        t.weight_orig -= 1.0
    with fg.no_grad():  # inside Sequential's fused inference path too
        ys = nn.Sequential(f, nn.ReLU())(fg.tensor(x))
    np.testing.assert_allclose(ys._data, torch.relu(t(torch.from_numpy(x))).detach().numpy(), rtol=1e-5, atol=1e-6)
    prune.remove(f, "weight")
    tprune.remove(t, "weight")
    assert list(f.state_dict()) == list(t.state_dict()) == ["bias", "weight"]
    assert isinstance(f.weight, nn.Parameter) and not prune.is_pruned(f)
    np.testing.assert_array_equal(f.weight._data, t.weight.detach().numpy())
    with pytest.raises(ValueError, match="has to be pruned"):
        prune.remove(f, "weight")


def test_pruned_state_dict_loads_into_torch_and_back():
    f, t = _pair_linear(6)
    prune.l1_unstructured(f, "weight", amount=0.4)
    tprune.identity(t, "weight")
    t.load_state_dict({k: torch.from_numpy(v._data.copy()) for k, v in f.state_dict().items()})
    g = nn.Linear(7, 5)
    prune.identity(g, "weight")
    g.load_state_dict(f.state_dict())
    x = np.ones((2, 7), np.float32)
    np.testing.assert_allclose(g(fg.tensor(x))._data, t(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_random_methods_prune_the_right_counts():
    fg.manual_seed(0)
    f, _ = _pair_linear(7, 10, 6)
    prune.random_unstructured(f, "weight", amount=0.35)
    assert int((f.weight_mask._data == 0).sum()) == round(0.35 * 60)
    c, _ = _pair_conv()
    prune.random_structured(c, "weight", amount=2, dim=0)
    per_channel = c.weight_mask._data.reshape(6, -1)
    assert sorted(per_channel.min(1).tolist()) == [0, 0, 1, 1, 1, 1]
    assert np.all(per_channel.min(1) == per_channel.max(1))


def test_errors():
    f, _ = _pair_linear()
    with pytest.raises(ValueError, match="amount"):
        prune.l1_unstructured(f, "weight", amount=1.5)
    with pytest.raises(ValueError, match="smaller than the number"):
        prune.l1_unstructured(f, "weight", amount=100)
    with pytest.raises(TypeError, match="amount"):
        prune.l1_unstructured(f, "weight", amount="half")
    with pytest.raises(ValueError, match="no parameter 'wieght'"):
        prune.l1_unstructured(f, "wieght", amount=0.5)
    with pytest.raises(ValueError, match="at least 2 dims"):
        prune.ln_structured(f, "bias", amount=0.5, n=2, dim=0)
    with pytest.raises(IndexError, match="dim 3"):
        prune.ln_structured(f, "weight", amount=0.5, n=2, dim=3)
    with pytest.raises(TypeError, match="unstructured"):
        prune.global_unstructured([(f, "weight")], prune.LnStructured, amount=0.5, n=2, dim=0)
    assert not prune.is_pruned(f)  # nothing half-applied


def test_sparse_storage_roundtrip_is_smaller(tmp_path):
    from forgegrad.nn.utils import sparse_storage

    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 10))
    prune.global_unstructured([(model[0], "weight"), (model[2], "weight")], prune.L1Unstructured, amount=0.8)
    for i in (0, 2):
        prune.remove(model[i], "weight")
    state = model.state_dict()
    sparse = sparse_storage.to_sparse(state)
    assert "0.weight.__csr_values" in sparse and "0.bias" in sparse and "0.weight" not in sparse
    fg.save(state, str(tmp_path / "dense.safetensors"))
    fg.save(sparse, str(tmp_path / "sparse.safetensors"))
    dense_size = (tmp_path / "dense.safetensors").stat().st_size
    assert (tmp_path / "sparse.safetensors").stat().st_size < 0.45 * dense_size
    back = sparse_storage.to_dense(fg.load(str(tmp_path / "sparse.safetensors")))
    assert sorted(back) == sorted(state)
    for k, v in state.items():
        np.testing.assert_array_equal(back[k], v._data)
    fresh = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 10))
    fresh.load_state_dict(back)
    del sparse["0.weight.__csr_cols"]
    with pytest.raises(ValueError, match="lacks its sparse part"):
        sparse_storage.to_dense(sparse)
