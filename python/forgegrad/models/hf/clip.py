"""CLIP's dual encoders (transformers' ``CLIPModel``, ``CLIPTextModel``, ``CLIPVisionModel``,
``CLIPTextModelWithProjection``, ``CLIPVisionModelWithProjection``) with transformers' parameter names: a causal
text transformer pooled at its end-of-text token, a ViT over image patches with a class token, each projected
into one embedding space where ``logit_scale.exp()`` times the cosine similarity scores an (image, text) pair.

The encoder layers (``CLIPEncoderLayer``: pre-norm attention and MLP) are SigLIP's too (siglip.py). Images are
given as ``pixel_values`` (batch, channels, image_size, image_size) float32, what an image processor makes; the
models take exactly the configured size (no interpolation of the position table).
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional

import numpy as np

from ... import grad_mode, nn
from ...factories import cat
from ...nn import functional as F
from ...tensor import Tensor
from ._encoder_fast import fast_forward, fast_path_ok, packed_copies_fit
from ._layers import (FLOAT32_MAX, activation, additive_mask, attend, config_probability, ids_array, key_places,
                      mask_array, merge_heads, pixel_input, split_heads)

__all__ = ["CLIPModel", "CLIPTextModel", "CLIPVisionModel", "CLIPTextModelWithProjection",
           "CLIPVisionModelWithProjection", "CLIPOutput", "EncoderOutput", "clip_loss"]

# transformers' CLIPTextConfig / CLIPVisionConfig defaults (a config.json may leave any of them out)
TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, projection_dim=512,
                     num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                     layer_norm_eps=1e-5, attention_dropout=0.0, pad_token_id=1, bos_token_id=49406,
                     eos_token_id=49407)
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, projection_dim=512, num_hidden_layers=12,
                       num_attention_heads=12, num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
                       layer_norm_eps=1e-5, attention_dropout=0.0)


class EncoderOutput(NamedTuple):
    """A tower's outputs: ``last_hidden_state`` (B, T, hidden) and ``pooler_output`` (B, hidden): the text's
    end-of-text token or the image's class token, normed (SigLIP: the text's projected last token, the image's
    attention-pooled head; None for a vision tower without its head)."""
    last_hidden_state: Tensor
    pooler_output: Optional[Tensor]


class CLIPOutput(NamedTuple):
    """``logits_per_image`` (images, texts), ``logits_per_text`` (texts, images), the unit-length ``text_embeds``
    and ``image_embeds``, and the contrastive ``loss`` (None unless asked for)."""
    logits_per_image: Tensor
    logits_per_text: Tensor
    text_embeds: Tensor
    image_embeds: Tensor
    loss: Optional[Tensor] = None


def quick_gelu(x: Tensor) -> Tensor:
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""
    return x * F.sigmoid(x * 1.702)


def tower_activation(name, who: str):
    return quick_gelu if name == "quick_gelu" else activation(name, who)


def sub_config(config: dict, key: str, defaults: dict, who: str) -> dict:
    """The text or vision config of a dual model (``config[key]``, a dict), over transformers' defaults; a
    tower's own config.json is flat (``key`` None)."""
    own = config if key is None else config.get(key) or config.get(key + "_dict") or {}
    if not isinstance(own, dict):
        raise ValueError(f"{who}: config {key} must be a dict, got {type(own).__name__}")
    cfg = dict(defaults, **{k: v for k, v in own.items() if v is not None})
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if isinstance(cfg[k], bool) or not isinstance(cfg[k], int) or cfg[k] <= 0:
            raise ValueError(f"{who}: config {k} must be a positive integer, got {cfg[k]!r}")
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise ValueError(f"{who}: hidden_size ({cfg['hidden_size']}) must be a multiple of num_attention_heads "
                         f"({cfg['num_attention_heads']})")
    return cfg


