"""Images and videos in ``POST /v1/chat/completions`` for an image-text model (Gemma 3, LLaVA, LLaVA-NeXT, PaliGemma,
Qwen2-VL, Qwen2.5-VL): the messages' image_url parts (base64 ``data:`` URLs; URLs are not fetched) decoded and checked
as the embeddings server checks its images (image_embeddings.open_image: formats, pixel counts, the resized size), made
into pixel values by the checkpoint's image processor, and the rendered prompt's image marks expanded as transformers'
processor expands them (models/hf/image_prompts.py). Such a request joins the batched engine (generation_batch.py: its
prompt prefilled in one call with the images, its choices sharing it, or only its text after cached blocks that hold
every image token: image_prefix.py; a Qwen2-VL row decodes at its own rope delta, its text positions running on
from its images' M-RoPE positions), save beam searches (use_beam_search), which decode alone on the images;
log-probabilities from each decode step's logits (with beams: from a scoring forward that prefills the prompt with the
images, beam_completions.py).

Videos (vLLM's video_url parts, Qwen2-VL and Qwen2.5-VL only): each a base64 ``data:`` URL of an MP4 / MOV, WebM /
Matroska or AVI file, decoded with PyAV (forgegrad.data.video; ``pip install "forgegrad[video]"``, else 501), its
frames sampled as transformers' Qwen2-VL video processor samples them (the checkpoint's video processor config's
rate or count, else 2 frames a second), made into pixel_values_videos / video_grid_thw (and, for Qwen2.5-VL,
second_per_grid_ts from the sampled rate) by the checkpoint's video processor (models/hf/qwen2_vl_video.py). Before a
frame is decoded the header is checked: at most MAX_DECODED_FRAMES frames, MAX_FRAME_PIXELS pixels a frame, the sampled
frames at most MAX_VIDEO_BYTES of RGB for the request, and the video tokens they make within the model's context. A
request with videos goes the way a request with images goes (the batched engine, its prefill in one call with the
videos; its blocks keyed by the videos' digests in the prefix cache, as images')."""
from __future__ import annotations

from typing import List, Tuple

from .completion_request import CompletionError, CompletionRequest

MAX_DECODED_FRAMES = 1 << 13  # a video's frames (4.5 minutes at 30 fps): each sampled frame needs those before it
MAX_FRAME_PIXELS = 3840 * 2160  # 4K UHD
MAX_VIDEO_BYTES = 1 << 30  # the request's sampled frames as RGB (uint8), before they are resized


def image_inputs(gen, req: CompletionRequest, prompt: str) -> Tuple[List[int], dict]:
    """(the prompt's token ids with each image's and video's tokens, generate's pixel_values and token_type_ids (and
    the videos' arguments)); a CompletionError naming messages (or the unsupported field) when the request cannot
    be served."""
    from ..models.hf.image_prompts import image_inputs
    from .image_embeddings import load_image, open_image
    model = gen.model
    if not getattr(model, "takes_images", False):
        what = "images" if req.images else "videos"
        raise CompletionError(400, f"messages hold {what}, but {type(model).__name__} takes text only", "messages")
    if req.images and gen.image_processor is None:
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
    videos, fps = _videos(gen, req) if req.videos else (None, None)
    try:
        return image_inputs(model, gen.tokenizer, prompt, pictures, gen.image_processor, videos=videos,
                            video_processor=getattr(gen, "video_processor", None), fps=fps)
    except ValueError as e:
        raise CompletionError(400, str(e), "messages") from None


def _video_bytes(data: str, i: int) -> bytes:
    from .image_embeddings import data_url_bytes
    return data_url_bytes(data, f"messages: video {i}", "video", "video URLs are not fetched; send the file's bytes as "
                          "a data:video/mp4;base64,... URL", "data:video/mp4;base64,...", "messages")


def _videos(gen, req: CompletionRequest):
    """The request's videos decoded and sampled (data.video.Video), and each one's sampled rate for Qwen2.5-VL's
    second_per_grid_ts (None for Qwen2-VL, which reads none)."""
    from ..data.video import VideoFile, sample_frame_indices
    model = gen.model
    processor = getattr(gen, "video_processor", None)
    if processor is None:
        raise CompletionError(400, f"messages hold videos, but {type(model).__name__} takes none (videos: Qwen2-VL, "
                                   "Qwen2.5-VL)", "messages")
    opened, tokens, size = [], 0, 0
    for i, data in enumerate(req.videos):
        raw = _video_bytes(data, i)
        try:
            f = VideoFile(raw, MAX_DECODED_FRAMES, MAX_FRAME_PIXELS)
            settings = processor.sampling()
            n = len(sample_frame_indices(f.total_frames, f.fps, **settings))
            groups, rows, cols = processor.grid(n, f.height, f.width)
        except ImportError as e:
            raise CompletionError(501, f"videos need PyAV on the server: {e}", "messages") from None
        except ValueError as e:  # not a container, a broken file, past the limits
            raise CompletionError(400, f"messages: video {i}: {e}", "messages") from None
        tokens += groups * rows * cols // processor.merge_size ** 2
        size += n * f.height * f.width * 3
        if tokens > gen.context:
            raise CompletionError(400, f"this model's maximum context length is {gen.context} tokens, however the "
                                       f"messages' videos alone make {tokens}", "messages", "context_length_exceeded")
        if size > MAX_VIDEO_BYTES:
            raise CompletionError(400, f"messages: the videos' sampled frames come to more than the {MAX_VIDEO_BYTES} "
                                       "bytes this server decodes per request; send shorter or smaller videos",
                                  "messages")
        opened.append((f, settings))
    videos = []
    for i, (f, settings) in enumerate(opened):
        try:
            videos.append(f.sample(**settings))
        except ValueError as e:  # broken past its header
            raise CompletionError(400, f"messages: video {i}: {e}", "messages") from None
    seconds = model.architecture == "Qwen2_5_VLForConditionalGeneration"
    return videos, [v.sampled_fps for v in videos] if seconds else None
