"""Qwen2-VL's and Qwen2.5-VL's videos on their ONNX graphs (onnx_image_text.py, onnx_qwen2_vl.py), on checkpoints
written by transformers itself: the videos' rows from the same vision graph at the video tokens, the host's M-RoPE
positions from rope_index with the videos' grids and temporal steps (Qwen2.5-VL's tokens_per_second, read from the
decoder's metadata, x second_per_grid_ts). The graphs give forgegrad's logits (which test_hf_qwen2_vl_video holds equal
to transformers') on a left-padded batch of an image and a video in one prompt and a video alone in the other, then
on a decode step; Qwen2.5-VL's seconds per frame group change them; greedy and beam decoding give generate's tokens;
bad input raises naming the argument. The exports skip onnxruntime's verification (the logits here check the
graphs) to keep the file cheap."""
import os
import shutil

import numpy as np
import pytest

from forgegrad.autograd import no_grad
from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_image_text, generate, generate_image_text_onnx, generate_onnx
from forgegrad.models.hf.onnx_image_text import ImageTextSessions
from hf_conformance import left_padded_positions

import test_hf_onnx_qwen2_vl as OQ

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
transformers.logging.set_verbosity_error()

VID = 113
# Qwen2.5-VL: 3 temporal positions per second (a step of 1.5 per frame group at 0.5 s, 4.5 at 1.5 s)
VISION = {"qwen2_vl": OQ.VISION["qwen2_vl"], "qwen2_5_vl": dict(OQ.VISION["qwen2_5_vl"], tokens_per_second=3)}
IMAGE_GRID = np.array([[1, 4, 6]])  # 6 tokens
VIDEO_GRID = np.array([[3, 4, 4], [2, 2, 4]])  # 12 tokens (3 frame groups), 4 tokens (2 groups)
SECONDS = np.array([0.5, 1.5])
IMAGE = np.random.RandomState(0).randn(24, OQ.PATCH).astype(np.float32)
VIDEO = np.random.RandomState(1).randn(64, OQ.PATCH).astype(np.float32)
FIRST = [5, OQ.VS] + [OQ.IMG] * 6 + [OQ.VE, 7, OQ.VS] + [VID] * 12 + [OQ.VE, 9, 3]  # an image, then a video
SECOND = [4, OQ.VS] + [VID] * 4 + [OQ.VE, 9]  # a video alone, left-padded
IDS = np.array([FIRST, [0] * (len(FIRST) - len(SECOND)) + SECOND])
MASK = (IDS != 0).astype(np.int64)


@pytest.fixture(scope="module", params=list(VISION))
def exported(request, tmp_path_factory):
    name = request.param
    path = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    cls, config = ((transformers.Qwen2VLForConditionalGeneration, transformers.Qwen2VLConfig) if name == "qwen2_vl"
                   else (transformers.Qwen2_5_VLForConditionalGeneration, transformers.Qwen2_5_VLConfig))
    cls(config(text_config=OQ.TEXT, vision_config=VISION[name], image_token_id=OQ.IMG, video_token_id=VID,
               vision_start_token_id=OQ.VS, vision_end_token_id=OQ.VE)).eval().save_pretrained(path)
    model = from_pretrained(path)
    export_image_text(model, path / "onnx", verify=False)
    return model, ImageTextSessions(path / "onnx"), path / "onnx"


def _media(model, seconds=SECONDS):
    kw = dict(pixel_values=IMAGE, image_grid_thw=IMAGE_GRID, pixel_values_videos=VIDEO, video_grid_thw=VIDEO_GRID)
    return dict(kw, second_per_grid_ts=seconds) if model.visual.v2_5 else kw


def test_graphs_give_forgegrads_logits_with_an_image_and_videos(exported):
    model, s, _ = exported
    media = _media(model)
    logits, present = s.prefill(IDS, MASK, **media)
    cache = model.new_cache(2, IDS.shape[1] + 1)
    with no_grad():
        want = model(IDS, MASK, left_padded_positions(MASK), cache=cache, **media).numpy()
    real = MASK == 1
    np.testing.assert_allclose(logits[real], want[real], rtol=1e-4, atol=1e-4)
    # a decode step: its text position plus the row's rope delta, which the video's positions set
    nxt = want[:, -1].argmax(-1)[:, None]
    mask2 = np.concatenate([MASK, np.ones((2, 1), np.int64)], 1)
    rope = s.positions(IDS, MASK, IMAGE_GRID, s.videos(VIDEO, VIDEO_GRID, media.get("second_per_grid_ts"), "t"), "t")
    got = s.decoder.run(None, s.decoder_feed(s.embed.run(None, {"input_ids": nxt})[0], mask2, None, present,
                                             rope.step()))[0]
    with no_grad():
        want2 = model(nxt, mask2, left_padded_positions(mask2)[:, -1:], cache=cache).numpy()
    np.testing.assert_allclose(got, want2, rtol=1e-4, atol=1e-4)
    if model.visual.v2_5:  # the seconds per frame group matter: the default (1 s) gives other logits after a video
        default = s.prefill(IDS, MASK, **_media(model, None))[0]
        with no_grad():
            want_default = model(IDS, MASK, left_padded_positions(MASK), **_media(model, None)).numpy()
        np.testing.assert_allclose(default[real], want_default[real], rtol=1e-4, atol=1e-4)
        assert np.abs(default[0, 22:] - logits[0, 22:]).max() > 1e-3


