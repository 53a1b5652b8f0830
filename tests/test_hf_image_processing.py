"""Image preprocessing (models/hf/image_processing.py) against transformers' image processors (its PIL backend, the
one it runs without torchvision) on configs transformers saved: pixel values equal, for ViT, DeiT, CLIP and SigLIP
settings, grayscale and RGBA inputs, PIL inputs; the numpy resize against Pillow's; bad inputs refused."""
import json

import numpy as np
import pytest

from forgegrad.models.hf.image_processing import ImageProcessor, load_image_processor, resize_uint8

transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

transformers.logging.set_verbosity_error()


def _images(rng, shapes, channels=3):
    """Smooth-ish random pictures (gradients plus noise), so resizes see real structure, not only noise."""
    out = []
    for h, w in shapes:
        base = np.linspace(0, 255, w)[None, :, None] * np.linspace(0.2, 1, h)[:, None, None]
        noise = rng.integers(-40, 41, (h, w, channels))
        out.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return out


def _saved(cls_name, tmp_path, **kwargs):
    cls = getattr(transformers, cls_name)
    proc = cls(**kwargs)
    proc.save_pretrained(tmp_path)
    return proc


CASES = [  # (transformers class, settings) - each its model family's defaults, then variations
    ("ViTImageProcessorPil", {}),
    ("ViTImageProcessorPil", dict(size={"height": 40, "width": 56}, resample=3)),
    ("DeiTImageProcessorPil", dict(size={"height": 48, "width": 48}, crop_size={"height": 40, "width": 36},
                                   image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])),
    ("CLIPImageProcessorPil", dict(size={"shortest_edge": 40}, crop_size={"height": 40, "width": 40})),
    ("CLIPImageProcessorPil", dict(size={"shortest_edge": 30}, crop_size={"height": 36, "width": 44})),  # pads
    ("SiglipImageProcessorPil", dict(size={"height": 32, "width": 32})),
    ("SiglipImageProcessorPil", dict(size={"height": 64, "width": 48}, resample=2, do_normalize=False)),
    ("Gemma3ImageProcessorPil", dict(size={"height": 40, "width": 40})),
]


@pytest.mark.parametrize("cls_name,kwargs", CASES)
def test_pixel_values_equal_transformers(tmp_path, cls_name, kwargs):
    """Pillow resizes (as in transformers): the pixel values are the same floats."""
    ref = _saved(cls_name, tmp_path, **kwargs)
    ours = load_image_processor(tmp_path)
    rng = np.random.default_rng(0)
    images = _images(rng, [(50, 70), (90, 33), (224, 224), (17, 120)])
    want = ref(images, return_tensors="np")["pixel_values"]
    got = ours(images)["pixel_values"]
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ours(images[1])["pixel_values"], want[1:2])  # one image: a batch of one
    stacked = np.stack([images[2], images[2][::-1]])  # a (B, H, W, C) array is a batch, as transformers reads it
    np.testing.assert_array_equal(ours(stacked)["pixel_values"], ref(stacked, return_tensors="np")["pixel_values"])


@pytest.mark.parametrize("cls_name,kwargs", [CASES[0], CASES[3], CASES[5]])
def test_numpy_resize_equals_pillow_when_height_grows(tmp_path, cls_name, kwargs):
    """Without Pillow (use_pillow=False) the numpy resampling gives the same values where Pillow runs its horizontal
    pass first (every version does when the height is kept or grows)."""
    ref = _saved(cls_name, tmp_path, **kwargs)
    ours = load_image_processor(tmp_path, use_pillow=False)
    images = _images(np.random.default_rng(1), [(20, 70), (12, 33), (30, 30)])
    np.testing.assert_array_equal(ours(images)["pixel_values"], ref(images, return_tensors="np")["pixel_values"])


@pytest.mark.parametrize("resample", [0, 1, 2, 3, 4, 5])
def test_resize_uint8_numpy_equals_pillow(resample):
    rng = np.random.default_rng(resample)
    for _ in range(12):
        H, W = (int(v) for v in rng.integers(1, 60, 2))
        h, w = int(rng.integers(H, 130)), int(rng.integers(1, 130))
        for c in (1, 3):
            img = rng.integers(0, 256, (H, W, c), dtype=np.uint8)
            pil = Image.fromarray(img[..., 0] if c == 1 else img).resize((w, h), resample=resample)
            want = np.array(pil).reshape(h, w, c)
            np.testing.assert_array_equal(resize_uint8(img, h, w, resample, use_pillow=False), want,
                                          err_msg=f"{(H, W)} -> {(h, w)}, {c} channels")


