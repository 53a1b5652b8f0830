"""Video files to the RGB frames a video-language model reads: decoded with PyAV (FFmpeg), frames sampled as
transformers' Qwen2-VL video processor samples them.

    video = load_video(data, fps=2.0)             # a few frames per second of the file (Qwen2-VL's sample_frames)
    video.frames                                  # (n, H, W, 3) uint8 RGB
    video.indices, video.total_frames, video.fps  # which frames of the file, how many it has, its frame rate
    video.sampled_fps                             # n / total_frames * fps: Qwen2.5-VL's second_per_grid_ts reads it

    f = VideoFile(data)                           # the container's header first (sizes checked before decoding)
    idx = sample_frame_indices(f.total_frames, f.fps, fps=2.0)
    frames = f.frames(idx)                        # or f.sample(fps=2.0): a Video

``data`` is a file's bytes (or a path). The container is recognised by its first bytes before FFmpeg sees anything,
and FFmpeg is told which demuxer to use (no probing): MP4 / MOV / 3GP, WebM / Matroska and AVI are taken; anything
else is refused with ``UnsupportedVideoFormat`` (a ValueError) saying what it is and what is accepted, so a playlist
or concat script (whose demuxers open other files or URLs) never reaches FFmpeg. The first video stream is decoded;
its frame count (the container's, else its packets counted), frame rate (``average_rate``, as transformers' PyAV
reader takes it, else FFmpeg's guess) and size are checked against ``max_decoded_frames`` and ``max_frame_pixels``
before anything is decoded: a few compressed bytes can declare hours of 8K video. Every frame up to the last one
sampled is decoded (a compressed frame needs the ones before it); only the sampled ones are converted to RGB
(FFmpeg's swscale, ``to_ndarray(format="rgb24")`` as transformers' reader), each at the stream's declared size (a
stream that changes size mid-way is scaled back to it, so the frames stack). A file that decodes to fewer frames than
its header declares is sampled again from the frames it has (one more decoding pass). FFmpeg's errors become
ValueErrors naming the container.

``sample_frame_indices`` is transformers' ``Qwen2VLVideoProcessor.sample_frames``: ``num_frames`` rounded to a
multiple of ``temporal_patch_size``, or ``fps`` frames per second of the file (total / file fps * fps, kept within
[min_frames, max_frames] and the file's frames, floored to a multiple of temporal_patch_size), taken uniformly
(``arange(0, total, total / n)`` truncated, torch's float32 values); neither: every frame. A video too short for one
group of ``temporal_patch_size`` frames keeps all its frames (transformers divides by zero there).

PyAV is an optional dependency (``pip install "forgegrad[video]"``: its wheels bundle FFmpeg); without it the loader
raises an ImportError that says so.
"""
from __future__ import annotations

import io
import math
import numbers
import os
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np

__all__ = ["load_video", "VideoFile", "Video", "sample_frame_indices", "sniff_video_format", "UnsupportedVideoFormat",
           "ACCEPTED", "MAX_DECODED_FRAMES", "MAX_FRAME_PIXELS"]

ACCEPTED = "MP4 / MOV / 3GP, WebM / Matroska, AVI (any codec the PyAV wheel's FFmpeg decodes: H.264, VP9, AV1, ...)"
MAX_DECODED_FRAMES = 1 << 15  # frames a file may declare (18 minutes at 30 fps): each sampled one needs those before
MAX_FRAME_PIXELS = 4096 * 4096  # a frame's pixels (4K UHD is 8.3 million)
_INSTALL = 'pip install "forgegrad[video]"'


class UnsupportedVideoFormat(ValueError):
    """The bytes are not a video container this loader decodes."""


def sniff_video_format(data: bytes) -> str:
    """(FFmpeg's demuxer, a name) for the container the first bytes announce: "mov" (MP4 / MOV / 3GP),
    "matroska" (WebM / Matroska), "avi"; "" if none of them."""
    head = bytes(data[:12])
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):  # an ISO-BMFF / QuickTime box
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return ""


def _describe(data: bytes) -> str:
    """What bytes that are no accepted container look like (for the error)."""
    from .audio import sniff_format
    kind = sniff_format(data)
    if kind != "unknown":
        return f"{kind} audio"
    for magic, name in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
                        (b"#EXTM3U", "an HLS playlist"), (b"ffconcat", "an FFmpeg concat script"),
                        (b"\x47", "an MPEG transport stream")):
        if data.startswith(magic):
            return name
    return f"not a recognised container ({len(data)} bytes)" if len(data) >= 12 else \
        f"{len(data)} bytes, too short for any video header"


