"""PaliGemma's text requests on the server's paged engine (real uvicorn, httpx, a checkpoint transformers wrote):
concurrent completions decode in one batch, two of them sharing a prefix, and each gets transformers' greedy text.
The engine prefills with the model's forward and decodes with the lean step, both counting rotary positions from 1
as transformers' PaliGemma does (``position_offset``). Rotary attention sees only relative positions, so what the
test checks is that the two agree: keys a prefill wrote one position off the steps' change the text (the test fails
with the lean step's offset removed). A prompt without token types is causal in forgegrad, which transformers
computes with token_type_ids 1 (the suffix: causal). A Gemma 1 decoder with weights drawn at std 1, so that greedy
decoding does not settle on one token (at transformers' 0.02, or with a Gemma 2 decoder, whose post-norms keep the
last token's scaled embedding dominant, it does, and the comparison would say nothing)."""
from __future__ import annotations

import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf.tokenizer import ByteTokenizer

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from serve_helpers import metric, post_all, running_app  # noqa: E402

EOS = 299
PROMPTS = ["hello there", "what is in the picture? tell me", "what is in the picture? say it", "a"]
LENGTHS = [24, 9, 30, 17]  # the longest run past a 16-key block of the pool


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    text = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                intermediate_size=40, vocab_size=300, max_position_embeddings=512, initializer_range=1.0,
                model_type="gemma", eos_token_id=EOS)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=14,
                  patch_size=7, projection_dim=48)
    cfg = transformers.PaliGemmaConfig(text_config=text, vision_config=vision, image_token_index=290,
                                       projection_dim=48)
    hf = transformers.PaliGemmaForConditionalGeneration(cfg).eval()
    path = tmp_path_factory.mktemp("paligemma_serve") / "tiny-paligemma"
    hf.save_pretrained(path)
    return path, hf


def _want(hf, prompt: str, n: int) -> str:
    """transformers' greedy continuation with the prompt causal (token type 1), cut at the end token."""
    ids = torch.tensor([ByteTokenizer().encode(prompt)])
    with torch.no_grad():
        out = hf.generate(input_ids=ids, token_type_ids=torch.ones_like(ids), max_new_tokens=n,
                          do_sample=False)[0, ids.shape[1]:].tolist()
    return ByteTokenizer().decode(out[:out.index(EOS)] if EOS in out else out)


def test_concurrent_text_completions_equal_transformers(checkpoint):
    path, hf = checkpoint
    from forgegrad.models.hf._decode import lean_path_applies
    assert lean_path_applies(from_pretrained(path))  # the engine's decode steps are the lean step's
    want = [_want(hf, p, n) for p, n in zip(PROMPTS, LENGTHS)]
    assert len(set(want)) == len(want) and all(len(set(w)) > 3 for w in want)  # texts, not one repeated token

    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0} for p, n in zip(PROMPTS, LENGTHS)]
    with running_app(create_completions_app(GenerationServeConfig(str(path)))) as url:
        answers = post_all(url, bodies)
        text = httpx.get(url + "/metrics").text
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert [a.json()["choices"][0]["text"] for a in answers] == want
    steps = metric(text, "forgegrad_batch_size_count", model="tiny-paligemma")
    assert steps > 0 and metric(text, "forgegrad_batch_size_bucket", model="tiny-paligemma", le="1.0") < steps

