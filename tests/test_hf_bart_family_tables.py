"""BART's family (models/hf/bart.py) with tied and untied heads, against checkpoints transformers 5 wrote: the token
tables' pad row (transformers' padding_idx: the lookup gives it no gradient, a tied head does) with pad tokens inside
the encoder's and decoder's inputs, and, untied (tie_word_embeddings: false), each stack's own token table (transformers
5 unties them from ``shared`` with the head): logits, float64 gradients of every parameter, the lean decode step and
save_pretrained read back by transformers."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained, save_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

from hf_conformance import check_lean_seq2seq_step, check_seq2seq_gradients, seq2seq_logits  # noqa: E402

VOCAB = 60
_COMMON = dict(vocab_size=VOCAB, d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
               decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=40,
               dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
               decoder_layerdrop=0.0, init_std=0.3)
FAMILIES = {"bart": ("Bart", {}), "mbart": ("MBart", {}),
            "marian": ("Marian", {"pad_token_id": 5, "decoder_start_token_id": 5}),
            "m2m100": ("M2M100", {}), "pegasus": ("Pegasus", {}), "blenderbot": ("Blenderbot", {}),
            "blenderbot_small": ("BlenderbotSmall", {}),
            "pegasus_x": ("PegasusX", {"block_size": 4, "num_global_tokens": 2})}


def _hf(family: str, tied: bool):
    name, extra = FAMILIES[family]
    config = getattr(transformers, f"{name}Config")(**_COMMON, **extra, tie_word_embeddings=tied)
    cls = transformers.MarianMTModel if name == "Marian" else getattr(transformers,
                                                                       f"{name}ForConditionalGeneration")
    torch.manual_seed(0)
    hf = cls(config).eval()
    with torch.no_grad():  # every matrix random (the stacks' own tables keep theirs, drawn apart from shared's)
        for key, p in hf.named_parameters():
            if p.dim() > 1 and "positions" not in key and "embed_tokens" not in key:
                p.normal_(0.0, 0.3)
    return hf


def _inputs(model):
    """Pad tokens inside a real sequence, on the masked padding and in the decoder's input."""
    pad = model.config["pad_token_id"]
    rng = np.random.RandomState(0)
    ids = rng.randint(6, 50, (2, 8))
    mask = np.ones_like(ids)
    mask[1, 5:], ids[1, 5:], ids[0, 3] = 0, pad, pad
    dec = rng.randint(6, 50, (2, 5))
    dec[:, 0], dec[1, 3] = model.decoder_start_token_id, pad
    return ids, mask, dec


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_token_tables_pad_row_and_untied_stacks_are_transformers(family, tied, tmp_path):
    hf = _hf(family, tied)
    hf.save_pretrained(tmp_path / "hf")
    model = from_pretrained(tmp_path / "hf")
    assert model.tied is tied
    ids, mask, dec = _inputs(model)
    want = seq2seq_logits(hf, ids, mask, dec)
    np.testing.assert_allclose(model(ids, mask, dec).numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    check_seq2seq_gradients(hf, model, ids, mask, dec, prefix="model.")
    table = model.encoder_embedding()
    assert table.padding_idx == model.config["pad_token_id"]
    if not tied:  # the lookup alone reaches the table: its pad row gets nothing
        assert not table.weight.grad.numpy()[table.padding_idx].any()
    model.eval()
    save_pretrained(model, tmp_path / "saved")
    back = type(hf).from_pretrained(tmp_path / "saved").eval()
    np.testing.assert_allclose(seq2seq_logits(back, ids, mask, dec), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_untied_lean_step_and_a_checkpoint_whose_stacks_share_one_table(tmp_path):
    """The lean step reads the decoder's own table; an untied checkpoint with ``shared`` alone (its stacks' tables left
    out as copies of it) gives both stacks that table."""
    from safetensors.numpy import load_file, save_file

    from forgegrad.models.hf._decode_seq2seq import BartLeanStep
    hf = _hf("bart", False)
    hf.save_pretrained(tmp_path / "hf")
    model = from_pretrained(tmp_path / "hf")
    ids, mask, _ = _inputs(model)
    check_lean_seq2seq_step(model, BartLeanStep, ids, mask, model.decoder.layers[0], steps=6, new_tokens=4)
    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    for stack in ("encoder", "decoder"):
        del tensors[f"model.{stack}.embed_tokens.weight"]
    save_file(tensors, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    model = from_pretrained(tmp_path / "hf")
    for table in (model.encoder_embedding(), model.decoder_embedding()):
        np.testing.assert_array_equal(table.weight.numpy(), tensors["model.shared.weight"])
