"""Dinov2Backbone and SwinBackbone from checkpoints transformers wrote (tiny random configs): feature_maps and
hidden_states equal transformers' for several out_features / out_indices choices (the stem included), DINOv2 with
apply_layernorm and reshape_hidden_states on and off, at odd image sizes (sides multiples of neither the patch nor the
window, Swin maps smaller than the window) and batches 1 and 3; save_pretrained round trip; the checkpoint's naming
variants; bad out_features / out_indices and bad pixels refused."""
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained, save_pretrained
from forgegrad.models.hf import Dinov2Backbone, Dinov2WithRegistersBackbone, SwinBackbone
from forgegrad.models.hf._files import read_weights

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
transformers.logging.set_verbosity_error()

TOL = dict(rtol=1e-4, atol=2e-5)
DINO = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8,
            initializer_range=0.3, layerscale_value=0.5)
SWIN = dict(image_size=32, patch_size=2, embed_dim=8, depths=[2, 2, 1], num_heads=[2, 4, 2], window_size=3,
            initializer_range=0.3)
# name -> (transformers class, config)
CHECKPOINTS = {
    "dino_default": ("Dinov2Backbone", dict(DINO)),
    "dino_stem": ("Dinov2Backbone", dict(DINO, out_features=["stem", "stage1", "stage3"])),
    "dino_flat": ("Dinov2Backbone", dict(DINO, out_indices=[0, -2], reshape_hidden_states=False, use_swiglu_ffn=True)),
    "dino_no_norm": ("Dinov2Backbone", dict(DINO, out_features=["stage2", "stage3"], apply_layernorm=False)),
    "dino_raw": ("Dinov2Backbone", dict(DINO, out_features=["stem"], apply_layernorm=False,
                                        reshape_hidden_states=False)),
    "registers": ("Dinov2WithRegistersBackbone", dict(DINO, num_register_tokens=2, out_features=["stem", "stage3"])),
    "registers_flat": ("Dinov2WithRegistersBackbone", dict(DINO, num_register_tokens=3, reshape_hidden_states=False)),
    "swin_default": ("SwinBackbone", dict(SWIN)),
    "swin_all": ("SwinBackbone", dict(SWIN, out_features=["stem", "stage1", "stage2", "stage3"])),
    "swin_indices": ("SwinBackbone", dict(SWIN, out_indices=[1, -1], hidden_act="gelu_new", qkv_bias=False)),
}
# (batch, height, width): the config's size; sides multiples of neither the patch nor the window; small images whose
# later Swin maps are smaller than the window (transformers' backbone pads them up to one and still shifts)
SHAPES = [(3, 32, 32), (1, 27, 41), (3, 45, 38), (1, 9, 11)]


