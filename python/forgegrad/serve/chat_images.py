"""Images in ``POST /v1/chat/completions`` for an image-text model (Gemma 3, LLaVA, LLaVA-NeXT, PaliGemma, Qwen2-VL,
Qwen2.5-VL): the messages' image_url parts (base64 ``data:`` URLs; URLs are not fetched) decoded and checked as the
embeddings server checks its images (image_embeddings.open_image: formats, pixel counts, the resized size), made into
pixel values by the checkpoint's image processor, and the rendered prompt's image marks expanded as transformers'
processor expands them (models/hf/image_prompts.py). Such a request joins the batched engine (generation_batch.py: its
prompt prefilled in one call with the images, its choices sharing it, or only its text after cached blocks that hold
every image token: image_prefix.py; a Qwen2-VL row decodes at its own rope delta, its text positions running on
from its images' M-RoPE positions), save beam searches (use_beam_search), which decode alone on the images;
log-probabilities from each decode step's logits (with beams: from a scoring forward that prefills the prompt with the
images, beam_completions.py)."""
from __future__ import annotations

from typing import List, Tuple

from .completion_request import CompletionError, CompletionRequest


def image_inputs(gen, req: CompletionRequest, prompt: str) -> Tuple[List[int], dict]:
    """(the prompt's token ids with each image's tokens, generate's pixel_values and token_type_ids); a
    CompletionError naming messages (or the unsupported field) when the request cannot be served."""
    from ..models.hf.image_prompts import image_inputs
    from .image_embeddings import load_image, open_image
    model = gen.model
    if not getattr(model, "takes_images", False):
        raise CompletionError(400, f"messages hold images, but {type(model).__name__} takes text only", "messages")
    if gen.image_processor is None:
        raise CompletionError(400, "messages hold images, but the checkpoint has no preprocessor_config.json to make "
                                   "pixel values with", "messages")
    pictures, used = [], 0
    for i, data in enumerate(req.images):
        try:
            image = open_image(data, i, gen.image_processor, used)
            used += image.width * image.height
            pictures.append(load_image(image, i))
        except CompletionError as e:  # its message names "input i": here the request's image i
            raise CompletionError(e.status, "messages: image" + e.message[len("input"):], "messages") from None
    try:
        return image_inputs(model, gen.tokenizer, prompt, pictures, gen.image_processor)
    except ValueError as e:
        raise CompletionError(400, str(e), "messages") from None
