"""generate's further settings on the exported graphs (generate_onnx, generate_onnx_seq2seq; onnx_beam's beam search):
suppress_tokens, begin_suppress_tokens, bad_words_ids, sequence_bias, min_new_tokens, exponential_decay_length_penalty,
encoder_repetition_penalty, encoder_no_repeat_ngram_size, remove_invalid_values, renormalize_logits (greedy and beam
tokens against forgegrad's generate and transformers' on tiny GPT-2, Llama, T5 and BART written by transformers and
exported once each, as keyword arguments and from a generation config: a file, a directory, the one next to the
.onnx file), typical_p / epsilon_cutoff / eta_cutoff (seeded draws as generate's; one-token settings as
transformers'), stop_strings (with the tokenizer) and max_time; bad values named as generate names them."""
import json
import shutil
import warnings

import numpy as np
import pytest

import hf_conformance as hfc
from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_seq2seq, export_with_past, generate, generate_onnx, generate_onnx_seq2seq
from forgegrad.models.hf.logits_processors import token_setting
from test_hf_generation_config_extra import NEW, VOCAB, _as_kwargs, _hf, _prompts, _run, _settings

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

SEQ2SEQ = ("t5", "bart")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{name: (transformers model, forgegrad model, its checkpoint directory, sessions, the fast tokenizer, the
    .onnx files)}: each
    exported once (not verified here: test_hf_onnx_*.py verify these exports). GPT-2's vocabulary is a byte-level
    BPE's (saved with it, for the stop strings); Llama's graph keeps the last position's logits only."""
    fast = hfc.chat_tokenizer(None)
    out = {}
    for name in ("gpt2", "llama", "t5", "bart"):
        hf = hfc.tiny_generator(name, len(fast) if name == "gpt2" else VOCAB).eval()
        root = tmp_path_factory.mktemp("onnxsettings_" + name)
        hf.save_pretrained(root / "ckpt")
        if name == "gpt2":
            fast.save_pretrained(root / "ckpt")
        model = from_pretrained(root / "ckpt")
        if name in SEQ2SEQ:
            export_seq2seq(model, root / "onnx", verify=False)
            files = (root / "onnx" / "encoder.onnx", root / "onnx" / "decoder.onnx")
        else:
            export_with_past(model, root / "decoder.onnx", logits_to_keep=int(name == "llama"), verify=False)
            files = (root / "decoder.onnx",)
        sessions = tuple(ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]) for f in files)
        out[name] = hf, model, root / "ckpt", sessions, fast, files
    return out


def _onnx(name, model, sessions, ids, mask, **kw):
    """generate_onnx or generate_onnx_seq2seq (with the checkpoint's start and forced tokens, as generate takes
    them) on ``sessions``: graphs or their paths."""
    if name in SEQ2SEQ:
        return generate_onnx_seq2seq(*sessions, ids, mask, decoder_start_token_id=model.decoder_start_token_id,
                                     forced_bos_token_id=token_setting(model, "forced_bos_token_id"),
                                     forced_eos_token_id=token_setting(model, "forced_eos_token_id"), **kw)
    return generate_onnx(sessions[0], ids, mask, **kw)


def _config_dir(ckpt, tmp_path, **settings):
    """A directory holding the checkpoint's generation_config.json with ``settings`` added."""
    config = json.loads((ckpt / "generation_config.json").read_text())
    config.update(settings)
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("name", ["gpt2", "llama", "t5", "bart"])
def test_processors_match_generate_and_transformers(exported, tmp_path, name, num_beams):
    """The settings as keyword arguments and from a generation config (the directory holding it, the file) give
    generate's and transformers' tokens in onnxruntime, greedy and beam search; None given turns each off."""
    hf, model, ckpt, sessions, _, _ = exported[name]
    ids, mask = _prompts(name in SEQ2SEQ)
    start = 1 if name in SEQ2SEQ else ids.shape[1]
    common, plain = _run(model, ids, mask, start, num_beams)
    settings = _settings(plain, start)
    kw = _as_kwargs(settings)
    want = _hf(hf, ids, mask, do_sample=False, **common, **kw)
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, **common, **kw), want)
    got = _onnx(name, model, sessions, ids, mask, **common, **kw)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, plain)  # the settings changed the tokens
    folder = _config_dir(ckpt, tmp_path, **settings)
    for source in (folder, folder / "generation_config.json"):
        np.testing.assert_array_equal(_onnx(name, model, sessions, ids, mask, generation_config=source, **common),
                                      want)
    off = {k: None for k in settings}
    np.testing.assert_array_equal(_onnx(name, model, sessions, ids, mask, generation_config=folder, **common, **off),
                                  plain)


