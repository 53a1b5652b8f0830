"""BEiT from checkpoints transformers wrote (tiny random configs: per-layer relative position bias with mean pooling;
a shared bias with an absolute position table, CLS pooling and no layer scale): last_hidden_state, pooler_output,
logits and hidden states equal transformers' at the config's size and others (the bias table's (dy, dx) part resized
bilinearly, the position table bicubically), odd batches, eager and SDPA; the resize matrix against torch; gradients;
the encoder from a classifier's checkpoint; save_pretrained round trip; ONNX export; BEiT's processor; serving at
/v1/classify; bad inputs."""
import base64
import io
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import BeitForImageClassification, BeitModel, CheckpointError
from forgegrad.models.hf.beit import bilinear_matrix
from forgegrad.models.hf.vit import ImageClassifierOutput

import hf_image_helpers as H
from hf_image_helpers import TOL, pixels as _pixels

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
            patch_size=8, num_labels=5, initializer_range=0.3)
CHECKPOINTS = {
    "model": ("BeitModel", dict(use_relative_position_bias=True)),
    "classifier": ("BeitForImageClassification", dict(use_relative_position_bias=True, hidden_act="gelu_new")),
    "classifier_shared": ("BeitForImageClassification", dict(
        use_shared_relative_position_bias=True, use_absolute_position_embeddings=True, use_mean_pooling=False,
        layer_scale_init_value=0.0)),
}
# (batch, height, width): the config's size; larger, uneven, sides not multiples of the patch; smaller (the bias
# table shrunk); a non-square grid with as many patches as the table
SHAPES = [(3, 32, 32), (2, 48, 35), (1, 16, 27), (1, 64, 16)]


def _randomize(hf):
    """The tokens, position and bias tables and layer scales start at zeros / constants: random values instead."""
    return H.randomize_parameters(hf, ("cls_token", "position_embeddings", "bias_table", "lambda_1", "lambda_2"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return H.save_checkpoints(tmp_path_factory, CHECKPOINTS,
                              lambda cls, extra: transformers.BeitConfig(**dict(SIZE, **extra)), _randomize)


def test_bilinear_matrix_is_torchs():
    for n_in in (1, 3, 7, 13):
        for n_out in (1, 3, 5, 7, 9, 15, 27):
            eye = torch.eye(n_in)[None, None]  # float32, as the table is: torch computes the scale in float32
            want = torch.nn.functional.interpolate(eye, size=(n_out, n_in), mode="bilinear",
                                                   align_corners=False)[0, 0].numpy()
            np.testing.assert_allclose(bilinear_matrix(n_in, n_out), want, rtol=0, atol=1e-6,
                                       err_msg=f"{n_in} -> {n_out}")


@pytest.mark.parametrize("key,attn", [(k, "eager") for k in CHECKPOINTS] + [("classifier", "sdpa")])
def test_outputs_equal_transformers(checkpoints, key, attn):
    model, plain, got = H.check_outputs(checkpoints[key][0], CHECKPOINTS[key][0], SHAPES, SIZE["num_hidden_layers"],
                                        attn, key)
    if key == "model":
        assert plain.hidden_states is None
    else:
        assert isinstance(got, ImageClassifierOutput) and isinstance(plain, fg.Tensor)


def test_gradients_match_transformers(checkpoints):
    """Cross-entropy at another grid in training mode (no stochastic depth): the bias and position tables (through
    their resizes), layer scales and head get transformers' gradients (float64)."""
    for key in ("classifier", "classifier_shared"):
        path, hf = checkpoints[key]
        cfg = dict(json.loads((path / "config.json").read_text()), drop_path_rate=0.0)
        model = BeitForImageClassification(cfg)
        model.load_state_dict(from_pretrained(path).state_dict())
        model.train()
        ref = getattr(transformers, CHECKPOINTS[key][0]).from_pretrained(path, drop_path_rate=0.0).double().train()
        x, labels = _pixels(3, 40, 27, seed=7), np.array([0, 3, 4])
        torch.nn.functional.cross_entropy(ref(torch.tensor(x, dtype=torch.float64)).logits,
                                          torch.tensor(labels)).backward()
        fg.nn.functional.cross_entropy(model(x), fg.tensor(labels)).backward()
        theirs = {n: p.grad.numpy() for n, p in ref.named_parameters() if p.grad is not None}
        mine = dict(model.named_parameters())
        # mine (the checkpoint's names) -> transformers 5's names in memory
        names = {n: n for n in ("beit.embeddings.cls_token", "beit.embeddings.patch_embeddings.projection.weight",
                                "classifier.weight")}
        if key == "classifier":
            names.update({
                "beit.encoder.layer.1.attention.attention.relative_position_bias.relative_position_bias_table":
                    "beit.layers.1.relative_position_bias.relative_position_bias_table",
                "beit.encoder.layer.0.lambda_1": "beit.layers.0.lambda_1",
                "beit.encoder.layer.1.attention.attention.key.weight": "beit.layers.1.attention.k_proj.weight",
                "beit.pooler.layernorm.weight": "beit.pooler.layernorm.weight"})
        else:
            names.update({
                "beit.encoder.relative_position_bias.relative_position_bias_table":
                    "beit.shared_position_bias.relative_position_bias_table",
                "beit.embeddings.position_embeddings": "beit.embeddings.position_embeddings",
                "beit.layernorm.weight": "beit.layernorm.weight"})
        for name, other in names.items():
            g = theirs[other]
            H.close_grad(mine[name], g, f"{key} {name}")


def test_encoder_from_classifier_checkpoint_and_model_type_dispatch(checkpoints, tmp_path):
    H.check_encoder_from_classifier(checkpoints, BeitModel, lambda hf: hf.beit, tmp_path,
                                    classifier="classifier_shared", eval_mode=True)


@pytest.mark.parametrize("key", ["model", "classifier_shared"])
def test_save_pretrained_round_trip(checkpoints, key, tmp_path):
    path, hf = checkpoints[key]
    H.check_save_round_trip(path, hf, CHECKPOINTS[key][0], tmp_path / "saved", _pixels(2, 40, 24, seed=6))


@pytest.mark.parametrize("key,size", [("classifier", None), ("model", (24, 40)), ("classifier_shared", 48)])
def test_onnx_export_in_onnxruntime(checkpoints, key, size, tmp_path):
    pytest.importorskip("onnxruntime")
    path, hf = checkpoints[key]
    H.check_onnx_export(path, hf, size, tmp_path)


# microsoft/beit-base-patch16-224's preprocessor_config.json, as its checkpoints ship it (size shrunk to 40)
HUB_PROCESSOR = {"crop_size": 224, "do_center_crop": False, "do_normalize": True, "do_resize": True,
                 "feature_extractor_type": "BeitFeatureExtractor", "image_mean": [0.5, 0.5, 0.5],
                 "image_std": [0.5, 0.5, 0.5], "reduce_labels": False, "resample": 2, "size": 40}


def test_images_through_processor_and_model(checkpoints, tmp_path):
    path, hf = checkpoints["classifier"]
    # the hub's settings, then BeitImageProcessor's defaults (224 x 224, bicubic)
    for settings, side in ((HUB_PROCESSOR, 40), ({"image_processor_type": "BeitImageProcessor"}, 224)):
        pixels, want = H.processed_as_transformers(tmp_path, settings, [(60, 80), (40, 40), (90, 52)], side)
    with fg.no_grad(), torch.no_grad():
        np.testing.assert_allclose(from_pretrained(path)(pixels).numpy(), hf(want).logits.numpy(), **TOL)


def test_served_at_classify(checkpoints, tmp_path):
    """A classifier whose processor makes 40 x 24 images (not the 32 px it was made for) at /v1/classify:
    transformers' probabilities."""
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    pytest.importorskip("PIL")
    import httpx
    from serve_helpers import running_app

    from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app
    path, hf = checkpoints["classifier"]
    for f in ("config.json", "model.safetensors"):
        (tmp_path / f).write_bytes((path / f).read_bytes())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(dict(HUB_PROCESSOR, size=[40, 24])))
    image = np.random.default_rng(3).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    buf = io.BytesIO()
    np.save(buf, image)
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path)))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/classify", json={"input": [{"array": base64.b64encode(buf.getvalue()).decode()}] * 2})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 2 * (5 * 3 + 1)
    ref_proc = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    with torch.no_grad():
        pixels = ref_proc([image, image], return_tensors="pt")["pixel_values"]
        assert tuple(pixels.shape[-2:]) == (40, 24)
        probs = torch.softmax(hf(pixels).logits, -1).numpy()
    np.testing.assert_allclose([d["probs"] for d in r.json()["data"]], probs, rtol=1e-4, atol=1e-6)


