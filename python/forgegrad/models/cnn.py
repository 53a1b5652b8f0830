"""LeNet-style CNN: conv32-pool-conv64-pool-fc128-fc10 (needs nn.Conv2d and nn.MaxPool2d)."""
from __future__ import annotations

from .. import nn


class LeNet(nn.Module):
    """Two 3x3 conv blocks (32 then 64 channels, ReLU, 2x2 max-pool) and two linear layers.

    Args:
        in_channels: image channels C.
        num_classes: outputs.
        input_size: image height = width (28 for MNIST-like images, 8 for the bundled digits).
        hidden: size of the first linear layer (128).

    Shape: input (N, C, input_size, input_size) -> logits (N, num_classes).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28, hidden: int = 128):
        super().__init__()
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 4:
            raise ValueError(f"LeNet: input_size must be an int >= 4 (two 2x2 poolings), got {input_size!r}")
        self.input_size = input_size
        # padding=1 keeps the size through each 3x3 conv; each pool halves it (floor)
        side = (input_size // 2) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        if x.ndim != 4 or x.shape[2] != self.input_size or x.shape[3] != self.input_size:
            raise ValueError(f"LeNet: expected input (N, C, {self.input_size}, {self.input_size}), "
                             f"got {tuple(x.shape)}")
        return self.classifier(self.features(x))