def test_generation_config_next_to_the_graph(exported, tmp_path):
    """A graph given as a path reads the generation_config.json beside it (as generate reads the checkpoint's); a
    session, or generation_config={}, reads none; the config's unread settings are named in a warning."""
    hf, model, ckpt, (sess,), _, (file,) = exported["llama"]
    ids, mask = _prompts(False)
    T = ids.shape[1]
    common = dict(max_new_tokens=NEW, eos_token_id=None)
    plain = generate_onnx(sess, ids, mask, **common)
    settings = {"suppress_tokens": [int(plain[0, T])], "bad_words_ids": [[int(plain[1, T])]], "min_new_tokens": 2,
                "remove_invalid_values": True}
    graph = _config_dir(ckpt, tmp_path, **settings) / "decoder.onnx"
    shutil.copyfile(file, graph)
    want = generate(from_pretrained(ckpt), ids, attention_mask=mask, **common, **settings)
    np.testing.assert_array_equal(generate_onnx(graph, ids, mask, **common), want)
    assert not np.array_equal(want, plain)
    np.testing.assert_array_equal(generate_onnx(graph, ids, mask, generation_config={}, **common), plain)
    config = json.loads((tmp_path / "generation_config.json").read_text())
    with pytest.warns(UserWarning, match="sets penalty_alpha, which"):
        got = generate_onnx(sess, ids, mask, generation_config={**config, "penalty_alpha": 0.6}, **common)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["llama", "t5"])
def test_sampling_warpers_draw_as_generate(exported, name):
    """typical_p, epsilon_cutoff and eta_cutoff when sampling (and beam sampling, renormalized): after the same
    forgegrad.manual_seed the graphs draw generate's tokens; settings that keep one token a step give transformers'
    tokens; greedy decoding ignores the warpers."""
    import forgegrad as fg
    hf, model, _, sessions, _, _ = exported[name]
    ids, mask = _prompts(name in SEQ2SEQ)
    ends = {"eos_token_id": None, "pad_token_id": VOCAB - 1}
    for kw in ({"typical_p": 0.9, "epsilon_cutoff": 0.01, "temperature": 1.5},
               {"eta_cutoff": 0.05, "num_beams": 3, "renormalize_logits": True}):
        kw = dict(kw, max_new_tokens=NEW, do_sample=True, top_k=None, **ends)
        fg.manual_seed(5)
        got = _onnx(name, model, sessions, ids, mask, **kw)
        fg.manual_seed(5)
        np.testing.assert_array_equal(got, generate(model, ids, attention_mask=mask, **kw))
    for setting in ({"typical_p": 1e-9}, {"epsilon_cutoff": 0.999}):
        want = _hf(hf, ids, mask, max_new_tokens=NEW, do_sample=True, **setting, **ends)
        np.testing.assert_array_equal(_onnx(name, model, sessions, ids, mask, max_new_tokens=NEW, do_sample=True,
                                            top_k=50, **setting, **ends), want)  # transformers' default top_k
    greedy = _onnx(name, model, sessions, ids, mask, max_new_tokens=NEW, typical_p=1e-9, **ends)
    np.testing.assert_array_equal(greedy, _hf(hf, ids, mask, max_new_tokens=NEW, do_sample=False, **ends))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_stop_strings_and_max_time(exported, num_beams):
    """A stop string across two new tokens ends its row (with the transformers tokenizer or load_tokenizer's), and
    max_time every row at the first step, as generate and transformers end them."""
    from forgegrad.models.hf.tokenizer import load_tokenizer
    hf, model, ckpt, (sess,), fast, _ = exported["gpt2"]
    prompts = [fast.encode("hello world"), fast.encode("a tiny corpus")]
    ids = np.array([p[:min(map(len, prompts))] for p in prompts])
    mask = np.ones_like(ids)
    T = ids.shape[1]
    common = dict(max_new_tokens=12, num_beams=num_beams, eos_token_id=1, pad_token_id=1)
    plain = generate_onnx(sess, ids, mask, **common)
    stop = fast.decode(plain[0, T + 3:T + 4])[-1:] + fast.decode(plain[0, T + 4:T + 5])[:1]
    want = _hf(hf, ids, mask, do_sample=False, stop_strings=[stop], tokenizer=fast, **common)
    assert not np.array_equal(want, plain)
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, stop_strings=stop, tokenizer=fast,
                                           **common), want)
    for tok in (fast, load_tokenizer(ckpt, len(fast))):
        np.testing.assert_array_equal(generate_onnx(sess, ids, mask, stop_strings=stop, tokenizer=tok, **common),
                                      want)
    timed = generate_onnx(sess, ids, mask, max_time=1e-9, **common)
    assert timed.shape == (2, T + 1)
    np.testing.assert_array_equal(timed, _hf(hf, ids, mask, do_sample=False, max_time=1e-9, **common))