def test_bad_inputs_refused(checkpoints, tmp_path):
    path, _ = checkpoints["classifier"]
    model = from_pretrained(path)
    with pytest.raises(ValueError, match=r"BeitModel: pixel_values must have shape \(batch, 3, height, width\), "
                                         r"got \(1, 1, 32, 32\)"):
        model(_pixels(1, channels=1))
    with pytest.raises(ValueError, match="BeitModel: pixel_values must hold at least one image of at least one 8x8"):
        model(_pixels(1, 6, 32))
    with pytest.raises(ValueError, match="use_mask_token=false"):
        model.beit(_pixels(1), bool_masked_pos=np.zeros((1, 16), bool))
    cfg = json.loads((path / "config.json").read_text())
    with pytest.raises(ValueError, match="BeitModel: hidden_size 32 must be a multiple of num_attention_heads 5"):
        BeitModel(dict(cfg, num_attention_heads=5))
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["beit.encoder.layer.1.lambda_2"]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor.*beit\.encoder\.layer\.1\.lambda_2"):
        from_pretrained(tmp_path)


def test_older_checkpoints_with_index_buffers_load(checkpoints, tmp_path):
    """Checkpoints saved by older transformers hold each bias's relative_position_index (int64): dropped on loading
    (recomputed from the grid), the outputs unchanged."""
    from safetensors.numpy import load_file, save_file

    from forgegrad.models.hf.beit import relative_index
    path, _ = checkpoints["classifier"]
    tensors = load_file(str(path / "model.safetensors"))
    for key in [k for k in tensors if k.endswith("relative_position_bias_table")]:
        tensors[key.replace("bias_table", "index")] = relative_index((4, 4))
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_bytes((path / "config.json").read_bytes())
    x = _pixels(2, 40, 24, seed=9)
    with fg.no_grad():
        np.testing.assert_array_equal(from_pretrained(tmp_path)(x).numpy(), from_pretrained(path)(x).numpy())