def _randomize(hf):
    """Tokens, layer scales, relative position tables and LayerNorms start at constants: random values instead."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(("cls_token", "mask_token", "register_tokens", "lambda1", "bias_table")) or "norm" in name:
                p.add_(torch.randn_like(p) * 0.5)
    return hf


def _config(cls, cfg):
    if cls.startswith("Dinov2WithRegisters"):
        return transformers.Dinov2WithRegistersConfig(**cfg)
    return (transformers.Dinov2Config if cls.startswith("Dinov2") else transformers.SwinConfig)(**cfg)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for i, (key, (cls, cfg)) in enumerate(CHECKPOINTS.items()):
        torch.manual_seed(i)
        hf = _randomize(getattr(transformers, cls)(_config(cls, cfg)).eval())
        path = tmp_path_factory.mktemp(key)
        hf.save_pretrained(path)
        out[key] = (path, hf)
    return out


def _pixels(batch, h=32, w=32, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, h, w)).astype(np.float32)


def _close(got, want, msg=""):
    assert len(got) == len(want), msg
    for g, w in zip(got, want, strict=True):
        w = w.numpy()
        assert tuple(g.shape) == w.shape, msg
        np.testing.assert_allclose(g.numpy(), w, rtol=TOL["rtol"], atol=TOL["atol"] * max(1.0, np.abs(w).max()),
                                   err_msg=msg)


def _reference(hf, x, hidden=True):
    with torch.no_grad():
        return hf(torch.from_numpy(x), output_hidden_states=hidden)


@pytest.mark.parametrize("key", list(CHECKPOINTS))
def test_feature_maps_equal_transformers(checkpoints, key):
    path, _ = checkpoints[key]
    cls = CHECKPOINTS[key][0]
    fresh = getattr(transformers, cls).from_pretrained(path).eval()  # a fresh model: its own config, from the files
    model = from_pretrained(path)
    assert type(model) is {"Dinov2Backbone": Dinov2Backbone, "Dinov2WithRegistersBackbone": Dinov2WithRegistersBackbone,
                           "SwinBackbone": SwinBackbone}[cls]
    n = len(fresh.stage_names)  # transformers keeps negative out_indices as given; forgegrad counts them from 0
    assert model.out_features == fresh.out_features and model.out_indices == [i % n for i in fresh.out_indices]
    assert model.stage_names == fresh.stage_names and model.channels == fresh.channels
    for b, h, w in SHAPES:
        x = _pixels(b, h, w, seed=h)
        want = _reference(fresh, x)
        got = model(x, output_hidden_states=True)
        _close(got.feature_maps, want.feature_maps, f"{key} {b}x{h}x{w} feature_maps")
        _close(got.hidden_states, want.hidden_states, f"{key} {b}x{h}x{w} hidden_states")
        plain = model(x)
        assert plain.hidden_states is None
        _close(plain.feature_maps, want.feature_maps, f"{key} {b}x{h}x{w} without hidden states")


def test_feature_map_layouts(checkpoints):
    """DINOv2: (B, hidden, H // patch, W // patch) maps, or the tokens with the CLS token when not reshaped; Swin:
    each stage's map before its patch merging."""
    x = _pixels(3, 45, 38)
    assert [tuple(t.shape) for t in from_pretrained(checkpoints["dino_stem"][0])(x).feature_maps] == [(3, 32, 5, 4)] * 3
    assert [tuple(t.shape) for t in from_pretrained(checkpoints["dino_flat"][0])(x).feature_maps] == [(3, 21, 32)] * 2
    maps = from_pretrained(checkpoints["swin_all"][0])(x).feature_maps
    assert [tuple(t.shape) for t in maps] == [(3, 8, 23, 19), (3, 8, 23, 19), (3, 16, 12, 10), (3, 32, 6, 5)]


@pytest.mark.parametrize("key", ["dino_stem", "registers", "swin_all", "swin_indices"])
def test_save_pretrained_round_trip(checkpoints, key, tmp_path):
    path, _ = checkpoints[key]
    save_pretrained(from_pretrained(path), tmp_path / "saved")
    cfg = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert cfg["architectures"] == [CHECKPOINTS[key][0]]
    back = getattr(transformers, CHECKPOINTS[key][0]).from_pretrained(tmp_path / "saved").eval()
    x = _pixels(1, 27, 41, seed=3)
    _close(from_pretrained(tmp_path / "saved")(x).feature_maps, _reference(back, x).feature_maps, key)
    _close(from_pretrained(path)(x).feature_maps, _reference(back, x).feature_maps, key)


def _rewrite(path, out, rename):
    """The checkpoint at ``path`` copied to ``out`` with its tensors renamed by ``rename`` (None: dropped)."""
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    tensors = {rename(k): torch.from_numpy(np.ascontiguousarray(v)) for k, v in read_weights(str(path)).items()}
    safetensors_torch.save_file({k: v for k, v in tensors.items() if k is not None}, str(out / "model.safetensors"))


def test_swin_checkpoint_naming_variants(checkpoints, tmp_path):
    """Without the unused final LayerNorm (older checkpoints), and with the encoder under "swin." (transformers 5's
    names in memory): the same feature maps."""
    path, hf = checkpoints["swin_all"]
    x = _pixels(3, 26, 39, seed=5)
    want = _reference(hf, x).feature_maps
    _rewrite(path, tmp_path / "no_norm", lambda k: None if k.startswith("swin.layernorm.") else k)
    _rewrite(path, tmp_path / "prefixed", lambda k: "swin." + k if k.startswith(("embeddings.", "encoder.")) else k)
    for name in ("no_norm", "prefixed"):
        _close(from_pretrained(tmp_path / name)(x).feature_maps, want, name)


def test_dinov2_backbone_from_a_classifier_checkpoint(tmp_path):
    """The encoder of a Dinov2ForImageClassification checkpoint (under "dinov2.") read by a backbone config."""
    torch.manual_seed(7)
    hf = _randomize(transformers.Dinov2ForImageClassification(transformers.Dinov2Config(**DINO, num_labels=3))).eval()
    hf.save_pretrained(tmp_path / "cls")
    cfg = json.loads((tmp_path / "cls" / "config.json").read_text())
    cfg.update(architectures=["Dinov2Backbone"], out_features=["stage1", "stage3"])
    cfg.pop("out_indices", None)
    _rewrite(tmp_path / "cls", tmp_path / "bb", lambda k: None if k.startswith("classifier.") else k)
    (tmp_path / "bb" / "config.json").write_text(json.dumps(cfg))
    ref = transformers.Dinov2Backbone(transformers.Dinov2Config(**DINO, out_features=["stage1", "stage3"])).eval()
    ref.load_state_dict(hf.dinov2.state_dict())
    x = _pixels(1, 27, 41)
    _close(from_pretrained(tmp_path / "bb")(x).feature_maps, _reference(ref, x).feature_maps)


BAD_STAGES = [
    (dict(out_features=["stage9"]), "unknown stage"),
    (dict(out_features="stage1"), "must be a list of stage names"),
    (dict(out_features=["stage2", "stage1"]), "stage order"),
    (dict(out_features=["stage1", "stage1"]), "must not repeat"),
    (dict(out_features=[]), "at least one"),
    (dict(out_indices=[4]), r"out_indices must be a list of ints in \[-4, 3\]"),
    (dict(out_indices=[True]), "out_indices must be a list of ints"),
    (dict(out_indices=[-1, 0]), "stage order"),
    (dict(out_features=["stage1"], out_indices=[2]), "different stages"),
]


@pytest.mark.parametrize("cls,base", [(Dinov2Backbone, DINO), (SwinBackbone, SWIN)])
@pytest.mark.parametrize("bad,match", BAD_STAGES)
def test_bad_out_features_refused(cls, base, bad, match):
    with pytest.raises(ValueError, match=match):
        cls(dict(base, **bad))


def test_bad_config_and_pixels_refused_through_from_pretrained(checkpoints, tmp_path):
    path, _ = checkpoints["dino_stem"]
    cfg = json.loads((path / "config.json").read_text())
    for i, (bad, match) in enumerate([(dict(out_features=["stage1", "stage7"], out_indices=None), "unknown stage"),
                                      (dict(apply_layernorm="yes"), "apply_layernorm must be true or false")]):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "config.json").write_text(json.dumps(dict(cfg, **bad)))
        (tmp_path / str(i) / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
        with pytest.raises(ValueError, match=match):
            from_pretrained(tmp_path / str(i))
    for key in ("dino_stem", "swin_all"):
        model = from_pretrained(checkpoints[key][0])
        with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, height, width\)"):
            model(_pixels(1)[:, :2])
        with pytest.raises(ValueError, match="at least one"):
            model(_pixels(1, 1, 1))
        with pytest.raises(TypeError, match="float array"):
            model(np.array([["a"]]))


