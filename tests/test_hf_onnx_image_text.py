"""ONNX export of the image-text decoders (onnx_image_text.py) on checkpoints written by transformers itself: Gemma 3
(image blocks attending both ways, a sliding window of 3), LLaVA (Llama; Mistral with a window, two feature layers
and the class token kept) and PaliGemma (Gemma and Gemma 2 decoders, the prefix-LM). The three graphs run in
onnxruntime give forgegrad's logits (which test_hf_gemma3_vlm / test_hf_llava / test_hf_paligemma hold equal to
transformers') on left-padded batches with one and two images per prompt, with token types and without, then on a
decode step through the cache; greedy decoding on the graphs gives generate's tokens, sampling its draws after the
same seed; bad input raises."""
import numpy as np
import pytest

from forgegrad.autograd import no_grad
from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_image_text, export_with_past, generate, generate_image_text_onnx, generate_onnx
from forgegrad.models.hf.onnx_image_text import ImageTextSessions
from hf_conformance import left_padded_positions

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
transformers.logging.set_verbosity_error()

IMG, BOI, EOI = 110, 111, 112
TEXT = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
            intermediate_size=40, vocab_size=120, max_position_embeddings=128, initializer_range=0.3)
SIGLIP = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=28,
              patch_size=7)
CLIP = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=3,
            num_attention_heads=4, image_size=14, patch_size=7, projection_dim=16)


def _gemma3():
    cfg = transformers.Gemma3Config(text_config=dict(TEXT, sliding_window=3,
                                                     layer_types=["sliding_attention", "full_attention"]),
                                    vision_config=dict(SIGLIP, vision_use_head=False), mm_tokens_per_image=4,
                                    image_token_id=IMG, boi_token_id=BOI, eoi_token_id=EOI)
    hf = transformers.Gemma3ForConditionalGeneration(cfg)
    with torch.no_grad():  # the projector's weight and norm are zeros at init: make them count
        hf.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.3)
        hf.model.multi_modal_projector.mm_soft_emb_norm.weight.normal_(0, 0.3)
    return hf


def _llava(extra):
    text = dict(TEXT, model_type="llama", initializer_range=0.2)
    text.pop("head_dim")
    if extra:
        text.update(model_type="mistral", sliding_window=4)
    cfg = transformers.LlavaConfig(text_config=text, vision_config=CLIP, image_token_index=IMG, **extra)
    return transformers.LlavaForConditionalGeneration(cfg)


def _paligemma(kind):
    text = dict(TEXT, model_type=kind, **({"sliding_window": 3} if kind == "gemma2" else {}))
    cfg = transformers.PaliGemmaConfig(text_config=text, vision_config=dict(SIGLIP, image_size=14, projection_dim=48),
                                       image_token_index=IMG, projection_dim=48)
    return transformers.PaliGemmaForConditionalGeneration(cfg)


BUILDERS = {"gemma3": _gemma3, "llava": lambda: _llava({}),
            "llava_mistral_full": lambda: _llava(dict(vision_feature_layer=[-3, -1],
                                                      vision_feature_select_strategy="full")),
            "paligemma_gemma": lambda: _paligemma("gemma"), "paligemma_gemma2": lambda: _paligemma("gemma2")}


def _prompts(model):
    """[(ids, mask, token types or None, images)]: a left-padded batch with one image per prompt, and one with two."""
    n = model.tokens_per_image
    block = [BOI] + [IMG] * n + [EOI] if model.architecture.startswith("Gemma3") else [IMG] * n
    paligemma = model.architecture.startswith("PaliGemma")
    out = []
    for images in (1, 2):
        if paligemma:  # the images, BOS, the prompt and "\n" (the prefix), then two suffix tokens
            row, kinds = block * images + [2, 5, 6, 1, 8, 9], [0] * (n * images + 4) + [1, 1]
        else:
            row = [5, 6] + block + [7] + (block + [17] if images == 2 else []) + [8, 9]
            kinds = [int(t == IMG) for t in row]
        ids = np.array([row, [0, 0, 0] + row[:-3]])
        if ids[1].tolist().count(IMG) != n * images:  # the padded row lost no image token
            raise AssertionError("bad prompt")
        mask = np.array([[1] * len(row), [0, 0, 0] + [1] * (len(row) - 3)])
        types = np.array([kinds, [0, 0, 0] + kinds[:-3]]) if model.architecture != "LlavaForConditionalGeneration" \
            else None
        size = model.vision_tower.config["image_size"]
        pixels = np.random.RandomState(images).randn(2 * images, 3, size, size).astype(np.float32)
        out.append((ids, mask, types, pixels))
    return out


@pytest.fixture(scope="module", params=list(BUILDERS))
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    hf = BUILDERS[request.param]().eval()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    model = from_pretrained(path)
    reports = export_image_text(model, path / "onnx")
    assert all(r.ok for r in reports.values())
    return model, ImageTextSessions(path / "onnx"), path / "onnx"


