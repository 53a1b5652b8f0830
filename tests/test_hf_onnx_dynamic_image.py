"""export_vit(dynamic_image_size=True): one graph with symbolic batch, height and width, run in onnxruntime at odd
image sizes and batches 1 and 3 against forgegrad and transformers (checkpoints from transformers' save_pretrained of
tiny random configs): ViT and DeiT (interpolate_pos_encoding), DINOv2 (bicubic resize of the position table), DINOv2
with registers (antialiased bicubic, opset 18) and BEiT (absolute position embeddings; per-layer and shared relative
position biases, resized and indexed in the graph); the clear refusal for Swin; the exporter's axis_divisors on a
small model and its bad inputs."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf.onnx_vit import export_vit, vit_names
from forgegrad.onnx import export

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
transformers.logging.set_verbosity_error()

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8, num_labels=5)
# name -> (transformers class, config class, extra config, forward keyword arguments)
CHECKPOINTS = {
    "vit": ("ViTForImageClassification", "ViTConfig", {}, {"interpolate_pos_encoding": True}),
    "vit_model": ("ViTModel", "ViTConfig", dict(patch_size=6, image_size=30), {"interpolate_pos_encoding": True}),
    "deit_teacher": ("DeiTForImageClassificationWithTeacher", "DeiTConfig", {}, {"interpolate_pos_encoding": True}),
    "dinov2": ("Dinov2Model", "Dinov2Config", dict(layerscale_value=0.5), {}),
    "dinov2_classifier": ("Dinov2ForImageClassification", "Dinov2Config", dict(use_swiglu_ffn=True), {}),
    "dinov2_registers": ("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig", dict(num_register_tokens=2), {}),
    "beit_absolute": ("BeitModel", "BeitConfig", dict(use_absolute_position_embeddings=True), {}),
    "beit_relative": ("BeitForImageClassification", "BeitConfig", dict(use_relative_position_bias=True), {}),
    "beit_shared": ("BeitModel", "BeitConfig", dict(use_shared_relative_position_bias=True, use_mean_pooling=False,
                                                    layer_scale_init_value=0.5), {}),
}
# (batch, height, width): odd sides, neither multiples of the patch nor the config's, one smaller than it
SHAPES = [(1, 45, 29), (3, 23, 51), (3, 32, 32)]


def _pixels(batch, h, w, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, h, w)).astype(np.float32)


def _hf_outputs(out):
    if hasattr(out, "last_hidden_state"):
        return [out.last_hidden_state, out.pooler_output]
    return [out.logits]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for i, (key, (cls, config, extra, _)) in enumerate(CHECKPOINTS.items()):
        torch.manual_seed(i)
        hf = getattr(transformers, cls)(getattr(transformers, config)(**dict(SIZE, **extra))).eval()
        with torch.no_grad():  # the tokens start at zeros
            for name, p in hf.named_parameters():
                if name.endswith(("cls_token", "distillation_token", "register_tokens", "position_embeddings",
                                  "relative_position_bias_table")):
                    p.normal_()
        path = tmp_path_factory.mktemp(key)
        hf.save_pretrained(path)
        out[key] = (path, hf)
    return out


@pytest.mark.parametrize("key", list(CHECKPOINTS))
def test_one_graph_runs_at_every_image_size(checkpoints, key, tmp_path):
    path, hf = checkpoints[key]
    model = from_pretrained(path)
    report = export_vit(model, str(tmp_path / "m.onnx"), dynamic_image_size=True)
    assert report.ok and report.dynamic_axes == {"pixel_values": {0: "batch", 2: "height", 3: "width"}}
    assert report.opset == (18 if key == "dinov2_registers" else 17)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == vit_names(model)[1]
    assert sess.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    kwargs = CHECKPOINTS[key][3]
    for batch, h, w in SHAPES:
        x = _pixels(batch, h, w, seed=h)
        got = sess.run(None, {"pixel_values": x})
        with torch.no_grad():
            want = [t.numpy() for t in _hf_outputs(hf(torch.tensor(x), **kwargs))]
        with fg.no_grad():
            out = model.eval()(x, **kwargs) if kwargs else model.eval()(x)
        ours = ([out] if isinstance(out, fg.Tensor) else [out.logits] if hasattr(out, "logits")
                else [out.last_hidden_state, out.pooler_output])
        for g, o, ref in zip(got, ours, want, strict=True):
            assert g.shape == ref.shape, (batch, h, w)
            scale = max(1.0, np.abs(ref).max())
            np.testing.assert_allclose(g, o.numpy(), rtol=1e-4, atol=2e-5 * scale, err_msg=f"{key} {h}x{w}")
            np.testing.assert_allclose(g, ref, rtol=1e-4, atol=2e-5 * scale, err_msg=f"{key} {h}x{w}")


def test_output_shapes_are_named_by_the_patch_grid(checkpoints, tmp_path):
    export_vit(from_pretrained(checkpoints["dinov2"][0]), str(tmp_path / "m.onnx"), dynamic_image_size=True,
               image_size=(40, 24), verify=False)
    outs = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).get_outputs()
    assert [o.shape for o in outs] == [["batch", "height//8*width//8+1", 32], ["batch", 32]]


def _swin(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                  window_size=4, num_labels=3)
    transformers.SwinForImageClassification(cfg).save_pretrained(tmp_path)
    return from_pretrained(tmp_path)


def test_refusals_name_the_model_and_why(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="SwinForImageClassification: Swin pads each stage's map to a multiple of "
                                         "its window"):
        export_vit(_swin(tmp_path / "swin"), str(tmp_path / "no.onnx"), dynamic_image_size=True)
    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=4, image_size=32, patch_size=8)
    transformers.CLIPVisionModel(cfg).save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match="CLIPVisionModel: forgegrad's CLIP and SigLIP towers take exactly their "
                                         "config's image_size"):
        export_vit(from_pretrained(tmp_path / "clip"), str(tmp_path / "no.onnx"), dynamic_image_size=True)
    registers = from_pretrained(checkpoints["dinov2_registers"][0])
    with pytest.raises(ValueError, match="antialias attribute: opset 18 or later, got 17"):
        export_vit(registers, str(tmp_path / "no.onnx"), dynamic_image_size=True, opset=17)
    with pytest.raises(TypeError, match="dynamic_image_size must be a bool"):
        export_vit(registers, str(tmp_path / "no.onnx"), dynamic_image_size="yes")
    assert not (tmp_path / "no.onnx").exists()


class _PatchGrid(fg.nn.Module):
    """A strided conv, its grid flattened, and a bilinear resize back to the grid (sizes floor(side / 4))."""

    def __init__(self):
        super().__init__()
        self.conv = fg.nn.Conv2d(2, 3, 4, stride=4)
        self.table = fg.nn.Parameter(fg.Tensor(np.random.default_rng(0).standard_normal((1, 3, 3, 3))
                                               .astype(np.float32)))

    def forward(self, x):
        y = self.conv(x)
        grid = fg.nn.functional.interpolate(self.table, size=tuple(y.shape[2:]), mode="bilinear")
        return (y + grid).reshape(y.shape[0], 3, y.shape[2] * y.shape[3]) + 1.0


def test_axis_divisors_in_export(tmp_path):
    x = fg.Tensor(np.random.default_rng(1).standard_normal((2, 2, 12, 16)).astype(np.float32))
    axes = {"x": {0: "n", 2: "h", 3: "w"}}
    model = _PatchGrid()
    report = export(model, (x,), str(tmp_path / "g.onnx"), input_names=["x"], dynamic_axes=axes,
                    axis_divisors={"h": 4, "w": 4}, verify_sizes=[{"n": 1, "h": 9, "w": 23}, {"n": 3, "h": 31, "w": 4}])
    assert report.ok
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(2).standard_normal((1, 2, 13, 7)).astype(np.float32)
    with fg.no_grad():
        np.testing.assert_allclose(sess.run(None, {"x": z})[0], model.eval()(fg.Tensor(z)).numpy(),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="axis_divisors names 'height', which is not a dynamic input axis"):
        export(_PatchGrid(), (x,), str(tmp_path / "no.onnx"), input_names=["x"], dynamic_axes=axes,
               axis_divisors={"height": 4})
    with pytest.raises(ValueError, match=r"axis_divisors\['h'\] must be an int of at least 2, got 1"):
        export(_PatchGrid(), (x,), str(tmp_path / "no.onnx"), input_names=["x"], dynamic_axes=axes,
               axis_divisors={"h": 1})
    with pytest.raises(TypeError, match="axis_divisors must map dynamic axis names to ints"):
        export(_PatchGrid(), (x,), str(tmp_path / "no.onnx"), input_names=["x"], dynamic_axes=axes,
               axis_divisors=[4])