@pytest.mark.parametrize("key", ["dino_stem", "registers", "swin_all"])
def test_gradients_match_transformers(checkpoints, key):
    """A weighted sum of every feature map: the gradients of the parameters both models name alike (embeddings,
    LayerNorms, the stage norms, patch merging, ...) equal transformers' (float64), at an odd size, batch 3."""
    path, hf = checkpoints[key]
    model = from_pretrained(path)
    ref = type(hf).from_pretrained(path).double().eval()
    x = _pixels(3, 27, 38, seed=9)
    weights = [np.random.default_rng(i).standard_normal(tuple(t.shape)).astype(np.float32)
               for i, t in enumerate(model(x).feature_maps)]
    sum(((t * torch.tensor(w, dtype=torch.float64)).sum() for t, w in
         zip(ref(torch.tensor(x, dtype=torch.float64)).feature_maps, weights, strict=True))).backward()
    sum(((t * w).sum() for t, w in zip(model(x).feature_maps, weights, strict=True))).backward()
    theirs = {n.removeprefix("swin."): p.grad for n, p in ref.named_parameters()}
    compared = 0
    for name, p in model.named_parameters():
        g = theirs.get(name)
        if g is None:
            continue
        g = g.numpy()
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=2e-3, atol=2e-4 * max(np.abs(g).max(), 1e-6), err_msg=name)
        compared += 1
    assert compared >= 10, sorted(theirs)


def test_swin_absolute_positions_at_the_config_size(tmp_path):
    """With an absolute position table: transformers' maps at the config's size; another size is refused (the backbone
    does not resize the table)."""
    torch.manual_seed(11)
    hf = _randomize(transformers.SwinBackbone(transformers.SwinConfig(**SWIN, use_absolute_embeddings=True,
                                                                      out_features=["stem", "stage2"]))).eval()
    with torch.no_grad():
        hf.swin.embeddings.position_embeddings.normal_()
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    x = _pixels(3, 32, 32, seed=2)
    _close(model(x).feature_maps, _reference(hf, x).feature_maps)
    with pytest.raises(ValueError, match="absolute position table takes 32x32"):
        model(_pixels(1, 30, 34))
