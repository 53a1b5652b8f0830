"""Variational autoencoders (Kingma & Welling, 2014): an MLP VAE and a convolutional one, and the
ELBO loss.

The encoder maps x to the mean ``mu`` and log-variance ``logvar`` of a diagonal Gaussian q(z|x);
the reparameterisation trick ``z = mu + eps * exp(logvar / 2)`` with ``eps ~ N(0, I)`` keeps z
differentiable in mu and logvar; the decoder maps z to Bernoulli means in [0, 1] (a sigmoid output).
eps comes from forgegrad's seeded generator (``forgegrad.manual_seed``) or is passed explicitly.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .. import nn
from ..nn import functional as F
from .._args import positive_int
from .. import random as _random
from ..autograd import Function, no_grad
from ..tensor import Tensor
from .mlp import activation_module, hidden_sizes

__all__ = ["VAE", "ConvVAE", "vae_loss", "VAELoss"]


class _VAEBase(nn.Module):
    """encode/decode are defined by subclasses; this holds the shared sampling logic."""

    latent: int

    def reparameterize(self, mu: Tensor, logvar: Tensor, eps=None) -> Tensor:
        """z = mu + eps * exp(0.5 * logvar). eps: (N, latent) array/Tensor, or None to draw it."""
        if eps is None:
            # drawn in mu's dtype (a float64 model samples in float64)
            eps = Tensor._wrap_exact(_random.generator().standard_normal(mu.shape, dtype=mu._data.dtype))
        else:
            # an array is taken in the model's dtype (mu's), as the noise it stands for
            eps = eps if isinstance(eps, Tensor) else Tensor._wrap_exact(np.asarray(eps, mu._data.dtype))
            if tuple(eps.shape) != tuple(mu.shape):
                raise ValueError(f"{type(self).__name__}: eps must have shape {tuple(mu.shape)} (N, latent), "
                                 f"got {tuple(eps.shape)}")
        if eps.device != mu.device and not mu.is_meta:  # drawn on the host: the same numbers on every device
            eps = eps.to(mu.device)
        return mu + eps * (logvar * 0.5).exp()

    def _dtype(self):
        """The parameters' dtype (float32, or float64 after ``double()``): arrays are taken in it."""
        return next(iter(self.parameters()))._data.dtype

    def _device(self):
        p = next(iter(self.parameters()), None)
        return None if p is None or p.is_meta else p.device

    def forward(self, x, eps=None):
        """Returns (reconstruction, mu, logvar); the reconstruction has x's shape, values in [0, 1].

        A fresh eps is drawn on every call unless ``eps`` is given (use that for deterministic runs).
        """
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, eps)
        return self.decode(z), mu, logvar

    def sample(self, n: int) -> Tensor:
        """n samples decoded from z ~ N(0, I) drawn from forgegrad's generator (no graph)."""
        n = positive_int(n, "n", f"{type(self).__name__}.sample")
        z = Tensor._wrap_exact(_random.generator().standard_normal((n, self.latent), dtype=self._dtype()))
        if self._device() is not None:
            z = z.to(self._device())
        with no_grad():
            return self.decode(z)

    def reconstruct(self, x) -> Tensor:
        """Deterministic reconstruction: decode the posterior mean (no noise, no graph)."""
        with no_grad():
            x = x if isinstance(x, Tensor) else Tensor._wrap_exact(np.asarray(x, self._dtype()))
            if self._device() is not None:
                x = x.to(self._device())
            mu, _ = self.encode(x)
            return self.decode(mu)


class VAE(_VAEBase):
    """MLP VAE: input_dim -> hidden... -> (mu, logvar) of size latent -> hidden reversed -> input_dim.

    Args:
        input_dim: features per sample (64 for 8x8 digits, 784 for 28x28 images). Inputs of shape
            (N, ...) with input_dim values per sample are flattened.
        hidden: encoder hidden sizes (the decoder mirrors them), e.g. (400,).
        latent: size of z.
        activation: hidden activation name ("relu", "tanh", ...).

    forward(x, eps=None) -> (recon (N, input_dim), mu (N, latent), logvar (N, latent)).
    """

    def __init__(self, input_dim: int = 784, hidden: Sequence[int] = (400,), latent: int = 20,
                 activation: str = "relu"):
        super().__init__()
        self.input_dim = positive_int(input_dim, "input_dim", "VAE")
        self.latent = positive_int(latent, "latent", "VAE")
        sizes = hidden_sizes(hidden, "VAE")
        if not sizes:
            raise ValueError("VAE: hidden needs at least one layer size")
        self.hidden = sizes
        enc, prev = [], self.input_dim
        for h in sizes:
            enc += [nn.Linear(prev, h), activation_module(activation, "VAE")]
            prev = h
        self.encoder = nn.Sequential(*enc)
        self.fc_mu = nn.Linear(prev, self.latent)
        self.fc_logvar = nn.Linear(prev, self.latent)
        dec, prev = [], self.latent
        for h in reversed(sizes):
            dec += [nn.Linear(prev, h), activation_module(activation, "VAE")]
            prev = h
        dec += [nn.Linear(prev, self.input_dim), nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)

    def _flat(self, x) -> Tensor:
        if not isinstance(x, Tensor):
            x = Tensor._wrap_exact(np.asarray(x, self._dtype()))  # arrays in the model's dtype
        if x.ndim < 1 or x.numel() % self.input_dim or (x.ndim >= 2 and int(np.prod(x.shape[1:])) != self.input_dim):
            raise ValueError(f"VAE: expected input (N, {self.input_dim}) (or (N, ...) with {self.input_dim} values "
                             f"per sample), got {tuple(x.shape)}")
        return x.reshape(-1, self.input_dim) if x.ndim != 2 else x

    def encode(self, x):
        h = self.encoder(self._flat(x))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        return self.decoder(z)

    def extra_repr(self):
        return f"input_dim={self.input_dim}, hidden={self.hidden}, latent={self.latent}"


