"""Train a DCGAN on the bundled 8x8 digits and save a PNG grid of generated digits.

    python examples/dcgan_digits.py --epochs 60 --seconds 90 --out dcgan_digits.png

The generator (ConvTranspose2d + BatchNorm2d + ReLU, Tanh) and discriminator (Conv2d + LeakyReLU +
BatchNorm2d, Sigmoid) follow pytorch/examples' dcgan, scaled to 8x8 images; the training loop is
torch's with the import changed. Training stops after --epochs or once --seconds have passed.
Needs matplotlib for the PNG (pip install "forgegrad[plot]") and scikit-learn for the digits
(pip install "forgegrad[data]").
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import forgegrad as fg
from forgegrad import nn, optim
from forgegrad.datasets import load_digits


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seconds", type=float, default=90.0, help="stop after this much training time")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--nz", type=int, default=16, help="latent size")
    p.add_argument("--width", type=int, default=32, help="channels of the widest layer / 2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="dcgan_digits.png", help="PNG grid of generated digits")
    return p.parse_args(argv)


def digits_pm1():
    """(N, 1, 8, 8) float32 pixels in [-1, 1] (the generator ends in Tanh)."""
    data = load_digits()
    x = data[0] if isinstance(data, tuple) else data["data"]
    x = np.asarray(getattr(x, "data", x), np.float32).reshape(-1, 1, 8, 8)
    x = x / 16.0 if x.max() > 1 else x
    return x * 2 - 1


def generator(nz, w):
    return nn.Sequential(
        nn.ConvTranspose2d(nz, 2 * w, 2, 1, 0, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),  # 2x2
        nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),  # 4x4
        nn.ConvTranspose2d(w, 1, 4, 2, 1, bias=False), nn.Tanh())  # 8x8


def discriminator(w):
    return nn.Sequential(
        nn.Conv2d(1, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),  # 4x4
        nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, inplace=True),  # 2x2
        nn.Conv2d(2 * w, 1, 2, 1, 0, bias=False), nn.Sigmoid(), nn.Flatten(0))


def weights_init(m):
    """DCGAN's initialisation, pytorch/examples' code unchanged: N(0, 0.02) convolutions, N(1, 0.02) batch norm
    scales."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        m.weight.data.normal_(0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)


def save_grid(path, images, cols=10):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(images) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8))
    for i, ax in enumerate(np.asarray(axes).reshape(-1)):
        ax.imshow(images[i].reshape(8, 8), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print('dcgan_digits.py writes a PNG and needs matplotlib: pip install "forgegrad[plot]"', file=sys.stderr)
        return 1

    fg.manual_seed(args.seed)
    x = digits_pm1()
    G, D = generator(args.nz, args.width), discriminator(args.width)
    G.apply(weights_init)
    D.apply(weights_init)
    criterion = nn.BCELoss()
    opt_d = optim.Adam(D.parameters(), lr=args.lr, betas=(0.5, 0.999))
    opt_g = optim.Adam(G.parameters(), lr=args.lr, betas=(0.5, 0.999))
    fixed_noise = fg.randn(50, args.nz, 1, 1)
    gen = np.random.default_rng(args.seed)
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, args.epochs + 1):
        order = gen.permutation(len(x))
        sums = np.zeros(4)
        n = 0
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
            real = fg.tensor(x[order[i:i + args.batch_size]])
            b = real.shape[0]
            # (1) discriminator: maximise log D(x) + log(1 - D(G(z)))
            D.zero_grad()
            out_real = D(real)
            err_real = criterion(out_real, fg.full((b,), 1.0))
            err_real.backward()
            fake = G(fg.randn(b, args.nz, 1, 1))
            out_fake = D(fake.detach())
            err_fake = criterion(out_fake, fg.full((b,), 0.0))
            err_fake.backward()
            opt_d.step()
            # (2) generator: maximise log D(G(z))
            G.zero_grad()
            err_g = criterion(D(fake), fg.full((b,), 1.0))
            err_g.backward()
            opt_g.step()
            sums += [err_real.item() + err_fake.item(), err_g.item(), out_real.mean().item(), out_fake.mean().item()]
            n += 1
        elapsed = time.perf_counter() - start
        if epoch == 1 or epoch % 10 == 0 or epoch == args.epochs or elapsed > args.seconds:
            d, g, dx, dgz = sums / max(n, 1)
            print(f"epoch {epoch:3d}  loss D {d:.3f}  loss G {g:.3f}  D(x) {dx:.3f}  D(G(z)) {dgz:.3f}  "
                  f"({elapsed:.1f}s)")
        if elapsed > args.seconds:
            print(f"stopped after {epoch} epochs: the {args.seconds:g} s budget is spent")
            break

    G.eval()
    with fg.no_grad():
        samples = G(fixed_noise).numpy()
    save_grid(args.out, samples)
    print(f"wrote {args.out} ({len(samples)} generated digits after {epoch} epochs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
