"""Beam search in onnxruntime on the exported graphs (generate_onnx / generate_onnx_seq2seq with num_beams=K):
GPT-2, Llama (grouped-query attention), T5 and BART checkpoints written by transformers itself, exported once
with their caches, then searched with generate's own beam search on onnxruntime's logits. The tokens equal
forgegrad's generate(..., num_beams=K) and transformers' generate(num_beams=K): left-padded (decoders) or
right-padded (encoder-decoders) batches of 2, length penalties, the early-stopping modes, end tokens that
finish hypotheses early, num_return_sequences 2."""
import numpy as np
import pytest

import hf_conformance as hfc
from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_seq2seq, export_with_past, generate, generate_onnx, generate_onnx_seq2seq

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
transformers.logging.set_verbosity_error()

VOCAB = 90
NEW = 12
# (num_beams, length_penalty, early_stopping, end token: None or the greedy token at that new place, R)
SETTINGS = [(3, 1.0, False, None, 1), (3, 2.0, True, 2, 2), (4, 0.5, "never", 1, 2)]
IDS = np.random.RandomState(0).randint(3, VOCAB, (2, 7)).astype(np.int64)
LEFT_MASK = np.ones_like(IDS)
LEFT_MASK[1, :3] = 0  # decoders: the second prompt is 4 tokens, left-padded
RIGHT_MASK = np.ones_like(IDS)
RIGHT_MASK[1, 4:] = 0  # encoders take right padding, as T5's and BART's tokenizers pad


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{name: (transformers model, forgegrad model, session(s))}: each exported once (GPT-2's graph with every
    position's logits, Llama's with the last one's only)."""
    out = {}
    for name in ("gpt2", "llama", "t5", "bart"):
        hf = hfc.tiny_generator(name, VOCAB).eval()
        root = tmp_path_factory.mktemp("beam_" + name)
        hf.save_pretrained(root / "ckpt")
        model = from_pretrained(root / "ckpt")
        if name in ("t5", "bart"):
            enc, dec = export_seq2seq(model, root / "onnx", atol=1e-3)  # activations of magnitude 10-100
            assert enc.ok and dec.ok
            sessions = (_session(root / "onnx" / "encoder.onnx"), _session(root / "onnx" / "decoder.onnx"))
        else:
            assert export_with_past(model, root / "decoder.onnx", logits_to_keep=int(name == "llama")).ok
            sessions = (_session(root / "decoder.onnx"),)
        out[name] = (hf, model, sessions)
    return out


def _hf_beams(hf, ids, mask, **kw):
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=NEW,
                           do_sample=False, **kw).numpy()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_decoder_beam_search_in_onnxruntime_is_generate_and_transformers(exported, name):
    hf, model, (sess,) = exported[name]
    T = IDS.shape[1]
    greedy = generate(model, IDS, max_new_tokens=NEW, attention_mask=LEFT_MASK, eos_token_id=None)
    ended = False
    for K, penalty, stopping, at, R in SETTINGS:
        eos = None if at is None else int(greedy[at % 2, T + at])
        kw = dict(num_beams=K, length_penalty=penalty, early_stopping=stopping, num_return_sequences=R,
                  eos_token_id=eos, pad_token_id=VOCAB - 1)
        got = generate_onnx(sess, IDS, LEFT_MASK, max_new_tokens=NEW, **kw)
        msg = f"beams {K}, {penalty}, {stopping}, eos {eos}, {R} returned"
        np.testing.assert_array_equal(got, _hf_beams(hf, IDS, LEFT_MASK, **kw), err_msg=msg)
        np.testing.assert_array_equal(got, generate(model, IDS, max_new_tokens=NEW, attention_mask=LEFT_MASK, **kw),
                                      err_msg=msg)
        assert got.shape[0] == 2 * R and (got[::R, :T] == IDS).all()
        ended |= eos is not None and bool((got[:, T:] == eos).any())
    assert ended, "no hypothesis ended at an end token: the test does not cover finished hypotheses"


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_seq2seq_beam_search_in_onnxruntime_is_generate_and_transformers(exported, name):
    """The config's end, pad and (BART) forced last token, or an end token from the greedy output."""
    hf, model, (enc, dec) = exported[name]
    cfg = model.config
    greedy = generate(model, IDS, max_new_tokens=NEW, attention_mask=RIGHT_MASK, num_beams=1)
    ended = False
    for K, penalty, stopping, at, R in SETTINGS:
        eos = cfg["eos_token_id"] if at is None else int(greedy[at % 2, 1 + at])
        kw = dict(num_beams=K, length_penalty=penalty, early_stopping=stopping, num_return_sequences=R,
                  eos_token_id=eos, pad_token_id=cfg["pad_token_id"])
        got = generate_onnx_seq2seq(enc, dec, IDS, RIGHT_MASK, decoder_start_token_id=model.decoder_start_token_id,
                                    max_new_tokens=NEW, forced_bos_token_id=cfg.get("forced_bos_token_id"),
                                    forced_eos_token_id=cfg.get("forced_eos_token_id"), **kw)
        msg = f"beams {K}, {penalty}, {stopping}, eos {eos}, {R} returned"
        np.testing.assert_array_equal(got, _hf_beams(hf, IDS, RIGHT_MASK, **kw), err_msg=msg)
        np.testing.assert_array_equal(got, generate(model, IDS, max_new_tokens=NEW, attention_mask=RIGHT_MASK, **kw),
                                      err_msg=msg)
        assert got.shape[0] == 2 * R and (got[:, 0] == model.decoder_start_token_id).all()
        ended |= at is not None and bool((got[:, 1:-1] == eos).any())
    assert ended, "no hypothesis ended at an end token before the last place"


