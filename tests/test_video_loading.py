"""forgegrad.data.video: video files decoded with PyAV, frames sampled as transformers' Qwen2-VL video processor samples
them. The sampling against transformers' own ``Qwen2VLVideoProcessor.sample_frames`` (its source run as it is: the
class needs torchvision, which the test extra leaves out), the frames against transformers' ``load_video`` with its
PyAV backend at the same indices (MP4, WebM without a frame count, AVI), the checkpoint's video processor settings
read in transformers' order, and clear errors (not a container, an HLS playlist, a broken file, past the limits, no
PyAV)."""
import ast
import json
import math
import types

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV decodes the video files: pip install 'forgegrad[video]'")

from forgegrad.data.video import (UnsupportedVideoFormat, VideoFile, load_video,  # noqa: E402
                                  sample_frame_indices)

from video_helpers import clip, encode  # noqa: E402


def _transformers_sample_frames():
    """transformers' Qwen2VLVideoProcessor.sample_frames, compiled from its source (the module imports torchvision)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import os
    path = os.path.join(os.path.dirname(transformers.__file__), "models", "qwen2_vl", "video_processing_qwen2_vl.py")
    tree = ast.parse(open(path, encoding="utf-8").read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Qwen2VLVideoProcessor")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "sample_frames")
    fn.decorator_list = []
    scope = {"math": math, "torch": torch, "VideoMetadata": object, "__builtins__": __builtins__}
    exec(compile(ast.Module([fn], []), path, "exec"), scope)
    return scope["sample_frames"]


def test_sample_frame_indices_equal_transformers_qwen2_vl():
    ref = _transformers_sample_frames()
    me = types.SimpleNamespace(num_frames=None, fps=None, temporal_patch_size=2, min_frames=4, max_frames=768)
    cases = [(13, 10.0, 4.0, None), (300, 30.0, 2.0, None), (301, 29.97, 2.0, None), (100, 24.0, 1.5, None),
             (7, 30.0, 2.0, None), (3, 25.0, 2.0, None), (1000, 30.0, 0.1, None), (2000, 2.0, 2.0, None),
             (97, 23.976, 3.3, None), (40, 10.0, None, 9), (40, 10.0, None, 40), (33, 10.0, None, 7)]
    for total, video_fps, fps, n in cases:
        meta = types.SimpleNamespace(total_num_frames=total, fps=video_fps)
        want = ref(me, meta, fps=fps, num_frames=n).numpy()
        got = sample_frame_indices(total, video_fps, fps=fps, num_frames=n)
        np.testing.assert_array_equal(got, want, err_msg=str((total, video_fps, fps, n)))
    # neither: every frame (transformers samples none without do_sample_frames)
    assert sample_frame_indices(5, 30.0).tolist() == [0, 1, 2, 3, 4]
    # a one-frame video keeps its frame (transformers divides by zero), and the bad arguments
    assert sample_frame_indices(1, 30.0, fps=2.0).tolist() == [0]
    with pytest.raises(ValueError, match="num_frames and fps are exclusive"):
        sample_frame_indices(10, 30.0, fps=2.0, num_frames=4)
    with pytest.raises(ValueError, match="more than the video's 10 frames"):
        sample_frame_indices(10, 30.0, num_frames=12)
    with pytest.raises(ValueError, match="fps must be a positive number"):
        sample_frame_indices(10, 30.0, fps=0)
    with pytest.raises(ValueError, match="needs the video's frame rate"):
        sample_frame_indices(10, None, fps=2.0)


@pytest.mark.parametrize("container,codec", [("mp4", "mpeg4"), ("webm", "libvpx-vp9"), ("avi", "mpeg4")])
def test_frames_equal_transformers_load_video_pyav(tmp_path, container, codec):
    """The frames at Qwen2-VL's sampled indices equal transformers' PyAV reader's (given the same indices) bit for
    bit; the file's frame count (WebM: counted from its packets), rate, and the sampled rate."""
    pytest.importorskip("transformers")
    from transformers.video_utils import load_video as hf_load_video
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV wheel has no {codec} encoder")
    data = encode(clip(0, 13, (40, 56)), fps=10, container=container, codec=codec)
    path = tmp_path / f"clip.{container}"
    path.write_bytes(data)
    video = load_video(data, fps=4.0)
    assert video.indices.tolist() == [0, 3, 6, 9] and video.total_frames == 13 and video.fps == 10.0
    assert video.frames.shape == (4, 40, 56, 3) and video.frames.dtype == np.uint8
    assert video.sampled_fps == pytest.approx(4 / 13 * 10)
    want, meta = hf_load_video(str(path), backend="pyav", sample_indices_fn=lambda metadata, **_: video.indices)
    np.testing.assert_array_equal(video.frames, want)
    if container == "mp4":  # every frame, from a path too; the frames are the clip's, within the codec's loss
        every = load_video(str(path))
        np.testing.assert_array_equal(every.frames, hf_load_video(str(path), backend="pyav")[0])
        assert np.abs(every.frames.astype(int) - clip(0, 13, (40, 56))).mean() < 8
    assert VideoFile(data).total_frames == meta.total_num_frames or container == "webm"


