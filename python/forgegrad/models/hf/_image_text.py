"""What the image-text decoders (gemma3_vlm.Gemma3ForConditionalGeneration, llava.LlavaForConditionalGeneration)
share: the image rows placed at the prompt's image tokens, the text-only path, the lean decode step's modules, and
the checkpoint names (transformers 5's ``language_model.*`` / ``vision_tower.*`` / ``multi_modal_projector.*``, the
released checkpoints' ``language_model.model.*`` / ``language_model.lm_head.weight`` / ``vision_tower.vision_model.*``
and transformers' in-memory ``model.*``)."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ...factories import where
from ...tensor import Tensor
from ._layers import ids_array

TEXT_PREFIXES = ("model.", "lm_head.")
_PARTS = ("language_model.", "vision_tower.", "multi_modal_projector.")


class ImageTextDecoder:
    """A mixin ahead of a text decoder class: ``image_token_id``, ``vision_tower`` and ``multi_modal_projector``
    set by the subclass."""

    takes_images = True  # generate passes pixel_values (and token_type_ids) to the prefill
    image_token_id: int

    def _ids(self, input_ids, who: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, where the image tokens are, the ids the embedding reads: an image token past the text vocabulary
        as id 0, as transformers)."""
        ids = ids_array(input_ids, who, max(self.vocab_size, self.image_token_id + 1))
        image = ids == self.image_token_id
        return ids, image, (np.where(image, 0, ids) if self.image_token_id >= self.vocab_size else ids)

    def _text_ids(self, input_ids, who: str):
        """A text-only call's ids for the text decoder's forward."""
        if self.image_token_id < self.vocab_size or isinstance(input_ids, Tensor):
            return input_ids
        return self._ids(input_ids, who)[2]

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
