"""Swin from checkpoints transformers wrote (tiny random configs: three stages, window 3, with and without an absolute
position table): last_hidden_state, pooler_output, logits, hidden_states and reshaped_hidden_states equal
transformers' at the config's image size and at sizes that are multiples of neither the patch nor the window (padding,
shifted windows with their mask, patch merging of odd maps), odd batches, eager and SDPA attention; gradients; the
encoder from a classifier's checkpoint; save_pretrained round trip; ONNX export in onnxruntime; images through the
hub's processor settings; bad inputs."""
import copy
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import CheckpointError, SwinForImageClassification, SwinModel
from forgegrad.models.hf.swin import SwinImageClassifierOutput

import hf_image_helpers as H
from hf_image_helpers import TOL, close as _close, compared as _compared, pixels as _pixels

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

SIZE = dict(image_size=32, patch_size=2, embed_dim=8, depths=[2, 2, 1], num_heads=[2, 4, 2], window_size=3,
            num_labels=5, initializer_range=0.3)
CHECKPOINTS = {"model": ("SwinModel", {}),
               "classifier": ("SwinForImageClassification", dict(hidden_act="gelu_new", mlp_ratio=2.0)),
               "classifier_abs": ("SwinForImageClassification", dict(use_absolute_embeddings=True, qkv_bias=False))}
# (batch, height, width): the config's size; sides multiples of neither the patch nor the window; a last stage map
# exactly one window (no shift); batch 1
SHAPES = [(3, 32, 32), (2, 26, 39), (1, 21, 35), (2, 24, 18)]
# with an absolute position table, transformers resizes it to height // patch x width // patch, which fails on a side
# the patch does not divide (the padded grid has one more row or column): sides multiples of the patch
SHAPES_ABS = [(3, 32, 32), (2, 26, 38), (1, 22, 34), (2, 24, 18)]