@pytest.mark.parametrize("name,value", [
    ("suppress_tokens", [1, -2]), ("begin_suppress_tokens", [1.5]), ("bad_words_ids", [[1], []]),
    ("bad_words_ids", [[VOCAB + 4]]), ("sequence_bias", [[[1, 2]]]), ("sequence_bias", [[[VOCAB], 1.0]]),
    ("typical_p", 1.5), ("epsilon_cutoff", 1.0), ("eta_cutoff", -0.1), ("renormalize_logits", 1),
    ("remove_invalid_values", "yes"), ("exponential_decay_length_penalty", [-1, 1.5]),
    ("encoder_repetition_penalty", 0.0), ("encoder_no_repeat_ngram_size", -1), ("min_new_tokens", 2.5),
    ("stop_strings", ""), ("max_time", 0), ("repetition_penalty", 0.0), ("no_repeat_ngram_size", -1),
    ("min_length", 1.5), ("num_beams", 0), ("num_return_sequences", 0), ("do_sample", "yes"), ("temperature", 0.0)])
@pytest.mark.parametrize("name_", ["llama", "bart"])
def test_bad_values_are_named(exported, name_, name, value):
    """generate's errors (its type, its words), naming the function called, for a keyword argument and for the
    same value in the generation config."""
    _, model, _, sessions, _, _ = exported[name_]
    ids = np.array([[5, 6, 7]])
    who = "generate_onnx_seq2seq" if name_ in SEQ2SEQ else "generate_onnx"
    kw = {"do_sample": True} if name in ("typical_p", "epsilon_cutoff", "eta_cutoff", "temperature") else {}
    with pytest.raises((ValueError, TypeError), match=f"generate: {name}") as eager:
        generate(model, ids, max_new_tokens=2, **kw, **{name: value})
    message = str(eager.value)[len("generate: "):]
    with pytest.raises(eager.type, match=f"^{who}: ") as got:
        _onnx(name_, model, sessions, ids, None, max_new_tokens=2, **kw, **{name: value})
    assert str(got.value) == f"{who}: {message}"
    with pytest.raises(eager.type, match=f"^{who}: {name}"):
        _onnx(name_, model, sessions, ids, None, max_new_tokens=2, generation_config={name: value}, **kw)


