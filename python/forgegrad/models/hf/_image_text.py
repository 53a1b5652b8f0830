"""What the image-text decoders (gemma3_vlm.Gemma3ForConditionalGeneration, llava.LlavaForConditionalGeneration)
share: the image rows placed at the prompt's image tokens, the text-only path, the lean decode step's modules, and
the checkpoint names (transformers 5's ``language_model.*`` / ``vision_tower.*`` / ``multi_modal_projector.*``, the
released checkpoints' ``language_model.model.*`` / ``language_model.lm_head.weight`` / ``vision_tower.vision_model.*``
and transformers' in-memory ``model.*``)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from ... import devices
from ...factories import where
from ...tensor import Tensor
from ._image_prefill import image_prefill_applies, image_prefill_logits
from ._layers import ids_array, mask_array

TEXT_PREFIXES = ("model.", "lm_head.")

# transformers' config defaults of the text decoders, for the keys a released image-text checkpoint's text_config
# leaves out (gemma-3-4b-it's gives six keys, llava-1.5's five, paligemma's eight): what transformers builds from them
_GEMMA_COMMON = dict(rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
                     attention_bias=False, head_dim=256)
TEXT_DEFAULTS = {
    "gemma3_text": dict(_GEMMA_COMMON, vocab_size=262208, hidden_size=2304, intermediate_size=9216,
                        num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                        hidden_activation="gelu_pytorch_tanh", max_position_embeddings=131072,
                        query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=None,
                        attn_logit_softcapping=None),
    "gemma2": dict(_GEMMA_COMMON, vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                   num_attention_heads=8, num_key_value_heads=4, hidden_activation="gelu_pytorch_tanh",
                   max_position_embeddings=8192, query_pre_attn_scalar=256, sliding_window=4096,
                   final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    "gemma": dict(_GEMMA_COMMON, vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=16, hidden_act="gelu_pytorch_tanh",
                  max_position_embeddings=8192),
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                  rope_theta=10000.0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, hidden_act="silu", max_position_embeddings=131072,
                    rms_norm_eps=1e-6, rope_theta=10000.0, sliding_window=4096, bos_token_id=1, eos_token_id=2,
                    tie_word_embeddings=False),
}


def text_config(text: dict, default_kind: str) -> dict:
    """A text_config with transformers' defaults for the keys it leaves out (num_key_value_heads: the heads';
    head_dim: hidden_size / heads where transformers derives it)."""
    kind = text.get("model_type", default_kind)
    out = {**TEXT_DEFAULTS[kind], **text, "model_type": kind}
    if kind in ("llama", "mistral") and "head_dim" not in text:
        out["head_dim"] = out["hidden_size"] // out["num_attention_heads"]
    out.setdefault("num_key_value_heads", out["num_attention_heads"])
    return out
_PARTS = ("language_model.", "vision_tower.", "multi_modal_projector.")


class ImageTextDecoder:
    """A mixin ahead of a text decoder class: ``image_token_id``, ``vision_tower`` and ``multi_modal_projector``
    set by the subclass."""

    takes_images = True  # generate passes pixel_values (and token_type_ids) to the prefill
    image_token_id: int
    tokens_per_image: int  # the prompt's image tokens per image (image_prompts.py)

    def _ids(self, input_ids, who: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, where the image tokens are, the ids the embedding reads: an image token past the text vocabulary
        as id 0, as transformers)."""
        ids = ids_array(input_ids, who, max(self.vocab_size, self.image_token_id + 1))
        image = ids == self.image_token_id
        return ids, image, (np.where(image, 0, ids) if self.image_token_id >= self.vocab_size else ids)

    def _prompt(self, input_ids, attention_mask, cache, who: str):
        """(ids, where the image tokens are, the ids the embedding reads, cached tokens, padding (B, past + T))."""
        ids, image, text_ids = self._ids(input_ids, who)
        past = cache.length if cache is not None else 0
        return ids, image, text_ids, past, mask_array(attention_mask, who, (ids.shape[0], past + ids.shape[1]))

    def _logits(self, ids, image, text_ids, pad, past: int, position_ids, cache, logits_to_keep: int, features,
                masks, who: str) -> Tensor:
        """The text decoder's logits with the images' rows (``features`` (N, per image, hidden) or None) at the
        image tokens and ``masks`` (per sliding window; None: causal)."""
        x = self._embed(text_ids)
        if features is not None:
            x = self._merge_images(x, image, features, who, features.shape[1])
        if image_prefill_applies(self, past, devices.device_of(x._data)):  # graph-free: kernels on arrays
            return Tensor._wrap(image_prefill_logits(self, ids, x._data, pad, position_ids, cache, logits_to_keep,
                                                     masks))
        return self._head(self._stack(ids, pad, past, position_ids, cache, embeds=x, masks=masks), logits_to_keep)

    @staticmethod
    def _token_types(token_type_ids, B: int, T: int, past: int, who: str, meaning: str) -> np.ndarray:
        """token_type_ids as an integer (B, T) array, checked (a prompt from position 0 only)."""
        kinds = np.asarray(token_type_ids.numpy() if isinstance(token_type_ids, Tensor) else token_type_ids)
        if kinds.shape != (B, T) or kinds.dtype.kind not in "iub":
            raise ValueError(f"{who}: token_type_ids must be integers ({meaning}) of the input_ids' shape "
                             f"{(B, T)}, got {kinds.dtype} {kinds.shape}")
        if past:
            raise ValueError(f"{who}: token_type_ids apply to a prompt from position 0 (the cache holds {past} "
                             "tokens); pass them with the prefill only, as generate does")
        return kinds

    @staticmethod
    def configs(config: dict, who: str, text_kinds, default_kind: str, vision_kinds=None):
        """(text_config, vision_config) of an image-text config, checked: dicts, a supported text decoder (and
        vision tower)."""
        text, vision = config.get("text_config"), config.get("vision_config")
        if not isinstance(text, dict) or not isinstance(vision, dict):
            raise ValueError(f"{who}: config text_config and vision_config must be dicts")
        kind = text.get("model_type", default_kind)
        if kind not in text_kinds:
            raise ValueError(f"{who}: a {kind!r} text decoder is not supported (supported: {', '.join(text_kinds)})")
        if vision_kinds is not None and vision.get("model_type", vision_kinds[0]) not in vision_kinds:
            raise ValueError(f"{who}: a {vision.get('model_type')!r} vision tower is not supported "
                             f"(supported: {', '.join(vision_kinds)})")
        return text_config(text, default_kind), dict(vision)

    def _set_image_config(self, config: dict, default_token: int, who: str) -> None:
        """The image token (config image_token_index, or image_token_id) and the whole config, which save_pretrained
        writes."""
        token = config.get("image_token_index", config.get("image_token_id", default_token))
        if not isinstance(token, int) or isinstance(token, bool) or token < 0:
            raise ValueError(f"{who}: config image_token_index must be a non-negative integer, got {token!r}")
        self.image_token_id = token
        self.hf_config = config

    def _text_ids(self, input_ids, who: str):
        """A text-only call's ids for the text decoder's forward."""
        if self.image_token_id < self.vocab_size or isinstance(input_ids, Tensor):
            return input_ids
        return self._ids(input_ids, who)[2]

    def image_layout(self, images: dict) -> Tuple[List[int], List[int]]:
        """(the image tokens each image fills in the prompt, the rows of pixel_values it holds), in order: a fixed
        count of tokens and one row per image here (Qwen2-VL's patches and LLaVA-NeXT's tiles differ)."""
        n = int(images["pixel_values"].shape[0])
        return [self.tokens_per_image] * n, [1] * n

    def media_layout(self, images: dict) -> list:
        """Per kind of media given (images here; Qwen2-VL's videos too): (kind, its token id, the tokens each item
        fills, the pixel rows each holds, the pixel key, the keys with one row per item)."""
        if images.get("pixel_values") is None:
            return []
        tokens, rows = self.image_layout(images)
        return [("image", self.image_token_id, tokens, rows, "pixel_values", ("image_grid_thw", "image_sizes"))]

    def _merge_images(self, x: Tensor, image: np.ndarray, features: Tensor, who: str, per_image: int) -> Tensor:
        """x (B, T, hidden) with its image-token rows replaced by the images' rows, in order (transformers'
        masked_scatter); the counts must agree."""
        rows = features.reshape(-1, features.shape[-1])
        count = int(image.sum())
        if count != rows.shape[0]:
            raise ValueError(f"{who}: the prompt holds {count} image tokens (id {self.image_token_id}) but the "
                             f"{features.shape[0]} images give {rows.shape[0]} ({per_image} each)")
        index = np.zeros(image.shape, np.int64)
        index[image] = np.arange(count)
        placed = rows[index.reshape(-1)].reshape(*x.shape)  # (B, T, hidden): each image token's row
        return where(Tensor._wrap(image[..., None]), placed, x)

    def text_modules(self):
        """The modules a text step runs (the lean decoder's check): all but the vision tower and projector."""
        vision = {id(m) for part in (self.vision_tower, self.multi_modal_projector) for m in part.modules()}
        return [m for m in self.modules() if id(m) not in vision]

    @staticmethod
    def split_names(tensors: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """(the text decoder's tensors under its names (``model.*``, ``lm_head.*``), the others under
        ``vision_tower.*`` (no ``vision_model.``) / ``multi_modal_projector.*``)."""
        text: Dict[str, np.ndarray] = {}
        rest: Dict[str, np.ndarray] = {}
        for key, value in tensors.items():
            k = key[len("model."):] if key.startswith("model.") and key[6:].startswith(_PARTS) else key
            if k.startswith("language_model."):
                k = k[len("language_model."):]
                text[k if k.startswith(TEXT_PREFIXES) else "model." + k] = value
            elif k.startswith("lm_head."):
                text[k] = value
            elif k.startswith("vision_tower.vision_model."):
                rest["vision_tower." + k[len("vision_tower.vision_model."):]] = value
            else:
                rest[k] = value
        return text, rest

    def joined_names(self, text: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """transformers 5's names: ``text`` (the decoder's, in its checkpoint form) under ``language_model.``, then
        this model's vision tower and projector tensors."""
        out = {"language_model." + k: v for k, v in text.items()}
        for k, t in self.state_dict().items():
            if not k.startswith(TEXT_PREFIXES):
                out[k] = t.numpy()
        return out


def generate_image_arguments(model, media: dict, prefix_cache) -> dict:
    """generate's image (and video) arguments for the prefill call, those given ({} without any), checked."""
    given = {k: v for k, v in media.items() if v is not None}
    if not given:
        return {}
    if not getattr(model, "takes_images", False):
        from .image_prompts import PLACEHOLDERS
        raise TypeError(f"generate: {', '.join(given)} are an image-text model's ({', '.join(PLACEHOLDERS)}); "
                        f"{type(model).__name__} takes text only")
    if prefix_cache is not None:
        raise NotImplementedError("generate: images go without a prefix_cache (its blocks hold text tokens only)")
    return given


def _host(a) -> np.ndarray:
    return np.asarray(a.numpy() if isinstance(a, Tensor) else a)


def repeat_images(model, ids: np.ndarray, images: dict, times: int) -> dict:
    """The image arguments of the prompts ids (B, T) when each prompt's row is repeated ``times`` times in a row
    (beam search's rows, or R samples per prompt): each prompt's images (its pixel_values rows, grids, sizes; videos
    alike) repeated with it, token types row by row. The images fill the prompts' image tokens in order, as the
    forward places them; counts that disagree raise ValueError."""
    if times == 1 or not images:
        return images
    out = dict(images)
    if "token_type_ids" in images:
        out["token_type_ids"] = np.repeat(_host(images["token_type_ids"]), times, axis=0)
    for stream in model.media_layout(images):
        order, pixel_rows = _repeated_order(ids, times, *stream[:4])
        out[stream[4]] = _host(images[stream[4]])[pixel_rows]
        for key in stream[5]:  # one row per image
            if images.get(key) is not None:
                out[key] = _host(images[key])[order]
    return out


def _repeated_order(ids: np.ndarray, times: int, kind: str, token: int, tokens: List[int], rows: List[int]):
    """(the images in the repeated rows' order, their pixel rows) for images filling ``tokens`` each of the prompts'
    ``token`` ids in order, holding ``rows`` pixel rows each."""
    per_prompt = (ids == token).sum(axis=1)
    ends, starts = np.cumsum(per_prompt), np.concatenate([[0], np.cumsum(tokens)[:-1]]).astype(np.int64)
    if int(per_prompt.sum()) != int(sum(tokens)):
        raise ValueError(f"generate: the prompts hold {int(per_prompt.sum())} {kind} tokens (id {token}) but the "
                         f"{kind}s give {int(sum(tokens))} ({tokens})")
    owner = np.searchsorted(ends, starts, side="right")  # the prompt whose tokens each image begins in
    if (starts + np.asarray(tokens) > ends[np.minimum(owner, len(ends) - 1)]).any():
        raise ValueError(f"generate: an {kind}'s {tokens} tokens run past its prompt's {kind} tokens "
                         f"({per_prompt.tolist()} per prompt): each {kind} belongs to one prompt")
    first_row = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
    order = np.asarray([i for b in range(ids.shape[0]) for _ in range(times) for i in np.flatnonzero(owner == b)],
                       np.int64)
    pixel_rows = np.concatenate([np.arange(first_row[i], first_row[i + 1]) for i in order] + [np.zeros(0, np.int64)])
    return order, pixel_rows