def test_graphs_give_forgegrads_logits_on_padded_batches_and_a_decode_step(exported):
    model, s, _ = exported
    for ids, mask, types, pixels in _prompts(model):
        for kinds in ([types, None] if types is not None else [None]):
            embeds = s.embeds(ids, s.image_rows(pixels))
            logits, *present = s.decoder.run(None, s.decoder_feed(embeds, mask, kinds, s.empty_past(2)))
            cache = model.new_cache(2, ids.shape[1] + 1)
            with no_grad():
                want = model(ids, mask, left_padded_positions(mask), cache=cache, pixel_values=pixels,
                             token_type_ids=kinds).numpy()
            real = mask == 1
            np.testing.assert_allclose(logits[real], want[real], rtol=1e-4, atol=1e-4)
            # one token through the cache (a decode step: Gemma 3's token type 0, PaliGemma's 1, the default)
            nxt = want[:, -1].argmax(-1)[:, None]
            mask2 = np.concatenate([mask, np.ones((2, 1), np.int64)], 1)
            step = s.embed.run(None, {"input_ids": nxt})[0]
            got, *_ = s.decoder.run(None, s.decoder_feed(step, mask2, None, dict(zip(s.past_names, present))))
            with no_grad():
                want2 = model(nxt, mask2, left_padded_positions(mask2)[:, -1:], cache=cache).numpy()
            np.testing.assert_allclose(got, want2, rtol=1e-4, atol=1e-4)
        if types is not None:  # the token types change the logits (a causal-only graph would fail above)
            causal = s.decoder.run(None, s.decoder_feed(embeds, mask, None, s.empty_past(2)))[0]
            with_types = s.decoder.run(None, s.decoder_feed(embeds, mask, types, s.empty_past(2)))[0]
            assert np.abs(causal - with_types)[mask == 1].max() > 1e-3 * np.abs(causal).max()


def test_greedy_decoding_on_the_graphs_gives_generates_tokens(exported):
    model, s, folder = exported
    for ids, mask, types, pixels in _prompts(model):
        want = generate(model, ids, attention_mask=mask, pixel_values=pixels, token_type_ids=types, max_new_tokens=6,
                        do_sample=False, eos_token_id=None)
        got = generate_image_text_onnx(s, ids, mask, pixel_values=pixels, token_type_ids=types, max_new_tokens=6,
                                       do_sample=False, eos_token_id=None)
        np.testing.assert_array_equal(got, want)
    # generate_onnx given the folder: the same loop, the generation config read beside the graphs
    np.testing.assert_array_equal(generate_onnx(folder, ids, mask, max_new_tokens=6, do_sample=False,
                                                eos_token_id=None, pixel_values=pixels, token_type_ids=types), want)
    text = np.array([[5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(generate_image_text_onnx(s, text, max_new_tokens=4, do_sample=False),
                                  generate(model, text, max_new_tokens=4, do_sample=False))


def test_sampling_on_the_graphs_draws_generates_tokens_after_the_same_seed(exported):
    import forgegrad as fg
    model, s, _ = exported
    ids, mask, types, pixels = _prompts(model)[1]
    kw = dict(max_new_tokens=5, do_sample=True, top_k=20, temperature=1.5, eos_token_id=None, token_type_ids=types)
    fg.manual_seed(7)
    want = generate(model, ids, attention_mask=mask, pixel_values=pixels, **kw)
    fg.manual_seed(7)
    np.testing.assert_array_equal(generate_image_text_onnx(s, ids, mask, pixel_values=pixels, **kw), want)


def test_beams_and_several_draws_on_the_graphs_give_generates_tokens(exported):
    """Beam search (3 beams, the 2 best) and 2 draws per prompt on the graphs: each prompt's rows from its one
    prefill, the tokens generate gives with the images on every row."""
    import forgegrad as fg
    model, s, _ = exported
    for ids, mask, types, pixels in _prompts(model):
        kw = dict(max_new_tokens=5, eos_token_id=None, token_type_ids=types, pixel_values=pixels)
        beams = dict(kw, num_beams=3, num_return_sequences=2, length_penalty=0.5, do_sample=False)
        np.testing.assert_array_equal(generate_image_text_onnx(s, ids, mask, **beams),
                                      generate(model, ids, attention_mask=mask, **beams))
    draws = dict(kw, num_return_sequences=2, do_sample=True, top_k=20, temperature=30.0)  # near-uniform draws
    fg.manual_seed(3)
    want = generate(model, ids, attention_mask=mask, **draws)
    fg.manual_seed(3)
    np.testing.assert_array_equal(generate_image_text_onnx(s, ids, mask, **draws), want)
    assert want.shape[0] == 4 and not np.array_equal(want[0], want[1])


def test_bad_input_raises_naming_the_argument(exported):
    model, s, _ = exported
    ids, mask, types, pixels = _prompts(model)[0]
    with pytest.raises(TypeError, match="export_with_past: model is a .*image-text"):
        export_with_past(model, "unused.onnx")
    with pytest.raises(ValueError, match="pixel_values must be"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels[:, :, :-1], max_new_tokens=2)
    with pytest.raises(ValueError, match="pixel_values: the prompt holds"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels[:1], max_new_tokens=2)
    if types is None:
        with pytest.raises(TypeError, match="token_type_ids"):
            generate_image_text_onnx(s, ids, mask, pixel_values=pixels, token_type_ids=np.zeros_like(ids))
    else:
        with pytest.raises(ValueError, match="token_type_ids must be"):
            generate_image_text_onnx(s, ids, mask, pixel_values=pixels, token_type_ids=types[:, 1:])
    with pytest.raises(ValueError, match="num_return_sequences \\(3\\) must be <= num_beams \\(2\\)"):
        generate_image_text_onnx(s, ids, mask, pixel_values=pixels, num_beams=2, num_return_sequences=3)


def test_a_text_decoder_is_refused(tmp_path):
    from forgegrad.models.hf import LlamaForCausalLM
    text = LlamaForCausalLM(dict(TEXT, model_type="llama"))
    with pytest.raises(TypeError, match="export_image_text: model must be an image-text model"):
        export_image_text(text, tmp_path)
    export_with_past(text, tmp_path / "decoder.onnx", verify=False)
    with pytest.raises(TypeError, match="generate_onnx: pixel_values / .* go with an image-text"):
        generate_onnx(tmp_path / "decoder.onnx", [[1, 2]], pixel_values=np.zeros((1, 3, 14, 14), np.float32))


def test_cli_exports_an_image_text_checkpoint_to_a_folder(tmp_path, capsys):
    from forgegrad.cli import main
    torch.manual_seed(0)
    _paligemma("gemma2").eval().save_pretrained(tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "onnx")]) == 0
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [
        "decoder_model_merged.onnx", "embed_tokens.onnx", "generation_config.json", "vision_encoder.onnx"]
    model = from_pretrained(tmp_path / "ckpt")
    ids, mask, types, pixels = _prompts(model)[0]
    np.testing.assert_array_equal(
        generate_onnx(tmp_path / "onnx", ids, mask, max_new_tokens=5, pixel_values=pixels, token_type_ids=types),
        generate(model, ids, attention_mask=mask, max_new_tokens=5, pixel_values=pixels, token_type_ids=types))
    (tmp_path / "file.onnx").write_bytes(b"")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "file.onnx")]) == 2
    assert "give a directory" in capsys.readouterr().err


