"""Tiny video files written by PyAV itself (its FFmpeg encoders), for the video loading, CLI and server tests."""
from __future__ import annotations

import base64
import io

import numpy as np


def clip(seed: int, frames: int, size=(48, 64)) -> np.ndarray:
    """(frames, H, W, 3) uint8: smooth random colour fields (a codec keeps them close), each frame its own."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(frames):
        a, b, c = rng.uniform(0, 255, (3, 3))
        out.append(np.stack([a[i] * (1 - x) * (1 - y) + b[i] * x + c[i] * y for i in range(3)], -1).clip(0, 255))
    return np.stack(out).astype(np.uint8)


def encode(frames: np.ndarray, fps: int = 10, container: str = "mp4", codec: str = "mpeg4") -> bytes:
    """``frames`` encoded as a ``container`` file (mp4, matroska, webm, avi) by ``codec`` at ``fps``."""
    import av
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


# Qwen2-VL's chat template with its video parts, and its vision marks (the tokenizer's special tokens)
QWEN_VL_VIDEO_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif p['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% else %}{{ p['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MARKS = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
VIDEO_SIZE = {"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * 4}  # 48 x 64 frames: 56 x 56, 4 tokens a group


def qwen_vl_video_checkpoint(path, v2_5: bool):
    """A tiny Qwen2-VL (or Qwen2.5-VL) checkpoint transformers wrote at ``path``, with a byte-level BPE tokenizer,
    the video chat template, transformers' image processor config and a video_preprocessor_config.json (written as
    transformers writes one: its Qwen2VLVideoProcessor needs torchvision): (hf model, tokenizer, mark ids (start,
    image pad, end, video pad))."""
    import json

    import torch
    import transformers
    from hf_conformance import chat_tokenizer
    tok = chat_tokenizer(QWEN_VL_VIDEO_TEMPLATE)
    tok.add_special_tokens({"additional_special_tokens": MARKS})
    start, pad, end, video = tok.convert_tokens_to_ids(MARKS)
    torch.manual_seed(0)
    text = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=40, vocab_size=300, max_position_embeddings=256, initializer_range=0.2,
                rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 2, 2]),
                eos_token_id=1)
    if v2_5:
        cls, config = transformers.Qwen2_5_VLForConditionalGeneration, transformers.Qwen2_5_VLConfig
        vision = dict(depth=2, num_heads=4, hidden_size=32, out_hidden_size=48, intermediate_size=40, window_size=56,
                      fullatt_block_indexes=[1], patch_size=14, initializer_range=0.2, tokens_per_second=2)
    else:
        cls, config = transformers.Qwen2VLForConditionalGeneration, transformers.Qwen2VLConfig
        vision = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=4, mlp_ratio=2, patch_size=14,
                      initializer_range=0.2)
    hf = cls(config(text_config=text, vision_config=vision, image_token_id=pad, video_token_id=video,
                    vision_start_token_id=start, vision_end_token_id=end)).eval()
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "chat_template.jinja").write_text(QWEN_VL_VIDEO_TEMPLATE)
    transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16).save_pretrained(path)
    (path / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Qwen2VLVideoProcessor", "size": VIDEO_SIZE, "patch_size": 14,
         "temporal_patch_size": 2, "merge_size": 2, "do_sample_frames": False}))
    return hf, tok, (start, pad, end, video)


def reference_video_inputs(data: bytes, fps: float, v2_5: bool, tmp_path):
    """transformers' PyAV reader's frames of ``data`` at Qwen2-VL's sampled indices, made into the model's video
    inputs by forgegrad's video processor (transformers' needs torchvision): torch tensors for transformers'
    generate, and the token count."""
    import torch
    from transformers.video_utils import load_video

    from forgegrad.data.video import sample_frame_indices
    from forgegrad.models.hf.qwen2_vl_video import Qwen2VLVideoProcessor
    file = tmp_path / "reference.mp4"
    file.write_bytes(data)
    with open(file, "rb") as f:
        import av
        with av.open(f) as c:
            total, rate = c.streams.video[0].frames, float(c.streams.video[0].average_rate)
    idx = sample_frame_indices(total, rate, fps=fps)
    frames, _ = load_video(str(file), backend="pyav", sample_indices_fn=lambda metadata, **_: idx)
    out = Qwen2VLVideoProcessor(size=VIDEO_SIZE)(frames, fps=len(idx) / total * rate if v2_5 else None)
    kw = {k: torch.tensor(v) for k, v in out.items()}
    return kw, int(out["video_grid_thw"].prod()) // 4