def test_greedy_and_beam_decoding_give_generates_tokens(exported):
    model, s, folder = exported
    media = _media(model)
    for kw in (dict(), dict(num_beams=3, num_return_sequences=2, length_penalty=0.5)):
        want = generate(model, IDS, attention_mask=MASK, max_new_tokens=5, do_sample=False, eos_token_id=None,
                        **media, **kw)
        got = generate_image_text_onnx(s, IDS, MASK, max_new_tokens=5, do_sample=False, eos_token_id=None, **media,
                                       **kw)
        np.testing.assert_array_equal(got, want)
    # generate_onnx given the folder, videos alone (the first prompt's image tokens dropped)
    ids = np.array([[0] * 9 + FIRST[9:], IDS[1]])
    mask = (ids != 0).astype(np.int64)
    videos = {k: v for k, v in media.items() if "image" not in k and k != "pixel_values"}
    np.testing.assert_array_equal(
        generate_onnx(folder, ids, mask, max_new_tokens=4, do_sample=False, eos_token_id=None, **videos),
        generate(model, ids, attention_mask=mask, max_new_tokens=4, do_sample=False, eos_token_id=None, **videos))


def test_bad_video_input_raises_naming_the_argument(exported, tmp_path):
    model, s, folder = exported
    kw = dict(max_new_tokens=2, pixel_values=IMAGE, image_grid_thw=IMAGE_GRID)
    with pytest.raises(ValueError, match="video_grid_thw gives 56 patches but pixel_values_videos has 64 rows"):
        generate_image_text_onnx(s, IDS, MASK, pixel_values_videos=VIDEO, video_grid_thw=np.array([[3, 4, 4],
                                                                                                    [1, 2, 4]]), **kw)
    with pytest.raises(ValueError, match="video_grid_thw: Qwen2-VL's pixel_values_videos need their grids"):
        generate_image_text_onnx(s, IDS, MASK, pixel_values_videos=VIDEO, **kw)
    with pytest.raises(ValueError, match="video_grid_thw given without pixel_values_videos"):
        generate_image_text_onnx(s, IDS, MASK, video_grid_thw=VIDEO_GRID, **kw)
    with pytest.raises(ValueError, match="pixel_values_videos must be the processor's flattened patches"):
        generate_image_text_onnx(s, IDS, MASK, pixel_values_videos=VIDEO[:, :-1], video_grid_thw=VIDEO_GRID, **kw)
    with pytest.raises(ValueError, match="more video-token runs than video_grid_thw's 0 videos"):
        generate_image_text_onnx(s, IDS, MASK, **kw)
    with pytest.raises(ValueError, match="video 0's run of video tokens has 12 tokens but its video_grid_thw"):
        generate_image_text_onnx(s, IDS, MASK, pixel_values_videos=VIDEO, video_grid_thw=VIDEO_GRID[::-1].copy(),
                                 **kw)
    if model.visual.v2_5:
        with pytest.raises(ValueError, match="second_per_grid_ts must be 2 non-negative numbers"):
            generate_image_text_onnx(s, IDS, MASK, pixel_values_videos=VIDEO, video_grid_thw=VIDEO_GRID,
                                     second_per_grid_ts=[1.0], **kw)
        return
    with pytest.raises(TypeError, match="second_per_grid_ts is Qwen2.5-VL's"):
        generate_image_text_onnx(s, IDS, MASK, pixel_values_videos=VIDEO, video_grid_thw=VIDEO_GRID,
                                 second_per_grid_ts=[1.0, 1.0], **kw)
    # a folder exported before the graphs took videos (its decoder's metadata lacks the video token) is refused
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    graph = onnx.load(os.path.join(old, "decoder_model_merged.onnx"))
    kept = [p for p in graph.metadata_props if p.key != "forgegrad.video_token_id"]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    onnx.save(graph, os.path.join(old, "decoder_model_merged.onnx"))
    with pytest.raises(ValueError, match="exported before the graphs took videos .* export it again"):
        generate_onnx(old, IDS, MASK, pixel_values_videos=VIDEO, video_grid_thw=VIDEO_GRID, **kw)


def test_video_arguments_are_refused_by_the_other_graphs(tmp_path):
    import test_hf_onnx_image_text as IT
    torch.manual_seed(0)
    IT.BUILDERS["llava"]().eval().save_pretrained(tmp_path)
    export_image_text(from_pretrained(tmp_path), tmp_path / "onnx", verify=False)
    with pytest.raises(TypeError, match="pixel_values_videos / video_grid_thw go with Qwen2-VL's and Qwen2.5-VL's"):
        generate_onnx(tmp_path / "onnx", [[1, 2]], pixel_values_videos=VIDEO, video_grid_thw=VIDEO_GRID)
    with pytest.raises(TypeError, match="second_per_grid_ts go with Qwen2-VL's"):
        generate_image_text_onnx(tmp_path / "onnx", [[1, 2]], second_per_grid_ts=[1.0])
