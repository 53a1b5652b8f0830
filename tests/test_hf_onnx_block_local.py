"""ONNX export (export_seq2seq) of the encoder-decoders with block-local encoders, from checkpoints transformers wrote:
LongT5 (local and transient-global attention) and PEGASUS-X (staggered blocks with global tokens, and unstaggered
odd blocks). The encoder graph pads to whole blocks inside the graph (ceil(T / block), the exporter's
axis_ceil_divisors), so one graph runs at any length: onnxruntime's encoder states equal transformers' and forgegrad's
at lengths that are no multiple of the blocks, one shorter than a block (and than a global block) and T=1, at batch
1 and 3 with right and left padding and a hole; generate_onnx_seq2seq's greedy tokens equal transformers' generate.
The blocks of the real checkpoints' sizes (128 and 16; 512 with 32 global tokens): slow."""
import time

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_seq2seq, generate_onnx_seq2seq

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

VOCAB = 120
_LONGT5 = dict(vocab_size=VOCAB, d_model=21, d_kv=5, d_ff=30, num_layers=2, num_heads=3,
               relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.0,
               initializer_factor=3.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
_PEGASUS_X = dict(vocab_size=VOCAB, d_model=30, encoder_layers=3, decoder_layers=2, encoder_attention_heads=5,
                  decoder_attention_heads=3, encoder_ffn_dim=37, decoder_ffn_dim=29, max_position_embeddings=300,
                  dropout=0.0, init_std=0.3, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
# (config, block length, global block length or None)
MODELS = {
    "longt5_local": (lambda **kw: transformers.LongT5ForConditionalGeneration(transformers.LongT5Config(
        **{**_LONGT5, "encoder_attention_type": "local", "local_radius": 2, "feed_forward_proj": "relu", **kw})), 3),
    "longt5_tglobal": (lambda **kw: transformers.LongT5ForConditionalGeneration(transformers.LongT5Config(
        **{**_LONGT5, "encoder_attention_type": "transient-global", "local_radius": 1, "global_block_size": 3,
           "feed_forward_proj": "gated-gelu", "num_layers": 3, **kw})), 2),
    "pegasus_x_staggered": (lambda **kw: transformers.PegasusXForConditionalGeneration(transformers.PegasusXConfig(
        **{**_PEGASUS_X, "block_size": 4, "num_global_tokens": 3, "stagger_local_blocks": True, **kw})), 4),
    "pegasus_x_plain": (lambda **kw: transformers.PegasusXForConditionalGeneration(transformers.PegasusXConfig(
        **{**_PEGASUS_X, "block_size": 3, "num_global_tokens": 2, "stagger_local_blocks": False, "encoder_layers": 2,
           "activation_function": "relu", **kw})), 3),
}


def _export(make, root, **kw):
    """(transformers model, forgegrad model, encoder session, decoder session, export seconds)."""
    torch.manual_seed(0)
    hf = make(**kw).eval()
    hf.save_pretrained(root / "ckpt")
    hf.onnx_dir = root / "onnx"
    model = from_pretrained(root / "ckpt")
    start = time.perf_counter()
    enc, dec = export_seq2seq(model, root / "onnx", atol=1e-3)
    seconds = time.perf_counter() - start
    assert enc.ok and dec.ok
    return (hf, model, *(ort.InferenceSession(str(root / "onnx" / f), providers=["CPUExecutionProvider"])
                         for f in ("encoder.onnx", "decoder.onnx")), seconds)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return {name: _export(make, tmp_path_factory.mktemp(name)) for name, (make, _) in MODELS.items()}


def _batch(B: int, T: int, seed: int):
    """Token ids and a mask: row 0 whole, row 1 right-padded, row 2 left-padded with a hole (B 3)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, VOCAB, (B, T))
    mask = np.ones((B, T), np.int64)
    if B > 1:
        mask[1, max(1, T // 2):] = 0
        mask[2, :T // 3] = 0
        mask[2, T // 2:T // 2 + 2] = 0
    return ids, mask


def _check_encoder(hf, model, enc, lengths, batches=(1, 3)):
    for T in lengths:
        for B in batches:
            ids, mask = _batch(B, T, T * 10 + B)
            got = enc.run(None, {"input_ids": ids, "attention_mask": mask})
            with torch.no_grad():
                want = hf.get_encoder()(input_ids=torch.tensor(ids),
                                        attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
            ours = model.encode(ids, mask)
            scale = np.abs(want).max()
            err = f"T={T}, B={B}"
            # every position, padding included (transformers' padded rows are defined too)
            np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4 * scale, err_msg=err)
            np.testing.assert_allclose(got[0], ours.numpy(), rtol=1e-4, atol=1e-4 * scale, err_msg=err)
            k, v = model.cross_kv(ours)[-1]  # the last decoder layer's cross-attention keys and values
            np.testing.assert_allclose(got[-2], k.numpy(), rtol=1e-4, atol=1e-4 * np.abs(k.numpy()).max(), err_msg=err)
            np.testing.assert_allclose(got[-1], v.numpy(), rtol=1e-4, atol=1e-4 * np.abs(v.numpy()).max(), err_msg=err)


@pytest.mark.parametrize("name", list(MODELS))
def test_encoder_graph_runs_at_any_length_as_transformers(exported, name):
    hf, model, enc, _, _ = exported[name]
    L = MODELS[name][1]
    # T=1, shorter than a block, and lengths that are no multiple of the block (or of the global block, 3)
    _check_encoder(hf, model, enc, sorted({1, L - 1, 2 * L + 1, 7, 23}))
    shapes = {o.name: o.shape for o in enc.get_outputs()}
    assert shapes["last_hidden_state"][:2] == ["batch", "encoder_sequence"]


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_tokens_in_onnxruntime_are_transformers(exported, name):
    hf = exported[name][0]
    ids, mask = _batch(3, 13, 1)
    # the files: the start, end, pad and forced end tokens from the generation_config.json export_seq2seq wrote
    onnx = exported[name][0].onnx_dir
    got = generate_onnx_seq2seq(onnx / "encoder.onnx", onnx / "decoder.onnx", ids, mask, max_new_tokens=12)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=12,
                           do_sample=False, num_beams=1).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("name, kw, lengths", [
    ("longt5_tglobal", dict(local_radius=127, global_block_size=16, initializer_factor=1.0), (1, 15, 130, 300)),
    ("pegasus_x_staggered", dict(block_size=512, num_global_tokens=32, max_position_embeddings=1200), (1, 300, 700)),
])
def test_real_block_sizes(tmp_path, name, kw, lengths):
    """The checkpoints' block sizes: the traces run at lengths past one block (129 and 383 tokens for LongT5's 128;
    513 and 1535 for PEGASUS-X's 512), the graph at lengths within the first block and past it."""
    hf, model, enc, dec, _ = _export(MODELS[name][0], tmp_path, **kw)
    _check_encoder(hf, model, enc, lengths, batches=(3,))
