"""A checkpoint without generation_config.json: transformers builds its generation config from config.json (the
legacy generation keys older checkpoints keep there: num_beams, max_length, min_length, no_repeat_ngram_size, ...),
and forgegrad's generate, servers and exports read the same settings, so the tokens are transformers'. With a
generation_config.json, config.json's generation keys are ignored, as transformers ignores them."""
import json
import warnings

import numpy as np
import pytest
import torch
import transformers

import hf_conformance as hfc
from forgegrad.models import from_pretrained
from forgegrad.models.hf import generate
from forgegrad.models.hf.generation_settings import from_model_config
from forgegrad.models.hf.onnx_decoding import generation_config_of

VOCAB = 40
LEGACY = {"num_beams": 3, "length_penalty": 0.5, "min_length": 6, "no_repeat_ngram_size": 2, "max_length": 14}
AUTO = {"gpt2": transformers.AutoModelForCausalLM, "bart": transformers.AutoModelForSeq2SeqLM,
        "t5": transformers.AutoModelForSeq2SeqLM}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family's tiny checkpoint as transformers saves it (config.json and generation_config.json)."""
    out = {}
    for name in AUTO:
        path = tmp_path_factory.mktemp(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hfc.tiny_generator(name, VOCAB).eval().save_pretrained(path)
        out[name] = path
    return out


def _checkpoint(src, dst, config=None, generation="none"):
    """A copy of checkpoint ``src`` in ``dst``: config.json updated with ``config``; generation_config.json removed
    ("none") or updated with ``generation`` (a dict)."""
    dst.mkdir(exist_ok=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, **(config or {})}))
    if generation == "none":
        (dst / "generation_config.json").unlink()
    else:
        gen = json.loads((dst / "generation_config.json").read_text())
        (dst / "generation_config.json").write_text(json.dumps({**gen, **generation}))
    return dst


def _prompts(name, length=5):
    ids = np.random.RandomState(3).randint(3, VOCAB, (2, length))
    mask = np.ones_like(ids)
    mask[1, :2] = 0 if name == "gpt2" else 1  # a decoder's second prompt left-padded
    if name != "gpt2":
        mask[1, -2:] = 0  # an encoder's right-padded
    return ids, mask


def _both(name, path, ids, mask, **kw):
    """(transformers' tokens, forgegrad's) for the checkpoint at ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = AUTO[name].from_pretrained(path).eval()
        with torch.no_grad():
            want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).numpy()
    return want, generate(from_pretrained(path), ids, attention_mask=mask, **kw)


@pytest.mark.parametrize("name", ["gpt2", "bart", "t5"])
def test_config_json_legacy_settings_apply_without_generation_config(saved, tmp_path, name):
    """Beams, length penalty, min_length, no-repeat n-grams and max_length from config.json: transformers' tokens
    (they differ from the defaults' tokens, so the settings are read)."""
    path = _checkpoint(saved[name], tmp_path / "legacy", LEGACY)
    ids, mask = _prompts(name)
    want, got = _both(name, path, ids, mask)
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] == LEGACY["max_length"]  # max_length bounds the whole sequence
    model = from_pretrained(path)
    assert {k: model.generation_config[k] for k in LEGACY} == LEGACY and model.generation_config["_from_model_config"]
    plain = generate(from_pretrained(_checkpoint(saved[name], tmp_path / "plain")), ids, attention_mask=mask)
    assert plain.shape != got.shape or not np.array_equal(plain, got)
    # an argument given still wins over config.json's setting
    given = dict(num_beams=1, no_repeat_ngram_size=0, min_length=0, max_new_tokens=4)
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, **given),
                                  generate(from_pretrained(tmp_path / "plain"), ids, attention_mask=mask, **given))


def test_default_length_and_config_json_max_length(saved, tmp_path):
    """No length setting: 20 new tokens (an encoder-decoder's 21 columns with its start token); config.json's
    ``max_length: 20``: 20 columns in all, as in transformers."""
    ids, mask = _prompts("bart")
    want, got = _both("bart", _checkpoint(saved["bart"], tmp_path / "a"), ids, mask, eos_token_id=None)
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] == 21
    want, got = _both("bart", _checkpoint(saved["bart"], tmp_path / "b", {"max_length": 20}), ids, mask,
                      eos_token_id=None)
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] == 20
    decoder = from_pretrained(_checkpoint(saved["gpt2"], tmp_path / "c", {"max_length": 9}))
    assert generate(decoder, *_prompts("gpt2")[:1], eos_token_id=None).shape[1] == 9  # the prompt's 5 and 4 new


def test_default_length_ends_at_the_models_positions(saved, tmp_path):
    """Unset, transformers' 20 new tokens stop at config.json's positions (the tiny GPT-2's 64): a 50-token prompt
    gets 14."""
    ids, mask = _prompts("gpt2", 50)
    want, got = _both("gpt2", _checkpoint(saved["gpt2"], tmp_path), ids, mask, eos_token_id=None)
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] == 64


@pytest.mark.parametrize("name", ["gpt2", "bart"])
def test_generation_config_json_present_ignores_config_json_settings(saved, tmp_path, name):
    """With a generation_config.json, config.json's legacy keys change nothing (transformers reads only the file)."""
    ids, mask = _prompts(name)
    want, got = _both(name, _checkpoint(saved[name], tmp_path / "a", LEGACY, generation={}), ids, mask)
    np.testing.assert_array_equal(got, want)
    assert "num_beams" not in from_pretrained(tmp_path / "a").generation_config
    plain = generate(from_pretrained(_checkpoint(saved[name], tmp_path / "b", None, generation={})), ids,
                     attention_mask=mask)
    np.testing.assert_array_equal(got, plain)


