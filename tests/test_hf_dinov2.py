"""DINOv2 from checkpoints transformers wrote (tiny random configs, with and without SwiGLU): last_hidden_state,
pooler_output, logits and hidden states equal transformers' at the config's image size and at others (the position
table resized bicubically, as transformers always does for DINOv2), under eager and SDPA attention; the mask token;
gradients; save_pretrained round trip; ONNX export in onnxruntime (at the config's size and another); images through
load_image_processor (DINOv2's BitImageProcessor) and the model; output_hidden_states of ViT and DeiT; bad inputs."""
import copy
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import (DeiTForImageClassificationWithTeacher, Dinov2Model,
                                 ViTForImageClassification, ViTModel)
from forgegrad.models.hf.onnx_vit import export_vit
from forgegrad.models.hf.vit import ImageClassifierOutput

import hf_image_helpers as H
from hf_image_helpers import TOL, close as _close, compared as _compared, pixels as _pixels

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8, num_labels=5,
            initializer_range=0.3, layerscale_value=0.5)
# name -> (transformers class, extra config)
CHECKPOINTS = {"model": ("Dinov2Model", {}), "model_swiglu": ("Dinov2Model", dict(use_swiglu_ffn=True, mlp_ratio=3)),
               "classifier": ("Dinov2ForImageClassification", dict(qkv_bias=False, hidden_act="gelu_new")),
               "classifier_swiglu": ("Dinov2ForImageClassification", dict(use_swiglu_ffn=True))}
# (batch, height, width): the config's size; larger and uneven; sides not multiples of the patch; as many patches as
# the table in a non-square grid (transformers resizes it then too)
SHAPES = [(3, 32, 32), (2, 48, 40), (1, 20, 27), (1, 64, 16)]