def test_sampled_return_sequences_draw_as_generate(exported):
    """num_return_sequences with one beam when sampling: each prompt R times, drawn as generate draws them
    (a decoder and an encoder-decoder)."""
    import forgegrad as fg
    _, model, (sess,) = exported["llama"]
    kw = dict(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=20, num_return_sequences=2, eos_token_id=2,
              pad_token_id=0)
    fg.manual_seed(5)
    got = generate_onnx(sess, IDS, LEFT_MASK, **kw)
    fg.manual_seed(5)
    np.testing.assert_array_equal(got, generate(model, IDS, attention_mask=LEFT_MASK, **kw))
    assert got.shape[0] == 4
    _, model, (enc, dec) = exported["t5"]
    fg.manual_seed(5)
    kw["eos_token_id"] = 1
    got = generate_onnx_seq2seq(enc, dec, IDS, RIGHT_MASK, decoder_start_token_id=0, **kw)
    fg.manual_seed(5)
    np.testing.assert_array_equal(got, generate(model, IDS, attention_mask=RIGHT_MASK, **kw))
    assert got.shape[0] == 4


def test_beam_sampling_and_min_p_draw_as_generate(exported):
    """do_sample with num_beams (beam sampling) and min_p: after the same seed, the exported graphs give generate's
    sequences (a decoder and an encoder-decoder)."""
    import forgegrad as fg
    kw = dict(max_new_tokens=8, do_sample=True, num_beams=3, temperature=1.2, top_k=30, min_p=0.02,
              num_return_sequences=2)
    for name, mask in (("llama", LEFT_MASK), ("t5", RIGHT_MASK)):
        _, model, sessions = exported[name]
        ends = dict(eos_token_id=2, pad_token_id=0) if name == "llama" else dict(eos_token_id=1)
        fg.manual_seed(8)
        if name == "llama":
            got = generate_onnx(sessions[0], IDS, mask, **kw, **ends)
        else:
            got = generate_onnx_seq2seq(*sessions, IDS, mask, decoder_start_token_id=0, **kw, **ends)
        fg.manual_seed(8)
        np.testing.assert_array_equal(got, generate(model, IDS, attention_mask=mask, **kw, **ends), err_msg=name)
        assert got.shape[0] == 2 * IDS.shape[0]


def test_beam_arguments_are_checked_as_generate_checks_them(exported):
    _, _, (sess,) = exported["gpt2"]
    _, _, (enc, dec) = exported["t5"]
    for call in (lambda **kw: generate_onnx(sess, IDS, LEFT_MASK, max_new_tokens=4, **kw),
                 lambda **kw: generate_onnx_seq2seq(enc, dec, IDS, RIGHT_MASK, decoder_start_token_id=0,
                                                    max_new_tokens=4, **kw)):
        with pytest.raises(ValueError, match=r"num_return_sequences \(3\) must be <= num_beams \(2\)"):
            call(num_beams=2, num_return_sequences=3)
        with pytest.raises(ValueError, match="greedy decoding gives one sequence"):
            call(num_return_sequences=2)
        with pytest.raises(ValueError, match="early_stopping"):
            call(num_beams=2, early_stopping="sometimes")
        with pytest.raises(ValueError, match="num_beams must be a positive int"):
            call(num_beams=0)
        with pytest.raises(ValueError, match="length_penalty"):
            call(num_beams=2, length_penalty=float("nan"))


def test_beam_search_refuses_a_graph_that_recomputes_its_cache(tmp_path):
    """A longrope graph (Phi-3.5) records where generate_onnx recomputes the sequence; beam search is refused on
    it, as generate refuses num_beams > 1 for such a model. Greedy decoding still runs."""
    hf = transformers.Phi3ForCausalLM(transformers.Phi3Config(
        num_hidden_layers=1, hidden_size=16, num_attention_heads=2, num_key_value_heads=1, intermediate_size=24,
        vocab_size=VOCAB, max_position_embeddings=96, pad_token_id=0, original_max_position_embeddings=8,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.25, 1.5, 1.75],
                         "long_factor": [2.0, 5.0, 6.0, 7.0], "original_max_position_embeddings": 8})).eval()
    hf.save_pretrained(tmp_path / "ckpt")
    export_with_past(from_pretrained(tmp_path / "ckpt"), tmp_path / "decoder.onnx")
    with pytest.raises(ValueError, match="num_beams > 1 is not supported on a graph whose cache is recomputed"):
        generate_onnx(tmp_path / "decoder.onnx", IDS, LEFT_MASK, max_new_tokens=4, num_beams=2)
    assert generate_onnx(tmp_path / "decoder.onnx", IDS, LEFT_MASK, max_new_tokens=4).shape == (2, 11)