def test_bad_arguments_are_named(exported, tmp_path):
    sess = exported["gpt2"][3][0]
    ids = np.array([[5, 6, 7]])
    with pytest.raises(TypeError, match="generate_onnx: unexpected keyword argument 'supress_tokens'"):
        generate_onnx(sess, ids, supress_tokens=[3])
    with pytest.raises(ValueError, match="generate_onnx: stop_strings needs the tokenizer"):
        generate_onnx(sess, ids, stop_strings="ab")
    with pytest.raises(ValueError, match="generate_onnx: generation_config: no such file"):
        generate_onnx(sess, ids, generation_config=tmp_path)
    with pytest.raises(TypeError, match="generate_onnx: generation_config must be a dict"):
        generate_onnx(sess, ids, generation_config=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate_onnx(sess, ids, max_new_tokens=2, generation_config={"num_beam_groups": 1, "typical_p": 1.0})
    enc, dec = exported["t5"][3]
    with pytest.raises(ValueError, match="generate_onnx_seq2seq: decoder_start_token_id must be a token id in "
                                         r"\[0, 90\) \(left out, and the generation config sets none\), got None"):
        generate_onnx_seq2seq(enc, dec, ids)


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_banned_end_token_made_finite_then_decayed(exported, name):
    """remove_invalid_values with exponential_decay_length_penalty while min_new_tokens still bans the end token: its
    score (float32's min once made finite) grows past float32's max to +inf in every beam, as in transformers, and
    beam search keeps the tied hypotheses torch.topk keeps: transformers' tokens, eager and in onnxruntime."""
    hf, model, _, sessions, _, _ = exported[name]
    ids, mask = _prompts(name in SEQ2SEQ)
    ends = {"eos_token_id": 1, "pad_token_id": 0} if name in SEQ2SEQ else {"eos_token_id": 5, "pad_token_id": VOCAB - 1}
    for num_beams, start in ((3, 0), (3, 1), (1, 1)):
        kw = dict(max_new_tokens=NEW, num_beams=num_beams, remove_invalid_values=True, min_new_tokens=3,
                  exponential_decay_length_penalty=(start, 3.0), **ends)
        want = _hf(hf, ids, mask, do_sample=False, **kw)
        assert want.shape[1] < ids.shape[1] + NEW  # the end token came first, banned as it was
        np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, **kw), want)
        np.testing.assert_array_equal(_onnx(name, model, sessions, ids, mask, **kw), want)


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")  # transformers' note on its 20 tokens
@pytest.mark.parametrize("name", ["gpt2", "llama", "t5", "bart"])
def test_exported_graphs_decode_as_the_checkpoint(exported, name):
    """The export writes the checkpoint's generation_config.json beside the graphs, and the graphs given as paths
    with no argument decode as generate and transformers' generate decode the checkpoint with none (its end, pad,
    decoder start and forced tokens; 20 new tokens)."""
    hf, model, ckpt, _, _, files = exported[name]
    assert json.loads((files[-1].parent / "generation_config.json").read_text()) == model.generation_config
    ids, mask = _prompts(name in SEQ2SEQ)
    want = _hf(hf, ids, mask)
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask), want)
    if name in SEQ2SEQ:
        got = generate_onnx_seq2seq(*files, ids, mask)
    else:
        got = generate_onnx(files[0], ids, mask)
    np.testing.assert_array_equal(got, want)


def _first_settings(plain, start):
    """Settings of generate's first arguments that change ``plain``'s tokens: fewer new tokens (the config's
    max_length), an end token row 0 makes, beam search returning 2 sequences, the penalties and a minimum length."""
    return {"max_length": start + NEW - 2, "eos_token_id": int(plain[0, start + 3]), "pad_token_id": VOCAB - 1,
            "num_beams": 3, "length_penalty": 0.5, "early_stopping": True, "num_return_sequences": 2,
            "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_length": start + 2}