def test_video_processor_settings_and_sampling(tmp_path):
    """load_video_processor reads transformers' files in its order; load samples at the config's rate or 2 per
    second, and the processor takes the decoded Video as it is (no second sampling) with a rate per video."""
    from forgegrad.models.hf.qwen2_vl_video import DEFAULT_FPS, load_video_processor
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 784, "max_pixels": 28 * 28 * 4}))
    assert load_video_processor(tmp_path).max_pixels == 28 * 28 * 4  # the image's, as transformers falls back
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Qwen2VLVideoProcessor", "size": {"shortest_edge": 784, "longest_edge": 1568},
         "do_sample_frames": True, "num_frames": 6}))
    processor = load_video_processor(tmp_path)
    assert processor.max_pixels == 1568 and processor.num_frames == 6
    (tmp_path / "processor_config.json").write_text(json.dumps({"video_processor": {
        "size": {"shortest_edge": 784, "longest_edge": 3136}, "do_sample_frames": True, "fps": 5}}))
    nested = load_video_processor(tmp_path)
    assert nested.max_pixels == 3136 and nested.fps == 5 and nested.num_frames is None
    data = encode(clip(1, 20, (28, 56)), fps=10)
    assert processor.load(data).indices.tolist() == [0, 3, 6, 10, 13, 16]  # num_frames 6
    assert nested.load(data).indices.tolist() == list(range(0, 20, 2))  # 5 a second of 10
    assert nested.load(data, fps=DEFAULT_FPS).indices.tolist() == [0, 5, 10, 15]  # 2 a second: min_frames 4
    video = processor.load(data)
    out = processor([video, video], fps=[video.sampled_fps, 2.5])
    assert out["video_grid_thw"].tolist() == [[3, 2, 4], [3, 2, 4]]
    np.testing.assert_allclose(out["second_per_grid_ts"], [2 / 3, 0.8])
    np.testing.assert_array_equal(out["pixel_values_videos"][:24], processor(video.frames)["pixel_values_videos"][:24])


def test_clear_errors(tmp_path, monkeypatch):
    data = encode(clip(2, 6), fps=10)
    with pytest.raises(UnsupportedVideoFormat, match="a PNG image, not a video container.*accepted: MP4"):
        load_video(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(UnsupportedVideoFormat, match="an HLS playlist"):
        load_video(b"#EXTM3U\n#EXT-X-VERSION:3\nfile:///etc/passwd\n")
    with pytest.raises(UnsupportedVideoFormat, match="too short for any video header"):
        load_video(b"abc")
    with pytest.raises(ValueError, match="MP4/MOV: FFmpeg could not open the file"):
        load_video(data[:40])
    with pytest.raises(ValueError, match="MP4/MOV: FFmpeg could not"):
        load_video(data[:len(data) // 2])
    with pytest.raises(ValueError, match="holds 6 frames, more than the 5 decoded at most"):
        load_video(data, max_decoded_frames=5)
    with pytest.raises(ValueError, match="the frames are 64 x 48, more than the 1000 pixels"):
        load_video(data, max_frame_pixels=1000)
    with pytest.raises(TypeError, match="a file's bytes or its path"):
        load_video(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="indices must increase"):
        VideoFile(data).frames([3, 1])
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # PyAV not installed
    with pytest.raises(ImportError, match="needs PyAV .*pip install \"forgegrad\\[video\\]\""):
        load_video(data)


def test_a_file_cut_short_is_sampled_from_the_frames_it_has(tmp_path):
    """An MP4 with its index first (faststart) cut at 90%: its header says 30 frames, 25 decode; the frames are
    sampled again from those 25 (transformers' reader would return fewer frames than it sampled)."""
    path = str(tmp_path / "faststart.mp4")
    with av.open(path, "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for f in clip(4, 30):
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = open(path, "rb").read()
    cut = data[:int(len(data) * 0.9)]
    assert VideoFile(cut).total_frames == 30
    video = load_video(cut, fps=10.0)
    assert video.total_frames < 30 and video.indices.tolist() == list(range(len(video.indices)))
    np.testing.assert_array_equal(video.frames, load_video(data, fps=10.0).frames[:len(video.indices)])
    with pytest.raises(ValueError, match="frames decode of the 30 the header declares"):
        VideoFile(cut).frames([0, 29])
