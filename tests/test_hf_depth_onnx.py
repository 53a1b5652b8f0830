"""ONNX export of Depth Anything and DPT (export_vit) from checkpoints transformers wrote (tiny random configs):
Depth Anything with dynamic batch, height and width, verified in onnxruntime against forgegrad at odd sizes (patch
grids odd and even, sides not multiples of the patch) and its output checked against transformers'; DPT's depth and
segmentation models at a fixed image size; DPTModel with a dynamic image size; DPT's depth model with a dynamic image
size refused, naming why."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_vit

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
transformers.logging.set_verbosity_error()

DINO = dict(image_size=28, patch_size=7, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
            out_indices=[1, 2, 1, 2], reshape_hidden_states=False)
NECK = dict(neck_hidden_sizes=[4, 6, 8, 10], fusion_hidden_size=8)
VIT = dict(NECK, image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
           intermediate_size=20, backbone_out_indices=[0, 1, 2, 3])


def _save(hf, path):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights at fan-in scale: transformers' init leaves the depth near 0
        for _, p in hf.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim < 2 else p[0].numel() ** -0.5))
    hf.eval().save_pretrained(path)
    return hf


def _depth_anything(path):
    dino = dict(DINO, out_indices=[1, 2])
    cfg = transformers.DepthAnythingConfig(backbone_config=transformers.Dinov2Config(**dino), patch_size=7,
                                           reassemble_hidden_size=16, head_hidden_size=4,
                                           neck_hidden_sizes=[4, 6], reassemble_factors=[2, 0.5], fusion_hidden_size=8)
    return _save(transformers.DepthAnythingForDepthEstimation(cfg), path)


def test_depth_anything_dynamic_image_size(tmp_path):
    hf = _depth_anything(tmp_path / "ckpt")
    model = from_pretrained(tmp_path / "ckpt")
    report = export_vit(model, tmp_path / "da.onnx", image_size=(35, 49), dynamic_image_size=True,
                        verify_sizes=[{"batch": 1, "height": 28, "width": 66}, {"batch": 3, "height": 42, "width": 45}])
    assert report.verified and report.ok
    session = ort.InferenceSession(str(tmp_path / "da.onnx"))
    x = np.random.default_rng(3).standard_normal((2, 3, 63, 22)).astype(np.float32)
    (depth,) = session.run(None, {"pixel_values": x})
    with torch.no_grad():
        want = hf(torch.from_numpy(x)).predicted_depth.numpy()
    assert depth.shape == want.shape == (2, 63, 21)
    np.testing.assert_allclose(depth, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(depth, model(x).numpy(), rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("cls", ["DPTForDepthEstimation", "DPTForSemanticSegmentation"])
def test_dpt_fixed_image_size(tmp_path, cls):
    cfg = transformers.DPTConfig(**dict(VIT, num_labels=3))
    _save(getattr(transformers, cls)(cfg), tmp_path / "ckpt")
    model = from_pretrained(tmp_path / "ckpt")
    report = export_vit(model, tmp_path / "dpt.onnx", image_size=40)  # a 5x5 grid, not the config's 4x4
    assert report.verified and report.ok
    with pytest.raises(ValueError, match="DPT's fusion doubles each map"):
        export_vit(model, tmp_path / "dyn.onnx", dynamic_image_size=True)


def test_dpt_model_dynamic_image_size(tmp_path):
    _save(transformers.DPTModel(transformers.DPTConfig(**VIT)), tmp_path / "ckpt")
    report = export_vit(from_pretrained(tmp_path / "ckpt"), tmp_path / "dpt.onnx", dynamic_image_size=True)
    assert report.verified and report.ok
