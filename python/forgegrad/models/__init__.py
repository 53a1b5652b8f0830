"""forgegrad.models: a small model zoo, each model buildable by name.

    >>> import forgegrad.models as zoo
    >>> zoo.available()
    ['char_lstm', 'conv_vae', 'gpt', 'gru', 'lenet', 'lenet8', 'lstm', 'mlp', 'transformer_classifier', 'vae']
    >>> model = zoo.create("mlp", in_features=64, out_features=10)
"""
from __future__ import annotations

import functools
import math

from ._registry import ModelSpec, available, config_of, create, from_config, register, spec
from .cnn import LeNet
from .mlp import MLP
from .rnn import CharLSTM, SequenceClassifier
from .transformer import GPT, TransformerClassifier, sample
from .vae import VAE, ConvVAE, VAELoss, vae_loss
from .hf import from_pretrained, generate, save_pretrained

__all__ = ["available", "create", "spec", "config_of", "from_config", "register", "ModelSpec",
           "MLP", "LeNet", "SequenceClassifier", "CharLSTM", "GPT", "TransformerClassifier", "sample",
           "VAE", "ConvVAE", "vae_loss", "VAELoss", "from_pretrained", "save_pretrained", "generate"]


def _numel(shape):
    return int(math.prod(shape)) if shape else 1


def _as_image(shape):
    """(C, H, W) of one sample: (C, H, W) stays, (H, W) gains a channel, (S*S,) becomes (1, S, S)."""
    if len(shape) == 3:
        return tuple(shape)
    if len(shape) == 2:
        return (1,) + tuple(shape)
    side = math.isqrt(_numel(shape))
    if side * side != _numel(shape):
        raise ValueError(f"cannot view samples of shape {tuple(shape)} as square images")
    return (1, side, side)


def _as_sequence(shape):
    """(T, F) of one sample: (T, F) stays, (C, H, W) reads H rows of C*W, (S*S,) reads S rows of S."""
    if len(shape) == 2:
        return tuple(shape)
    c, h, w = _as_image(shape)
    return (h, c * w)


register(ModelSpec(
    "mlp", MLP, "multi-layer perceptron (Linear + activation [+ dropout])", "flat", "classify",
    lambda shape, k: {"in_features": _numel(shape), **({"out_features": k} if k else {})}))
register(ModelSpec(
    "lenet", LeNet, "LeNet-style CNN conv32-pool-conv64-pool-fc128 (1x28x28 by default)", "image", "classify",
    lambda shape, k: {"in_channels": _as_image(shape)[0], "input_size": _as_image(shape)[1],
                      **({"num_classes": k} if k else {})}))
register(ModelSpec(
    "lenet8", functools.partial(LeNet, input_size=8), "LeNet-style CNN for 8x8 images (the bundled digits)",
    "image", "classify",
    lambda shape, k: {"in_channels": _as_image(shape)[0], **({"num_classes": k} if k else {})}))
register(ModelSpec(
    "lstm", functools.partial(SequenceClassifier, cell="lstm"), "LSTM sequence classifier (last step -> Linear)",
    "sequence", "classify",
    lambda shape, k: {"input_size": _as_sequence(shape)[1], **({"num_classes": k} if k else {})}))
register(ModelSpec(
    "gru", functools.partial(SequenceClassifier, cell="gru"), "GRU sequence classifier (last step -> Linear)",
    "sequence", "classify",
    lambda shape, k: {"input_size": _as_sequence(shape)[1], **({"num_classes": k} if k else {})}))
register(ModelSpec(
    "char_lstm", CharLSTM, "character-level LSTM language model (Embedding -> LSTM -> Linear)", "tokens", "lm",
    lambda shape, k: ({"vocab_size": k} if k else {})))
register(ModelSpec(
    "gpt", GPT, "decoder-only Transformer language model (GPT-2 style, pre-LN, tied LM head; byte tokens)",
    "tokens", "causal_lm", lambda shape, k: ({"vocab_size": k} if k else {})))
register(ModelSpec(
    "transformer_classifier", TransformerClassifier,
    "Transformer encoder text classifier (embeddings -> pre-LN encoder -> mean pooling -> Linear)", "tokens",
    "classify", lambda shape, k: ({"num_classes": k} if k else {})))
register(ModelSpec(
    "vae", VAE, "variational autoencoder with MLP encoder/decoder", "flat", "vae",
    lambda shape, k: {"input_dim": _numel(shape)}))
register(ModelSpec(
    "conv_vae", ConvVAE, "convolutional variational autoencoder", "image", "vae",
    lambda shape, k: {"in_channels": _as_image(shape)[0], "image_size": _as_image(shape)[1]}))

as_image_shape = _as_image
as_sequence_shape = _as_sequence
