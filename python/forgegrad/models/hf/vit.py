"""Vision Transformers: ViT (transformers' ``ViTModel``, ``ViTForImageClassification``) and DeiT (``DeiTModel``,
``DeiTForImageClassification``, ``DeiTForImageClassificationWithTeacher``), with transformers' parameter names.

An image (B, C, H, W) is cut into patches by a Conv2d whose stride is its kernel (the patch), each patch projected to
the hidden size; a learned CLS token (DeiT: and a distillation token) goes first, the learned position table is
added, and pre-norm layers (LayerNorm -> attention -> + x, LayerNorm -> MLP -> + x) on the fused attention kernel
follow, then a final LayerNorm. ``pooler_output`` is tanh(dense(first token)); the classifiers read the first token's
final state (DeiT's teacher model averages it with a linear head on the distillation token's).

``output_hidden_states=True`` adds transformers' ``hidden_states``: the embeddings' output then every layer's
(before the final LayerNorm), ``num_hidden_layers + 1`` tensors; the classifiers then return
``ImageClassifierOutput(logits, hidden_states)`` (DeiT's teacher model: ``DeiTTeacherOutput(logits, cls_logits,
distillation_logits, hidden_states)``), transformers' ``return_dict=False`` tuples.

``interpolate_pos_encoding=True`` takes images of another size: the patch rows of the position table are resized to
the new patch grid by bicubic interpolation (a = -0.75, align_corners=False, borders clamped: torch's
``interpolate(mode="bicubic")``, which transformers calls), written as two fixed matrices the table is multiplied by,
so gradients reach the table and an exported graph holds the resize as a MatMul.

Pixel values come from ``image_processing.load_image_processor(DIR)`` (the checkpoint's preprocessor_config.json).
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from ... import nn
from ...factories import cat
from ...tensor import Tensor
from ._layers import activation, attend, config_probability, merge_heads, pixel_input, split_heads

__all__ = ["ViTModel", "ViTForImageClassification", "DeiTModel", "DeiTForImageClassification",
           "DeiTForImageClassificationWithTeacher", "ViTOutput", "ImageClassifierOutput", "DeiTTeacherOutput",
           "bicubic_matrix"]


class ViTOutput(NamedTuple):
    last_hidden_state: Tensor
    pooler_output: Optional[Tensor]
    hidden_states: Optional[Tuple[Tensor, ...]] = None  # with output_hidden_states=True


class ImageClassifierOutput(NamedTuple):
    """A classifier's answer with ``output_hidden_states=True`` (transformers' tuple: logits, hidden_states)."""
    logits: Tensor
    hidden_states: Tuple[Tensor, ...]


class DeiTTeacherOutput(NamedTuple):
    """DeiTForImageClassificationWithTeacher's with ``output_hidden_states=True`` (transformers' tuple)."""
    logits: Tensor
    cls_logits: Tensor
    distillation_logits: Tensor
    hidden_states: Tuple[Tensor, ...]


def _pair(value, key: str, who: str = "ViTModel: config") -> Tuple[int, int]:
    """An int or [h, w] config entry (image_size, patch_size) as (h, w), checked positive."""
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in pair):
        raise ValueError(f"{who} {key} must be a positive int or [height, width], got {value!r}")
    return pair


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix M with M @ x = torch's ``interpolate(x, out_size, mode="bicubic",
    align_corners=False)`` along one axis: source (i + 0.5) * in / out - 0.5, cubic convolution with a = -0.75 on
    the four neighbours, indices clamped to the edges."""
    a = -0.75
    scale = np.float32(in_size) / np.float32(out_size)  # torch computes the scale in float
    src = (np.arange(out_size) + 0.5) * float(scale) - 0.5
    base = np.floor(src)
    t = src - base

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)  # (out, 4)
    m = np.zeros((out_size, in_size))
    for k in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(m, (np.arange(out_size), idx), weights[:, k])
    return m


