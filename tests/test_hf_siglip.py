"""SigLIP (``SiglipModel``, ``SiglipTextModel``, ``SiglipVisionModel``) read from checkpoints transformers wrote:
sigmoid logits (scale and bias), embeddings, hidden states and the attention-pooled image head equal transformers'
with and without a text mask; a vision tower without its head; one training step's sigmoid loss and gradients;
the save round trip; the towers' ONNX exports in onnxruntime; refusals."""
from __future__ import annotations

import math

import numpy as np
import pytest

from forgegrad.models import from_pretrained, save_pretrained

import hf_image_helpers as H

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from transformers.models.siglip import configuration_siglip as cs, modeling_siglip as ms  # noqa: E402

VOCAB = 99
TOL = dict(rtol=1e-4, atol=2e-5)
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=12, bos_token_id=None, eos_token_id=1, pad_token_id=1)
VISION = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, image_size=30,
              patch_size=6)


def _texts(lengths=(5, 12, 3), total=12, seed=0):
    """Ids padded with 1 to ``total`` (SigLIP's processor pads to max_length), and the mask of the real ones."""
    rng = np.random.default_rng(seed)
    ids = np.ones((len(lengths), total), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(2, VOCAB, n)
    return ids, (np.arange(total)[None] < np.array(lengths)[:, None]).astype(np.int64)


def _images(n=2, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, 30, 30)).astype(np.float32)


def _siglip(path):
    """A SiglipModel whose temperature and bias are SigLIP's initial ones (exp(scale) = 10, bias -10) rather than
    random, so the logits span a real range."""
    torch.manual_seed(0)
    hf = ms.SiglipModel(cs.SiglipConfig(text_config=TEXT, vision_config=VISION)).eval()
    with torch.no_grad():
        hf.logit_scale.fill_(math.log(10.0))
        hf.logit_bias.fill_(-10.0)
    hf.save_pretrained(path)
    return hf


def _close(got, want):
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), **TOL)


@pytest.mark.parametrize("masked", [True, False], ids=["mask", "max_length_padding"])
def test_siglip_model_equals_transformers(tmp_path, masked):
    hf = _siglip(tmp_path)
    model = from_pretrained(tmp_path)
    assert type(model).__name__ == "SiglipModel"
    ids, mask = _texts()
    mask = mask if masked else None
    px = _images(3)
    t_mask = None if mask is None else torch.tensor(mask)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), pixel_values=torch.tensor(px), attention_mask=t_mask)
        text_ref = hf.text_model(input_ids=torch.tensor(ids), attention_mask=t_mask)
    out = model(ids, px, mask)
    for name in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        _close(getattr(out, name), getattr(ref, name))
    assert out.logits_per_text.numpy().max() < 0  # the bias of -10 shows: sigmoid(logit) is a probability per pair
    text = model.text_model(ids, mask)
    _close(text.last_hidden_state, text_ref.last_hidden_state)
    _close(model.get_text_features(ids, mask), text_ref.pooler_output)
    image = model.vision_model(px)
    _close(image.last_hidden_state, ref.vision_model_output.last_hidden_state)
    _close(model.get_image_features(px), ref.vision_model_output.pooler_output)


@pytest.mark.parametrize("name,head", [("SiglipTextModel", None), ("SiglipVisionModel", True),
                                       ("SiglipVisionModel", False)])
def test_towers_equal_transformers_and_save_round_trip(tmp_path, name, head):
    torch.manual_seed(0)
    text = name == "SiglipTextModel"
    cfg = cs.SiglipTextConfig(**TEXT) if text else cs.SiglipVisionConfig(**VISION, vision_use_head=head)
    hf = getattr(ms, name)(cfg).eval()
    hf.save_pretrained(tmp_path / "a")
    model = from_pretrained(tmp_path / "a")
    ids, mask = _texts()
    args = (ids, mask) if text else (_images(3),)
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)) if text else dict(
        pixel_values=torch.tensor(args[0]))
    with torch.no_grad():
        ref = hf(**kwargs)
    out = model(*args)
    _close(out.last_hidden_state, ref.last_hidden_state)
    if head is False:
        assert out.pooler_output is None and model.head is None
    else:
        _close(out.pooler_output, ref.pooler_output)
    save_pretrained(model, tmp_path / "b")
    with torch.no_grad():
        back = getattr(ms, name).from_pretrained(tmp_path / "b").eval()(**kwargs)
    _close(out.last_hidden_state, back.last_hidden_state)


def test_a_training_step_matches_transformers(tmp_path):
    """return_loss: SigLIP's pairwise sigmoid loss; the gradients of the towers, the MAP head, the text head,
    logit_scale and logit_bias equal torch's for the same step."""
    hf = _siglip(tmp_path).train()
    model = from_pretrained(tmp_path).train()
    ids, mask = _texts()
    px = _images(3)
    keys = ("logit_scale", "logit_bias", "text_model.head.weight", "text_model.embeddings.token_embedding.weight",
            "text_model.encoder.layers.1.self_attn.k_proj.weight", "vision_model.head.probe",
            "vision_model.head.attention.in_proj_weight", "vision_model.head.mlp.fc2.bias",
            "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.patch_embedding.bias")
    H.check_training_step(hf, model, ids, mask, px, keys)


