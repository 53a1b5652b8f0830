"""Depth Anything and DPT from checkpoints transformers wrote (tiny random configs, every weight and BatchNorm
statistic randomized): predicted_depth / logits / last_hidden_state and the hidden states equal transformers' at odd
image sizes (patch grids odd and even, sides multiples of the patch and not), batches 1 and 2; relative and metric
depth; DPT's readout types, batch-norm fusion, add_projection, layer choice, DINOv2 backbone; DPT on a non-square
grid against transformers' own neck and head given the grid; gradients to the pixels; save_pretrained round trip;
unsupported configs refused."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained, save_pretrained
from forgegrad.models.hf import DepthAnythingForDepthEstimation, DPTForDepthEstimation, DPTForSemanticSegmentation
from forgegrad.tensor import Tensor

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

TOL = dict(rtol=1e-4, atol=2e-5)
DINO = dict(image_size=28, patch_size=7, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2,
            out_indices=[1, 2, 3, 4], reshape_hidden_states=False, layerscale_value=0.7)
NECK = dict(neck_hidden_sizes=[4, 6, 8, 10], fusion_hidden_size=8)
DA = dict(NECK, patch_size=7, reassemble_hidden_size=16, head_hidden_size=4)
VIT = dict(NECK, image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
           intermediate_size=20, backbone_out_indices=[0, 1, 2, 3])


def _dino(**kw):
    return transformers.Dinov2Config(**dict(DINO, **kw))


# name -> (transformers class, config, image shapes)
DA_SHAPES = [(1, 35, 49), (2, 28, 28), (1, 37, 50)]
VIT_SHAPES = [(1, 40, 40), (2, 24, 24), (1, 43, 45)]
CHECKPOINTS = {
    "da_relative": ("DepthAnythingForDepthEstimation", lambda: transformers.DepthAnythingConfig(
        backbone_config=_dino(), **DA), DA_SHAPES),
    "da_metric": ("DepthAnythingForDepthEstimation", lambda: transformers.DepthAnythingConfig(
        backbone_config=_dino(out_indices=[0, 2, 3, 4], use_swiglu_ffn=True), depth_estimation_type="metric",
        max_depth=20, reassemble_factors=[4, 2, 1, 0.5], **DA), DA_SHAPES[:2]),
    "dpt": ("DPTForDepthEstimation", lambda: transformers.DPTConfig(**VIT), VIT_SHAPES),
    "dpt_add_bn": ("DPTForDepthEstimation", lambda: transformers.DPTConfig(**dict(
        VIT, readout_type="add", use_batch_norm_in_fusion_residual=True, backbone_out_indices=[0, 2, 3, 1]))),
    "dpt_ignore_projection": ("DPTForDepthEstimation", lambda: transformers.DPTConfig(**dict(
        VIT, readout_type="ignore", add_projection=True, fusion_hidden_size=256, hidden_act="gelu_new",  # 256: the
        neck_hidden_sizes=[4, 6], reassemble_factors=[2, 0.5], backbone_out_indices=[1, 3]))),  # projection's width
    "dpt_dinov2": ("DPTForDepthEstimation", lambda: transformers.DPTConfig(backbone_config=_dino(), **NECK),
                   DA_SHAPES[:2]),
    "dpt_segmentation": ("DPTForSemanticSegmentation", lambda: transformers.DPTConfig(**dict(VIT, num_labels=3))),
    "dpt_model": ("DPTModel", lambda: transformers.DPTConfig(**VIT)),
}


def _randomize(hf, seed):
    """transformers' init leaves the depth near 0 (tiny weights through ReLUs): every weight drawn at fan-in scale
    instead, norms' and biases' around their values, BatchNorm statistics away from 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in hf.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim < 2 else p[0].numel() ** -0.5))
        for name, b in hf.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.3)
    return hf


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for i, (key, (cls, cfg, *_)) in enumerate(CHECKPOINTS.items()):
        torch.manual_seed(i)
        hf = _randomize(getattr(transformers, cls)(cfg()).eval(), i)
        path = tmp_path_factory.mktemp(key)
        hf.save_pretrained(path)
        out[key] = (path, hf)
    return out


def _pixels(batch, h, w, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, h, w)).astype(np.float32)


def _close(got, want, msg=""):
    want = want.detach().numpy()
    assert tuple(got.shape) == want.shape, msg
    np.testing.assert_allclose(got.numpy(), want, rtol=TOL["rtol"], atol=TOL["atol"] * max(1.0, np.abs(want).max()),
                               err_msg=msg)


@pytest.mark.parametrize("key", list(CHECKPOINTS))
def test_matches_transformers(checkpoints, key):
    path, hf = checkpoints[key]
    model = from_pretrained(path)
    shapes = CHECKPOINTS[key][2] if len(CHECKPOINTS[key]) > 2 else VIT_SHAPES[:2]
    for b, h, w in shapes:
        x = _pixels(b, h, w, seed=h)
        with torch.no_grad():
            want = hf(torch.from_numpy(x), output_hidden_states=True)
        got = model(x, output_hidden_states=True)
        msg = f"{key} {(b, h, w)}"
        _close(got[0], want[0], msg)
        if key == "dpt_model":
            _close(got.pooler_output, want.pooler_output, msg)
        assert len(got.hidden_states) == len(want.hidden_states) == 5, msg
        for g, t in zip(got.hidden_states, want.hidden_states, strict=True):
            _close(g, t, msg)
        plain = model(x)  # without hidden states: the prediction alone
        if key != "dpt_model":
            np.testing.assert_array_equal(plain.numpy(), got[0].numpy())