class ViTPatchEmbeddings(nn.Module):
    def __init__(self, cfg: dict, who: str = "ViTModel"):
        super().__init__()
        self.patch_size = _pair(cfg.get("patch_size", 16), "patch_size", f"{who}: config")
        self.num_channels = int(cfg.get("num_channels", 3))
        self.projection = nn.Conv2d(self.num_channels, cfg["hidden_size"], self.patch_size, stride=self.patch_size)

    def forward(self, pixels: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, patches, hidden), patches in row-major order of the grid."""
        x = self.projection(pixels)
        B, E = x.shape[0], x.shape[1]
        return x.reshape(B, E, -1).transpose(1, 2)


class ViTEmbeddings(nn.Module):
    """CLS token (DeiT: and distillation token), patch embeddings and the position table, summed; dropout."""

    owner = "ViTModel"  # the model's name, for errors
    resize_matrix = staticmethod(bicubic_matrix)  # the position table's resize along one axis
    resize_antialias = False  # the same resize as F.interpolate's antialias flag (resize_by_op)
    resize_mode = "bicubic"  # the same resize as F.interpolate's mode (resize_by_op)
    # set while export_vit traces a graph with dynamic image sizes: the table is resized by F.interpolate (one ONNX
    # Resize to the grid computed from the input's shape) on every image, transformers' same-size shortcut skipped
    # (a resize to the table's own size is the identity)
    resize_by_op = False

    def __init__(self, cfg: dict, tokens: int = 1):
        super().__init__()
        E = cfg["hidden_size"]
        self.tokens = tokens  # the leading learned tokens (CLS; DeiT's distillation token)
        self.image_size = _pair(cfg.get("image_size", 224), "image_size", f"{self.owner}: config")
        self.patch_embeddings = ViTPatchEmbeddings(cfg, self.owner)
        ph, pw = self.patch_embeddings.patch_size
        self.grid = (self.image_size[0] // ph, self.image_size[1] // pw)
        self.cls_token = nn.Parameter(Tensor._wrap(np.zeros((1, 1, E), np.float32)))
        if tokens == 2:
            self.distillation_token = nn.Parameter(Tensor._wrap(np.zeros((1, 1, E), np.float32)))
        self.position_embeddings = nn.Parameter(Tensor._wrap(
            np.zeros((1, self.grid[0] * self.grid[1] + tokens, E), np.float32)))
        self.dropout = nn.Dropout(config_probability(cfg, "hidden_dropout_prob", "ViTModel"))

    def positions(self, height: int, width: int, interpolate: bool) -> Tensor:
        """The position rows for an image of height x width pixels: the table itself at the trained size (or,
        with ``interpolate``, whenever transformers would not resize it), else its patch rows resized."""
        ph, pw = self.patch_embeddings.patch_size
        new = (height // ph, width // pw)
        table = self.position_embeddings
        n = table.shape[1] - self.tokens
        if not interpolate:
            if (height, width) != self.image_size:
                raise ValueError(f"{self.owner}: the image is {height}x{width} but the model takes "
                                 f"{self.image_size[0]}x{self.image_size[1]}; pass interpolate_pos_encoding=True to "
                                 "resize its position table")
            return table
        if self.resize_by_op:
            return self._resized_by_op(table, new)
        if new[0] * new[1] == n and height == width:
            return table  # transformers' shortcut: the table as it is
        side = int(n ** 0.5)
        if side * side != n:
            raise ValueError(f"{self.owner}: interpolate_pos_encoding needs a square grid of positions, the table "
                             f"has {n}")
        rows = Tensor._wrap(self.resize_matrix(side, new[0]).astype(np.float32))  # (new_h, side)
        cols = Tensor._wrap(self.resize_matrix(side, new[1]).astype(np.float32).T.copy())  # (side, new_w)
        E = table.shape[-1]
        grid = table[0, self.tokens:].reshape(side, side * E)  # rows of the grid, each (side, E) flattened
        grid = (rows @ grid).reshape(new[0], side, E).permute(0, 2, 1)  # (new_h, E, side)
        grid = (grid @ cols).permute(0, 2, 1).reshape(1, new[0] * new[1], E)
        return cat([table[:, :self.tokens], grid], dim=1)

    def _resized_by_op(self, table: Tensor, new: Tuple[int, int]) -> Tensor:
        from ...ops.resample import interpolate
        n, E = table.shape[1] - self.tokens, table.shape[-1]
        side = int(n ** 0.5)
        if side * side != n:
            raise ValueError(f"{self.owner}: interpolate_pos_encoding needs a square grid of positions, the table "
                             f"has {n}")
        grid = table[:, self.tokens:].reshape(1, side, side, E).permute(0, 3, 1, 2)
        grid = interpolate(grid, size=new, mode=self.resize_mode, align_corners=False,
                           antialias=self.resize_antialias)
        return cat([table[:, :self.tokens], grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], E)], dim=1)

    def forward(self, pixels: Tensor, interpolate: bool = False) -> Tensor:
        B, _, H, W = pixels.shape
        x = self.patch_embeddings(pixels)
        E = x.shape[-1]
        lead = [self.cls_token.expand(B, 1, E)]
        if self.tokens == 2:
            lead.append(self.distillation_token.expand(B, 1, E))
        x = cat(lead + [x], dim=1)
        return self.dropout(x + self.positions(H, W, interpolate))


class ViTSelfAttention(nn.Module):
    def __init__(self, cfg: dict, who: str = "ViTModel"):
        super().__init__()
        E, bias = cfg["hidden_size"], bool(cfg.get("qkv_bias", True))
        self.heads = cfg["num_attention_heads"]
        if E % self.heads:
            raise ValueError(f"{who}: hidden_size {E} must be a multiple of num_attention_heads {self.heads}")
        self.query, self.key, self.value = (nn.Linear(E, E, bias=bias) for _ in range(3))
        self.dropout_p = config_probability(cfg, "attention_probs_dropout_prob", who)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (split_heads(layer(x), self.heads) for layer in (self.query, self.key, self.value))
        return merge_heads(attend(q, k, v, None, dropout_p=self.dropout_p if self.training else 0.0))


class _Dense(nn.Module):
    """A Linear under the name ``dense`` (transformers' ``ViTSelfOutput``, ``ViTIntermediate``, ``ViTOutput``)."""

    def __init__(self, fan_in: int, fan_out: int):
        super().__init__()
        self.dense = nn.Linear(fan_in, fan_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(x)


class ViTAttention(nn.Module):
    def __init__(self, cfg: dict, who: str = "ViTModel"):
        super().__init__()
        self.attention = ViTSelfAttention(cfg, who)
        self.output = _Dense(cfg["hidden_size"], cfg["hidden_size"])

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.attention(x))


class ViTLayer(nn.Module):
    """Pre-norm: x + drop(attention(LN(x))), then + drop(fc2(act(fc1(LN(.)))))."""

    def __init__(self, cfg: dict):
        super().__init__()
        E, eps = cfg["hidden_size"], cfg.get("layer_norm_eps", 1e-12)
        self.attention = ViTAttention(cfg)
        self.intermediate = _Dense(E, cfg["intermediate_size"])
        self.output = _Dense(cfg["intermediate_size"], E)
        self.layernorm_before = nn.LayerNorm(E, eps=eps)
        self.layernorm_after = nn.LayerNorm(E, eps=eps)
        self.act = activation(cfg.get("hidden_act", "gelu"), "ViTModel")
        self.dropout = nn.Dropout(config_probability(cfg, "hidden_dropout_prob", "ViTModel"))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(self.attention(self.layernorm_before(x)))
        return x + self.dropout(self.output(self.act(self.intermediate(self.layernorm_after(x)))))


class ViTEncoder(nn.Module):
    _no_split_modules = ["ViTLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict):
        super().__init__()
        self.layer = nn.ModuleList([ViTLayer(cfg) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, x: Tensor, output_hidden_states: bool = False):
        """(the last layer's output, its input and every layer's output with ``output_hidden_states``, else
        None)."""
        states = [x] if output_hidden_states else None
        for layer in self.layer:
            x = layer(x)
            if states is not None:
                states.append(x)
        return x, tuple(states) if states is not None else None


class ViTPooler(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg.get("pooler_output_size") or cfg["hidden_size"])
        self.act = activation(cfg.get("pooler_act", "tanh"), "ViTModel (pooler_act)")

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x[:, 0]))


def _pixels(pixel_values, who: str, channels: int, patch: Tuple[int, int]):
    """pixel_values as a float32 (B, C, H, W) Tensor (a Tensor passes through: an export traces it), checked: at
    least one image, each at least one patch."""
    x = pixel_input(pixel_values, who)
    if len(x.shape) != 4 or x.shape[1] != channels:
        raise ValueError(f"{who}: pixel_values must have shape (batch, {channels}, height, width), got "
                         f"{tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[2] < patch[0] or x.shape[3] < patch[1]:
        raise ValueError(f"{who}: pixel_values must hold at least one image of at least one {patch[0]}x{patch[1]} "
                         f"patch, got shape {tuple(x.shape)}")
    return x


class ViTModel(nn.Module):
    """ViT's encoder. ``forward(pixel_values, interpolate_pos_encoding=False, output_hidden_states=False)`` with
    pixel_values (B, C, H, W) (a numpy array or a Tensor) returns ``ViTOutput(last_hidden_state (B, 1 + patches,
    hidden), pooler_output (B, pooler_output_size) or None, hidden_states or None)``. Loaded from a task model's
    checkpoint, it reads the weights under ``vit.``; from one saved without a pooler, ``pooler_output`` is None."""

    architecture = "ViTModel"
    model_type = "vit"
    prefix = "vit."
    tokens = 1
    embeddings_class = ViTEmbeddings

    def __init__(self, config: dict, add_pooling_layer: bool = True):
        super().__init__()
        self.config = dict(config)
        self.embeddings = self.embeddings_class(self.config, self.tokens)
        self.embeddings.owner = type(self).__name__
        self.encoder = ViTEncoder(self.config)
        self.layernorm = nn.LayerNorm(self.config["hidden_size"], eps=self.config.get("layer_norm_eps", 1e-12))
        self.pooler = ViTPooler(self.config) if add_pooling_layer else None

    def forward(self, pixel_values, interpolate_pos_encoding: bool = False,
                output_hidden_states: bool = False) -> ViTOutput:
        patches = self.embeddings.patch_embeddings
        x = self.embeddings(_pixels(pixel_values, type(self).__name__, patches.num_channels, patches.patch_size),
                            bool(interpolate_pos_encoding))
        x, states = self.encoder(x, bool(output_hidden_states))
        x = self.layernorm(x)
        return ViTOutput(x, self.pooler(x) if self.pooler is not None else None, states)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The checkpoint's tensors under this model's names: a task model's ``vit.`` weights without its heads; no
        pooler where the checkpoint has none (a model saved with add_pooling_layer=False)."""
        if not any(k.startswith("embeddings.") for k in tensors):
            n = len(self.prefix)
            tensors = {k[n:]: v for k, v in tensors.items() if k.startswith(self.prefix)}
        if self.pooler is not None and not any(k.startswith("pooler.") for k in tensors):
            self.pooler = None
        return {k: v for k, v in tensors.items() if k != "embeddings.mask_token"}  # masked-image-modeling only

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


def _labels(cfg: dict) -> int:
    n = cfg.get("num_labels")
    if isinstance(n, int) and not isinstance(n, bool):
        return int(n)
    # transformers' count: id2label's size, 0 included (num_labels=0 saves "id2label": {} and an Identity head)
    labels = cfg.get("id2label")
    return len(labels) if labels is not None else 2


class ViTForImageClassification(nn.Module):
    """ViT (no pooler) + a linear classifier on the CLS token's final state; ``forward(pixel_values,
    interpolate_pos_encoding=False, output_hidden_states=False)`` returns the logits (B, num_labels) (with
    ``output_hidden_states``: ``ImageClassifierOutput(logits, hidden_states)``)."""

    architecture = "ViTForImageClassification"
    model_type = "vit"
    encoder_class = ViTModel
    base = "vit"  # the encoder's attribute (its checkpoint prefix)

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        setattr(self, self.base, self.encoder_class(self.config, add_pooling_layer=False))
        labels = _labels(self.config)
        self.classifier = nn.Linear(self.config["hidden_size"], labels) if labels > 0 else nn.Identity()

    @property
    def encoder(self) -> ViTModel:
        return getattr(self, self.base)

    def forward(self, pixel_values, interpolate_pos_encoding: bool = False, output_hidden_states: bool = False):
        out = self.encoder(pixel_values, interpolate_pos_encoding, output_hidden_states)
        logits = self.classifier(out.last_hidden_state[:, 0])
        return ImageClassifierOutput(logits, out.hidden_states) if output_hidden_states else logits

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {k: v for k, v in tensors.items() if not k.endswith("embeddings.mask_token")}

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


class DeiTModel(ViTModel):
    """DeiT's encoder: ViT's with a learned distillation token after the CLS token (two leading positions)."""

    architecture = "DeiTModel"
    model_type = "deit"
    prefix = "deit."
    tokens = 2


class DeiTForImageClassification(ViTForImageClassification):
    """DeiT + a linear classifier on the CLS token (transformers' ``DeiTForImageClassification``)."""

    architecture = "DeiTForImageClassification"
    model_type = "deit"
    encoder_class = DeiTModel
    base = "deit"


class DeiTForImageClassificationWithTeacher(nn.Module):
    """DeiT with its two heads: ``cls_classifier`` on the CLS token and ``distillation_classifier`` on the
    distillation token; ``forward`` returns their average (B, num_labels), the prediction transformers returns
    as ``logits`` (inference only there: the heads are trained with a teacher). ``heads(pixel_values)`` returns
    (cls_logits, distillation_logits)."""

    architecture = "DeiTForImageClassificationWithTeacher"
    model_type = "deit"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.deit = DeiTModel(self.config, add_pooling_layer=False)
        labels, E = _labels(self.config), self.config["hidden_size"]
        self.cls_classifier = nn.Linear(E, labels) if labels > 0 else nn.Identity()
        self.distillation_classifier = nn.Linear(E, labels) if labels > 0 else nn.Identity()

    @property
    def encoder(self) -> DeiTModel:
        return self.deit

    def heads(self, pixel_values, interpolate_pos_encoding: bool = False) -> Tuple[Tensor, Tensor]:
        return self._heads(self.deit(pixel_values, interpolate_pos_encoding).last_hidden_state)

    def _heads(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return self.cls_classifier(x[:, 0]), self.distillation_classifier(x[:, 1])

    def forward(self, pixel_values, interpolate_pos_encoding: bool = False, output_hidden_states: bool = False):
        out = self.deit(pixel_values, interpolate_pos_encoding, output_hidden_states)
        cls_logits, distillation_logits = self._heads(out.last_hidden_state)
        logits = (cls_logits + distillation_logits) / 2
        if output_hidden_states:
            return DeiTTeacherOutput(logits, cls_logits, distillation_logits, out.hidden_states)
        return logits

    from_hf = ViTForImageClassification.from_hf
    to_hf = ViTForImageClassification.to_hf

