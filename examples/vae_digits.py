"""Train a variational autoencoder on the bundled 8x8 digits and save a PNG of samples and
reconstructions.

    python examples/vae_digits.py --epochs 40 --out vae_digits.png

Needs matplotlib for the PNG (pip install "forgegrad[plot]") and scikit-learn for the digits
(pip install "forgegrad[data]").
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import forgegrad as fg
from forgegrad import optim
from forgegrad.datasets import load_digits
from forgegrad.models import VAE, vae_loss


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (1 = the ELBO)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="vae_digits.png", help="PNG of samples and reconstructions")
    return p.parse_args(argv)


def digits_01():
    """(N, 64) float32 pixels in [0, 1]."""
    data = load_digits()
    x = data[0] if isinstance(data, tuple) else data["data"]
    x = np.asarray(getattr(x, "data", x), np.float32).reshape(-1, 64)
    return x / 16.0 if x.max() > 1 else x


def save_grid(path, originals, reconstructions, samples):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(originals)
    rows = [("test digits", originals), ("reconstructions", reconstructions)]
    rows += [("samples" if i == 0 else "", samples[i * cols:(i + 1) * cols]) for i in range(len(samples) // cols)]
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.9, len(rows) * 1.0))
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(images[c].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print('vae_digits.py writes a PNG and needs matplotlib: pip install "forgegrad[plot]"', file=sys.stderr)
        return 1

    fg.manual_seed(args.seed)
    x = digits_01()
    perm = np.random.default_rng(args.seed).permutation(len(x))
    n_test = len(x) // 10
    x_test, x_train = x[perm[:n_test]], x[perm[n_test:]]

    model = VAE(input_dim=64, hidden=(args.hidden,), latent=args.latent)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    gen = np.random.default_rng(args.seed + 1)
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = gen.permutation(len(x_train))
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            xb = fg.tensor(x_train[order[i:i + args.batch_size]])
            recon, mu, logvar = model(xb)
            loss = vae_loss(recon, xb, mu, logvar, beta=args.beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        model.eval()
        with fg.no_grad():
            xt = fg.tensor(x_test)
            mu, logvar = model.encode(xt)
            test_loss = vae_loss(model.decode(mu), xt, mu, logvar, beta=args.beta).item()
        if epoch == 1 or epoch % 5 == 0 or epoch == args.epochs:
            print(f"epoch {epoch:3d}  train -ELBO {total / len(x_train):7.3f}  test -ELBO (z = mu) {test_loss:7.3f}"
                  f"  ({time.perf_counter() - t0:.2f}s)")

    recon = model.reconstruct(x_test[:10]).numpy()
    mse = float(((model.reconstruct(x_test).numpy() - x_test) ** 2).mean())
    baseline = float(((x_train.mean(axis=0) - x_test) ** 2).mean())
    print(f"test reconstruction MSE {mse:.4f} (mean-image baseline {baseline:.4f})")
    samples = model.sample(30).numpy()
    save_grid(args.out, x_test[:10], recon, samples)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
