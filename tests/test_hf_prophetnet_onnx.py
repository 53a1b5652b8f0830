"""ONNX export of ProphetNet (export_seq2seq: encoder.onnx, decoder.onnx with the main stream's keys and values as the
cache and the first predicting stream's logits) from checkpoints transformers wrote (ngram 2 tied gelu, ngram 3
untied relu), run in onnxruntime at batch 4 and 1 with padded encoder inputs: the encoder's states and every decoder
call's logits (calls of several places and of one, 14 places in all: past relative_max_distance) equal transformers'
cached generation steps, and generate_onnx_seq2seq's greedy and beam tokens equal transformers' generate."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_seq2seq, generate, generate_onnx_seq2seq

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytestmark = pytest.mark.usefixtures("torch_one_thread")

from test_hf_prophetnet import CONFIGS, VOCAB, _hf, _inputs  # noqa: E402


@pytest.fixture(scope="module", params=list(CONFIGS))
def exported(request, tmp_path_factory):
    """(transformers model, forgegrad model, encoder session, decoder session)."""
    hf = _hf(request.param)
    root = tmp_path_factory.mktemp("prophetnet_onnx") / request.param
    hf.save_pretrained(root / "ckpt")
    model = from_pretrained(root / "ckpt")
    enc, dec = export_seq2seq(model, root / "onnx", atol=1e-3)
    assert enc.ok and dec.ok
    return (hf, model, *(ort.InferenceSession(str(root / "onnx" / f), providers=["CPUExecutionProvider"])
                         for f in ("encoder.onnx", "decoder.onnx")))


def _hf_cached_steps(hf, ids, mask, dec):
    """transformers' logits (B, T, vocab) of dec's places computed as its generate computes them: one place a
    call on its cache (its relative projections of the predicting stream read as laid out)."""
    with torch.no_grad():
        encoded = hf.prophetnet.encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
        past, out = None, []
        for t in range(dec.shape[1]):
            step = hf(encoder_outputs=encoded, attention_mask=torch.tensor(mask),
                      decoder_input_ids=torch.tensor(dec[:, t:t + 1]), cache=past, use_cache=True)
            past = step.past_key_values
            out.append(step.logits[:, -1].numpy())
    return np.stack(out, 1), encoded.last_hidden_state.numpy()


def _close(got, want, tol=1e-4):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("rows, calls", [(slice(None), (5, 1, 8)), (slice(1, 2), (1, 3, 1, 9))])
def test_encoder_and_each_decoder_call_are_transformers_cached_steps(exported, rows, calls):
    """Batch 4 (right, left and middle padding of the encoder's input) and batch 1 (a shorter encoder input); the
    decoder called on several places at once and on one: each call's logits are transformers' one-place steps'."""
    hf, model, enc, dec = exported
    ids, mask, tokens = _inputs()
    ids, mask, tokens = ids[rows], mask[rows], tokens[rows]
    if ids.shape[0] == 1:
        ids, mask = ids[:, :6], mask[:, :6]
    want, states = _hf_cached_steps(hf, ids, mask, tokens)
    enc_out = enc.run(None, {"input_ids": ids, "attention_mask": mask})
    _close(enc_out[0], states)
    B = ids.shape[0]
    cross = iter(enc_out[1:])
    past = {i.name: next(cross) if ".encoder." in i.name else np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32)
            for i in dec.get_inputs()[2:]}
    self_names = [n for n in past if ".decoder." in n]
    start = 0
    for new in calls:
        logits, *present = dec.run(None, {"input_ids": tokens[:, start:start + new], "encoder_attention_mask": mask,
                                          **past})
        _close(logits, want[:, start:start + new])
        past.update(zip(self_names, present))
        start += new
    assert start == tokens.shape[1] == 14


def test_greedy_and_beam_tokens_in_onnxruntime_are_transformers(exported):
    hf, model, enc, dec = exported
    ids, mask, _ = _inputs()
    for beams in (1, 3):
        got = generate_onnx_seq2seq(enc, dec, ids, mask, decoder_start_token_id=0, max_new_tokens=16,
                                    eos_token_id=1, pad_token_id=0, num_beams=beams)
        with torch.no_grad():
            want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=16,
                               do_sample=False, num_beams=beams).numpy()
        np.testing.assert_array_equal(got, want, err_msg=f"{beams} beams")
        if beams == 1:
            np.testing.assert_array_equal(got, generate(model, ids, attention_mask=mask, max_new_tokens=16))
    np.testing.assert_array_equal(got, generate(model, ids, attention_mask=mask, max_new_tokens=16, num_beams=3))
    assert got.shape == (4, 17) and got.max() < VOCAB  # (the tokens repeat: the logits test checks each step)