def _randomize(hf):
    """The relative position tables, position table and LayerNorms start at zeros / ones: random values instead."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(("bias_table", "position_embeddings")) or "norm" in name:
                p.add_(torch.randn_like(p) * 0.5)
    return hf


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return H.save_checkpoints(tmp_path_factory, CHECKPOINTS,
                              lambda cls, extra: transformers.SwinConfig(**dict(SIZE, **extra)), _randomize)


@pytest.mark.parametrize("key,attn", [(k, "eager") for k in CHECKPOINTS] + [("classifier", "sdpa")])
def test_outputs_equal_transformers(checkpoints, key, attn):
    path, _ = checkpoints[key]
    fresh = getattr(transformers, CHECKPOINTS[key][0]).from_pretrained(path, attn_implementation=attn).eval()
    model = from_pretrained(path)
    assert type(model) is {"SwinModel": SwinModel, "SwinForImageClassification": SwinForImageClassification}[
        CHECKPOINTS[key][0]]
    assert not model.training
    interpolate = key == "classifier_abs"
    for i, (b, h, w) in enumerate(SHAPES_ABS if interpolate else SHAPES):
        # transformers' SwinLayer keeps the shift it dropped for a map as small as its window: a fresh copy per size
        hf = copy.deepcopy(fresh)
        x = _pixels(b, h, w, seed=i)
        with torch.no_grad():
            want = hf(torch.tensor(x), output_hidden_states=True, interpolate_pos_encoding=interpolate)
        with fg.no_grad():
            plain = model(x, interpolate_pos_encoding=interpolate)
            got = model(x, output_hidden_states=True, interpolate_pos_encoding=interpolate)
        _close(_compared(plain), _compared(want), f"{key} {(b, h, w)}")
        _close(_compared(got), _compared(want), f"{key} {(b, h, w)}")
        assert len(got.hidden_states) == len(SIZE["depths"]) + 1
        _close(got.hidden_states, want.hidden_states, f"{key} {(b, h, w)} hidden states")
        _close(got.reshaped_hidden_states, want.reshaped_hidden_states, f"{key} {(b, h, w)} reshaped")
    if key == "model":
        assert plain.hidden_states is None and plain.reshaped_hidden_states is None
        np.testing.assert_allclose(plain.pooler_output.numpy(), plain.last_hidden_state.numpy().mean(axis=1),
                                   rtol=1e-6, atol=1e-6)
    else:
        assert isinstance(got, SwinImageClassifierOutput) and isinstance(plain, fg.Tensor)


def test_maps_smaller_than_the_window_refused(checkpoints):
    """A stage's map under the window: transformers fails on it (its bias table no longer fits); forgegrad says
    why."""
    path, hf = checkpoints["model"]
    x = _pixels(1, 8, 28)  # 4x14 patches, then 2x7: under the 3x3 window
    with pytest.raises(RuntimeError), torch.no_grad():
        copy.deepcopy(hf)(torch.tensor(x))
    with pytest.raises(ValueError, match=r"SwinModel: a stage's feature map is 2x7 patches, smaller than the window "
                                         r"\(3x3\)"):
        from_pretrained(path)(x)


def test_absolute_positions_need_interpolation_at_another_size(checkpoints):
    model = from_pretrained(checkpoints["classifier_abs"][0])
    with pytest.raises(ValueError, match="the image is 40x40 but this model's absolute position table takes 32x32; "
                                         "pass interpolate_pos_encoding=True"):
        model(_pixels(1, 40, 40))


def test_encoder_from_classifier_checkpoint_and_model_type_dispatch(checkpoints, tmp_path):
    # eval: the config's drop_path_rate (0.1) is on in training
    H.check_encoder_from_classifier(checkpoints, SwinModel, lambda hf: copy.deepcopy(hf).swin, tmp_path,
                                    eval_mode=True)


@pytest.mark.parametrize("key", ["model", "classifier_abs"])
def test_save_pretrained_round_trip(checkpoints, key, tmp_path):
    path, hf = checkpoints[key]
    H.check_save_round_trip(path, hf, CHECKPOINTS[key][0], tmp_path / "saved", _pixels(2, 32, 32, seed=6),
                            hf_call=copy.deepcopy(hf))


def test_gradients_match_transformers(checkpoints):
    """Cross-entropy at a padded, shifted size in training mode (no stochastic depth): the gradients of the position
    tables, patch merging, norms, attention and head equal transformers' (float64)."""
    path, hf = checkpoints["classifier_abs"]
    cfg = json.loads((path / "config.json").read_text())
    cfg["drop_path_rate"] = 0.0
    model = SwinForImageClassification(cfg)
    model.load_state_dict(from_pretrained(path).state_dict())
    ref = copy.deepcopy(hf).double().train()
    for m in ref.modules():  # the checkpoint's drop_path_rate 0.1: off on both sides
        if type(m).__name__ == "SwinDropPath":
            m.drop_prob = 0.0
    model.train()
    x, labels = _pixels(3, 26, 38, seed=7), np.array([0, 3, 4])
    torch.nn.functional.cross_entropy(ref(torch.tensor(x, dtype=torch.float64), interpolate_pos_encoding=True).logits,
                                      torch.tensor(labels)).backward()
    fg.nn.functional.cross_entropy(model(x, interpolate_pos_encoding=True), fg.tensor(labels)).backward()
    theirs = {n: p.grad.numpy() for n, p in ref.named_parameters()}
    mine = dict(model.named_parameters())
    pairs = {"swin.embeddings.position_embeddings": None, "swin.embeddings.patch_embeddings.projection.weight": None,
             "swin.embeddings.norm.weight": None, "swin.encoder.layers.0.downsample.reduction.weight": None,
             "swin.encoder.layers.1.downsample.norm.bias": None, "swin.layernorm.weight": None,
             "classifier.weight": None,
             # transformers 5 renames these modules in memory (the checkpoint keeps the names on the left)
             "swin.encoder.layers.0.blocks.1.attention.self.relative_position_bias_table":
                 "swin.encoder.layers.0.blocks.1.attention.relative_position_bias.relative_position_bias_table",
             "swin.encoder.layers.1.blocks.1.attention.self.query.weight":
                 "swin.encoder.layers.1.blocks.1.attention.q_proj.weight",
             "swin.encoder.layers.0.blocks.0.output.dense.weight": "swin.encoder.layers.0.blocks.0.mlp.fc2.weight"}
    for name, other in pairs.items():
        g = theirs[other or name]
        H.close_grad(mine[name], g, name)


