"""``POST /v1/embeddings`` on the real server for a CLIP checkpoint (a tiny CLIPModel, its byte-level BPE tokenizer
and CLIPImageProcessor, all written by transformers): texts and PNG / JPEG images mixed in one request give
transformers' unit-length text and image embeddings, in one space (their dot products are the logits over
exp(logit_scale)); base64 vectors; bad images and inputs are 400s naming the input; a SiglipModel the same way; a
Siglip2Model with NaFlex images of different shapes batched together."""
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


def _checkpoint(path):
    """A tiny CLIPModel with its tokenizer and a CLIPImageProcessor (shortest edge 30, crop 30) in ``path``."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    hf_tok = _bpe_tokenizer_dir(path)
    improc = CLIPImageProcessorPil(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    improc.save_pretrained(path)
    hf = _clip(path, vocab_size=len(hf_tok), eos_token_id=hf_tok.eos_token_id, bos_token_id=hf_tok.bos_token_id,
               pad_token_id=hf_tok.pad_token_id)
    return hf, hf_tok, improc


def test_texts_and_images_in_one_request(tmp_path):
    hf, hf_tok, improc = _checkpoint(tmp_path)
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


def test_thin_images_wrapped_base64_and_urls(tmp_path, monkeypatch):
    """A thin image, small in bytes and pixels, that the shortest-edge resize would blow up (1 x 60000 to 30 x
    1,800,000 here; 224 x 11,200,000 for CLIP's 224) is a 400 before it is decoded, not the server's memory; base64
    wrapped in lines (as the ``base64`` tool prints it) reads as the unwrapped; a JPEG with an EXIF orientation (a
    phone's photo) is embedded upright, as transformers' load_image reads it; an http(s) URL is a 400 saying URLs
    are not fetched; a side past MAX_SIDE and an EPS file are 400s; the images of one request together past
    MAX_REQUEST_PIXELS are a 400 before any is decoded."""
    from transformers.image_utils import load_image

    from forgegrad.serve import image_embeddings
    hf, _, improc = _checkpoint(tmp_path)
    rng = np.random.default_rng(4)
    thin = _encoded(np.zeros((1, 60_000, 3), np.uint8), "PNG")
    ok = _encoded(rng.integers(0, 256, (1, 1_500, 3), dtype=np.uint8), "PNG")  # 30 x 45,000 resized: served
    photo = _encoded(rng.integers(0, 256, (33, 41, 3), dtype=np.uint8), "PNG")
    wrapped = "\n".join(photo[i:i + 76] for i in range(0, len(photo), 76))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: shown rotated a quarter turn clockwise
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (30, 52, 3), dtype=np.uint8)).save(buf, format="JPEG", exif=exif)
    turned = base64.b64encode(buf.getvalue()).decode("ascii")
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path), max_batch=4))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        refused = c.post("/v1/embeddings", json={"input": ["a cat", {"image": thin}]})
        served = c.post("/v1/embeddings", json={"input": [{"image": ok}, {"image": photo},
                                                           {"image": "data:image/png;base64," + wrapped},
                                                           {"image": turned}]})
        fetched = c.post("/v1/embeddings", json={"input": {"image": "https://example.com/cat.png"}})
        # 2 x 70,000 resizes to 30 x 1,050,000 (under MAX_PIXELS), but Pillow's resize tables grow with the side
        long_side = c.post("/v1/embeddings", json={"input": {"image": _encoded(np.zeros((2, 70_000, 3), np.uint8),
                                                                                 "PNG")}})
        # EPS is never opened: decoding it would run Ghostscript, an external program
        eps = base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n").decode("ascii")
        postscript = c.post("/v1/embeddings", json={"input": {"image": eps}})
        monkeypatch.setattr(image_embeddings, "MAX_REQUEST_PIXELS", 3 * 33 * 41 - 1)  # 200 million as served
        cut = base64.b64encode(base64.b64decode(photo)[:300]).decode("ascii")  # its header whole, its pixels cut
        too_many = c.post("/v1/embeddings", json={"input": [{"image": cut}, "a cat", {"image": photo},
                                                             {"image": photo}]})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "input" and "input 1: the image is 60000 x 1 pixels" in error["message"]
    assert "resize to 1800000 x 30" in error["message"]
    assert served.status_code == 200, served.text
    vectors = np.array([d["embedding"] for d in served.json()["data"]], np.float32)
    np.testing.assert_array_equal(vectors[2], vectors[1])
    with torch.no_grad():
        upright = torch.tensor(improc(load_image(turned), return_tensors="np")["pixel_values"])
        ref = _unit(hf.get_image_features(pixel_values=upright).pooler_output.numpy())
    np.testing.assert_allclose(vectors[3:], ref, rtol=1e-4, atol=1e-5)
    assert fetched.status_code == 400 and "URLs are not fetched" in fetched.json()["error"]["message"]
    assert long_side.status_code == 400 and "65535 on a side" in long_side.json()["error"]["message"]
    assert postscript.status_code == 400 and "the formats taken: PNG" in postscript.json()["error"]["message"]
    assert too_many.status_code == 400, too_many.text
    assert "input 3: the request's images come to more than the 4058 pixels" in too_many.json()["error"]["message"]


def test_a_processor_whose_images_do_not_fit_the_tower_is_refused_at_startup(tmp_path):
    """Pixel values of another size than the vision tower's image_size would fail every batch holding an image (and
    the texts of other requests run with it, a 500): refused when the server loads the checkpoint."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from forgegrad.serve.image_embeddings import ImageTextEmbedder
    _checkpoint(tmp_path)
    assert ImageTextEmbedder(str(tmp_path)).dim == 16
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"makes images of size \{'height': 32, 'width': 32\}, but the vision tower "
                                         r"takes 30x30"):
        ImageTextEmbedder(str(tmp_path))
    CLIPImageProcessorPil(size={"shortest_edge": 30}, do_center_crop=False).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"makes images of size \{'shortest_edge': 30\}"):
        ImageTextEmbedder(str(tmp_path))


