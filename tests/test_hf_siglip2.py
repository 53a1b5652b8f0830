"""SigLIP 2 (Siglip2Model, Siglip2TextModel, Siglip2VisionModel, Siglip2ForImageClassification) from checkpoints
transformers wrote (tiny random configs): NaFlex images of different patch grids in one batch (padding places, grids
smaller and larger than the position table, a grid filling every place), the position table resized per image as
transformers does; logits, embeddings, hidden states, the masked MAP head and the classifier's masked mean equal
transformers'; a training step's loss and gradients; save round trip; Siglip2ImageProcessor's patches, mask and
grids equal transformers' (aspect ratios, tiny and huge images); the text tower's ONNX export; images and texts end
to end with zero-shot classification; refusals."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, save_pretrained
from forgegrad.models.hf import (Siglip2ForImageClassification, Siglip2Model, Siglip2TextModel, Siglip2VisionModel,
                                 load_image_processor)
from forgegrad.models.hf.siglip2 import resize_weights
from forgegrad.models.hf.siglip2_processing import Siglip2ImageProcessor, size_for_max_patches

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from test_hf_siglip import _word_tokenizer_dir  # noqa: E402 (SigLIP's word-level tokenizer: the same)

VOCAB = 60
TOL = dict(rtol=1e-4, atol=2e-5)
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=12, eos_token_id=1, pad_token_id=1, bos_token_id=None)
VISION = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, patch_size=3,
              num_patches=16)
PLACES = 24  # max_num_patches of the examples
# grids (rows, columns): 4x5 (under the 4x4 table on one side, over on the other), 2x7, 6x4 (every place), 1x1
SHAPES = np.array([[4, 5], [2, 7], [6, 4], [1, 1]])


def _patches(shapes=SHAPES, places=PLACES, seed=0):
    """Random patch rows for each grid, zero after its last patch, the mask of its patches."""
    rng = np.random.default_rng(seed)
    px = rng.standard_normal((len(shapes), places, 27)).astype(np.float32)
    mask = (np.arange(places)[None] < shapes.prod(-1)[:, None]).astype(np.int32)
    return (px * mask[..., None]).astype(np.float32), mask


def _texts(lengths=(5, 12, 3), total=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.ones((len(lengths), total), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(2, VOCAB, n)
    return ids


def _hf_inputs(px, mask, shapes=SHAPES):
    return dict(pixel_values=torch.tensor(px), pixel_attention_mask=torch.tensor(mask),
                spatial_shapes=torch.tensor(shapes))


def _siglip2(path, **vision):
    torch.manual_seed(0)
    cfg = transformers.Siglip2Config(text_config=TEXT, vision_config=dict(VISION, **vision))
    hf = transformers.Siglip2Model(cfg).eval()
    with torch.no_grad():
        hf.logit_scale.fill_(math.log(10.0))
        hf.logit_bias.fill_(-10.0)
        hf.vision_model.embeddings.position_embedding.weight.normal_()  # a table far from smooth
    hf.save_pretrained(path)
    return hf


def _close(got, want, **tol):
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), **(tol or TOL))


def test_resize_weights_equal_torch_bilinear_antialias():
    """Each image's resized table equals torch's F.interpolate(bilinear, antialias) of the (G, G) table to its grid
    (what transformers' weights reproduce), up- and downscaling, padding places taking the first position."""
    table = torch.randn(5, 5, 7)
    shapes = np.array([[3, 8], [5, 5], [9, 2], [1, 1]])
    w = resize_weights(fg.zeros(4, 27), fg.tensor(shapes.astype(np.float32)), 5).numpy()
    assert w.shape == (4, 27, 25)
    for b, (h, wd) in enumerate(shapes):
        ref = torch.nn.functional.interpolate(table.permute(2, 0, 1)[None], size=(int(h), int(wd)), mode="bilinear",
                                              align_corners=False, antialias=True)[0].permute(1, 2, 0).reshape(-1, 7)
        got = w[b] @ table.reshape(25, 7).numpy()
        np.testing.assert_allclose(got[:h * wd], ref.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[h * wd:], np.broadcast_to(ref[0].numpy(), got[h * wd:].shape), rtol=1e-5,
                                   atol=1e-5)


def test_model_equals_transformers(tmp_path):
    hf = _siglip2(tmp_path)
    model = from_pretrained(tmp_path)
    assert type(model) is Siglip2Model
    px, mask = _patches()
    ids = _texts((5, 12, 3))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), **_hf_inputs(px, mask))
        vision = hf.vision_model(**_hf_inputs(px, mask))
        text = hf.text_model(input_ids=torch.tensor(ids))
    with fg.no_grad():
        out = model(ids, px, pixel_attention_mask=mask, spatial_shapes=SHAPES)
        tower = model.vision_model(px, mask, SHAPES)
        _close(model.get_image_features(px, mask, SHAPES), vision.pooler_output)
        _close(model.get_text_features(ids), text.pooler_output)
    _close(out.logits_per_text, ref.logits_per_text)
    _close(out.logits_per_image, ref.logits_per_image)
    _close(out.image_embeds, ref.image_embeds)
    _close(out.text_embeds, ref.text_embeds)
    _close(tower.last_hidden_state, vision.last_hidden_state)  # the padding places too
    # without a mask every place is a patch (transformers needs the mask of ones): a grid filling the places
    full = np.array([[6, 4]])
    with torch.no_grad():
        want = hf.vision_model(**_hf_inputs(px[2:3], mask[2:3], full))
    with fg.no_grad():
        _close(model.vision_model(px[2:3], spatial_shapes=full).pooler_output, want.pooler_output)
    # an image alone gives what it gives in a padded batch
    with fg.no_grad():
        alone = model.vision_model(px[1:2, :14], mask[1:2, :14], SHAPES[1:2]).pooler_output.numpy()
    np.testing.assert_allclose(alone, tower.pooler_output.numpy()[1:2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", [True, False])
def test_vision_tower_and_classifier_equal_transformers(tmp_path, head):
    torch.manual_seed(1)
    cfg = transformers.Siglip2Config(text_config=TEXT, vision_config=dict(VISION, vision_use_head=head),
                                     num_labels=5)
    hf = transformers.Siglip2ForImageClassification(cfg).eval()
    hf.save_pretrained(tmp_path / "cls")
    hf.vision_model.save_pretrained(tmp_path / "vision")
    classifier, tower = from_pretrained(tmp_path / "cls"), from_pretrained(tmp_path / "vision")
    assert type(classifier) is Siglip2ForImageClassification and type(tower) is Siglip2VisionModel
    px, mask = _patches(seed=2)
    with torch.no_grad():
        ref = hf(**_hf_inputs(px, mask)).logits
        ref_tower = hf.vision_model(**_hf_inputs(px, mask))
        ref_full = hf(pixel_values=torch.tensor(px[2:3]), spatial_shapes=torch.tensor(SHAPES[2:3])).logits
    with fg.no_grad():
        _close(classifier(px, mask, SHAPES), ref)
        _close(classifier(px[2:3], spatial_shapes=SHAPES[2:3]), ref_full)
        out = tower(px, mask, SHAPES)
    _close(out.last_hidden_state, ref_tower.last_hidden_state)
    if head:
        _close(out.pooler_output, ref_tower.pooler_output)
    else:
        assert out.pooler_output is None


def test_a_training_step_matches_transformers(tmp_path):
    hf = _siglip2(tmp_path).train()
    model = from_pretrained(tmp_path).train()
    px, mask = _patches(SHAPES[:3], seed=4)
    ids = _texts((5, 12, 3))
    ref = hf(input_ids=torch.tensor(ids), **_hf_inputs(px, mask, SHAPES[:3]), return_loss=True)
    ref.loss.backward()
    out = model(ids, px, pixel_attention_mask=mask, spatial_shapes=SHAPES[:3], return_loss=True)
    np.testing.assert_allclose(out.loss.numpy(), ref.loss.detach().numpy(), rtol=1e-5)
    out.loss.backward()
    theirs = {k: p.grad for k, p in hf.named_parameters()}
    mine = dict(model.named_parameters())
    assert set(mine) == set(theirs)
    for key in ("logit_scale", "logit_bias", "text_model.head.weight", "vision_model.head.probe",
                "vision_model.head.attention.in_proj_weight", "vision_model.embeddings.position_embedding.weight",
                "vision_model.embeddings.patch_embedding.weight",
                "vision_model.encoder.layers.0.self_attn.q_proj.weight"):
        np.testing.assert_allclose(mine[key].grad.numpy(), theirs[key].numpy(), rtol=1e-3, atol=1e-6, err_msg=key)


def test_save_round_trip_and_model_type_dispatch(tmp_path):
    hf = _siglip2(tmp_path / "m")
    save_pretrained(from_pretrained(tmp_path / "m"), tmp_path / "saved")
    back = transformers.Siglip2Model.from_pretrained(tmp_path / "saved").eval()
    px, mask = _patches(seed=5)
    ids = _texts()
    with torch.no_grad():
        a = back(input_ids=torch.tensor(ids), **_hf_inputs(px, mask)).logits_per_text
        b = hf(input_ids=torch.tensor(ids), **_hf_inputs(px, mask)).logits_per_text
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    del cfg["architectures"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    assert type(from_pretrained(tmp_path / "m")) is Siglip2Model
    hf.text_model.save_pretrained(tmp_path / "text")
    text = from_pretrained(tmp_path / "text")
    assert type(text) is Siglip2TextModel
    with fg.no_grad(), torch.no_grad():
        _close(text(ids).pooler_output, hf.text_model(input_ids=torch.tensor(ids)).pooler_output)


# google/siglip2-base-patch16-naflex's preprocessor_config.json, patch and patch count made tiny
HUB_PROCESSOR = {"do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
                 "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Siglip2ImageProcessorFast",
                 "image_std": [0.5, 0.5, 0.5], "max_num_patches": PLACES, "patch_size": 3,
                 "processor_class": "Siglip2Processor", "resample": 2, "rescale_factor": 0.00392156862745098}


def test_image_processor_equals_transformers(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(HUB_PROCESSOR))
    proc = load_image_processor(tmp_path)
    assert isinstance(proc, Siglip2ImageProcessor)
    ref = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    rng = np.random.default_rng(0)
    sizes = [(60, 80), (40, 40), (90, 22), (5, 100), (2, 2), (700, 31)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    got, want = proc(images), ref(images, return_tensors="np")
    assert set(got) == {"pixel_values", "pixel_attention_mask", "spatial_shapes"}
    for key in got:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    for h, w in sizes + [(1000, 3), (224, 224), (333, 517)]:
        for patch, places in ((3, PLACES), (16, 256), (16, 1024)):
            from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches
            assert size_for_max_patches(h, w, patch, places) == get_image_size_for_max_num_patches(h, w, patch, places)


def test_images_and_texts_end_to_end_and_zero_shot_classification(tmp_path):
    """ImageTextProcessor pads texts to the tower's length; the images become NaFlex patches; the logits equal
    transformers' on uint8 images of different aspect ratios and zero_shot_image_classification scores each label by
    its own sigmoid."""
    from forgegrad.models.hf.zero_shot import ImageTextProcessor, zero_shot_image_classification
    hf_tok = _word_tokenizer_dir(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(HUB_PROCESSOR))
    hf = _siglip2(tmp_path)
    improc = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((40, 52, 3), (30, 90, 3), (64, 20, 3))]
    labels = ["cat", "dog", "bird"]
    texts = [f"this is a photo of {label}" for label in labels]
    processor = ImageTextProcessor.from_pretrained(tmp_path)
    inputs = processor(texts, images)
    assert set(inputs) == {"input_ids", "pixel_values", "pixel_attention_mask", "spatial_shapes"}
    ref_ids = hf_tok(texts, padding="max_length", max_length=12, return_tensors="np")["input_ids"]
    ref_px = improc(images, return_tensors="pt")
    np.testing.assert_array_equal(inputs["input_ids"], ref_ids)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ref_ids), **ref_px).logits_per_image.numpy()
    got = zero_shot_image_classification(from_pretrained(tmp_path), processor, images, labels,
                                         hypothesis_template="this is a photo of {}")
    probs = 1 / (1 + np.exp(-ref.astype(np.float64)))
    for row, scores in zip(got, probs, strict=True):
        assert [d["label"] for d in row] == [labels[j] for j in np.argsort(-scores, kind="stable")]
        np.testing.assert_allclose([d["score"] for d in row], np.sort(scores)[::-1], rtol=1e-4, atol=1e-7)


def test_text_tower_onnx_export_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from forgegrad.models.hf.onnx_clip import export_clip_tower
    hf = _siglip2(tmp_path / "m")
    model = from_pretrained(tmp_path / "m")
    report = export_clip_tower(model, tmp_path / "t.onnx", "text")
    assert report.ok, report
    sess = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    ids = _texts((4, 10, 2, 7), total=10, seed=5)
    mask = (ids != 1).astype(np.int64)
    got = sess.run(None, {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        ref = hf.text_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    np.testing.assert_allclose(got[0], ref.pooler_output.numpy(), **TOL)
    np.testing.assert_allclose(got[1], ref.last_hidden_state.numpy(), **TOL)


@pytest.mark.parametrize("which", ["model", "tower"])
def test_vision_tower_onnx_export_in_onnxruntime(tmp_path, which):
    """One graph takes any batch and patch count: padded images of different grids (the resize weights and the
    masks computed in the graph) give transformers' embeddings and hidden states."""
    ort = pytest.importorskip("onnxruntime")
    from forgegrad.models.hf.onnx_clip import export_clip_tower
    hf = _siglip2(tmp_path / "m")
    model = from_pretrained(tmp_path / "m")
    if which == "tower":
        hf.vision_model.save_pretrained(tmp_path / "v")
        model = from_pretrained(tmp_path / "v")
    report = export_clip_tower(model, tmp_path / "v.onnx", "vision")
    assert report.ok, report
    sess = ort.InferenceSession(str(tmp_path / "v.onnx"), providers=["CPUExecutionProvider"])
    for shapes, places in ((SHAPES, PLACES), (SHAPES[1:2], 14), (np.array([[3, 9], [5, 5]]), 31)):
        px, mask = _patches(shapes, places, seed=places)
        got = sess.run(None, {"pixel_values": px, "pixel_attention_mask": mask.astype(np.int64),
                              "spatial_shapes": shapes.astype(np.int64)})
        with torch.no_grad():
            ref = hf.vision_model(**_hf_inputs(px, mask, shapes))
        np.testing.assert_allclose(got[0], ref.pooler_output.numpy(), **TOL)
        np.testing.assert_allclose(got[1], ref.last_hidden_state.numpy(), **TOL)


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="vision_use_head must be true"):
        Siglip2Model({"text_config": TEXT, "vision_config": dict(VISION, vision_use_head=False)})
    with pytest.raises(ValueError, match="num_patches must be a positive square"):
        Siglip2VisionModel(dict(VISION, num_patches=15))
    tower = Siglip2VisionModel(VISION)
    px, mask = _patches()
    with pytest.raises(ValueError, match="spatial_shapes .batch, 2. is required"):
        tower(px, mask)
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, patches, 27\)"):
        tower(px[..., :20], mask, SHAPES)
    with pytest.raises(ValueError, match=r"spatial_shapes must be an int array of shape \(4, 2\)"):
        tower(px, mask, SHAPES[:2])
    with pytest.raises(ValueError, match="rows \\* columns at most the 24 patch places"):
        tower(px, mask, SHAPES * 3)
    with pytest.raises(ValueError, match=r"pixel_attention_mask must be a 0/1 array of shape \(4, 24\)"):
        tower(px, mask[:, :10], SHAPES)
    with pytest.raises(ValueError, match="every image needs at least one patch"):
        tower(px, mask * 0, SHAPES)
    with pytest.raises(ValueError, match="without do_resize its sides must be multiples of patch_size 3"):
        Siglip2ImageProcessor(patch_size=3, max_num_patches=PLACES, do_resize=False)(np.zeros((7, 9, 3), np.uint8))
