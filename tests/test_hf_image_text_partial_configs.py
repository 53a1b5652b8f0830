"""Released image-text checkpoints write partial text configs (gemma-3-4b-it's text_config has six keys, llava-1.5's
five, paligemma's eight) and transformers fills the rest with its config defaults: head_dim 256, Gemma 2's soft caps
of 30 and 50 and query_pre_attn_scalar 256, num_key_value_heads = num_attention_heads. Each model here is built by
transformers from such a partial text_config, saved, and its config.json rewritten with the partial text_config as
released: forgegrad's logits with an image equal transformers'."""
import json

import numpy as np
import pytest

from forgegrad.models import from_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

IMG = 110
SIZES = dict(hidden_size=48, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, vocab_size=120)
SIGLIP = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=14,
              patch_size=7)


def _gemma3(text):
    return transformers.Gemma3ForConditionalGeneration(transformers.Gemma3Config(
        text_config=text, vision_config=dict(SIGLIP, vision_use_head=False), mm_tokens_per_image=4,
        image_token_id=IMG, boi_token_id=111, eoi_token_id=112))


def _paligemma(text):
    return transformers.PaliGemmaForConditionalGeneration(transformers.PaliGemmaConfig(
        text_config=text, vision_config=SIGLIP, image_token_index=IMG, projection_dim=48))


def _llava(text):
    return transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        text_config=text, vision_config=dict(SIGLIP, model_type="clip_vision_model", projection_dim=16),
        image_token_index=IMG))


CASES = {  # (maker, the partial text_config, the token types to pass or None)
    "gemma3": (_gemma3, dict(SIZES, model_type="gemma3_text", num_key_value_heads=2, sliding_window=4), True),
    "paligemma2": (_paligemma, dict(SIZES, model_type="gemma2", num_key_value_heads=2), True),
    "llava": (_llava, dict(SIZES, model_type="llama"), False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_partial_text_config_takes_transformers_defaults(tmp_path, name):
    make, text, typed = CASES[name]
    torch.manual_seed(0)
    hf = make(dict(text)).eval()
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["text_config"] = text  # as released: the defaults left out
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = from_pretrained(tmp_path)
    ids = np.array([[5, IMG, IMG, IMG, IMG, 6, 7, 8, 9]])
    if name == "gemma3":
        ids = np.array([[5, 111, IMG, IMG, IMG, IMG, 112, 8, 9]])
    pixels = np.random.RandomState(0).randn(1, 3, 14, 14).astype(np.float32)
    kinds = ((ids == IMG) if name == "gemma3" else np.zeros_like(ids)).astype(np.int64) if typed else None
    kw = {} if kinds is None else {"token_type_ids": kinds}
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(ids), pixel_values=torch.tensor(pixels),
                  **{k: torch.tensor(v) for k, v in kw.items()}).logits.numpy()
    got = model(ids, pixel_values=pixels, **kw).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
