"""BART and Marian encoder-decoders from checkpoints transformers wrote: logits, gradients and greedy generation (with
the config's forced first and last tokens) against transformers; save_pretrained; bfloat16 checkpoints."""
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained, generate, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from hf_conformance import check_lean_seq2seq_step, seq2seq_gradients, seq2seq_logits, weight_variant  # noqa: E402

VOCAB = 120


@pytest.fixture(scope="module", params=[("bart", True), ("bart", False), ("marian", True), ("mbart", True),
                                        ("m2m100", True)],
                ids=["bart-scaled", "bart-unscaled", "marian", "mbart", "m2m100"])
def pair(request, tmp_path_factory):
    """BART, Marian (fixed sinusoidal positions, swish, the pad token as decoder start, as opus-mt) and mBART
    (pre-norm layers, a LayerNorm after each stack; the decoder starts at the end token, as mbart-large-50) and
    M2M100 / NLLB (mBART's layers with a fixed position table counted over non-padding tokens)."""
    kind, scaled = request.param
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
                  decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=64,
                  dropout=0.0, init_std=0.3, scale_embedding=scaled)
    if kind == "bart":
        hf = transformers.BartForConditionalGeneration(transformers.BartConfig(**common)).eval()
    elif kind in ("mbart", "m2m100"):
        if kind == "mbart":
            hf = transformers.MBartForConditionalGeneration(transformers.MBartConfig(**common,
                                                                                     decoder_start_token_id=2))
        else:
            # (M2M100's config defaults to LayerDrop and attention dropout, which forgegrad does not apply yet)
            hf = transformers.M2M100ForConditionalGeneration(transformers.M2M100Config(
                **common, decoder_start_token_id=2, encoder_layerdrop=0.0,
                decoder_layerdrop=0.0, attention_dropout=0.0))
        hf.eval()
        with torch.no_grad():  # non-trivial final norms, so that a missing one is seen
            for norm in (hf.model.encoder.layer_norm, hf.model.decoder.layer_norm):
                norm.weight.normal_(1.0, 0.3)
                norm.bias.normal_(0.0, 0.3)
    else:
        cfg = transformers.MarianConfig(**common, activation_function="swish", pad_token_id=VOCAB - 1,
                                        decoder_start_token_id=VOCAB - 1, eos_token_id=2, forced_eos_token_id=2)
        hf = transformers.MarianMTModel(cfg).eval()
    if hasattr(hf, "final_logits_bias"):
        with torch.no_grad():  # a non-zero final_logits_bias, so that it is checked too
            hf.final_logits_bias.normal_()
    path = tmp_path_factory.mktemp("bart") / f"{kind}-{scaled}"
    hf.save_pretrained(path)
    return hf, from_pretrained(path), path


def _inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(3, VOCAB - 1, (3, 10))
    mask = np.ones((3, 10), np.int64)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    dec = rng.randint(3, VOCAB - 1, (3, 5))
    dec[:, 0] = 2
    return ids, mask, dec


def test_logits_are_transformers_with_padding(pair):
    hf, model, _ = pair
    ids, mask, dec = _inputs()
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), seq2seq_logits(hf, ids, mask, dec), rtol=1e-4, atol=1e-4)
    if model.marian:  # the fixed position table, bit for bit
        from forgegrad.models.hf.bart import sinusoidal_positions
        np.testing.assert_array_equal(sinusoidal_positions(64, 32), hf.model.encoder.embed_positions.weight.numpy())


def test_m2m100_positions_count_non_padding_tokens(tmp_path):
    """M2M100 / NLLB: the fixed table equals transformers' (float32), and a token's row counts the non-padding tokens
    up to it, padding on the zero row: left- and right-padded inputs whose padding holds the pad token give
    transformers' logits at the real tokens, and its greedy tokens."""
    from forgegrad.models.hf.bart import m2m100_positions
    torch.manual_seed(0)
    hf = transformers.M2M100ForConditionalGeneration(transformers.M2M100Config(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=64, init_std=0.3,
        decoder_start_token_id=2)).eval()
    hf.save_pretrained(tmp_path / "m")
    model = from_pretrained(tmp_path / "m")
    np.testing.assert_allclose(m2m100_positions(66, 32, 1), hf.model.encoder.embed_positions.weights.numpy()[:66],
                               rtol=0, atol=1e-6)
    ids, _, dec = _inputs()
    mask = np.ones_like(ids)
    mask[0, :3] = 0  # left padding
    mask[1, 6:] = 0  # right padding
    ids = np.where(mask == 1, ids, 1)
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), seq2seq_logits(hf, ids, mask, dec), rtol=1e-4,
                               atol=1e-4)
    got = generate(model, ids, max_new_tokens=8, attention_mask=mask)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=8,
                           do_sample=False, num_beams=1).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["bart", "m2m100"])
