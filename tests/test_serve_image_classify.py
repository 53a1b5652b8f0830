"""``POST /v1/classify`` on the real server for a ViT image classifier (tiny ViTForImageClassification and
ViTImageProcessor written by transformers): PNG, JPEG and .npy inputs in one request give the softmax of
transformers' logits on transformers' pixel values, labelled by id2label; bad inputs are 400s naming the input; a
processor whose images do not fit the model is refused at startup."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL")
transformers.logging.set_verbosity_error()

from PIL import Image  # noqa: E402
from serve_helpers import running_app  # noqa: E402

from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app, encoder_kind  # noqa: E402
from forgegrad.serve.image_classify import ImageClassifier  # noqa: E402

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def _vit_dir(path, size=32):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                                 image_size=32, patch_size=8, id2label=LABELS, label2id={v: k for k, v in
                                                                                      LABELS.items()},
                                 initializer_range=0.3)
    hf = transformers.ViTForImageClassification(cfg).eval()
    hf.save_pretrained(path)
    transformers.ViTImageProcessorPil(size={"height": size, "width": size}).save_pretrained(path)
    return hf


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _encoded(image: np.ndarray, fmt: str) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return _b64(buf.getvalue())


def _npy(arr: np.ndarray, **kw) -> str:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return _b64(buf.getvalue())


def _rotated_jpeg(image: np.ndarray) -> str:
    """A JPEG whose EXIF orientation (6) says to turn it 90 degrees, as a phone writes a photo taken upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", exif=exif)
    return _b64(buf.getvalue())


def _npy_header(shape, data=b"") -> str:
    """A .npy file whose header claims uint8 ``shape``, followed by ``data`` (not necessarily that many bytes)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return _b64(buf.getvalue() + data)


def test_images_and_arrays_classified_as_transformers(tmp_path):
    hf = _vit_dir(tmp_path)
    assert encoder_kind(str(tmp_path)) == "classify"
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8), rng.integers(0, 256, (30, 36, 3), dtype=np.uint8)]
    gray = rng.integers(0, 256, (20, 25), dtype=np.uint8)
    png, jpeg, rotated = _encoded(rgb[0], "PNG"), _encoded(rgb[1], "JPEG"), _rotated_jpeg(rgb[0])
    body = {"input": [{"image": "data:image/png;base64," + png}, {"image": jpeg}, {"array": _npy(rgb[0])},
                      {"array": _npy(gray)}, {"image": rotated}]}
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path), max_batch=3))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/classify", json=body)
        one = c.post("/classify", json={"input": {"array": _npy(rgb[1])}})
        errors = [c.post("/v1/classify", json={"input": x}) for x in (
            {"image": "not base64!"}, {"array": _b64(b"not an npy file")}, {"array": _npy(gray.astype(np.float32))},
            {"array": _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)},  # refused from its header
            "a text", [],
            {"array": _npy(np.zeros((4, 4, 2), np.uint8))},
            # a 70000 x 1 PNG of a few hundred bytes: Pillow's resize tables grow with the side (49,000,000 x 1
            # took 1.9 GB to resize to 32 x 32)
            {"image": _encoded(np.zeros((1, 70_000), np.uint8), "PNG")},
            # read from the header, before any allocation: numpy would allocate the claimed 30 GB first
            {"array": _npy_header((100_000, 100_000, 3))}, {"array": _npy_header((10, 10, 3), b"\0" * 50)})]
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["usage"]["prompt_tokens"] == 5 * (16 + 1)
    # the image-classification pipeline's decoding (load_image): upright by the EXIF orientation, then RGB
    decoded = [np.asarray(transformers.image_utils.load_image(Image.open(io.BytesIO(base64.b64decode(s)))))
               for s in (png, jpeg, rotated)]
    assert decoded[2].shape == (52, 40, 3)  # turned
    ref_proc = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    images = decoded[:2] + [rgb[0], np.repeat(gray[..., None], 3, axis=-1), decoded[2], rgb[1]]
    with torch.no_grad():
        probs = torch.softmax(hf(ref_proc(images, return_tensors="pt")["pixel_values"]).logits, -1).numpy()
    probs, alone = probs[:5], probs[5]
    got = np.array([d["probs"] for d in out["data"]])
    np.testing.assert_allclose(got, probs, rtol=1e-4, atol=1e-6)
    assert [d["label"] for d in out["data"]] == [LABELS[int(i)] for i in probs.argmax(-1)]
    assert all(d["num_classes"] == 3 for d in out["data"]) and [d["index"] for d in out["data"]] == [0, 1, 2, 3, 4]
    assert one.status_code == 200, one.text  # one input, not in a list
    np.testing.assert_allclose(one.json()["data"][0]["probs"], alone, rtol=1e-4, atol=1e-6)
    says = ("the image is not valid base64", "not a .npy array",
            "must be uint8 pixels", "got object", "input must be", "input must be", "must be uint8 pixels",
            "70000 x 1 pixels; this server takes up to 50000000 pixels, 65535 on a side",
            "100000 x 100000 pixels; this server takes", "says (10, 10, 3) (300 bytes) but 50 bytes follow")
    assert len(errors) == len(says)
    for resp, text in zip(errors, says):
        assert resp.status_code == 400 and text in resp.json()["error"]["message"], resp.text


def test_request_pixel_budget(tmp_path, monkeypatch):
    """One request's images may add up to MAX_REQUEST_PIXELS (lowered here to 5000): past it, a 400 naming the first
    input over, from the headers before any image is decoded; the same images in two requests are answered."""
    from forgegrad.serve import image_embeddings
    monkeypatch.setattr(image_embeddings, "MAX_REQUEST_PIXELS", 5000)
    _vit_dir(tmp_path)
    image = _encoded(np.random.default_rng(2).integers(0, 256, (40, 52, 3), dtype=np.uint8), "PNG")  # 2080 pixels
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path)))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        over = c.post("/v1/classify", json={"input": [{"image": image}] * 3})
        under = [c.post("/v1/classify", json={"input": [{"image": image}] * n}) for n in (2, 1)]
    assert over.status_code == 400, over.text
    assert "input 2: the request's images come to more than the 5000 pixels" in over.json()["error"]["message"]
    assert [r.status_code for r in under] == [200, 200]


def test_single_array_equals_its_batch_row(tmp_path):
    """A request's image is classified the same alone as in a batch (the same pixel values, the same logits)."""
    _vit_dir(tmp_path)
    worker = ImageClassifier(str(tmp_path), max_batch=2)
    rng = np.random.default_rng(1)
    pixels = [worker.processor(rng.integers(0, 256, (33, 41, 3), dtype=np.uint8))["pixel_values"][0]
              for _ in range(3)]
    both = worker.embed(pixels)
    np.testing.assert_allclose(worker.embed(pixels[2:]), both[2:], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(both.sum(axis=1), 1.0, rtol=1e-9)


def test_processor_of_another_size_refused(tmp_path):
    _vit_dir(tmp_path, size=48)
    with pytest.raises(ValueError, match="takes 32x32"):
        ImageClassifier(str(tmp_path))