def test_siglip_texts_padded_to_the_tower_length_and_images(tmp_path):
    """A SiglipModel (here with the BPE tokenizer, a SiglipImageProcessor): texts padded with the padding token to
    the text tower's length without a mask, as SigLIP was trained, and images give transformers' unit vectors."""
    from transformers.models.siglip import configuration_siglip as cs, modeling_siglip as ms
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
    hf_tok = _bpe_tokenizer_dir(tmp_path)
    improc = SiglipImageProcessorPil(size={"height": 30, "width": 30})
    improc.save_pretrained(tmp_path)
    text = dict(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=12, pad_token_id=hf_tok.pad_token_id,
                eos_token_id=hf_tok.eos_token_id)
    vision = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, image_size=30,
                  patch_size=6)
    torch.manual_seed(0)
    hf = ms.SiglipModel(cs.SiglipConfig(text_config=text, vision_config=vision)).eval()
    hf.save_pretrained(tmp_path)
    image = np.random.default_rng(5).integers(0, 256, (40, 33, 3), dtype=np.uint8)
    texts = ["a photo of a cat", "dog"]
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path), max_batch=4))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/embeddings", json={"input": [texts[0], {"image": _encoded(image, "PNG")}, texts[1]]})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]], np.float32)
    ids = hf_tok(texts, padding="max_length", max_length=12, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        text_ref = _unit(hf.get_text_features(input_ids=ids).pooler_output.numpy())
        pixels = torch.tensor(improc([image], return_tensors="np")["pixel_values"])
        image_ref = _unit(hf.get_image_features(pixel_values=pixels).pooler_output.numpy())
    np.testing.assert_allclose(got[[0, 2]], text_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], image_ref[0], rtol=1e-4, atol=1e-5)


def test_siglip2_naflex_images_of_different_shapes_batched(tmp_path):
    """A Siglip2Model with a Siglip2ImageProcessor: images of different aspect ratios (their own patch grids, padded
    to max_num_patches) batched across requests give transformers' unit vectors; a processor cutting other patches
    than the tower's is refused at startup."""
    import json

    from forgegrad.serve.image_embeddings import ImageTextEmbedder
    hf_tok = _bpe_tokenizer_dir(tmp_path)
    config = {"image_processor_type": "Siglip2ImageProcessor", "patch_size": 3, "max_num_patches": 20,
              "resample": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    text = dict(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=12, pad_token_id=hf_tok.pad_token_id,
                eos_token_id=hf_tok.eos_token_id)
    vision = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, patch_size=3,
                  num_patches=16)
    torch.manual_seed(0)
    hf = transformers.Siglip2Model(transformers.Siglip2Config(text_config=text, vision_config=vision)).eval()
    hf.save_pretrained(tmp_path)
    assert encoder_kind(str(tmp_path)) == "embeddings"
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((40, 33, 3), (12, 60, 3), (30, 30, 3))]
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path), max_batch=4))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/embeddings", json={"input": ["a photo of a cat"] + [{"image": _encoded(im, "PNG")}
                                                                            for im in images]})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]], np.float32)
    improc = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    ids = hf_tok(["a photo of a cat"], padding="max_length", max_length=12, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        text_ref = _unit(hf.get_text_features(input_ids=ids).pooler_output.numpy())
        image_ref = _unit(hf.get_image_features(**improc(images, return_tensors="pt")).pooler_output.numpy())
    np.testing.assert_allclose(got[:1], text_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1:], image_ref, rtol=1e-4, atol=1e-5)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(dict(config, patch_size=4)))
    with pytest.raises(ValueError, match="cuts 4 px patches, but the vision tower takes 3 px ones"):
        ImageTextEmbedder(str(tmp_path))