@pytest.mark.parametrize("setting", [dict(attention_dropout=1.0), dict(encoder_layerdrop=1.0, decoder_layerdrop=1.0),
                                     dict(decoder_layerdrop=1.0)])
def test_training_applies_attention_dropout_and_layerdrop(tmp_path, kind, setting):
    """attention_dropout and LayerDrop (encoder_layerdrop / decoder_layerdrop) apply in training as transformers'
    do: at probability 1 (every weight dropped, every layer skipped) training-mode logits equal transformers' (no
    randomness left to differ); at 0.3 a seed repeats its draw and eval mode is unaffected."""
    import forgegrad as fg
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=64,
                  init_std=0.3, dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, encoder_layerdrop=0.0,
                  decoder_layerdrop=0.0)
    cls, config = ((transformers.BartForConditionalGeneration, transformers.BartConfig) if kind == "bart" else
                   (transformers.M2M100ForConditionalGeneration, transformers.M2M100Config))
    hf = cls(config(**{**common, **setting})).train()
    hf.save_pretrained(tmp_path / "m")
    model = from_pretrained(tmp_path / "m").train()
    ids, mask, dec = _inputs()
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  decoder_input_ids=torch.tensor(dec)).logits.numpy()
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), want, rtol=1e-4, atol=1e-4)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg.update({k: 0.3 for k in setting})
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    model = from_pretrained(tmp_path / "m")
    with fg.no_grad():
        calm = model.eval()(ids, mask, dec).numpy()
        model.train()
        fg.manual_seed(5)
        first = model(ids, mask, dec).numpy()
        fg.manual_seed(5)
        np.testing.assert_array_equal(model(ids, mask, dec).numpy(), first)
        draws = [model(ids, mask, dec).numpy() for _ in range(4)]
    assert any(not np.array_equal(d, calm) for d in draws)
    with fg.no_grad():
        np.testing.assert_array_equal(model.eval()(ids, mask, dec).numpy(), calm)
    cfg["attention_dropout"] = 1.5
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="attention_dropout must be a probability in \\[0, 1\\], got 1.5"):
        from_pretrained(tmp_path / "m")


def test_greedy_generation_with_the_forced_end_token_is_transformers(pair):
    hf, model, _ = pair
    ids, mask, _ = _inputs()
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=12,
                           do_sample=False, num_beams=1).numpy()
    got = generate(model, ids, max_new_tokens=12, attention_mask=mask)
    np.testing.assert_array_equal(got, want)
    from forgegrad.models.hf.logits_processors import token_setting
    forced = token_setting(model, "forced_eos_token_id")
    if model.positions == "m2m100":  # transformers 5's M2M100Config has no forced_eos_token_id
        assert forced is None
    else:
        assert forced == 2 and (got[:, -1] == 2).all()
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=12,
                           do_sample=False, num_beams=3).numpy()
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=3), want)


def test_lean_decode_step_is_the_tensor_decode(pair):
    """The lean step gives the Tensor decode's logits at 20 steps on a right-padded batch; a forward pre-hook
    keeps generate on the Tensor path, with the same tokens."""
    from forgegrad.models.hf._decode_seq2seq import BartLeanStep
    _, model, _ = pair
    ids, mask, _ = _inputs()
    check_lean_seq2seq_step(model, BartLeanStep, ids, mask, model.decoder.layers[0])


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_lean_step_takes_bfloat16_and_int8_weights(pair, tmp_path, weights):
    """A bfloat16 checkpoint loaded as stored (from_pretrained dtype="bfloat16": bfloat16 Linear layers and
    embedding, the tied head its own layer on the same bits) and an int8 weight-only model: the lean step gives
    their Tensor decode's logits and generate takes it."""
    from forgegrad.models.hf._decode_seq2seq import BartLeanStep
    hf, _, path = pair
    model = weight_variant(hf, path, weights, tmp_path)
    ids, mask, _ = _inputs()
    check_lean_seq2seq_step(model, BartLeanStep, ids, mask, model.decoder.layers[0])