def _randomize(hf):
    """Random CLS and mask tokens and layer scales (they start at zeros and a constant)."""
    return H.randomize_parameters(hf, ("cls_token", "mask_token", "lambda1"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return H.save_checkpoints(tmp_path_factory, CHECKPOINTS,
                              lambda cls, extra: transformers.Dinov2Config(**dict(SIZE, **extra)), _randomize)


@pytest.mark.parametrize("key,attn", [(k, "eager") for k in CHECKPOINTS] + [("classifier_swiglu", "sdpa")])
def test_outputs_equal_transformers(checkpoints, key, attn):
    model, plain, got = H.check_outputs(checkpoints[key][0], CHECKPOINTS[key][0], SHAPES, SIZE["num_hidden_layers"],
                                        attn, key)
    assert not model.training
    if key.startswith("model"):
        assert plain.hidden_states is None
        np.testing.assert_array_equal(plain.pooler_output.numpy(), plain.last_hidden_state.numpy()[:, 0])
    else:
        assert isinstance(got, ImageClassifierOutput) and isinstance(plain, fg.Tensor)


def test_mask_token_as_transformers(checkpoints):
    path, hf = checkpoints["model_swiglu"]
    model = from_pretrained(path)
    x = _pixels(2, 40, 32, seed=4)
    mask = np.random.default_rng(4).random((2, 20)) < 0.4
    with torch.no_grad():
        want = hf(torch.tensor(x), bool_masked_pos=torch.tensor(mask))
    with fg.no_grad():
        got = model(x, bool_masked_pos=mask)
        unmasked = model(x)
    _close(_compared(got), _compared(want))
    assert not np.allclose(got.pooler_output.numpy(), unmasked.pooler_output.numpy())
    with pytest.raises(ValueError, match=r"bool_masked_pos must be a boolean array \(batch, patches\) = \(2, 20\)"):
        model(x, bool_masked_pos=mask[:, :16])
    cfg = dict(model.config, use_mask_token=False)
    with pytest.raises(ValueError, match="use_mask_token=false"):
        Dinov2Model(cfg)(x, bool_masked_pos=mask)


def test_encoder_from_classifier_checkpoint_and_model_type_dispatch(checkpoints, tmp_path):
    """Dinov2Model.from_hf reads a classifier checkpoint's ``dinov2.`` weights; a config.json naming no
    architecture loads as Dinov2Model by its model_type, as ViT's does."""
    H.check_encoder_from_classifier(checkpoints, Dinov2Model, lambda hf: hf.dinov2, tmp_path)


@pytest.mark.parametrize("key", ["model_swiglu", "classifier"])
def test_save_pretrained_round_trip(checkpoints, key, tmp_path):
    path, hf = checkpoints[key]
    H.check_save_round_trip(path, hf, CHECKPOINTS[key][0], tmp_path / "saved", _pixels(2, 40, 24, seed=6))


def test_gradients_match_transformers(checkpoints):
    """Cross-entropy at an interpolated size, in training mode: every parameter's gradient (position table, mask
    token aside: unused) equals transformers' (float64)."""
    path, hf = checkpoints["classifier_swiglu"]
    model = from_pretrained(path).train()
    ref = copy.deepcopy(hf).double().train()
    x, labels = _pixels(3, 40, 24, seed=7), np.array([0, 3, 4])
    torch.nn.functional.cross_entropy(ref(torch.tensor(x, dtype=torch.float64)).logits,
                                      torch.tensor(labels)).backward()
    fg.nn.functional.cross_entropy(model(x), fg.tensor(labels)).backward()
    # transformers 5 renames the layers' modules in memory (q_proj, gate_proj / up_proj for weights_in, ...)
    theirs = {}
    for name, p in ref.named_parameters():
        theirs[name] = p.grad.numpy() if p.grad is not None else None
    mine = dict(model.named_parameters())
    for name in ("dinov2.embeddings.position_embeddings", "dinov2.embeddings.cls_token",
                 "dinov2.embeddings.patch_embeddings.projection.weight", "dinov2.layernorm.weight",
                 "dinov2.encoder.layer.0.layer_scale1.lambda1", "dinov2.encoder.layer.1.norm2.bias",
                 "classifier.weight"):
        g = theirs[name]
        H.close_grad(mine[name], g, name)
    gate, up = (theirs[f"dinov2.encoder.layer.0.mlp.{n}_proj.weight"] for n in ("gate", "up"))
    g = np.concatenate([gate, up])
    np.testing.assert_allclose(mine["dinov2.encoder.layer.0.mlp.weights_in.weight"].grad.numpy(), g, rtol=2e-3,
                               atol=2e-4 * np.abs(g).max())


def test_stochastic_depth_in_training(checkpoints):
    """drop_path_rate: in training each sample's attention and MLP branches are each either dropped or kept and scaled
    by 1 / (1 - p) (both outcomes seen); in eval the model is the one without it."""
    path, _ = checkpoints["model"]
    cfg = json.loads((path / "config.json").read_text())
    plain = from_pretrained(path)
    model = Dinov2Model(dict(cfg, drop_path_rate=0.5, num_hidden_layers=1))
    model.load_state_dict({k: v for k, v in plain.state_dict().items() if ".layer.1." not in k})
    x = _pixels(16, seed=11)
    with fg.no_grad():
        states = model.train()(x, output_hidden_states=True).hidden_states
        layer = model.eval().encoder.layer[0]
        x0, x1 = states[0].numpy(), states[1].numpy()
        attn = layer.layer_scale1(layer.attention(layer.norm1(states[0]))).numpy()
        seen = set()
        for b in range(len(x)):
            found = None
            for a_kept in (0, 1):
                mid = x0[b] + a_kept * 2 * attn[b]
                mlp = layer.layer_scale2(layer.mlp(layer.norm2(fg.tensor(mid[None])))).numpy()[0]
                for m_kept in (0, 1):
                    if np.allclose(x1[b], mid + m_kept * 2 * mlp, rtol=1e-4, atol=1e-4):
                        found = (a_kept, m_kept)
            assert found is not None, b
            seen |= {("attention", found[0]), ("mlp", found[1])}
        assert seen == {(n, k) for n in ("attention", "mlp") for k in (0, 1)}
        one_layer = Dinov2Model(dict(cfg, num_hidden_layers=1))
        one_layer.load_state_dict(model.state_dict())
        np.testing.assert_array_equal(model(x).last_hidden_state.numpy(), one_layer.eval()(x).last_hidden_state.numpy())


@pytest.mark.parametrize("key,size", [("classifier_swiglu", None), ("classifier", (24, 40)), ("model", 48)])
def test_onnx_export_in_onnxruntime(checkpoints, key, size, tmp_path):
    """The graph (batch dynamic, image size fixed: the config's, or another with the resize as constant matrices)
    gives transformers' outputs in onnxruntime."""
    pytest.importorskip("onnxruntime")
    path, hf = checkpoints[key]
    H.check_onnx_export(path, hf, size, tmp_path)


def test_vit_onnx_export_at_another_size(tmp_path):
    """A ViT exported at another image size runs with interpolate_pos_encoding=True: transformers' outputs."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, image_size=32,
        patch_size=8, num_labels=3)).eval()
    hf.save_pretrained(tmp_path)
    assert export_vit(from_pretrained(tmp_path), str(tmp_path / "m.onnx"), image_size=(40, 24)).ok
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = _pixels(2, 40, 24, seed=9)
    with torch.no_grad():
        want = hf(torch.tensor(x), interpolate_pos_encoding=True).logits.numpy()
    np.testing.assert_allclose(sess.run(None, {"pixel_values": x})[0], want, **TOL)
    with pytest.raises(ValueError, match="export_vit: image_size must be a positive int"):
        export_vit(from_pretrained(tmp_path), str(tmp_path / "no.onnx"), image_size=(0, 8))
    with pytest.raises(ValueError, match="at least one 8x8 patch"):
        export_vit(from_pretrained(tmp_path), str(tmp_path / "no.onnx"), image_size=4)


# DINOv2's hub preprocessor_config.json (facebook/dinov2-base), as its checkpoints ship it
HUB_PROCESSOR = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
                 "do_normalize": True, "do_rescale": True, "do_resize": True,
                 "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "BitImageProcessor",
                 "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 0.00392156862745098,
                 "size": {"shortest_edge": 256}}


def test_images_through_processor_and_model(checkpoints, tmp_path):
    """uint8 pictures -> load_image_processor (the hub's BitImageProcessor settings: shortest edge 256 bicubic, 224
    crop, ImageNet mean / std) -> Dinov2ForImageClassification trained at 32 px: transformers' pixel values bit for
    bit and its logits (the 4x4 position table resized to 28x28)."""
    path, hf = checkpoints["classifier"]
    pixels, want = H.processed_as_transformers(tmp_path, HUB_PROCESSOR, [(300, 400), (224, 224), (500, 260)], 224)
    with fg.no_grad(), torch.no_grad():
        np.testing.assert_allclose(from_pretrained(path)(pixels).numpy(), hf(want).logits.numpy(), **TOL)


def _vit_family(tmp_path):
    out = {}
    for i, name in enumerate(("ViTModel", "ViTForImageClassification", "DeiTForImageClassificationWithTeacher")):
        cfg = (transformers.ViTConfig if name.startswith("ViT") else transformers.DeiTConfig)(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
            patch_size=8, num_labels=3, initializer_range=0.3)
        torch.manual_seed(i)
        hf = getattr(transformers, name)(cfg).eval()
        hf.save_pretrained(tmp_path / name)
        out[name] = (tmp_path / name, hf)
    return out


def test_vit_and_deit_hidden_states(tmp_path):
    """output_hidden_states=True on ViT and DeiT: transformers' hidden states (embeddings, then each layer), at the
    config's size and with interpolate_pos_encoding; the classifiers' (logits, hidden_states) tuple."""
    for name, (path, hf) in _vit_family(tmp_path).items():
        model = from_pretrained(path)
        assert type(model) in (ViTModel, ViTForImageClassification, DeiTForImageClassificationWithTeacher)
        for kw, x in [({}, _pixels(2)), ({"interpolate_pos_encoding": True}, _pixels(1, 40, 24, seed=3))]:
            with torch.no_grad():
                want = hf(torch.tensor(x), output_hidden_states=True, **kw)
                tup = hf(torch.tensor(x), output_hidden_states=True, return_dict=False, **kw)
            with fg.no_grad():
                got = model(x, output_hidden_states=True, **kw)
            assert len(got) == len(tup) and len(got.hidden_states) == 3, name
            _close([t for t in got if not isinstance(t, tuple)], [t for t in tup if not isinstance(t, tuple)],
                   f"{name} {kw}")  # in transformers' order
            _close(got.hidden_states, want.hidden_states, f"{name} {kw} hidden states")


def test_bad_inputs_refused(checkpoints, tmp_path):
    model = from_pretrained(checkpoints["classifier"][0])
    with pytest.raises(ValueError, match=r"Dinov2Model: pixel_values must have shape \(batch, 3, height, width\), "
                                         r"got \(1, 1, 32, 32\)"):
        model(_pixels(1, channels=1))
    with pytest.raises(ValueError, match="Dinov2Model: pixel_values must hold at least one image of at least one "
                                         "8x8 patch"):
        model(_pixels(1, 6, 32))
    with pytest.raises(TypeError, match="float"):
        model(np.array([[["a"]]]))
    with pytest.raises(TypeError, match="ViT, DeiT or DINOv2"):
        export_vit(fg.nn.Linear(2, 2), str(tmp_path / "no.onnx"))
    # ViT without interpolate_pos_encoding: only its config's size (an image its patch does not divide, 36 px, too)
    vit = from_pretrained(_vit_family(tmp_path)["ViTModel"][0])
    for h, w in [(36, 36), (32, 36), (40, 40)]:
        with pytest.raises(ValueError, match=f"ViTModel: the image is {h}x{w} but the model takes 32x32; pass "
                                             "interpolate_pos_encoding=True"):
            vit(_pixels(1, h, w))
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        vit(_pixels(1, channels=4))
    cfg = json.loads((checkpoints["model"][0] / "config.json").read_text())
    with pytest.raises(ValueError, match="Dinov2Model: hidden_size 32 must be a multiple of num_attention_heads 5"):
        Dinov2Model(dict(cfg, num_attention_heads=5))
    with pytest.raises(ValueError, match="Dinov2Model: config patch_size must be a positive int"):
        Dinov2Model(dict(cfg, patch_size=0))
    with pytest.raises(ValueError, match="Dinov2Model: config mlp_ratio must be a positive number"):
        Dinov2Model(dict(cfg, mlp_ratio="4"))
