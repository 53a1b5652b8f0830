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