def test_forced_first_token(pair, tmp_path):
    """forced_bos_token_id in config.json (bart-large-cnn's) makes the first generated token that one where the
    checkpoint has no generation_config.json (transformers builds its generation config from config.json then; with
    one, config.json's is ignored: tests/test_hf_legacy_generation_config.py)."""
    _, _, path = pair
    import shutil
    shutil.copytree(path, tmp_path / "m")
    (tmp_path / "m" / "generation_config.json").unlink()
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["forced_bos_token_id"] = 7
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    ids, mask, _ = _inputs()
    out = generate(from_pretrained(tmp_path / "m"), ids, max_new_tokens=5, attention_mask=mask)
    assert (out[:, 1] == 7).all() and (out[:, 0] == from_pretrained(path).decoder_start_token_id).all()


def test_forced_first_token_argument_picks_the_target_language(pair, tmp_path):
    """generate(forced_bos_token_id=...) as transformers' (mBART-50 / NLLB name the target language so): greedy and
    beam tokens equal transformers'; None turns the config's off; a token outside the vocabulary is refused."""
    hf, model, path = pair
    ids, mask, _ = _inputs()
    for beams in (1, 2):
        got = generate(model, ids, max_new_tokens=6, attention_mask=mask, forced_bos_token_id=9, num_beams=beams)
        with torch.no_grad():
            want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=6,
                               do_sample=False, num_beams=beams, forced_bos_token_id=9).numpy()
        np.testing.assert_array_equal(got, want)
        assert (got[:, 1] == 9).all()
    import shutil
    shutil.copytree(path, tmp_path / "m")
    (tmp_path / "m" / "generation_config.json").unlink()  # config.json's forced token applies (as transformers')
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["forced_bos_token_id"] = 7
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    forced = from_pretrained(tmp_path / "m")
    assert (generate(forced, ids, max_new_tokens=2, attention_mask=mask)[:, 1] == 7).all()
    free = generate(forced, ids, max_new_tokens=4, attention_mask=mask, forced_bos_token_id=None)
    np.testing.assert_array_equal(free, generate(model, ids, max_new_tokens=4, attention_mask=mask))
    with pytest.raises(ValueError, match="forced_bos_token_id must be a token id in \\[0, 120\\) or None"):
        generate(model, ids, attention_mask=mask, forced_bos_token_id=VOCAB)


def test_generate_cli_target_language(pair, tmp_path, capsys):
    """forgegrad generate --target-lang TOKEN (a name of tokenizer.json's vocabulary, or an id) forces the first
    generated token; a name outside the vocabulary is a usage error naming the flag."""
    import shutil

    from forgegrad.cli import main
    _, _, path = pair
    shutil.copytree(path, tmp_path / "m")
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    for flag in ("w9", "9"):
        capsys.readouterr()
        assert main(["generate", str(tmp_path / "m"), "--prompt", "w5 w6 w7", "--max-new-tokens", "4",
                     "--target-lang", flag]) == 0
        assert capsys.readouterr().out.startswith("w9")
    assert main(["generate", str(tmp_path / "m"), "--prompt", "w5", "--target-lang", "xx_XX"]) == 2
    assert "--target-lang 'xx_XX' is not a token of the model's vocabulary" in capsys.readouterr().err