def test_forced_eos_from_config_json_only_without_generation_config(saved, tmp_path):
    """BART's config.json forced_eos_token_id: applied when the checkpoint has no generation_config.json; a
    generation_config.json without it forces nothing, as in transformers."""
    ids, mask = _prompts("bart")
    gen = json.loads((saved["bart"] / "generation_config.json").read_text())
    assert gen.get("forced_eos_token_id") is not None
    forced = {"forced_eos_token_id": 7, "eos_token_id": 2}
    want, got = _both("bart", _checkpoint(saved["bart"], tmp_path / "a", forced), ids, mask, max_new_tokens=6)
    np.testing.assert_array_equal(got, want)
    assert (got[:, -1] == 7).all()
    path = _checkpoint(saved["bart"], tmp_path / "b", forced, generation={"forced_eos_token_id": None})
    want, got = _both("bart", path, ids, mask, max_new_tokens=6)
    np.testing.assert_array_equal(got, want)
    assert not (got[:, -1] == 7).all()


def test_from_model_config_takes_transformers_keys_only(saved):
    """from_model_config: GenerationConfig's keys of config.json (None ones left out), BART's legacy
    force_bos_token_to_be_generated, none of config.json's other keys; transformers' GenerationConfig agrees."""
    cfg = json.loads((saved["bart"] / "config.json").read_text())
    cfg.update(LEGACY, top_k=None, force_bos_token_to_be_generated=True, bos_token_id=0, num_beam_groups=1)
    gc = from_model_config(cfg)
    assert gc["forced_bos_token_id"] == 0 and "top_k" not in gc and "d_model" not in gc
    assert "force_bos_token_to_be_generated" not in gc and gc["num_beam_groups"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = transformers.GenerationConfig.from_dict(cfg, _from_model_config=True).to_diff_dict()
    ref.pop("transformers_version", None)
    assert {k: v for k, v in gc.items() if k != "_from_model_config"} == {k: v for k, v in ref.items()
                                                                         if k != "_from_model_config"}
    with pytest.raises(TypeError, match="config must be a dict"):
        from_model_config(None)


def test_onnx_paths_read_a_checkpoint_directory_without_generation_config(saved, tmp_path):
    """generate_onnx's generation_config=<checkpoint directory> with config.json only: transformers' generation
    config of config.json, as from_pretrained builds it."""
    path = _checkpoint(saved["bart"], tmp_path, LEGACY)
    assert generation_config_of("generate_onnx", str(path), None) == from_pretrained(path).generation_config


def test_completions_server_applies_config_json_settings(tmp_path):
    """The completions server reads the same config: a checkpoint whose config.json holds legacy processors (no
    generation_config.json) answers with generate's tokens, which those settings change."""
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from serve_helpers import running_app

    from forgegrad.models.hf.tokenizer import ByteTokenizer
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=128, n_embd=32, n_layer=2, n_head=4, bos_token_id=298,
                                  eos_token_id=299, initializer_range=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "src")
    path = _checkpoint(tmp_path / "src", tmp_path / "legacy", {"no_repeat_ngram_size": 1, "repetition_penalty": 1.5})
    prompt = "Hello there"
    ids = [list(prompt.encode())]
    want = generate(from_pretrained(path), ids, max_new_tokens=12, eos_token_id=None)[0, len(ids[0]):]
    plain = generate(from_pretrained(tmp_path / "src"), ids, max_new_tokens=12, eos_token_id=None)[0, len(ids[0]):]
    assert len(set(want.tolist())) == 12 and not np.array_equal(want, plain)  # no token twice: the settings apply
    with running_app(create_completions_app(GenerationServeConfig(str(path)))) as url:
        r = httpx.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": 12, "temperature": 0,
                                                      "ignore_eos": True}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == ByteTokenizer().decode([int(t) for t in want])


def test_whisper_reads_config_json_settings_without_generation_config(tmp_path):
    """Whisper's generate reads the same config: beams, max_length and no-repeat n-grams from config.json give
    transformers' tokens."""
    from whisper_helpers import build_whisper
    path = build_whisper(tmp_path / "whisper", vocab_size=120, max_target_positions=40,
                         suppress_tokens=[1, 5] + list(range(108, 120)), timestamps=False)
    (path / "generation_config.json").unlink()
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "num_beams": 2, "max_length": 8, "no_repeat_ngram_size": 2}))
    x = np.random.default_rng(0).standard_normal((2, 16, 100)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
        with torch.no_grad():
            want = hf.generate(torch.tensor(x)).numpy()
    got = from_pretrained(path).generate(x)
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] == 8


def test_save_pretrained_writes_the_config_built_from_config_json(saved, tmp_path):
    """save_pretrained of such a model writes that generation config (as transformers' save_pretrained does): the
    saved checkpoint generates the same tokens, whatever config.json then says."""
    from forgegrad.models import save_pretrained
    model = from_pretrained(_checkpoint(saved["gpt2"], tmp_path / "legacy", LEGACY))
    save_pretrained(model, tmp_path / "saved")
    written = json.loads((tmp_path / "saved" / "generation_config.json").read_text())
    assert written == model.generation_config
    ids, mask = _prompts("gpt2")
    np.testing.assert_array_equal(generate(from_pretrained(tmp_path / "saved"), ids, attention_mask=mask),
                                  generate(model, ids, attention_mask=mask))
