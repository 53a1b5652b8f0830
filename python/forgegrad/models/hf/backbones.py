"""transformers' vision backbones: ``Dinov2Backbone``, ``Dinov2WithRegistersBackbone``, ``SwinBackbone`` and
``Swinv2Backbone`` (what
Depth Anything, DPT, Mask2Former and UperNet checkpoints build their encoder from), with the parameter names of their
checkpoints.

A backbone's stages are named ``stage_names``: ``"stem"`` (the embeddings' output), then ``"stage1"`` ...
(DINOv2: one per layer; Swin: one per stage). config.json's ``out_features`` (names) and / or ``out_indices``
(positions in stage_names, negative ones counted from the end) choose the stages whose feature maps ``forward``
returns, in stage order; neither: the last stage. They are checked as transformers checks them (known names, no
duplicates, in stage order, both given: the same stages), a ValueError naming what was expected otherwise.

``forward(pixel_values, output_hidden_states=False)`` returns ``BackboneOutput(feature_maps, hidden_states)``:

- Dinov2Backbone: each chosen stage's tokens (the stem's and every layer's output), through the final LayerNorm when
  ``apply_layernorm`` (default), and with ``reshape_hidden_states`` (default) without the CLS token as a map
  (B, hidden, H // patch, W // patch), else (B, 1 + patches, hidden). hidden_states: the embeddings' and every
  layer's (B, 1 + patches, hidden), before any LayerNorm. Dinov2WithRegistersBackbone: the same, the register tokens
  after the CLS token (left out of the maps with it).
- SwinBackbone: each chosen stage's map before its patch merging (the stem: the embeddings' output) through that
  stage's LayerNorm (``hidden_states_norms.<stage>``, eps 1e-5), as (B, C, h, w). Its windows are never shrunk to the
  map (transformers' ``always_partition``): a map smaller than the window is padded up to one and the odd blocks
  still shift, so any image of at least one patch runs. hidden_states: the stem's and each stage's map (B, C, h, w),
  without those LayerNorms. The Swin model's final LayerNorm (``swin.layernorm``, which checkpoints saved by
  transformers 5 hold and older ones do not) does not touch the feature maps: it is read and dropped.
- Swinv2Backbone: each chosen stage's map before its patch merging (the stem: the embeddings' output) as
  (B, C, h, w), no LayerNorm; windows as Swinv2Model's (swinv2.py: fixed from the config's image_size). hidden_states:
  the same states as (B, h * w, C) (transformers' ``hidden_states`` of the stages before downsampling).
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ... import nn
from ...tensor import Tensor
from .dinov2 import Dinov2Embeddings, Dinov2Encoder, Dinov2Model
from .dinov2_registers import Dinov2WithRegistersEmbeddings, Dinov2WithRegistersModel
from .swin import SwinEmbeddings, SwinEncoder
from .swinv2 import Swinv2Encoder, as_map, check_config, drop_buffers
from .vit import _pixels

__all__ = ["Dinov2Backbone", "Dinov2WithRegistersBackbone", "SwinBackbone", "Swinv2Backbone", "BackboneOutput",
           "out_stages"]


class BackboneOutput(NamedTuple):
    feature_maps: Tuple[Tensor, ...]  # one per chosen stage, in stage order
    hidden_states: Optional[Tuple[Tensor, ...]] = None  # with output_hidden_states=True


def out_stages(cfg: dict, stage_names: List[str], who: str) -> Tuple[List[str], List[int]]:
    """config.json's out_features / out_indices as (names, indices) into ``stage_names``, checked."""
    features, indices = cfg.get("out_features"), cfg.get("out_indices")
    n = len(stage_names)
    if features is not None:
        if not isinstance(features, (list, tuple)) or not all(isinstance(f, str) for f in features):
            raise ValueError(f"{who}: config out_features must be a list of stage names from {stage_names}, got "
                             f"{features!r}")
        unknown = [f for f in features if f not in stage_names]
        if unknown:
            raise ValueError(f"{who}: config out_features names unknown stage(s) {unknown}; this model's stages are "
                             f"{stage_names}")
    if indices is not None:
        ok = isinstance(indices, (list, tuple)) and all(
            isinstance(i, int) and not isinstance(i, bool) and -n <= i < n for i in indices)
        if not ok:
            raise ValueError(f"{who}: config out_indices must be a list of ints in [{-n}, {n - 1}] (positions in "
                             f"{stage_names}), got {indices!r}")
        by_index = [stage_names[i % n] for i in indices]
        if features is not None and list(features) != by_index:
            raise ValueError(f"{who}: config out_features {list(features)} and out_indices {list(indices)} name "
                             f"different stages ({by_index})")
        features = by_index
    if features is None:
        features = [stage_names[-1]]
    features = list(features)
    if not features:
        raise ValueError(f"{who}: config out_features / out_indices must choose at least one of {stage_names}")
    if len(set(features)) != len(features):
        raise ValueError(f"{who}: config out_features / out_indices must not repeat a stage, got {features}")
    ordered = [s for s in stage_names if s in features]
    if features != ordered:
        raise ValueError(f"{who}: config out_features / out_indices must be in stage order, expected {ordered}, got "
                         f"{features}")
    return features, [stage_names.index(f) for f in features]