class CLIPAttention(nn.Module):
    def __init__(self, cfg: dict, who: str):
        super().__init__()
        E = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(E, E) for _ in range(4))
        self.dropout_p = config_probability(cfg, "attention_dropout", who)

    def forward(self, x: Tensor, mask, causal: bool = False) -> Tensor:
        q, k, v = (split_heads(proj(x), self.heads) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = attend(q, k, v, mask, causal=causal, dropout_p=self.dropout_p if self.training else 0.0)
        return self.out_proj(merge_heads(out))


class CLIPMLP(nn.Module):
    def __init__(self, cfg: dict, who: str):
        super().__init__()
        self.fc1 = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.fc2 = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"])
        self.act = self._configured_act = tower_activation(cfg["hidden_act"], who)
        self.hidden_act = cfg["hidden_act"]  # (the inference path's GEMM epilogue: _encoder_fast.py)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """x + attn(layer_norm1(x)), then + mlp(layer_norm2(x)): CLIP's and SigLIP's layer."""

    def __init__(self, cfg: dict, who: str):
        super().__init__()
        E, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.self_attn = CLIPAttention(cfg, who)
        self.layer_norm1 = nn.LayerNorm(E, eps=eps)
        self.mlp = CLIPMLP(cfg, who)
        self.layer_norm2 = nn.LayerNorm(E, eps=eps)

    def forward(self, x: Tensor, mask, causal: bool = False) -> Tensor:
        if fast_path_ok(self, x):  # inference without a graph: fused q|k|v, packed weights, epilogues
            # whether to keep the packed weights: its encoder's decision for all its layers (``_keep_packed``, the
            # tower's weights within FORGEGRAD_PACKED_WEIGHTS_MB), else its own size
            keep = self.__dict__.get("_keep_packed")
            return fast_forward(self, x, mask, causal, attend, packed_copies_fit(self) if keep is None else keep)
        x = x + self.self_attn(self.layer_norm1(x), mask, causal)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    _no_split_modules = ["CLIPEncoderLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict, who: str):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(cfg, who) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, x: Tensor, mask, causal: bool = False) -> Tensor:
        if grad_mode.graph_free():  # the whole tower's weights against the packed-weights budget
            keep = packed_copies_fit(self)
            for layer in self.layers:
                layer.__dict__["_keep_packed"] = keep
        for layer in self.layers:
            x = layer(x, mask, causal)
        return x


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.position_embedding = nn.Embedding(cfg["max_position_embeddings"], cfg["hidden_size"])

    def forward(self, ids: np.ndarray) -> Tensor:
        # positions 0..T-1 as a slice of the table: an exported graph keeps T dynamic
        return self.token_embedding(Tensor._wrap(ids)) + self.position_embedding.weight[:ids.shape[1]]


def pixel_tensor(pixel_values, cfg: dict, who: str) -> Tensor:
    """``pixel_values`` (numpy array or Tensor) as a float32 (B, channels, image_size, image_size) Tensor, checked;
    a graph's input Tensor is kept as it is."""
    t = pixel_input(pixel_values, who, "fiub")
    size, channels = cfg["image_size"], cfg["num_channels"]
    if t.ndim != 4 or tuple(t.shape[1:]) != (channels, size, size):
        raise ValueError(f"{who}: pixel_values must have shape (batch, {channels}, {size}, {size}) (the configured "
                         f"num_channels and image_size), got {tuple(t.shape)}")
    if t.dtype != np.float32:
        raise TypeError(f"{who}: pixel_values must be float32, got {t.dtype}")
    return t


def _graph_ids(input_ids, ids: np.ndarray) -> Tensor:
    """The ids as a Tensor: an exported graph's own input (its ops then read the graph's ids), else ``ids``."""
    return input_ids if isinstance(input_ids, Tensor) and grad_mode.recorder() is not None else Tensor._wrap(ids)


def first_position(hit: Tensor) -> Tensor:
    """(B, 1, T) one-hot float rows marking each row's first True of the bool (B, T) ``hit``, or position 0 for a row
    with none (as argmax picks it), in Tensor ops an exported graph keeps dynamic."""
    h = hit.float()
    first = h * (h.cumsum(-1) == 1).float()
    start = (key_places(h) == 0).float()  # position 0
    return (first + (1 - first.sum(-1, keepdim=True)) * start).unsqueeze(1)


class CLIPTextModel(nn.Module):
    """CLIP's text tower: token + position embeddings, causal pre-norm layers, a final LayerNorm.
    ``forward(input_ids, attention_mask=None)`` returns ``EncoderOutput(last_hidden_state, pooler_output)``, the
    pooled row being each sequence's first ``eos_token_id`` token, or, for configs whose eos_token_id is 2 (saved
    before transformers fixed it), its highest id (the end-of-text token is the last of CLIP's vocabulary), as
    transformers 5 picks it."""

    architecture = "CLIPTextModel"
    model_type = "clip_text_model"
    defaults = TEXT_DEFAULTS
    causal = True

    def __init__(self, config: dict):
        super().__init__()
        who = type(self).__name__
        self.config = sub_config(config, None, self.defaults, who)
        c = self.config
        self.embeddings = TextEmbeddings(c)
        self.encoder = CLIPEncoder(c, who)
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, input_ids, attention_mask=None) -> EncoderOutput:
        who, c = type(self).__name__, self.config
        ids = ids_array(input_ids, who, c["vocab_size"])
        B, T = ids.shape
        if T > c["max_position_embeddings"]:
            raise ValueError(f"{who}: {T} tokens exceed the {c['max_position_embeddings']} its position table holds")
        padding = mask_array(attention_mask, who, (B, T))
        if isinstance(attention_mask, Tensor) and grad_mode.recorder() is not None:
            mask = self.graph_bias(attention_mask.float())  # an export: the bias from the graph's mask
        else:
            mask = additive_mask(padding, 0, T, causal=self.causal)
        x = self.encoder(self.embeddings(ids), mask, causal=self.causal)
        x = self.final_layer_norm(x)
        return EncoderOutput(x, self.pool(x, _graph_ids(input_ids, ids)))

    def graph_bias(self, m: Tensor) -> Tensor:
        """(B, 1, T, T) causal + padding bias of a float (B, T) mask, as Tensor ops (an exported graph's)."""
        places = key_places(m)
        later = (places.unsqueeze(1) > places.unsqueeze(-1)).float()  # (B, query, key): a key after the query
        blocked = ((later + (1 - m).unsqueeze(1)) > 0).float()
        return (blocked * -FLOAT32_MAX).unsqueeze(1)

    def pool(self, x: Tensor, ids: Tensor) -> Tensor:
        """(B, hidden): the end-of-text token's row of each sequence (one-hot rows times x: a graph-friendly
        gather)."""
        eos = self.config["eos_token_id"]
        hit = ids == ids.amax(-1, keepdim=True) if eos == 2 else ids == int(eos)
        return (first_position(hit) @ x).squeeze(1)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The tower's tensors, from its own checkpoint or one keeping them under ``text_model.`` (transformers
        4's, a CLIPModel's)."""
        return strip_prefix(tensors, "text_model.")

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


class VisionEmbeddings(nn.Module):
    """Patches (a stride-``patch_size`` convolution, no bias) after a learned class token, plus positions."""

    def __init__(self, cfg: dict):
        super().__init__()
        E, p = cfg["hidden_size"], cfg["patch_size"]
        if not isinstance(p, int) or isinstance(p, bool) or p <= 0 or cfg["image_size"] < p:
            raise ValueError(f"CLIPVisionModel: config patch_size must be a positive integer at most image_size "
                             f"({cfg['image_size']}), got {p!r}")
        self.class_embedding = nn.Parameter(Tensor._stored(np.zeros(E, np.float32)))
        self.patch_embedding = nn.Conv2d(cfg["num_channels"], E, p, stride=p, bias=False)
        self.position_embedding = nn.Embedding((cfg["image_size"] // p) ** 2 + 1, E)

    def forward(self, pixels: Tensor) -> Tensor:
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (B, patches, E)
        cls = patches[:, :1] * 0 + self.class_embedding  # (B, 1, E): the batch taken from the graph's input
        return cat([cls, patches], dim=1) + self.position_embedding.weight


class CLIPVisionModel(nn.Module):
    """CLIP's vision tower: patch and class embeddings, ``pre_layrnorm`` (transformers' spelling), the layers;
    ``forward(pixel_values)`` returns ``EncoderOutput(last_hidden_state, pooler_output)``, the pooled row being
    the class token's after ``post_layernorm``."""

    architecture = "CLIPVisionModel"
    model_type = "clip_vision_model"
    defaults = VISION_DEFAULTS

    def __init__(self, config: dict):
        super().__init__()
        who = type(self).__name__
        self.config = sub_config(config, None, self.defaults, who)
        c = self.config
        self.embeddings = VisionEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.encoder = CLIPEncoder(c, who)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, pixel_values) -> EncoderOutput:
        x = self.embeddings(pixel_tensor(pixel_values, self.config, type(self).__name__))
        x = self.encoder(self.pre_layrnorm(x), None)
        return EncoderOutput(x, self.post_layernorm(x[:, 0]))

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return strip_prefix(tensors, "vision_model.")

    to_hf = CLIPTextModel.to_hf


