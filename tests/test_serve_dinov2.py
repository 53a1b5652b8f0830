"""DINOv2 on the real server (tiny checkpoints and BitImageProcessor written by transformers; the processor's 24 px
crop is not the 32 px the position table was trained at, as the hub's 224 px crops are not its 518): a
Dinov2ForImageClassification at ``POST /v1/classify`` gives the softmax of transformers' logits; a Dinov2Model at
``POST /v1/embeddings`` gives transformers' pooler_output for PNG, JPEG and .npy images, in float and base64; texts
and bad inputs are 400s; a processor making images of varying sizes is refused at startup."""
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
from forgegrad.serve.vision_embeddings import ImageEmbedder  # noqa: E402

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def _checkpoint(path, cls, crop=24, **processor):
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                                    patch_size=8, initializer_range=0.3, use_swiglu_ffn=True, id2label=LABELS,
                                    label2id={v: k for k, v in LABELS.items()})
    hf = getattr(transformers, cls)(cfg).eval()
    hf.save_pretrained(path)
    settings = dict(size={"shortest_edge": 28}, crop_size={"height": crop, "width": crop},
                    image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    transformers.BitImageProcessorPil(**dict(settings, **processor)).save_pretrained(path)
    return hf


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _encoded(image: np.ndarray, fmt: str) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return _b64(buf.getvalue())


def _npy(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, arr)
    return _b64(buf.getvalue())


def _decoded(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8), rng.integers(0, 256, (30, 36, 3), dtype=np.uint8)]


def test_classify(tmp_path):
    hf = _checkpoint(tmp_path, "Dinov2ForImageClassification")
    assert encoder_kind(str(tmp_path)) == "classify"
    rgb = _images()
    png, jpeg = _encoded(rgb[0], "PNG"), _encoded(rgb[1], "JPEG")
    body = {"input": [{"image": "data:image/png;base64," + png}, {"image": jpeg}, {"array": _npy(rgb[1])}]}
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path), max_batch=2))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/classify", json=body)
        wrong = c.post("/v1/classify", json={"input": {"array": _npy(np.zeros((4, 4, 2), np.uint8))}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["usage"]["prompt_tokens"] == 3 * (3 * 3 + 1)  # 24 px crops: 3 x 3 patches and the CLS token
    ref_proc = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    with torch.no_grad():
        pixels = ref_proc([_decoded(png), _decoded(jpeg), rgb[1]], return_tensors="pt")["pixel_values"]
        assert tuple(pixels.shape[-2:]) == (24, 24)
        probs = torch.softmax(hf(pixels).logits, -1).numpy()
    np.testing.assert_allclose(np.array([d["probs"] for d in out["data"]]), probs, rtol=1e-4, atol=1e-6)
    assert [d["label"] for d in out["data"]] == [LABELS[int(i)] for i in probs.argmax(-1)]
    assert wrong.status_code == 400 and "must be uint8 pixels" in wrong.json()["error"]["message"]


def test_image_embeddings(tmp_path):
    hf = _checkpoint(tmp_path, "Dinov2Model")
    assert encoder_kind(str(tmp_path)) == "embeddings"
    rgb = _images()
    png, jpeg = _encoded(rgb[0], "PNG"), _encoded(rgb[1], "JPEG")
    body = {"input": [{"image": png}, {"array": _npy(rgb[0])}, {"image": "data:image/jpeg;base64," + jpeg}]}
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path), max_batch=2))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/embeddings", json=body)
        r64 = c.post("/v1/embeddings", json=dict(body, encoding_format="base64"))
        one = c.post("/v1/embeddings", json={"input": {"image": jpeg}})
        errors = [c.post("/v1/embeddings", json=b) for b in (
            {"input": "a photo of a cat"}, {"input": [{"image": png}, "a dog"]}, {"input": [1, 2, 3]},
            {"input": {"image": "not base64!"}}, {"input": {"text": "a cat"}},
            {"input": {"image": png}, "dimensions": 8}, {"input": {"image": png}, "encoding_format": "int8"})]
        classify = c.post("/v1/classify", json={"input": {"image": png}})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]], np.float32)
    assert r.json()["usage"]["prompt_tokens"] == 3 * 10
    b64 = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in r64.json()["data"]])
    np.testing.assert_array_equal(b64, got)
    ref_proc = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    with torch.no_grad():
        pixels = ref_proc([_decoded(png), rgb[0], _decoded(jpeg)], return_tensors="pt")["pixel_values"]
        want = hf(pixels).pooler_output.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one.json()["data"][0]["embedding"], want[2], rtol=1e-4, atol=1e-5)
    says = ("embeds images only", "embeds images only", "embeds images only", "the image is not valid base64",
            "input must be", "dimensions", "encoding_format")
    assert len(errors) == len(says)
    for resp, text in zip(errors, says):
        assert resp.status_code == 400 and text in resp.json()["error"]["message"], resp.text
    assert classify.status_code == 404


def test_processor_without_one_size_refused(tmp_path):
    """A shortest-edge resize without a crop makes images of varying sizes, which a batch cannot stack."""
    _checkpoint(tmp_path, "Dinov2Model", do_center_crop=False)
    with pytest.raises(ValueError, match="takes images of one size"):
        ImageEmbedder(str(tmp_path))
    _checkpoint(tmp_path, "Dinov2Model", crop=4)
    with pytest.raises(ValueError, match="at least one 8x8 patch"):
        ImageEmbedder(str(tmp_path))
