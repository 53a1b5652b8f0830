"""float64 training: every optimizer steps float64 parameters in float64 (state in the parameter's
dtype) as torch's does, gradient clipping, and the zoo models after ``double()`` train step for step
with their torch twins in float64 (same initial weights) to ~1e-10; state_dicts keep float64."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.models import GPT, LeNet, MLP, SequenceClassifier, TransformerClassifier, VAE
from forgegrad.models.vae import vae_loss

OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("RMSprop", dict(lr=0.01, weight_decay=0.1)),
    ("Adadelta", dict(lr=1.0, weight_decay=0.01)),
]


def _problem(lib, seed=0):
    rng = np.random.default_rng(seed)
    w0, b0, x, y = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal((7, 3)), rng.random((7, 5))
    if lib is fg:
        w, b = fg.tensor(w0, requires_grad=True), fg.tensor(b0, requires_grad=True)
        x, y = fg.tensor(x), fg.tensor(y)
    else:
        w, b = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
        x, y = torch.tensor(x), torch.tensor(y)
    return [w, b], lambda: (((x @ w + b).tanh() - y) ** 2).sum() + (b * b).sum()


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)])
def test_optimizer_steps_float64_parameters_as_torch(name, kwargs):
    (ours, loss_ours), (theirs, loss_theirs) = _problem(fg), _problem(torch)
    opt, topt = getattr(fg.optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)
    for _ in range(4):
        for o, lf in ((opt, loss_ours), (topt, loss_theirs)):
            o.zero_grad()
            lf().backward()
            o.step()
    for p, t in zip(ours, theirs):
        assert p.dtype == fg.float64
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)
    for state in opt.state.values():
        for k, v in state.items():
            if isinstance(v, fg.Tensor) and v.ndim:
                assert v.dtype == fg.float64, k  # the state in the parameter's dtype, as torch


def test_lbfgs_with_line_search_in_float64_matches_torch():
    (ours, loss_ours), (theirs, loss_theirs) = _problem(fg, 1), _problem(torch, 1)
    opt = fg.optim.LBFGS(ours, lr=1, max_iter=5, line_search_fn="strong_wolfe")
    topt = torch.optim.LBFGS(theirs, lr=1, max_iter=5, line_search_fn="strong_wolfe")

    def closure(o, lf):
        def run():
            o.zero_grad()
            loss = lf()
            loss.backward()
            return loss
        return run

    for _ in range(2):
        opt.step(closure(opt, loss_ours))
        topt.step(closure(topt, loss_theirs))
    for p, t in zip(ours, theirs):
        assert p.dtype == fg.float64
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-9, atol=1e-11)


def test_schedulers_and_clipping_in_float64():
    (ours, loss_ours), (theirs, loss_theirs) = _problem(fg, 2), _problem(torch, 2)
    opt, topt = fg.optim.SGD(ours, lr=0.5, momentum=0.9), torch.optim.SGD(theirs, lr=0.5, momentum=0.9)
    sched, tsched = fg.optim.lr_scheduler.StepLR(opt, 2, 0.5), torch.optim.lr_scheduler.StepLR(topt, 2, 0.5)
    for _ in range(4):
        for o, lf, params, lib in ((opt, loss_ours, ours, fg), (topt, loss_theirs, theirs, torch)):
            o.zero_grad()
            lf().backward()
            total = lib.nn.utils.clip_grad_norm_(params, 0.3)
            if lib is fg:
                got = total
            else:
                np.testing.assert_allclose(got.numpy(), total.numpy(), rtol=1e-12)
                assert got.dtype == fg.float64
            o.step()
        sched.step()
        tsched.step()
    assert opt.param_groups[0]["lr"] == topt.param_groups[0]["lr"]
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)


# ---- zoo models: double() trains as torch's double twin --------------------------------------------------
class _TorchLeNet(torch.nn.Module):
    def __init__(self, side, hidden, classes):
        super().__init__()
        T = torch.nn
        self.features = T.Sequential(T.Conv2d(1, 32, 3, padding=1), T.ReLU(), T.MaxPool2d(2),
                                     T.Conv2d(32, 64, 3, padding=1), T.ReLU(), T.MaxPool2d(2))
        self.classifier = T.Sequential(T.Flatten(), T.Linear(64 * side * side, hidden), T.ReLU(),
                                       T.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class _TorchSeq(torch.nn.Module):
    def __init__(self, cell, inputs, hidden, classes, layers):
        super().__init__()
        self.rnn = getattr(torch.nn, cell.upper())(inputs, hidden, num_layers=layers, batch_first=True)
        self.fc = torch.nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1, :])


class _TorchVAE(torch.nn.Module):
    def __init__(self, d, hidden, k):
        super().__init__()
        T = torch.nn
        self.encoder = T.Sequential(T.Linear(d, hidden), T.ReLU())
        self.fc_mu, self.fc_logvar = T.Linear(hidden, k), T.Linear(hidden, k)
        self.decoder = T.Sequential(T.Linear(k, hidden), T.ReLU(), T.Linear(hidden, d), T.Sigmoid())

    def forward(self, x, eps):
        h = self.encoder(x)
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        return self.decoder(mu + eps * torch.exp(0.5 * logvar)), mu, logvar


class _TorchGPT(torch.nn.Module):
    """torch twin of forgegrad.models.GPT (same parameter names, tied lm_head)."""

    class Block(torch.nn.Module):
        def __init__(self, c, h):
            super().__init__()
            T = torch.nn
            self.h = h
            self.ln_1, self.ln_2 = T.LayerNorm(c), T.LayerNorm(c)
            self.attn = T.Module()
            self.attn.c_attn, self.attn.c_proj = T.Linear(c, 3 * c), T.Linear(c, c)
            self.mlp = T.Module()
            self.mlp.c_fc, self.mlp.c_proj = T.Linear(c, 4 * c), T.Linear(4 * c, c)

        def forward(self, x):
            n, t, c = x.shape
            qkv = self.attn.c_attn(self.ln_1(x)).reshape(n, t, 3, self.h, c // self.h).permute(2, 0, 3, 1, 4)
            y = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
            x = x + self.attn.c_proj(y.permute(0, 2, 1, 3).reshape(n, t, c))
            return x + self.mlp.c_proj(torch.nn.functional.gelu(self.mlp.c_fc(self.ln_2(x))))

    def __init__(self, vocab, block, layers, heads, c):
        super().__init__()
        T = torch.nn
        self.transformer = T.ModuleDict(dict(wte=T.Embedding(vocab, c), wpe=T.Embedding(block, c),
                                             h=T.ModuleList([self.Block(c, heads) for _ in range(layers)]),
                                             ln_f=T.LayerNorm(c)))
        self.lm_head = T.Linear(c, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx):
        x = self.transformer.wte(idx) + self.transformer.wpe.weight[:idx.shape[1]]
        for b in self.transformer.h:
            x = b(x)
        return self.lm_head(self.transformer.ln_f(x))


class _TorchTextClassifier(torch.nn.Module):
    """torch twin of forgegrad.models.TransformerClassifier (dropout 0)."""

    def __init__(self, vocab, classes, d, heads, layers, ff, max_len):
        super().__init__()
        T = torch.nn
        self.embed = T.Embedding(vocab, d, padding_idx=0)
        self.pos = T.Module()
        self.pos.weight = T.Parameter(torch.zeros(max_len, d))
        layer = T.TransformerEncoderLayer(d, heads, ff, 0.0, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = T.TransformerEncoder(layer, layers, norm=T.LayerNorm(d), enable_nested_tensor=False)
        self.head = T.Linear(d, classes)

    def forward(self, tokens):
        x = self.encoder(self.embed(tokens) + self.pos.weight[:tokens.shape[1]], src_key_padding_mask=tokens == 0)
        keep = (tokens != 0).double().unsqueeze(-1)
        return self.head((x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0))


def _torch_vae_loss(recon, x, mu, logvar):
    rec = torch.nn.functional.binary_cross_entropy(recon, x, reduction="sum")
    return (rec - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())) / x.shape[0]


def _ce(lib):
    return fg.nn.functional.cross_entropy if lib is fg else torch.nn.functional.cross_entropy


def _zoo():
    rng = np.random.default_rng(3)
    x_img, y_cls = rng.random((3, 1, 9, 9)), rng.integers(0, 4, 3)
    x_seq = rng.standard_normal((3, 5, 4))
    x_vae, eps = rng.random((4, 11)), rng.standard_normal((4, 3))
    ids = rng.integers(1, 13, (2, 6))
    ids[1, 4:] = 0  # padding: the classifier's key-padding mask and masked mean
    return [
        ("gpt", lambda: GPT(13, 8, n_layer=2, n_head=2, n_embd=8), lambda: _TorchGPT(13, 8, 2, 2, 8),
         lambda m, lib: _ce(lib)(m(lib.tensor(ids[:, :-1])).reshape(-1, 13), lib.tensor(ids[:, 1:].reshape(-1)))),
        ("transformer_classifier", lambda: TransformerClassifier(13, 3, d_model=8, nhead=2, num_layers=2,
                                                                 dim_feedforward=16, max_len=8, dropout=0.0),
         lambda: _TorchTextClassifier(13, 3, 8, 2, 2, 16, 8),
         lambda m, lib: _ce(lib)(m(lib.tensor(ids)), lib.tensor(y_cls[:2]))),
        ("mlp", lambda: MLP(6, (7, 5), 4), lambda: torch.nn.Sequential(
            torch.nn.Linear(6, 7), torch.nn.ReLU(), torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4)),
         lambda m, lib: _ce(lib)(m(lib.tensor(x_img.reshape(3, -1)[:, :6])), lib.tensor(y_cls))),
        ("lenet", lambda: LeNet(1, 4, 9, 8), lambda: _TorchLeNet(2, 8, 4),
         lambda m, lib: _ce(lib)(m(lib.tensor(x_img)), lib.tensor(y_cls))),
        ("lstm", lambda: SequenceClassifier(4, 6, 4, num_layers=2), lambda: _TorchSeq("lstm", 4, 6, 4, 2),
         lambda m, lib: _ce(lib)(m(lib.tensor(x_seq)), lib.tensor(y_cls))),
        ("gru", lambda: SequenceClassifier(4, 6, 4, cell="gru"), lambda: _TorchSeq("gru", 4, 6, 4, 1),
         lambda m, lib: _ce(lib)(m(lib.tensor(x_seq)), lib.tensor(y_cls))),
        ("vae", lambda: VAE(11, (8,), 3), lambda: _TorchVAE(11, 8, 3),
         lambda m, lib: vae_loss(*m(fg.tensor(x_vae), eps=eps)[:1], fg.tensor(x_vae), *m(fg.tensor(x_vae), eps=eps)[1:])
         if lib is fg else _torch_vae_loss(*m(torch.tensor(x_vae), torch.tensor(eps))[:1], torch.tensor(x_vae),
                                           *m(torch.tensor(x_vae), torch.tensor(eps))[1:])),
    ]


@pytest.mark.parametrize("case", _zoo(), ids=lambda c: c[0])
def test_zoo_model_double_trains_as_torch_float64(case, tmp_path):
    name, make, make_torch, loss_of = case
    fg.manual_seed(0)
    ours = make().double()
    theirs = make_torch().double()
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    assert all(p.dtype == fg.float64 for p in ours.parameters())
    opt, topt = fg.optim.Adam(ours.parameters(), lr=0.01), torch.optim.Adam(theirs.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        topt.zero_grad()
        loss, tloss = loss_of(ours, fg), loss_of(theirs, torch)
        assert loss.dtype == fg.float64
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-10)
        loss.backward()
        tloss.backward()
        opt.step()
        topt.step()
    tstate = theirs.state_dict()
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(v.numpy(), tstate[k].numpy(), rtol=1e-9, atol=1e-11, err_msg=k)
    # checkpoints keep float64, both ways
    path = str(tmp_path / f"{name}.safetensors")
    fg.save(ours.state_dict(), path)
    fresh = make().double()
    fresh.load_state_dict(fg.load(path))
    for k, v in fresh.state_dict().items():
        assert v.dtype == fg.float64, k
        np.testing.assert_array_equal(v.numpy(), ours.state_dict()[k].numpy())


# ---- layers with many options, in float64 against torch ------------------------------------------------
def _layer_cases():
    T = torch.nn
    return [
        ("lstm-bi-2layer-batch_first", lambda: fg.nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True),
         lambda: T.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True), (3, 6, 4)),
        ("gru-bi", lambda: fg.nn.GRU(4, 5, bidirectional=True), lambda: T.GRU(4, 5, bidirectional=True), (6, 3, 4)),
        ("rnn-relu-2layer", lambda: fg.nn.RNN(4, 5, num_layers=2, nonlinearity="relu"),
         lambda: T.RNN(4, 5, num_layers=2, nonlinearity="relu"), (6, 3, 4)),
        ("mha", lambda: fg.nn.MultiheadAttention(8, 2, batch_first=True),
         lambda: T.MultiheadAttention(8, 2, batch_first=True), (2, 5, 8)),
        ("encoder-layer", lambda: fg.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
         lambda: T.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), (2, 5, 8)),
        ("decoder-layer-norm-first", lambda: fg.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, norm_first=True),
         lambda: T.TransformerDecoderLayer(8, 2, 16, dropout=0.0, norm_first=True), (5, 2, 8)),
        ("conv-groups-dilation", lambda: fg.nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
         lambda: T.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), (2, 4, 9, 7)),
        ("batchnorm2d-train", lambda: fg.nn.BatchNorm2d(3), lambda: T.BatchNorm2d(3), (4, 3, 5, 3)),
    ]


def _call(name, m, x, lib):
    if name == "mha":
        return m(x, x, x)[0]
    if name.startswith("decoder"):
        mem = x * 0.5 + 0.1
        mask = lib.nn.Transformer.generate_square_subsequent_mask(x.shape[0]).double()
        return m(x, mem, tgt_mask=mask)
    out = m(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("case", _layer_cases(), ids=lambda c: c[0])
def test_layer_double_matches_torch_forward_and_gradients(case):
    name, make, make_torch, shape = case
    fg.manual_seed(1)
    ours, theirs = make().double(), make_torch().double()
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    x0 = np.random.default_rng(5).standard_normal(shape)
    x, tx = fg.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    y, ty = _call(name, ours, x, fg), _call(name, theirs, tx, torch)
    assert y.dtype == fg.float64
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    c = np.random.default_rng(6).standard_normal(y.shape)
    (y * fg.tensor(c)).sum().backward()
    (ty * torch.tensor(c)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    tp = dict(theirs.named_parameters())
    for k, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tp[k].grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=k)
    for k, b in ours.state_dict().items():  # running statistics updated in float64
        assert b.dtype == fg.float64 or b.dtype == fg.int64, k
        np.testing.assert_allclose(b.numpy(), theirs.state_dict()[k].numpy(), rtol=1e-12, err_msg=k)


def test_optimizer_state_dict_of_float64_parameters_round_trips_in_float64(tmp_path):
    (ours, loss_ours), (theirs, loss_theirs) = _problem(fg, 4), _problem(torch, 4)
    opt, topt = fg.optim.Adam(ours, lr=0.01, amsgrad=True), torch.optim.Adam(theirs, lr=0.01, amsgrad=True)
    for o, lf in ((opt, loss_ours), (topt, loss_theirs)):
        o.zero_grad()
        lf().backward()
        o.step()
    path = str(tmp_path / "opt.safetensors")
    fg.save({"optimizer": opt.state_dict()}, path)
    again = fg.optim.Adam(ours, lr=0.01, amsgrad=True)
    again.load_state_dict(fg.load(path)["optimizer"])
    for state in again.state.values():
        for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert state[k].dtype == fg.float64, k
    for o, lf in ((again, loss_ours), (topt, loss_theirs)):  # the loaded state continues torch's run
        o.zero_grad()
        lf().backward()
        o.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)