def _av():
    try:
        import av
    except ImportError:
        raise ImportError(f"decoding video files needs PyAV (FFmpeg's bindings): {_INSTALL}") from None
    return av


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _positive_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def sample_frame_indices(total_frames: int, video_fps: Optional[float], fps: Optional[float] = None,
                         num_frames: Optional[int] = None, temporal_patch_size: int = 2, min_frames: int = 4,
                         max_frames: int = 768) -> np.ndarray:
    """The frames (int64 indices into the file's ``total_frames``) transformers' Qwen2-VL video processor samples;
    see the module's docstring."""
    total = _positive_int(total_frames, "total_frames")
    t = _positive_int(temporal_patch_size, "temporal_patch_size")
    if fps is not None and num_frames is not None:
        raise ValueError("num_frames and fps are exclusive: give one (or neither, for every frame)")
    if num_frames is not None:
        n = round(_positive_int(num_frames, "num_frames") / t) * t
    elif fps is not None:
        fps = _positive_number(fps, "fps")
        if video_fps is None:
            raise ValueError("sampling by fps needs the video's frame rate, which the file does not give; sample "
                             "num_frames instead")
        top = math.floor(min(_positive_int(max_frames, "max_frames"), total) / t) * t
        n = total / _positive_number(video_fps, "video_fps") * fps
        n = math.floor(min(max(n, _positive_int(min_frames, "min_frames")), top, total) / t) * t
    else:
        return np.arange(total, dtype=np.int64)
    if n > total:
        raise ValueError(f"num_frames {num_frames} (rounded to a multiple of {t}: {n}) is more than the video's "
                         f"{total} frames")
    if n < 1:  # shorter than one frame group
        return np.arange(total, dtype=np.int64)
    step = total / n  # torch.arange(0, total, step).int(): values in double, stored as float32, truncated
    count = math.ceil(total / step)
    return (np.arange(count, dtype=np.float64) * step).astype(np.float32).astype(np.int64)


class Video(NamedTuple):
    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    indices: np.ndarray  # (n,) int64: the frames of the file they are
    total_frames: int
    fps: Optional[float]  # the file's frame rate (None: it gives none; sampled_fps then says 24, as transformers)

    @property
    def sampled_fps(self) -> float:
        """Frames kept per second of video (transformers' VideoMetadata.sampled_fps)."""
        return len(self.indices) / self.total_frames * self.fps if self.fps else 24.0