@pytest.mark.parametrize("resample", [1, 2, 3, 4, 5])
def test_resize_uint8_numpy_equals_pillow_when_height_shrinks(resample):
    """Where the height shrinks Pillow 13 runs its vertical pass first when the height loses more than twice the
    pixels the width does (the rounded intermediate image differs by up to 36 levels on noise with lanczos, its
    overshoots clipped); the numpy passes run in the same order: equal on both sides of the boundary and on it."""
    rng = np.random.default_rng(10 + resample)
    sizes = [(120, 60, 20, 50), (200, 150, 30, 140), (64, 64, 16, 60), (264, 67, 150, 10), (265, 67, 150, 10),
             (110, 216, 9, 57), (245, 84, 25, 7), (90, 40, 30, 100)]
    for _ in range(8):
        H, W = (int(v) for v in rng.integers(2, 200, 2))
        sizes.append((H, W, int(rng.integers(1, H)), int(rng.integers(1, 200))))
    for H, W, h, w in sizes:
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        want = np.array(Image.fromarray(img).resize((w, h), resample=resample))
        np.testing.assert_array_equal(resize_uint8(img, h, w, resample, use_pillow=False), want,
                                      err_msg=f"{(H, W)} -> {(h, w)}")


def test_gray_and_rgba_converted_as_transformers(tmp_path):
    ref = _saved("CLIPImageProcessorPil", tmp_path, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ours = load_image_processor(tmp_path)
    rng = np.random.default_rng(2)
    gray = _images(rng, [(40, 50)], channels=1)[0][..., 0]
    rgba = _images(rng, [(45, 38)], channels=4)[0]
    for im in (gray[..., None], rgba):
        np.testing.assert_array_equal(ours(im)["pixel_values"], ref(im, return_tensors="np")["pixel_values"])
    # transformers refuses a 2-D array in a list (it cannot tell it from a batch); ours reads it as (H, W, 1)
    np.testing.assert_array_equal(ours([gray])["pixel_values"], ours(gray[..., None])["pixel_values"])


def test_pil_images_as_transformers(tmp_path):
    ref = _saved("SiglipImageProcessorPil", tmp_path, size={"height": 32, "width": 32})
    ours = load_image_processor(tmp_path)
    rng = np.random.default_rng(4)
    rgb, rgba = _images(rng, [(40, 50)])[0], _images(rng, [(33, 61)], channels=4)[0]
    images = [Image.fromarray(rgb), Image.fromarray(rgba), Image.fromarray(rgb).convert("P"),
              Image.fromarray(rgb[..., 0])]
    np.testing.assert_array_equal(ours(images)["pixel_values"], ref(images, return_tensors="np")["pixel_values"])


def test_old_feature_extractor_config(tmp_path):
    """A CLIPFeatureExtractor-era config (int sizes) reads as transformers reads it: shortest edge, square crop."""
    cfg = {"feature_extractor_type": "CLIPFeatureExtractor", "size": 36, "crop_size": 32, "do_center_crop": True,
           "do_normalize": True, "do_resize": True, "resample": 3, "image_mean": [0.48145466, 0.4578275, 0.40821073],
           "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(cfg))
    ref = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    ours = load_image_processor(tmp_path / "preprocessor_config.json")
    assert ours.size == {"shortest_edge": 36} and ours.crop_size == {"height": 32, "width": 32}
    images = _images(np.random.default_rng(5), [(50, 80), (70, 41)])
    np.testing.assert_array_equal(ours(images)["pixel_values"], ref(images, return_tensors="np")["pixel_values"])


def test_bad_inputs_refused(tmp_path):
    proc = ImageProcessor("ViTImageProcessor", size={"height": 8, "width": 8})
    with pytest.raises(TypeError, match=r"uint8.*floats in \[0, 1\]"):  # transformers would rescale them twice
        proc(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="channels first"):
        proc(np.zeros((3, 10, 12), np.uint8))
    with pytest.raises(TypeError, match="numpy uint8 array"):
        proc([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="do_convert_rgb"):
        proc(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        proc(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(ValueError, match="at least one"):
        proc([])
    with pytest.raises(ValueError, match="different sizes"):
        ImageProcessor("CLIPImageProcessor", do_center_crop=False)([np.zeros((10, 20, 3), np.uint8),
                                                                   np.zeros((10, 10, 3), np.uint8)])
    with pytest.raises(ValueError, match="not supported"):
        ImageProcessor("DetrImageProcessor")
    with pytest.raises(ValueError, match="resample"):
        ImageProcessor("ViTImageProcessor", resample=9)
    with pytest.raises(ValueError, match="size"):
        ImageProcessor("ViTImageProcessor", size={"max_height": 3, "max_width": 4})
    with pytest.raises(FileNotFoundError):
        load_image_processor(tmp_path)
    for use_pillow in (True, False):  # Pillow would premultiply an alpha channel, numpy not: refused either way
        with pytest.raises(ValueError, match=r"\(H, W, 1\) or \(H, W, 3\), got uint8 \(5, 5, 4\)"):
            resize_uint8(np.zeros((5, 5, 4), np.uint8), 3, 3, use_pillow=use_pillow)
        with pytest.raises(ValueError, match="got float32"):
            resize_uint8(np.zeros((5, 5, 3), np.float32), 3, 3, use_pillow=use_pillow)
        with pytest.raises(ValueError, match="positive"):
            resize_uint8(np.zeros((5, 5, 3), np.uint8), 0, 3, use_pillow=use_pillow)
