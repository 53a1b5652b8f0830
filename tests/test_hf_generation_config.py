"""generate(..., num_return_sequences=R) and generation_config.json's sampling defaults (do_sample,
temperature, top_k, top_p) and num_return_sequences, as transformers' generate takes them: the R best beams
per prompt equal transformers' (GPT-2, Llama with left padding; T5), R draws per prompt when sampling, the
config's sampling settings when the caller passes none (top_k 50 where the config sets none), explicit
arguments winning, transformers' errors; and ``forgegrad generate --num-return-sequences``."""
import json

import numpy as np
import pytest

from forgegrad import manual_seed
from forgegrad.cli import main
from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf.tokenizer import ByteTokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

VOCAB = 90
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9}


def _make(name):
    torch.manual_seed(0)
    if name == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB,
                                                                    n_positions=64, initializer_range=0.3))
    if name == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(
            num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, intermediate_size=40,
            vocab_size=VOCAB, max_position_embeddings=64, initializer_range=0.3))
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, initializer_factor=3.0,
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))


@pytest.fixture(scope="module", params=["gpt2", "llama", "t5"])
def pair(request, tmp_path_factory):
    hf = _make(request.param).eval()
    path = tmp_path_factory.mktemp("genconfig") / request.param
    hf.save_pretrained(path)
    return request.param, hf, from_pretrained(path), path


def _prompts(seq2seq):
    """Two prompts: a decoder's second one left-padded, an encoder's right-padded."""
    ids = np.random.RandomState(0).randint(3, VOCAB, (2, 7))
    mask = np.ones((2, 7), np.int64)
    if seq2seq:
        mask[1, 4:] = 0
    else:
        mask[1, :3] = 0
    return ids, mask


def _with_config(path, tmp_path, **settings):
    """A copy of the checkpoint at ``path`` whose generation_config.json also sets ``settings``."""
    config = json.loads((path / "generation_config.json").read_text()) if (path / "generation_config.json").exists() \
        else {}
    config.update(settings)
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    return tmp_path


def _ends(name):
    """The end and pad tokens given to both sides (T5: its config's; Llama's generation_config.json names an
    eos_token_id that forgegrad's decoders do not take from there)."""
    return {} if name == "t5" else {"eos_token_id": VOCAB - 2, "pad_token_id": VOCAB - 1}


def _hf_generate(hf, ids, mask, **kw):
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).numpy()


def test_beam_search_returns_transformers_best_beams(pair):
    name, hf, model, _ = pair
    ids, mask = _prompts(name == "t5")
    start = 1 if name == "t5" else ids.shape[1]
    # end tokens that some returned hypotheses produce and others do not (rows of different lengths)
    plain = generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=4, num_return_sequences=4,
                     pad_token_id=VOCAB - 1)
    mixed = False
    for eos in (None, int(plain[0, start + 4]), int(plain[3, start + 2]), int(plain[5, start + 6])):
        for K, R in ((3, 2), (4, 3), (4, 4)):
            kw = {"eos_token_id": eos, "pad_token_id": VOCAB - 1}
            if name == "t5":
                kw = {} if eos is None else {"eos_token_id": eos}
            want = _hf_generate(hf, ids, mask, max_new_tokens=12, do_sample=False, num_beams=K,
                                num_return_sequences=R, **kw)
            got = generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=K, num_return_sequences=R,
                           **kw)
            assert got.shape[0] == 2 * R
            np.testing.assert_array_equal(got, want, err_msg=f"eos {eos}, beams {K}, return {R}")
            # prompt-major, best first: row 0 of each prompt is the single best hypothesis
            best = generate(model, ids, max_new_tokens=12, attention_mask=mask, num_beams=K, **kw)
            np.testing.assert_array_equal(got[::R, :best.shape[1]], best)
            assert len({tuple(r) for r in got[:R]}) == R and len({tuple(r) for r in got[R:]}) == R
            if eos is not None:
                ended = [(r[start:] == eos).any() for r in got]
                mixed |= any(ended) and not all(ended)
    assert mixed, "no setting returned hypotheses of different lengths: the test does not cover them"