def test_source_language_replaces_the_templates_language_token(pair, tmp_path, capsys):
    """A tokenizer.json whose post-processor adds a language token and the end token (NLLB's "eng_Latn $A </s>"):
    encode_source puts the source language in its place; forgegrad generate --source-lang feeds the model those ids
    (its text equals generate's on them); a tokenizer without such a token, or a decoder, is refused clearly."""
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from forgegrad.cli import main
    from forgegrad.models.hf.tokenizer import load_tokenizer
    hf, model, path = pair
    shutil.copytree(path, tmp_path / "m")
    vocab = {f"w{i}": i for i in range(VOCAB)}
    vocab.update({"</s>": 2, "eng_Latn": 100, "deu_Latn": 101})
    del vocab["w2"], vocab["w100"], vocab["w101"]
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="eng_Latn $A </s>", special_tokens=[
        ("eng_Latn", 100), ("</s>", 2)])
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path / "m", VOCAB, eos_token_id=2)
    assert loaded.encode("w5 w6", add_special_tokens=True) == [100, 5, 6, 2]
    assert loaded.encode_source("w5 w6", 101) == [101, 5, 6, 2]
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "m"), "--prompt", "w5 w6", "--max-new-tokens", "5",
                 "--source-lang", "deu_Latn"]) == 0
    new = list(generate(from_pretrained(tmp_path / "m"), [[101, 5, 6, 2]], max_new_tokens=5)[0, 1:])
    new = new[:new.index(2)] if 2 in new else new  # the CLI writes the text up to the end token
    assert capsys.readouterr().out.strip() == loaded.decode(new, skip_special_tokens=True).strip()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    assert main(["generate", str(tmp_path / "m"), "--prompt", "w5", "--source-lang", "deu_Latn"]) == 2
    assert "adds 0 tokens besides the end token" in capsys.readouterr().err


def test_gradients_are_transformers_in_float64(pair):
    hf, _, path = pair
    model = from_pretrained(path)
    ours, theirs = seq2seq_gradients(hf, model, *_inputs())
    names = ("shared.weight", "decoder.layers.2.encoder_attn.v_proj.weight", "encoder.layers.0.self_attn.q_proj.bias",
             "decoder.layers.0.fc1.weight")
    names += ("encoder.embed_positions.weight",) if model.positions == "learned" else ()
    for name in names + (("encoder.layer_norm.weight", "decoder.layer_norm.bias") if model.pre_norm else ()):
        ref = theirs["model." + name].grad.numpy()
        np.testing.assert_allclose(ours[name].grad.numpy(), ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max(),
                                   err_msg=name)


def test_save_pretrained_round_trip_bfloat16_and_errors(pair, tmp_path):
    hf, model, _ = pair
    save_pretrained(model, tmp_path / "saved")
    back = type(hf).from_pretrained(tmp_path / "saved").eval()
    ids, mask, dec = _inputs()
    np.testing.assert_allclose(seq2seq_logits(back, ids, mask, dec), seq2seq_logits(hf, ids, mask, dec), rtol=1e-6,
                               atol=1e-6)
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    hf.float()
    bf, widened = from_pretrained(tmp_path / "bf16", dtype="bfloat16"), from_pretrained(tmp_path / "bf16")
    np.testing.assert_array_equal(bf(ids, mask, dec).numpy(), widened(ids, mask, dec).numpy())
    with pytest.raises(ValueError, match="decoder_input_ids is required"):
        model(ids, mask)
    with pytest.raises(ValueError, match="exceed max_position_embeddings"):
        model.encode(np.full((1, 65), 5))
    with pytest.raises(ValueError, match="exceed the model's 64 positions"):
        generate(model, ids, max_new_tokens=70, attention_mask=mask)
    with pytest.raises(ValueError, match="decoder position 64 exceeds max_position_embeddings"):
        model(ids, mask, np.full((3, 65), 5))


def test_streaming_paths_run_one_beam_whatever_generation_config_asks(pair, tmp_path, capsys):
    """forgegrad generate (streamed) and the completions server on a checkpoint whose generation_config.json
    asks for beams: greedy text, no error."""
    import shutil

    from forgegrad.cli import main
    from forgegrad.serve.completions import GenerationServeConfig, TextGenerator
    _, _, path = pair
    shutil.copytree(path, tmp_path / "m")
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps({"num_beams": 4, "no_repeat_ngram_size": 3}))
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    assert main(["generate", str(tmp_path / "m"), "--prompt", "w5 w6 w7", "--max-new-tokens", "6"]) == 0
    gen = TextGenerator(str(tmp_path / "m"))
    from forgegrad.serve.completion_request import parse
    req = parse(json.dumps({"prompt": "w5 w6 w7", "max_tokens": 6, "temperature": 0}).encode(), "m")
    import threading
    result = gen.complete(req, gen.token_ids(req.prompts[0], 0), None, threading.Event())
    assert result.completion_tokens >= 1
    assert GenerationServeConfig(str(tmp_path / "m")).validate()


