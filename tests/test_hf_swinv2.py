"""Swin V2 (Swinv2Model, Swinv2ForImageClassification, Swinv2Backbone) from checkpoints transformers wrote (tiny random
configs: shifted windows; pretrained_window_sizes non-zero; a non-square image_size whose last stage's window shrinks
to its map and stops shifting): last_hidden_state, pooler_output, logits, hidden_states, reshaped_hidden_states and
the backbone's feature maps equal transformers' at the config's size and at sizes that need padding (to the patch,
to the window, maps smaller than the window), odd batches; a logit scale past the clamp; gradients; the encoder from a
classifier's checkpoint; model_type dispatch; save_pretrained round trip; older checkpoints' buffers; ONNX export in
onnxruntime; images through the hub's processor settings; bad inputs."""
import copy
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, save_pretrained
from forgegrad.models.hf import (CheckpointError, Swinv2Backbone, Swinv2ForImageClassification, Swinv2Model)
from forgegrad.models.hf.onnx_vit import dynamic_refusal, export_vit, vit_names
from forgegrad.models.hf.swin import SwinImageClassifierOutput
from forgegrad.models.hf.swinv2 import log_spaced_offsets, stage_windows
import hf_image_helpers as H

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

# atol relative to the largest magnitude: cosine attention with logit scales up to 100 amplifies float32 rounding;
# transformers' own float32 outputs differ from its float64 ones by up to 2.8e-5 of the largest magnitude here
TOL = dict(rtol=1e-4, atol=4e-5)
SIZE = dict(image_size=32, patch_size=2, embed_dim=8, depths=[2, 2, 1], num_heads=[2, 4, 2], window_size=3,
            num_labels=5, initializer_range=0.3)
# image 24x40, patch 2: maps 12x20, 6x10, 3x5; window 4 -> stage windows 4, 4, 3 (the last no longer shifts)
NARROW = dict(SIZE, image_size=[24, 40], window_size=4, depths=[2, 2, 2], num_heads=[2, 2, 4], hidden_act="gelu_new",
              mlp_ratio=2.0, qkv_bias=False)
CHECKPOINTS = {"model": ("Swinv2Model", dict(SIZE)),
               "classifier": ("Swinv2ForImageClassification", dict(SIZE, pretrained_window_sizes=[4, 3, 0])),
               "classifier_narrow": ("Swinv2ForImageClassification", NARROW),
               "backbone": ("Swinv2Backbone", dict(SIZE, out_features=["stem", "stage1", "stage3"])),
               "backbone_indices": ("Swinv2Backbone", dict(NARROW, out_indices=[-2, -1],
                                                           pretrained_window_sizes=[6, 6, 0]))}
CLASSES = {"Swinv2Model": Swinv2Model, "Swinv2ForImageClassification": Swinv2ForImageClassification,
           "Swinv2Backbone": Swinv2Backbone}
# (batch, height, width): the config's size; sides multiples of neither the patch nor the window; maps smaller than
# the window (padded up to one); batch 1
SHAPES = [(3, 32, 32), (2, 26, 39), (1, 21, 35), (2, 9, 13)]


def _randomize(hf):
    """LayerNorms start at ones / zeros and logit scales at log 10: random values instead, in the first stage one
    head's scale past the clamp (log 100)."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.5)
            if name.endswith("logit_scale"):
                p.add_(torch.randn_like(p) * 0.5)
                if ".layers.0." in name:
                    p[0] = 5.0
    return hf


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for i, (key, (cls, cfg)) in enumerate(CHECKPOINTS.items()):
        torch.manual_seed(i)
        hf = _randomize(getattr(transformers, cls)(transformers.Swinv2Config(**cfg)).eval())
        path = tmp_path_factory.mktemp(key)
        hf.save_pretrained(path)
        out[key] = (path, hf, copy.deepcopy(hf).double())
    return out


def _reference(hf64, x, **kw):
    """transformers' outputs in float64: cosine attention with a scale up to 100 makes transformers' own float32 as far
    from them as forgegrad's (both within tolerance of float64)."""
    with torch.no_grad():
        return hf64(torch.tensor(x, dtype=torch.float64), **kw)


