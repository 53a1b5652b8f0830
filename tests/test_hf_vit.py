"""ViT and DeiT from checkpoints transformers wrote (tiny random configs): hidden states, pooler and logits equal
transformers' under its eager and SDPA attention, with interpolated position tables too; gradients of a fine-tuning
loss and a few classifier-only SGD steps; save_pretrained round trip; ONNX export with a dynamic batch in
onnxruntime; images through load_image_processor and the model against transformers' processor and model."""
import copy

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import (DeiTForImageClassification, DeiTForImageClassificationWithTeacher, DeiTModel,
                                 ViTForImageClassification, ViTModel, load_image_processor)
from forgegrad.models.hf.onnx_vit import export_vit, vit_names
from forgegrad.models.hf.vit import bicubic_matrix

import hf_image_helpers as H
from hf_image_helpers import TOL, compared as _compared, pixels as _pixels

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
            patch_size=8, num_labels=5, initializer_range=0.3)
ARCHS = {"ViTModel": ViTModel, "ViTForImageClassification": ViTForImageClassification, "DeiTModel": DeiTModel,
         "DeiTForImageClassification": DeiTForImageClassification,
         "DeiTForImageClassificationWithTeacher": DeiTForImageClassificationWithTeacher}


def _config(name, **kw):
    cfg = (transformers.ViTConfig if name.startswith("ViT") else transformers.DeiTConfig)(**dict(SIZE, **kw))
    return cfg


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Each architecture saved by transformers (seeded random weights; DeiT's tokens randomized too, as they start
    at zero)."""
    return H.save_checkpoints(tmp_path_factory, {name: (name, {}) for name in ARCHS},
                              lambda name, extra: _config(name, **extra),
                              lambda hf: H.randomize_parameters(hf, ("cls_token", "distillation_token")))


# our (checkpoint) parameter names -> transformers 5's module names (it renames them when it loads a checkpoint)
_IN_MEMORY = [("encoder.layer.", "layers."), ("attention.attention.query", "attention.q_proj"),
              ("attention.attention.key", "attention.k_proj"), ("attention.attention.value", "attention.v_proj"),
              ("attention.output.dense", "attention.o_proj"), ("intermediate.dense", "mlp.fc1"),
              ("output.dense", "mlp.fc2")]


def _hf_name(name):
    for a, b in _IN_MEMORY:
        name = name.replace(a, b)
    return name


@pytest.mark.parametrize("name,attn", [(n, "eager") for n in ARCHS] + [("ViTModel", "sdpa"),
                                                                        ("DeiTForImageClassificationWithTeacher",
                                                                         "sdpa")])
def test_outputs_equal_transformers(checkpoints, name, attn):
    path, _ = checkpoints[name]
    hf = getattr(transformers, name).from_pretrained(path, attn_implementation=attn).eval()
    model = from_pretrained(path)
    assert type(model) is ARCHS[name] and not model.training
    for kw, x in [({}, _pixels(3)), ({"interpolate_pos_encoding": True}, _pixels(2, 48, 40, seed=1)),
                  ({"interpolate_pos_encoding": True}, _pixels(1, 16, 16, seed=2))]:
        with torch.no_grad():
            want = _compared(hf(torch.tensor(x), **kw))
        with fg.no_grad():
            got = _compared(model(x, **kw))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.numpy(), w.numpy(), **TOL, err_msg=f"{name} {kw}")
    if name == "DeiTForImageClassificationWithTeacher":
        with torch.no_grad():
            ref = hf(torch.tensor(_pixels(2)))
        with fg.no_grad():
            cls_logits, dist_logits = model.heads(_pixels(2))
        np.testing.assert_allclose(cls_logits.numpy(), ref.cls_logits.numpy(), **TOL)
        np.testing.assert_allclose(dist_logits.numpy(), ref.distillation_logits.numpy(), **TOL)


def test_bicubic_matrix_is_torch_interpolate():
    for n, m in [(4, 6), (4, 5), (6, 3), (5, 5), (3, 1)]:
        x = np.random.default_rng(n * m).standard_normal((n, n))
        want = torch.nn.functional.interpolate(torch.tensor(x)[None, None], size=(m, m + 1), mode="bicubic",
                                               align_corners=False)[0, 0].numpy()
        got = bicubic_matrix(n, m) @ x @ bicubic_matrix(n, m + 1).T
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_encoder_from_a_classifier_checkpoint(checkpoints):
    """ViTModel.from_hf reads a ViTForImageClassification checkpoint's ``vit.`` weights, and drops its pooler where
    the checkpoint has none (a task model's encoder is saved with add_pooling_layer=False)."""
    path, hf = checkpoints["ViTForImageClassification"]
    model = from_pretrained(path)
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    encoder = ViTModel(dict(model.config))
    picked = encoder.from_hf(tensors)
    assert set(picked) == {k[4:] for k in tensors if k.startswith("vit.")} and encoder.pooler is None
    encoder.load_state_dict(picked)
    x = _pixels(2)
    with torch.no_grad():
        want = hf.vit(torch.tensor(x)).last_hidden_state.numpy()
    with fg.no_grad():
        out = encoder(x)
    assert out.pooler_output is None
    np.testing.assert_allclose(out.last_hidden_state.numpy(), want, **TOL)


def test_wrong_images_refused(checkpoints):
    model = from_pretrained(checkpoints["ViTModel"][0])
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model(_pixels(1, 48, 32))
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        model(np.zeros((1, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="shape"):
        model(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(TypeError, match="float"):
        model(np.array([["a"]]))
    with pytest.raises(ValueError, match="at least one image"):  # not a reshape error deep inside
        model(np.zeros((0, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="pixel_values must hold at least one image of at least one 8x8 patch"):
        model(np.zeros((1, 3, 4, 40), np.float32), interpolate_pos_encoding=True)


def test_gradients_match_transformers(checkpoints):
    """Cross-entropy on labels, in training mode: every parameter's gradient equals transformers' (float64)."""
    path, hf = checkpoints["ViTForImageClassification"]
    model = from_pretrained(path).train()
    ref = copy.deepcopy(hf).double().train()
    x, labels = _pixels(4, seed=3), np.array([0, 3, 1, 4])
    torch.nn.functional.cross_entropy(ref(torch.tensor(x, dtype=torch.float64)).logits,
                                      torch.tensor(labels)).backward()
    fg.nn.functional.cross_entropy(model(x), fg.tensor(labels)).backward()
    theirs = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        g = theirs[_hf_name(name)].grad.numpy()
        # key biases get a zero gradient (softmax ignores a shift); ours is float32 rounding noise around it
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=2e-3, atol=2e-4 * np.abs(g).max() + 1e-6, err_msg=name)


def test_gradients_through_interpolated_positions(checkpoints):
    """At another image size (interpolate_pos_encoding=True) the position table's gradient is transformers' too: the
    bicubic resize is a product with constant matrices."""
    path, hf = checkpoints["DeiTForImageClassificationWithTeacher"]
    model = from_pretrained(path).train()
    ref = copy.deepcopy(hf).double().train()
    x, w = _pixels(2, 48, 40, seed=6), np.random.default_rng(6).standard_normal((2, SIZE["num_labels"]))
    (ref(torch.tensor(x, dtype=torch.float64), interpolate_pos_encoding=True).logits * torch.tensor(w)).sum().backward()
    (model(x, interpolate_pos_encoding=True) * fg.tensor(w.astype(np.float32))).sum().backward()
    theirs = dict(ref.named_parameters())
    for name in ("deit.embeddings.position_embeddings", "deit.embeddings.cls_token",
                 "deit.embeddings.distillation_token", "deit.embeddings.patch_embeddings.projection.weight"):
        g = theirs[name].grad.numpy()
        got = dict(model.named_parameters())[name].grad.numpy()
        np.testing.assert_allclose(got, g, rtol=2e-3, atol=2e-4 * np.abs(g).max(), err_msg=name)


def test_fine_tune_classifier_as_transformers(checkpoints):
    """The encoder frozen, three SGD steps on the classifier: the same weights and logits as torch's."""
    path, hf = checkpoints["DeiTForImageClassification"]
    model = from_pretrained(path).train()
    ref = copy.deepcopy(hf).train()
    for p in model.deit.parameters():
        p.requires_grad = False
    for p in ref.deit.parameters():
        p.requires_grad = False
    opt = fg.optim.SGD(model.classifier.parameters(), lr=0.5, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.classifier.parameters(), lr=0.5, momentum=0.9)
    for step in range(3):
        x, labels = _pixels(4, seed=10 + step), np.array([1, 2, 3, 4])
        opt.zero_grad()
        fg.nn.functional.cross_entropy(model(x), fg.tensor(labels)).backward()
        opt.step()
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(torch.tensor(x)).logits, torch.tensor(labels)).backward()
        ref_opt.step()
    assert model.deit.layernorm.weight.grad is None
    np.testing.assert_allclose(model.classifier.weight.numpy(), ref.classifier.weight.detach().numpy(), **TOL)
    x = _pixels(2, seed=20)
    with fg.no_grad(), torch.no_grad():
        np.testing.assert_allclose(model.eval()(x).numpy(), ref.eval()(torch.tensor(x)).logits.numpy(), **TOL)


@pytest.mark.parametrize("name", ["ViTModel", "DeiTForImageClassificationWithTeacher"])
def test_save_pretrained_round_trip(checkpoints, name, tmp_path):
    path, hf = checkpoints[name]
    H.check_save_round_trip(path, hf, name, tmp_path / "saved", _pixels(2, seed=5))


@pytest.mark.parametrize("name", ["ViTForImageClassification", "DeiTForImageClassificationWithTeacher", "ViTModel"])
def test_onnx_export_dynamic_batch(checkpoints, name, tmp_path):
    import onnxruntime as ort
    path, hf = checkpoints[name]
    report = export_vit(from_pretrained(path), str(tmp_path / "m.onnx"))
    assert report.ok, report
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == vit_names(from_pretrained(path))[1]
    for batch in (1, 4):
        x = _pixels(batch, seed=batch)
        with torch.no_grad():
            want = _compared(hf(torch.tensor(x)))
        for g, w in zip(sess.run(None, {"pixel_values": x}), want):
            np.testing.assert_allclose(g, w.numpy(), **TOL)
    with pytest.raises(TypeError, match="ViT, DeiT or DINOv2"):
        export_vit(fg.nn.Linear(2, 2), str(tmp_path / "no.onnx"))


def test_images_through_processor_and_model(checkpoints, tmp_path):
    """uint8 pictures of any size -> load_image_processor -> ViTForImageClassification: transformers' logits."""
    path, hf = checkpoints["ViTForImageClassification"]
    transformers.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    proc, ref_proc = load_image_processor(path), transformers.AutoImageProcessor.from_pretrained(path)
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 60), (32, 32), (100, 20)]]
    pixels = proc(images)["pixel_values"]
    want = ref_proc(images, return_tensors="pt")["pixel_values"]
    np.testing.assert_array_equal(pixels, want.numpy())
    with fg.no_grad(), torch.no_grad():
        np.testing.assert_allclose(from_pretrained(path)(pixels).numpy(), hf(want).logits.numpy(), **TOL)


def test_bfloat16_weights(checkpoints, tmp_path):
    """A bfloat16 checkpoint loaded with dtype="bfloat16" (Linear weights kept in bfloat16) gives the float32
    model's logits bit for bit, and those are transformers' (its bfloat16 weights widened to float32)."""
    _, hf = checkpoints["ViTForImageClassification"]
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(tmp_path)
    wide, narrow = from_pretrained(tmp_path), from_pretrained(tmp_path, dtype="bfloat16")
    assert any(type(m).__name__ == "WeightOnlyBF16Linear" for m in narrow.modules())
    x = _pixels(2, seed=8)
    with fg.no_grad(), torch.no_grad():
        np.testing.assert_array_equal(narrow(x).numpy(), wide(x).numpy())
        ref = copy.deepcopy(hf).to(torch.bfloat16).float()
        np.testing.assert_allclose(wide(x).numpy(), ref(torch.tensor(x)).logits.numpy(), **TOL)
