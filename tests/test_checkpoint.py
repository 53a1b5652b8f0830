"""forgegrad.utils.checkpoint against torch.utils.checkpoint: outputs and every gradient, and the same
gradients bit for bit as the run without checkpointing (dropout included)."""
import warnings

import numpy as np
import pytest
import torch
import torch.utils.checkpoint as tckpt

import forgegrad as fg
from forgegrad import autograd, nn
from forgegrad.distributed import comm
from forgegrad.utils.checkpoint import checkpoint, checkpoint_sequential


def _pair(seed=0):
    """A forgegrad MLP and a torch one with the same weights."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    w2, b2 = rng.standard_normal((3, 6)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    f = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    t = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    for fl, tl, w, b in ((f[0], t[0], w1, b1), (f[2], t[2], w2, b2)):
        fl.weight.data = fg.tensor(w.copy())
        fl.bias.data = fg.tensor(b.copy())
        with torch.no_grad():
            tl.weight.copy_(torch.tensor(w))
            tl.bias.copy_(torch.tensor(b))
    return f, t


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reentrant", [False, True])
def test_module_checkpoint_matches_torch(reentrant):
    f, t = _pair()
    x0 = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    fx, tx = fg.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    fy = checkpoint(f, fx, use_reentrant=reentrant)
    ty = tckpt.checkpoint(t, tx, use_reentrant=reentrant)
    _close(fy.numpy(), ty)
    (fy * fy).sum().backward()
    (ty * ty).sum().backward()
    _close(fx.grad.numpy(), tx.grad)
    for fp, tp in zip(f.parameters(), t.parameters()):
        _close(fp.grad.numpy(), tp.grad)


def test_multiple_inputs_outputs_kwargs_and_inputs_without_grad_match_torch():
    def fn(lib):
        def run(a, b, c, scale=1.0, bias=None):
            h = (a * b).sin() + c
            return h * scale + bias, (b * c).exp(), 3
        return run

    rng = np.random.default_rng(2)
    a0, b0, c0, d0 = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(4))
    fa, fb = fg.tensor(a0, requires_grad=True), fg.tensor(b0, requires_grad=True)
    fc, fd = fg.tensor(c0), fg.tensor(d0, requires_grad=True)  # c: no grad
    ta, tb = torch.tensor(a0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    tc, td = torch.tensor(c0), torch.tensor(d0, requires_grad=True)
    fo = checkpoint(fn("fg"), fa, fb, fc, scale=2.0, bias=fd, use_reentrant=False)
    to = tckpt.checkpoint(fn("torch"), ta, tb, tc, scale=2.0, bias=td, use_reentrant=False)
    assert fo[2] == to[2] == 3
    for f_, t_ in zip(fo[:2], to[:2]):
        _close(f_.numpy(), t_)
    (fo[0].sum() * 2 + (fo[1] * fo[0]).sum()).backward()
    (to[0].sum() * 2 + (to[1] * to[0]).sum()).backward()
    for f_, t_ in ((fa, ta), (fb, tb), (fd, td)):
        _close(f_.grad.numpy(), t_.grad)
    assert fc.grad is None and tc.grad is None


def test_parameters_get_grads_when_no_input_requires_grad():
    f, t = _pair(3)
    x0 = np.ones((2, 5), np.float32)
    fy = checkpoint(f, fg.tensor(x0), use_reentrant=False)
    ty = tckpt.checkpoint(t, torch.tensor(x0), use_reentrant=False)
    assert fy.requires_grad and ty.requires_grad
    fy.sum().backward()
    ty.sum().backward()
    for fp, tp in zip(f.parameters(), t.parameters()):
        _close(fp.grad.numpy(), tp.grad)
    # nothing requires grad: a plain result
    assert not checkpoint(lambda v: v * 2, fg.tensor(x0), use_reentrant=False).requires_grad


def _grads(model, x0, mode, seed=7):
    x = fg.tensor(x0, requires_grad=True)
    fg.manual_seed(seed)
    if mode == "plain":
        y = model(x)
    elif mode == "ckpt":
        y = checkpoint(model, x, use_reentrant=False)
    elif mode == "seq":
        y = checkpoint_sequential(model, 2, x, use_reentrant=False)
    else:  # nested: the whole model checkpointed, its first half checkpointed inside
        y = checkpoint(lambda v: model[2:](checkpoint(model[:2], v, use_reentrant=False)), x, use_reentrant=False)
    loss = (y * y).sum()
    loss.backward()
    return [loss.numpy().copy(), x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("mode", ["ckpt", "seq", "nested"])
def test_gradients_equal_the_plain_run_bit_for_bit_with_dropout(mode):
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, 16), nn.Dropout(0.2),
                          nn.Linear(16, 4))
    x0 = np.random.default_rng(4).standard_normal((5, 8)).astype(np.float32)
    ref = _grads(model, x0, "plain")
    model.zero_grad()
    got = _grads(model, x0, mode)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_sequential_matches_torch():
    f, t = _pair(5)
    x0 = np.random.default_rng(5).standard_normal((3, 5)).astype(np.float32)
    fx, tx = fg.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    fy = checkpoint_sequential(f, 2, fx, use_reentrant=False)
    ty = tckpt.checkpoint_sequential(t, 2, tx, use_reentrant=False)
    _close(fy.numpy(), ty)
    fy.sum().backward()
    ty.sum().backward()
    _close(fx.grad.numpy(), tx.grad)
    for fp, tp in zip(f.parameters(), t.parameters()):
        _close(fp.grad.numpy(), tp.grad)


def test_use_reentrant_must_be_passed_like_torch():
    x = fg.tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.warns(UserWarning, match="use_reentrant"):
        checkpoint(lambda v: v * 2, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint(lambda v: v * 2, x, use_reentrant=False)
    with pytest.raises(TypeError, match="callable"):
        checkpoint(3, x, use_reentrant=False)


def test_an_input_written_in_place_after_the_forward_is_refused():
    x = fg.tensor(np.ones(3, np.float32), requires_grad=True)
    h = x * 1
    y = checkpoint(lambda v: v.sin(), h, use_reentrant=False)
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_backward_twice_needs_retain_graph():
    x = fg.tensor(np.ones(3, np.float32), requires_grad=True)
    y = checkpoint(lambda v: (v * 3).sin(), x, use_reentrant=False).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 3 * np.cos(3 * np.ones(3)), rtol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_hooks_and_pass_observers_see_one_pass_with_each_leaf_once():
    """DDP's reduction hooks (post-accumulate) fire once per parameter per pass with the final gradient,
    also for a weight used inside and outside the checkpointed part; observers see the outer pass only and
    queued callbacks run at its end."""
    fg.manual_seed(1)
    lin = nn.Linear(4, 4)
    x0 = np.random.default_rng(6).standard_normal((2, 4)).astype(np.float32)

    def loss_of(ck):
        x = fg.tensor(x0)
        inner = (lambda v: lin(v).relu()) if not ck else (lambda v: checkpoint(lambda u: lin(u).relu(), v,
                                                                                  use_reentrant=False))
        return lin(inner(x)).sum()  # lin used twice: inside and outside the checkpoint

    loss_of(False).backward()
    ref = [p.grad.numpy().copy() for p in lin.parameters()]
    lin.zero_grad()

    class Watcher:
        def __init__(self):
            self.passes, self.ended, self.fired = 0, [], []

        def on_pass(self, nodes):
            self.passes += 1
            autograd.queue_callback(lambda: self.ended.append(list(self.fired)))

    w = Watcher()
    autograd._add_pass_observer(w.on_pass)
    handles = [p.register_post_accumulate_grad_hook(lambda p: w.fired.append(p.grad.numpy().copy()))
               for p in lin.parameters()]
    loss_of(True).backward()
    for h in handles:
        h.remove()
    assert w.passes == 1 and len(w.fired) == 2 and len(w.ended) == 1 and len(w.ended[0]) == 2
    for a, b in zip(sorted(ref, key=np.size), sorted(w.fired, key=np.size)):
        np.testing.assert_array_equal(a, b)
    assert autograd._pass_state.callbacks == []


def test_register_hook_on_a_leaf_used_inside_a_checkpoint_fires_once_with_the_sum():
    x = fg.tensor(np.ones(3, np.float32), requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 10)
    y = checkpoint(lambda v: v * 2, x, use_reentrant=False) + x * 3
    y.sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], [5, 5, 5])
    np.testing.assert_array_equal(x.grad.numpy(), [50, 50, 50])


def _model_grads(model, ids, ckpt):
    model.train()
    model.zero_grad()
    if ckpt:
        model.gradient_checkpointing_enable()
    else:
        model.gradient_checkpointing_disable()
    fg.manual_seed(3)
    logits = model(ids)
    kinds = {type(n).__name__ for n in autograd._topo_order(logits._ctx)}
    assert ("CheckpointFunction" in kinds) == ckpt
    (logits * logits).mean().backward()
    return [logits.numpy().copy()] + [p.grad.numpy().copy() for p in model.parameters()]


def test_zoo_gpt_gradient_checkpointing_gives_the_same_gradients():
    from forgegrad.models.transformer import GPT
    fg.manual_seed(0)
    model = GPT(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.1)
    ids = fg.tensor(np.random.default_rng(0).integers(0, 50, (2, 12)))
    for a, b in zip(_model_grads(model, ids, False), _model_grads(model, ids, True)):
        np.testing.assert_array_equal(a, b)
    assert GPT(n_layer=1, n_embd=8, n_head=2, gradient_checkpointing=True).gradient_checkpointing


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_hf_decoder_gradient_checkpointing_enable_gives_the_same_gradients(arch):
    from forgegrad.models.hf.gemma2 import Gemma2ForCausalLM
    from forgegrad.models.hf.llama import LlamaForCausalLM
    config = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, vocab_size=40, max_position_embeddings=64, rms_norm_eps=1e-6,
                  hidden_act="silu", rope_theta=10000.0)
    if arch == "gemma2":
        config.update(head_dim=8, query_pre_attn_scalar=8, sliding_window=4, attn_logit_softcapping=5.0,
                      final_logit_softcapping=10.0, hidden_activation="gelu_pytorch_tanh")
    fg.manual_seed(0)
    model = (Gemma2ForCausalLM if arch == "gemma2" else LlamaForCausalLM)(config)
    ids = np.random.default_rng(1).integers(0, 40, (2, 7))
    plain = _model_grads(model, ids, False)
    assert not model.is_gradient_checkpointing
    for a, b in zip(plain, _model_grads(model, ids, True)):
        np.testing.assert_array_equal(a, b)
    assert model.is_gradient_checkpointing
    with pytest.raises(ValueError, match="gradient_checkpointing_kwargs"):
        model.gradient_checkpointing_enable({"preserve_rng_state": False})


@pytest.mark.skipif(not comm.is_available(), reason='mpi4py is not installed (pip install "forgegrad[mpi]")')
def test_ddp_with_checkpointed_blocks_reduces_every_bucket_once_from_its_hooks():
    """One-rank DistributedDataParallel (no MPI job): the reducer's post-accumulate hooks see each parameter
    once, after its last contribution (a weight shared inside and outside a checkpoint included), so every
    bucket starts from the hooks during the pass and one round ends with it; gradients equal the plain run."""
    import forgegrad.distributed as dist
    comm.init()

    class Net(nn.Module):
        def __init__(self, ckpt):
            super().__init__()
            self.ckpt = ckpt
            self.a, self.b, self.c = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)

        def forward(self, x):
            def inner(v):
                return self.b(self.a(v).tanh()).relu()
            h = checkpoint(inner, x, use_reentrant=False) if self.ckpt else inner(x)
            return self.c(self.a(h))  # a: inside and outside the checkpoint

    x0 = np.random.default_rng(8).standard_normal((4, 6)).astype(np.float32)
    grads = []
    for ckpt in (False, True):
        fg.manual_seed(0)
        model = dist.DistributedDataParallel(Net(ckpt), bucket_cap_mb=0.0001)  # small buckets
        reducer = model._reducer
        fired = []
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(lambda p: fired.append(id(p)))
        model(fg.tensor(x0)).sum().backward()
        assert sorted(fired) == sorted(id(p) for p in model.parameters())  # each once
        assert reducer.rounds == 1 and not reducer.active
        assert reducer.launched_in_backward == len(reducer.buckets) > 2
        grads.append([p.grad.numpy().copy() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