@pytest.mark.parametrize("tower", ["text", "vision"])
def test_onnx_towers_in_onnxruntime(tmp_path, tower):
    ort = pytest.importorskip("onnxruntime")
    from forgegrad.models.hf.onnx_clip import export_clip_tower
    hf = _siglip(tmp_path / "m")
    model = from_pretrained(tmp_path / "m")
    report = export_clip_tower(model, tmp_path / "t.onnx", tower)
    assert report.ok, report
    sess = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    if tower == "text":
        ids, mask = _texts((4, 10, 2, 7), total=10, seed=5)
        got = sess.run(None, {"input_ids": ids, "attention_mask": mask})
        with torch.no_grad():
            ref = hf.text_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    else:
        px = _images(3, seed=7)
        px[1, 0, 4, 4] = np.nan  # stays in its row (the probe's batch comes from the patches times 0)
        got = sess.run(None, {"pixel_values": px})
        assert np.isnan(got[0]).any(-1).tolist() == [False, True, False]
        with torch.no_grad():
            ref = hf.vision_model(pixel_values=torch.tensor(px))
    np.testing.assert_allclose(got[0], ref.pooler_output.numpy(), **TOL)
    np.testing.assert_allclose(got[1], ref.last_hidden_state.numpy(), **TOL)


def test_refusals(tmp_path):
    from forgegrad.models.hf import SiglipModel, SiglipVisionModel
    from forgegrad.models.hf.onnx_clip import export_clip_tower
    with pytest.raises(ValueError, match="vision_use_head must be true"):
        SiglipModel({"text_config": TEXT, "vision_config": dict(VISION, vision_use_head=False)})
    with pytest.raises(ValueError, match="hidden_size .32. must be a multiple of num_attention_heads .5."):
        SiglipVisionModel(dict(VISION, num_attention_heads=5))
    with pytest.raises(ValueError, match="patch_size must be a positive integer at most image_size"):
        SiglipVisionModel(dict(VISION, patch_size=31))
    with pytest.raises(ValueError, match="no head"):
        export_clip_tower(SiglipVisionModel(dict(VISION, vision_use_head=False)), tmp_path / "x.onnx", "vision")


def _word_tokenizer_dir(path):
    """A word-level tokenizer.json whose texts end with </s> (SigLIP's post-processing), padding with </s> (id 1,
    SigLIP's pad_token_id), saved by transformers next to the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    words = "a photo of cat dog bird this is".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="</s>", eos_token="</s>",
                                                  unk_token="<unk>", model_max_length=12)
    hf_tok.save_pretrained(path)
    return hf_tok


def test_images_and_texts_end_to_end_and_zero_shot_classification(tmp_path):
    """ImageTextProcessor pads SigLIP's texts to the tower's length with </s> and gives no mask, as SigLIP's
    tokenizer; with the checkpoint's SiglipImageProcessor the logits equal transformers' on uint8 images, and
    zero_shot_image_classification scores each label by its own sigmoid."""
    from forgegrad.models.hf.zero_shot import ImageTextProcessor, zero_shot_image_classification
    image_processing = pytest.importorskip("transformers.models.siglip.image_processing_pil_siglip")
    hf_tok = _word_tokenizer_dir(tmp_path)
    improc = image_processing.SiglipImageProcessorPil(size={"height": 30, "width": 30})
    improc.save_pretrained(tmp_path)
    hf = _siglip(tmp_path)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((40, 52, 3), (30, 30, 3))]
    labels = ["cat", "dog", "bird"]
    texts = [f"this is a photo of {label}" for label in labels]
    processor = ImageTextProcessor.from_pretrained(tmp_path)
    inputs = processor(texts, images)
    assert set(inputs) == {"input_ids", "pixel_values"}
    ref_ids = hf_tok(texts, padding="max_length", max_length=12, return_tensors="np")["input_ids"]
    ref_px = improc(images, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(inputs["input_ids"], ref_ids)
    np.testing.assert_array_equal(inputs["pixel_values"], ref_px)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ref_ids), pixel_values=torch.tensor(ref_px)).logits_per_image.numpy()
    model = from_pretrained(tmp_path)
    got = zero_shot_image_classification(model, processor, images, labels, hypothesis_template="this is a photo of {}")
    probs = 1 / (1 + np.exp(-ref.astype(np.float64)))
    for row, scores in zip(got, probs):
        assert [d["label"] for d in row] == [labels[j] for j in np.argsort(-scores, kind="stable")]
        np.testing.assert_allclose([d["score"] for d in row], np.sort(scores)[::-1], rtol=1e-4, atol=1e-7)
