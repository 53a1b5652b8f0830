"""Sparse gradients in training, against torch: Embedding(sparse=True) / F.embedding(sparse=True) give a sparse COO
weight gradient; SGD, Adagrad and SparseAdam step with it; other optimizers refuse it; clip_grad_norm_ clips it."""
import numpy as np
import pytest
import torch

import forgegrad as fg

IDX = np.array([[1, 4, 1, 0], [3, 3, 2, 4]])  # duplicates within and across rows


def _pair(padding_idx=None, scale_grad_by_freq=False, seed=0):
    w = np.random.default_rng(seed).standard_normal((6, 5)).astype(np.float32)
    kw = dict(padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq, sparse=True)
    e = fg.nn.Embedding.from_pretrained(fg.tensor(w), freeze=False, **kw)
    te = torch.nn.Embedding.from_pretrained(torch.tensor(w), freeze=False, **kw)
    return e, te


def _backward(e, te, idx=IDX, seed=1):
    w = np.random.default_rng(seed).standard_normal(idx.shape + (5,)).astype(np.float32)
    (e(fg.tensor(idx)) * fg.tensor(w)).sum().backward()
    (te(torch.tensor(idx)) * torch.tensor(w)).sum().backward()


@pytest.mark.parametrize("padding_idx", [None, 3, -2])
def test_embedding_sparse_gradient_matches_torch(padding_idx):
    e, te = _pair(padding_idx)
    _backward(e, te)
    g, tg = e.weight.grad, te.weight.grad
    assert g.layout is fg.sparse_coo and tg.is_sparse
    assert (g._nnz(), g.is_coalesced(), g.sparse_dim(), g.dense_dim()) == (tg._nnz(), tg.is_coalesced(), 1, 1)
    np.testing.assert_array_equal(g._indices().numpy(), tg._indices().numpy())
    np.testing.assert_allclose(g._values().numpy(), tg._values().numpy(), rtol=1e-6)
    np.testing.assert_allclose(g.to_dense().numpy(), tg.to_dense().numpy(), rtol=1e-6)


def test_scale_grad_by_freq_refused_with_sparse_as_torch():
    e, te = _pair(scale_grad_by_freq=True)
    with pytest.raises(RuntimeError, match="scale_grad_by_freq not supported with sparse gradients"):
        _backward(e, te)


def test_functional_embedding_sparse_and_accumulation():
    w_np = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    w, tw = fg.tensor(w_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)
    for idx in ([0, 2, 2], [3]):
        fg.nn.functional.embedding(fg.tensor(np.array(idx)), w, sparse=True).sum().backward()
        torch.nn.functional.embedding(torch.tensor(idx), tw, sparse=True).sum().backward()
    assert w.grad.layout is fg.sparse_coo
    np.testing.assert_allclose(w.grad.to_dense().numpy(), tw.grad.to_dense().numpy())


@pytest.mark.parametrize("make,tmake", [
    (lambda p: fg.optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda p: fg.optim.SGD(p, lr=0.1, maximize=True), lambda p: torch.optim.SGD(p, lr=0.1, maximize=True)),
    (lambda p: fg.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1)),
    (lambda p: fg.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
    (lambda p: fg.optim.Adagrad(p, lr=0.1, lr_decay=0.01), lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.01)),
    (lambda p: fg.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.5, maximize=True),
     lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.5, maximize=True)),
    (lambda p: fg.optim.SparseAdam(p, lr=0.01), lambda p: torch.optim.SparseAdam(p, lr=0.01)),
    (lambda p: fg.optim.SparseAdam(p, lr=0.01, betas=(0.8, 0.99), maximize=True),
     lambda p: torch.optim.SparseAdam(p, lr=0.01, betas=(0.8, 0.99), maximize=True)),
])
def test_optimizers_step_with_sparse_gradients_as_torch(make, tmake):
    e, te = _pair()
    opt, topt = make(e.parameters()), tmake(te.parameters())
    batches = [IDX, np.array([[5, 0]]), np.array([[2, 2, 2]])]
    for step, idx in enumerate(batches):
        opt.zero_grad()
        topt.zero_grad()
        _backward(e, te, idx, seed=step)
        opt.step()
        topt.step()
        np.testing.assert_allclose(e.weight.detach().numpy(), te.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,make", [("Adam", lambda p: fg.optim.Adam(p)), ("AdamW", lambda p: fg.optim.AdamW(p)),
                                       ("RMSprop", lambda p: fg.optim.RMSprop(p)),
                                       ("Adadelta", lambda p: fg.optim.Adadelta(p))])
def test_other_optimizers_refuse_sparse_gradients(name, make):
    e, te = _pair()
    _backward(e, te)
    with pytest.raises(RuntimeError, match=f"{name} does not support sparse gradients"):
        make(e.parameters()).step()


def test_sparse_adam_refuses_dense_gradients_and_weight_decay_refused():
    w = fg.randn(3, 2, requires_grad=True)
    (w * 2).sum().backward()
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
        fg.optim.SparseAdam([w]).step()
    for make in (lambda p: fg.optim.SGD(p, lr=0.1, weight_decay=0.1),
                 lambda p: fg.optim.Adagrad(p, weight_decay=0.1)):
        e, te = _pair()
        _backward(e, te)
        with pytest.raises(RuntimeError, match="weight_decay|add\\(sparse, dense\\)"):
            make(e.parameters()).step()
    with pytest.raises(ValueError, match="beta"):
        fg.optim.SparseAdam([w], betas=(1.0, 0.9))