def test_num_return_sequences_from_generation_config(pair, tmp_path):
    name, _, _, path = pair
    path = _with_config(path, tmp_path, num_beams=4, num_return_sequences=3, max_new_tokens=10)
    hf = type(_make(name)).from_pretrained(path).eval()
    model = from_pretrained(path)
    ids, mask = _prompts(name == "t5")
    kw = _ends(name)
    want = _hf_generate(hf, ids, mask, **kw)
    got = generate(model, ids, attention_mask=mask, **kw)
    assert got.shape == (6, (1 if name == "t5" else 7) + 10)
    np.testing.assert_array_equal(got, want)
    # the arguments win over the config's
    np.testing.assert_array_equal(generate(model, ids, attention_mask=mask, num_return_sequences=1, **kw),
                                  _hf_generate(hf, ids, mask, num_return_sequences=1, **kw))


def test_sampling_defaults_from_generation_config(pair, tmp_path):
    name, _, plain, path = pair
    model = from_pretrained(_with_config(path, tmp_path, **SAMPLING))
    ids, mask = _prompts(name == "t5")
    manual_seed(5)
    got = generate(model, ids, max_new_tokens=16, attention_mask=mask)
    manual_seed(5)
    want = generate(plain, ids, max_new_tokens=16, attention_mask=mask, **SAMPLING)
    np.testing.assert_array_equal(got, want)
    greedy = generate(plain, ids, max_new_tokens=16, attention_mask=mask)
    assert not np.array_equal(got, greedy), "the config's sampling gave the greedy tokens: nothing was tested"
    # an argument given wins over the config's: here top_k
    manual_seed(5)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=16, attention_mask=mask, top_k=1), greedy)


def test_hot_config_samples_with_transformers_top_k_default_and_do_sample_false_is_greedy(pair, tmp_path):
    name, _, plain, path = pair
    path = _with_config(path, tmp_path, do_sample=True, temperature=4.0)  # no top_k: transformers' 50
    model = from_pretrained(path)
    ids, mask = _prompts(name == "t5")
    kw = _ends(name)
    greedy = generate(plain, ids, max_new_tokens=20, attention_mask=mask, **kw)
    manual_seed(9)
    hot = generate(model, ids, max_new_tokens=20, attention_mask=mask, **kw)
    assert not np.array_equal(hot, greedy)
    for top_k, same in ((50, True), (None, False)):  # None given: no top-k filter, as in transformers
        manual_seed(9)
        other = generate(plain, ids, max_new_tokens=20, attention_mask=mask, do_sample=True, temperature=4.0,
                         top_k=top_k, **kw)
        assert np.array_equal(hot, other) == same, f"top_k {top_k}"
    # do_sample=False given: greedy whatever the config says, transformers' greedy tokens
    hf = type(_make(name)).from_pretrained(path).eval()
    want = _hf_generate(hf, ids, mask, max_new_tokens=20, do_sample=False, **kw)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=20, attention_mask=mask, do_sample=False,
                                           **kw), want)
    np.testing.assert_array_equal(want, greedy)
    torch.manual_seed(0)  # transformers samples with that config too
    assert not np.array_equal(_hf_generate(hf, ids, mask, max_new_tokens=20, **kw), want)
    with pytest.raises(ValueError, match="pass do_sample=False for beam search"):
        generate(model, ids, attention_mask=mask, num_beams=2)
    np.testing.assert_array_equal(generate(model, ids, max_new_tokens=8, attention_mask=mask, num_beams=2,
                                           do_sample=False, **kw),
                                  _hf_generate(hf, ids, mask, max_new_tokens=8, num_beams=2, do_sample=False, **kw))


