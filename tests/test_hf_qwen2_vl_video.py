"""Qwen2-VL and Qwen2.5-VL with videos, on checkpoints transformers wrote: the logits of a prompt holding an image and
a video (Qwen2.5-VL's temporal positions stepped by tokens_per_second x second_per_grid_ts, truncated) and of a
left-padded batch, greedy and beam generate with a video against transformers' generate; the video processor against
the image processor (a video of one repeated frame is an image) and transformers' patch layout; clear errors."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import generate
from forgegrad.models.hf.qwen2_vl_processing import Qwen2VLImageProcessor
from forgegrad.models.hf.qwen2_vl_video import Qwen2VLVideoProcessor

import test_hf_qwen2_vl as QV

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VID = 113
# an image of 4 x 6 patches (6 tokens), then a video of 3 frame groups of 4 x 4 patches (12 tokens)
IDS = np.array([[5, QV.VS] + [QV.IMG] * 6 + [QV.VE, 7, QV.VS] + [VID] * 12 + [QV.VE, 9, 3]])
IMAGE_GRID, VIDEO_GRID = np.array([[1, 4, 6]]), np.array([[3, 4, 4]])
IMAGE = np.random.RandomState(0).randn(24, QV.PIXELS.shape[1]).astype(np.float32)
VIDEO = np.random.RandomState(1).randn(48, QV.PIXELS.shape[1]).astype(np.float32)
V2_5 = dict(depth=2, num_heads=4, hidden_size=32, out_hidden_size=48, intermediate_size=40, window_size=16,
            fullatt_block_indexes=[1], patch_size=4, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
            initializer_range=0.2, tokens_per_second=3)


def _checkpoint(tmp_path, v2_5):
    torch.manual_seed(0)
    cls, config = ((transformers.Qwen2_5_VLForConditionalGeneration, transformers.Qwen2_5_VLConfig) if v2_5 else
                   (transformers.Qwen2VLForConditionalGeneration, transformers.Qwen2VLConfig))
    hf = cls(config(text_config=QV.TEXT, vision_config=V2_5 if v2_5 else QV.VISION, image_token_id=QV.IMG,
                    video_token_id=VID, vision_start_token_id=QV.VS, vision_end_token_id=QV.VE)).eval()
    hf.save_pretrained(tmp_path)
    return from_pretrained(tmp_path), hf


def _hf_kw(ids, image=IMAGE, image_grid=IMAGE_GRID, video=VIDEO, video_grid=VIDEO_GRID, seconds=None):
    kw = dict(pixel_values_videos=torch.tensor(video), video_grid_thw=torch.tensor(video_grid),
              mm_token_type_ids=torch.tensor(np.where(ids == QV.IMG, 1, np.where(ids == VID, 2, 0))))
    if image is not None:
        kw.update(pixel_values=torch.tensor(image), image_grid_thw=torch.tensor(image_grid))
    if seconds is not None:
        kw["second_per_grid_ts"] = torch.tensor(seconds)
    return kw


@pytest.mark.parametrize("v2_5", [False, True], ids=["qwen2_vl", "qwen2_5_vl"])
def test_logits_with_an_image_and_a_video_equal_transformers(tmp_path, v2_5):
    model, hf = _checkpoint(tmp_path, v2_5)
    seconds = np.array([0.5]) if v2_5 else None  # a step of 1.5 positions per frame group: 0, 1, 3
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(IDS), **_hf_kw(IDS, seconds=seconds)).logits.numpy()
    extra = {} if seconds is None else {"second_per_grid_ts": seconds}
    got = model(IDS, pixel_values=IMAGE, image_grid_thw=IMAGE_GRID, pixel_values_videos=VIDEO,
                video_grid_thw=VIDEO_GRID, **extra).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    if v2_5:  # the step matters: the default (tokens_per_second x 1) gives other logits after the video
        default = model(IDS, pixel_values=IMAGE, image_grid_thw=IMAGE_GRID, pixel_values_videos=VIDEO,
                        video_grid_thw=VIDEO_GRID).numpy()
        with torch.no_grad():
            want_default = hf(input_ids=torch.tensor(IDS), **_hf_kw(IDS)).logits.numpy()
        np.testing.assert_allclose(default, want_default, rtol=1e-4, atol=1e-4)
        assert np.abs(default[0, 22:] - want[0, 22:]).max() > 1e-3


def test_generate_with_videos_greedy_and_beams_equals_transformers(tmp_path):
    """A left-padded batch: a prompt with the video alone, and one with a second (2 x 4 patches, 2 groups) video."""
    model, hf = _checkpoint(tmp_path, False)
    first = [5, QV.VS] + [VID] * 12 + [QV.VE, 7]
    second = [4, QV.VS] + [VID] * 4 + [QV.VE, 9]
    T = len(first)
    ids = np.array([first, [0] * (T - len(second)) + second])
    mask = np.array([[1] * T, [0] * (T - len(second)) + [1] * len(second)])
    grid = np.array([[3, 4, 4], [2, 2, 4]])
    video = np.random.RandomState(2).randn(64, QV.PIXELS.shape[1]).astype(np.float32)
    for kw in (dict(), dict(num_beams=3, num_return_sequences=2)):
        with torch.no_grad():
            want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                               **_hf_kw(ids, image=None, video=video, video_grid=grid), max_new_tokens=6,
                               do_sample=False, **kw).numpy()
        got = generate(model, ids, attention_mask=mask, pixel_values_videos=video, video_grid_thw=grid,
                       max_new_tokens=6, do_sample=False, **kw)
        np.testing.assert_array_equal(got, want)


def test_video_processor_layout():
    rng = np.random.default_rng(0)
    size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16}
    videos = Qwen2VLVideoProcessor(size=size)
    frame = rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)
    # a video of temporal_patch_size copies of a frame is that frame as an image (the image repeats its frame)
    image = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 16)(frame)
    out = videos(np.stack([frame, frame]))
    np.testing.assert_array_equal(out["video_grid_thw"], image["image_grid_thw"])
    np.testing.assert_array_equal(out["pixel_values_videos"], image["pixel_values"])
    # three frames: the last repeated to 4, then transformers' patchify (its view and permute)
    clip = rng.integers(0, 256, (3, 56, 84, 3), dtype=np.uint8)
    out = videos([clip, list(clip[:2])], fps=4.0)
    x = torch.from_numpy(np.stack([videos.to_float(f) for f in clip]))[None]
    x = torch.cat([x, x[:, -1:]], 1)
    p, m, t = 14, 2, 2
    gt, gh, gw = 2, 56 // p, 84 // p
    want = x.view(1, gt, t, 3, gh // m, m, p, gw // m, m, p).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    np.testing.assert_array_equal(out["video_grid_thw"], [[2, 4, 6], [1, 4, 6]])
    np.testing.assert_array_equal(out["pixel_values_videos"][:48], want.reshape(48, -1).numpy())
    np.testing.assert_array_equal(out["second_per_grid_ts"], [0.5, 0.5])
    # a frame not at a multiple of 28 is resized (Pillow's bicubic) to smart_resize's size
    odd = videos(rng.integers(0, 256, (2, 50, 90, 3), dtype=np.uint8))
    assert odd["video_grid_thw"].tolist() == [[1, 4, 6]]
    sampled = Qwen2VLVideoProcessor(size=size, do_sample_frames=True, num_frames=4)(
        rng.integers(0, 256, (8, 56, 56, 3), dtype=np.uint8))
    assert sampled["video_grid_thw"].tolist() == [[2, 4, 4]]


def test_bad_video_inputs_raise_clear_errors(tmp_path):
    model, _ = _checkpoint(tmp_path, False)
    with pytest.raises(ValueError, match="more video-token runs than video_grid_thw's 0 videos"):
        model(IDS, pixel_values=IMAGE, image_grid_thw=IMAGE_GRID)
    with pytest.raises(ValueError, match="video_grid_thw gives 32 patches but pixel_values_videos has 48 rows"):
        model(IDS, pixel_values=IMAGE, image_grid_thw=IMAGE_GRID, pixel_values_videos=VIDEO,
              video_grid_thw=np.array([[2, 4, 4]]))
    with pytest.raises(ValueError, match="pixel_values_videos need video_grid_thw"):
        model(IDS, pixel_values_videos=VIDEO)
    with pytest.raises(ValueError, match="were given without pixel_values_videos"):
        model(IDS, video_grid_thw=VIDEO_GRID)
    with pytest.raises(TypeError, match="second_per_grid_ts is Qwen2.5-VL's"):
        model(IDS, pixel_values=IMAGE, image_grid_thw=IMAGE_GRID, pixel_values_videos=VIDEO,
              video_grid_thw=VIDEO_GRID, second_per_grid_ts=[1.0])
    with pytest.raises(ValueError, match="the prompts hold 12 video tokens .* but the videos give 4"):
        generate(model, IDS, pixel_values=IMAGE, image_grid_thw=IMAGE_GRID, num_beams=2, max_new_tokens=2,
                 pixel_values_videos=VIDEO[:16], video_grid_thw=np.array([[1, 4, 4]]))
    videos = Qwen2VLVideoProcessor()
    with pytest.raises(ValueError, match="videos\\[0\\] has no frames"):
        videos([[]])
    with pytest.raises(ValueError, match="frames must all have one size"):
        videos([[np.zeros((28, 28, 3), np.uint8), np.zeros((56, 28, 3), np.uint8)]])
    with pytest.raises(TypeError, match="must be a \\(frames, H, W, C\\) uint8 array or a list of frames"):
        videos(["clip.mp4"])
    with pytest.raises(ValueError, match="fps must be a positive number"):
        videos(np.zeros((2, 28, 28, 3), np.uint8), fps=0)


def test_image_inputs_expand_video_pads_as_the_transformers_processor(tmp_path):
    """<|video_pad|> marks beside image ones: the ids of transformers' Qwen2VLProcessor (its video processor, which
    needs torchvision, replaced by forgegrad's, whose output it expands), the pixel values of both processors."""
    from hf_conformance import chat_tokenizer

    from forgegrad.models.hf import Qwen2VLForConditionalGeneration
    from forgegrad.models.hf.image_prompts import image_inputs

    ours = Qwen2VLVideoProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16})

    class Videos:  # transformers' processor calls its video processor with its own keyword arguments
        merge_size = ours.merge_size

        def __call__(self, videos, **_):
            return transformers.BatchFeature(ours(videos))

    class Processor(transformers.Qwen2VLProcessor):
        def check_argument_for_proper_class(self, name, arg):
            return None if name == "video_processor" else super().check_argument_for_proper_class(name, arg)

    tok = chat_tokenizer(None)
    marks = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    tok.add_special_tokens({"additional_special_tokens": marks})
    start, pad, end, video = tok.convert_tokens_to_ids(marks)
    images = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 20)
    processor = Processor(image_processor=images, tokenizer=tok, video_processor=Videos(), chat_template="")
    model = Qwen2VLForConditionalGeneration(dict(
        text_config={**QV.TEXT, "vocab_size": len(tok)}, vision_config=QV.VISION, image_token_id=pad,
        video_token_id=video, vision_start_token_id=start, vision_end_token_id=end))
    rs = np.random.RandomState(4)
    picture = rs.randint(0, 256, (50, 70, 3), dtype=np.uint8)
    clips = [rs.randint(0, 256, (3, 56, 84, 3), dtype=np.uint8), rs.randint(0, 256, (2, 50, 60, 3), dtype=np.uint8)]
    text = ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>then<|vision_start|><|image_pad|>"
            "<|vision_end|> and <|vision_start|><|video_pad|><|vision_end|><|im_end|>\n")
    want = processor(text=[text], images=[picture], videos=clips, return_tensors="np")
    images.save_pretrained(tmp_path)
    from forgegrad.models.hf import load_image_processor
    ids, extra = image_inputs(model, tok, text, [picture], load_image_processor(tmp_path), videos=clips,
                              video_processor=ours, fps=2.0)
    assert ids == want["input_ids"][0].tolist()
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"):
        np.testing.assert_array_equal(extra[key], want[key], err_msg=key)
    np.testing.assert_array_equal(extra["second_per_grid_ts"], [1.0, 1.0])
    with pytest.raises(ValueError, match="marks 2 videos .* but 1 were given"):
        image_inputs(model, tok, text, [picture], load_image_processor(tmp_path), videos=clips[:1],
                     video_processor=ours)
    with pytest.raises(ValueError, match="videos need a video_processor"):
        image_inputs(model, tok, text, [picture], load_image_processor(tmp_path), videos=clips)