def test_zero_grad_keeps_a_sparse_gradient_empty():
    e, te = _pair()
    _backward(e, te)
    opt = fg.optim.SGD(e.parameters(), lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert e.weight.grad.layout is fg.sparse_coo and e.weight.grad._nnz() == 0
    before = e.weight.detach().numpy().copy()
    opt.step()
    np.testing.assert_array_equal(e.weight.detach().numpy(), before)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_with_sparse_gradients(norm_type):
    # torch's clip_grad_norm_ has no sparse norm kernel (NotImplementedError); the reference is its result on the
    # densified gradients, which is what the sparse ones stand for
    e, te = _pair()
    lin, tlin = fg.nn.Linear(5, 2), torch.nn.Linear(5, 2)
    with torch.no_grad():
        tlin.weight.copy_(torch.tensor(lin.weight.detach().numpy()))
        tlin.bias.copy_(torch.tensor(lin.bias.detach().numpy()))
    lin(e(fg.tensor(IDX))).sum().backward()
    tlin(te(torch.tensor(IDX))).sum().backward()
    te.weight.grad = te.weight.grad.to_dense()
    total = fg.nn.utils.clip_grad_norm_(list(e.parameters()) + list(lin.parameters()), 0.5, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(list(te.parameters()) + list(tlin.parameters()), 0.5, norm_type)
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=1e-5)
    assert e.weight.grad.layout is fg.sparse_coo
    np.testing.assert_allclose(e.weight.grad.to_dense().numpy(), te.weight.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lin.weight.grad.numpy(), tlin.weight.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_save_load_sparse_tensors(tmp_path):
    coo = fg.sparse_coo_tensor([[0, 2, 0], [1, 0, 1]], [1.0, 2.0, 3.0], (3, 4))
    hybrid = fg.tensor(np.array([[0, 0], [1, 2], [0, 0]], np.float32)).to_sparse(1)
    csr = fg.tensor(np.array([[0, 5, 0], [0, 0, 0], [7, 0, 8]], np.float32)).to_sparse_csr()
    empty = fg.sparse_coo_tensor(np.zeros((2, 0), np.int64), np.zeros(0, np.float32), (2, 2))
    state = {"coo": coo, "model": {"w": fg.ones(2)}, "hybrid": hybrid, "csr": csr, "empty": empty, "step": 3}
    fg.save(state, tmp_path / "s.safetensors")
    back = fg.load(tmp_path / "s.safetensors")
    assert back["step"] == 3 and np.array_equal(back["model"]["w"], np.ones(2))
    for k in ("coo", "hybrid", "csr", "empty"):
        assert back[k].layout is state[k].layout and back[k].shape == state[k].shape
        np.testing.assert_array_equal(back[k].to_dense().numpy(), state[k].to_dense().numpy())
    assert not back["coo"].is_coalesced() and back["hybrid"].is_coalesced() and back["hybrid"].dense_dim() == 1
    np.testing.assert_array_equal(back["csr"].crow_indices().numpy(), [0, 1, 1, 3])
    fg.save({"only": coo}, tmp_path / "flat.safetensors")  # a flat dict with a sparse tensor: nested layout
    np.testing.assert_array_equal(fg.load(tmp_path / "flat.safetensors")["only"].to_dense().numpy(),
                                  coo.to_dense().numpy())


def test_load_refuses_a_tampered_sparse_entry(tmp_path):
    import json

    from safetensors.numpy import load_file, save_file
    fg.save({"s": fg.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (2,))}, tmp_path / "s.safetensors")
    from safetensors import safe_open
    with safe_open(str(tmp_path / "s.safetensors"), "np") as f:
        meta = f.metadata()
    doc = json.loads(meta["forgegrad.structure"])
    doc["root"]["dict"][0][1]["sparse_coo"]["size"] = [1]  # index 1 is out of range now
    arrays = load_file(str(tmp_path / "s.safetensors"))
    save_file(arrays, str(tmp_path / "bad.safetensors"), metadata={"forgegrad.structure": json.dumps(doc)})
    with pytest.raises(ValueError, match="out of range"):
        fg.load(tmp_path / "bad.safetensors")


def test_sparse_adam_resumes_from_a_saved_state_exactly(tmp_path):
    e, _ = _pair()
    opt = fg.optim.SparseAdam(e.parameters(), lr=0.1)

    def step(model, o, idx):
        o.zero_grad()
        model(fg.tensor(np.array(idx))).sum().backward()
        o.step()

    step(e, opt, [1, 2])
    fg.save({"model": e.state_dict(), "opt": opt.state_dict()}, tmp_path / "c.safetensors")
    ck = fg.load(tmp_path / "c.safetensors")
    e2, _ = _pair(seed=5)
    e2.load_state_dict(ck["model"])
    opt2 = fg.optim.SparseAdam(e2.parameters(), lr=0.1)
    opt2.load_state_dict(ck["opt"])
    step(e, opt, [2, 3])
    step(e2, opt2, [2, 3])
    np.testing.assert_array_equal(e.weight.detach().numpy(), e2.weight.detach().numpy())
    assert opt2.state_dict()["state"][0]["step"] == 2