def test_sampling_returns_each_prompt_num_return_sequences_times(pair, tmp_path):
    name, _, model, path = pair
    ids, mask = _prompts(name == "t5")
    start = 1 if name == "t5" else ids.shape[1]
    manual_seed(3)
    got = generate(model, ids, max_new_tokens=10, attention_mask=mask, do_sample=True, num_return_sequences=3)
    manual_seed(3)
    want = generate(model, np.repeat(ids, 3, axis=0), max_new_tokens=10, attention_mask=np.repeat(mask, 3, axis=0),
                    do_sample=True)
    np.testing.assert_array_equal(got, want)
    assert got.shape[0] == 6 and len({tuple(r) for r in got[:, start:]}) == 6
    if name != "t5":
        np.testing.assert_array_equal(got[:, :start], np.repeat(ids, 3, axis=0))
    config = from_pretrained(_with_config(path, tmp_path, num_return_sequences=2, **SAMPLING))
    manual_seed(3)
    got = generate(config, ids, max_new_tokens=10, attention_mask=mask)
    manual_seed(3)
    np.testing.assert_array_equal(got, generate(model, ids, max_new_tokens=10, attention_mask=mask,
                                                num_return_sequences=2, **SAMPLING))
    assert got.shape[0] == 4


def test_num_return_sequences_errors(pair, tmp_path):
    _, _, model, path = pair
    ids, _ = _prompts(False)
    with pytest.raises(ValueError, match=r"num_return_sequences \(5\) must be <= num_beams \(4\)"):
        generate(model, ids, num_beams=4, num_return_sequences=5)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="num_return_sequences must be an int >= 1"):
            generate(model, ids, do_sample=True, num_return_sequences=bad)
    for bad in (2.0, "2", True):
        with pytest.raises(TypeError, match="num_return_sequences must be an int >= 1"):
            generate(model, ids, num_beams=3, num_return_sequences=bad)
    with pytest.raises(ValueError, match="greedy decoding gives one sequence per prompt: num_return_sequences=2"):
        generate(model, ids, num_return_sequences=2)
    greedy_config = from_pretrained(_with_config(path, tmp_path, num_return_sequences=2))
    with pytest.raises(ValueError, match="num_return_sequences=2"):
        generate(greedy_config, ids)
    with pytest.raises(ValueError, match="top_k must be an int >= 0"):
        generate(model, ids, do_sample=True, top_k=-1)


def test_cli_num_return_sequences(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "bytes"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=300, n_positions=64, initializer_range=0.3, eos_token_id=299,
        bos_token_id=299)).save_pretrained(path)
    ids = list("Hi".encode())
    want = generate(from_pretrained(path), [ids], max_new_tokens=8, num_beams=3, num_return_sequences=2,
                    eos_token_id=299)
    assert main(["generate", str(path), "--prompt", "Hi", "--max-new-tokens", "8", "--num-beams", "3",
                 "--num-return-sequences", "2"]) == 0
    captured = capsys.readouterr()
    texts = []
    for row in want[:, len(ids):].tolist():
        texts.append("Hi" + ByteTokenizer().decode(row[:row.index(299)] if 299 in row else row))
    assert captured.out == "".join(f"=== GENERATED SEQUENCE {i + 1} ===\n{t}\n" for i, t in enumerate(texts))
    assert "2 sequences" in captured.err and "beam search with 3 beams" in captured.err
    args = ["generate", str(path), "--prompt", "Hi", "--max-new-tokens", "6", "--temperature", "2.0", "--seed", "1",
            "--num-return-sequences", "3"]
    assert main(args) == 0
    sampled = capsys.readouterr().out
    assert sampled.count("=== GENERATED SEQUENCE") == 3
    assert main(args) == 0 and capsys.readouterr().out == sampled  # the same seed, the same texts
    assert main(["generate", str(path), "--prompt", "Hi", "--num-return-sequences", "2"]) == 2
    assert "needs sampling" in capsys.readouterr().err
    assert main(["generate", str(path), "--prompt", "Hi", "--num-beams", "2", "--num-return-sequences", "3"]) == 2
    assert "num_return_sequences (3) must be <= num_beams (2)" in capsys.readouterr().err