def test_depth_anything_metric_range(checkpoints):
    """Metric depth is sigmoid * max_depth: within (0, 20); relative depth is non-negative."""
    metric = from_pretrained(checkpoints["da_metric"][0])(_pixels(2, 28, 35)).numpy()
    assert metric.min() >= 0 and metric.max() <= 20 and metric.std() > 0
    relative = from_pretrained(checkpoints["da_relative"][0])(_pixels(1, 28, 35)).numpy()
    assert relative.min() >= 0 and relative.max() > 0


def test_dpt_non_square_grid(checkpoints):
    """transformers' DPT on a ViT reshapes tokens by the square root of their count (raising on a 5x7 grid);
    forgegrad uses the image's grid: equal to transformers' neck and head given that grid."""
    path, hf = checkpoints["dpt_add_bn"]
    x = _pixels(2, 40, 56)
    with torch.no_grad():
        states = hf.dpt(torch.from_numpy(x), output_hidden_states=True).hidden_states
        chosen = [s for i, s in enumerate(states[1:]) if i in hf.config.backbone_out_indices]
        want = hf.head(hf.neck(chosen, 5, 7))
    _close(from_pretrained(path)(x), want)


def test_gradient_to_pixels(checkpoints):
    path, hf = checkpoints["da_relative"]
    x = _pixels(1, 21, 28)
    xt = torch.from_numpy(x).requires_grad_(True)
    hf(xt).predicted_depth.pow(2).sum().backward()
    xf = Tensor(x, requires_grad=True)
    (from_pretrained(path)(xf) ** 2).sum().backward()
    want = xt.grad.numpy()
    np.testing.assert_allclose(xf.grad.numpy(), want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("key", ["da_metric", "dpt_add_bn", "dpt_segmentation"])
def test_save_pretrained_round_trip(checkpoints, key, tmp_path):
    """forgegrad's save_pretrained writes a checkpoint transformers loads back, with the same predictions."""
    path, _ = checkpoints[key]
    model = from_pretrained(path)
    save_pretrained(model, tmp_path)
    hf = getattr(transformers, CHECKPOINTS[key][0]).from_pretrained(tmp_path).eval()
    x = _pixels(1, 28, 28) if key.startswith("da") else _pixels(1, 32, 32)
    with torch.no_grad():
        want = hf(torch.from_numpy(x))[0]
    _close(model(x), want)


def _da_config(**kw):
    return transformers.DepthAnythingConfig(backbone_config=_dino(), **DA).to_dict() | kw


@pytest.mark.parametrize("cls, cfg, match", [
    (DepthAnythingForDepthEstimation, lambda: _da_config(depth_estimation_type="absolute"), "depth_estimation_type"),
    (DepthAnythingForDepthEstimation, lambda: _da_config(max_depth=-1), "max_depth"),
    (DepthAnythingForDepthEstimation, lambda: _da_config(reassemble_hidden_size=8), "reassemble_hidden_size"),
    (DepthAnythingForDepthEstimation, lambda: _da_config(neck_hidden_sizes=[4, 6, 8]), "reassemble_factors"),
    (DepthAnythingForDepthEstimation, lambda: _da_config(reassemble_factors=[4, 1.5, 1, 0.5]), "reassemble_factors"),
    (DepthAnythingForDepthEstimation, lambda: _da_config(
        backbone_config=dict(_dino().to_dict(), model_type="swinv2")), "only \"dinov2\""),
    (DepthAnythingForDepthEstimation, lambda: _da_config(
        backbone_config=dict(_dino().to_dict(), reshape_hidden_states=True)), "reshape_hidden_states"),
    (DPTForDepthEstimation, lambda: dict(VIT, is_hybrid=True), "is_hybrid"),
    (DPTForDepthEstimation, lambda: dict(VIT, readout_type="concat"), "readout_type"),
    (DPTForDepthEstimation, lambda: dict(VIT, backbone_out_indices=[0, 1, 2, 9]), "backbone_out_indices"),
    (DPTForDepthEstimation, lambda: dict(VIT, backbone_out_indices=[0, 1, 2]), "neck_hidden_sizes"),
    (DPTForDepthEstimation, lambda: dict(VIT, add_projection=True), "add_projection"),
    (DPTForDepthEstimation, lambda: dict(VIT, num_hidden_layers=None), "num_hidden_layers"),
    (DPTForSemanticSegmentation, lambda: dict(VIT, backbone_config=_dino().to_dict()), "backbone_config"),
])
def test_bad_configs_refused(cls, cfg, match):
    with pytest.raises(ValueError, match=match):
        cls(cfg())


def test_bad_pixels_refused(checkpoints):
    model = from_pretrained(checkpoints["da_relative"][0])
    with pytest.raises(ValueError, match="at least one image of at least one 7x7 patch"):
        model(_pixels(1, 6, 28))
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        model(np.zeros((1, 4, 28, 28), np.float32))
