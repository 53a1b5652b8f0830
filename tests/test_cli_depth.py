"""``forgegrad depth IMAGE --model DIR --out FILE`` on a tiny Depth Anything checkpoint transformers wrote (with
Depth Anything's processor settings, scaled down): the .npy depth equals transformers' depth-estimation pipeline's
predicted_depth (PIL backend) at the image's size, the PNG its drawn depth; bad arguments exit 2 naming them."""
import numpy as np
import pytest

from forgegrad.cli import main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")
transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("depth_anything")
    dino = transformers.Dinov2Config(image_size=28, patch_size=7, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, mlp_ratio=2, out_indices=[1, 2],
                                     reshape_hidden_states=False)
    cfg = transformers.DepthAnythingConfig(backbone_config=dino, patch_size=7, reassemble_hidden_size=16,
                                           head_hidden_size=4, neck_hidden_sizes=[4, 6], reassemble_factors=[2, 0.5],
                                           fusion_hidden_size=8)
    torch.manual_seed(0)
    hf = transformers.DepthAnythingForDepthEstimation(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights at fan-in scale: transformers' init leaves the depth near 0
        for _, p in hf.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim < 2 else p[0].numel() ** -0.5))
    hf.save_pretrained(path)
    processor = transformers.DPTImageProcessorPil(
        keep_aspect_ratio=True, ensure_multiple_of=7, size={"height": 70, "width": 70}, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    processor.save_pretrained(path)
    return path, hf, processor


def test_depth_npy_and_png_match_transformers_pipeline(checkpoint, tmp_path):
    path, hf, processor = checkpoint
    image = np.random.default_rng(0).integers(0, 256, (45, 83, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    assert main(["depth", str(tmp_path / "in.png"), "--model", str(path), "--out", str(tmp_path / "d.npy")]) == 0
    assert main(["depth", str(tmp_path / "in.png"), "--model", str(path), "--out", str(tmp_path / "d.png")]) == 0
    pipe = transformers.pipeline("depth-estimation", model=hf, image_processor=processor)
    want = pipe(Image.fromarray(image))
    depth = np.load(tmp_path / "d.npy")
    expected = want["predicted_depth"].numpy()
    assert depth.shape == expected.shape == (45, 83)
    np.testing.assert_allclose(depth, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    drawn = np.array(Image.open(tmp_path / "d.png"))
    diff = np.abs(drawn.astype(int) - np.array(want["depth"]).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # truncation to uint8 may flip a level at a boundary


def test_depth_bad_arguments(checkpoint, tmp_path, capsys):
    path = str(checkpoint[0])
    assert main(["depth", str(tmp_path / "missing.png"), "--model", path, "--out", str(tmp_path / "o.npy")]) == 2
    assert "no such file" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((4, 4), np.float32))
    assert main(["depth", str(tmp_path / "bad.npy"), "--model", path, "--out", str(tmp_path / "o.npy")]) == 2
    assert "(H, W, 3) uint8" in capsys.readouterr().err
    np.save(tmp_path / "ok.npy", np.zeros((14, 14, 3), np.uint8))
    assert main(["depth", str(tmp_path / "ok.npy"), "--model", str(tmp_path), "--out", str(tmp_path / "o.npy")]) == 2
    assert "--model" in capsys.readouterr().err