DECODER_VOCAB = 90


@pytest.fixture(scope="module")
def separate(tmp_path_factory):
    """Marian with separate source and target vocabularies (share_encoder_decoder_embeddings: false, as opus-mt
    checkpoints converted from Marian models with two vocabularies): the encoder's table of 120 tokens, the decoder's
    (its tied head and final_logits_bias too) of decoder_vocab_size 90."""
    torch.manual_seed(0)
    cfg = transformers.MarianConfig(
        vocab_size=VOCAB, decoder_vocab_size=DECODER_VOCAB, share_encoder_decoder_embeddings=False, d_model=32,
        encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=48,
        decoder_ffn_dim=40, max_position_embeddings=64, dropout=0.0, init_std=0.3, scale_embedding=True,
        activation_function="swish", pad_token_id=DECODER_VOCAB - 1, decoder_start_token_id=DECODER_VOCAB - 1,
        eos_token_id=2, forced_eos_token_id=2)
    hf = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():
        hf.final_logits_bias.normal_()
    path = tmp_path_factory.mktemp("marian_separate") / "m"
    hf.save_pretrained(path)
    return hf, from_pretrained(path), path


def _separate_inputs():
    ids, mask, dec = _inputs()  # source ids up to 118: past the decoder's vocabulary
    dec = dec % (DECODER_VOCAB - 1)
    dec[:, 0] = 2
    assert ids.max() >= DECODER_VOCAB
    return ids, mask, dec


def test_separate_vocabularies_logits_and_float64_gradients(separate):
    """Each stack its own token table (transformers' names, no shared one), logits of the decoder's vocabulary equal
    transformers' with padding, and float64 gradients of both tables (the decoder's through the tied head too)."""
    hf, model, path = separate
    state = model.state_dict()
    assert "shared.weight" not in state and "lm_head.weight" not in state
    assert state["encoder.embed_tokens.weight"].shape == (VOCAB, 32)
    assert state["decoder.embed_tokens.weight"].shape == (DECODER_VOCAB, 32)
    assert state["final_logits_bias"].shape == (1, DECODER_VOCAB)
    assert (model.vocab_size, model.decoder_vocab_size) == (VOCAB, DECODER_VOCAB)
    ids, mask, dec = _separate_inputs()
    got = model(ids, mask, dec).numpy()
    assert got.shape == (3, 5, DECODER_VOCAB)
    np.testing.assert_allclose(got, seq2seq_logits(hf, ids, mask, dec), rtol=1e-4, atol=1e-4)
    model = from_pretrained(path)
    ours, theirs = seq2seq_gradients(hf, model, ids, mask, dec)
    for name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.layers.1.fc1.weight",
                 "encoder.layers.0.self_attn.q_proj.bias"):
        ref = theirs["model." + name].grad.numpy()
        assert np.abs(ref).max() > 0, name
        np.testing.assert_allclose(ours[name].grad.numpy(), ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max(),
                                   err_msg=name)


