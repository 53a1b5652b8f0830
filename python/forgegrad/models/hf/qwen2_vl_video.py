"""Qwen2-VL's and Qwen2.5-VL's video preprocessing (transformers' ``Qwen2VLVideoProcessor``) in numpy: each video's
frames (optionally a uniform sample of them) resized together to ``smart_resize``'s size for the first frame
(sides multiples of patch_size * merge_size, pixels within the video's [shortest_edge, longest_edge] of ``size``:
128 x 28 x 28 and 768 x 28 x 28 by default; ``cap_pixels_per_frame`` bounds the whole video's pixels as
qwen-vl-utils does), rescaled and normalized as the image processor, the last frame repeated up to a multiple of
temporal_patch_size, then cut into patches: per group of temporal_patch_size frames, the merge blocks row-major,
each patch flattened in (channel, frame, row, column) order: the layout the model's vision tower reads.

``processor(videos, fps=None) -> {"pixel_values_videos": (total patches, C * T * P * P) float32, "video_grid_thw":
(num_videos, 3) int64}``, with ``second_per_grid_ts`` (temporal_patch_size / fps per video: Qwen2.5-VL's temporal
positions) when ``fps`` (the frames per second of the frames given: one number, or one per video) is. A video is a
(frames, H, W, C) uint8 array, a list of frames (arrays or PIL images), or a ``forgegrad.data.video.Video`` (a file's
frames as ``load`` decoded and sampled them: taken as they are).

``load_video_processor(dir)`` reads a checkpoint's settings as transformers' AutoVideoProcessor finds them
(processor_config.json's "video_processor", else video_preprocessor_config.json, else preprocessor_config.json).
``processor.load(data, fps=None, num_frames=None)`` decodes a video file (data/video.py, PyAV) and samples its frames
as transformers' ``Qwen2VLVideoProcessor.sample_frames``: at ``fps`` frames per second or ``num_frames`` frames if
given, else at the config's (``do_sample_frames`` with its ``fps`` / ``num_frames``), else at ``DEFAULT_FPS`` (2 per
second, qwen-vl-utils' default: transformers' processor keeps every frame unless do_sample_frames, 30 a second of
a phone's video), within [min_frames, max_frames] (4 and 768 by default).

Resizing is Pillow's filter (transformers resizes video frames with torchvision's antialiased one: within a few uint8
levels of it); frames already at the target size are exact.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .image_processing import resize_uint8
from .qwen2_vl_processing import Qwen2VLImageProcessor, smart_resize

__all__ = ["Qwen2VLVideoProcessor", "load_video_processor", "DEFAULT_FPS"]

_WHO = "Qwen2VLVideoProcessor"
DEFAULT_FPS = 2.0
_VIDEO_KEYS = ("do_sample_frames", "num_frames", "fps", "min_frames", "max_frames", "cap_pixels_per_frame",
               "max_video_tokens")


class Qwen2VLVideoProcessor(Qwen2VLImageProcessor):
    """See the module docstring. Settings are video_preprocessor_config.json's (transformers' defaults otherwise:
    bicubic, CLIP's mean and std, size 100352..602112 pixels, patch 14, temporal patch 2, merge 2, every frame
    kept: ``do_sample_frames`` with ``num_frames`` samples uniformly, as transformers' sample_frames)."""

    def __init__(self, use_pillow=None, **config):
        size = dict(config.pop("size", None) or {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768})
        self.do_sample_frames = bool(config.pop("do_sample_frames", False))
        self.num_frames = config.pop("num_frames", None)
        self.cap_pixels_per_frame = bool(config.pop("cap_pixels_per_frame", False))
        self.max_video_tokens = int(config.pop("max_video_tokens", 128000))
        self.fps = config.pop("fps", None)
        self.min_frames = int(config.pop("min_frames", 4))
        self.max_frames = int(config.pop("max_frames", 768))
        super().__init__(use_pillow=use_pillow, size=size, **config)
        self.kind = _WHO

    def __repr__(self) -> str:
        return (f"{_WHO}(min_pixels={self.min_pixels}, max_pixels={self.max_pixels}, patch_size={self.patch_size}, "
                f"temporal_patch_size={self.temporal_patch_size}, merge_size={self.merge_size})")

    def sampling(self, fps: Optional[float] = None, num_frames: Optional[int] = None) -> dict:
        """``sample_frame_indices``' settings for a file (see the module's docstring): the rate or count asked for,
        else the config's, else DEFAULT_FPS."""
        if fps is None and num_frames is None:
            if self.do_sample_frames and (self.fps is not None or self.num_frames is not None):
                fps, num_frames = (self.fps, None) if self.num_frames is None else (None, self.num_frames)
            else:
                fps = DEFAULT_FPS
        return dict(fps=fps, num_frames=num_frames, temporal_patch_size=self.temporal_patch_size,
                    min_frames=self.min_frames, max_frames=self.max_frames)

    def load(self, data, fps: Optional[float] = None, num_frames: Optional[int] = None, **limits):
        """A video file's (bytes or path) sampled frames as a ``forgegrad.data.video.Video`` (``limits``: load_video's
        max_decoded_frames, max_frame_pixels)."""
        from ...data.video import load_video
        return load_video(data, **self.sampling(fps, num_frames), **limits)

    def grid(self, frames: int, height: int, width: int) -> tuple:
        """The (groups, rows, columns) of patches ``frames`` frames of height x width become (their tokens: the
        product / merge_size ** 2), without making them."""
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        h, w = height, width
        if self.do_resize:
            top = self.max_pixels
            if self.cap_pixels_per_frame:  # qwen-vl-utils' bound on the whole video
                total = int(self.max_video_tokens * p * m * p * m * 0.9)
                top = max(min(top, total * t // frames), int(self.min_pixels * 1.05))
            h, w = smart_resize(height, width, p * m, self.min_pixels, top)
        return -(-frames // t), h // p, w // p

    def _frames(self, video, i: int) -> List[np.ndarray]:
        from ...data.video import Video
        if isinstance(video, Video):  # decoded and sampled by load: as it is
            return [self._array(f, i) for f in video.frames]
        if isinstance(video, np.ndarray) and video.ndim == 4:
            frames = list(video)
        elif isinstance(video, (list, tuple)):
            frames = list(video)
        else:
            raise TypeError(f"{_WHO}: videos[{i}] must be a (frames, H, W, C) uint8 array or a list of frames, got "
                            f"{type(video).__name__}{getattr(video, 'shape', '')}")
        if not frames:
            raise ValueError(f"{_WHO}: videos[{i}] has no frames")
        frames = [self._array(f, i) for f in frames]
        if len({f.shape for f in frames}) != 1:
            raise ValueError(f"{_WHO}: videos[{i}]'s frames must all have one size, got "
                             f"{sorted({f.shape for f in frames})}")
        if self.do_sample_frames and self.num_frames is not None:
            t = self.temporal_patch_size
            n = round(int(self.num_frames) / t) * t
            if not 0 < n <= len(frames):
                raise ValueError(f"{_WHO}: num_frames {self.num_frames} (rounded to {n}) must be in 1..{len(frames)} "
                                 f"(the frames of videos[{i}])")
            frames = [frames[k] for k in np.arange(0, len(frames), len(frames) / n).astype(np.int32)]
        return frames

    def video_patches(self, video, i: int = 0):
        """One video's (groups * rows * columns, C * T * P * P) float32 patches and its (groups, rows, columns)."""
        frames = self._frames(video, i)
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        if self.do_resize:
            _, h, w = self.grid(len(frames), frames[0].shape[0], frames[0].shape[1])
            h, w = h * p, w * p
            if (h, w) != frames[0].shape[:2]:
                frames = [resize_uint8(f, h, w, resample=self.resample, use_pillow=self.use_pillow) for f in frames]
        H, W = frames[0].shape[:2]
        if H % (p * m) or W % (p * m):
            raise ValueError(f"{_WHO}: videos[{i}] is {H}x{W}: without do_resize its sides must be multiples of "
                             f"patch_size * merge_size ({p * m})")
        x = np.stack([self.to_float(f) for f in frames])  # (F, C, H, W)
        if len(x) % t:  # the last frame repeated, as transformers pads
            x = np.concatenate([x, np.repeat(x[-1:], t - len(x) % t, axis=0)])
        C, gt, gh, gw = x.shape[1], len(x) // t, H // p, W // p
        x = x.reshape(gt, t, C, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return np.ascontiguousarray(x.reshape(gt * gh * gw, C * t * p * p), np.float32), (gt, gh, gw)

    def __call__(self, videos, fps: Union[None, float, Sequence[float]] = None) -> Dict[str, np.ndarray]:
        from ...data.video import Video
        single = (isinstance(videos, np.ndarray) and videos.ndim == 4) or isinstance(videos, Video)
        batch = [videos] if single else list(videos) if isinstance(videos, (list, tuple)) else [videos]
        if not batch:
            raise ValueError(f"{_WHO}: videos must hold at least one video")
        done = [self.video_patches(v, i) for i, v in enumerate(batch)]
        out = {"pixel_values_videos": np.concatenate([x for x, _ in done]),
               "video_grid_thw": np.array([grid for _, grid in done], np.int64)}
        if fps is not None:
            rates = list(fps) if isinstance(fps, (list, tuple, np.ndarray)) else [fps] * len(batch)
            if len(rates) != len(batch) or any(isinstance(r, bool) or not isinstance(r, (int, float, np.floating))
                                                or not r > 0 for r in rates):
                raise ValueError(f"{_WHO}: fps must be a positive number or one per video (the frames per second "
                                 f"given), got {fps!r}")
            out["second_per_grid_ts"] = np.array([self.temporal_patch_size / r for r in rates], np.float64)
        return out


def load_video_processor(path_or_dir, use_pillow=None) -> Qwen2VLVideoProcessor:
    """A Qwen2-VL checkpoint's video processor: its settings from processor_config.json's "video_processor", else
    video_preprocessor_config.json, else preprocessor_config.json (transformers' order), or ``path_or_dir`` itself
    when it is such a file."""
    from .qwen2_vl_processing import settings
    path = os.fspath(path_or_dir)
    cfg = None
    if os.path.isfile(path):
        files = [path]
    else:
        files = [os.path.join(path, n) for n in ("processor_config.json", "video_preprocessor_config.json",
                                                 "preprocessor_config.json")]
    for file in files:
        if not os.path.isfile(file):
            continue
        try:
            with open(file, encoding="utf-8") as f:
                got = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"load_video_processor: {file!r} is not valid JSON: {e}") from None
        if not isinstance(got, dict):
            raise ValueError(f"load_video_processor: {file!r} must hold a JSON object")
        if os.path.basename(file) == "processor_config.json" and len(files) > 1:
            got = got.get("video_processor")
            if not isinstance(got, dict):
                continue
        cfg = got
        break
    if cfg is None:
        raise FileNotFoundError(f"load_video_processor: no video_preprocessor_config.json or preprocessor_config.json "
                                f"at {path!r}")
    return Qwen2VLVideoProcessor(use_pillow=use_pillow, **settings(cfg),
                                 **{k: cfg[k] for k in _VIDEO_KEYS if cfg.get(k) is not None})
