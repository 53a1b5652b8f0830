"""Qwen2-VL's and Qwen2.5-VL's video preprocessing (transformers' ``Qwen2VLVideoProcessor``) in numpy: each video's
frames (optionally a uniform sample of them) resized together to ``smart_resize``'s size for the first frame
(sides multiples of patch_size * merge_size, pixels within the video's [shortest_edge, longest_edge] of ``size``:
128 x 28 x 28 and 768 x 28 x 28 by default; ``cap_pixels_per_frame`` bounds the whole video's pixels as
qwen-vl-utils does), rescaled and normalized as the image processor, the last frame repeated up to a multiple of
temporal_patch_size, then cut into patches: per group of temporal_patch_size frames, the merge blocks row-major,
each patch flattened in (channel, frame, row, column) order: the layout the model's vision tower reads.

``processor(videos, fps=None) -> {"pixel_values_videos": (total patches, C * T * P * P) float32, "video_grid_thw":
(num_videos, 3) int64}``, with ``second_per_grid_ts`` (temporal_patch_size / fps per video: Qwen2.5-VL's temporal
positions) when ``fps`` (the frames per second of the frames given) is. A video is a (frames, H, W, C) uint8
array or a list of frames (arrays or PIL images). Resizing is Pillow's filter (transformers resizes video frames with
torchvision's antialiased one: within a few uint8 levels of it); frames already at the target size are exact.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .image_processing import resize_uint8
from .qwen2_vl_processing import Qwen2VLImageProcessor, smart_resize

__all__ = ["Qwen2VLVideoProcessor"]

_WHO = "Qwen2VLVideoProcessor"


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
        super().__init__(use_pillow=use_pillow, size=size, **config)
        self.kind = _WHO

    def __repr__(self) -> str:
        return (f"{_WHO}(min_pixels={self.min_pixels}, max_pixels={self.max_pixels}, patch_size={self.patch_size}, "
                f"temporal_patch_size={self.temporal_patch_size}, merge_size={self.merge_size})")

    def _frames(self, video, i: int) -> List[np.ndarray]:
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
            top = self.max_pixels
            if self.cap_pixels_per_frame:  # qwen-vl-utils' bound on the whole video
                total = int(self.max_video_tokens * p * m * p * m * 0.9)
                top = max(min(top, total * t // len(frames)), int(self.min_pixels * 1.05))
            h, w = smart_resize(frames[0].shape[0], frames[0].shape[1], p * m, self.min_pixels, top)
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

    def __call__(self, videos, fps: Optional[float] = None) -> Dict[str, np.ndarray]:
        single = isinstance(videos, np.ndarray) and videos.ndim == 4
        batch = [videos] if single else list(videos) if isinstance(videos, (list, tuple)) else [videos]
        if not batch:
            raise ValueError(f"{_WHO}: videos must hold at least one video")
        done = [self.video_patches(v, i) for i, v in enumerate(batch)]
        out = {"pixel_values_videos": np.concatenate([x for x, _ in done]),
               "video_grid_thw": np.array([grid for _, grid in done], np.int64)}
        if fps is not None:
            if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
                raise ValueError(f"{_WHO}: fps must be a positive number (the frames per second given), got {fps!r}")
            out["second_per_grid_ts"] = np.full(len(batch), self.temporal_patch_size / fps)
        return out
