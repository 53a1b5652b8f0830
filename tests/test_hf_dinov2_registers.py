"""DINOv2 with registers from checkpoints transformers wrote (tiny random configs; 3 and 0 registers, plain and
SwiGLU MLP): last_hidden_state, pooler_output, logits and hidden states equal transformers' at the config's size and
others (the position table resized by torch's antialiased bicubic, shrunk and enlarged), odd batches, eager and SDPA;
the resize matrix against torch; the mask token; gradients; the encoder from a classifier's checkpoint and model_type
dispatch; save_pretrained round trip; ONNX export; serving at /v1/classify; bad inputs."""
import base64
import copy
import io
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import CheckpointError, Dinov2WithRegistersModel
from forgegrad.models.hf.dinov2_registers import antialiased_bicubic_matrix
from forgegrad.models.hf.vit import ImageClassifierOutput

import hf_image_helpers as H
from hf_image_helpers import close as _close, compared as _compared, pixels as _pixels

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8, num_labels=5,
            initializer_range=0.3, layerscale_value=0.5, num_register_tokens=3)
CHECKPOINTS = {"model": ("Dinov2WithRegistersModel", {}),
               "model_no_registers": ("Dinov2WithRegistersModel", dict(num_register_tokens=0)),
               "classifier": ("Dinov2WithRegistersForImageClassification", dict(qkv_bias=False,
                                                                              hidden_act="gelu_new")),
               "classifier_swiglu": ("Dinov2WithRegistersForImageClassification", dict(use_swiglu_ffn=True))}
# (batch, height, width): the config's size; larger and uneven; sides not multiples of the patch (a table shrunk in
# one direction: the antialiased kernel widens); a non-square grid with as many patches as the table
SHAPES = [(3, 32, 32), (2, 48, 40), (1, 20, 27), (1, 64, 16)]