class _Backbone(nn.Module):
    """The stage bookkeeping both backbones share (transformers' BackboneMixin)."""

    def _stages(self, names: List[str], channels: List[int]) -> None:
        self.stage_names, self.num_features = names, channels
        self.out_features, self.out_indices = out_stages(self.config, names, type(self).__name__)
        # written back as transformers saves them
        self.config.update(stage_names=names, out_features=self.out_features, out_indices=self.out_indices)

    @property
    def channels(self) -> List[int]:
        """The chosen stages' channel counts, in out_features' order."""
        return [self.num_features[i] for i in self.out_indices]

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


def _flag(cfg: dict, key: str, who: str) -> bool:
    value = cfg.get(key, True)
    if not isinstance(value, bool):
        raise ValueError(f"{who}: config {key} must be true or false, got {value!r}")
    return value


class Dinov2Backbone(_Backbone):
    """DINOv2's encoder as a backbone (transformers' ``Dinov2Backbone``; config model_type "dinov2", stages "stem",
    "stage1" .. "stage<num_hidden_layers>"); see the module's docstring."""

    architecture = "Dinov2Backbone"
    model_type = "dinov2"
    prefix = Dinov2Model.prefix  # a classifier's checkpoint holds the encoder under "dinov2."
    embeddings_class = Dinov2Embeddings

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        cfg = self.config
        self.apply_layernorm = _flag(cfg, "apply_layernorm", self.architecture)
        self.reshape_hidden_states = _flag(cfg, "reshape_hidden_states", self.architecture)
        layers = cfg["num_hidden_layers"]
        self._stages(["stem"] + [f"stage{i}" for i in range(1, layers + 1)], [cfg["hidden_size"]] * (layers + 1))
        self.embeddings = self.embeddings_class(cfg)
        self.encoder = Dinov2Encoder(cfg)
        self.layernorm = nn.LayerNorm(cfg["hidden_size"], eps=float(cfg.get("layer_norm_eps", 1e-6)))
        self.tokens = 1 + getattr(self.embeddings, "registers", 0)  # CLS (and register) tokens before the patches

    def forward(self, pixel_values, output_hidden_states: bool = False) -> BackboneOutput:
        patches = self.embeddings.patch_embeddings
        pixels = _pixels(pixel_values, self.architecture, patches.num_channels, patches.patch_size)
        B, _, H, W = pixels.shape
        h, w = H // patches.patch_size[0], W // patches.patch_size[1]
        _, states = self.encoder(self.embeddings(pixels), True)
        maps = []
        for i in self.out_indices:
            x = states[i]
            if self.apply_layernorm:
                x = self.layernorm(x)
            if self.reshape_hidden_states:
                x = x[:, self.tokens:].reshape(B, h, w, x.shape[-1]).permute(0, 3, 1, 2)
            maps.append(x)
        return BackboneOutput(tuple(maps), states if output_hidden_states else None)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The checkpoint's tensors under this model's names (a Dinov2Model's checkpoint has the same names)."""
        return Dinov2Model.from_hf(self, tensors)


class Dinov2WithRegistersBackbone(Dinov2Backbone):
    """DINOv2 with registers as a backbone (transformers' ``Dinov2WithRegistersBackbone``; model_type
    "dinov2_with_registers"): as Dinov2Backbone, the register tokens left out of the maps with the CLS token."""

    architecture = "Dinov2WithRegistersBackbone"
    model_type = "dinov2_with_registers"
    prefix = Dinov2WithRegistersModel.prefix
    embeddings_class = Dinov2WithRegistersEmbeddings


class SwinBackbone(_Backbone):
    """Swin's encoder as a backbone (transformers' ``SwinBackbone``; config model_type "swin", stages "stem",
    "stage1" .. "stage<len(depths)>"), a LayerNorm per chosen stage; see the module's docstring."""

    architecture = "SwinBackbone"
    model_type = "swin"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        cfg = self.config
        for key, default in (("embed_dim", 96), ("window_size", 7)):
            v = cfg.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{self.architecture}: config {key} must be a positive int, got {v!r}")
            cfg[key] = v
        self.embeddings = SwinEmbeddings(cfg)
        self.encoder = SwinEncoder(cfg)  # checks depths and num_heads
        E, stages = cfg["embed_dim"], len(self.encoder.layers)
        self._stages(["stem"] + [f"stage{i}" for i in range(1, stages + 1)],
                     [E] + [E * 2 ** i for i in range(stages)])
        self.hidden_states_norms = nn.ModuleDict({name: nn.LayerNorm(self.num_features[i])
                                                  for name, i in zip(self.out_features, self.out_indices)})

    def forward(self, pixel_values, output_hidden_states: bool = False) -> BackboneOutput:
        patches = self.embeddings.patch_embeddings
        pixels = _pixels(pixel_values, self.architecture, patches.num_channels, patches.patch_size)
        x, grid = self.embeddings(pixels)
        states = [(x, grid)]
        for stage in self.encoder.layers:
            for block in stage.blocks:
                x = block(x, grid, always_partition=True)
            states.append((x, grid))
            if stage.downsample is not None:
                x = stage.downsample(x, grid)
                grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)

        def as_map(t: Tensor, g: Tuple[int, int]) -> Tensor:
            return t.reshape(t.shape[0], g[0], g[1], t.shape[-1]).permute(0, 3, 1, 2)

        maps = tuple(as_map(getattr(self.hidden_states_norms, name)(states[i][0]), states[i][1])
                     for name, i in zip(self.out_features, self.out_indices))
        return BackboneOutput(maps, tuple(as_map(t, g) for t, g in states) if output_hidden_states else None)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The checkpoint's tensors under this model's names: ``swin.embeddings`` / ``swin.encoder`` (as transformers
        5 names them in memory) as the files' ``embeddings`` / ``encoder``; the unused final LayerNorm, the relative
        position index buffers older checkpoints hold and a mask token dropped."""
        out = {}
        for k, v in tensors.items():
            if k.startswith(("swin.embeddings.", "swin.encoder.")):
                k = k[len("swin."):]
            if k.startswith("swin.layernorm.") or k.endswith("relative_position_index") or k == "embeddings.mask_token":
                continue
            out[k] = v
        return out


class Swinv2Backbone(_Backbone):
    """Swin V2's encoder as a backbone (transformers' ``Swinv2Backbone``; config model_type "swinv2", stages "stem",
    "stage1" .. "stage<len(depths)>"): each chosen stage's map before its patch merging, no LayerNorm; see the
    module's docstring."""

    architecture = "Swinv2Backbone"
    model_type = "swinv2"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        cfg = self.config
        check_config(cfg, self.architecture)
        self.embeddings = SwinEmbeddings(cfg)
        self.encoder = Swinv2Encoder(cfg)  # checks depths and num_heads
        E, stages = cfg["embed_dim"], len(self.encoder.layers)
        self._stages(["stem"] + [f"stage{i}" for i in range(1, stages + 1)],
                     [E] + [E * 2 ** i for i in range(stages)])

    def forward(self, pixel_values, output_hidden_states: bool = False) -> BackboneOutput:
        patches = self.embeddings.patch_embeddings
        x, grid = self.embeddings(_pixels(pixel_values, self.architecture, patches.num_channels, (1, 1)))
        _, states = self.encoder(x, grid, before_downsampling=True)
        maps = tuple(as_map(*states[i]) for i in self.out_indices)
        return BackboneOutput(maps, tuple(s for s, _ in states) if output_hidden_states else None)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The checkpoint's tensors under this model's names: ``swinv2.embeddings`` / ``swinv2.encoder`` (a model's or
        classifier's checkpoint) as ``embeddings`` / ``encoder``; the final LayerNorm, the classifier and buffers
        dropped."""
        if not any(k.startswith("embeddings.") for k in tensors):
            tensors = {k[len("swinv2."):]: v for k, v in tensors.items()
                       if k.startswith(("swinv2.embeddings.", "swinv2.encoder."))}
        return {k: v for k, v in drop_buffers(tensors).items() if k.startswith(("embeddings.", "encoder."))}