class _Upsample2x(nn.Module):
    """Nearest-neighbour 2x upsampling of (N, C, H, W) built from reshape/expand (differentiable)."""

    def forward(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h, 1, w, 1).expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


class ConvVAE(_VAEBase):
    """Convolutional VAE for (N, C, S, S) images in [0, 1] (S divisible by 4: 8 or 28).

    Encoder: Conv2d(C, 32, 3, stride 2) - ReLU - Conv2d(32, 64, 3, stride 2) - ReLU - Linear(hidden)
    -> (mu, logvar). Decoder: Linear - ReLU - Linear - reshape (64, S/4, S/4) - upsample 2x -
    Conv2d(64, 32, 3) - ReLU - upsample 2x - Conv2d(32, C, 3) - Sigmoid. Needs nn.Conv2d.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, latent: int = 20, hidden: int = 256):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels", "ConvVAE")
        self.image_size = positive_int(image_size, "image_size", "ConvVAE")
        if self.image_size % 4:
            raise ValueError(f"ConvVAE: image_size must be divisible by 4 (two stride-2 stages), got {image_size}")
        self.latent = positive_int(latent, "latent", "ConvVAE")
        hidden = positive_int(hidden, "hidden", "ConvVAE")
        s = self.image_size // 4
        self._side = s
        self.encoder = nn.Sequential(
            nn.Conv2d(self.in_channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * s * s, hidden), nn.ReLU(),
        )
        self.fc_mu = nn.Linear(hidden, self.latent)
        self.fc_logvar = nn.Linear(hidden, self.latent)
        self.decoder_fc = nn.Sequential(nn.Linear(self.latent, hidden), nn.ReLU(), nn.Linear(hidden, 64 * s * s),
                                        nn.ReLU())
        self.decoder_conv = nn.Sequential(
            _Upsample2x(), nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(),
            _Upsample2x(), nn.Conv2d(32, self.in_channels, 3, padding=1), nn.Sigmoid(),
        )

    def _image(self, x) -> Tensor:
        if not isinstance(x, Tensor):
            x = Tensor._wrap_exact(np.asarray(x, self._dtype()))  # arrays in the model's dtype
        c, s = self.in_channels, self.image_size
        if x.ndim == 4 and tuple(x.shape[1:]) == (c, s, s):
            return x
        if x.ndim >= 2 and int(np.prod(x.shape[1:])) == c * s * s:
            return x.reshape(-1, c, s, s)
        raise ValueError(f"ConvVAE: expected input (N, {c}, {s}, {s}), got {tuple(x.shape)}")

    def encode(self, x):
        h = self.encoder(self._image(x))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        h = self.decoder_fc(z).reshape(-1, 64, self._side, self._side)
        return self.decoder_conv(h)


class _NegativeELBO(Function):
    """(reconstruction error + beta * KL) / N in one autograd node.

    One node instead of a dozen (BCE, then mu^2, exp, sums, scalings) keeps the per-step overhead of
    a VAE small; the arithmetic is torch's: BCE on probabilities with log terms clamped at -100,
    KL = 0.5 * sum(mu^2 + exp(logvar) - logvar - 1). Computed in recon's dtype (float32 or float64).
    """

    handles_float64 = True  # numpy in its inputs' dtype: its own float64 Function

    @staticmethod
    def forward(ctx, recon, x, mu, logvar, beta=1.0, reconstruction="bce"):
        n = recon.shape[0] if recon.ndim else 1
        dt = recon.dtype
        f = dt.type
        if reconstruction == "bce":
            if recon.size and (recon.min() < 0 or recon.max() > 1):
                raise ValueError("vae_loss: recon must hold probabilities in [0, 1] for reconstruction='bce'")
            with np.errstate(divide="ignore"):
                log_p = np.maximum(np.log(recon), f(-100))
                log_1mp = np.maximum(np.log1p(-recon), f(-100))
            # -(x log p + (1 - x) log(1 - p)) = -(x (log p - log(1 - p)) + log(1 - p))
            diff = log_p - log_1mp
            rec = -(np.sum(x * diff, dtype=dt) + np.sum(log_1mp, dtype=dt))
            ctx.diff = diff
        else:
            d = recon - x
            rec = np.sum(d * d, dtype=dt)
        var = np.exp(logvar)
        kl = f(0.5) * np.sum(mu * mu + var - logvar - f(1), dtype=dt)
        ctx.save_for_backward(recon, x, mu, logvar, var)
        ctx.n, ctx.beta, ctx.reconstruction = n, f(beta), reconstruction
        return np.asarray((rec + ctx.beta * kl) / f(n), dt)

    @staticmethod
    def backward(ctx, g):
        recon, x, mu, logvar, var = ctx.saved_tensors
        f = recon.dtype.type
        scale = f(g) / f(ctx.n)
        g_recon = g_x = g_mu = g_logvar = None
        if ctx.reconstruction == "bce":
            if ctx.needs_input_grad[0]:
                g_recon = (recon - x) / np.maximum(recon * (f(1) - recon), f(1e-12)) * scale
            if ctx.needs_input_grad[1]:
                g_x = -ctx.diff * scale
        else:
            d = (recon - x) * (f(2) * scale)
            g_recon = d if ctx.needs_input_grad[0] else None
            g_x = -d if ctx.needs_input_grad[1] else None
        kl_scale = ctx.beta * scale
        if ctx.needs_input_grad[2]:
            g_mu = mu * kl_scale
        if ctx.needs_input_grad[3]:
            g_logvar = (var - f(1)) * (f(0.5) * kl_scale)
        return g_recon, g_x, g_mu, g_logvar


def vae_loss(recon: Tensor, x, mu: Tensor, logvar: Tensor, beta: float = 1.0, reconstruction: str = "bce",
             fused: Optional[bool] = None) -> Tensor:
    """Negative ELBO averaged per sample: (reconstruction error + beta * KL(q(z|x) || N(0, I))) / N.

    Args:
        recon: decoder output in [0, 1], (N, ...).
        x: targets with recon's number of values per sample (in [0, 1] for "bce").
        mu, logvar: encoder outputs (N, latent).
        beta: weight of the KL term (beta-VAE); 1 gives the ELBO.
        reconstruction: "bce" (Bernoulli likelihood, summed over features, log terms clamped at
            -100 as torch's binary_cross_entropy does) or "mse" (summed squared error).

        fused: True: one autograd node on numpy arrays (CPU only, the fewest Python steps); False:
            the registry's ops (binary_cross_entropy / mse_loss, exp, sums), which run on any device
            that has them; None (default): fused on the CPU, the ops elsewhere.

    Returns a scalar Tensor, differentiable in recon, x, mu and logvar.
    """
    if reconstruction not in ("bce", "mse"):
        raise ValueError(f"vae_loss: reconstruction must be 'bce' or 'mse', got {reconstruction!r}")
    if not np.isfinite(beta) or beta < 0:
        raise ValueError(f"vae_loss: beta must be a finite number >= 0, got {beta}")
    if not isinstance(x, Tensor):
        x = Tensor._wrap_exact(np.asarray(x, recon._data.dtype))
    if x.numel() != recon.numel():
        raise ValueError(f"vae_loss: x has shape {tuple(x.shape)} but recon has shape {tuple(recon.shape)}")
    if tuple(x.shape) != tuple(recon.shape):
        x = x.reshape(recon.shape)
    if tuple(mu.shape) != tuple(logvar.shape):
        raise ValueError(f"vae_loss: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must have the same shape")
    if x.dtype != recon.dtype or recon.dtype not in (np.float32, np.float64):
        raise TypeError(f"vae_loss: recon and x must both be float32 or both float64, got {recon.dtype} and "
                        f"{x.dtype}")
    if fused is None:
        fused = recon.device == "cpu"
    if fused:
        return _NegativeELBO.apply(recon, x, mu, logvar, beta=float(beta), reconstruction=reconstruction)
    if x.device != recon.device:
        x = x.to(recon.device)
    n = recon.shape[0] if recon.ndim else 1
    if reconstruction == "bce":
        rec = F.binary_cross_entropy(recon, x, reduction="sum")
    else:
        rec = F.mse_loss(recon, x, reduction="sum")
    kl = ((mu * mu + logvar.exp() - logvar - 1.0).sum()) * 0.5
    return (rec + kl * float(beta)) / float(n)


class VAELoss(nn.Module):
    """vae_loss as a module with the (output, target) signature training loops use:
    ``loss_fn(model(x), x)`` where ``model(x)`` is (recon, mu, logvar)."""

    def __init__(self, beta: float = 1.0, reconstruction: str = "bce"):
        super().__init__()
        if reconstruction not in ("bce", "mse"):
            raise ValueError(f"VAELoss: reconstruction must be 'bce' or 'mse', got {reconstruction!r}")
        self.beta, self.reconstruction = float(beta), reconstruction

    def forward(self, output, target):
        recon, mu, logvar = output
        return vae_loss(recon, target, mu, logvar, beta=self.beta, reconstruction=self.reconstruction)

    def extra_repr(self):
        return f"beta={self.beta}, reconstruction={self.reconstruction!r}"