def test_separate_vocabularies_generate_lean_step_and_token_checks(separate):
    """Greedy and beam tokens equal transformers' generate; the lean step gives the Tensor decode's logits; decoder
    tokens (and forced / eos / pad ids) are checked against the decoder's vocabulary, the source against the
    encoder's; only Marian takes separate vocabularies."""
    from forgegrad.models.hf._decode_seq2seq import BartLeanStep
    from forgegrad.models.hf.bart import BartForConditionalGeneration
    hf, model, _ = separate
    ids, mask, _ = _separate_inputs()
    for beams in (1, 3):
        with torch.no_grad():
            want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=10,
                               do_sample=False, num_beams=beams).numpy()
        got = generate(model, ids, max_new_tokens=10, attention_mask=mask, num_beams=beams)
        np.testing.assert_array_equal(got, want)
    assert (got[:, 0] == DECODER_VOCAB - 1).all() and (got[:, -1] == 2).all()
    check_lean_seq2seq_step(model, BartLeanStep, ids, mask, model.decoder.layers[0], steps=12, new_tokens=8)
    with pytest.raises(ValueError, match="forced_bos_token_id must be a token id in \\[0, 90\\) or None"):
        generate(model, ids, attention_mask=mask, forced_bos_token_id=DECODER_VOCAB)
    with pytest.raises(ValueError, match="eos_token_id must be a token id in \\[0, 90\\)"):
        generate(model, ids, attention_mask=mask, eos_token_id=DECODER_VOCAB + 5)
    with pytest.raises(ValueError, match="pad_token_id must be a token id in \\[0, 90\\)"):
        generate(model, ids, attention_mask=mask, pad_token_id=DECODER_VOCAB)
    with pytest.raises(ValueError, match="input_ids must be in \\[0, 90\\)"):
        model(ids, mask, np.full((3, 2), DECODER_VOCAB))
    with pytest.raises(ValueError, match="input_ids must be in \\[0, 120\\)"):
        generate(model, np.full((1, 3), VOCAB), max_new_tokens=2)
    with pytest.raises(ValueError, match="are Marian's only"):
        BartForConditionalGeneration(dict(model.config))


def test_separate_vocabularies_save_pretrained_and_bfloat16(separate, tmp_path):
    """save_pretrained writes both tables under transformers' names (model.encoder.embed_tokens /
    model.decoder.embed_tokens, the head tied): transformers loads it back with equal logits. A bfloat16 checkpoint
    loaded as stored: both tables bfloat16, the head on the decoder's bits, outputs equal the widened model's, and
    the lean step takes it."""
    from safetensors.numpy import load_file

    from forgegrad.models.hf._decode_seq2seq import BartLeanStep
    from forgegrad.quantization.bf16 import BF16Embedding
    hf, model, path = separate
    save_pretrained(model, tmp_path / "saved")
    names = set(load_file(str(tmp_path / "saved" / "model.safetensors")))
    assert {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"} <= names
    assert not names & {"model.shared.weight", "shared.weight", "encoder.embed_tokens.weight"}
    back = transformers.MarianMTModel.from_pretrained(tmp_path / "saved").eval()
    ids, mask, dec = _separate_inputs()
    np.testing.assert_allclose(seq2seq_logits(back, ids, mask, dec), seq2seq_logits(hf, ids, mask, dec), rtol=1e-6,
                               atol=1e-6)
    bf = weight_variant(hf, path, "bfloat16", tmp_path)
    widened = from_pretrained(tmp_path / "bf16")
    assert type(bf.encoder.embed_tokens) is BF16Embedding and type(bf.decoder.embed_tokens) is BF16Embedding
    np.testing.assert_array_equal(bf(ids, mask, dec).numpy(), widened(ids, mask, dec).numpy())
    check_lean_seq2seq_step(bf, BartLeanStep, ids, mask, bf.decoder.layers[0], steps=8, new_tokens=6)
    int8 = weight_variant(hf, path, "int8", tmp_path)
    check_lean_seq2seq_step(int8, BartLeanStep, ids, mask, int8.decoder.layers[0], steps=8, new_tokens=6)


def test_separate_vocabularies_completions_server(separate, tmp_path):
    """The completions server takes source token ids past the decoder's vocabulary and checks logit_bias against
    the decoder's (the generated tokens'): greedy completions equal generate's tokens."""
    import shutil

    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from serve_helpers import running_app
    from tokenizers import Tokenizer, models, pre_tokenizers

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    _, model, path = separate
    shutil.copytree(path, tmp_path / "m")
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    prompt = [100, 5, 110, 2]
    want = [int(t) for t in generate(model, [prompt], max_new_tokens=5)[0, 1:] if t != 2]
    with running_app(create_completions_app(GenerationServeConfig(str(tmp_path / "m")))) as url:
        with httpx.Client(base_url=url, timeout=60) as c:
            ok = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": 5, "temperature": 0})
            bad = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": 5,
                                                  "logit_bias": {str(DECODER_VOCAB + 3): 5}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["text"].split() == [f"w{t}" for t in want]
    assert bad.status_code == 400 and "[0, 90)" in bad.text
