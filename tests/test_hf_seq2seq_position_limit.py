"""An encoder-decoder with a position table (BART's family: learned, or Pegasus' sinusoidal rows) generates up to
max_position_embeddings new tokens, as transformers does: the decoder reads the start token and every new token but
the last, so the last needs no position; one more is refused up front, naming the limit."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained, generate

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

POSITIONS = 16
_COMMON = dict(vocab_size=120, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
               decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=40, max_position_embeddings=POSITIONS,
               dropout=0.0, init_std=0.3, eos_token_id=119, forced_eos_token_id=None)


@pytest.mark.parametrize("name", ["Pegasus", "BlenderbotSmall"])
def test_generates_max_position_embeddings_new_tokens_as_transformers(name, tmp_path):
    torch.manual_seed(0)
    hf = getattr(transformers, f"{name}ForConditionalGeneration")(getattr(transformers, f"{name}Config")(**_COMMON))
    hf.eval().save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    ids = np.arange(3, 3 + POSITIONS)[None].repeat(2, 0)  # the source fills the encoder's positions too
    for beams in (1, 3):
        with torch.no_grad():
            want = hf.generate(torch.tensor(ids), max_new_tokens=POSITIONS, num_beams=beams, eos_token_id=None).numpy()
        got = generate(model, ids, max_new_tokens=POSITIONS, num_beams=beams, eos_token_id=None)
        np.testing.assert_array_equal(got, want, err_msg=f"{beams} beams")
    assert want.shape == (2, 1 + POSITIONS)
    with pytest.raises(ValueError, match=f"exceed the model's {POSITIONS} positions"):
        generate(model, ids, max_new_tokens=POSITIONS + 1)
    with pytest.raises(ValueError, match=f"{hf.config.architectures[0]}: 17 tokens exceed max_position_embeddings"):
        model.encode(np.arange(3, 4 + POSITIONS)[None])
