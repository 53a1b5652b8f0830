"""Recurrent models: a sequence classifier (LSTM or GRU) and a character-level LSTM language model."""
from __future__ import annotations

import numpy as np

from .. import devices, nn
from .. import random as _random
from ..autograd import no_grad
from ..tensor import Tensor


class SequenceClassifier(nn.Module):
    """An LSTM or GRU over (N, T, F) sequences (batch_first); the last step's output -> Linear.

    Args:
        input_size: features per step F.
        hidden_size: recurrent state size.
        num_classes: outputs.
        num_layers: stacked recurrent layers.
        cell: "lstm" or "gru".
    """

    def __init__(self, input_size: int, hidden_size: int = 64, num_classes: int = 10, num_layers: int = 1,
                 cell: str = "lstm"):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"SequenceClassifier: cell must be 'lstm' or 'gru', got {cell!r}")
        layer = "LSTM" if cell == "lstm" else "GRU"
        self.cell = cell
        self.rnn = getattr(nn, layer)(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        if x.ndim != 3:
            raise ValueError(f"SequenceClassifier: expected input (N, T, F), got {tuple(x.shape)}")
        out, _ = self.rnn(x)
        return self.fc(out[:, -1, :])


class CharLSTM(nn.Module):
    """Character language model: Embedding -> LSTM -> Linear over the vocabulary.

    Shape: token ids (N, T) int64 -> logits (N, T, vocab_size).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_size: int = 128, num_layers: int = 1):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens, state=None):
        out, state = self.lstm(self.embed(tokens), state)
        self._last_state = state
        return self.head(out)

    def generate(self, prompt, length: int, temperature: float = 1.0):
        """Sample ``length`` token ids after ``prompt`` (a list of ids), from forgegrad's generator."""
        if temperature <= 0:
            raise ValueError(f"CharLSTM.generate: temperature must be > 0, got {temperature}")
        ids = list(prompt)
        if not ids:
            raise ValueError("CharLSTM.generate: prompt must hold at least one token id")
        gen = _random.generator()
        dev = self.head.weight.device  # tokens go where the model is; the logits come back to sample on the host
        with no_grad():
            logits = self.forward(Tensor._stored(np.asarray([ids], np.int64)).to(dev))
            state = self._last_state
            for _ in range(length):
                z = devices.to_host(logits._data)[0, -1].astype(np.float64) / temperature
                p = np.exp(z - z.max())
                nxt = int(gen.choice(self.vocab_size, p=p / p.sum()))
                ids.append(nxt)
                logits = self.forward(Tensor._stored(np.asarray([[nxt]], np.int64)).to(dev), state)
                state = self._last_state
        return ids
