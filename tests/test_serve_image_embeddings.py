"""``POST /v1/embeddings`` on the real server for a CLIP checkpoint (a tiny CLIPModel, its byte-level BPE tokenizer
and CLIPImageProcessor, all written by transformers): texts and PNG / JPEG images mixed in one request give
transformers' unit-length text and image embeddings, in one space (their dot products are the logits over
exp(logit_scale)); base64 vectors; bad images and inputs are 400s naming the input."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
PIL = pytest.importorskip("PIL")
transformers.logging.set_verbosity_error()

from PIL import Image  # noqa: E402
from serve_helpers import running_app  # noqa: E402
from test_hf_clip import _bpe_tokenizer_dir, _clip  # noqa: E402

from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app, encoder_kind  # noqa: E402


def _encoded(image: np.ndarray, fmt: str) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_texts_and_images_in_one_request(tmp_path):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    hf_tok = _bpe_tokenizer_dir(tmp_path)
    improc = CLIPImageProcessorPil(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    improc.save_pretrained(tmp_path)
    hf = _clip(tmp_path, vocab_size=len(hf_tok), eos_token_id=hf_tok.eos_token_id, bos_token_id=hf_tok.bos_token_id,
               pad_token_id=hf_tok.pad_token_id)
    assert encoder_kind(str(tmp_path)) == "embeddings"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8), rng.integers(0, 256, (30, 36, 3), dtype=np.uint8)]
    png, jpeg = _encoded(images[0], "PNG"), _encoded(images[1], "JPEG")
    texts = ["a photo of a cat", "a dog"]
    body = {"input": [texts[0], {"image": "data:image/png;base64," + png}, {"text": texts[1]}, {"image": jpeg}]}
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path), max_batch=4))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/embeddings", json=body)
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], np.float32)
        tokens = r.json()["usage"]["prompt_tokens"]
        r64 = c.post("/v1/embeddings", json=dict(body, encoding_format="base64"))
        b64 = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in r64.json()["data"]])
        errors = [c.post("/v1/embeddings", json={"input": x}) for x in (
            [texts[0], {"image": "not base64!"}], {"image": base64.b64encode(b"no image").decode()},
            {"audio": "x"}, [{"image": "data:image/png," + png}])]
        wrong_size = c.post("/v1/embeddings", json={"input": texts[0], "dimensions": 3})
    decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(s))).convert("RGB")) for s in (png, jpeg)]
    batch = hf_tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        text_ref = _unit(hf.get_text_features(**batch).pooler_output.numpy())
        pixels = torch.tensor(improc(decoded, return_tensors="np")["pixel_values"])
        image_ref = _unit(hf.get_image_features(pixel_values=pixels).pooler_output.numpy())
        logits = hf(**batch, pixel_values=pixels).logits_per_text.numpy()
    np.testing.assert_allclose(got[[0, 2]], text_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[[1, 3]], image_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[[0, 2]] @ got[[1, 3]].T, logits / hf.logit_scale.exp().item(), atol=1e-5)
    np.testing.assert_array_equal(b64, got)
    assert tokens == sum(len(ids) for ids in hf_tok(texts)["input_ids"])
    for r, says in zip(errors, ("input 1: the image is not valid base64", "input 0: not an image Pillow reads",
                                "input must be a string (a text)", "a data: URL must be base64")):
        assert r.status_code == 400 and says in r.json()["error"]["message"], r.text
    assert wrong_size.status_code == 400 and "dimensions" in wrong_size.json()["error"]["message"]
