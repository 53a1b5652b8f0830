"""DPTImageProcessor (DPT's and Depth Anything's) against transformers' PIL backend on real-sized random images:
pixel values bit for bit for Depth Anything's settings (keep_aspect_ratio, ensure_multiple_of 14, 518 px, bicubic),
DPT's plain square resize, and padding to a size_divisor; post_process_depth_estimation's bicubic resize to the
images' sizes and post_process_semantic_segmentation's maps against transformers'; bad settings refused."""
import numpy as np
import pytest

from forgegrad.models.hf.image_processing import ImageProcessor, load_image_processor

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("PIL")

DEPTH_ANYTHING = dict(keep_aspect_ratio=True, ensure_multiple_of=14, size={"height": 518, "width": 518}, resample=3,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
SETTINGS = {
    "depth_anything": DEPTH_ANYTHING,
    "dpt_square": dict(size={"height": 384, "width": 384}),
    "padded": dict(keep_aspect_ratio=True, ensure_multiple_of=32, size={"height": 384, "width": 384}, do_pad=True,
                   size_divisor=100, resample=2),
    "fit_width": dict(keep_aspect_ratio=True, size={"height": 300, "width": 500}, ensure_multiple_of=7),
}


@pytest.mark.parametrize("key", list(SETTINGS))
@pytest.mark.parametrize("shape", [(480, 641, 3), (333, 250, 3)])
def test_pixel_values_match_transformers(key, shape, tmp_path):
    hf = transformers.DPTImageProcessorPil(**SETTINGS[key])
    hf.save_pretrained(tmp_path)
    image = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    want = hf(image, return_tensors="np")["pixel_values"]
    got = load_image_processor(tmp_path)(image)["pixel_values"]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_post_process_depth_estimation_matches_transformers():
    hf = transformers.DPTImageProcessorPil(**DEPTH_ANYTHING)
    depth = np.random.default_rng(1).random((2, 37, 52)).astype(np.float32)

    class Output:
        predicted_depth = torch.from_numpy(depth)

    sizes = [(480, 641), (20, 77)]
    want = hf.post_process_depth_estimation(Output, target_sizes=sizes)
    ours = ImageProcessor("DPTImageProcessor", **DEPTH_ANYTHING)
    for given in (depth, Output):  # the array, or an output holding predicted_depth (a torch tensor)
        got_all = ours.post_process_depth_estimation(given, sizes)
        for g, w in zip(got_all, want, strict=True):
            w = w["predicted_depth"].numpy()
            assert g["predicted_depth"].shape == w.shape
            np.testing.assert_allclose(g["predicted_depth"], w, rtol=1e-5, atol=1e-5)
    unsized = ours.post_process_depth_estimation(depth)
    np.testing.assert_array_equal(unsized[1]["predicted_depth"], depth[1])


def test_post_process_semantic_segmentation_matches_transformers():
    hf = transformers.DPTImageProcessorPil()
    scores = np.random.default_rng(2).standard_normal((2, 5, 12, 16)).astype(np.float32)

    class Output:
        logits = torch.from_numpy(scores)

    ours = ImageProcessor("DPTImageProcessor")
    for sizes in ([(37, 51), (8, 9)], None):
        want = hf.post_process_semantic_segmentation(Output, target_sizes=sizes)
        got = ours.post_process_semantic_segmentation(scores, sizes)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w.numpy())
    with pytest.raises(ValueError, match="num_labels"):
        ours.post_process_semantic_segmentation(scores[0])


@pytest.mark.parametrize("settings, match", [
    (dict(ensure_multiple_of=0), "ensure_multiple_of"),
    (dict(size_divisor=-3, do_pad=True), "size_divisor"),
    (dict(size={"shortest_edge": 384}), "height and width"),
])
def test_bad_settings_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        ImageProcessor("DPTImageProcessor", **settings)


def test_bad_post_process_input_refused():
    p = ImageProcessor("DPTImageProcessor")
    with pytest.raises(ValueError, match="one \\(height, width\\) per image"):
        p.post_process_depth_estimation(np.zeros((2, 4, 4), np.float32), [(8, 8)])
    with pytest.raises(ValueError, match="batch, height, width"):
        p.post_process_depth_estimation(np.zeros((4, 4), np.float32))