def strip_prefix(tensors: Dict[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
    """A tower's tensors without ``prefix`` when its checkpoint keeps them under it (the other tower's and the
    projections left out), and without the position_ids buffers older checkpoints saved."""
    if any(k.startswith(prefix) for k in tensors):
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return {k: v for k, v in tensors.items() if not k.endswith("position_ids")}


class CLIPTextModelOutput(NamedTuple):
    text_embeds: Tensor
    last_hidden_state: Tensor


class CLIPVisionModelOutput(NamedTuple):
    image_embeds: Tensor
    last_hidden_state: Tensor


class CLIPTextModelWithProjection(nn.Module):
    """The text tower and its ``text_projection`` (no bias): ``forward(input_ids, attention_mask=None)`` returns
    ``CLIPTextModelOutput(text_embeds (B, projection_dim), last_hidden_state)`` (not normalised)."""

    architecture = "CLIPTextModelWithProjection"
    model_type = "clip_text_model"

    def __init__(self, config: dict):
        super().__init__()
        self.text_model = CLIPTextModel(config)
        self.config = self.text_model.config
        self.text_projection = nn.Linear(self.config["hidden_size"], self.config["projection_dim"], bias=False)

    def forward(self, input_ids, attention_mask=None) -> CLIPTextModelOutput:
        out = self.text_model(input_ids, attention_mask)
        return CLIPTextModelOutput(self.text_projection(out.pooler_output), out.last_hidden_state)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {k: v for k, v in tensors.items() if not k.endswith("position_ids") and not k.startswith(
            ("vision_model.", "visual_projection", "logit_scale"))}

    to_hf = CLIPTextModel.to_hf


class CLIPVisionModelWithProjection(nn.Module):
    """The vision tower and its ``visual_projection`` (no bias): ``forward(pixel_values)`` returns
    ``CLIPVisionModelOutput(image_embeds (B, projection_dim), last_hidden_state)`` (not normalised)."""

    architecture = "CLIPVisionModelWithProjection"
    model_type = "clip_vision_model"

    def __init__(self, config: dict):
        super().__init__()
        self.vision_model = CLIPVisionModel(config)
        self.config = self.vision_model.config
        self.visual_projection = nn.Linear(self.config["hidden_size"], self.config["projection_dim"], bias=False)

    def forward(self, pixel_values) -> CLIPVisionModelOutput:
        out = self.vision_model(pixel_values)
        return CLIPVisionModelOutput(self.visual_projection(out.pooler_output), out.last_hidden_state)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {k: v for k, v in tensors.items() if not k.endswith("position_ids") and not k.startswith(
            ("text_model.", "text_projection", "logit_scale"))}

    to_hf = CLIPTextModel.to_hf


def unit(x: Tensor) -> Tensor:
    """Each row divided by its L2 norm."""
    return x / (x * x).sum(-1, keepdim=True).sqrt()


def clip_loss(logits_per_text: Tensor) -> Tensor:
    """CLIP's symmetric contrastive loss: the mean of the cross entropies of texts over images and of images over
    texts, pair i being the match of row i (transformers' ``clip_loss``)."""
    n = logits_per_text.shape[0]
    if logits_per_text.shape != (n, n):
        raise ValueError(f"clip_loss: logits_per_text must be square (texts == images), got {logits_per_text.shape}")
    target = Tensor._wrap(np.arange(n, dtype=np.int64))
    return (F.cross_entropy(logits_per_text, target) + F.cross_entropy(logits_per_text.t(), target)) / 2


class CLIPModel(nn.Module):
    """CLIP: both towers, ``text_projection`` and ``visual_projection`` into ``projection_dim``, and the learned
    temperature ``logit_scale``. ``get_text_features(input_ids, attention_mask=None)`` and
    ``get_image_features(pixel_values)`` return the projected (B, projection_dim) embeddings (not normalised);
    ``forward(input_ids, pixel_values, attention_mask=None, return_loss=False)`` returns ``CLIPOutput`` with
    ``logits_per_text = exp(logit_scale) * text_embeds @ image_embeds.T`` of the normalised embeddings (and its
    transpose ``logits_per_image``), and with ``return_loss`` the contrastive loss (``clip_loss``) for training."""

    architecture = "CLIPModel"
    model_type = "clip"
    text_class, vision_class = CLIPTextModel, CLIPVisionModel

    def __init__(self, config: dict):
        super().__init__()
        who = type(self).__name__
        self.config = dict(config)
        text = sub_config(self.config, "text_config", self.text_class.defaults, who)
        vision = sub_config(self.config, "vision_config", self.vision_class.defaults, who)
        self.text_model, self.vision_model = self.text_class(text), self.vision_class(vision)
        self.build_heads(text, vision)

    def build_heads(self, text: dict, vision: dict) -> None:
        dim = self.config.get("projection_dim", 512)
        self.text_projection = nn.Linear(text["hidden_size"], dim, bias=False)
        self.visual_projection = nn.Linear(vision["hidden_size"], dim, bias=False)
        scale = np.float32(self.config.get("logit_scale_init_value", 2.6592))
        self.logit_scale = nn.Parameter(Tensor._stored(np.array(scale, np.float32)))

    def project_text(self, pooled: Tensor) -> Tensor:
        """The text embedding of the text tower's pooled output (CLIP's projection; SigLIP's tower already has it)."""
        return self.text_projection(pooled)

    def project_image(self, pooled: Tensor) -> Tensor:
        return self.visual_projection(pooled)

    def get_text_features(self, input_ids, attention_mask=None) -> Tensor:
        return self.project_text(self.text_model(input_ids, attention_mask).pooler_output)

    def get_image_features(self, pixel_values) -> Tensor:
        return self.project_image(self.vision_model(pixel_values).pooler_output)

    def logits(self, text_embeds: Tensor, image_embeds: Tensor) -> Tensor:
        """logits_per_text (texts, images) of normalised embeddings."""
        return (text_embeds @ image_embeds.t()) * self.logit_scale.exp()

    def loss(self, logits_per_text: Tensor) -> Tensor:
        return clip_loss(logits_per_text)

    def forward(self, input_ids, pixel_values, attention_mask=None, return_loss: bool = False) -> CLIPOutput:
        image_embeds = unit(self.get_image_features(pixel_values))
        text_embeds = unit(self.get_text_features(input_ids, attention_mask))
        per_text = self.logits(text_embeds, image_embeds)
        return CLIPOutput(per_text.t(), per_text, text_embeds, image_embeds,
                          self.loss(per_text) if return_loss else None)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {k: v for k, v in tensors.items() if not k.endswith("position_ids")}

    to_hf = CLIPTextModel.to_hf