def _pixels(batch, h=32, w=32, seed=0, channels=3):
    return np.random.default_rng(seed).standard_normal((batch, channels, h, w)).astype(np.float32)


def _compared(out):
    if hasattr(out, "feature_maps"):
        return list(out.feature_maps) + list(out.hidden_states or ())
    if hasattr(out, "last_hidden_state"):
        return [out.last_hidden_state, out.pooler_output]
    return [out.logits if hasattr(out, "logits") else out]


def _close(got, want, msg=""):
    assert len(got) == len(want), msg
    for g, w in zip(got, want, strict=True):
        w = w.numpy()
        assert tuple(g.shape) == w.shape, msg
        np.testing.assert_allclose(g.numpy(), w, rtol=TOL["rtol"], atol=TOL["atol"] * max(1.0, np.abs(w).max()),
                                   err_msg=msg)


@pytest.mark.parametrize("key", list(CHECKPOINTS))
def test_outputs_equal_transformers(checkpoints, key):
    path, _, hf64 = checkpoints[key]
    cls = CHECKPOINTS[key][0]
    model = from_pretrained(path)
    assert type(model) is CLASSES[cls] and not model.training
    for i, (b, h, w) in enumerate(SHAPES):
        x = _pixels(b, h, w, seed=i)
        want = _reference(hf64, x, output_hidden_states=True)
        with fg.no_grad():
            plain = model(x)
            got = model(x, output_hidden_states=True)
        msg = f"{key} {(b, h, w)}"
        if cls == "Swinv2Backbone":
            assert plain.hidden_states is None and len(got.hidden_states) == len(SIZE["depths"]) + 1
            _close(list(plain.feature_maps), list(want.feature_maps), msg)
            _close(_compared(got), _compared(want), msg)
            continue
        _close(_compared(plain), _compared(want), msg)
        _close(_compared(got), _compared(want), msg)
        _close(got.hidden_states, want.hidden_states, msg + " hidden states")
        _close(got.reshaped_hidden_states, want.reshaped_hidden_states, msg + " reshaped")
    if cls == "Swinv2Model":
        assert plain.hidden_states is None and plain.reshaped_hidden_states is None
    elif cls == "Swinv2ForImageClassification":
        assert isinstance(got, SwinImageClassifierOutput) and isinstance(plain, fg.Tensor)


def test_windows_and_offsets_as_transformers_builds_them(checkpoints):
    """Each stage's window and shift follow the config's image size; the log-spaced offsets equal transformers'
    coordinate table (pretrained window or not)."""
    assert stage_windows(NARROW) == [(4, 2), (4, 2), (3, 0)]
    assert stage_windows(SIZE) == [(3, 1), (3, 1), (3, 1)]
    _, hf, _ = checkpoints["classifier"]
    for i, stage in enumerate(hf.swinv2.encoder.layers):
        attn = stage.blocks[0].attention.self
        want = attn.relative_coords_table.numpy().reshape(-1, 2)
        np.testing.assert_allclose(log_spaced_offsets(3, [4, 3, 0][i]), want, rtol=1e-6, atol=1e-7)


