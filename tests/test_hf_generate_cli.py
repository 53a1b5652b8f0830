"""``forgegrad generate`` on checkpoint directories written by transformers, with byte tokens and with a
tokenizer.json trained by the tokenizers package."""
import numpy as np
import pytest

from forgegrad.cli import main
from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf.tokenizer import ByteTokenizer, load_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hf_conformance import tiny_byte_gpt2
    return tiny_byte_gpt2(tmp_path_factory.mktemp("gen") / "bytes", n_positions=128)


def test_generate_streams_the_greedy_continuation(checkpoint, capsys):
    assert main(["generate", str(checkpoint), "--prompt", "Hi there", "--max-new-tokens", "12"]) == 0
    captured = capsys.readouterr()
    ids = list("Hi there".encode())
    want = generate(from_pretrained(checkpoint), [ids], max_new_tokens=12, eos_token_id=299)[0, len(ids):]
    assert captured.out == "Hi there" + ByteTokenizer().decode(want) + "\n"
    assert "prefill" in captured.err and "decode" in captured.err and "tokens/s" in captured.err


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_generate_with_bfloat16_or_int8_weights(checkpoint, capsys, weights):
    from forgegrad.quantization import quantize_weight_only
    assert main(["generate", str(checkpoint), "--prompt", "Hi there", "--max-new-tokens", "12",
                 "--weights", weights]) == 0
    ids = list("Hi there".encode())
    model = (from_pretrained(checkpoint, dtype="bfloat16") if weights == "bfloat16"
             else quantize_weight_only(from_pretrained(checkpoint)))
    want = generate(model, [ids], max_new_tokens=12, eos_token_id=299)[0, len(ids):]
    assert capsys.readouterr().out == "Hi there" + ByteTokenizer().decode(want) + "\n"
    assert main(["generate", str(checkpoint), "--prompt", "x", "--weights", "float16"]) == 2


def test_generate_with_tokenizer_json_and_sampling(checkpoint, tmp_path, capsys):
    import shutil
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(), decoders.ByteLevel()
    tok.train_from_iterator(["hello world, a tiny corpus for a tiny tokenizer"] * 10,
                            trainers.BpeTrainer(vocab_size=280, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = tmp_path / "bpe"
    shutil.copytree(checkpoint, path)
    tok.save(str(path / "tokenizer.json"))
    loaded = load_tokenizer(path, 300)
    assert loaded.encode("hello world") == tok.encode("hello world").ids
    args = ["generate", str(path), "--prompt", "hello world", "--max-new-tokens", "8", "--temperature", "0.7",
            "--top-k", "50", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first  # the same seed gives the same text
    assert first.startswith("hello world")


def test_generate_usage_errors(checkpoint, tmp_path, capsys):
    assert main(["generate", str(tmp_path / "none"), "--prompt", "x"]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err
    assert main(["generate", str(checkpoint), "--prompt", "x", "--top-p", "1.5"]) == 2
    assert main(["generate", str(checkpoint), "--prompt", "x", "--max-new-tokens", "500"]) == 2
    assert "positions" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["generate", str(tmp_path / "empty"), "--prompt", "x"]) == 2
    assert "config.json" in capsys.readouterr().err


def test_byte_tokens_need_a_byte_sized_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="too small for byte tokens"):
        load_tokenizer(tmp_path, 100)
    assert ByteTokenizer().decode(ByteTokenizer().encode("héllo")) == "héllo"
    np.testing.assert_array_equal(ByteTokenizer().encode("A"), [65])


def test_generate_chat_renders_the_template_and_stops_at_the_end_of_turn(checkpoint, tmp_path, capsys):
    import shutil

    from hf_conformance import chat_tokenizer
    fast = chat_tokenizer("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    path = tmp_path / "chat"
    shutil.copytree(checkpoint, path)
    fast.save_pretrained(path)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    prompt = fast.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = fast.encode(prompt, add_special_tokens=False)
    new = [int(t) for t in generate(from_pretrained(path), [ids], max_new_tokens=10)[0, len(ids):]]
    end = fast.convert_tokens_to_ids("<|im_end|>")
    # the end of turn ends the reply: generation_config.json names it (config.json's eos is 299)
    (path / "generation_config.json").write_text('{"eos_token_id": [%d]}' % (new[4] if end not in new else end))
    reply = new[:new.index(new[4] if end not in new else end)]
    assert main(["generate", str(path), "--prompt", "hello world", "--system", "Be brief.", "--chat",
                 "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out == prompt + fast.decode(reply) + "\n"
    assert main(["generate", str(path), "--prompt", "x", "--system", "s"]) == 2
    assert "--system needs --chat" in capsys.readouterr().err
    assert main(["generate", str(checkpoint), "--prompt", "x", "--chat"]) == 2
    assert "no chat template" in capsys.readouterr().err


def test_generate_with_beam_search(checkpoint, capsys):
    ids = list("Hi there".encode())
    want = generate(from_pretrained(checkpoint), [ids], max_new_tokens=10, num_beams=3, eos_token_id=299)[0, len(ids):]
    args = ["generate", str(checkpoint), "--prompt", "Hi there", "--max-new-tokens", "10", "--num-beams", "3"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out == "Hi there" + ByteTokenizer().decode([t for t in want if t != 299]) + "\n"
    assert "beam search with 3 beams" in captured.err
    # beam sampling: with a seed, the text generate gives for the same settings
    assert main(["generate", str(checkpoint), "--prompt", "Hi there", "--max-new-tokens", "10", "--num-beams", "2",
                 "--temperature", "0.5", "--min-p", "0.1", "--seed", "3"]) == 0
    import forgegrad as fg
    fg.manual_seed(3)
    want = generate(from_pretrained(checkpoint), [ids], max_new_tokens=10, num_beams=2, do_sample=True, temperature=0.5,
                    top_k=None, min_p=0.1, eos_token_id=299)[0, len(ids):]
    assert capsys.readouterr().out == "Hi there" + ByteTokenizer().decode([t for t in want if t != 299]) + "\n"


@pytest.mark.parametrize("beams", ["1", "3"])
def test_generate_with_a_repetition_penalty(checkpoint, capsys, beams):
    ids = list("Hi there".encode())
    model = from_pretrained(checkpoint)
    want = generate(model, [ids], max_new_tokens=12, num_beams=int(beams), eos_token_id=299,
                    repetition_penalty=2.5)[0, len(ids):]
    plain = generate(model, [ids], max_new_tokens=12, num_beams=int(beams), eos_token_id=299)[0, len(ids):]
    assert not np.array_equal(want, plain)
    end = list(want).index(299) if 299 in want else len(want)
    assert main(["generate", str(checkpoint), "--prompt", "Hi there", "--max-new-tokens", "12", "--num-beams", beams,
                 "--repetition-penalty", "2.5"]) == 0
    assert capsys.readouterr().out == "Hi there" + ByteTokenizer().decode(list(want[:end])) + "\n"
    assert main(["generate", str(checkpoint), "--prompt", "x", "--repetition-penalty", "0"]) == 2
    assert "--repetition-penalty" in capsys.readouterr().err
