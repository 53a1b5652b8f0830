"""CLIP (``CLIPModel``, ``CLIPTextModel``, ``CLIPVisionModel``, ``CLIPTextModelWithProjection``,
``CLIPVisionModelWithProjection``) read from checkpoints transformers wrote: logits, embeddings, hidden states and
pooled outputs equal transformers' on a padded text batch and random images, with either end-of-text pooling rule;
one training step's contrastive loss and gradients; the save round trip; a byte-level BPE tokenizer.json read by
forgegrad's tokenizer; the towers' ONNX exports in onnxruntime; bad inputs refused."""
from __future__ import annotations

import numpy as np
import pytest

from forgegrad.models import from_pretrained, save_pretrained

import hf_image_helpers as H

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from transformers.models.clip import configuration_clip as cc, modeling_clip as mc  # noqa: E402

VOCAB, EOS = 99, 98
TOL = dict(rtol=1e-4, atol=2e-5)
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=20, projection_dim=16, bos_token_id=97, eos_token_id=EOS, pad_token_id=EOS)
VISION = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, image_size=30,
              patch_size=6, projection_dim=16)


def _texts(lengths=(6, 9, 3), total=9, seed=0):
    """Right-padded ids: a start token, words, the end-of-text token ending each row (and padding it, as CLIP's
    tokenizer pads), and the mask."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), total), EOS, np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n - 1] = rng.integers(0, 97, n - 1)
        ids[row, 0] = 97
    mask = (np.arange(total)[None] < np.array(lengths)[:, None]).astype(np.int64)
    return ids, mask


def _images(n=2, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, 30, 30)).astype(np.float32)


def _saved(model, path):
    model.eval().save_pretrained(path)
    return model


def _clip(path, **text):
    torch.manual_seed(0)
    cfg = cc.CLIPConfig(text_config=dict(TEXT, **text), vision_config=VISION, projection_dim=16)
    return _saved(mc.CLIPModel(cfg), path)


def _close(got, want):
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), **TOL)


@pytest.mark.parametrize("eos", [EOS, 2], ids=["eos_token_id", "legacy_argmax"])
def test_clip_model_equals_transformers(tmp_path, eos):
    """eos_token_id 2 (configs saved before transformers' fix) pools at the highest id; any other at the first
    end-of-text token, here also the padding."""
    hf = _clip(tmp_path, eos_token_id=eos)
    model = from_pretrained(tmp_path)
    assert type(model).__name__ == "CLIPModel"
    ids, mask = _texts()
    px = _images()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), pixel_values=torch.tensor(px), attention_mask=torch.tensor(mask))
        text_ref = hf.text_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
        image_ref = hf.vision_model(pixel_values=torch.tensor(px))
        features = hf.get_text_features(input_ids=torch.tensor(ids)).pooler_output
    out = model(ids, px, mask)
    for name in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        _close(getattr(out, name), getattr(ref, name))
    assert out.loss is None
    text = model.text_model(ids, mask)
    _close(text.last_hidden_state, text_ref.last_hidden_state)
    _close(text.pooler_output, text_ref.pooler_output)
    image = model.vision_model(px)
    _close(image.last_hidden_state, image_ref.last_hidden_state)
    _close(image.pooler_output, image_ref.pooler_output)
    _close(model.get_text_features(ids), features)  # no mask: the causal mask alone
    _close(model.get_image_features(px), ref.vision_model_output.pooler_output)


@pytest.mark.parametrize("name", ["CLIPTextModel", "CLIPVisionModel", "CLIPTextModelWithProjection",
                                  "CLIPVisionModelWithProjection"])
def test_towers_equal_transformers_and_save_round_trip(tmp_path, name):
    torch.manual_seed(0)
    text = "Text" in name
    cfg = (cc.CLIPTextConfig if text else cc.CLIPVisionConfig)(**(TEXT if text else VISION))
    hf = _saved(getattr(mc, name)(cfg), tmp_path / "a")
    model = from_pretrained(tmp_path / "a")
    assert type(model).__name__ == name
    ids, mask = _texts()
    args = (ids, mask) if text else (_images(3),)
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)) if text else dict(
        pixel_values=torch.tensor(args[0]))
    with torch.no_grad():
        ref = hf(**kwargs)
    out = model(*args)
    _close(out.last_hidden_state, ref.last_hidden_state)
    if "Projection" in name:
        _close(out[0], ref.text_embeds if text else ref.image_embeds)
    else:
        _close(out.pooler_output, ref.pooler_output)
    save_pretrained(model, tmp_path / "b")  # transformers reads forgegrad's checkpoint back
    with torch.no_grad():
        back = getattr(mc, name).from_pretrained(tmp_path / "b").eval()(**kwargs)
    _close(out.last_hidden_state, back.last_hidden_state)


def test_a_training_step_matches_transformers(tmp_path):
    """return_loss: CLIP's symmetric cross entropy over the batch's pairs; every gradient (towers, projections,
    logit_scale) equals torch's for the same step."""
    hf = _clip(tmp_path)
    model = from_pretrained(tmp_path).train()
    hf.train()
    ids, mask = _texts()
    px = _images(3)
    keys = ("logit_scale", "text_projection.weight", "visual_projection.weight",
            "text_model.embeddings.token_embedding.weight", "text_model.encoder.layers.0.self_attn.q_proj.weight",
            "vision_model.embeddings.class_embedding", "vision_model.embeddings.patch_embedding.weight",
            "vision_model.pre_layrnorm.weight", "vision_model.encoder.layers.1.mlp.fc1.weight")
    H.check_training_step(hf, model, ids, mask, px, keys)


def _bpe_tokenizer_dir(path):
    """CLIP's byte-level BPE (``</w>`` word ends, lower-cased) with a few merges, saved by transformers: the 256
    byte symbols and their word-end forms, the merges' products, then <|startoftext|> and <|endoftext|>."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.clip.tokenization_clip import CLIPTokenizer
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    merges = [("a", "t</w>"), ("c", "at</w>"), ("d", "o"), ("do", "g</w>"), ("p", "h"), ("t", "o</w>"),
              ("o", "to</w>"), ("ph", "oto</w>"), ("o", "f</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    tok.save_pretrained(path)
    return tok


def test_tokenizer_json_of_clip_tokenizes_as_transformers(tmp_path):
    from forgegrad.models.hf.tokenizer import load_tokenizer
    hf_tok = _bpe_tokenizer_dir(tmp_path / "tok")
    texts = ["a photo of a cat", "A PHOTO of a dog!", "hello"]
    tok = load_tokenizer(str(tmp_path / "tok"), len(hf_tok))
    ids = [tok.encode(t, add_special_tokens=True) for t in texts]
    assert ids == hf_tok(texts)["input_ids"]
    assert ids[0][0] == hf_tok.bos_token_id and all(row[-1] == hf_tok.eos_token_id for row in ids)
    # the model pools those ids at their end-of-text token, as transformers
    hf = _clip(tmp_path / "m", vocab_size=len(hf_tok), eos_token_id=hf_tok.eos_token_id,
               bos_token_id=hf_tok.bos_token_id, pad_token_id=hf_tok.pad_token_id)
    batch = hf_tok(texts, padding=True, return_tensors="np")
    with torch.no_grad():
        ref = hf.get_text_features(input_ids=torch.tensor(batch["input_ids"]),
                                   attention_mask=torch.tensor(batch["attention_mask"])).pooler_output
    _close(from_pretrained(tmp_path / "m").get_text_features(batch["input_ids"], batch["attention_mask"]), ref)


@pytest.mark.parametrize("tower", ["text", "vision"])
def test_onnx_towers_in_onnxruntime(tmp_path, tower):
    ort = pytest.importorskip("onnxruntime")
    from forgegrad.models.hf.onnx_clip import export_clip_tower
    hf = _clip(tmp_path / "m")
    model = from_pretrained(tmp_path / "m")
    report = export_clip_tower(model, tmp_path / "t.onnx", tower)
    assert report.ok, report
    sess = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    if tower == "text":
        ids, mask = _texts((4, 11, 2, 7), total=11, seed=5)  # another batch and length than the example
        got = sess.run(None, {"input_ids": ids, "attention_mask": mask})
        with torch.no_grad():
            ref = hf.text_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
            embeds = hf.text_projection(ref.pooler_output)
    else:
        px = _images(3, seed=7)
        px[1, 0, 4, 4] = np.nan  # stays in its row (the class token's batch comes from the pixels times 0)
        got = sess.run(None, {"pixel_values": px})
        assert np.isnan(got[0]).any(-1).tolist() == [False, True, False]
        with torch.no_grad():
            ref = hf.vision_model(pixel_values=torch.tensor(px))
            embeds = hf.visual_projection(ref.pooler_output)
    np.testing.assert_allclose(got[0], embeds.numpy(), **TOL)
    np.testing.assert_allclose(got[1], ref.last_hidden_state.numpy(), **TOL)


def test_bad_inputs_are_refused(tmp_path):
    from forgegrad import tensor
    from forgegrad.models.hf.onnx_clip import export_clip_tower
    _clip(tmp_path)
    model = from_pretrained(tmp_path)
    ids, mask = _texts()
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, 30, 30\)"):
        model.get_image_features(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(TypeError, match="pixel_values must be float32, got .*int64"):
        model.get_image_features(tensor(np.zeros((1, 3, 30, 30), np.int64)))
    with pytest.raises(ValueError, match="21 tokens exceed the 20"):
        model.get_text_features(np.zeros((1, 21), np.int64))
    with pytest.raises(ValueError, match="input_ids must be in"):
        model.get_text_features(ids + 100)
    with pytest.raises(ValueError, match="logits_per_text must be square"):
        model(ids, _images(2), mask, return_loss=True)
    with pytest.raises(TypeError, match="a text tower is exported from one of"):
        export_clip_tower(model.vision_model, tmp_path / "x.onnx", "text")
    with pytest.raises(ValueError, match="tower must be"):
        export_clip_tower(model, tmp_path / "x.onnx", "audio")


def test_images_and_texts_end_to_end_and_zero_shot_classification(tmp_path):
    """A checkpoint directory with its tokenizer and CLIPImageProcessor: ImageTextProcessor's inputs and the logits
    equal transformers' processor + model on uint8 images of other sizes; zero_shot_image_classification equals
    transformers' pipeline."""
    from PIL import Image

    from forgegrad.models.hf.zero_shot import ImageTextProcessor, zero_shot_image_classification
    image_processing = pytest.importorskip("transformers.models.clip.image_processing_pil_clip")
    hf_tok = _bpe_tokenizer_dir(tmp_path)
    improc = image_processing.CLIPImageProcessorPil(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    improc.save_pretrained(tmp_path)
    hf = _clip(tmp_path, vocab_size=len(hf_tok), eos_token_id=hf_tok.eos_token_id, bos_token_id=hf_tok.bos_token_id,
               pad_token_id=hf_tok.pad_token_id)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((40, 52, 3), (31, 30, 3), (64, 33, 3))]
    texts = ["a photo of a cat", "a dog", "photo"]
    processor = ImageTextProcessor.from_pretrained(tmp_path)
    inputs = processor(texts, images)
    ref_text = hf_tok(texts, padding=True, return_tensors="np")
    ref_px = improc(images, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(inputs["input_ids"], ref_text["input_ids"])
    np.testing.assert_array_equal(inputs["attention_mask"], ref_text["attention_mask"])
    np.testing.assert_array_equal(inputs["pixel_values"], ref_px)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ref_text["input_ids"]),
                 attention_mask=torch.tensor(ref_text["attention_mask"]), pixel_values=torch.tensor(ref_px))
    model = from_pretrained(tmp_path)
    _close(model(inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"]).logits_per_image,
           ref.logits_per_image)
    pipe = transformers.pipeline("zero-shot-image-classification", model=hf, tokenizer=hf_tok, image_processor=improc)
    labels = ["cat", "dog", "photo of a dog"]
    got = zero_shot_image_classification(model, processor, images, labels)
    want = pipe([Image.fromarray(im) for im in images], candidate_labels=labels)
    for g, w in zip(got, want):
        assert [d["label"] for d in g] == [d["label"] for d in w]
        np.testing.assert_allclose([d["score"] for d in g], [d["score"] for d in w], rtol=1e-4, atol=1e-6)
    assert len(zero_shot_image_classification(model, processor, images[0], labels, top_k=2)[0]) == 2
    with pytest.raises(ValueError, match=r"text 0 is 40 tokens, past the 20 "):
        processor("a cat " * 19)
    with pytest.raises(ValueError, match="hypothesis_template must hold"):
        zero_shot_image_classification(model, processor, images, labels, hypothesis_template="a photo")


def test_transformers_4_layout_of_a_text_tower(tmp_path):
    """transformers 4 saved a CLIPTextModel's weights under ``text_model.`` with its position_ids buffer (Stable
    Diffusion's text encoders): read as the tower's own, and bfloat16 weights give the float32 model's pooled
    output to bfloat16 rounding."""
    from safetensors.numpy import load_file, save_file
    torch.manual_seed(0)
    hf = _saved(mc.CLIPTextModel(cc.CLIPTextConfig(**TEXT)), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights = {"text_model." + k: v for k, v in weights.items()}
    weights["text_model.embeddings.position_ids"] = np.arange(TEXT["max_position_embeddings"])[None]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ids, mask = _texts()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).pooler_output
    _close(from_pretrained(tmp_path)(ids, mask).pooler_output, ref)
    half = from_pretrained(tmp_path, dtype="bfloat16")(ids, mask).pooler_output
    np.testing.assert_allclose(half.numpy(), ref.numpy(), rtol=0.05, atol=0.05)


def test_onnx_of_a_projection_tower_pooling_at_the_highest_id(tmp_path):
    """A CLIPTextModelWithProjection whose eos_token_id is 2 exports with the highest-id pooling in the graph."""
    ort = pytest.importorskip("onnxruntime")
    from forgegrad.models.hf.onnx_clip import export_clip_tower
    torch.manual_seed(0)
    hf = _saved(mc.CLIPTextModelWithProjection(cc.CLIPTextConfig(**dict(TEXT, eos_token_id=2))), tmp_path)
    assert export_clip_tower(from_pretrained(tmp_path), tmp_path / "t.onnx", "text").ok
    ids, mask = _texts((13, 8, 5), total=13, seed=3)
    got = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    np.testing.assert_allclose(got[0], ref.text_embeds.numpy(), **TOL)


def test_rows_stay_apart_and_left_padding(tmp_path):
    """A NaN pixel of one image leaves the batch's other rows as transformers' (the class token's batch is taken
    from the pixels times 0, row by row); left-padded texts (padding id other than the end-of-text) pool at each
    row's end-of-text token as transformers' eager attention does, whatever the other rows hold."""
    hf = _clip(tmp_path, pad_token_id=0)
    hf.set_attn_implementation("eager")
    model = from_pretrained(tmp_path)
    px = _images(3)
    px[1, :, 2, 2] = np.nan
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=torch.tensor(px)).pooler_output
    got = model.get_image_features(px)
    assert np.isnan(got.numpy()).any(-1).tolist() == [False, True, False]
    _close(got, ref)
    ids, mask = _texts()
    left, left_mask = np.zeros_like(ids), np.zeros_like(mask)
    for row, n in enumerate(mask.sum(1)):
        left[row, ids.shape[1] - n:], left_mask[row, ids.shape[1] - n:] = ids[row, :n], 1
    with torch.no_grad():
        ref = hf.text_model(input_ids=torch.tensor(left), attention_mask=torch.tensor(left_mask))
    out = model.text_model(left, left_mask)
    _close(out.pooler_output, ref.pooler_output)
    _close(out.last_hidden_state, ref.last_hidden_state)
    _close(model.text_model(left[:1], left_mask[:1]).pooler_output, ref.pooler_output[:1])  # a batch of 1