def test_gradients_match_transformers(checkpoints):
    """Cross-entropy at a padded, shifted size in training mode (no stochastic depth): the gradients of the logit
    scales, position-bias MLPs, attention, norms, patch merging and head equal transformers' (float64)."""
    path, _, hf64 = checkpoints["classifier"]
    cfg = json.loads((path / "config.json").read_text())
    cfg["drop_path_rate"] = 0.0
    model = Swinv2ForImageClassification(cfg)
    model.load_state_dict(from_pretrained(path).state_dict())
    ref = copy.deepcopy(hf64).train()
    for m in ref.modules():  # the checkpoint's drop_path_rate 0.1: off on both sides
        if type(m).__name__ == "Swinv2DropPath":
            m.drop_prob = 0.0
    model.train()
    x, labels = _pixels(3, 26, 38, seed=7), np.array([0, 3, 4])
    torch.nn.functional.cross_entropy(ref(torch.tensor(x, dtype=torch.float64)).logits,
                                      torch.tensor(labels)).backward()
    fg.nn.functional.cross_entropy(model(x), fg.tensor(labels)).backward()
    theirs = {n: p.grad.numpy() for n, p in ref.named_parameters()}
    mine = dict(model.named_parameters())
    names = ["swinv2.embeddings.patch_embeddings.projection.weight", "swinv2.embeddings.norm.weight",
             "swinv2.encoder.layers.0.blocks.1.attention.self.logit_scale",
             "swinv2.encoder.layers.0.blocks.1.attention.self.continuous_position_bias_mlp.0.weight",
             "swinv2.encoder.layers.1.blocks.0.attention.self.continuous_position_bias_mlp.2.weight",
             "swinv2.encoder.layers.1.blocks.1.attention.self.query.weight",
             "swinv2.encoder.layers.1.blocks.1.attention.self.key.weight",
             "swinv2.encoder.layers.0.blocks.0.layernorm_before.weight",
             "swinv2.encoder.layers.0.blocks.0.output.dense.weight",
             "swinv2.encoder.layers.0.downsample.reduction.weight", "swinv2.encoder.layers.1.downsample.norm.bias",
             "swinv2.layernorm.weight", "classifier.weight"]
    assert set(mine) == set(theirs)
    for name in names:
        g = theirs[name]
        assert np.abs(g).max() > 0, name  # the unclamped heads' scales; the clamped head has none
        np.testing.assert_allclose(mine[name].grad.numpy(), g, rtol=2e-3, atol=2e-4 * np.abs(g).max(), err_msg=name)
    clamped = mine["swinv2.encoder.layers.0.blocks.0.attention.self.logit_scale"].grad.numpy()
    assert clamped[0] == 0 and np.abs(clamped[1:]).max() > 0  # past log 100: the clamp passes no gradient


