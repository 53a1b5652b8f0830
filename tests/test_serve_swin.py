"""Swin and Swin V2 on the real server (a tiny SwinForImageClassification / Swinv2ForImageClassification and
ViTImageProcessor written by transformers; the processor's 27 x 38 px images are not the 32 px of the config, nor
multiples of the patch or the window): ``POST /v1/classify`` gives the softmax of transformers' logits on
transformers' pixel values; a processor whose images are too small for Swin's window is refused at startup."""
from __future__ import annotations

import base64
import copy
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


def _checkpoint(path, height=27, width=38, v2=False):
    torch.manual_seed(0)
    config, cls = ((transformers.Swinv2Config, transformers.Swinv2ForImageClassification) if v2 else
                   (transformers.SwinConfig, transformers.SwinForImageClassification))
    cfg = config(image_size=32, patch_size=2, embed_dim=8, depths=[2, 2, 1], num_heads=[2, 4, 2], window_size=3,
                 initializer_range=0.3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    hf = cls(cfg).eval()
    hf.save_pretrained(path)
    transformers.ViTImageProcessorPil(size={"height": height, "width": width}, resample=3).save_pretrained(path)
    return hf


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return _b64(buf.getvalue())


def _npy(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, arr)
    return _b64(buf.getvalue())


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swinv2"])
def test_classify(tmp_path, v2):
    hf = _checkpoint(tmp_path, v2=v2)
    assert encoder_kind(str(tmp_path)) == "classify"
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8), rng.integers(0, 256, (30, 36, 3), dtype=np.uint8)]
    body = {"input": [{"image": _png(rgb[0])}, {"array": _npy(rgb[1])}, {"array": _npy(rgb[0])}]}
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path), max_batch=2))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/classify", json=body)
        wrong = c.post("/v1/classify", json={"input": {"array": _npy(np.zeros((4, 4, 2), np.uint8))}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["usage"]["prompt_tokens"] == 3 * (14 * 19)  # 27 x 38 px padded to whole 2 x 2 patches
    ref_proc = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    with torch.no_grad():
        pixels = ref_proc([rgb[0], rgb[1], rgb[0]], return_tensors="pt")["pixel_values"]
        assert tuple(pixels.shape[-2:]) == (27, 38)
        probs = torch.softmax(copy.deepcopy(hf)(pixels).logits, -1).numpy()
    np.testing.assert_allclose(np.array([d["probs"] for d in out["data"]]), probs, rtol=1e-4, atol=1e-6)
    assert [d["label"] for d in out["data"]] == [LABELS[int(i)] for i in probs.argmax(-1)]
    assert wrong.status_code == 400 and "must be uint8 pixels" in wrong.json()["error"]["message"]


def test_processor_too_small_for_the_window_refused(tmp_path):
    _checkpoint(tmp_path, height=12, width=40)  # 6 x 20 patches, then 3 x 10, then 2 x 5: under the 3 x 3 window
    with pytest.raises(ValueError, match=r"preprocessor_config.json makes images of size .*: SwinModel: a stage's "
                                         r"feature map is 2x5 patches, smaller than the window \(3x3\)"):
        ImageClassifier(str(tmp_path))