def _randomize(hf):
    return H.randomize_parameters(hf, ("cls_token", "mask_token", "lambda1", "register_tokens"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return H.save_checkpoints(
        tmp_path_factory, CHECKPOINTS, lambda cls, extra: transformers.Dinov2WithRegistersConfig(**dict(SIZE, **extra)),
        _randomize)


def test_antialiased_resize_matrix_is_torchs():
    for n_in in (2, 4, 7, 37):
        for n_out in (1, 2, 3, 5, 9, 14, 37, 60):
            eye = torch.eye(n_in, dtype=torch.float64)[None, None]
            want = torch.nn.functional.interpolate(eye, size=(n_out, n_in), mode="bicubic", align_corners=False,
                                                   antialias=True)[0, 0].numpy()
            np.testing.assert_allclose(antialiased_bicubic_matrix(n_in, n_out), want, rtol=0, atol=1e-12,
                                       err_msg=f"{n_in} -> {n_out}")


@pytest.mark.parametrize("key,attn", [(k, "eager") for k in CHECKPOINTS] + [("classifier_swiglu", "sdpa")])
def test_outputs_equal_transformers(checkpoints, key, attn):
    model, plain, got = H.check_outputs(checkpoints[key][0], CHECKPOINTS[key][0], SHAPES, SIZE["num_hidden_layers"],
                                        attn, key)
    if key.startswith("model"):
        registers = 0 if key == "model_no_registers" else 3
        assert plain.last_hidden_state.shape[1] == 1 + registers + (64 // 8) * (16 // 8)
        np.testing.assert_array_equal(plain.pooler_output.numpy(), plain.last_hidden_state.numpy()[:, 0])
    else:
        assert isinstance(got, ImageClassifierOutput) and isinstance(plain, fg.Tensor)


def test_mask_token_as_transformers(checkpoints):
    path, hf = checkpoints["model"]
    model = from_pretrained(path)
    x = _pixels(2, 40, 32, seed=4)
    mask = np.random.default_rng(4).random((2, 20)) < 0.4
    with torch.no_grad():
        want = hf(torch.tensor(x), bool_masked_pos=torch.tensor(mask))
    with fg.no_grad():
        got = model(x, bool_masked_pos=mask)
    _close(_compared(got), _compared(want))


def test_gradients_match_transformers(checkpoints):
    path, hf = checkpoints["classifier_swiglu"]
    model = from_pretrained(path).train()
    ref = copy.deepcopy(hf).double().train()
    x, labels = _pixels(3, 40, 24, seed=7), np.array([0, 3, 4])
    torch.nn.functional.cross_entropy(ref(torch.tensor(x, dtype=torch.float64)).logits,
                                      torch.tensor(labels)).backward()
    fg.nn.functional.cross_entropy(model(x), fg.tensor(labels)).backward()
    theirs = {n: p.grad.numpy() for n, p in ref.named_parameters() if p.grad is not None}
    mine = dict(model.named_parameters())
    for name in ("embeddings.register_tokens", "embeddings.position_embeddings", "embeddings.cls_token",
                 "embeddings.patch_embeddings.projection.weight", "layernorm.weight",
                 "encoder.layer.0.layer_scale1.lambda1"):
        name = "dinov2_with_registers." + name
        g = theirs[name]
        H.close_grad(mine[name], g, name)
    g = theirs["classifier.weight"]
    H.close_grad(mine["classifier.weight"], g, "classifier.weight")


def test_encoder_from_classifier_checkpoint_and_model_type_dispatch(checkpoints, tmp_path):
    H.check_encoder_from_classifier(checkpoints, Dinov2WithRegistersModel, lambda hf: hf.dinov2_with_registers,
                                    tmp_path, eval_mode=True)


@pytest.mark.parametrize("key", ["model", "classifier_swiglu"])
def test_save_pretrained_round_trip(checkpoints, key, tmp_path):
    path, hf = checkpoints[key]
    H.check_save_round_trip(path, hf, CHECKPOINTS[key][0], tmp_path / "saved", _pixels(2, 40, 24, seed=6))


@pytest.mark.parametrize("key,size", [("classifier", None), ("model", (24, 40))])
def test_onnx_export_in_onnxruntime(checkpoints, key, size, tmp_path):
    pytest.importorskip("onnxruntime")
    path, hf = checkpoints[key]
    H.check_onnx_export(path, hf, size, tmp_path)


def test_served_at_classify(checkpoints, tmp_path):
    """A classifier with a 24 px crop (not the 32 px of the table) at /v1/classify: transformers' probabilities; usage
    counts the CLS and register tokens."""
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    pytest.importorskip("PIL")
    import httpx
    from serve_helpers import running_app

    from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app
    path, hf = checkpoints["classifier"]
    for f in ("config.json", "model.safetensors"):
        (tmp_path / f).write_bytes((path / f).read_bytes())
    processor = transformers.BitImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 24, "width": 24})
    processor.save_pretrained(tmp_path)
    image = np.random.default_rng(3).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    buf = io.BytesIO()
    np.save(buf, image)
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path)))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/classify", json={"input": [{"array": base64.b64encode(buf.getvalue()).decode()}] * 2})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 2 * (3 * 3 + 1 + 3)
    ref_proc = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    with torch.no_grad():
        probs = torch.softmax(hf(ref_proc([image, image], return_tensors="pt")["pixel_values"]).logits, -1).numpy()
    np.testing.assert_allclose([d["probs"] for d in r.json()["data"]], probs, rtol=1e-4, atol=1e-6)


def test_bad_inputs_refused(checkpoints, tmp_path):
    path, _ = checkpoints["classifier"]
    model = from_pretrained(path)
    with pytest.raises(ValueError, match=r"Dinov2WithRegistersModel: pixel_values must have shape \(batch, 3, height, "
                                         r"width\), got \(1, 4, 32, 32\)"):
        model(_pixels(1, channels=4))
    with pytest.raises(ValueError, match="at least one 8x8 patch"):
        model(_pixels(1, 6, 32))
    cfg = json.loads((path / "config.json").read_text())
    with pytest.raises(ValueError, match="num_register_tokens must be a non-negative int"):
        Dinov2WithRegistersModel(dict(cfg, num_register_tokens=-1))
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["dinov2_with_registers.embeddings.register_tokens"]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing 1 tensor.*register_tokens"):
        from_pretrained(tmp_path)