def test_encoder_and_backbone_from_classifier_checkpoint_and_model_type_dispatch(checkpoints, tmp_path):
    path, hf, hf64 = checkpoints["classifier"]
    tensors = {k: v.numpy() for k, v in from_pretrained(path).state_dict().items()}
    encoder = Swinv2Model(dict(hf.config.to_dict()))
    encoder.load_state_dict(encoder.from_hf(tensors))
    encoder.eval()
    backbone = Swinv2Backbone(dict(hf.config.to_dict(), out_features=["stage1", "stage3"], out_indices=None))
    backbone.load_state_dict(backbone.from_hf(tensors))
    backbone.eval()
    x = _pixels(2, 24, 40, seed=5)
    want = _reference(hf64.swinv2, x, output_hidden_states=True)
    with fg.no_grad():
        _close(_compared(encoder(x)), _compared(want))
        stage1, stage3 = backbone(x).feature_maps
    assert stage1.shape == (2, 8, 12, 20)  # stage1's map before its patch merging
    _close([stage3], [want.reshaped_hidden_states[-1]])  # the last stage has no merging: the model's last state
    path = checkpoints["model"][0]
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    cfg = json.loads((path / "config.json").read_text())
    del cfg["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert type(from_pretrained(tmp_path)) is Swinv2Model


@pytest.mark.parametrize("key", ["model", "classifier_narrow", "backbone"])
def test_save_pretrained_round_trip(checkpoints, key, tmp_path):
    path, hf, _ = checkpoints[key]
    save_pretrained(from_pretrained(path), tmp_path / "saved")
    back = getattr(transformers, CHECKPOINTS[key][0]).from_pretrained(tmp_path / "saved").eval()
    x = _pixels(2, 26, 30, seed=6)
    with torch.no_grad():
        for g, w in zip(_compared(back(torch.tensor(x))), _compared(hf(torch.tensor(x))), strict=True):
            np.testing.assert_array_equal(g.numpy(), w.numpy())


def test_older_checkpoints_with_buffers_load(checkpoints, tmp_path):
    """Checkpoints saved by older transformers hold each block's relative_coords_table and relative_position_index:
    dropped on loading (recomputed from the config), the outputs unchanged."""
    from safetensors.numpy import load_file, save_file
    path, hf, _ = checkpoints["classifier"]
    tensors = load_file(str(path / "model.safetensors"))
    for name, buffer in hf.named_buffers():
        tensors[name] = buffer.numpy()
    assert any(k.endswith("relative_coords_table") for k in tensors)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_bytes((path / "config.json").read_bytes())
    x = _pixels(2, 26, 39, seed=9)
    with fg.no_grad():
        np.testing.assert_array_equal(from_pretrained(tmp_path)(x).numpy(), from_pretrained(path)(x).numpy())


@pytest.mark.parametrize("key,size", [("classifier", None), ("model", (26, 39)), ("classifier_narrow", 13)])
def test_onnx_export_in_onnxruntime(checkpoints, key, size, tmp_path):
    """The graph (batch dynamic, image size fixed: padding and shift masks are constants) gives transformers'
    outputs in onnxruntime; dynamic image sizes are refused."""
    ort = pytest.importorskip("onnxruntime")
    path, _, hf64 = checkpoints[key]
    model = from_pretrained(path)
    report = export_vit(model, str(tmp_path / "m.onnx"), image_size=size)
    assert report.ok, report
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == vit_names(model)[1]
    size = model.config["image_size"] if size is None else size
    h, w = (size, size) if isinstance(size, int) else size
    for batch in (1, 3):
        x = _pixels(batch, h, w, seed=batch)
        want = _compared(_reference(hf64, x))
        _close([fg.tensor(g) for g in sess.run(None, {"pixel_values": x})], want)
    assert "Swin pads each stage's map" in dynamic_refusal(model)
    with pytest.raises(ValueError, match="dynamic_image_size is not supported for Swinv2"):
        export_vit(model, str(tmp_path / "d.onnx"), dynamic_image_size=True)


# microsoft/swinv2-tiny-patch4-window8-256's preprocessor_config.json, as its checkpoints ship it
HUB_PROCESSOR = {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
                 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
                 "size": 256}


def test_images_through_processor_and_model(checkpoints, tmp_path):
    path, _, hf64 = checkpoints["classifier"]
    pixels, want = H.processed_as_transformers(tmp_path, dict(HUB_PROCESSOR, size=36), [(60, 80), (40, 40), (90, 52)],
                                               36)
    with fg.no_grad():
        _close([from_pretrained(path)(pixels)], [_reference(hf64, want.numpy()).logits])


def test_bad_inputs_refused(checkpoints, tmp_path):
    path = checkpoints["classifier"][0]
    model = from_pretrained(path)
    with pytest.raises(ValueError, match=r"Swinv2Model: pixel_values must have shape \(batch, 3, height, width\), "
                                         r"got \(1, 1, 32, 32\)"):
        model(_pixels(1, channels=1))
    cfg = json.loads((path / "config.json").read_text())
    with pytest.raises(ValueError, match="Swinv2Model: a stage's width 8 must be a multiple of its num_heads 3"):
        Swinv2Model(dict(cfg, num_heads=[3, 4, 2]))
    with pytest.raises(ValueError, match="Swinv2Model: config pretrained_window_sizes must be a list of 3 ints"):
        Swinv2Model(dict(cfg, pretrained_window_sizes=[4, 3]))
    with pytest.raises(ValueError, match="Swinv2Backbone: config use_absolute_embeddings is not supported"):
        Swinv2Backbone(dict(cfg, use_absolute_embeddings=True))
    with pytest.raises(ValueError, match="Swinv2Backbone: config out_features names unknown stage"):
        Swinv2Backbone(dict(cfg, out_features=["stage9"]))
    bad = tmp_path / "bad"
    bad.mkdir()
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["swinv2.encoder.layers.1.blocks.0.attention.self.logit_scale"]
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing 1 tensor.*logit_scale"):
        from_pretrained(bad)
    (bad / "config.json").write_text(json.dumps(dict(cfg, embed_dim=0)))
    with pytest.raises(CheckpointError, match="embed_dim as a positive integer"):
        from_pretrained(bad)
