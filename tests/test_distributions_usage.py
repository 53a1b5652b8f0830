"""The distributions in the loops users write: maximum likelihood with an optimizer, a VAE's reparameterised
latent and KL term, a policy-gradient (REINFORCE) loss; each against torch with the same weights and noise."""
import numpy as np
import torch

import forgegrad as fg
import forgegrad.distributions as D
from forgegrad import nn, optim

TD = torch.distributions


def test_maximum_likelihood_fit_recovers_mean_and_std():
    data = np.random.default_rng(0).normal(1.5, 0.7, 2000)
    x = fg.tensor(data)
    loc = fg.tensor(0.0, dtype=fg.float64, requires_grad=True)
    log_scale = fg.tensor(0.0, dtype=fg.float64, requires_grad=True)
    opt = optim.Adam([loc, log_scale], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        loss = -D.Normal(loc, log_scale.exp()).log_prob(x).mean()
        loss.backward()
        opt.step()
    assert abs(loc.item() - data.mean()) < 1e-3 and abs(np.exp(log_scale.item()) - data.std()) < 1e-3


def test_vae_latent_and_kl_gradients_match_torch_with_the_same_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    enc, dec = nn.Linear(5, 2 * 3), nn.Linear(3, 5)
    tenc, tdec = torch.nn.Linear(5, 2 * 3), torch.nn.Linear(3, 5)
    with torch.no_grad():
        for f, t in ((enc, tenc), (dec, tdec)):
            t.weight.copy_(torch.tensor(f.weight.numpy()))
            t.bias.copy_(torch.tensor(f.bias.numpy()))

    def loss(mod, softplus, lin_e, lin_d, xin, eps=None):
        h = lin_e(xin)
        mu, raw = h[:, :3], h[:, 3:]
        q = mod.Normal(mu, softplus(raw))
        z = q.rsample() if eps is None else q.loc + q.scale * eps
        prior = mod.Normal(mu * 0, mu * 0 + 1)
        rec = mod.Independent(mod.Normal(lin_d(z), lin_d(z) * 0 + 1), 1)
        return -(rec.log_prob(xin) - mod.kl_divergence(mod.Independent(q, 1), mod.Independent(prior, 1))).mean(), z, q

    fg.manual_seed(3)
    f_loss, z, q = loss(D, fg.nn.functional.softplus, enc, dec, fg.tensor(x))
    eps = ((z - q.loc) / q.scale).detach().numpy()  # the noise forgegrad drew
    t_loss, _, _ = loss(TD, torch.nn.functional.softplus, tenc, tdec, torch.tensor(x), torch.tensor(eps))
    f_loss.backward()
    t_loss.backward()
    assert abs(f_loss.item() - t_loss.item()) < 1e-4
    for f, t in ((enc, tenc), (dec, tdec)):
        np.testing.assert_allclose(f.weight.grad.numpy(), t.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(f.bias.grad.numpy(), t.bias.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_reinforce_loss_gradient_matches_torch():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(8, 4))
    actions = rng.integers(0, 4, 8)
    adv = rng.normal(size=8)
    fl = fg.tensor(logits, requires_grad=True)
    tl = torch.tensor(logits, requires_grad=True)
    fpi, tpi = D.Categorical(logits=fl), TD.Categorical(logits=tl)
    f = -(fpi.log_prob(fg.tensor(actions)) * fg.tensor(adv)).mean() - 0.01 * fpi.entropy().mean()
    t = -(tpi.log_prob(torch.tensor(actions)) * torch.tensor(adv)).mean() - 0.01 * tpi.entropy().mean()
    f.backward()
    t.backward()
    assert abs(f.item() - t.item()) < 1e-12
    np.testing.assert_allclose(fl.grad.numpy(), tl.grad.numpy(), rtol=1e-10, atol=1e-12)