@pytest.mark.parametrize("key,size", [("classifier", None), ("model", (26, 39)), ("classifier_abs", 40)])
def test_onnx_export_in_onnxruntime(checkpoints, key, size, tmp_path):
    """The graph (batch dynamic, image size fixed: padding and shift masks are constants) gives transformers'
    outputs in onnxruntime."""
    pytest.importorskip("onnxruntime")
    path, hf = checkpoints[key]
    H.check_onnx_export(path, hf, size, tmp_path,
                        hf_call=lambda x: copy.deepcopy(hf)(x, interpolate_pos_encoding=size is not None))


# microsoft/swin-tiny-patch4-window7-224's preprocessor_config.json, as its checkpoints ship it
HUB_PROCESSOR = {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
                 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
                 "size": 224}


def test_images_through_processor_and_model(checkpoints, tmp_path):
    path, hf = checkpoints["classifier"]
    pixels, want = H.processed_as_transformers(tmp_path, dict(HUB_PROCESSOR, size=40), [(60, 80), (40, 40), (90, 52)],
                                               40)
    with fg.no_grad(), torch.no_grad():
        np.testing.assert_allclose(from_pretrained(path)(pixels).numpy(), copy.deepcopy(hf)(want).logits.numpy(),
                                   **TOL)


def test_bad_inputs_refused(checkpoints, tmp_path):
    path, _ = checkpoints["classifier"]
    model = from_pretrained(path)
    with pytest.raises(ValueError, match=r"SwinModel: pixel_values must have shape \(batch, 3, height, width\), "
                                         r"got \(1, 1, 32, 32\)"):
        model(_pixels(1, channels=1))
    with pytest.raises(TypeError, match="float"):
        model(np.array([[["a"]]]))
    cfg = json.loads((path / "config.json").read_text())
    with pytest.raises(ValueError, match="SwinModel: a stage's width 8 must be a multiple of its num_heads 3"):
        SwinModel(dict(cfg, num_heads=[3, 4, 2]))
    with pytest.raises(ValueError, match="SwinModel: config num_heads must be a list of 3 positive ints"):
        SwinModel(dict(cfg, num_heads=[2, 4]))
    with pytest.raises(ValueError, match="SwinModel: config depths must be a list of positive ints"):
        SwinModel(dict(cfg, depths=[2, 0, 1]))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(dict(cfg, window_size=0)))
    (bad / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="window_size as a positive integer"):
        from_pretrained(bad)
    # a checkpoint missing a weight
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["swin.encoder.layers.1.blocks.0.attention.self.relative_position_bias_table"]
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing 1 tensor.*relative_position_bias_table"):
        from_pretrained(bad)


def test_older_checkpoints_with_index_buffers_load(checkpoints, tmp_path):
    """Checkpoints saved by older transformers hold each block's relative_position_index (int64): dropped on
    loading (recomputed from the window), the outputs unchanged."""
    from safetensors.numpy import load_file, save_file

    from forgegrad.models.hf.swin import relative_position_index
    path, _ = checkpoints["classifier"]
    tensors = load_file(str(path / "model.safetensors"))
    for key in [k for k in tensors if k.endswith("relative_position_bias_table")]:
        tensors[key.replace("bias_table", "index")] = relative_position_index(3).astype(np.int64)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_bytes((path / "config.json").read_bytes())
    x = _pixels(2, 26, 39, seed=9)
    with fg.no_grad():
        np.testing.assert_array_equal(from_pretrained(tmp_path)(x).numpy(), from_pretrained(path)(x).numpy())