@pytest.mark.parametrize("name", ["llama", "bart"])
def test_first_settings_from_the_generation_config(exported, tmp_path, name):
    """The length, end and pad tokens, beam settings, number of sequences, repetition_penalty, no_repeat_ngram_size
    and min_length left out come from the generation config, as generate takes them: transformers' tokens with the
    same settings; an argument given wins over the config."""
    hf, model, ckpt, sessions, _, _ = exported[name]
    ids, mask = _prompts(name in SEQ2SEQ)
    start = 1 if name in SEQ2SEQ else ids.shape[1]
    plain = generate(model, ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None)
    settings = _first_settings(plain, start)
    folder = _config_dir(ckpt, tmp_path, **settings)
    want = _hf(hf, ids, mask, do_sample=False, **settings)
    assert want.shape[0] == 2 * len(ids)
    configured = from_pretrained(ckpt)
    configured.generation_config = json.loads((folder / "generation_config.json").read_text())
    np.testing.assert_array_equal(generate(configured, ids, attention_mask=mask), want)
    np.testing.assert_array_equal(_onnx(name, model, sessions, ids, mask, generation_config=folder), want)
    given = dict(num_beams=1, num_return_sequences=1, repetition_penalty=1.0, max_new_tokens=4)
    np.testing.assert_array_equal(_onnx(name, model, sessions, ids, mask, generation_config=folder, **given),
                                  _hf(hf, ids, mask, do_sample=False, **dict(settings, **given)))


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_sampling_settings_from_the_generation_config(exported, tmp_path, name):
    """do_sample, temperature, top_k and top_p from the generation config draw generate's tokens after the same seed;
    do_sample=False given decodes greedily whatever the config says (transformers' tokens); max_new_tokens 0 returns
    the prompts (the start tokens)."""
    import forgegrad as fg
    hf, model, ckpt, sessions, _, _ = exported[name]
    ids, mask = _prompts(name in SEQ2SEQ)
    settings = {"do_sample": True, "temperature": 1.4, "top_k": 20, "top_p": 0.9, "max_new_tokens": NEW,
                "num_return_sequences": 2}
    folder = _config_dir(ckpt, tmp_path, **settings)
    configured = from_pretrained(ckpt)
    configured.generation_config = json.loads((folder / "generation_config.json").read_text())
    fg.manual_seed(3)
    got = _onnx(name, model, sessions, ids, mask, generation_config=folder)
    fg.manual_seed(3)
    np.testing.assert_array_equal(got, generate(configured, ids, attention_mask=mask))
    assert got.shape == (2 * len(ids), (1 if name in SEQ2SEQ else ids.shape[1]) + NEW)
    greedy = _onnx(name, model, sessions, ids, mask, generation_config=folder, do_sample=False,
                   num_return_sequences=1)
    np.testing.assert_array_equal(greedy, _hf(hf, ids, mask, **dict(settings, do_sample=False,
                                                                     num_return_sequences=1)))
    none = _onnx(name, model, sessions, ids, mask, generation_config=folder, max_new_tokens=0)
    np.testing.assert_array_equal(none, generate(configured, ids, attention_mask=mask, max_new_tokens=0))


@pytest.mark.parametrize("name", ["gpt2", "bart"])
def test_a_checkpoint_without_generation_config_exports_its_config_tokens(tmp_path, name):
    """A checkpoint with no generation_config.json (generate and transformers then take the end, pad, forced and
    decoder start tokens from config.json): the export writes those beside the graphs, so the graphs given as paths
    stop at config.json's end token and start BART's decoder as generate does."""
    seq2seq = name in SEQ2SEQ
    hf = hfc.tiny_generator(name, VOCAB).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "generation_config.json").unlink()
    ids, mask = _prompts(seq2seq)
    free = generate(from_pretrained(tmp_path / "ckpt"), ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=None)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    start = 1 if seq2seq else ids.shape[1]
    config.update(eos_token_id=int(free[0, start + 2]), pad_token_id=VOCAB - 1)  # row 0 ends at its third token
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    model = from_pretrained(tmp_path / "ckpt")
    assert model.generation_config["_from_model_config"]  # built from config.json, as transformers builds it
    kw = dict(max_new_tokens=NEW, num_beams=1)
    want = generate(model, ids, attention_mask=mask, **kw)
    assert (want[0, start + 3:] == VOCAB - 1).all()  # the end token matters here
    if seq2seq:
        export_seq2seq(model, tmp_path / "onnx", verify=False)
        got = generate_onnx_seq2seq(tmp_path / "onnx" / "encoder.onnx", tmp_path / "onnx" / "decoder.onnx", ids, mask,
                                    **kw)
    else:
        export_with_past(model, tmp_path / "decoder.onnx", verify=False)
        got = generate_onnx(tmp_path / "decoder.onnx", ids, mask, **kw)
    np.testing.assert_array_equal(got, want)