def test_an_image_token_past_the_text_vocabulary_embeds_as_id_0(tmp_path):
    """transformers reads such an image token as id 0 before placing the image rows; the embedding graph does too."""
    import forgegrad as fg
    from forgegrad.models.hf import LlavaForConditionalGeneration
    text = dict(TEXT, model_type="llama")
    text.pop("head_dim")
    model = LlavaForConditionalGeneration(dict(text_config=text, vision_config=CLIP, image_token_index=130))
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data = fg.tensor(rng.standard_normal(p.shape).astype(np.float32) * 0.2)
    export_image_text(model, tmp_path)
    s = ImageTextSessions(tmp_path)
    ids = np.array([[5, 6] + [130] * 4 + [7, 8]])
    pixels = rng.standard_normal((1, 3, 14, 14)).astype(np.float32)
    logits, _ = s.prefill(ids, np.ones_like(ids), pixels)
    with no_grad():
        np.testing.assert_allclose(logits, model(ids, pixel_values=pixels).numpy(), rtol=1e-4, atol=1e-4)


def test_logits_to_keep_1_gives_the_last_positions_logits(tmp_path):
    torch.manual_seed(0)
    _paligemma("gemma2").eval().save_pretrained(tmp_path / "ckpt")
    model = from_pretrained(tmp_path / "ckpt")
    export_image_text(model, tmp_path / "onnx", logits_to_keep=1)
    s = ImageTextSessions(tmp_path / "onnx")
    ids, mask, types, pixels = _prompts(model)[1]
    logits, _ = s.prefill(ids, mask, pixels, types)
    with no_grad():
        want = model(ids, mask, left_padded_positions(mask), pixel_values=pixels, token_type_ids=types).numpy()
    assert logits.shape == (2, 1, want.shape[-1])
    np.testing.assert_allclose(logits, want[:, -1:], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(
        generate_onnx(tmp_path / "onnx", ids, mask, max_new_tokens=4, pixel_values=pixels, token_type_ids=types),
        generate(model, ids, attention_mask=mask, max_new_tokens=4, pixel_values=pixels, token_type_ids=types))
    with pytest.raises(ValueError, match="logits_to_keep must be 0"):
        export_image_text(model, tmp_path / "bad", logits_to_keep=2)