class VideoFile:
    """An opened video container: its header's ``total_frames``, ``fps``, ``width``, ``height``, ``format``
    checked; ``frames(indices)`` decodes. See the module's docstring."""

    def __init__(self, data: Union[bytes, bytearray, memoryview, str, os.PathLike],
                 max_decoded_frames: int = MAX_DECODED_FRAMES, max_frame_pixels: int = MAX_FRAME_PIXELS):
        if isinstance(data, (str, os.PathLike)):
            with open(data, "rb") as f:
                data = f.read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"a video must be a file's bytes or its path, got {type(data).__name__}")
        self.data = bytes(data)
        self.max_decoded_frames = _positive_int(max_decoded_frames, "max_decoded_frames")
        self.format = sniff_video_format(self.data)
        if not self.format:
            raise UnsupportedVideoFormat(f"the file is {_describe(self.data)}, not a video container decoded here; "
                                         f"accepted: {ACCEPTED}")
        self._av = _av()
        self.name = {"mov": "MP4/MOV", "matroska": "WebM/Matroska", "avi": "AVI"}[self.format]
        with self._open() as container:
            stream = self._stream(container)
            self.width, self.height = int(stream.codec_context.width), int(stream.codec_context.height)
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else None
            total = int(stream.frames or 0)
            if total <= 0:  # (Matroska does not say): its packets counted, nothing decoded
                total = self._guard(lambda: sum(1 for p in container.demux(stream) if p.size))
        if self.width < 1 or self.height < 1:
            raise ValueError(f"{self.name}: the video stream declares a {self.width} x {self.height} frame")
        if self.width * self.height > max_frame_pixels:
            raise ValueError(f"{self.name}: the frames are {self.width} x {self.height}, more than the "
                             f"{max_frame_pixels} pixels decoded at most")
        if total < 1:
            raise ValueError(f"{self.name}: the video stream holds no frames")
        if total > self.max_decoded_frames:
            raise ValueError(f"{self.name}: the video holds {total} frames, more than the {self.max_decoded_frames} "
                             "decoded at most (max_decoded_frames)")
        self.total_frames = total

    def _open(self):
        av = self._av
        try:  # the demuxer named, no probing; enable_drefs off (the default): an MP4 never opens another file
            return av.open(io.BytesIO(self.data), format=self.format, options={"enable_drefs": "0"})
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise ValueError(f"{self.name}: FFmpeg could not open the file, which is corrupt, cut short or not "
                             f"{self.name} ({e})") from None

    def _stream(self, container):
        if not container.streams.video:
            raise ValueError(f"{self.name}: the file holds no video stream")
        return container.streams.video[0]

    def _guard(self, fn):
        av = self._av
        try:
            return fn()
        except (av.error.FFmpegError, ValueError, OSError, EOFError) as e:
            raise ValueError(f"{self.name}: FFmpeg could not decode the file, which is corrupt or cut short "
                             f"({type(e).__name__}: {e})") from None

    def _decode(self, wanted: Sequence[int]):
        """(the RGB frames at ``wanted`` (sorted) that decode, the number of frames decoded)."""
        keep, out, count = set(int(i) for i in wanted), [], 0
        last = max(keep)
        with self._open() as container:
            stream = self._stream(container)

            def run():
                nonlocal count
                for frame in container.decode(stream):
                    if count in keep:
                        out.append(frame.to_ndarray(format="rgb24", width=self.width, height=self.height))
                    count += 1
                    if count > last or count > self.max_decoded_frames:
                        break
            self._guard(run)
        return out, count

    def sample(self, fps=None, num_frames=None, temporal_patch_size=2, min_frames=4, max_frames=768) -> Video:
        """The ``Video`` of the frames ``sample_frame_indices`` picks (a file that decodes to fewer frames than its
        header says is sampled again from the frames it has)."""
        kw = dict(fps=fps, num_frames=num_frames, temporal_patch_size=temporal_patch_size, min_frames=min_frames,
                  max_frames=max_frames)
        idx = sample_frame_indices(self.total_frames, self.fps, **kw)
        out, count = self._decode(idx.tolist())
        if len(out) < len(idx):
            if count < 1:
                raise ValueError(f"{self.name}: no frame decodes (corrupt or cut short)")
            self.total_frames = count
            idx = sample_frame_indices(count, self.fps, **kw)
            out, count = self._decode(idx.tolist())
            if len(out) < len(idx):
                raise ValueError(f"{self.name}: the frames decode differently each time (corrupt)")
        return Video(np.stack(out), idx, self.total_frames, self.fps)

    def frames(self, indices) -> np.ndarray:
        """(len(indices), height, width, 3) uint8 RGB: the frames at ``indices`` (increasing, within total_frames)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if not len(idx) or idx[0] < 0 or idx[-1] >= self.total_frames or (np.diff(idx) <= 0).any():
            raise ValueError(f"indices must increase within the video's {self.total_frames} frames, got "
                             f"{idx.tolist()[:8]}")
        out, count = self._decode(idx.tolist())
        if len(out) < len(idx):
            raise ValueError(f"{self.name}: {count} frames decode of the {self.total_frames} the header declares "
                             f"(corrupt or cut short)")
        return np.stack(out)


def load_video(data, fps: Optional[float] = None, num_frames: Optional[int] = None, temporal_patch_size: int = 2,
               min_frames: int = 4, max_frames: int = 768, max_decoded_frames: int = MAX_DECODED_FRAMES,
               max_frame_pixels: int = MAX_FRAME_PIXELS) -> Video:
    """A video file's frames (``data``: its bytes or path), sampled by ``sample_frame_indices`` (``fps`` or
    ``num_frames``; neither: every frame), as a ``Video``. Raises ``UnsupportedVideoFormat`` for bytes that are no
    accepted container, ValueError for a broken file or one past the limits, ImportError without PyAV."""
    f = VideoFile(data, max_decoded_frames, max_frame_pixels)
    return f.sample(fps=fps, num_frames=num_frames, temporal_patch_size=temporal_patch_size, min_frames=min_frames,
                    max_frames=max_frames)
